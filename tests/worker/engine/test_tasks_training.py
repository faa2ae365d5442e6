"""Regression, synthetic and convolutional specs through the training loop."""

from typing import Any

import pytest
import torch

from saddlepoint.records import EpochMetrics, StepMetrics
from saddlepoint.spec import AnalysisSpec, ExperimentSpec
from worker.analysis.critical_point import analyze_critical_point
from worker.engine.loop import train

CPU = torch.device("cpu")


class RecordingHooks:
    def __init__(self) -> None:
        self.steps: list[StepMetrics] = []
        self.epochs: list[EpochMetrics] = []

    def on_step(self, record: StepMetrics) -> None:
        self.steps.append(record)

    def on_epoch(self, record: EpochMetrics) -> None:
        self.epochs.append(record)

    def should_stop(self) -> bool:
        return False


def run(fields: dict[str, Any]) -> tuple[Any, RecordingHooks]:
    hooks = RecordingHooks()
    spec = ExperimentSpec.model_validate(fields)
    return train(spec, CPU, hooks), hooks


def test_regression_trains_end_to_end() -> None:
    fields = {
        "dataset": {"name": "sinc", "samples": 120, "noise": 0.0},
        "model": {"hidden_sizes": [16, 16], "activation": "tanh"},
        "optimizer": {"name": "adam", "learning_rate": 0.01},
        "batch_size": 16,
        "epochs": 40,
    }
    result, hooks = run(fields)
    summary = result.summary

    assert summary.train_accuracy is None
    assert summary.val_accuracy is None
    assert all(record.val_accuracy is None for record in hooks.epochs)
    assert summary.parameter_count == (16 + 16) + (256 + 16) + (16 + 1)
    assert result.data.train_y.dtype == torch.float32
    assert result.model(result.data.val_x).shape == (24, 1)
    first, last = hooks.epochs[0].train_loss, hooks.epochs[-1].train_loss
    assert first is not None
    assert last is not None
    assert last < 0.25 * first


def test_regression_analysis_runs_on_trained_model() -> None:
    fields = {
        "dataset": {"name": "polynomial", "samples": 40},
        "model": {"hidden_sizes": [3], "activation": "tanh"},
        "batch_size": "full",
        "epochs": 5,
    }
    result, _ = run(fields)
    spec = ExperimentSpec.model_validate(fields)

    analysis = analyze_critical_point(
        result.model,
        spec.loss,
        result.data.train_x,
        result.data.train_y,
        AnalysisSpec(),
    )

    assert analysis.parameter_count == spec.parameter_count
    assert len(analysis.eigenvalues) == spec.parameter_count


@pytest.mark.parametrize(
    "dataset",
    [
        {"name": "moons", "samples": 100},
        {"name": "spirals", "samples": 90, "classes": 3},
        {"name": "blobs", "samples": 60, "features": 5},
    ],
)
def test_synthetic_classification_trains(dataset: dict[str, Any]) -> None:
    _, hooks = run({"dataset": dataset, "epochs": 2, "batch_size": 16})

    assert len(hooks.epochs) == 2
    assert hooks.epochs[-1].val_accuracy is not None
    assert 0.0 <= hooks.epochs[-1].val_accuracy <= 1.0


def test_conv_model_trains_on_digits() -> None:
    layers = [
        {"kind": "conv2d", "out_channels": 2, "kernel_size": 3},
        {"kind": "relu"},
        {"kind": "max_pool2d"},
        {"kind": "flatten"},
        {"kind": "linear", "out_features": 10},
    ]
    fields = {
        "model": {"kind": "layers", "layers": layers},
        "batch_size": 256,
        "epochs": 1,
    }
    result, hooks = run(fields)

    assert result.summary.parameter_count == 2 * 9 + 2 + 2 * 3 * 3 * 10 + 10
    assert len(hooks.steps) == 6
    assert hooks.epochs[0].val_accuracy is not None
