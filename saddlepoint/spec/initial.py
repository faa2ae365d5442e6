"""Starting parameters saved by an earlier experiment."""

from enum import StrEnum

from pydantic import Field

from saddlepoint.spec.base import StrictModel


class SavedPoint(StrEnum):
    FINAL = "final"
    ESCAPE = "escape"
    CRITICAL = "critical"


class InitialParameters(StrictModel):
    """Start from parameters another experiment saved, not from initialization.

    ``final`` is where its training stopped, ``escape`` the best point of its
    saddle escape and ``critical`` the end of its critical-point search. The
    model and dataset must match that experiment's.
    """

    experiment_id: str = Field(
        pattern=r"^[0-9A-HJKMNP-TV-Z]{26}$", description="Id of the saving experiment."
    )
    point: SavedPoint = SavedPoint.FINAL
