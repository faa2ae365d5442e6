"""Critical-point analysis part of the spec."""

from pydantic import Field

from saddlepoint.spec.base import StrictModel


class AnalysisSpec(StrictModel):
    """Critical-point analysis of the trained parameters."""

    enabled: bool = True
    gradient_tolerance: float = Field(
        1e-3,
        gt=0,
        le=1e3,
        description="Gradient norm at or below which the point counts as critical.",
    )
    eigenvalue_tolerance: float = Field(
        1e-6,
        gt=0,
        lt=1,
        description=(
            "Eigenvalues within this fraction of the largest |eigenvalue| "
            "count as zero."
        ),
    )
