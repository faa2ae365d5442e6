"""Learning-rate schedule part of the spec."""

from typing import Annotated, Literal

from pydantic import Field

from saddlepoint.spec.base import StrictModel


class ConstantSchedule(StrictModel):
    """Base learning rate after an optional linear warmup."""

    name: Literal["constant"] = "constant"
    warmup_steps: int = Field(0, ge=0, le=10_000_000)


class CosineSchedule(StrictModel):
    """Linear warmup, then cosine decay to ``min_factor`` x base at the last step."""

    name: Literal["cosine"] = "cosine"
    warmup_steps: int = Field(0, ge=0, le=10_000_000)
    min_factor: float = Field(0.0, ge=0, le=1)


class StepSchedule(StrictModel):
    """Linear warmup, then the rate times ``gamma`` every ``step_size`` updates."""

    name: Literal["step"] = "step"
    warmup_steps: int = Field(0, ge=0, le=10_000_000)
    step_size: int = Field(ge=1, le=10_000_000)
    gamma: float = Field(0.1, gt=0, le=1)


ScheduleSpec = Annotated[
    ConstantSchedule | CosineSchedule | StepSchedule, Field(discriminator="name")
]
