"""Optimizer part of the spec.

Each optimizer is one model, picked by ``name``. Where the textbook recurrence
and PyTorch's differ (SGD momentum, Adagrad, RMSProp), ``variant`` picks one.
The docstrings in ``worker.engine.optimizers`` show both recurrences.
"""

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from saddlepoint.spec.base import StrictModel


class OptimizerVariant(StrEnum):
    """Which recurrence an optimizer follows where PyTorch and the textbook differ."""

    PYTORCH = "pytorch"
    TEXTBOOK = "textbook"


LearningRate = Annotated[
    float, Field(gt=0, le=100, description="Base learning rate η.")
]
WeightDecay = Annotated[
    float,
    Field(
        ge=0,
        le=1,
        description="L2 penalty λ, added to the gradient as λ·θ before the update.",
    ),
]
Eps = Annotated[
    float,
    Field(gt=0, le=1, description="Constant that keeps the denominator above 0."),
]
ClipGradNorm = Annotated[
    float | None,
    Field(
        gt=0,
        le=1e6,
        description=(
            "Largest L2 norm of the gradient over all parameters; a larger "
            "gradient is scaled down to it before the update. Null for no clipping."
        ),
    ),
]
Variant = Annotated[
    OptimizerVariant,
    Field(
        description=(
            "Recurrence to follow: pytorch for torch.optim's, textbook for the "
            "form usually taught, which divides or accumulates differently."
        )
    ),
]
Beta = Annotated[float, Field(ge=0, lt=1)]


class SgdSpec(StrictModel):
    """Stochastic gradient descent with optional (Nesterov) momentum."""

    name: Literal["sgd"] = "sgd"
    learning_rate: LearningRate = 0.1
    momentum: float = Field(0.0, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: WeightDecay = 0.0
    variant: Variant = OptimizerVariant.PYTORCH
    clip_grad_norm: ClipGradNorm = None

    @field_validator("nesterov")
    @classmethod
    def _nesterov_needs_momentum(cls, nesterov: bool, info: ValidationInfo) -> bool:
        momentum = info.data.get("momentum")
        if nesterov and momentum == 0:
            raise PydanticCustomError(
                "nesterov_without_momentum",
                "nesterov=true needs momentum > 0 but momentum is {momentum}; set "
                "momentum (for example 0.9) or set nesterov to false",
                {"momentum": momentum},
            )
        return nesterov


class AdagradSpec(StrictModel):
    """Adagrad: each coordinate's step divided by the size of its past gradients."""

    name: Literal["adagrad"] = "adagrad"
    learning_rate: LearningRate = 0.01
    eps: Eps = 1e-10
    weight_decay: WeightDecay = 0.0
    variant: Variant = OptimizerVariant.PYTORCH
    clip_grad_norm: ClipGradNorm = None


class RMSpropSpec(StrictModel):
    """RMSProp: each coordinate's step divided by a moving RMS of its gradients."""

    name: Literal["rmsprop"] = "rmsprop"
    learning_rate: LearningRate = 0.01
    alpha: float = Field(
        0.99, ge=0, lt=1, description="Decay α of the moving average of g²."
    )
    eps: Eps = 1e-8
    weight_decay: WeightDecay = 0.0
    variant: Variant = OptimizerVariant.PYTORCH
    clip_grad_norm: ClipGradNorm = None


class AdamSpec(StrictModel):
    """Adam: momentum plus a per-parameter step scaled by the gradients' RMS.

    ``weight_decay`` is an L2 penalty added to the gradient, so Adam rescales
    it like the rest of the gradient. ``adamw`` decouples it.
    """

    name: Literal["adam"] = "adam"
    learning_rate: LearningRate = 0.001
    betas: tuple[Beta, Beta] = (0.9, 0.999)
    eps: Eps = 1e-8
    weight_decay: WeightDecay = 0.0
    clip_grad_norm: ClipGradNorm = None


class AdamWSpec(StrictModel):
    """AdamW: Adam with weight decay applied to θ directly, as θ ← θ − η·λ·θ."""

    name: Literal["adamw"] = "adamw"
    learning_rate: LearningRate = 0.001
    betas: tuple[Beta, Beta] = (0.9, 0.999)
    eps: Eps = 1e-8
    weight_decay: float = Field(
        0.01,
        ge=0,
        le=1,
        description="Decoupled decay λ: θ shrinks by η·λ·θ before the Adam step.",
    )
    clip_grad_norm: ClipGradNorm = None


AnyOptimizerSpec = SgdSpec | AdagradSpec | RMSpropSpec | AdamSpec | AdamWSpec
OptimizerSpec = Annotated[AnyOptimizerSpec, Field(discriminator="name")]
