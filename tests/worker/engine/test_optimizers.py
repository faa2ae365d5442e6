"""Optimizer steps on f(θ) = ½ θᵀAθ with diagonal A, so ∇f(θ) = A·θ.

Each expected trajectory is the optimizer's recurrence written out with plain
Python floats, one coordinate at a time, and compared in float64.
"""

import math

import pytest
import torch

from saddlepoint.spec import AdamSpec, SgdSpec
from worker.engine.optimizers import build_optimizer

CURVATURES = [2.0, 0.5]
START = [1.0, -3.0]
STEPS = 6


def run_torch(spec: SgdSpec | AdamSpec) -> list[list[float]]:
    """Return θ after each of STEPS updates made by the built optimizer."""
    theta = torch.tensor(START, dtype=torch.float64, requires_grad=True)
    curvatures = torch.tensor(CURVATURES, dtype=torch.float64)
    optimizer = build_optimizer(spec, [theta])
    trajectory = []
    for _ in range(STEPS):
        optimizer.zero_grad()
        loss = 0.5 * (curvatures * theta**2).sum()
        loss.backward()
        optimizer.step()
        trajectory.append(theta.detach().tolist())
    return trajectory


def sgd_by_hand(
    learning_rate: float, momentum: float, nesterov: bool, weight_decay: float
) -> list[list[float]]:
    theta = list(START)
    buffer: list[float] | None = None
    trajectory = []
    for _ in range(STEPS):
        grad = [
            a * x + weight_decay * x for a, x in zip(CURVATURES, theta, strict=True)
        ]
        if momentum == 0:
            direction = grad
        else:
            if buffer is None:
                buffer = list(grad)
            else:
                buffer = [momentum * b + g for b, g in zip(buffer, grad, strict=True)]
            if nesterov:
                direction = [
                    g + momentum * b for g, b in zip(grad, buffer, strict=True)
                ]
            else:
                direction = buffer
        theta = [x - learning_rate * d for x, d in zip(theta, direction, strict=True)]
        trajectory.append(theta)
    return trajectory


def adam_by_hand(
    learning_rate: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
) -> list[list[float]]:
    theta = list(START)
    first = [0.0, 0.0]
    second = [0.0, 0.0]
    trajectory = []
    for t in range(1, STEPS + 1):
        new_theta = []
        for i, (a, x) in enumerate(zip(CURVATURES, theta, strict=True)):
            g = a * x + weight_decay * x
            first[i] = beta1 * first[i] + (1 - beta1) * g
            second[i] = beta2 * second[i] + (1 - beta2) * g * g
            m_hat = first[i] / (1 - beta1**t)
            v_hat = second[i] / (1 - beta2**t)
            new_theta.append(x - learning_rate * m_hat / (math.sqrt(v_hat) + eps))
        theta = new_theta
        trajectory.append(theta)
    return trajectory


def assert_trajectories_equal(
    actual: list[list[float]], expected: list[list[float]]
) -> None:
    assert len(actual) == len(expected)
    for step, (got, want) in enumerate(zip(actual, expected, strict=True)):
        assert got == pytest.approx(want, rel=1e-12, abs=1e-12), f"update {step}"


@pytest.mark.parametrize(
    ("momentum", "nesterov", "weight_decay"),
    [
        (0.0, False, 0.0),
        (0.9, False, 0.0),
        (0.9, True, 0.0),
        (0.0, False, 0.1),
        (0.5, True, 0.05),
    ],
    ids=["plain", "momentum", "nesterov", "weight-decay", "nesterov-weight-decay"],
)
def test_sgd_matches_recurrence(
    momentum: float, nesterov: bool, weight_decay: float
) -> None:
    spec = SgdSpec(
        learning_rate=0.1,
        momentum=momentum,
        nesterov=nesterov,
        weight_decay=weight_decay,
    )

    actual = run_torch(spec)

    assert_trajectories_equal(
        actual, sgd_by_hand(0.1, momentum, nesterov, weight_decay)
    )


def test_plain_sgd_first_step_by_hand() -> None:
    # θ1 = θ0 − η·A·θ0 = (1 − 0.1·2, −3 + 0.1·0.5·3) = (0.8, −2.85).
    actual = run_torch(SgdSpec(learning_rate=0.1))

    assert actual[0] == pytest.approx([0.8, -2.85], rel=1e-12)


@pytest.mark.parametrize(
    ("betas", "eps", "weight_decay"),
    [
        ((0.9, 0.999), 1e-8, 0.0),
        ((0.5, 0.9), 1e-3, 0.0),
        ((0.9, 0.999), 1e-8, 0.1),
    ],
    ids=["default-betas", "short-memory", "weight-decay"],
)
def test_adam_matches_recurrence(
    betas: tuple[float, float], eps: float, weight_decay: float
) -> None:
    spec = AdamSpec(learning_rate=0.05, betas=betas, eps=eps, weight_decay=weight_decay)

    actual = run_torch(spec)

    assert_trajectories_equal(
        actual, adam_by_hand(0.05, betas[0], betas[1], eps, weight_decay)
    )


def test_adam_first_step_is_learning_rate_times_sign() -> None:
    # After one update m̂ = g and v̂ = g², so the step is η·g/(|g| + ε).
    actual = run_torch(AdamSpec(learning_rate=0.05, eps=1e-8))

    assert actual[0][0] == pytest.approx(1.0 - 0.05 * 2.0 / (2.0 + 1e-8), rel=1e-12)
    assert actual[0][1] == pytest.approx(-3.0 + 0.05 * 1.5 / (1.5 + 1e-8), rel=1e-12)


def test_optimizer_types() -> None:
    sgd = build_optimizer(SgdSpec(), [torch.zeros(2, requires_grad=True)])
    adam = build_optimizer(AdamSpec(), [torch.zeros(2, requires_grad=True)])

    assert isinstance(sgd, torch.optim.SGD)
    assert isinstance(adam, torch.optim.Adam)
    assert sgd.param_groups[0]["lr"] == SgdSpec().learning_rate
    assert adam.param_groups[0]["betas"] == (0.9, 0.999)
