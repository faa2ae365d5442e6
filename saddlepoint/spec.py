"""The experiment spec: what a client submits and a worker trains.

Every model forbids unknown fields and non-finite numbers, and every number has
bounds, so a spec that validates here is one a worker can run. Checks that need
a deployment setting (the largest model the exact Hessian accepts) live in
:func:`check_limits`, which the API calls with its settings.
"""

import itertools
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from saddlepoint.datasets import DATASETS, DatasetName, split_sizes

UINT32_MAX = 2**32 - 1


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


class DatasetSpec(StrictModel):
    """Built-in dataset and its stratified train/validation split."""

    name: DatasetName = Field(
        DatasetName.DIGITS, description="Built-in scikit-learn dataset."
    )
    validation_fraction: float = Field(
        0.2,
        ge=0.05,
        le=0.5,
        description="Share of samples held out for validation, rounded up.",
    )
    split_seed: int = Field(
        0, ge=0, le=UINT32_MAX, description="Seed of the train/validation split."
    )

    @property
    def train_samples(self) -> int:
        return split_sizes(DATASETS[self.name].samples, self.validation_fraction)[0]


class Activation(StrEnum):
    RELU = "relu"
    TANH = "tanh"
    SIGMOID = "sigmoid"
    IDENTITY = "identity"


class MlpSpec(StrictModel):
    """Fully connected network: input, hidden layers with one activation, output."""

    kind: Literal["mlp"] = "mlp"
    hidden_sizes: list[Annotated[int, Field(ge=1, le=4096)]] = Field(
        default_factory=lambda: [32],
        max_length=8,
        description="Width of each hidden layer; an empty list is a linear model.",
    )
    activation: Activation = Activation.RELU

    def parameter_count(self, features: int, outputs: int) -> int:
        """Count weights and biases of the network for the given input and output."""
        widths = [features, *self.hidden_sizes, outputs]
        return sum(
            fan_in * fan_out + fan_out for fan_in, fan_out in itertools.pairwise(widths)
        )


class LossName(StrEnum):
    CROSS_ENTROPY = "cross_entropy"
    MSE = "mse"


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


class Device(StrEnum):
    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"


class ExperimentSpec(StrictModel):
    """One training run and the analysis of where it stopped."""

    name: str | None = Field(None, max_length=200, description="Free-form label.")
    dataset: DatasetSpec = Field(default_factory=DatasetSpec)
    model: MlpSpec = Field(default_factory=MlpSpec)
    loss: LossName = Field(
        LossName.CROSS_ENTROPY,
        description=(
            "cross_entropy on logits, or mse between softmax outputs and "
            "one-hot targets."
        ),
    )
    optimizer: OptimizerSpec = Field(default_factory=SgdSpec)
    schedule: ScheduleSpec = Field(default_factory=ConstantSchedule)
    batch_size: int | Literal["full"] = Field(
        32, description='Samples per update (1 or more), or "full" for the whole split.'
    )
    epochs: int = Field(20, ge=1, le=100_000)
    seed: int = Field(0, ge=0, le=UINT32_MAX, description="Seed of init and shuffling.")
    device: Device = Device.AUTO
    analysis: AnalysisSpec = Field(default_factory=AnalysisSpec)

    @field_validator("batch_size", mode="before")
    @classmethod
    def _batch_fits_training_split(
        cls, batch_size: object, info: ValidationInfo
    ) -> object:
        if batch_size == "full":
            return batch_size
        dataset = info.data.get("dataset")
        if not isinstance(dataset, DatasetSpec):
            return batch_size  # the dataset is invalid and reported on its own
        train = dataset.train_samples
        context = {
            "batch_size": repr(batch_size),
            "train": train,
            "dataset": dataset.name.value,
            "fraction": dataset.validation_fraction,
        }
        if isinstance(batch_size, bool) or not isinstance(batch_size, int):
            raise PydanticCustomError(
                "batch_size_type",
                "batch_size {batch_size} is invalid; use an integer from 1 to {train}, "
                'or "full"',
                context,
            )
        if not 1 <= batch_size <= train:
            raise PydanticCustomError(
                "batch_size_out_of_range",
                "batch_size {batch_size} does not fit the training split of "
                "{train} samples ({dataset} with validation_fraction {fraction}); "
                'use an integer from 1 to {train}, or "full"',
                context,
            )
        return batch_size

    @property
    def resolved_batch_size(self) -> int:
        train = self.dataset.train_samples
        return train if self.batch_size == "full" else self.batch_size

    @property
    def steps_per_epoch(self) -> int:
        """Updates per epoch; the last batch of an epoch may be smaller."""
        return -(-self.dataset.train_samples // self.resolved_batch_size)

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs

    @property
    def parameter_count(self) -> int:
        info = DATASETS[self.dataset.name]
        return self.model.parameter_count(info.features, info.classes)


@dataclass(frozen=True)
class Limits:
    """Deployment limits that a valid spec must also respect."""

    max_exact_parameters: int
    max_total_steps: int


@dataclass(frozen=True)
class LimitViolation:
    """One spec field that breaks a deployment limit, with the fix."""

    field: str
    value: object
    message: str


def check_limits(spec: ExperimentSpec, limits: Limits) -> list[LimitViolation]:
    """List the ways ``spec`` exceeds ``limits``; an empty list means it fits."""
    violations = []
    parameters = spec.parameter_count
    if spec.analysis.enabled and parameters > limits.max_exact_parameters:
        violations.append(
            LimitViolation(
                field="model.hidden_sizes",
                value=list(spec.model.hidden_sizes),
                message=(
                    f"the model has {parameters} parameters but the exact Hessian "
                    f"analysis accepts at most {limits.max_exact_parameters}; "
                    "use smaller hidden_sizes or set analysis.enabled to false"
                ),
            )
        )
    if spec.total_steps > limits.max_total_steps:
        violations.append(
            LimitViolation(
                field="epochs",
                value=spec.epochs,
                message=(
                    f"the run would take {spec.total_steps} updates "
                    f"({spec.steps_per_epoch} per epoch) but this service accepts "
                    f"at most {limits.max_total_steps}; use fewer epochs or a "
                    "larger batch_size"
                ),
            )
        )
    return violations
