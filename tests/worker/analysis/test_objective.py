"""LossObjective: chunked evaluation, HVP methods, modes and consistency."""

import pytest
import torch
from torch import nn

from saddlepoint.spec import AnalysisSpec, LossName
from saddlepoint.spec.analysis import ModelMode
from worker.analysis.critical_point import analyze_exact
from worker.analysis.hessian import (
    flatten_parameters,
    hessian_matrix,
    make_loss_function,
)
from worker.analysis.objective import InconsistentObjective, LossObjective

F64 = torch.float64


def small_problem(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3))
    inputs = torch.randn(50, 5)
    targets = torch.randint(0, 3, (50,))
    return model.eval(), inputs, targets


def reference_hessian(
    model: nn.Module, loss: LossName, inputs: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    copied = model.double().eval()
    f = make_loss_function(copied, loss, inputs.double(), targets)
    theta, _ = flatten_parameters(copied)
    return hessian_matrix(f, theta)


@pytest.mark.parametrize("chunk_samples", [1, 7, 50, 1000])
def test_chunked_values_equal_one_pass(chunk_samples: int) -> None:
    model, inputs, targets = small_problem()
    whole = LossObjective(model, LossName.CROSS_ENTROPY, inputs, targets)
    chunked = LossObjective(
        model, LossName.CROSS_ENTROPY, inputs, targets, chunk_samples=chunk_samples
    )
    v = torch.randn(whole.dim, dtype=F64)
    assert chunked.loss() == pytest.approx(whole.loss(), rel=1e-13)
    assert torch.allclose(chunked.gradient(), whole.gradient(), atol=1e-14)
    assert torch.allclose(chunked.hvp(v), whole.hvp(v), atol=1e-13)


@pytest.mark.parametrize("loss", [LossName.CROSS_ENTROPY, LossName.MSE])
@pytest.mark.parametrize("method", ["reverse", "forward"])
def test_hessian_matches_reference(loss: LossName, method: str) -> None:
    model, inputs, targets = small_problem()
    if loss == LossName.MSE and method == "forward":
        pytest.skip("torch 2.13: F.mse_loss fails under jvp of grad")
    objective = LossObjective(model, loss, inputs, targets, hvp_method=method)
    expected = reference_hessian(model, loss, inputs, targets)
    assert torch.allclose(objective.hessian(chunk_size=16), expected, atol=1e-12)
    assert objective.hvp_count == objective.dim


def test_hvp_batch_counts_each_vector() -> None:
    model, inputs, targets = small_problem()
    objective = LossObjective(model, LossName.CROSS_ENTROPY, inputs, targets)
    vectors = torch.randn(4, objective.dim, dtype=F64)
    batched = objective.hvp_batch(vectors)
    single = torch.stack([objective.hvp(v) for v in vectors])
    assert torch.allclose(batched, single, atol=1e-13)
    assert objective.hvp_count == 8


def test_dropout_in_train_mode_is_inconsistent() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 16), nn.Dropout(0.5), nn.Linear(16, 3))
    inputs, targets = torch.randn(40, 5), torch.randint(0, 3, (40,))
    objective = LossObjective(
        model, LossName.CROSS_ENTROPY, inputs, targets, mode=ModelMode.TRAIN
    )
    with pytest.raises(InconsistentObjective, match=r'analysis\.mode to "eval"'):
        objective.check_consistency()


def test_dropout_in_eval_mode_is_consistent() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 16), nn.Dropout(0.5), nn.Linear(16, 3))
    inputs, targets = torch.randn(40, 5), torch.randint(0, 3, (40,))
    objective = LossObjective(model, LossName.CROSS_ENTROPY, inputs, targets)
    objective.check_consistency()


def test_batch_norm_train_mode_uses_batch_statistics() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.Linear(4, 3))
    inputs, targets = torch.randn(40, 5), torch.randint(0, 3, (40,))
    before = model[1].running_mean.clone()
    train = LossObjective(
        model, LossName.CROSS_ENTROPY, inputs, targets, mode=ModelMode.TRAIN
    )
    evaluation = LossObjective(model, LossName.CROSS_ENTROPY, inputs, targets)
    train.check_consistency()
    # Fresh running statistics (mean 0, var 1) differ from the batch's.
    assert train.loss() != pytest.approx(evaluation.loss(), rel=1e-6)
    assert len(train.chunks) == 1
    assert torch.equal(model[1].running_mean, before)


def test_gradient_flat_share_of_known_quadratic_model() -> None:
    # A linear model with a duplicated input column: the weights of the two
    # copies can trade off freely, so w0 - w1 is a zero-curvature direction.
    torch.manual_seed(1)
    column = torch.randn(30, 1)
    inputs = torch.cat([column, column], dim=1)
    targets = torch.randint(0, 2, (30,))
    model = nn.Sequential(nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[0.3, -0.2], [0.1, 0.4]]))
    objective = LossObjective(model, LossName.CROSS_ENTROPY, inputs, targets)
    result = analyze_exact(objective, AnalysisSpec(gradient_tolerance=1e-12))
    analysis = result.analysis
    assert analysis.zero_count == 3
    # The gradient of each row is the same for both copies, so it is
    # orthogonal to the flat directions (1, -1) per row.
    assert analysis.gradient_flat_share == pytest.approx(0.0, abs=1e-20)
    assert analysis.verdict.value == "not_critical"


def test_eigenvectors_on_request() -> None:
    model, inputs, targets = small_problem()
    objective = LossObjective(model, LossName.CROSS_ENTROPY, inputs, targets)
    spec = AnalysisSpec(eigenvectors=True, top_k=2)
    analysis = analyze_exact(objective, spec).analysis
    assert analysis.eigenvectors is not None
    assert len(analysis.eigenvectors) == 4
    hessian = reference_hessian(model, LossName.CROSS_ENTROPY, inputs, targets)
    for vector, value in zip(
        analysis.eigenvectors,
        [*analysis.eigenvalues[:2], *analysis.eigenvalues[-2:]],
        strict=True,
    ):
        v = torch.tensor(vector, dtype=F64)
        assert torch.linalg.vector_norm(hessian @ v - value * v) < 1e-10


def test_moved_objective_counts_from_zero() -> None:
    model, inputs, targets = small_problem()
    objective = LossObjective(model, LossName.CROSS_ENTROPY, inputs, targets)
    objective.hvp(torch.randn(objective.dim, dtype=F64))
    moved = objective.at(objective.theta + 0.1)
    assert moved.hvp_count == 0
    assert objective.hvp_count == 1
