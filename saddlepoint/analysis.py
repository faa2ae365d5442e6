"""Results of the critical-point analysis, as stored and returned.

Floats in these records are always finite; a value that is not is stored as
``None``, so every response is valid JSON.
"""

import math
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Record(BaseModel):
    model_config = ConfigDict(extra="ignore")


def finite_or_none(value: float) -> float | None:
    """Return ``value`` as a float, or None when it is NaN or infinite."""
    value = float(value)
    return value if math.isfinite(value) else None


class Verdict(StrEnum):
    LOCAL_MINIMUM = "local_minimum"
    SADDLE_POINT = "saddle_point"
    LOCAL_MAXIMUM = "local_maximum"
    DEGENERATE = "degenerate"
    NOT_CRITICAL = "not_critical"


class AnalysisTrigger(StrEnum):
    FINAL = "final"
    EPOCH = "epoch"
    GRADIENT_THRESHOLD = "gradient_threshold"
    CRITICAL_SEARCH = "critical_search"


class EscapeTrial(Record):
    """Loss after a step of length ``step_size`` along the escape direction."""

    step_size: float
    loss: float | None
    loss_change: float | None
    predicted_change: float = Field(
        description="Second-order prediction 0.5 * eigenvalue * step_size**2."
    )
    first_order_change: float | None = Field(
        None,
        description=(
            "First-order term step_size * (gradient . v); zero at a critical "
            "point, and the reason loss_change departs from predicted_change "
            "elsewhere."
        ),
    )


class Escape(Record):
    """Steps along the eigenvector of the most negative eigenvalue."""

    eigenvalue: float
    loss_before: float
    trials: list[EscapeTrial]
    best_step_size: float | None = Field(
        description="Step size with the lowest loss, or null if none lowered it."
    )
    continuation_id: str | None = Field(
        None,
        description="Experiment that continues training from the best escaped point.",
    )


class LanczosReport(Record):
    """Convergence of the iterative eigenvalue solver."""

    iterations: int
    hvp_count: int
    converged: bool
    ritz_residuals: list[float | None] = Field(
        description="|H v - theta v| of each returned Ritz pair, same order."
    )
    message: str | None = None


class TraceEstimate(Record):
    """Hutch++ estimate of the Hessian's trace."""

    estimate: float
    standard_error: float | None
    hvp_count: int


class SpectralDensity(Record):
    """Histogram of the eigenvalue distribution by stochastic Lanczos quadrature.

    ``counts`` are estimated numbers of eigenvalues per bin; they sum to the
    parameter count up to rounding.
    """

    bin_edges: list[float]
    counts: list[float]
    probes: int
    lanczos_steps: int
    hvp_count: int


class CriticalSearchReport(Record):
    """Outcome of the critical-point search that preceded this analysis."""

    method: str
    steps: int
    initial_gradient_norm: float
    gradient_norm: float
    converged: bool
    hvp_count: int
    elapsed_s: float


class CriticalPointAnalysis(Record):
    """Curvature of the training loss at one point of a run."""

    index: int = Field(0, description="Position in the experiment's list of analyses.")
    trigger: AnalysisTrigger = AnalysisTrigger.FINAL
    epoch: int | None = Field(None, description="Epoch after which it ran.")
    step: int | None = Field(None, description="Updates completed before it ran.")
    loss: float
    gradient_norm: float
    gradient_tolerance: float
    parameter_count: int
    samples: int
    dtype: str
    mode: Literal["eval", "train"] = "eval"
    method: Literal["exact", "lanczos"] = "exact"
    eigenvalue_tolerance: float = Field(
        description="Absolute threshold: |eigenvalue| at or below it counts as zero."
    )
    positive_count: int | None = Field(
        description="Null for the lanczos method, which sees only the extremes."
    )
    negative_count: int | None
    zero_count: int | None
    min_eigenvalue: float
    max_eigenvalue: float
    minimum_ratio: float | None = Field(
        description=(
            "Positive eigenvalues over all of them: exact, or estimated from the "
            "spectral density for the lanczos method."
        )
    )
    minimum_ratio_error: float | None = Field(
        None, description="Standard error of an estimated minimum_ratio."
    )
    gradient_flat_share: float | None = Field(
        None,
        description=(
            "Share of |gradient|^2 in directions whose eigenvalue counts as zero. "
            "Near 1 with a small gradient means a flat region, not a critical point."
        ),
    )
    verdict: Verdict
    verdict_reason: str
    eigenvalues: list[float] = Field(
        description="Every eigenvalue (exact) or the extremes (lanczos), ascending."
    )
    eigenvectors: list[list[float]] | None = Field(
        None, description="Unit eigenvectors of the extreme eigenvalues, if requested."
    )
    lanczos: LanczosReport | None = None
    trace: TraceEstimate | None = None
    density: SpectralDensity | None = None
    escape: Escape | None = None
    search: CriticalSearchReport | None = None
    hvp_count: int | None = Field(None, description="Hessian-vector products used.")
    elapsed_s: float
