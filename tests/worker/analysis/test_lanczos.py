"""Lanczos and power iteration against matrices with chosen spectra, in float64.

Each test matrix is H = Q diag(spectrum) Q^T with a random orthogonal Q, so
the exact eigenpairs are known. The last tests compare Lanczos with the exact
Hessian of a small MLP.
"""

import pytest
import torch
from torch import Tensor

from saddlepoint.spec import Activation, LossName, MlpSpec
from worker.analysis.hessian import (
    LossFunction,
    flatten_parameters,
    hessian_matrix,
    hessian_vector_product,
    make_loss_function,
)
from worker.analysis.lanczos import (
    EigenpairResult,
    Which,
    lanczos_extremes,
    power_iteration,
)
from worker.analysis.linalg import (
    CountingOperator,
    HessianVectorProduct,
    hessian_vector_product_double_backward,
    make_double_backward_operator,
    orthogonalize,
)
from worker.engine.models import build_mlp

F64 = torch.float64

# Three negative eigenvalues well below a cluster of small ones around zero, and
# a few large positive ones, as in the Hessian of a network near a saddle.
NEGATIVE_SPECTRUM = torch.cat(
    [
        torch.tensor([-3.0, -1.5, -0.5], dtype=F64),
        torch.linspace(-0.01, 0.2, 143, dtype=F64),
        torch.tensor([10.0, 20.0, 35.0, 50.0], dtype=F64),
    ]
)
NEGATIVE_SPECTRUM_SCALE = 50.0


def symmetric_matrix(spectrum: Tensor, seed: int = 0) -> Tensor:
    """Return Q diag(spectrum) Q^T for a random orthogonal Q."""
    generator = torch.Generator().manual_seed(seed)
    size = spectrum.numel()
    q, _ = torch.linalg.qr(torch.randn(size, size, generator=generator, dtype=F64))
    matrix = q @ torch.diag(spectrum) @ q.T
    return (matrix + matrix.T) / 2


def matrix_operator(matrix: Tensor) -> HessianVectorProduct:
    return lambda v: matrix @ v


def assert_eigenpairs(result: EigenpairResult, matrix: Tensor, atol: float) -> None:
    """Check ||H v - lambda v|| <= atol and unit, orthogonal eigenvectors."""
    vectors = result.eigenvectors
    residuals = matrix @ vectors - vectors * result.eigenvalues
    assert float(torch.linalg.vector_norm(residuals, dim=0).max()) <= atol
    gram = vectors.T @ vectors
    torch.testing.assert_close(
        gram, torch.eye(gram.shape[0], dtype=F64), atol=1e-10, rtol=0
    )


@pytest.fixture(scope="module")
def negative_matrix() -> Tensor:
    return symmetric_matrix(NEGATIVE_SPECTRUM)


# Extreme eigenpairs of a spectrum with negative eigenvalues.


@pytest.mark.parametrize(
    ("which", "expected"),
    [
        ("largest", [20.0, 35.0, 50.0]),
        ("smallest", [-3.0, -1.5, -0.5]),
        ("both", [-3.0, -1.5, -0.5, 20.0, 35.0, 50.0]),
    ],
)
def test_lanczos_extremes_match_spectrum(
    negative_matrix: Tensor, which: Which, expected: list[float]
) -> None:
    result = lanczos_extremes(
        matrix_operator(negative_matrix), 150, 3, which, generator=0
    )

    assert result.converged
    assert result.message is None
    torch.testing.assert_close(
        result.eigenvalues, torch.tensor(expected, dtype=F64), rtol=1e-8, atol=0
    )
    assert result.eigenvectors.shape == (150, len(expected))
    assert float(result.relative_residuals.max()) <= 1e-6
    assert_eigenpairs(result, negative_matrix, atol=1e-6 * NEGATIVE_SPECTRUM_SCALE)


def test_lanczos_reports_explicit_residuals(negative_matrix: Tensor) -> None:
    result = lanczos_extremes(
        matrix_operator(negative_matrix), 150, 2, "both", generator=1
    )

    vectors = result.eigenvectors
    explicit = torch.linalg.vector_norm(
        negative_matrix @ vectors - vectors * result.eigenvalues, dim=0
    )
    torch.testing.assert_close(result.ritz_residuals, explicit, rtol=1e-6, atol=1e-13)
    torch.testing.assert_close(
        result.relative_residuals,
        explicit / result.spectral_scale,
        rtol=1e-6,
        atol=1e-15,
    )
    assert result.spectral_scale == pytest.approx(NEGATIVE_SPECTRUM_SCALE, rel=1e-10)


def test_lanczos_counts_hessian_vector_products(negative_matrix: Tensor) -> None:
    calls = 0

    def counted(v: Tensor) -> Tensor:
        nonlocal calls
        calls += 1
        return negative_matrix @ v

    verified = lanczos_extremes(counted, 150, 2, "both", generator=2)
    unverified = lanczos_extremes(counted, 150, 2, "both", generator=2, verify=False)

    assert verified.hvp_count == verified.iterations + 4
    assert unverified.hvp_count == unverified.iterations
    assert calls == verified.hvp_count + unverified.hvp_count


def test_lanczos_is_reproducible_with_seed(negative_matrix: Tensor) -> None:
    first = lanczos_extremes(matrix_operator(negative_matrix), 150, 2, generator=7)
    second = lanczos_extremes(
        matrix_operator(negative_matrix),
        150,
        2,
        generator=torch.Generator().manual_seed(7),
    )

    assert torch.equal(first.eigenvalues, second.eigenvalues)
    assert first.iterations == second.iterations


def test_lanczos_tight_tolerance_more_accurate(negative_matrix: Tensor) -> None:
    loose = lanczos_extremes(
        matrix_operator(negative_matrix), 150, 3, "smallest", generator=3, tol=1e-3
    )
    tight = lanczos_extremes(
        matrix_operator(negative_matrix), 150, 3, "smallest", generator=3, tol=1e-10
    )

    assert loose.converged
    assert tight.converged
    assert loose.iterations < tight.iterations
    assert float(tight.relative_residuals.max()) <= 1e-10
    assert float(loose.relative_residuals.max()) <= 1e-3


# Lanczos against power iteration.


def test_power_iteration_finds_top_magnitude(negative_matrix: Tensor) -> None:
    result = power_iteration(
        matrix_operator(negative_matrix), 150, generator=0, max_iter=500
    )

    assert result.converged
    assert result.eigenvalues.shape == (1,)
    assert float(result.eigenvalues[0]) == pytest.approx(50.0, rel=1e-10)
    assert result.hvp_count == result.iterations
    assert_eigenpairs(result, negative_matrix, atol=1e-6 * NEGATIVE_SPECTRUM_SCALE)


def test_power_iteration_misses_negative_curvature(negative_matrix: Tensor) -> None:
    power = power_iteration(
        matrix_operator(negative_matrix), 150, generator=0, max_iter=500
    )
    lanczos = lanczos_extremes(
        matrix_operator(negative_matrix), 150, 1, "smallest", generator=0
    )

    # Power iteration on H converges to the largest magnitude, +50, so it
    # reports positive curvature only. Lanczos finds lambda_min = -3.
    assert float(power.eigenvalues[0]) > 0
    assert float(lanczos.eigenvalues[0]) == pytest.approx(-3.0, rel=1e-8)


def test_power_iteration_negative_dominant() -> None:
    spectrum = torch.cat(
        [torch.tensor([-60.0], dtype=F64), torch.linspace(-1.0, 30.0, 59, dtype=F64)]
    )
    matrix = symmetric_matrix(spectrum, seed=4)

    result = power_iteration(matrix_operator(matrix), 60, generator=0, max_iter=500)

    assert result.converged
    assert float(result.eigenvalues[0]) == pytest.approx(-60.0, rel=1e-10)


def test_power_iteration_not_converged(negative_matrix: Tensor) -> None:
    result = power_iteration(
        matrix_operator(negative_matrix), 150, generator=0, max_iter=3
    )

    assert not result.converged
    assert result.iterations == 3
    assert result.message is not None
    assert "after 3 power iteration steps" in result.message
    assert float(result.relative_residuals[0]) > 1e-6


def test_power_iteration_opposite_extremes_not_converged() -> None:
    spectrum = torch.cat(
        [torch.tensor([-5.0, 5.0], dtype=F64), torch.linspace(-1.0, 1.0, 38, dtype=F64)]
    )
    matrix = symmetric_matrix(spectrum, seed=5)

    result = power_iteration(matrix_operator(matrix), 40, generator=0, max_iter=200)

    assert not result.converged
    assert result.message is not None


# Degenerate and clustered spectra, and small operators.


def test_lanczos_repeated_eigenvalues_all_copies() -> None:
    spectrum = torch.tensor(
        [-2.0, -2.0, -2.0, 1.0, 1.0, 1.0, 1.0, 3.0, 3.0, 3.0, 5.0, 5.0], dtype=F64
    )
    matrix = symmetric_matrix(spectrum, seed=6)

    result = lanczos_extremes(
        matrix_operator(matrix), 12, 3, "both", generator=0, max_iter=50
    )

    assert result.converged
    assert result.iterations <= 12
    expected = torch.tensor([-2.0, -2.0, -2.0, 3.0, 5.0, 5.0], dtype=F64)
    torch.testing.assert_close(result.eigenvalues, expected, rtol=0, atol=1e-12)
    assert_eigenpairs(result, matrix, atol=1e-12)


def test_lanczos_exhausts_small_space() -> None:
    spectrum = torch.tensor([-4.0, -1.0, 0.0, 0.5, 2.0, 2.5, 7.0, 9.0], dtype=F64)
    matrix = symmetric_matrix(spectrum, seed=7)

    result = lanczos_extremes(
        matrix_operator(matrix), 8, 4, "both", generator=0, tol=1e-14, max_iter=100
    )

    # Eight steps span the whole space, so every Ritz value is exact.
    assert result.converged
    assert result.iterations == 8
    assert result.hvp_count == 8 + 8
    torch.testing.assert_close(result.eigenvalues, spectrum, rtol=0, atol=1e-12)


def test_lanczos_one_dimensional_operator() -> None:
    result = lanczos_extremes(lambda v: -2.5 * v, 1, 1, "smallest", generator=0)

    assert result.converged
    assert result.iterations == 1
    assert float(result.eigenvalues[0]) == pytest.approx(-2.5, rel=1e-15)


def test_lanczos_low_rank_restarts_after_breakdown() -> None:
    spectrum = torch.zeros(100, dtype=F64)
    spectrum[:4] = torch.tensor([-1.0, 2.0, 4.0, 8.0], dtype=F64)
    matrix = symmetric_matrix(spectrum, seed=8)

    smallest = lanczos_extremes(
        matrix_operator(matrix), 100, 3, "smallest", generator=0
    )
    largest = lanczos_extremes(matrix_operator(matrix), 100, 3, "largest", generator=0)

    # The Krylov space of a rank-4 matrix is invariant after 5 steps, and the
    # zero eigenvalues beyond it are found only after restarts.
    assert smallest.converged
    torch.testing.assert_close(
        smallest.eigenvalues,
        torch.tensor([-1.0, 0.0, 0.0], dtype=F64),
        rtol=0,
        atol=1e-12,
    )
    assert largest.converged
    torch.testing.assert_close(
        largest.eigenvalues,
        torch.tensor([2.0, 4.0, 8.0], dtype=F64),
        rtol=0,
        atol=1e-12,
    )
    assert_eigenpairs(smallest, matrix, atol=1e-12)


def test_lanczos_clustered_top_eigenvalues() -> None:
    spectrum = torch.cat(
        [
            torch.linspace(-1.0, 1.0, 117, dtype=F64),
            torch.tensor([20.0, 20.0 + 1e-4, 20.0 + 2e-4], dtype=F64),
        ]
    )
    matrix = symmetric_matrix(spectrum, seed=9)

    result = lanczos_extremes(
        matrix_operator(matrix), 120, 3, "largest", generator=0, tol=1e-10
    )

    assert result.converged
    expected = torch.tensor([20.0, 20.0 + 1e-4, 20.0 + 2e-4], dtype=F64)
    torch.testing.assert_close(result.eigenvalues, expected, rtol=1e-12, atol=0)
    assert_eigenpairs(result, matrix, atol=1e-10 * 20.0 * 2)


def test_lanczos_zero_operator() -> None:
    result = lanczos_extremes(torch.zeros_like, 10, 2, "both", generator=0)

    assert result.converged
    assert torch.equal(result.eigenvalues, torch.zeros(4, dtype=F64))
    assert result.spectral_scale == 0.0


# Failure reporting and invalid arguments.


def test_lanczos_not_converged_reports(negative_matrix: Tensor) -> None:
    result = lanczos_extremes(
        matrix_operator(negative_matrix), 150, 3, "both", generator=0, max_iter=8
    )

    assert not result.converged
    assert result.iterations == 8
    assert result.message is not None
    assert "after 8 Lanczos steps (max_iter=8, dim=150)" in result.message
    assert "Raise max_iter or loosen tol" in result.message
    assert float(result.relative_residuals.max()) > 1e-6


@pytest.mark.parametrize(
    ("dim", "k", "which", "max_iter", "tol", "match"),
    [
        (10, 0, "largest", 10, 1e-6, "k must be at least 1"),
        (10, 6, "both", 10, 1e-6, "requests 12 eigenpairs"),
        (10, 3, "both", 5, 1e-6, "raise max_iter"),
        (10, 2, "middle", 10, 1e-6, "which must be"),
        (10, 2, "largest", 10, 0.0, "tol must be positive"),
    ],
)
def test_lanczos_rejects_invalid_arguments(
    dim: int, k: int, which: str, max_iter: int, tol: float, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        lanczos_extremes(
            lambda v: v,
            dim,
            k,
            which,  # type: ignore[arg-type]
            generator=0,
            max_iter=max_iter,
            tol=tol,
        )


def test_lanczos_rejects_non_finite_product() -> None:
    with pytest.raises(ValueError, match="NaN or infinite"):
        lanczos_extremes(lambda v: v * float("nan"), 5, 1, generator=0)


def test_counting_operator_rejects_wrong_shape() -> None:
    operator = CountingOperator(lambda v: torch.cat([v, v]), 3)

    with pytest.raises(ValueError, match="returned shape"):
        operator(torch.ones(3, dtype=F64))
    with pytest.raises(ValueError, match="expected a vector of shape"):
        operator(torch.ones(4, dtype=F64))


def test_orthogonalize_removes_basis_components() -> None:
    generator = torch.Generator().manual_seed(0)
    basis, _ = torch.linalg.qr(torch.randn(50, 5, generator=generator, dtype=F64))
    inside = basis @ torch.randn(5, generator=generator, dtype=F64)
    v = inside + 1e-10 * torch.randn(50, generator=generator, dtype=F64)

    result = orthogonalize(v, basis.T)

    assert float((basis.T @ result).abs().max()) <= 1e-25


# Exact against iterative on the Hessian of a small MLP.


@pytest.fixture(scope="module")
def mlp_problem() -> tuple[LossFunction, Tensor, Tensor]:
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    spec = MlpSpec(hidden_sizes=[16], activation=Activation.TANH)
    model = build_mlp(spec, features=16, outputs=3).to(F64).eval()
    inputs = torch.randn(128, 16, generator=generator, dtype=F64)
    targets = torch.randint(0, 3, (128,), generator=generator)
    f = make_loss_function(model, LossName.CROSS_ENTROPY, inputs, targets)
    theta, _ = flatten_parameters(model)
    return f, theta, hessian_matrix(f, theta)


def test_lanczos_matches_exact_mlp_hessian(
    mlp_problem: tuple[LossFunction, Tensor, Tensor],
) -> None:
    f, theta, hessian = mlp_problem
    parameter_count = theta.numel()
    exact = torch.linalg.eigvalsh(hessian)
    scale = float(exact.abs().max())

    result = lanczos_extremes(
        lambda v: hessian_vector_product(f, theta, v),
        parameter_count,
        3,
        "both",
        generator=0,
        tol=1e-8,
        max_iter=parameter_count,
    )

    assert parameter_count == 323
    assert result.converged
    expected = torch.cat([exact[:3], exact[-3:]])
    assert float(expected[0]) < 0, "the MLP Hessian should have negative curvature"
    assert float((result.eigenvalues - expected).abs().max()) <= 1e-6 * scale
    assert_eigenpairs(result, hessian, atol=1e-6 * scale)


def test_double_backward_matches_forward_over_reverse(
    mlp_problem: tuple[LossFunction, Tensor, Tensor],
) -> None:
    f, theta, hessian = mlp_problem
    v = torch.randn(
        theta.numel(), generator=torch.Generator().manual_seed(1), dtype=F64
    )
    operator = make_double_backward_operator(f, theta)

    single = hessian_vector_product_double_backward(f, theta, v)

    torch.testing.assert_close(single, hessian @ v, rtol=0, atol=1e-12)
    torch.testing.assert_close(operator(v), hessian @ v, rtol=0, atol=1e-12)
    torch.testing.assert_close(operator(2 * v), 2 * (hessian @ v), rtol=0, atol=1e-12)
