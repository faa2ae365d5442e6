"""Records the worker writes and the API returns: status, metrics, results.

Floats in these records are always finite. A value that is not (a diverged
loss) is stored as ``None``, so every response is valid JSON.
"""

import math
from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from saddlepoint.spec import ExperimentSpec


class ExperimentStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset(
    {ExperimentStatus.SUCCEEDED, ExperimentStatus.FAILED, ExperimentStatus.CANCELLED}
)


class FailureCode(StrEnum):
    DIVERGED = "diverged"
    TIME_LIMIT = "time_limit"
    DEVICE_UNAVAILABLE = "device_unavailable"
    ANALYSIS_FAILED = "analysis_failed"
    WORKER_ERROR = "worker_error"
    WORKER_LOST = "worker_lost"
    ENQUEUE_FAILED = "enqueue_failed"


class Record(BaseModel):
    model_config = ConfigDict(extra="ignore")


def finite_or_none(value: float) -> float | None:
    """Return ``value`` as a float, or None when it is NaN or infinite."""
    value = float(value)
    return value if math.isfinite(value) else None


class StepMetrics(Record):
    """One optimizer update. ``step`` counts updates from 0 over the whole run."""

    kind: Literal["step"] = "step"
    step: int
    epoch: int
    loss: float | None = Field(description="Mini-batch loss; null when not finite.")
    learning_rate: float
    grad_norm: float | None = Field(description="L2 norm of the full gradient.")
    step_time_ms: float


class EpochMetrics(Record):
    """End of an epoch, evaluated over the whole train and validation splits."""

    kind: Literal["epoch"] = "epoch"
    epoch: int
    step: int = Field(description="Index of the epoch's last update.")
    train_loss: float | None
    train_accuracy: float
    val_loss: float | None
    val_accuracy: float
    epoch_time_s: float


MetricRecord = StepMetrics | EpochMetrics


class Phase(StrEnum):
    QUEUED = "queued"
    TRAINING = "training"
    ANALYSIS = "analysis"
    DONE = "done"


class Progress(Record):
    phase: Phase = Phase.QUEUED
    steps_completed: int = 0
    total_steps: int
    epochs_completed: int = 0
    total_epochs: int


class LatestMetrics(Record):
    step: StepMetrics | None = None
    epoch: EpochMetrics | None = None


class Failure(Record):
    """Why a run failed: a stable code, a message, and the step if known."""

    code: FailureCode
    message: str
    step: int | None = None


class TrainingSummary(Record):
    """Final numbers of a finished training phase."""

    steps: int
    epochs: int
    train_loss: float | None
    train_accuracy: float
    val_loss: float | None
    val_accuracy: float
    wall_time_s: float
    device: str
    parameter_count: int


class Verdict(StrEnum):
    LOCAL_MINIMUM = "local_minimum"
    SADDLE_POINT = "saddle_point"
    LOCAL_MAXIMUM = "local_maximum"
    DEGENERATE = "degenerate"
    NOT_CRITICAL = "not_critical"


class EscapeTrial(Record):
    """Loss after a step of length ``step_size`` along the escape direction."""

    step_size: float
    loss: float | None
    loss_change: float | None
    predicted_change: float = Field(
        description="Second-order prediction 0.5 * eigenvalue * step_size**2."
    )


class Escape(Record):
    """Steps along the eigenvector of the most negative eigenvalue."""

    eigenvalue: float
    loss_before: float
    trials: list[EscapeTrial]
    best_step_size: float | None = Field(
        description="Step size with the lowest loss, or null if none lowered it."
    )


class CriticalPointAnalysis(Record):
    """Curvature of the training loss where training stopped."""

    loss: float
    gradient_norm: float
    gradient_tolerance: float
    parameter_count: int
    samples: int
    dtype: str
    method: Literal["exact"] = "exact"
    eigenvalue_tolerance: float = Field(
        description="Absolute threshold: |eigenvalue| at or below it counts as zero."
    )
    positive_count: int
    negative_count: int
    zero_count: int
    min_eigenvalue: float
    max_eigenvalue: float
    minimum_ratio: float = Field(description="Positive eigenvalues over all of them.")
    verdict: Verdict
    verdict_reason: str
    eigenvalues: list[float] = Field(description="Every eigenvalue, ascending.")
    escape: Escape | None = None
    elapsed_s: float


class ExperimentRecord(Record):
    """State of one experiment as stored in Redis; the source of truth."""

    id: str
    status: ExperimentStatus
    spec: ExperimentSpec
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    progress: Progress
    latest: LatestMetrics = Field(default_factory=LatestMetrics)
    summary: TrainingSummary | None = None
    failure: Failure | None = None
    cancel_requested: bool = False
    attempts: int = 0
    worker: str | None = None
