"""The experiment spec: what a client submits and a worker trains.

Every model forbids unknown fields and non-finite numbers, and every number has
bounds, so a spec that validates here is one a worker can run. Checks that need
a deployment setting (the largest model the exact Hessian accepts) live in
:func:`check_limits`, which the API calls with its settings.
"""

from saddlepoint.spec.analysis import AnalysisSpec
from saddlepoint.spec.base import UINT32_MAX, StrictModel
from saddlepoint.spec.data import DatasetSpec
from saddlepoint.spec.experiment import (
    Device,
    ExperimentSpec,
    Limits,
    LimitViolation,
    LossName,
    check_limits,
)
from saddlepoint.spec.model import Activation, MlpSpec
from saddlepoint.spec.optim import AdamSpec, OptimizerSpec, SgdSpec
from saddlepoint.spec.schedule import (
    ConstantSchedule,
    CosineSchedule,
    ScheduleSpec,
    StepSchedule,
)

__all__ = [
    "UINT32_MAX",
    "Activation",
    "AdamSpec",
    "AnalysisSpec",
    "ConstantSchedule",
    "CosineSchedule",
    "DatasetSpec",
    "Device",
    "ExperimentSpec",
    "LimitViolation",
    "Limits",
    "LossName",
    "MlpSpec",
    "OptimizerSpec",
    "ScheduleSpec",
    "SgdSpec",
    "StepSchedule",
    "StrictModel",
    "check_limits",
]
