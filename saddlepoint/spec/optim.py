"""Optimizer part of the spec."""

from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from saddlepoint.spec.base import StrictModel


class SgdSpec(StrictModel):
    """Stochastic gradient descent with optional (Nesterov) momentum."""

    name: Literal["sgd"] = "sgd"
    learning_rate: float = Field(0.1, gt=0, le=100)
    momentum: float = Field(0.0, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(0.0, ge=0, le=1)

    @field_validator("nesterov")
    @classmethod
    def _nesterov_needs_momentum(cls, nesterov: bool, info: ValidationInfo) -> bool:
        if nesterov and info.data.get("momentum") == 0:
            raise PydanticCustomError(
                "nesterov_without_momentum",
                "nesterov=true needs momentum > 0; set momentum (for example 0.9) "
                "or set nesterov to false",
            )
        return nesterov


class AdamSpec(StrictModel):
    """Adam: momentum plus a per-parameter step scaled by the gradients' RMS."""

    name: Literal["adam"] = "adam"
    learning_rate: float = Field(0.001, gt=0, le=100)
    betas: tuple[
        Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]
    ] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0, le=1)
    weight_decay: float = Field(0.0, ge=0, le=1)


OptimizerSpec = Annotated[SgdSpec | AdamSpec, Field(discriminator="name")]
