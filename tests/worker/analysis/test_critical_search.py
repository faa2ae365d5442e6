"""Critical-point search on problems whose critical points are known."""

import pytest
import torch
from torch import nn

from saddlepoint.spec import AnalysisSpec, LossName
from saddlepoint.spec.analysis import CriticalSearchSpec
from worker.analysis.critical_point import analyze_exact
from worker.analysis.critical_search import find_critical_point
from worker.analysis.objective import LossObjective


def test_search_reaches_zero_gradient_on_mlp() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).eval()
    inputs, targets = torch.randn(30, 3), torch.randint(0, 2, (30,))
    objective = LossObjective(model, LossName.CROSS_ENTROPY, inputs, targets)
    spec = CriticalSearchSpec(enabled=True, gradient_tolerance=1e-9)
    result = find_critical_point(objective, spec)
    assert result.converged
    assert result.gradient_norm <= 1e-9
    assert result.hvp_count > 0
    assert result.initial_gradient_norm > result.gradient_norm
    assert result.steps > 0
    assert float(objective.gradient(result.theta).norm()) == pytest.approx(
        result.gradient_norm
    )


def test_adam_search_lowers_gradient_norm() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).eval()
    inputs, targets = torch.randn(30, 3), torch.randint(0, 2, (30,))
    objective = LossObjective(model, LossName.CROSS_ENTROPY, inputs, targets)
    spec = CriticalSearchSpec(
        enabled=True, method="adam", max_steps=200, learning_rate=0.01
    )
    result = find_critical_point(objective, spec)
    assert result.steps == 200
    assert result.gradient_norm < result.initial_gradient_norm
    assert not result.converged


def test_search_can_stop_at_saddle() -> None:
    # Logits (b0 a x, b1 a x) at a = b = 0 have zero gradient and a Hessian
    # with eigenvalues -1/sqrt(2), 0, 1/sqrt(2): a saddle. Starting next to it
    # on the saddle's attracting side, descent on |grad|^2 stays there.
    hidden = nn.Linear(1, 1, bias=False)
    output = nn.Linear(1, 2, bias=False)
    with torch.no_grad():
        hidden.weight.fill_(1e-3)
        output.weight.zero_()
    model = nn.Sequential(hidden, output).eval()
    objective = LossObjective(
        model, LossName.CROSS_ENTROPY, torch.ones(1, 1), torch.tensor([0])
    )
    spec = CriticalSearchSpec(enabled=True, gradient_tolerance=1e-8)
    result = find_critical_point(objective, spec)
    assert result.converged
    end = objective.at(result.theta)
    analysis = analyze_exact(end, AnalysisSpec(gradient_tolerance=1e-6)).analysis
    assert analysis.verdict.value == "saddle_point"
    assert analysis.min_eigenvalue == pytest.approx(-(2**-0.5), rel=1e-3)


def test_search_at_critical_point_takes_no_step() -> None:
    model = nn.Sequential(nn.Linear(1, 2, bias=False)).eval()
    with torch.no_grad():
        model[0].weight.zero_()
    objective = LossObjective(
        model, LossName.CROSS_ENTROPY, torch.ones(2, 1), torch.tensor([0, 1])
    )
    result = find_critical_point(objective, CriticalSearchSpec(enabled=True))
    assert result.steps == 0
    assert result.converged
