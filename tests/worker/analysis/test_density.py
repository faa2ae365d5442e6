"""Stochastic Lanczos quadrature on matrices with known eigenvalues, in float64."""

import pytest
import torch
from torch import Tensor

from worker.analysis.density import (
    SpectralDensity,
    density_histogram,
    estimate_minimum_ratio,
    smoothed_density,
    spectral_density,
)
from worker.analysis.linalg import HessianVectorProduct

F64 = torch.float64

# Groups of eigenvalues separated by gaps, so that bin edges placed in the
# gaps have no eigenvalue near them.
GROUPED_SPECTRUM = torch.cat(
    [
        torch.tensor([-3.0, -2.5], dtype=F64),
        torch.linspace(-1.0, -0.4, 30, dtype=F64),
        torch.linspace(0.3, 1.5, 120, dtype=F64),
        torch.linspace(4.0, 6.0, 16, dtype=F64),
        torch.tensor([20.0, 40.0], dtype=F64),
    ]
)
GROUPED_EDGES = torch.tensor([-4.0, -2.0, -0.1, 2.0, 10.0, 50.0], dtype=F64)


def symmetric_matrix(spectrum: Tensor, seed: int = 0) -> Tensor:
    """Return Q diag(spectrum) Q^T for a random orthogonal Q."""
    generator = torch.Generator().manual_seed(seed)
    size = spectrum.numel()
    q, _ = torch.linalg.qr(torch.randn(size, size, generator=generator, dtype=F64))
    matrix = q @ torch.diag(spectrum) @ q.T
    return (matrix + matrix.T) / 2


def matrix_operator(matrix: Tensor) -> HessianVectorProduct:
    return lambda v: matrix @ v


@pytest.fixture(scope="module")
def grouped_density() -> SpectralDensity:
    matrix = symmetric_matrix(GROUPED_SPECTRUM)
    return spectral_density(
        matrix_operator(matrix), GROUPED_SPECTRUM.numel(), 30, 40, generator=0
    )


def test_density_rules_are_probability_measures(
    grouped_density: SpectralDensity,
) -> None:
    assert len(grouped_density.rules) == 30
    assert grouped_density.hvp_count == 30 * 40
    for rule in grouped_density.rules:
        assert rule.nodes.shape == (40,)
        assert float(rule.weights.sum()) == pytest.approx(1.0, abs=1e-12)
        assert bool((rule.weights >= 0).all())
        assert float(rule.nodes.min()) >= -3.0 - 1e-10
        assert float(rule.nodes.max()) <= 40.0 + 1e-10


def test_density_histogram_matches_counts(grouped_density: SpectralDensity) -> None:
    size = GROUPED_SPECTRUM.numel()
    truth = torch.histogram(GROUPED_SPECTRUM, GROUPED_EDGES).hist

    histogram = density_histogram(grouped_density, GROUPED_EDGES)

    counts = histogram.mass * size
    count_errors = histogram.standard_error * size
    assert float(histogram.mass.sum()) == pytest.approx(1.0, abs=1e-12)
    # Within 4 standard errors plus one eigenvalue: the standard error from 30
    # probes underestimates the spread of bins that hold one or two
    # eigenvalues, because each probe's weight there is heavy-tailed.
    for count, expected, error in zip(counts, truth, count_errors, strict=True):
        assert abs(float(count - expected)) <= 4 * float(error) + 1.0


def test_density_histogram_drops_mass_outside_edges(
    grouped_density: SpectralDensity,
) -> None:
    edges = torch.tensor([0.0, 2.0], dtype=F64)

    histogram = density_histogram(grouped_density, edges)

    # Only the 120 eigenvalues in [0.3, 1.5] fall in [0, 2].
    assert float(histogram.mass[0]) == pytest.approx(120 / 170, abs=0.05)


def test_density_histogram_last_edge_inclusive() -> None:
    density = spectral_density(lambda v: 2.0 * v, 5, 1, 3, generator=0)

    histogram = density_histogram(density, torch.tensor([0.0, 1.0, 2.0], dtype=F64))

    torch.testing.assert_close(histogram.mass, torch.tensor([0.0, 1.0], dtype=F64))
    torch.testing.assert_close(histogram.standard_error, torch.zeros(2, dtype=F64))


def test_density_exact_after_breakdown() -> None:
    values = torch.tensor([-1.0, 0.5, 2.0, 7.0], dtype=F64)
    spectrum = values.repeat_interleave(torch.tensor([10, 30, 15, 5]))
    matrix = symmetric_matrix(spectrum, seed=3)

    density = spectral_density(matrix_operator(matrix), 60, 200, 20, generator=0)

    # Four distinct eigenvalues make every probe's Krylov space invariant
    # after four steps, so each rule has exactly those four nodes.
    assert density.hvp_count == 200 * 4
    for rule in density.rules:
        torch.testing.assert_close(rule.nodes, values, rtol=0, atol=1e-10)
    edges = torch.tensor([-2.0, 0.0, 1.0, 3.0, 8.0], dtype=F64)
    histogram = density_histogram(density, edges)
    expected = torch.tensor([10.0, 30.0, 15.0, 5.0], dtype=F64) / 60
    errors = histogram.mass - expected
    assert bool((errors.abs() <= 4 * histogram.standard_error).all())


def test_density_gaussian_probes() -> None:
    matrix = symmetric_matrix(GROUPED_SPECTRUM)
    density = spectral_density(
        matrix_operator(matrix), 170, 30, 40, generator=1, distribution="gaussian"
    )

    histogram = density_histogram(density, GROUPED_EDGES)

    truth = torch.histogram(GROUPED_SPECTRUM, GROUPED_EDGES).hist / 170
    assert float((histogram.mass - truth).abs().max()) <= 0.05


def test_smoothed_density_integrates_to_one(grouped_density: SpectralDensity) -> None:
    grid = torch.linspace(-6.0, 44.0, 5001, dtype=F64)

    values = smoothed_density(grouped_density, grid, sigma=0.2)

    assert values.shape == (5001,)
    assert float(torch.trapezoid(values, grid)) == pytest.approx(1.0, abs=1e-6)
    # The bulk at [0.3, 1.5] contains 120 of 170 eigenvalues over width 1.2.
    bulk = float(values[(grid > 0.6) & (grid < 1.2)].mean())
    assert bulk == pytest.approx(120 / 170 / 1.2, rel=0.2)


def test_minimum_ratio_within_uncertainty(grouped_density: SpectralDensity) -> None:
    truth = float((GROUPED_SPECTRUM > 0).double().mean())

    ratio = estimate_minimum_ratio(grouped_density, zero_tolerance=0.0)

    assert ratio.num_probes == 30
    assert ratio.standard_error is not None
    assert 0 < ratio.standard_error < 0.02
    assert abs(ratio.estimate - truth) <= 3 * ratio.standard_error


def test_minimum_ratio_biased_near_zero() -> None:
    # 100 eigenvalues crowd zero and 17 of them are positive.
    spectrum = torch.cat(
        [
            torch.tensor([-2.0], dtype=F64),
            torch.linspace(-0.05, 0.01, 100, dtype=F64),
            torch.linspace(1.0, 40.0, 49, dtype=F64),
        ]
    )
    matrix = symmetric_matrix(spectrum)
    truth = float((spectrum > 0).double().mean())

    def error_in_standard_errors(lanczos_steps: int) -> float:
        density = spectral_density(
            matrix_operator(matrix), 150, 20, lanczos_steps, generator=0
        )
        ratio = estimate_minimum_ratio(density, zero_tolerance=0.0)
        assert ratio.standard_error is not None
        return abs(ratio.estimate - truth) / ratio.standard_error

    # With 20 steps a few nodes stand for the whole cluster, and the estimate
    # misses by far more than its standard error. 80 steps resolve it.
    assert error_in_standard_errors(20) > 5
    assert error_in_standard_errors(80) < 3


def test_minimum_ratio_single_probe_no_standard_error() -> None:
    density = spectral_density(lambda v: v, 4, 1, 2, generator=0)

    ratio = estimate_minimum_ratio(density, zero_tolerance=0.5)

    assert ratio.estimate == pytest.approx(1.0)
    assert ratio.standard_error is None


def test_spectral_density_reproducible() -> None:
    matrix = symmetric_matrix(GROUPED_SPECTRUM)

    first = spectral_density(matrix_operator(matrix), 170, 2, 10, generator=5)
    second = spectral_density(matrix_operator(matrix), 170, 2, 10, generator=5)

    for a, b in zip(first.rules, second.rules, strict=True):
        assert torch.equal(a.nodes, b.nodes)
        assert torch.equal(a.weights, b.weights)


@pytest.mark.parametrize(
    ("num_probes", "lanczos_steps", "match"),
    [(0, 5, "num_probes must be at least 1"), (3, 0, "lanczos_steps must be")],
)
def test_spectral_density_rejects_invalid_arguments(
    num_probes: int, lanczos_steps: int, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        spectral_density(lambda v: v, 4, num_probes, lanczos_steps, generator=0)


def test_density_helpers_reject_invalid_arguments(
    grouped_density: SpectralDensity,
) -> None:
    with pytest.raises(ValueError, match="increase strictly"):
        density_histogram(grouped_density, torch.tensor([0.0, 0.0, 1.0], dtype=F64))
    with pytest.raises(ValueError, match="at least 2 edges"):
        density_histogram(grouped_density, torch.tensor([0.0], dtype=F64))
    with pytest.raises(ValueError, match="sigma must be positive"):
        smoothed_density(grouped_density, torch.zeros(3, dtype=F64), sigma=0.0)
    with pytest.raises(ValueError, match="zero_tolerance must be nonnegative"):
        estimate_minimum_ratio(grouped_density, zero_tolerance=-1.0)
