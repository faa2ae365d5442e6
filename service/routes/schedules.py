"""Schedules: preview the learning rate of every update before training."""

from typing import Any, NoReturn

from fastapi import APIRouter
from pydantic import BaseModel, Field

from saddlepoint.schedules import learning_rates
from saddlepoint.spec import ExperimentSpec
from saddlepoint.spec.base import StrictModel
from saddlepoint.spec.schedule import AnySchedule, ScheduleSpec
from service.errors import ErrorDetail, ErrorResponse, InvalidSpec

router = APIRouter(prefix="/v1/schedules", tags=["schedules"])

# 100,000 rates make a response of up to about 2.3 MB of JSON.
MAX_PREVIEW_STEPS = 100_000


class SchedulePreviewRequest(StrictModel):
    """A run to preview: an experiment spec, or a schedule, base rate and length."""

    spec: ExperimentSpec | None = Field(
        None,
        description=(
            "An experiment spec as for POST /v1/experiments. Its schedule, "
            "optimizer.learning_rate, epochs and batch_size set the run."
        ),
    )
    schedule: ScheduleSpec | None = Field(
        None, description="The schedule, when no spec is given."
    )
    learning_rate: float | None = Field(
        None, gt=0, le=100, description="Base learning rate, when no spec is given."
    )
    total_steps: int | None = Field(
        None,
        ge=1,
        description=(
            f"Updates in the run, at most {MAX_PREVIEW_STEPS:,}, when no spec is given."
        ),
    )


class SchedulePreview(BaseModel):
    """The learning rate of every update of one run."""

    schedule: ScheduleSpec
    learning_rate: float = Field(description="Base learning rate.")
    total_steps: int
    learning_rates: list[float] = Field(
        description="Rate of each update; index i is update i, counted from 0."
    )


@router.post(
    "/preview",
    response_model=SchedulePreview,
    responses={
        422: {
            "model": ErrorResponse,
            "description": "The request is invalid or the run is too long.",
        }
    },
)
def preview_schedule(request: SchedulePreviewRequest) -> SchedulePreview:
    """Return the learning rate of every update of a run, without training.

    Send either `{"spec": {...}}` with an experiment spec, so the run's length
    follows from its epochs and batch size, or `{"schedule": {...},
    "learning_rate": 0.1, "total_steps": 1000}`. The rates are the ones a
    worker sets before each update, for runs of at most 100,000 updates.
    """
    schedule, base_rate, total_steps = _resolve_run(request)
    return SchedulePreview(
        schedule=schedule,
        learning_rate=base_rate,
        total_steps=total_steps,
        learning_rates=learning_rates(schedule, base_rate, total_steps),
    )


# Spec field that sets each value the direct form sends on its own.
_SPEC_SOURCE = {
    "schedule": "schedule",
    "learning_rate": "optimizer.learning_rate",
    "total_steps": "epochs and batch_size",
}


def _resolve_run(request: SchedulePreviewRequest) -> tuple[AnySchedule, float, int]:
    """Return the schedule, base rate and length of the run to preview."""
    if request.spec is None:
        return _direct_run(request)
    mixed = request.model_dump(exclude={"spec"}, exclude_none=True)
    for name, value in mixed.items():
        _raise_invalid(
            name,
            value,
            f"send either spec or {name}, not both; the spec's "
            f"{_SPEC_SOURCE[name]} sets it",
        )

    spec = request.spec
    if spec.total_steps > MAX_PREVIEW_STEPS:
        _raise_invalid(
            "spec.epochs",
            spec.epochs,
            f"the spec runs {spec.total_steps} updates ({spec.steps_per_epoch} "
            f"per epoch) but a preview covers at most {MAX_PREVIEW_STEPS}; "
            "preview fewer epochs or a larger batch_size",
        )
    return spec.schedule, spec.optimizer.learning_rate, spec.total_steps


def _direct_run(request: SchedulePreviewRequest) -> tuple[AnySchedule, float, int]:
    """Return the schedule, base rate and length given without a spec."""
    schedule = request.schedule
    base_rate = request.learning_rate
    total_steps = request.total_steps
    if schedule is None or base_rate is None or total_steps is None:
        missing = [
            name
            for name in ("schedule", "learning_rate", "total_steps")
            if getattr(request, name) is None
        ]
        _raise_invalid(
            missing[0],
            None,
            f"field {missing[0]!r} is required without a spec; send spec, or "
            "all of schedule, learning_rate and total_steps",
        )
    if total_steps > MAX_PREVIEW_STEPS:
        _raise_invalid(
            "total_steps",
            total_steps,
            f"total_steps {total_steps} is above the preview limit of "
            f"{MAX_PREVIEW_STEPS}; use at most {MAX_PREVIEW_STEPS}",
        )
    return schedule, base_rate, total_steps


def _raise_invalid(field: str, value: Any, message: str) -> NoReturn:
    detail = ErrorDetail(field=field, value=value, message=message)
    raise InvalidSpec(f"invalid schedule preview: {field}: {message}", [detail])
