"""The whole experiment spec and the deployment limits it must respect."""

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from saddlepoint.datasets import DATASETS
from saddlepoint.spec.analysis import AnalysisSpec
from saddlepoint.spec.base import UINT32_MAX, StrictModel
from saddlepoint.spec.data import DatasetSpec
from saddlepoint.spec.model import MlpSpec
from saddlepoint.spec.optim import OptimizerSpec, SgdSpec
from saddlepoint.spec.schedule import ConstantSchedule, ScheduleSpec


class LossName(StrEnum):
    CROSS_ENTROPY = "cross_entropy"
    MSE = "mse"


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
