"""The experiment spec: what a client submits and a worker trains.

Every model forbids unknown fields and non-finite numbers, and every number has
bounds, so a spec that validates here is one a worker can run. Checks that need
a deployment setting (the largest model the exact Hessian accepts) live in
:func:`check_limits`, which the API calls with its settings. An uploaded
dataset is checked once the API has copied its stored metadata into the spec.
"""

from saddlepoint.spec.analysis import AnalysisSpec
from saddlepoint.spec.base import UINT32_MAX, StrictModel
from saddlepoint.spec.data import (
    BlobsSpec,
    BuiltinDatasetSpec,
    CirclesSpec,
    DatasetNotResolved,
    DatasetSpec,
    MoonsSpec,
    PolynomialSpec,
    SincSpec,
    SpiralsSpec,
    SyntheticDatasetSpec,
    UploadedDatasetInfo,
    UploadedDatasetSpec,
)
from saddlepoint.spec.experiment import (
    Device,
    ExperimentSpec,
    Limits,
    LimitViolation,
    LossName,
    check_limits,
)
from saddlepoint.spec.model import (
    Activation,
    ActivationLayer,
    BatchNormLayer,
    ConstantInit,
    Conv2dLayer,
    DefaultInit,
    DropoutLayer,
    FlattenLayer,
    KaimingInit,
    LayerSpec,
    LayersSpec,
    LinearLayer,
    MaxPool2dLayer,
    MlpSpec,
    ModelSpec,
    NormalInit,
    ValuesInit,
    XavierInit,
    ZerosInit,
)
from saddlepoint.spec.optim import AdamSpec, OptimizerSpec, SgdSpec
from saddlepoint.spec.schedule import (
    ConstantSchedule,
    CosineSchedule,
    ScheduleSpec,
    StepSchedule,
)
from saddlepoint.spec.shapes import ModelPlan, ModelShapeError, PlannedLayer, plan_model

__all__ = [
    "UINT32_MAX",
    "Activation",
    "ActivationLayer",
    "AdamSpec",
    "AnalysisSpec",
    "BatchNormLayer",
    "BlobsSpec",
    "BuiltinDatasetSpec",
    "CirclesSpec",
    "ConstantInit",
    "ConstantSchedule",
    "Conv2dLayer",
    "CosineSchedule",
    "DatasetNotResolved",
    "DatasetSpec",
    "DefaultInit",
    "Device",
    "DropoutLayer",
    "ExperimentSpec",
    "FlattenLayer",
    "KaimingInit",
    "LayerSpec",
    "LayersSpec",
    "LimitViolation",
    "Limits",
    "LinearLayer",
    "LossName",
    "MaxPool2dLayer",
    "MlpSpec",
    "ModelPlan",
    "ModelShapeError",
    "ModelSpec",
    "MoonsSpec",
    "NormalInit",
    "OptimizerSpec",
    "PlannedLayer",
    "PolynomialSpec",
    "ScheduleSpec",
    "SgdSpec",
    "SincSpec",
    "SpiralsSpec",
    "StepSchedule",
    "StrictModel",
    "SyntheticDatasetSpec",
    "UploadedDatasetInfo",
    "UploadedDatasetSpec",
    "ValuesInit",
    "XavierInit",
    "ZerosInit",
    "check_limits",
    "plan_model",
]
