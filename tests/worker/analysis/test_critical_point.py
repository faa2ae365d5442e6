"""Critical-point analysis on problems whose Hessian is known by hand."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from saddlepoint.records import Verdict
from saddlepoint.spec import Activation, AnalysisSpec, LossName, MlpSpec
from worker.analysis.critical_point import (
    ESCAPE_STEP_SIZES,
    ZERO_EIGENVALUE_FLOOR,
    analyze_critical_point,
    classify,
    try_escape,
)
from worker.analysis.hessian import gradient, hessian_matrix
from worker.engine.models import build_mlp

F64 = torch.float64
SPEC = AnalysisSpec()


def two_weight_loss(theta: Tensor) -> Tensor:
    """(w1 * w2 * x - y)^2 for the single point x = 1, y = 1."""
    return (theta[0] * theta[1] - 1.0) ** 2


# The two-weight network: the origin is a saddle with Hessian [[0, -2], [-2, 0]].


def test_two_weight_origin_gradient_zero() -> None:
    grad = gradient(two_weight_loss, torch.zeros(2, dtype=F64))

    assert torch.equal(grad, torch.zeros(2, dtype=F64))


def test_two_weight_origin_hessian() -> None:
    hessian = hessian_matrix(two_weight_loss, torch.zeros(2, dtype=F64))

    expected = torch.tensor([[0.0, -2.0], [-2.0, 0.0]], dtype=F64)
    torch.testing.assert_close(hessian, expected, rtol=0, atol=1e-14)
    eigenvalues = torch.linalg.eigvalsh(hessian)
    torch.testing.assert_close(eigenvalues, torch.tensor([-2.0, 2.0], dtype=F64))


def test_two_weight_origin_is_saddle() -> None:
    result = classify(0.0, torch.tensor([-2.0, 2.0], dtype=F64), SPEC)

    assert result.verdict == Verdict.SADDLE_POINT
    assert result.negative_count == 1
    assert result.positive_count == 1


def test_two_weight_escape_matches_prediction() -> None:
    theta = torch.zeros(2, dtype=F64)
    hessian = hessian_matrix(two_weight_loss, theta)

    escape = try_escape(two_weight_loss, theta, theta.clone(), hessian, -2.0, 1.0)

    # Along v = +-(1, 1) / sqrt(2) the loss is (t^2 / 2 - 1)^2, so the
    # change is -t^2 + t^4 / 4 against the prediction -t^2.
    assert [trial.step_size for trial in escape.trials] == list(ESCAPE_STEP_SIZES)
    for trial in escape.trials:
        t = trial.step_size
        assert trial.loss == pytest.approx((t**2 / 2 - 1) ** 2, rel=1e-12)
        assert trial.loss_change == pytest.approx(-(t**2) + t**4 / 4, rel=1e-9)
        assert trial.predicted_change == pytest.approx(-(t**2), rel=1e-15)
    assert escape.best_step_size == 1.0


# try_escape on a quadratic with a gradient, where the loss change is exactly
# t * grad . v + 0.5 * eigenvalue * t^2.


@pytest.mark.parametrize("linear_term", [0.5, -0.5])
def test_escape_direction_descends(linear_term: float) -> None:
    a = torch.diag(torch.tensor([-1.0, 2.0], dtype=F64))
    b = torch.tensor([linear_term, 0.3], dtype=F64)

    def quadratic(theta: Tensor) -> Tensor:
        return 0.5 * theta @ a @ theta + b @ theta

    theta = torch.zeros(2, dtype=F64)
    escape = try_escape(quadratic, theta, b, a, -1.0, 0.0)

    for trial in escape.trials:
        t = trial.step_size
        assert trial.loss_change is not None
        first_order = trial.loss_change - trial.predicted_change
        assert first_order == pytest.approx(-0.5 * t, rel=1e-9)
    assert escape.best_step_size == 1.0


def test_escape_without_decrease_has_no_best() -> None:
    # The made-up Hessian puts the lowest eigenvector on e_0, where the loss
    # 1 + 1e-3 t^4 only rises, so no trial lowers it.
    def bowl(theta: Tensor) -> Tensor:
        return theta[1] ** 2 + 1e-3 * theta[0] ** 4 + 1.0

    theta = torch.zeros(2, dtype=F64)
    hessian = torch.diag(torch.tensor([-1e-3, 2.0], dtype=F64))

    escape = try_escape(bowl, theta, theta.clone(), hessian, -1e-3, 1.0)

    assert escape.best_step_size is None
    assert all(trial.loss_change is not None for trial in escape.trials)


# classify on hand-made eigenvalue lists.

CLASSIFY_CASES = [
    ([-1.0, 2.0], Verdict.SADDLE_POINT, (1, 1, 0)),
    ([1.0, 2.0], Verdict.LOCAL_MINIMUM, (2, 0, 0)),
    ([0.0, 1.0, 2.0], Verdict.DEGENERATE, (2, 0, 1)),
    ([-2.0, -1.0], Verdict.LOCAL_MAXIMUM, (0, 2, 0)),
    ([-1.0, 0.0], Verdict.DEGENERATE, (0, 1, 1)),
    ([-1.0, 0.0, 1.0], Verdict.SADDLE_POINT, (1, 1, 1)),
    ([0.0, 0.0, 0.0], Verdict.DEGENERATE, (0, 0, 3)),
    ([1e-7, 1.0], Verdict.DEGENERATE, (1, 0, 1)),
    ([-2e-6, 1.0], Verdict.SADDLE_POINT, (1, 1, 0)),
]


@pytest.mark.parametrize(("eigenvalues", "verdict", "counts"), CLASSIFY_CASES)
def test_classify_critical_point(
    eigenvalues: list[float], verdict: Verdict, counts: tuple[int, int, int]
) -> None:
    result = classify(1e-4, torch.tensor(eigenvalues, dtype=F64), SPEC)

    assert result.verdict == verdict
    assert result.positive_count == counts[0]
    assert result.negative_count == counts[1]
    assert result.zero_count == counts[2]
    assert "0.0001" in result.reason
    assert "0.001" in result.reason


def test_classify_threshold_is_relative() -> None:
    result = classify(0.0, torch.tensor([-4.0, 0.5], dtype=F64), SPEC)

    assert result.eigenvalue_threshold == pytest.approx(4e-6)


def test_classify_all_zero_uses_floor() -> None:
    result = classify(0.0, torch.zeros(3, dtype=F64), SPEC)

    assert result.eigenvalue_threshold == ZERO_EIGENVALUE_FLOOR
    assert "cannot classify" in result.reason


def test_classify_minimum_reasons() -> None:
    strict = classify(0.0, torch.tensor([1.0, 2.0], dtype=F64), SPEC)
    flat = classify(0.0, torch.tensor([0.0, 0.0, 2.0], dtype=F64), SPEC)

    assert "strict local minimum" in strict.reason
    assert flat.verdict == Verdict.DEGENERATE
    assert "2 zero directions" in flat.reason
    assert "degenerate" in flat.reason


def test_classify_large_gradient_not_critical() -> None:
    result = classify(0.5, torch.tensor([-1.0, 2.0], dtype=F64), SPEC)

    assert result.verdict == Verdict.NOT_CRITICAL
    assert "0.5 is above the tolerance 0.001" in result.reason
    assert "saddle point" in result.reason


def test_classify_gradient_at_tolerance_critical() -> None:
    result = classify(1e-3, torch.tensor([1.0], dtype=F64), SPEC)

    assert result.verdict == Verdict.LOCAL_MINIMUM


# analyze_critical_point on tiny models with hand-computed Hessians.


def one_input_linear(weights: list[float]) -> nn.Sequential:
    """Linear(1, 2) without bias: logits (w0 x, w1 x)."""
    layer = nn.Linear(1, 2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weights).reshape(2, 1))
    return nn.Sequential(layer)


# The same input with both labels: equal logits minimize the loss, and adding
# one constant to both weights leaves it unchanged, which is a zero direction.
TIED_INPUTS = torch.ones(2, 1)
TIED_TARGETS = torch.tensor([0, 1])


@pytest.mark.parametrize(
    ("loss", "curvature"),
    [
        (LossName.CROSS_ENTROPY, 0.5),
        (LossName.MSE, 0.25),
    ],
)
def test_analysis_flat_minimum_degenerate(loss: LossName, curvature: float) -> None:
    model = one_input_linear([0.0, 0.0])

    result = analyze_critical_point(model, loss, TIED_INPUTS, TIED_TARGETS, SPEC)

    # The Hessian is c/2 * [[1, -1], [-1, 1]] with eigenvalues 0 and c. Cross
    # entropy gives c = 0.5 from diag(p) - p p^T with p = (1/2, 1/2). Mse on
    # softmax has second derivative 2 * (1/4)^2 = 1/8 along w0 - w1, so c = 0.25.
    assert result.verdict == Verdict.DEGENERATE
    assert result.gradient_norm == pytest.approx(0.0, abs=1e-15)
    assert result.eigenvalues == pytest.approx([0.0, curvature], abs=1e-14)
    assert min(result.eigenvalues) >= -result.eigenvalue_tolerance
    assert (result.positive_count, result.negative_count) == (1, 0)
    assert result.zero_count == 1
    assert result.minimum_ratio == 0.5
    assert result.escape is None
    assert "1 zero directions" in result.verdict_reason
    # The gradient is zero, so none of it lies in the flat direction either.
    assert result.gradient_flat_share is None


def test_analysis_large_gradient_not_critical() -> None:
    model = one_input_linear([2.0, 0.0])
    loss = LossName.CROSS_ENTROPY

    result = analyze_critical_point(model, loss, TIED_INPUTS, TIED_TARGETS, SPEC)

    # Per weight the gradient is +-(2 sigmoid(2) - 1) / 2.
    expected_norm = (2 / (1 + math.exp(-2)) - 1) / math.sqrt(2)
    assert result.verdict == Verdict.NOT_CRITICAL
    assert result.gradient_norm == pytest.approx(expected_norm, rel=1e-12)
    assert f"{expected_norm:.3g}" in result.verdict_reason
    assert "degenerate point" in result.verdict_reason
    assert result.escape is None


def two_layer_linear(first: float, second: list[float]) -> nn.Sequential:
    """Logits (b0 a x, b1 a x) with a the first weight and b the second layer."""
    hidden = nn.Linear(1, 1, bias=False)
    output = nn.Linear(1, 2, bias=False)
    with torch.no_grad():
        hidden.weight.fill_(first)
        output.weight.copy_(torch.tensor(second).reshape(2, 1))
    return nn.Sequential(hidden, output)


SINGLE_INPUT = torch.ones(1, 1)
SINGLE_TARGET = torch.tensor([0])


def test_analysis_saddle_point() -> None:
    model = two_layer_linear(0.0, [0.0, 0.0])

    result = analyze_critical_point(
        model, LossName.CROSS_ENTROPY, SINGLE_INPUT, SINGLE_TARGET, SPEC
    )

    # With g = softmax - one_hot = (-1/2, 1/2) the Hessian in (a, b0, b1) is
    # [[0, g0, g1], [g0, 0, 0], [g1, 0, 0]], eigenvalues -|g|, 0 and |g|.
    norm = math.sqrt(0.5)
    assert result.verdict == Verdict.SADDLE_POINT
    assert result.loss == pytest.approx(math.log(2), rel=1e-15)
    assert result.eigenvalues == pytest.approx([-norm, 0.0, norm], abs=1e-14)
    assert result.min_eigenvalue == pytest.approx(-norm, rel=1e-14)
    assert result.max_eigenvalue == pytest.approx(norm, rel=1e-14)
    assert result.minimum_ratio == pytest.approx(1 / 3)
    assert result.parameter_count == 3
    assert result.samples == 1
    assert result.dtype == "float64"


def test_analysis_saddle_escape_lowers_loss() -> None:
    model = two_layer_linear(0.0, [0.0, 0.0])

    result = analyze_critical_point(
        model, LossName.CROSS_ENTROPY, SINGLE_INPUT, SINGLE_TARGET, SPEC
    )

    escape = result.escape
    assert escape is not None
    assert escape.eigenvalue == result.min_eigenvalue
    assert escape.loss_before == result.loss
    for trial in escape.trials:
        assert trial.loss_change is not None
        assert trial.loss_change < 0
    first = escape.trials[0]
    assert first.step_size == 1e-3
    assert first.loss_change == pytest.approx(first.predicted_change, rel=1e-2)
    assert escape.best_step_size == 1.0


def test_analysis_not_critical_keeps_escape() -> None:
    model = two_layer_linear(0.0, [0.2, -0.2])

    result = analyze_critical_point(
        model, LossName.CROSS_ENTROPY, SINGLE_INPUT, SINGLE_TARGET, SPEC
    )

    # The gradient is (g . b, 0, 0) = (-0.2, 0, 0), and the Hessian keeps a
    # negative eigenvalue, so the escape runs and starts downhill.
    assert result.verdict == Verdict.NOT_CRITICAL
    # The weights are float32, so 0.2 carries float32 rounding.
    assert result.gradient_norm == pytest.approx(0.2, rel=1e-7)
    assert result.negative_count == 1
    assert "saddle point" in result.verdict_reason
    assert result.escape is not None
    first_change = result.escape.trials[0].loss_change
    assert first_change is not None
    assert first_change < 0


def test_analysis_leaves_model_unchanged() -> None:
    model = two_layer_linear(0.0, [0.2, -0.2]).train()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}

    analyze_critical_point(
        model, LossName.CROSS_ENTROPY, SINGLE_INPUT, SINGLE_TARGET, SPEC
    )

    assert model.training
    for name, parameter in model.named_parameters():
        assert parameter.dtype == torch.float32
        assert torch.equal(parameter, before[name])


def test_analysis_rejects_large_model() -> None:
    model = two_layer_linear(0.0, [0.0, 0.0])

    with pytest.raises(ValueError, match=r"has 3 parameters .* at most 2"):
        analyze_critical_point(
            model,
            LossName.CROSS_ENTROPY,
            SINGLE_INPUT,
            SINGLE_TARGET,
            SPEC,
            max_parameters=2,
        )


def test_analysis_rejects_non_finite_loss() -> None:
    model = one_input_linear([math.inf, 0.0])

    with pytest.raises(ValueError, match="not finite"):
        analyze_critical_point(
            model, LossName.CROSS_ENTROPY, TIED_INPUTS, TIED_TARGETS, SPEC
        )


def test_analysis_rejects_empty_inputs() -> None:
    model = one_input_linear([0.0, 0.0])
    inputs = torch.ones(0, 1)
    targets = torch.zeros(0, dtype=torch.long)

    with pytest.raises(ValueError, match="no samples"):
        analyze_critical_point(model, LossName.MSE, inputs, targets, SPEC)


# An MLP with tanh against torch.autograd.functional.hessian of a hand-written
# forward pass.

FEATURES, HIDDEN, CLASSES, SAMPLES = 5, 16, 4, 20


def reference_loss(theta: Tensor, inputs: Tensor, targets: Tensor) -> Tensor:
    """Cross entropy of Linear-tanh-Linear with parameters unpacked from theta."""
    sizes = [HIDDEN * FEATURES, HIDDEN, CLASSES * HIDDEN, CLASSES]
    w1, b1, w2, b2 = torch.split(theta, sizes)
    hidden = torch.tanh(inputs @ w1.view(HIDDEN, FEATURES).T + b1)
    logits = hidden @ w2.view(CLASSES, HIDDEN).T + b2
    return F.cross_entropy(logits, targets)


@pytest.fixture(scope="module")
def mlp_problem() -> tuple[nn.Module, Tensor, Tensor]:
    torch.manual_seed(0)
    spec = MlpSpec(hidden_sizes=[HIDDEN], activation=Activation.TANH)
    model = build_mlp(spec, FEATURES, CLASSES)
    inputs = torch.randn(SAMPLES, FEATURES)
    targets = torch.randint(0, CLASSES, (SAMPLES,))
    return model, inputs, targets


def reference_eigenvalues(
    model: nn.Module, inputs: Tensor, targets: Tensor
) -> tuple[Tensor, Tensor]:
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).double()
    hessian = torch.autograd.functional.hessian(
        lambda t: reference_loss(t, inputs.double(), targets), theta
    )
    return hessian, torch.linalg.eigvalsh(hessian)


def test_mlp_eigenvalues_match_autograd(
    mlp_problem: tuple[nn.Module, Tensor, Tensor],
) -> None:
    model, inputs, targets = mlp_problem
    _, expected = reference_eigenvalues(model, inputs, targets)
    loss = LossName.CROSS_ENTROPY

    result = analyze_critical_point(model, loss, inputs, targets, SPEC, chunk_size=37)

    eigenvalues = torch.tensor(result.eigenvalues, dtype=F64)
    scale = float(expected.abs().max())
    assert result.parameter_count == 164
    torch.testing.assert_close(eigenvalues, expected, rtol=0, atol=1e-8 * scale)
    assert result.eigenvalues == sorted(result.eigenvalues)


def test_mlp_counts_add_up(mlp_problem: tuple[nn.Module, Tensor, Tensor]) -> None:
    model, inputs, targets = mlp_problem
    loss = LossName.CROSS_ENTROPY

    result = analyze_critical_point(model, loss, inputs, targets, SPEC)

    total = result.positive_count + result.negative_count + result.zero_count
    assert total == result.parameter_count
    assert len(result.eigenvalues) == result.parameter_count
    assert result.minimum_ratio == result.positive_count / result.parameter_count
    assert result.min_eigenvalue == result.eigenvalues[0]
    assert result.max_eigenvalue == result.eigenvalues[-1]
    assert result.samples == SAMPLES


def test_mlp_hessian_matches_autograd(
    mlp_problem: tuple[nn.Module, Tensor, Tensor],
) -> None:
    model, inputs, targets = mlp_problem
    expected, _ = reference_eigenvalues(model, inputs, targets)
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).double()

    hessian = hessian_matrix(
        lambda t: reference_loss(t, inputs.double(), targets), theta, chunk_size=50
    )

    assert torch.equal(hessian, hessian.T)
    scale = float(expected.abs().max())
    torch.testing.assert_close(hessian, expected, rtol=0, atol=1e-10 * scale)
