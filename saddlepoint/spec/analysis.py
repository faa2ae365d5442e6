"""Critical-point analysis part of the spec."""

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from saddlepoint.spec.base import UINT32_MAX, StrictModel


class AnalysisMethod(StrEnum):
    AUTO = "auto"
    EXACT = "exact"
    LANCZOS = "lanczos"


class ModelMode(StrEnum):
    EVAL = "eval"
    TRAIN = "train"


class EscapeSpec(StrictModel):
    """Steps along the eigenvector of the most negative eigenvalue."""

    enabled: bool = True
    step_sizes: list[Annotated[float, Field(gt=0, le=100)]] = Field(
        default_factory=lambda: [1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0],
        min_length=1,
        max_length=50,
        description="Step lengths t in parameter space; the eigenvector has norm 1.",
    )
    continue_epochs: int = Field(
        0,
        ge=0,
        le=100_000,
        description=(
            "When above 0 and a step lowered the loss, train this many more "
            "epochs from the best escaped point as a new experiment linked to "
            "this one."
        ),
    )


class CriticalSearchSpec(StrictModel):
    """A phase after training that minimizes the squared gradient norm.

    Minimizing 0.5 * |grad L|^2 moves to a point where the gradient vanishes,
    which may be a saddle point as well as a minimum; this is how
    minimum-ratio studies collect critical points.
    """

    enabled: bool = False
    method: Literal["newton_mr", "adam"] = Field(
        "newton_mr",
        description=(
            "newton_mr: Gauss-Newton steps on 0.5*|grad L|^2, each the "
            "minimum-residual solution of H d = -grad L by MINRES, with a "
            "backtracking line search; converges fast near a critical point. "
            "adam: first-order descent on 0.5*|grad L|^2, slow because its "
            "curvature is H squared."
        ),
    )
    max_steps: int = Field(
        200, ge=1, le=1_000_000, description="Newton or Adam steps at most."
    )
    max_inner_iterations: int = Field(
        200, ge=1, le=10_000, description="newton_mr: MINRES iterations per step."
    )
    learning_rate: float = Field(
        0.01, gt=0, le=10, description="adam: learning rate on 0.5*|grad L|^2."
    )
    gradient_tolerance: float = Field(
        1e-6, gt=0, le=1, description="Stop once the gradient norm is this small."
    )


class PeriodicAnalysisSpec(StrictModel):
    """Analyses while training runs, in addition to the final one."""

    every_epochs: int | None = Field(
        None, ge=1, le=100_000, description="Analyze after every N epochs."
    )
    gradient_norm_below: float | None = Field(
        None,
        gt=0,
        description=(
            "Analyze at the end of the first epoch whose full-batch gradient norm "
            "falls below this value."
        ),
    )
    max_analyses: int = Field(20, ge=1, le=1000)


class AnalysisSpec(StrictModel):
    """Critical-point analysis of the trained parameters."""

    enabled: bool = True
    method: AnalysisMethod = Field(
        AnalysisMethod.AUTO,
        description=(
            "exact: every eigenvalue from the full Hessian. lanczos: the k "
            "largest and smallest with Lanczos, plus trace and density "
            "estimates. auto: exact up to the deployment's exact limit."
        ),
    )
    samples: int | Literal["full"] = Field(
        "full",
        description=(
            'Loss over the whole training split ("full") or over a fixed '
            "random subset of this many training samples."
        ),
    )
    subset_seed: int = Field(0, ge=0, le=UINT32_MAX)
    mode: ModelMode = Field(
        ModelMode.EVAL,
        description=(
            "eval: dropout off, batch norm uses running statistics. train: "
            "batch norm uses batch statistics; rejected with dropout, whose "
            "randomness makes the loss a different function at every call."
        ),
    )
    gradient_tolerance: float = Field(
        1e-3,
        gt=0,
        le=1e3,
        description="Gradient norm at or below which the point counts as critical.",
    )
    eigenvalue_tolerance: float = Field(
        1e-6,
        ge=1e-12,
        lt=1,
        description=(
            "Eigenvalues within this fraction of the largest |eigenvalue| "
            "count as zero. Below 1e-12 rounding noise would count as curvature."
        ),
    )
    top_k: int = Field(
        5, ge=1, le=100, description="Lanczos: eigenpairs at each end of the spectrum."
    )
    lanczos_tolerance: float = Field(
        1e-6, gt=0, lt=1, description="Lanczos: relative Ritz residual to converge."
    )
    max_iterations: int = Field(
        300, ge=2, le=10_000, description="Lanczos: most Krylov steps."
    )
    density_probes: int = Field(
        0,
        ge=0,
        le=200,
        description=(
            "Stochastic Lanczos quadrature probes for the spectral density; 0 "
            "skips the density (the lanczos method uses at least 10)."
        ),
    )
    trace_queries: int = Field(
        0,
        ge=0,
        le=10_000,
        description=(
            "Hutch++ Hessian-vector products for the trace; 0 skips it (the "
            "lanczos method uses at least 30)."
        ),
    )
    eigenvectors: bool = Field(
        False,
        description="Return the eigenvectors of the extreme eigenvalues (top_k each).",
    )
    escape: EscapeSpec = Field(default_factory=EscapeSpec)
    critical_search: CriticalSearchSpec = Field(default_factory=CriticalSearchSpec)
    periodic: PeriodicAnalysisSpec = Field(default_factory=PeriodicAnalysisSpec)

    @field_validator("samples", mode="before")
    @classmethod
    def _check_samples(cls, samples: object, info: ValidationInfo) -> object:
        if samples == "full":
            return samples
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
            raise PydanticCustomError(
                "analysis_samples",
                'analysis.samples {samples} is invalid; use "full" or a positive '
                "number of training samples",
                {"samples": repr(samples)},
            )
        return samples
