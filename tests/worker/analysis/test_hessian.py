"""Hessian helpers against a quadratic with a chosen spectrum, in float64."""

import pytest
import torch
from torch import Tensor, nn

from saddlepoint.spec import LossName
from worker.analysis.hessian import (
    LossFunction,
    flatten_parameters,
    gradient,
    hessian_matrix,
    hessian_vector_product,
    make_loss_function,
)
from worker.engine.losses import compute_loss

SPECTRUM = [-3.0, -0.5, 0.0, 1.0, 2.0, 10.0]
F64 = torch.float64


class Quadratic:
    """f(theta) = 0.5 theta^T A theta + b^T theta with A = Q diag(SPECTRUM) Q^T."""

    def __init__(self, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        size = len(SPECTRUM)
        q, _ = torch.linalg.qr(torch.randn(size, size, generator=generator, dtype=F64))
        a = q @ torch.diag(torch.tensor(SPECTRUM, dtype=F64)) @ q.T
        self.a = (a + a.T) / 2
        self.b = torch.randn(size, generator=generator, dtype=F64)
        self.theta = torch.randn(size, generator=generator, dtype=F64)

    def __call__(self, theta: Tensor) -> Tensor:
        return 0.5 * theta @ self.a @ theta + self.b @ theta


@pytest.fixture
def quadratic() -> Quadratic:
    return Quadratic()


def test_hessian_matrix_of_quadratic(quadratic: Quadratic) -> None:
    hessian = hessian_matrix(quadratic, quadratic.theta)

    assert hessian.shape == (6, 6)
    assert hessian.dtype == F64
    torch.testing.assert_close(hessian, quadratic.a, rtol=0, atol=1e-10)


def test_hessian_eigenvalues_recover_spectrum(quadratic: Quadratic) -> None:
    eigenvalues = torch.linalg.eigvalsh(hessian_matrix(quadratic, quadratic.theta))

    expected = torch.tensor(SPECTRUM, dtype=F64)
    torch.testing.assert_close(eigenvalues, expected, rtol=0, atol=1e-10)


def test_hessian_matrix_is_symmetric(quadratic: Quadratic) -> None:
    hessian = hessian_matrix(quadratic, quadratic.theta)

    assert torch.equal(hessian, hessian.T)


@pytest.mark.parametrize("chunk_size", [1, 4, 5, 6, 100])
def test_hessian_chunk_size_independent(quadratic: Quadratic, chunk_size: int) -> None:
    reference = hessian_matrix(quadratic, quadratic.theta, chunk_size=6)

    hessian = hessian_matrix(quadratic, quadratic.theta, chunk_size=chunk_size)

    torch.testing.assert_close(hessian, reference, rtol=0, atol=1e-12)


def test_hessian_rejects_zero_chunk_size(quadratic: Quadratic) -> None:
    with pytest.raises(ValueError, match="chunk_size must be at least 1, got 0"):
        hessian_matrix(quadratic, quadratic.theta, chunk_size=0)


def test_hessian_vector_product_of_quadratic(quadratic: Quadratic) -> None:
    v = torch.randn(6, generator=torch.Generator().manual_seed(1), dtype=F64)

    product = hessian_vector_product(quadratic, quadratic.theta, v)

    torch.testing.assert_close(product, quadratic.a @ v, rtol=0, atol=1e-12)


def test_gradient_of_quadratic(quadratic: Quadratic) -> None:
    expected = quadratic.a @ quadratic.theta + quadratic.b

    torch.testing.assert_close(
        gradient(quadratic, quadratic.theta), expected, rtol=0, atol=1e-12
    )


def small_mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double().eval()


def test_flatten_parameters_round_trip() -> None:
    model = small_mlp()

    theta, unflatten = flatten_parameters(model)
    parameters = unflatten(theta)

    assert theta.shape == (3 * 4 + 4 + 4 * 2 + 2,)
    assert list(parameters) == [name for name, _ in model.named_parameters()]
    for name, parameter in model.named_parameters():
        assert torch.equal(parameters[name], parameter.detach())


def test_flatten_parameters_copies_values() -> None:
    model = small_mlp()

    theta, _ = flatten_parameters(model)
    theta.zero_()

    assert all(parameter.abs().sum() > 0 for parameter in model.parameters())


@pytest.mark.parametrize("loss", list(LossName))
def test_loss_function_matches_model(loss: LossName) -> None:
    model = small_mlp()
    inputs = torch.randn(7, 3, dtype=F64)
    targets = torch.tensor([0, 1, 1, 0, 1, 0, 0])
    theta, _ = flatten_parameters(model)

    f: LossFunction = make_loss_function(model, loss, inputs, targets)

    expected = compute_loss(loss, model(inputs), targets)
    torch.testing.assert_close(f(theta), expected.detach(), rtol=0, atol=1e-14)


def test_loss_function_follows_theta() -> None:
    model = small_mlp()
    inputs = torch.randn(7, 3, dtype=F64)
    targets = torch.zeros(7, dtype=torch.long)
    theta, _ = flatten_parameters(model)
    f = make_loss_function(model, LossName.CROSS_ENTROPY, inputs, targets)

    # Zero weights and biases give equal logits, so the loss is log(2).
    loss = f(torch.zeros_like(theta))

    torch.testing.assert_close(loss, torch.log(torch.tensor(2.0, dtype=F64)))


def test_loss_function_rejects_training_mode() -> None:
    model = small_mlp().train()
    inputs = torch.randn(2, 3, dtype=F64)
    targets = torch.zeros(2, dtype=torch.long)

    with pytest.raises(ValueError, match=r"call model\.eval\(\)"):
        make_loss_function(model, LossName.MSE, inputs, targets)
