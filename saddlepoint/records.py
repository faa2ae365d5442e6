"""Records the worker writes and the API returns: status, metrics, results.

Floats in these records are always finite. A value that is not (a diverged
loss) is stored as ``None``, so every response is valid JSON.
"""

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import Field

from saddlepoint.analysis import (
    CriticalPointAnalysis,
    Escape,
    EscapeTrial,
    Record,
    Verdict,
    finite_or_none,
)
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


__all__ = [
    "CriticalPointAnalysis",
    "Escape",
    "EscapeTrial",
    "Record",
    "Verdict",
    "finite_or_none",
]


class StepMetrics(Record):
    """One optimizer update. ``step`` counts updates from 0 over the whole run."""

    kind: Literal["step"] = "step"
    step: int
    epoch: int
    loss: float | None = Field(description="Mini-batch loss; null when not finite.")
    learning_rate: float
    grad_norm: float | None = Field(
        description=(
            "L2 norm of the mini-batch gradient over all parameters, before "
            "clipping by optimizer.clip_grad_norm; null when not finite."
        )
    )
    step_time_ms: float = Field(
        description="Wall time of the forward pass, backward pass and update."
    )


class EpochMetrics(Record):
    """End of an epoch, evaluated over the whole train and validation splits."""

    kind: Literal["epoch"] = "epoch"
    epoch: int
    step: int = Field(description="Index of the epoch's last update.")
    train_loss: float | None
    train_accuracy: float | None = Field(
        description="Share of correct predictions; null for regression."
    )
    val_loss: float | None
    val_accuracy: float | None = Field(
        description="Share of correct predictions; null for regression."
    )
    epoch_time_s: float = Field(
        description="Wall time of the updates and the evaluation, not the noise."
    )
    updates_per_epoch: int | None = Field(
        None, description="Updates in this epoch; null when not recorded."
    )
    mean_step_time_ms: float | None = Field(
        None, description="Mean step_time_ms over this epoch's updates."
    )
    gradient_noise: float | None = Field(
        None,
        description=(
            "Mean squared L2 distance of the mini-batch gradients of one pass "
            "from the full-batch gradient, at the parameters after this epoch; "
            "null unless metrics.gradient_noise_epochs lists the epoch."
        ),
    )
    full_gradient_norm: float | None = Field(
        None,
        description="L2 norm of the full-batch gradient where the noise was measured.",
    )
    gradient_noise_time_s: float | None = Field(
        None, description="Wall time of the gradient noise measurement."
    )


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
    train_accuracy: float | None = Field(
        description="Share of correct predictions; null for regression."
    )
    val_loss: float | None
    val_accuracy: float | None = Field(
        description="Share of correct predictions; null for regression."
    )
    wall_time_s: float
    device: str
    parameter_count: int
    updates_per_epoch: int | None = Field(
        None, description="Updates in each epoch; null when not recorded."
    )
    mean_step_time_ms: float | None = Field(
        None, description="Mean step_time_ms over every update of the run."
    )
    mean_epoch_time_s: float | None = Field(
        None, description="Mean epoch_time_s over every epoch of the run."
    )
    gradient_noise: float | None = Field(
        None, description="The last gradient_noise measured; null if none was."
    )
    gradient_noise_epoch: int | None = Field(
        None, description="Epoch at whose end gradient_noise was measured."
    )


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
    lease_expires_at: datetime | None = Field(
        None,
        description=(
            "While running: when the worker's lease ends unless renewed. A "
            "lease in the past means the worker died; another worker reclaims "
            "the run."
        ),
    )
    sweep_id: str | None = Field(
        None, description="Id of the sweep that created this experiment, if any."
    )
