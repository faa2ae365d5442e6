"""Optimizer steps on f(θ) = ½ θᵀAθ with diagonal A, so ∇f(θ) = A·θ.

Each expected trajectory is the optimizer's recurrence written out with plain
Python floats, one coordinate at a time, and compared in float64. The learning
rate may change every update, as the training loop sets it from the schedule.
"""

import math
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import torch
from pydantic import ValidationError

from saddlepoint.schedules import learning_rates
from saddlepoint.spec.optim import (
    AdagradSpec,
    AdamSpec,
    AdamWSpec,
    AnyOptimizerSpec,
    RMSpropSpec,
    SgdSpec,
)
from saddlepoint.spec.schedule import (
    ExponentialSchedule,
    InverseSqrtSchedule,
    OneCycleSchedule,
)
from worker.engine.optimizers import (
    TextbookAdagrad,
    TextbookRMSprop,
    TextbookSGD,
    build_optimizer,
)

CURVATURES = [2.0, 0.5]
START = [1.0, -3.0]
STEPS = 6
CONSTANT = [0.1] * STEPS
# Halving every update, so schedule-dependent recurrences part ways.
DECAYING = [0.1 * 0.5**t for t in range(STEPS)]

Trajectory = list[list[float]]
# One coordinate's update: (θ, g, η, state) → new θ, with state kept per coordinate.
CoordinateUpdate = Callable[[float, float, float, dict[str, float]], float]


def run_torch(spec: AnyOptimizerSpec, rates: Sequence[float] = CONSTANT) -> Trajectory:
    """Return θ after each update made by the built optimizer at ``rates``."""
    theta = torch.tensor(START, dtype=torch.float64, requires_grad=True)
    curvatures = torch.tensor(CURVATURES, dtype=torch.float64)
    optimizer = build_optimizer(spec, [theta])
    trajectory = []
    for rate in rates:
        for group in optimizer.param_groups:
            group["lr"] = rate
        optimizer.zero_grad()
        loss = 0.5 * (curvatures * theta**2).sum()
        loss.backward()
        optimizer.step()
        trajectory.append(theta.detach().tolist())
    return trajectory


def run_by_hand(
    update: CoordinateUpdate, rates: Sequence[float] = CONSTANT
) -> Trajectory:
    """Apply ``update`` to each coordinate of θ with gradient a·θ."""
    theta = list(START)
    states: list[dict[str, float]] = [{} for _ in theta]
    trajectory = []
    for rate in rates:
        theta = [
            update(x, a * x, rate, state)
            for x, a, state in zip(theta, CURVATURES, states, strict=True)
        ]
        trajectory.append(theta)
    return trajectory


def sgd_pytorch(momentum: float, nesterov: bool, decay: float) -> CoordinateUpdate:
    def update(x: float, g: float, lr: float, state: dict[str, float]) -> float:
        g += decay * x
        if momentum == 0:
            return x - lr * g
        b = state["b"] = momentum * state["b"] + g if "b" in state else g
        direction = g + momentum * b if nesterov else b
        return x - lr * direction

    return update


def sgd_textbook(momentum: float, nesterov: bool, decay: float) -> CoordinateUpdate:
    def update(x: float, g: float, lr: float, state: dict[str, float]) -> float:
        g += decay * x
        m = state["m"] = momentum * state.get("m", 0.0) - lr * g
        return x + momentum * m - lr * g if nesterov else x + m

    return update


def adagrad_pytorch(eps: float, decay: float) -> CoordinateUpdate:
    def update(x: float, g: float, lr: float, state: dict[str, float]) -> float:
        g += decay * x
        state["sum"] = state.get("sum", 0.0) + g * g
        return x - lr * g / (math.sqrt(state["sum"]) + eps)

    return update


def adagrad_textbook(eps: float, decay: float) -> CoordinateUpdate:
    def update(x: float, g: float, lr: float, state: dict[str, float]) -> float:
        g += decay * x
        state["sum"] = state.get("sum", 0.0) + g * g
        state["count"] = state.get("count", 0.0) + 1
        sigma = math.sqrt(state["sum"] / state["count"])
        return x - lr * g / (sigma + eps)

    return update


def rmsprop_pytorch(alpha: float, eps: float, decay: float) -> CoordinateUpdate:
    def update(x: float, g: float, lr: float, state: dict[str, float]) -> float:
        g += decay * x
        v = state["v"] = alpha * state.get("v", 0.0) + (1 - alpha) * g * g
        return x - lr * g / (math.sqrt(v) + eps)

    return update


def rmsprop_textbook(alpha: float, eps: float, decay: float) -> CoordinateUpdate:
    def update(x: float, g: float, lr: float, state: dict[str, float]) -> float:
        g += decay * x
        if "sigma" in state:
            sigma = math.sqrt(alpha * state["sigma"] ** 2 + (1 - alpha) * g * g)
        else:
            sigma = abs(g)
        state["sigma"] = sigma
        return x - lr * g / (sigma + eps)

    return update


def adam_by_hand(
    betas: tuple[float, float], eps: float, decay: float, decoupled: bool
) -> CoordinateUpdate:
    beta1, beta2 = betas

    def update(x: float, g: float, lr: float, state: dict[str, float]) -> float:
        if decoupled:
            x -= lr * decay * x
        else:
            g += decay * x
        t = state["t"] = state.get("t", 0.0) + 1
        m = state["m"] = beta1 * state.get("m", 0.0) + (1 - beta1) * g
        v = state["v"] = beta2 * state.get("v", 0.0) + (1 - beta2) * g * g
        m_hat = m / (1 - beta1**t)
        v_hat = v / (1 - beta2**t)
        return x - lr * m_hat / (math.sqrt(v_hat) + eps)

    return update


def assert_trajectories_equal(actual: Trajectory, expected: Trajectory) -> None:
    assert len(actual) == len(expected)
    for step, (got, want) in enumerate(zip(actual, expected, strict=True)):
        assert got == pytest.approx(want, rel=1e-12, abs=1e-12), f"update {step}"


def max_difference(first: Trajectory, second: Trajectory) -> float:
    return max(
        abs(x - y)
        for a, b in zip(first, second, strict=True)
        for x, y in zip(a, b, strict=True)
    )


SGD_CASES = [
    (0.0, False, 0.0),
    (0.9, False, 0.0),
    (0.9, True, 0.0),
    (0.0, False, 0.1),
    (0.5, True, 0.05),
]
SGD_IDS = ["plain", "momentum", "nesterov", "weight-decay", "nesterov-weight-decay"]


@pytest.mark.parametrize("rates", [CONSTANT, DECAYING], ids=["constant", "decaying"])
@pytest.mark.parametrize(("momentum", "nesterov", "decay"), SGD_CASES, ids=SGD_IDS)
def test_sgd_pytorch_matches_recurrence(
    momentum: float, nesterov: bool, decay: float, rates: list[float]
) -> None:
    spec = SgdSpec(momentum=momentum, nesterov=nesterov, weight_decay=decay)

    actual = run_torch(spec, rates)

    assert_trajectories_equal(
        actual, run_by_hand(sgd_pytorch(momentum, nesterov, decay), rates)
    )


@pytest.mark.parametrize("rates", [CONSTANT, DECAYING], ids=["constant", "decaying"])
@pytest.mark.parametrize(("momentum", "nesterov", "decay"), SGD_CASES, ids=SGD_IDS)
def test_sgd_textbook_matches_recurrence(
    momentum: float, nesterov: bool, decay: float, rates: list[float]
) -> None:
    spec = SgdSpec(
        momentum=momentum, nesterov=nesterov, weight_decay=decay, variant="textbook"
    )

    actual = run_torch(spec, rates)

    assert_trajectories_equal(
        actual, run_by_hand(sgd_textbook(momentum, nesterov, decay), rates)
    )


def test_plain_sgd_first_step_by_hand() -> None:
    # θ1 = θ0 − η·A·θ0 = (1 − 0.1·2, −3 + 0.1·0.5·3) = (0.8, −2.85).
    actual = run_torch(SgdSpec(learning_rate=0.1))

    assert actual[0] == pytest.approx([0.8, -2.85], rel=1e-12)


@pytest.mark.parametrize("nesterov", [False, True], ids=["momentum", "nesterov"])
def test_momentum_variants_agree_at_constant_rate(nesterov: bool) -> None:
    pytorch = run_torch(SgdSpec(momentum=0.9, nesterov=nesterov))
    textbook = run_torch(SgdSpec(momentum=0.9, nesterov=nesterov, variant="textbook"))

    assert_trajectories_equal(textbook, pytorch)


@pytest.mark.parametrize("nesterov", [False, True], ids=["momentum", "nesterov"])
def test_momentum_variants_differ_under_decay(nesterov: bool) -> None:
    schedule = ExponentialSchedule(gamma=0.5)
    rates = learning_rates(schedule, 0.1, STEPS)

    pytorch = run_torch(SgdSpec(momentum=0.9, nesterov=nesterov), rates)
    textbook = run_torch(
        SgdSpec(momentum=0.9, nesterov=nesterov, variant="textbook"), rates
    )

    assert rates == pytest.approx(DECAYING, rel=1e-15)
    assert max_difference(pytorch, textbook) > 1e-3


def test_momentum_variants_second_step_by_hand() -> None:
    # With rates η0 = 0.1, η1 = 0.05 and g0 = (2, −1.5), both take the same first
    # step. PyTorch then moves by −η1·(μ·g0 + g1), the textbook form by
    # μ·(−η0·g0) − η1·g1, so θ2 differs by μ·g0·(η0 − η1) = 0.9·g0·0.05.
    rates = [0.1, 0.05]
    pytorch = run_torch(SgdSpec(momentum=0.9), rates)
    textbook = run_torch(SgdSpec(momentum=0.9, variant="textbook"), rates)

    assert pytorch[0] == pytest.approx(textbook[0], rel=1e-15)
    assert pytorch[1][0] - textbook[1][0] == pytest.approx(0.9 * 2.0 * 0.05)
    assert pytorch[1][1] - textbook[1][1] == pytest.approx(0.9 * -1.5 * 0.05)


ADAPTIVE_CASES = [(1e-10, 0.0), (1e-3, 0.0), (1e-10, 0.1)]
ADAPTIVE_IDS = ["default-eps", "large-eps", "weight-decay"]


@pytest.mark.parametrize("rates", [CONSTANT, DECAYING], ids=["constant", "decaying"])
@pytest.mark.parametrize(("eps", "decay"), ADAPTIVE_CASES, ids=ADAPTIVE_IDS)
def test_adagrad_pytorch_matches_recurrence(
    eps: float, decay: float, rates: list[float]
) -> None:
    actual = run_torch(AdagradSpec(eps=eps, weight_decay=decay), rates)

    assert_trajectories_equal(actual, run_by_hand(adagrad_pytorch(eps, decay), rates))


@pytest.mark.parametrize("rates", [CONSTANT, DECAYING], ids=["constant", "decaying"])
@pytest.mark.parametrize(("eps", "decay"), ADAPTIVE_CASES, ids=ADAPTIVE_IDS)
def test_adagrad_textbook_matches_recurrence(
    eps: float, decay: float, rates: list[float]
) -> None:
    spec = AdagradSpec(eps=eps, weight_decay=decay, variant="textbook")

    actual = run_torch(spec, rates)

    assert_trajectories_equal(actual, run_by_hand(adagrad_textbook(eps, decay), rates))


def test_adagrad_variants_second_step_by_hand() -> None:
    # Both first steps are η·g/|g| = (−0.1, +0.1), to θ1 = (0.9, −2.9). With
    # g1 = (1.8, −1.45), the textbook divides by sqrt((g0² + g1²)/2) and
    # PyTorch by sqrt(g0² + g1²), so the second steps differ by sqrt(2).
    pytorch = run_torch(AdagradSpec(learning_rate=0.1, eps=1e-10))
    textbook = run_torch(AdagradSpec(learning_rate=0.1, eps=1e-10, variant="textbook"))
    textbook_x = 0.9 - 0.1 * 1.8 / math.sqrt((2.0**2 + 1.8**2) / 2)
    pytorch_x = 0.9 - 0.1 * 1.8 / math.sqrt(2.0**2 + 1.8**2)

    assert pytorch[0] == pytest.approx([0.9, -2.9], rel=1e-9)
    assert textbook[0] == pytest.approx([0.9, -2.9], rel=1e-9)
    assert textbook[1][0] == pytest.approx(textbook_x, rel=1e-9)
    assert pytorch[1][0] == pytest.approx(pytorch_x, rel=1e-9)
    textbook_step = textbook[1][0] - textbook[0][0]
    pytorch_step = pytorch[1][0] - pytorch[0][0]
    assert textbook_step / pytorch_step == pytest.approx(math.sqrt(2), rel=1e-9)


def test_textbook_adagrad_with_inverse_sqrt_matches_pytorch() -> None:
    # η/sqrt(t + 1) cancels the 1/(t + 1) inside the textbook's mean, leaving
    # PyTorch's recurrence up to where ε enters.
    schedule = InverseSqrtSchedule(warmup_steps=1)
    rates = learning_rates(schedule, 0.1, STEPS)

    textbook = run_torch(AdagradSpec(variant="textbook"), rates)
    pytorch = run_torch(AdagradSpec(), CONSTANT)

    assert rates == pytest.approx([0.1 / math.sqrt(t + 1) for t in range(STEPS)])
    for got, want in zip(textbook, pytorch, strict=True):
        assert got == pytest.approx(want, rel=1e-9)


RMSPROP_CASES = [(0.99, 1e-8, 0.0), (0.9, 1e-3, 0.0), (0.5, 1e-8, 0.1)]
RMSPROP_IDS = ["default-alpha", "large-eps", "weight-decay"]


@pytest.mark.parametrize("rates", [CONSTANT, DECAYING], ids=["constant", "decaying"])
@pytest.mark.parametrize(("alpha", "eps", "decay"), RMSPROP_CASES, ids=RMSPROP_IDS)
def test_rmsprop_pytorch_matches_recurrence(
    alpha: float, eps: float, decay: float, rates: list[float]
) -> None:
    spec = RMSpropSpec(alpha=alpha, eps=eps, weight_decay=decay)

    actual = run_torch(spec, rates)

    assert_trajectories_equal(
        actual, run_by_hand(rmsprop_pytorch(alpha, eps, decay), rates)
    )


@pytest.mark.parametrize("rates", [CONSTANT, DECAYING], ids=["constant", "decaying"])
@pytest.mark.parametrize(("alpha", "eps", "decay"), RMSPROP_CASES, ids=RMSPROP_IDS)
def test_rmsprop_textbook_matches_recurrence(
    alpha: float, eps: float, decay: float, rates: list[float]
) -> None:
    spec = RMSpropSpec(alpha=alpha, eps=eps, weight_decay=decay, variant="textbook")

    actual = run_torch(spec, rates)

    assert_trajectories_equal(
        actual, run_by_hand(rmsprop_textbook(alpha, eps, decay), rates)
    )


@pytest.mark.parametrize("alpha", [0.99, 0.9, 0.5])
def test_rmsprop_first_step_ratio(alpha: float) -> None:
    # PyTorch's first step is η·g/(sqrt(1 − α)·|g| + ε), the textbook's
    # η·g/(|g| + ε); their ratio tends to 1/sqrt(1 − α) as ε → 0.
    eps = 1e-8
    pytorch = run_torch(RMSpropSpec(alpha=alpha, eps=eps))
    textbook = run_torch(RMSpropSpec(alpha=alpha, eps=eps, variant="textbook"))

    for coordinate, g in enumerate([2.0, -1.5]):
        pytorch_step = pytorch[0][coordinate] - START[coordinate]
        textbook_step = textbook[0][coordinate] - START[coordinate]
        exact = (abs(g) + eps) / (math.sqrt(1 - alpha) * abs(g) + eps)
        assert textbook_step == pytest.approx(-0.1 * g / (abs(g) + eps), rel=1e-12)
        assert pytorch_step / textbook_step == pytest.approx(exact, rel=1e-12)
        assert pytorch_step / textbook_step == pytest.approx(
            1 / math.sqrt(1 - alpha), rel=1e-6
        )


ADAM_CASES = [
    ((0.9, 0.999), 1e-8, 0.0),
    ((0.5, 0.9), 1e-3, 0.0),
    ((0.9, 0.999), 1e-8, 0.1),
]
ADAM_IDS = ["default-betas", "short-memory", "weight-decay"]


@pytest.mark.parametrize("rates", [CONSTANT, DECAYING], ids=["constant", "decaying"])
@pytest.mark.parametrize(("betas", "eps", "decay"), ADAM_CASES, ids=ADAM_IDS)
def test_adam_matches_recurrence(
    betas: tuple[float, float], eps: float, decay: float, rates: list[float]
) -> None:
    spec = AdamSpec(betas=betas, eps=eps, weight_decay=decay)

    actual = run_torch(spec, rates)

    assert_trajectories_equal(
        actual, run_by_hand(adam_by_hand(betas, eps, decay, decoupled=False), rates)
    )


@pytest.mark.parametrize("rates", [CONSTANT, DECAYING], ids=["constant", "decaying"])
@pytest.mark.parametrize(("betas", "eps", "decay"), ADAM_CASES, ids=ADAM_IDS)
def test_adamw_matches_recurrence(
    betas: tuple[float, float], eps: float, decay: float, rates: list[float]
) -> None:
    spec = AdamWSpec(betas=betas, eps=eps, weight_decay=decay)

    actual = run_torch(spec, rates)

    assert_trajectories_equal(
        actual, run_by_hand(adam_by_hand(betas, eps, decay, decoupled=True), rates)
    )


def test_adam_first_step_is_learning_rate_times_sign() -> None:
    # After one update m̂ = g and v̂ = g², so the step is η·g/(|g| + ε).
    actual = run_torch(AdamSpec(learning_rate=0.05, eps=1e-8), [0.05])

    assert actual[0][0] == pytest.approx(1.0 - 0.05 * 2.0 / (2.0 + 1e-8), rel=1e-12)
    assert actual[0][1] == pytest.approx(-3.0 + 0.05 * 1.5 / (1.5 + 1e-8), rel=1e-12)


def test_adam_and_adamw_decay_first_step_by_hand() -> None:
    # λ = 0.5, η = 0.1, θ0 = (1, −3), g0 = (2, −1.5). Adam adds λ·θ0 to g,
    # giving (2.5, −3); its first step is still η·sign. AdamW first shrinks
    # θ0 by η·λ·θ0 to (0.95, −2.85), then steps η·sign(g0).
    eps = 1e-8
    adam = run_torch(AdamSpec(weight_decay=0.5, eps=eps), [0.1])
    adamw = run_torch(AdamWSpec(weight_decay=0.5, eps=eps), [0.1])

    assert adam[0][0] == pytest.approx(1.0 - 0.1 * 2.5 / (2.5 + eps), rel=1e-12)
    assert adam[0][1] == pytest.approx(-3.0 + 0.1 * 3.0 / (3.0 + eps), rel=1e-12)
    assert adamw[0][0] == pytest.approx(0.95 - 0.1 * 2.0 / (2.0 + eps), rel=1e-12)
    assert adamw[0][1] == pytest.approx(-2.85 + 0.1 * 1.5 / (1.5 + eps), rel=1e-12)


def test_textbook_step_with_closure_returns_loss() -> None:
    theta = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
    optimizer = TextbookRMSprop([theta], lr=0.1)

    def closure() -> float:
        optimizer.zero_grad()
        loss = (theta**2).sum()
        loss.backward()
        return loss.item()

    assert optimizer.step(closure) == 1.0
    assert theta.item() == pytest.approx(1.0 - 0.1 * 2.0 / (2.0 + 1e-8), rel=1e-12)


def test_textbook_skips_parameters_without_gradient() -> None:
    used = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
    unused = torch.tensor([5.0], dtype=torch.float64, requires_grad=True)
    optimizer = TextbookAdagrad([used, unused], lr=0.1)

    (used**2).sum().backward()
    optimizer.step()

    assert unused.item() == 5.0
    assert unused not in optimizer.state
    assert used.item() == pytest.approx(0.9, rel=1e-9)


OPTIMIZER_TYPES: list[tuple[AnyOptimizerSpec, type[torch.optim.Optimizer]]] = [
    (SgdSpec(), torch.optim.SGD),
    (SgdSpec(variant="textbook"), TextbookSGD),
    (AdagradSpec(), torch.optim.Adagrad),
    (AdagradSpec(variant="textbook"), TextbookAdagrad),
    (RMSpropSpec(), torch.optim.RMSprop),
    (RMSpropSpec(variant="textbook"), TextbookRMSprop),
    (AdamSpec(), torch.optim.Adam),
    (AdamWSpec(), torch.optim.AdamW),
]


@pytest.mark.parametrize(("spec", "expected"), OPTIMIZER_TYPES)
def test_optimizer_types(
    spec: AnyOptimizerSpec, expected: type[torch.optim.Optimizer]
) -> None:
    optimizer = build_optimizer(spec, [torch.zeros(2, requires_grad=True)])

    assert type(optimizer) is expected
    assert optimizer.param_groups[0]["lr"] == spec.learning_rate
    assert optimizer.param_groups[0]["weight_decay"] == spec.weight_decay


def test_spec_defaults_follow_pytorch() -> None:
    assert AdagradSpec().eps == 1e-10
    assert RMSpropSpec().alpha == 0.99
    assert AdamWSpec().weight_decay == 0.01
    assert SgdSpec().variant == "pytorch"
    assert SgdSpec().clip_grad_norm is None


INVALID_OPTIMIZERS: list[tuple[type[Any], dict[str, Any], str, str]] = [
    (SgdSpec, {"nesterov": True}, "nesterov", "momentum is 0.0"),
    (SgdSpec, {"variant": "lecture"}, "variant", "'pytorch' or 'textbook'"),
    (SgdSpec, {"clip_grad_norm": 0}, "clip_grad_norm", "greater than 0"),
    (AdagradSpec, {"eps": 0}, "eps", "greater than 0"),
    (RMSpropSpec, {"eps": -1e-8}, "eps", "greater than 0"),
    (RMSpropSpec, {"alpha": 1.0}, "alpha", "less than 1"),
    (AdamSpec, {"eps": 0}, "eps", "greater than 0"),
    (AdamWSpec, {"weight_decay": 2}, "weight_decay", "less than or equal to 1"),
    (AdamWSpec, {"variant": "textbook"}, "variant", "Extra inputs"),
]


@pytest.mark.parametrize(
    ("spec_class", "fields", "field", "fragment"), INVALID_OPTIMIZERS
)
def test_invalid_optimizer_names_field(
    spec_class: type[Any], fields: dict[str, Any], field: str, fragment: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        spec_class.model_validate(fields)

    errors = caught.value.errors()
    assert len(errors) == 1
    assert errors[0]["loc"][0] == field
    assert fragment in errors[0]["msg"]


@pytest.mark.parametrize(
    ("total_steps", "pct_start", "div_factor", "final_div_factor"),
    [(100, 0.3, 25.0, 1e4), (37, 0.45, 10.0, 100.0), (7, 0.5, 2.0, 3.0)],
)
def test_one_cycle_matches_torch_scheduler(
    total_steps: int, pct_start: float, div_factor: float, final_div_factor: float
) -> None:
    schedule = OneCycleSchedule(
        pct_start=pct_start, div_factor=div_factor, final_div_factor=final_div_factor
    )
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=0.5,
        total_steps=total_steps,
        pct_start=pct_start,
        div_factor=div_factor,
        final_div_factor=final_div_factor,
        anneal_strategy="cos",
        cycle_momentum=False,
    )
    expected = []
    for _ in range(total_steps):
        expected.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()

    actual = learning_rates(schedule, 0.5, total_steps)

    assert actual == pytest.approx(expected, rel=1e-12)
