"""Hutchinson and Hutch++ trace estimates on matrices with chosen spectra."""

import math
from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from worker.analysis.linalg import HessianVectorProduct
from worker.analysis.trace import TraceEstimate, hutchinson_trace, hutchpp_trace

F64 = torch.float64


def symmetric_matrix(spectrum: Tensor, seed: int = 0) -> Tensor:
    """Return Q diag(spectrum) Q^T for a random orthogonal Q."""
    generator = torch.Generator().manual_seed(seed)
    size = spectrum.numel()
    q, _ = torch.linalg.qr(torch.randn(size, size, generator=generator, dtype=F64))
    matrix = q @ torch.diag(spectrum) @ q.T
    return (matrix + matrix.T) / 2


def matrix_operator(matrix: Tensor) -> HessianVectorProduct:
    return lambda v: matrix @ v


# An indefinite spectrum with a flat bulk: Hutch++ has little to gain here.
FLAT_SPECTRUM = torch.cat(
    [torch.tensor([-3.0, -0.5], dtype=F64), torch.linspace(-1.0, 4.0, 98, dtype=F64)]
)
# Eigenvalues 100 * 0.7^i: a few directions hold almost all of the trace.
DECAYING_SPECTRUM = 100.0 * 0.7 ** torch.arange(200, dtype=F64)

Estimator = Callable[..., TraceEstimate]
ESTIMATORS: list[Estimator] = [hutchinson_trace, hutchpp_trace]


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_trace_unbiased_over_seeds(estimator: Estimator) -> None:
    matrix = symmetric_matrix(FLAT_SPECTRUM)
    truth = float(FLAT_SPECTRUM.sum())

    estimates = torch.tensor(
        [
            estimator(matrix_operator(matrix), 100, 9, generator=seed).estimate
            for seed in range(120)
        ],
        dtype=F64,
    )

    # The mean of 120 independent estimates lies within 4 standard errors of
    # the truth unless the estimator is biased.
    standard_error = float(estimates.std()) / math.sqrt(estimates.numel())
    assert abs(float(estimates.mean()) - truth) <= 4 * standard_error


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_trace_uses_exact_budget(estimator: Estimator) -> None:
    matrix = symmetric_matrix(FLAT_SPECTRUM)
    calls = 0

    def counted(v: Tensor) -> Tensor:
        nonlocal calls
        calls += 1
        return matrix @ v

    for num_queries in (3, 10, 31):
        calls = 0
        result = estimator(counted, 100, num_queries, generator=0)

        assert result.hvp_count == num_queries
        assert calls == num_queries


def test_hutchpp_beats_hutchinson_on_decaying_spectrum() -> None:
    matrix = symmetric_matrix(DECAYING_SPECTRUM, seed=1)
    truth = float(DECAYING_SPECTRUM.sum())
    operator = matrix_operator(matrix)

    def relative_rms_error(estimator: Estimator) -> float:
        errors = [
            estimator(operator, 200, 30, generator=seed).estimate - truth
            for seed in range(30)
        ]
        return math.sqrt(sum(e * e for e in errors) / len(errors)) / truth

    hutchinson_error = relative_rms_error(hutchinson_trace)
    hutchpp_error = relative_rms_error(hutchpp_trace)

    # The 10 sketch vectors capture most of the top eigenvalues, so the
    # Hutchinson part of Hutch++ acts on a remainder with a far smaller Frobenius
    # norm. With these seeds the errors are about 0.9% and 10%.
    assert hutchpp_error < 0.2 * hutchinson_error
    assert hutchpp_error < 0.02


def test_hutchpp_exact_for_low_rank() -> None:
    spectrum = torch.zeros(80, dtype=F64)
    spectrum[:4] = torch.tensor([-2.0, 1.0, 3.0, 7.0], dtype=F64)
    matrix = symmetric_matrix(spectrum, seed=2)

    result = hutchpp_trace(matrix_operator(matrix), 80, 15, generator=0)

    # Five sketch vectors span the rank-4 range, so the remainder is zero.
    assert result.estimate == pytest.approx(9.0, abs=1e-10)
    assert result.standard_error is not None
    assert result.standard_error <= 1e-10


def test_hutchinson_standard_error_matches_spread() -> None:
    matrix = symmetric_matrix(FLAT_SPECTRUM)

    result = hutchinson_trace(matrix_operator(matrix), 100, 400, generator=0)

    # Variance per query for Rademacher probes: 2 (||H||_F^2 - sum_j H_jj^2).
    off_diagonal = (matrix**2).sum() - (torch.diagonal(matrix) ** 2).sum()
    expected_error = math.sqrt(2 * float(off_diagonal) / 400)
    assert result.standard_error is not None
    assert result.standard_error == pytest.approx(expected_error, rel=0.2)


def test_hutchinson_diagonal_matrix_exact() -> None:
    diagonal = torch.tensor([1.0, -2.0, 3.5, 0.25], dtype=F64)

    result = hutchinson_trace(lambda v: diagonal * v, 4, 1, generator=0)

    # z^T D z = sum_j D_jj z_j^2 = tr(D) for every Rademacher z.
    assert result == TraceEstimate(estimate=2.75, standard_error=None, hvp_count=1)


def test_hutchinson_rejects_zero_queries() -> None:
    with pytest.raises(ValueError, match="num_queries must be at least 1"):
        hutchinson_trace(lambda v: v, 4, 0, generator=0)


def test_hutchpp_rejects_too_few_queries() -> None:
    with pytest.raises(ValueError, match="at least 3 for Hutch"):
        hutchpp_trace(lambda v: v, 4, 2, generator=0)
