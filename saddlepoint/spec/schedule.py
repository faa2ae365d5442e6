"""Learning-rate schedule part of the spec.

Every schedule has ``warmup_steps``: the rate rises linearly to the base rate
over that many updates, then the schedule's decay runs over the rest of the
run. ``saddlepoint.schedules.learning_rate_at`` defines each formula.
"""

import itertools
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError

from saddlepoint.spec.base import StrictModel

MAX_STEPS = 10_000_000
MAX_MILESTONES = 100

WarmupSteps = Annotated[
    int,
    Field(
        ge=0,
        le=MAX_STEPS,
        description="Updates of linear warmup to the base rate; 0 for none.",
    ),
]


class ConstantSchedule(StrictModel):
    """Base learning rate after an optional linear warmup."""

    name: Literal["constant"] = "constant"
    warmup_steps: WarmupSteps = 0


class StepSchedule(StrictModel):
    """Linear warmup, then the rate times ``gamma`` every ``step_size`` updates."""

    name: Literal["step"] = "step"
    warmup_steps: WarmupSteps = 0
    step_size: int = Field(ge=1, le=MAX_STEPS)
    gamma: float = Field(0.1, gt=0, le=1)


class MultiStepSchedule(StrictModel):
    """Linear warmup, then the rate times ``gamma`` at each milestone.

    Milestones count updates from the end of warmup, as ``step_size`` does.
    """

    name: Literal["multi_step"] = "multi_step"
    warmup_steps: WarmupSteps = 0
    milestones: list[Annotated[int, Field(ge=1, le=MAX_STEPS)]] = Field(
        min_length=1,
        max_length=MAX_MILESTONES,
        description="Strictly increasing update counts after warmup.",
    )
    gamma: float = Field(0.1, gt=0, le=1)

    @field_validator("milestones")
    @classmethod
    def _milestones_increase(cls, milestones: list[int]) -> list[int]:
        for before, after in itertools.pairwise(milestones):
            if after <= before:
                raise PydanticCustomError(
                    "milestones_not_increasing",
                    "milestones {milestones} are not strictly increasing "
                    "({after} follows {before}); sort them and remove duplicates",
                    {"milestones": milestones, "before": before, "after": after},
                )
        return milestones


class ExponentialSchedule(StrictModel):
    """Linear warmup, then the rate times ``gamma`` after every update."""

    name: Literal["exponential"] = "exponential"
    warmup_steps: WarmupSteps = 0
    gamma: float = Field(0.99, gt=0, le=1)


class CosineSchedule(StrictModel):
    """Linear warmup, then cosine decay to ``min_factor`` x base at the last step."""

    name: Literal["cosine"] = "cosine"
    warmup_steps: WarmupSteps = 0
    min_factor: float = Field(0.0, ge=0, le=1)


class LinearSchedule(StrictModel):
    """Linear warmup, then linear decay to ``end_factor`` x base at the last step."""

    name: Literal["linear"] = "linear"
    warmup_steps: WarmupSteps = 0
    end_factor: float = Field(0.0, ge=0, le=1)


class InverseSqrtSchedule(StrictModel):
    """Linear warmup to the base rate, then decay as 1/sqrt(update count)."""

    name: Literal["inverse_sqrt"] = "inverse_sqrt"
    warmup_steps: int = Field(
        1,
        le=MAX_STEPS,
        description=(
            "Updates of linear warmup; the decay after it is "
            "base·sqrt(warmup_steps/(step+1)), so at least 1."
        ),
    )

    @field_validator("warmup_steps")
    @classmethod
    def _warmup_sets_decay(cls, warmup_steps: int) -> int:
        if warmup_steps < 1:
            raise PydanticCustomError(
                "inverse_sqrt_without_warmup",
                "warmup_steps {warmup_steps} is invalid for inverse_sqrt, whose "
                "decay base·sqrt(warmup_steps/(step+1)) would be zero; use 1 or "
                "more (1 gives base/sqrt(step+1) from the first update)",
                {"warmup_steps": warmup_steps},
            )
        return warmup_steps


class OneCycleSchedule(StrictModel):
    """One cycle: cosine rise to the base rate, then cosine fall far below it.

    The base learning rate is the peak. The rise takes the first ``pct_start``
    of the run, so this schedule has no separate warmup.
    """

    name: Literal["one_cycle"] = "one_cycle"
    warmup_steps: int = Field(
        0, description="Always 0: the rise over pct_start replaces warmup."
    )
    pct_start: float = Field(
        0.3, gt=0, lt=1, description="Share of the run spent rising to the peak."
    )
    div_factor: float = Field(
        25.0, ge=1, le=1e6, description="The first rate is base / div_factor."
    )
    final_div_factor: float = Field(
        1e4,
        ge=1,
        le=1e12,
        description="The last rate is base / div_factor / final_div_factor.",
    )

    @field_validator("warmup_steps")
    @classmethod
    def _no_separate_warmup(cls, warmup_steps: int) -> int:
        if warmup_steps != 0:
            raise PydanticCustomError(
                "one_cycle_warmup",
                "warmup_steps {warmup_steps} is invalid for one_cycle, which "
                "rises over the first pct_start of the run; set warmup_steps to "
                "0 and choose pct_start",
                {"warmup_steps": warmup_steps},
            )
        return warmup_steps


AnySchedule = (
    ConstantSchedule
    | StepSchedule
    | MultiStepSchedule
    | ExponentialSchedule
    | CosineSchedule
    | LinearSchedule
    | InverseSqrtSchedule
    | OneCycleSchedule
)
ScheduleSpec = Annotated[AnySchedule, Field(discriminator="name")]
