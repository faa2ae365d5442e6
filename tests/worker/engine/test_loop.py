import math
import statistics
from typing import Any

import pytest
import torch
from pydantic import ValidationError
from pydantic_core import PydanticCustomError
from torch import nn

from saddlepoint.records import EpochMetrics, StepMetrics
from saddlepoint.schedules import learning_rate_at
from saddlepoint.spec import ExperimentSpec
from saddlepoint.spec.metrics import MetricsSpec
from worker.engine.data import load_split, to_tensors
from worker.engine.loop import (
    TrainingDiverged,
    TrainingResult,
    TrainingStopped,
    TrainingTimeLimit,
    _Evaluation,
    _gradient_norm,
    _Run,
    measure_gradient_noise,
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


EPOCH_TIMINGS = {"epoch_time_s", "mean_step_time_ms", "gradient_noise_time_s"}


def epoch_values(record: EpochMetrics) -> dict[str, Any]:
    return record.model_dump(exclude=EPOCH_TIMINGS)


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

    assert result.summary.val_accuracy is not None
    assert result.summary.val_accuracy > 0.9
    assert result.summary.train_accuracy is not None
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


def flat_gradient(loss: torch.Tensor, model: nn.Module) -> torch.Tensor:
    gradients = torch.autograd.grad(loss, list(model.parameters()))
    return torch.cat([gradient.flatten() for gradient in gradients])


def full_batch_sgd_by_hand(
    spec: ExperimentSpec, rates: list[float], clip: float | None
) -> tuple[nn.Module, list[float]]:
    """Train like the loop with full batches; return the model and grad norms."""
    data = to_tensors(load_split(spec.dataset), CPU)
    torch.manual_seed(spec.seed)
    model = build_mlp(spec.model, 4, 3)
    norms = []
    for learning_rate in rates:
        model.zero_grad()
        compute_loss(spec.loss, model(data.train_x), data.train_y).backward()
        gradients = [parameter.grad for parameter in model.parameters()]
        norm = torch.cat([g.flatten() for g in gradients if g is not None]).norm()
        norms.append(norm.item())
        scale = 1.0 if clip is None else min(1.0, clip / (norm.item() + 1e-6))
        with torch.no_grad():
            for parameter in model.parameters():
                assert parameter.grad is not None
                parameter.sub_(learning_rate * scale * parameter.grad)
    return model, norms


@pytest.mark.parametrize("clip", [0.05, 1e6], ids=["active", "inactive"])
def test_clip_grad_norm_matches_manual_updates(clip: float) -> None:
    spec = make_spec(
        batch_size="full",
        epochs=3,
        optimizer={"name": "sgd", "learning_rate": 0.5, "clip_grad_norm": clip},
        seed=3,
    )
    result, hooks = run(spec)

    manual, norms = full_batch_sgd_by_hand(spec, [0.5, 0.5, 0.5], clip)

    for trained, expected in zip(
        result.model.parameters(), manual.parameters(), strict=True
    ):
        torch.testing.assert_close(trained, expected, rtol=1e-5, atol=1e-6)
    # The record keeps the norm before clipping, above the threshold when active.
    assert [record.grad_norm for record in hooks.steps] == pytest.approx(
        norms, rel=1e-5
    )


def test_clip_grad_norm_records_norm_before_clipping() -> None:
    spec = make_spec(
        batch_size="full",
        epochs=2,
        optimizer={"name": "sgd", "learning_rate": 0.5, "clip_grad_norm": 1e-4},
    )
    _, hooks = run(spec)

    assert all(
        record.grad_norm is not None and record.grad_norm > 1e-3
        for record in hooks.steps
    )


@pytest.mark.parametrize(
    "optimizer",
    [
        {"name": "sgd", "momentum": 0.9, "variant": "textbook"},
        {"name": "adagrad", "learning_rate": 0.1},
        {"name": "adagrad", "learning_rate": 0.1, "variant": "textbook"},
        {"name": "rmsprop", "learning_rate": 0.01},
        {"name": "rmsprop", "learning_rate": 0.01, "variant": "textbook"},
        {"name": "adamw", "learning_rate": 0.01, "clip_grad_norm": 1.0},
    ],
    ids=[
        "sgd-textbook",
        "adagrad",
        "adagrad-textbook",
        "rmsprop",
        "rmsprop-textbook",
        "adamw-clipped",
    ],
)
def test_every_optimizer_trains(optimizer: dict[str, Any]) -> None:
    spec = make_spec(
        optimizer=optimizer,
        schedule={"name": "linear", "warmup_steps": 3, "end_factor": 0.1},
        epochs=4,
    )
    result, hooks = run(spec)
    expected_rates = [
        learning_rate_at(spec.schedule, spec.optimizer.learning_rate, step, 32)
        for step in range(32)
    ]

    assert [record.learning_rate for record in hooks.steps] == expected_rates
    first_loss, last_loss = hooks.epochs[0].train_loss, hooks.epochs[-1].train_loss
    assert first_loss is not None
    assert last_loss is not None
    assert last_loss < first_loss
    assert result.summary.steps == 32


def linear_noise_case(
    batches: list[list[int]],
) -> tuple[float, float]:
    """Measure the noise of ŷ = w·x with w = 0.5 and MSE on four samples.

    Per-sample gradients 2·x·(w·x − y) are −1, 4, −3 and 8, so the
    full-batch gradient is their mean, 2.
    """
    model = nn.Linear(1, 1, bias=False).double()
    with torch.no_grad():
        model.weight.fill_(0.5)
    inputs = torch.tensor([[1.0], [2.0], [3.0], [4.0]], dtype=torch.float64)
    targets = torch.tensor([1.0, 0.0, 2.0, 1.0], dtype=torch.float64)

    def mse(outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return (outputs.squeeze(1) - labels).square().mean()

    noise = measure_gradient_noise(
        model, mse, inputs, targets, [torch.tensor(batch) for batch in batches]
    )
    assert noise.batches == len(batches)
    assert noise.elapsed_s >= 0
    return noise.noise, noise.full_gradient_norm


@pytest.mark.parametrize(
    ("batches", "expected"),
    [
        # Batch gradients 1.5 and 2.5: ((−0.5)² + 0.5²)/2.
        ([[0, 1], [2, 3]], 0.25),
        # Batch gradients 3.5 and 0.5: (1.5² + 1.5²)/2.
        ([[0, 3], [1, 2]], 2.25),
        # Batch gradients −2 and 6: (4² + 4²)/2.
        ([[0, 2], [1, 3]], 16.0),
        # Single samples: deviations −3, 2, −5, 6 → (9 + 4 + 25 + 36)/4.
        ([[0], [1], [2], [3]], 18.5),
        # Unequal batches count once each: gradients 0 and 8 → (4 + 36)/2.
        ([[0, 1, 2], [3]], 20.0),
        ([[0, 1, 2, 3]], 0.0),
    ],
    ids=["pairs-a", "pairs-b", "pairs-c", "single", "unequal", "full"],
)
def test_gradient_noise_by_hand(batches: list[list[int]], expected: float) -> None:
    noise, full_norm = linear_noise_case(batches)

    assert noise == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert full_norm == pytest.approx(2.0, rel=1e-12)


def test_gradient_noise_matches_sampling_formula() -> None:
    # Over all three splits into pairs, the mean noise is tr(Σ)/b·(n − b)/(n − 1)
    # with tr(Σ) = 18.5, b = 2 and n = 4: 18.5/2·2/3.
    pairs = [[[0, 1], [2, 3]], [[0, 3], [1, 2]], [[0, 2], [1, 3]]]
    mean = statistics.fmean(linear_noise_case(split)[0] for split in pairs)

    assert mean == pytest.approx(18.5 / 2 * 2 / 3, rel=1e-12)


def test_gradient_noise_leaves_model_unchanged() -> None:
    model = build_mlp(make_spec().model, 4, 3)
    before = [parameter.detach().clone() for parameter in model.parameters()]
    inputs = torch.randn(10, 4)
    targets = torch.arange(10) % 3

    measure_gradient_noise(
        model,
        lambda outputs, labels: compute_loss(make_spec().loss, outputs, labels),
        inputs,
        targets,
        list(torch.arange(10).split(4)),
    )

    for parameter, saved in zip(model.parameters(), before, strict=True):
        assert torch.equal(parameter, saved)
        assert parameter.grad is None


def test_full_batch_gradient_noise_is_zero() -> None:
    spec = make_spec(
        batch_size="full", epochs=3, metrics={"gradient_noise_epochs": [0, 2]}
    )
    result, hooks = run(spec)

    assert [record.gradient_noise for record in hooks.epochs] == [0.0, None, 0.0]
    assert hooks.epochs[0].full_gradient_norm == pytest.approx(
        hooks.steps[1].grad_norm, rel=1e-5
    )
    assert result.summary.gradient_noise == 0.0
    assert result.summary.gradient_noise_epoch == 2


def test_single_sample_noise_is_per_sample_variance() -> None:
    # With batch_size 1 the noise is mean ‖gᵢ − G‖² whatever the order.
    spec = make_spec(batch_size=1, epochs=1, metrics={"gradient_noise_epochs": [0]})
    result, hooks = run(spec)
    model, data = result.model, result.data
    per_sample = []
    for row in range(len(data.train_y)):
        inputs, targets = data.train_x[row : row + 1], data.train_y[row : row + 1]
        loss = compute_loss(spec.loss, model(inputs), targets)
        per_sample.append(flat_gradient(loss, model))
    gradients = torch.stack(per_sample).double()
    expected = (gradients - gradients.mean(0)).square().sum(1).mean().item()

    assert hooks.epochs[0].gradient_noise == pytest.approx(expected, rel=1e-4)
    assert result.summary.gradient_noise == hooks.epochs[0].gradient_noise


def test_gradient_noise_does_not_change_training() -> None:
    spec = make_spec(seed=4)
    measured = make_spec(seed=4, metrics={"gradient_noise_epochs": [0, 1, 2]})
    _, plain = run(spec)
    _, noisy = run(measured)
    noise_fields = {"gradient_noise", "full_gradient_norm"}

    assert [step_values(record) for record in plain.steps] == [
        step_values(record) for record in noisy.steps
    ]
    assert [
        record.model_dump(exclude=EPOCH_TIMINGS | noise_fields)
        for record in plain.epochs
    ] == [
        record.model_dump(exclude=EPOCH_TIMINGS | noise_fields)
        for record in noisy.epochs
    ]
    assert all(record.gradient_noise is not None for record in noisy.epochs)
    assert all(record.gradient_noise_time_s is not None for record in noisy.epochs)
    assert all(record.gradient_noise is None for record in plain.epochs)


def test_timing_and_update_counts_recorded() -> None:
    # Iris keeps 120 training samples: 8 updates of 16 per epoch.
    spec = make_spec(batch_size=16, epochs=3)
    result, hooks = run(spec)
    summary = result.summary

    assert [record.updates_per_epoch for record in hooks.epochs] == [8, 8, 8]
    assert summary.updates_per_epoch == 8
    for epoch, record in enumerate(hooks.epochs):
        times = [step.step_time_ms for step in hooks.steps if step.epoch == epoch]
        assert record.mean_step_time_ms == pytest.approx(statistics.fmean(times))
    assert summary.mean_step_time_ms == pytest.approx(
        statistics.fmean(step.step_time_ms for step in hooks.steps)
    )
    assert summary.mean_epoch_time_s == pytest.approx(
        statistics.fmean(record.epoch_time_s for record in hooks.epochs)
    )
    assert summary.gradient_noise is None
    assert summary.gradient_noise_epoch is None


def test_metrics_spec_default_measures_nothing() -> None:
    assert ExperimentSpec().metrics == MetricsSpec()
    assert MetricsSpec().gradient_noise_epochs == []


@pytest.mark.parametrize(
    ("epochs", "fragment"),
    [
        ([1, 3, 1], "epochs [1] more than once"),
        ([-1], "greater than or equal to 0"),
        (list(range(101)), "at most 100"),
    ],
    ids=["repeated", "negative", "too-many"],
)
def test_metrics_spec_rejects(epochs: list[int], fragment: str) -> None:
    with pytest.raises(ValidationError) as caught:
        MetricsSpec(gradient_noise_epochs=epochs)

    assert fragment in str(caught.value)


def test_metrics_spec_check_epochs() -> None:
    metrics = MetricsSpec(gradient_noise_epochs=[0, 4, 5, 9])

    metrics.check_epochs(10)
    with pytest.raises(PydanticCustomError) as caught:
        metrics.check_epochs(5)

    assert "[5, 9] are not below epochs=5" in str(caught.value)
    assert "from 0 to 4" in str(caught.value)


def test_gradient_noise_restores_buffers_and_random_state() -> None:
    # Batch norm updates its running statistics and dropout draws masks in
    # training mode; the measurement must undo both.
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Dropout(0.5), nn.Linear(6, 3)
    )
    buffers = [buffer.clone() for buffer in model.buffers()]
    inputs = torch.randn(12, 4)
    targets = torch.arange(12) % 3
    random_state = torch.random.get_rng_state()

    noise = measure_gradient_noise(
        model,
        lambda outputs, labels: compute_loss(make_spec().loss, outputs, labels),
        inputs,
        targets,
        list(torch.arange(12).split(4)),
    )

    assert noise.noise > 0
    assert torch.equal(torch.random.get_rng_state(), random_state)
    for buffer, saved in zip(model.buffers(), buffers, strict=True):
        assert torch.equal(buffer, saved)
