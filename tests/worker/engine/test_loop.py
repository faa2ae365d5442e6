import math
from typing import Any

import pytest
import torch

from saddlepoint.records import EpochMetrics, StepMetrics
from saddlepoint.schedules import learning_rate_at
from saddlepoint.spec import ExperimentSpec
from worker.engine.data import load_split, to_tensors
from worker.engine.loop import (
    TrainingDiverged,
    TrainingResult,
    TrainingStopped,
    TrainingTimeLimit,
    _Evaluation,
    _gradient_norm,
    _Run,
    train,
)
from worker.engine.losses import compute_loss
from worker.engine.models import build_mlp

CPU = torch.device("cpu")


class RecordingHooks:
    """Hooks that keep every record and ask to stop after ``stop_after`` steps."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.steps: list[StepMetrics] = []
        self.epochs: list[EpochMetrics] = []
        self.stop_after = stop_after

    def on_step(self, record: StepMetrics) -> None:
        self.steps.append(record)

    def on_epoch(self, record: EpochMetrics) -> None:
        self.epochs.append(record)

    def should_stop(self) -> bool:
        return self.stop_after is not None and len(self.steps) >= self.stop_after


def make_spec(**fields: Any) -> ExperimentSpec:
    defaults: dict[str, Any] = {
        "dataset": {"name": "iris"},
        "model": {"hidden_sizes": [8]},
        "optimizer": {"name": "sgd", "learning_rate": 0.1},
        "batch_size": 16,
        "epochs": 3,
    }
    return ExperimentSpec.model_validate(defaults | fields)


def run(spec: ExperimentSpec, **kwargs: Any) -> tuple[TrainingResult, RecordingHooks]:
    hooks = RecordingHooks()
    return train(spec, CPU, hooks, **kwargs), hooks


def step_values(record: StepMetrics) -> dict[str, Any]:
    return record.model_dump(exclude={"step_time_ms"})


def epoch_values(record: EpochMetrics) -> dict[str, Any]:
    return record.model_dump(exclude={"epoch_time_s"})


@pytest.fixture(scope="module")
def digits_run() -> tuple[ExperimentSpec, TrainingResult, RecordingHooks]:
    spec = ExperimentSpec.model_validate(
        {
            "dataset": {"name": "digits"},
            "optimizer": {"name": "adam", "learning_rate": 0.01},
            "batch_size": 32,
            "epochs": 5,
        }
    )
    result, hooks = run(spec)
    return spec, result, hooks


def test_digits_reaches_high_accuracy(
    digits_run: tuple[ExperimentSpec, TrainingResult, RecordingHooks],
) -> None:
    spec, result, _ = digits_run

    assert result.summary.val_accuracy > 0.9
    assert result.summary.train_accuracy > 0.9
    assert result.summary.steps == spec.total_steps
    assert result.summary.epochs == 5
    assert result.summary.parameter_count == spec.parameter_count
    assert result.summary.device == "cpu"


def test_step_records_cover_every_update(
    digits_run: tuple[ExperimentSpec, TrainingResult, RecordingHooks],
) -> None:
    spec, _, hooks = digits_run
    expected_epochs = [step // spec.steps_per_epoch for step in range(spec.total_steps)]

    assert len(hooks.steps) == spec.total_steps
    assert [record.step for record in hooks.steps] == list(range(spec.total_steps))
    assert [record.epoch for record in hooks.steps] == expected_epochs
    assert all(record.loss is not None for record in hooks.steps)
    assert all(record.grad_norm is not None for record in hooks.steps)
    assert all(record.step_time_ms >= 0 for record in hooks.steps)


def test_epoch_records_end_each_epoch(
    digits_run: tuple[ExperimentSpec, TrainingResult, RecordingHooks],
) -> None:
    spec, result, hooks = digits_run
    last = hooks.epochs[-1]
    expected_steps = [
        (epoch + 1) * spec.steps_per_epoch - 1 for epoch in range(spec.epochs)
    ]

    assert len(hooks.epochs) == spec.epochs
    assert [record.epoch for record in hooks.epochs] == list(range(spec.epochs))
    assert [record.step for record in hooks.epochs] == expected_steps
    assert result.summary.train_loss == last.train_loss
    assert result.summary.val_loss == last.val_loss
    assert result.summary.val_accuracy == last.val_accuracy


def test_epoch_losses_evaluate_whole_splits(
    digits_run: tuple[ExperimentSpec, TrainingResult, RecordingHooks],
) -> None:
    spec, result, hooks = digits_run
    with torch.no_grad():
        train_loss = compute_loss(
            spec.loss, result.model(result.data.train_x), result.data.train_y
        )
        val_loss = compute_loss(
            spec.loss, result.model(result.data.val_x), result.data.val_y
        )

    assert hooks.epochs[-1].train_loss == pytest.approx(train_loss.item(), rel=1e-6)
    assert hooks.epochs[-1].val_loss == pytest.approx(val_loss.item(), rel=1e-6)
    assert result.data.train_x.shape[0] == spec.dataset.train_samples


def test_learning_rates_follow_schedule() -> None:
    spec = make_spec(
        schedule={"name": "cosine", "warmup_steps": 5, "min_factor": 0.1},
        epochs=4,
    )
    _, hooks = run(spec)
    expected = [
        learning_rate_at(spec.schedule, 0.1, step, spec.total_steps)
        for step in range(spec.total_steps)
    ]

    assert [record.learning_rate for record in hooks.steps] == expected


def test_same_seed_same_records() -> None:
    spec = make_spec(seed=11)
    _, first = run(spec)
    _, second = run(spec)

    assert [record.loss for record in first.steps] == [
        record.loss for record in second.steps
    ]
    assert [step_values(record) for record in first.steps] == [
        step_values(record) for record in second.steps
    ]
    assert [epoch_values(record) for record in first.epochs] == [
        epoch_values(record) for record in second.epochs
    ]


def test_other_seed_other_losses() -> None:
    _, first = run(make_spec(seed=11))
    _, second = run(make_spec(seed=12))

    assert [record.loss for record in first.steps] != [
        record.loss for record in second.steps
    ]


def test_huge_learning_rate_diverges() -> None:
    spec = ExperimentSpec.model_validate(
        {
            "dataset": {"name": "digits"},
            "optimizer": {"name": "sgd", "learning_rate": 100},
            "epochs": 5,
        }
    )
    hooks = RecordingHooks()

    with pytest.raises(TrainingDiverged) as caught:
        train(spec, CPU, hooks)

    diverged = caught.value
    assert not math.isfinite(diverged.loss)
    assert diverged.step == hooks.steps[-1].step
    assert hooks.steps[-1].loss is None
    assert all(record.loss is not None for record in hooks.steps[:-1])
    assert str(diverged) == f"loss became {diverged.loss} at step {diverged.step}"


def test_non_finite_epoch_loss_diverges(monkeypatch: pytest.MonkeyPatch) -> None:
    # Forcing the evaluation is simpler than finding weights whose last
    # update keeps the batch loss finite but not the whole-split loss.
    def evaluate_to_infinity(self: _Run) -> _Evaluation:
        return _Evaluation(
            train_loss=0.5, train_accuracy=0.5, val_loss=math.inf, val_accuracy=0.5
        )

    monkeypatch.setattr(_Run, "evaluate", evaluate_to_infinity)
    spec = make_spec(batch_size=60)
    hooks = RecordingHooks()

    with pytest.raises(TrainingDiverged) as caught:
        train(spec, CPU, hooks)

    assert caught.value.step == 1
    assert caught.value.loss == math.inf
    assert str(caught.value) == "validation loss became inf at step 1"
    assert len(hooks.epochs) == 1
    assert hooks.epochs[0].val_loss is None
    assert hooks.epochs[0].train_loss == 0.5


def test_should_stop_before_update() -> None:
    spec = make_spec()
    hooks = RecordingHooks(stop_after=5)

    with pytest.raises(TrainingStopped) as caught:
        train(spec, CPU, hooks)

    assert caught.value.step == 5
    assert [record.step for record in hooks.steps] == [0, 1, 2, 3, 4]


def test_should_stop_at_once() -> None:
    hooks = RecordingHooks(stop_after=0)

    with pytest.raises(TrainingStopped) as caught:
        train(make_spec(), CPU, hooks)

    assert caught.value.step == 0
    assert hooks.steps == []
    assert hooks.epochs == []


def test_time_limit_checked_after_update() -> None:
    hooks = RecordingHooks()

    with pytest.raises(TrainingTimeLimit) as caught:
        train(make_spec(), CPU, hooks, time_limit_s=0.0)

    assert caught.value.step == 1
    assert len(hooks.steps) == 1


def test_negative_time_limit_rejected() -> None:
    with pytest.raises(ValueError, match="time_limit_s"):
        train(make_spec(), CPU, RecordingHooks(), time_limit_s=-1.0)


def test_full_batch_one_update_per_epoch() -> None:
    spec = make_spec(batch_size="full", epochs=4)
    _, hooks = run(spec)

    assert spec.steps_per_epoch == 1
    assert [record.step for record in hooks.steps] == [0, 1, 2, 3]
    assert [record.epoch for record in hooks.steps] == [0, 1, 2, 3]
    assert [record.step for record in hooks.epochs] == [0, 1, 2, 3]


def test_last_batch_may_be_smaller() -> None:
    # Iris keeps 120 training samples: batches of 100 and 20.
    spec = make_spec(batch_size=100, epochs=2)
    _, hooks = run(spec)

    assert spec.steps_per_epoch == 2
    assert len(hooks.steps) == 4
    assert [record.step for record in hooks.epochs] == [1, 3]


def test_full_batch_sgd_matches_manual_updates() -> None:
    # Two full-batch SGD updates with a 2-update warmup: rates 0.25 and 0.5.
    spec = make_spec(
        batch_size="full",
        epochs=2,
        optimizer={"name": "sgd", "learning_rate": 0.5},
        schedule={"name": "constant", "warmup_steps": 2},
        seed=5,
    )
    result, _ = run(spec)

    data = to_tensors(load_split(spec.dataset), CPU)
    torch.manual_seed(5)
    model = build_mlp(spec.model, 4, 3)
    for learning_rate in [0.25, 0.5]:
        model.zero_grad()
        compute_loss(spec.loss, model(data.train_x), data.train_y).backward()
        with torch.no_grad():
            for parameter in model.parameters():
                assert parameter.grad is not None
                parameter.sub_(learning_rate * parameter.grad)

    for trained, manual in zip(
        result.model.parameters(), model.parameters(), strict=True
    ):
        torch.testing.assert_close(trained, manual, rtol=1e-5, atol=1e-6)


def test_gradient_norm_of_concatenated_gradient() -> None:
    model = build_mlp(make_spec().model, 4, 3).double()
    inputs = torch.randn(6, 4, dtype=torch.float64)
    model(inputs).square().sum().backward()
    gradients = [
        parameter.grad.flatten()
        for parameter in model.parameters()
        if parameter.grad is not None
    ]
    expected = torch.cat(gradients).norm()

    assert _gradient_norm(model).item() == pytest.approx(expected.item(), rel=1e-12)
