"""Spectral density of the Hessian by stochastic Lanczos quadrature.

For a unit probe vector v with random entries, the measure Σ_i (v . u_i)^2
δ(t - λ_i) over the eigenpairs (λ_i, u_i) of H has expectation (1/P) Σ_i
δ(t - λ_i), the normalized spectral density. m Lanczos steps from v give the
m-point Gauss quadrature rule of that measure: the nodes are the eigenvalues
theta_k of the tridiagonal T and the weights are the squared first entries
of its eigenvectors. Averaging the rules over probes is stochastic Lanczos
quadrature (Ubaru, Chen and Saad, SIAM J. Matrix Anal. Appl. 38(4), 2017),
the method behind PyHessian's density.

Use it when P is too large for the exact spectrum. :func:`density_histogram`
and :func:`smoothed_density` turn the rules into a histogram or a curve, and
:func:`estimate_minimum_ratio` into the share of positive eigenvalues.
"""

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from worker.analysis.lanczos import LanczosProcess
from worker.analysis.linalg import (
    CountingOperator,
    GeneratorOrSeed,
    HessianVectorProduct,
    make_generator,
    random_vectors,
)


@dataclass(frozen=True, eq=False)
class QuadratureRule:
    """Gauss quadrature rule of one probe.

    ``nodes`` (m,) are ascending and ``weights`` (m,) are nonnegative with
    sum 1.
    """

    nodes: Tensor
    weights: Tensor


@dataclass(frozen=True, eq=False)
class SpectralDensity:
    """Quadrature rules of H, one per probe, and their cost.

    Each rule has at most ``lanczos_steps`` nodes, fewer when the probe's
    Krylov space became invariant early, in which case its rule is exact.
    """

    rules: tuple[QuadratureRule, ...]
    dim: int
    lanczos_steps: int
    hvp_count: int


@dataclass(frozen=True, eq=False)
class BinnedDensity:
    """Spectral mass per bin, the share of the P eigenvalues in each bin.

    ``mass`` (B,) and ``standard_error`` (B,) belong to the bins between
    consecutive ``bin_edges`` (B + 1,). Multiply by P for expected counts.
    """

    bin_edges: Tensor
    mass: Tensor
    standard_error: Tensor


@dataclass(frozen=True)
class MinimumRatioEstimate:
    """Estimated share of eigenvalues above the zero tolerance.

    ``standard_error`` is the standard deviation across probes divided by
    the square root of ``num_probes``, None for a single probe. It leaves out
    the quadrature bias near zero.
    """

    estimate: float
    standard_error: float | None
    num_probes: int


def spectral_density(
    hvp: HessianVectorProduct,
    dim: int,
    num_probes: int,
    lanczos_steps: int,
    *,
    generator: GeneratorOrSeed,
    distribution: Literal["rademacher", "gaussian"] = "rademacher",
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> SpectralDensity:
    """Compute one Gauss quadrature rule of the spectral density per probe.

    Algorithm: for each of ``num_probes`` probes v drawn with ``generator``
    (Rademacher or Gaussian entries, then normalized), run min(
    ``lanczos_steps``, ``dim``) steps of :class:`LanczosProcess` with full
    reorthogonalization, stopping early when the Krylov space is invariant,
    and take the eigendecomposition T = S diag(theta) S^T. The rule has
    nodes theta and weights S[0, :]^2.

    Shapes: ``hvp`` maps (P,) to (P,) with P = ``dim``. Cost: at most
    ``num_probes`` * min(``lanczos_steps``, ``dim``) Hessian-vector products,
    reported as ``hvp_count``. Memory: ``lanczos_steps`` vectors of length P.
    Raises ValueError when ``num_probes`` or ``lanczos_steps`` is below 1.
    """
    if num_probes < 1:
        raise ValueError(f"num_probes must be at least 1, got {num_probes}")
    if lanczos_steps < 1:
        raise ValueError(f"lanczos_steps must be at least 1, got {lanczos_steps}")
    operator = CountingOperator(hvp, dim)
    rng = make_generator(generator)
    steps = min(lanczos_steps, dim)
    probes = random_vectors(
        num_probes,
        dim,
        distribution=distribution,
        generator=rng,
        dtype=dtype,
        device=device,
    )
    rules = tuple(_quadrature_rule(operator, probe, steps, rng) for probe in probes)
    return SpectralDensity(
        rules=rules, dim=dim, lanczos_steps=steps, hvp_count=operator.count
    )


def _quadrature_rule(
    operator: CountingOperator, probe: Tensor, steps: int, rng: torch.Generator
) -> QuadratureRule:
    process = LanczosProcess(
        operator, probe, steps, restart_on_breakdown=False, generator=rng
    )
    while process.size < steps and not process.exhausted:
        process.step()
    theta, s = process.ritz_decomposition()
    nodes = torch.from_numpy(theta).to(probe)
    weights = torch.from_numpy(s[0, :] ** 2).to(probe)
    return QuadratureRule(nodes=nodes, weights=weights)


def density_histogram(density: SpectralDensity, bin_edges: Tensor) -> BinnedDensity:
    """Sum the quadrature weights in each bin and average them over probes.

    ``bin_edges`` (B + 1,) must increase strictly. Bins are half-open,
    [left, right), except the last, which also contains its right edge, as in
    :func:`numpy.histogram`. Mass outside the edges is dropped, so ``mass``
    sums to 1 only when the edges cover the spectrum. The standard error per
    bin is the standard deviation across probes over the square root of
    their number, zero for one probe.
    """
    if bin_edges.ndim != 1 or bin_edges.numel() < 2:
        raise ValueError(
            f"bin_edges must be one-dimensional with at least 2 edges, got "
            f"shape {tuple(bin_edges.shape)}"
        )
    if not bool((bin_edges[1:] > bin_edges[:-1]).all()):
        raise ValueError("bin_edges must increase strictly")
    per_probe = torch.stack(
        [_bin_weights(rule, bin_edges) for rule in density.rules]
    )  # (num_probes, B)
    return BinnedDensity(
        bin_edges=bin_edges,
        mass=per_probe.mean(dim=0),
        standard_error=_standard_errors(per_probe),
    )


def _bin_weights(rule: QuadratureRule, bin_edges: Tensor) -> Tensor:
    nodes = rule.nodes.to(bin_edges)
    weights = rule.weights.to(bin_edges)
    bins = torch.bucketize(nodes, bin_edges, right=True) - 1
    # A node exactly on the last edge belongs to the last bin.
    bins[nodes == bin_edges[-1]] = bin_edges.numel() - 2
    inside = (bins >= 0) & (bins < bin_edges.numel() - 1)
    mass = bin_edges.new_zeros(bin_edges.numel() - 1)
    return mass.index_add(0, bins[inside], weights[inside])


def smoothed_density(density: SpectralDensity, grid: Tensor, sigma: float) -> Tensor:
    """Evaluate the density smoothed by a Gaussian of width ``sigma`` on ``grid``.

    Returns φ(t) = (1/n) Σ_probes Σ_k w_k N(t; theta_k, sigma^2) at each
    point of ``grid`` (G,), shape (G,), which integrates to 1 over the real
    line. Raises ValueError when ``sigma`` is not positive.
    """
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    total = torch.zeros_like(grid)
    for rule in density.rules:
        nodes = rule.nodes.to(grid)
        weights = rule.weights.to(grid)
        distance = (grid[:, None] - nodes[None, :]) / sigma  # (G, m)
        kernel = torch.exp(-0.5 * distance**2) / (sigma * math.sqrt(2 * math.pi))
        total += kernel @ weights
    return total / len(density.rules)


def estimate_minimum_ratio(
    density: SpectralDensity, zero_tolerance: float
) -> MinimumRatioEstimate:
    """Estimate the share of eigenvalues of H above ``zero_tolerance``.

    Each probe's estimate is the weight of its nodes above the tolerance,
    and the result is their mean with the standard error across probes. This
    is the minimum ratio, positive over all eigenvalues, without the exact
    spectrum. ``zero_tolerance`` is absolute. For a tolerance relative to the
    largest magnitude, as in the exact analysis, multiply it by the spectral
    scale from :func:`worker.analysis.lanczos.lanczos_extremes`.

    NOTE: the estimate is biased near zero and more probes do not remove the
    bias. Gauss quadrature integrates polynomials of degree below 2m exactly,
    but not the step at the tolerance. Each node carries the mass of the
    eigenvalues around it, so eigenvalues within about one node spacing of
    the tolerance can be counted on the wrong side. Trained networks have
    many eigenvalues near zero, so the bias can exceed the standard error.
    More Lanczos steps reduce it.
    """
    if zero_tolerance < 0:
        raise ValueError(f"zero_tolerance must be nonnegative, got {zero_tolerance}")
    per_probe = torch.tensor(
        [
            float(rule.weights[rule.nodes > zero_tolerance].sum())
            for rule in density.rules
        ],
        dtype=torch.float64,
    )
    standard_error = None
    if per_probe.numel() >= 2:
        standard_error = float(_standard_errors(per_probe[:, None])[0])
    return MinimumRatioEstimate(
        estimate=float(per_probe.mean()),
        standard_error=standard_error,
        num_probes=per_probe.numel(),
    )


def _standard_errors(samples: Tensor) -> Tensor:
    """Return the standard error of the mean over the rows of ``samples`` (n, B)."""
    count = samples.shape[0]
    if count < 2:
        return torch.zeros(samples.shape[1], dtype=samples.dtype)
    return samples.std(dim=0, correction=1) / math.sqrt(count)
