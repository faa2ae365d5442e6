"""The whole experiment spec and the deployment limits it must respect."""

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal, Self

from pydantic import (
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from saddlepoint.datasets import DatasetInfo, Task
from saddlepoint.spec.analysis import AnalysisMethod, AnalysisSpec
from saddlepoint.spec.base import UINT32_MAX, StrictModel
from saddlepoint.spec.data import BuiltinDatasetSpec, DatasetSpec, raw_dataset_task
from saddlepoint.spec.initial import InitialParameters
from saddlepoint.spec.metrics import MetricsSpec
from saddlepoint.spec.model import MlpSpec, ModelSpec
from saddlepoint.spec.optim import OptimizerSpec, SgdSpec
from saddlepoint.spec.schedule import ConstantSchedule, ScheduleSpec
from saddlepoint.spec.shapes import ModelPlan, ModelShapeError, ShapeProblem, plan_model


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
    dataset: DatasetSpec = Field(
        default_factory=BuiltinDatasetSpec,
        description="Built-in, synthetic or uploaded dataset, chosen by name.",
    )
    model: ModelSpec = Field(
        default_factory=MlpSpec,
        description='An MLP ("kind": "mlp") or a list of layers ("kind": "layers").',
    )
    loss: LossName = Field(
        LossName.CROSS_ENTROPY,
        description=(
            "cross_entropy on logits (classification only), or mse: between "
            "softmax outputs and one-hot targets for classification, between "
            "outputs and targets for regression. Defaults to cross_entropy for "
            "classification and mse for regression."
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
    metrics: MetricsSpec = Field(default_factory=MetricsSpec)
    initial_parameters: InitialParameters | None = Field(
        None,
        description=(
            "Start from parameters an earlier experiment saved instead of "
            "initializing; its model and dataset must match this spec's."
        ),
    )

    @model_validator(mode="before")
    @classmethod
    def _default_loss_follows_task(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "loss" in data:
            return data
        if raw_dataset_task(data.get("dataset")) == Task.REGRESSION:
            return {**data, "loss": LossName.MSE.value}
        return data

    @field_validator("batch_size", mode="before")
    @classmethod
    def _batch_fits_training_split(
        cls, batch_size: object, info: ValidationInfo
    ) -> object:
        if batch_size == "full":
            return batch_size
        dataset = info.data.get("dataset")
        # An invalid dataset is reported on its own. An unresolved upload is
        # checked again once the API has copied in its stored metadata.
        known = dataset.resolved_info() if dataset is not None else None
        train = None
        if dataset is not None and known is not None:
            train = dataset.train_samples
        context = {
            "batch_size": repr(batch_size),
            "train": train if train is not None else "the training split size",
            "dataset": dataset.label if dataset is not None else "",
            "fraction": dataset.validation_fraction if dataset is not None else "",
        }
        if isinstance(batch_size, bool) or not isinstance(batch_size, int):
            raise PydanticCustomError(
                "batch_size_type",
                "batch_size {batch_size} is invalid; use an integer from 1 to {train}, "
                'or "full"',
                context,
            )
        if batch_size < 1 or (train is not None and batch_size > train):
            raise PydanticCustomError(
                "batch_size_out_of_range",
                "batch_size {batch_size} does not fit the training split of "
                "{train} samples ({dataset} with validation_fraction {fraction}); "
                'use an integer from 1 to {train}, or "full"',
                context,
            )
        return batch_size

    @field_validator("metrics")
    @classmethod
    def _measured_epochs_exist(
        cls, metrics: MetricsSpec, info: ValidationInfo
    ) -> MetricsSpec:
        epochs = info.data.get("epochs")
        if isinstance(epochs, int):
            metrics.check_epochs(epochs)
        return metrics

    @model_validator(mode="after")
    def _model_fits_dataset(self) -> Self:
        info = self.dataset.resolved_info()
        if info is None:
            return self
        problems = find_fit_problems(self, info)
        if problems:
            raise _validation_error(problems)
        return self

    @property
    def dataset_info(self) -> DatasetInfo:
        """Shape of the dataset. Raises DatasetNotResolved for an unread upload."""
        return self.dataset.info

    @property
    def model_plan(self) -> ModelPlan:
        """Every layer's shapes and parameters, for this dataset."""
        return plan_model(self.model, self.dataset_info, self.dataset.label)

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
        return self.model_plan.parameter_count


def find_fit_problems(spec: ExperimentSpec, info: DatasetInfo) -> list[ShapeProblem]:
    """List how the loss, model and batch size fail to fit the dataset ``info``."""
    problems = []
    label = spec.dataset.label
    if spec.loss == LossName.CROSS_ENTROPY and info.task == Task.REGRESSION:
        problems.append(
            ShapeProblem(
                loc=("loss",),
                message=(
                    f"loss cross_entropy needs class labels but dataset {label} "
                    'is a regression task; use "mse"'
                ),
                value=spec.loss.value,
            )
        )
    try:
        plan = plan_model(spec.model, info, label)
    except ModelShapeError as error:
        problem = error.problem
        problems.append(
            ShapeProblem(("model", *problem.loc), problem.message, problem.value)
        )
        return problems
    if plan.has_flat_batch_norm:
        problems.extend(_single_sample_batches(spec))
    return problems


def _single_sample_batches(spec: ExperimentSpec) -> list[ShapeProblem]:
    """Flag batches of one sample, in which batch_norm on features fails."""
    train, batch = spec.dataset.train_samples, spec.resolved_batch_size
    if batch > 1 and train % batch != 1:
        return []
    return [
        ShapeProblem(
            loc=("batch_size",),
            message=(
                f"batch_norm on flat features needs at least 2 samples per batch, "
                f"but batch_size {spec.batch_size} on {train} training samples "
                "leaves a batch of 1; use batch_size "
                f"{_batch_without_single(train, batch)}"
            ),
            value=spec.batch_size,
        )
    ]


def _batch_without_single(train: int, batch: int) -> int:
    """Return the smallest batch size from ``batch`` up that leaves no batch of 1."""
    candidate = max(batch, 2)
    while candidate < train and train % candidate == 1:
        candidate += 1
    return min(candidate, train)


def _validation_error(problems: list[ShapeProblem]) -> ValidationError:
    details = [
        InitErrorDetails(
            type=PydanticCustomError("does_not_fit_dataset", problem.message),
            loc=problem.loc,
            input=problem.value,
        )
        for problem in problems
    ]
    return ValidationError.from_exception_data("ExperimentSpec", details)


@dataclass(frozen=True)
class Limits:
    """Deployment limits that a valid spec must also respect.

    ``max_activation_values`` bounds the training samples times the largest
    layer output per sample, because evaluation runs the whole training split
    through the model in one batch.
    """

    max_exact_parameters: int
    max_total_steps: int
    max_parameters: int = 20_000_000
    max_activation_values: int = 250_000_000


@dataclass(frozen=True)
class LimitViolation:
    """One spec field that breaks a deployment limit, with the fix."""

    field: str
    value: object
    message: str


def check_limits(spec: ExperimentSpec, limits: Limits) -> list[LimitViolation]:
    """List the ways ``spec`` exceeds ``limits``; an empty list means it fits.

    Raises DatasetNotResolved for an uploaded dataset whose stored metadata
    the API has not copied into the spec yet.
    """
    plan = spec.model_plan
    violations = _size_violations(spec, plan, limits)
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


def _size_violations(
    spec: ExperimentSpec, plan: ModelPlan, limits: Limits
) -> list[LimitViolation]:
    violations = []
    parameters = plan.parameter_count
    field, smaller = "model.layers", "fewer or narrower layers"
    value: object = parameters
    if isinstance(spec.model, MlpSpec):
        field, smaller = "model.hidden_sizes", "smaller hidden_sizes"
        value = list(spec.model.hidden_sizes)
    exact = spec.analysis.method == AnalysisMethod.EXACT
    if spec.analysis.enabled and exact and parameters > limits.max_exact_parameters:
        violations.append(
            LimitViolation(
                field=field,
                value=value,
                message=(
                    f"the model has {parameters} parameters but the exact Hessian "
                    f"analysis accepts at most {limits.max_exact_parameters}; "
                    f'use {smaller}, or set analysis.method to "lanczos" or '
                    '"auto", or set analysis.enabled to false'
                ),
            )
        )
    if parameters > limits.max_parameters:
        violations.append(
            LimitViolation(
                field=field,
                value=value,
                message=(
                    f"the model has {parameters} parameters but this service "
                    f"trains at most {limits.max_parameters}; use {smaller}"
                ),
            )
        )
    activations = spec.dataset.train_samples * plan.max_activation_size
    if activations > limits.max_activation_values:
        violations.append(
            LimitViolation(
                field=field,
                value=value,
                message=(
                    f"evaluating {spec.dataset.train_samples} training samples "
                    f"holds {activations} values in one layer output "
                    f"({plan.max_activation_size} per sample) but this service "
                    f"accepts at most {limits.max_activation_values}; use "
                    f"{smaller}, or fewer samples"
                ),
            )
        )
    return violations
