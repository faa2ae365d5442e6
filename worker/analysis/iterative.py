"""Second-order test from the spectrum's extremes, for models too large to
diagonalize: Lanczos for the extreme eigenpairs, Hutch++ for the trace and
stochastic Lanczos quadrature for the density and the minimum ratio.
"""

import math
import time
from dataclasses import dataclass

import torch
from torch import Tensor

from saddlepoint.analysis import (
    CriticalPointAnalysis,
    LanczosReport,
    SpectralDensity,
    TraceEstimate,
    finite_or_none,
)
from saddlepoint.spec import AnalysisSpec
from worker.analysis.critical_point import (
    ZERO_EIGENVALUE_FLOOR,
    check_finite,
    classify,
    escape_along,
)
from worker.analysis.density import SpectralDensity as Density
from worker.analysis.density import (
    density_histogram,
    estimate_minimum_ratio,
    spectral_density,
)
from worker.analysis.lanczos import lanczos_extremes
from worker.analysis.objective import LossObjective
from worker.analysis.trace import hutchpp_trace

# The lanczos method always reports a density and a trace, with at least this
# many probes and queries, because the counts it cannot see come from them.
MIN_DENSITY_PROBES = 10
DENSITY_LANCZOS_STEPS = 80
MIN_TRACE_QUERIES = 30
DENSITY_BINS = 40
# Quadrature nodes within this share of the spectral scale of zero cannot be
# placed on either side of the zero threshold by 80 Lanczos steps.
NEAR_ZERO_BAND = 0.01


@dataclass(frozen=True)
class IterativeAnalysis:
    analysis: CriticalPointAnalysis
    escaped_theta: Tensor | None


def analyze_iterative(
    objective: LossObjective, spec: AnalysisSpec, seed: int
) -> IterativeAnalysis:
    """Run the second-order test with Lanczos, Hutch++ and quadrature.

    Cost in Hessian-vector products: Lanczos until the ``top_k`` pairs at each
    end converge (at most ``max_iterations``, plus 2 * top_k to verify the
    residuals), ``max(trace_queries, 30)`` for the trace and
    ``max(density_probes, 10) * 80`` for the density. Randomness comes from
    ``seed``, so the same spec and parameters give the same numbers.
    """
    started = time.perf_counter()
    loss_value = objective.loss()
    grad = objective.gradient()
    gradient_norm = float(torch.linalg.vector_norm(grad))
    check_finite(loss_value, gradient_norm)
    dim, dtype, device = objective.dim, objective.theta.dtype, objective.device

    pairs = lanczos_extremes(
        objective.hvp,
        dim,
        max(min(spec.top_k, dim // 2), 1),
        "both" if dim >= 2 else "largest",
        generator=seed,
        tol=spec.lanczos_tolerance,
        max_iter=min(max(spec.max_iterations, 2 * spec.top_k), dim),
        dtype=dtype,
        device=device,
    )
    # The extremes settle the signs: the smallest and largest eigenvalue show
    # whether both signs occur, and the threshold is relative to the largest
    # magnitude, which the extremes contain. Counts cover the extremes only.
    extremes = pairs.eigenvalues
    result = classify(gradient_norm, extremes, spec)
    threshold = result.eigenvalue_threshold

    queries = max(spec.trace_queries, MIN_TRACE_QUERIES)
    trace = hutchpp_trace(
        objective.hvp, dim, queries, generator=seed + 1, dtype=dtype, device=device
    )
    probes = max(spec.density_probes, MIN_DENSITY_PROBES)
    density = spectral_density(
        objective.hvp,
        dim,
        probes,
        DENSITY_LANCZOS_STEPS,
        generator=seed + 2,
        dtype=dtype,
        device=device,
    )
    ratio = estimate_minimum_ratio(density, threshold)
    ratio_error = _minimum_ratio_error(
        density, ratio.standard_error, NEAR_ZERO_BAND * pairs.spectral_scale
    )
    lowest, highest = float(extremes[0]), float(extremes[-1])
    margin = max(0.05 * (highest - lowest), ZERO_EIGENVALUE_FLOOR)
    edges = torch.linspace(
        lowest - margin, highest + margin, DENSITY_BINS + 1, dtype=torch.float64
    )
    histogram = density_histogram(density, edges)

    escape, escaped_theta = None, None
    if lowest < -threshold and spec.escape.enabled:
        escape, escaped_theta = escape_along(
            objective.loss,
            objective.theta,
            grad,
            pairs.eigenvectors[:, 0],
            lowest,
            loss_value,
            spec.escape.step_sizes,
        )

    vectors = pairs.eigenvectors.T.tolist() if spec.eigenvectors else None
    analysis = CriticalPointAnalysis(
        loss=loss_value,
        gradient_norm=gradient_norm,
        gradient_tolerance=spec.gradient_tolerance,
        parameter_count=dim,
        samples=objective.samples,
        dtype=str(dtype).removeprefix("torch."),
        mode=spec.mode.value,
        method="lanczos",
        eigenvalue_tolerance=threshold,
        positive_count=None,
        negative_count=None,
        zero_count=None,
        min_eigenvalue=lowest,
        max_eigenvalue=highest,
        minimum_ratio=ratio.estimate,
        minimum_ratio_error=ratio_error,
        verdict=result.verdict,
        verdict_reason=_extremes_reason(result.reason, pairs.converged),
        eigenvalues=extremes.tolist(),
        eigenvectors=vectors,
        lanczos=LanczosReport(
            iterations=pairs.iterations,
            hvp_count=pairs.hvp_count,
            converged=pairs.converged,
            ritz_residuals=[finite_or_none(r) for r in pairs.ritz_residuals.tolist()],
            message=pairs.message,
        ),
        trace=TraceEstimate(
            estimate=trace.estimate,
            standard_error=trace.standard_error,
            hvp_count=trace.hvp_count,
        ),
        density=SpectralDensity(
            bin_edges=edges.tolist(),
            counts=(histogram.mass * dim).tolist(),
            probes=probes,
            lanczos_steps=density.lanczos_steps,
            hvp_count=density.hvp_count,
        ),
        escape=escape,
        hvp_count=objective.hvp_count,
        elapsed_s=time.perf_counter() - started,
    )
    return IterativeAnalysis(analysis, escaped_theta)


def _minimum_ratio_error(
    density: Density, standard_error: float | None, band: float
) -> float:
    """Combine the probes' standard error with the mass that rounding can flip.

    The spectral mass within ``band`` of zero could lie on either side of the
    zero threshold, so it is added, in quadrature, as a bias bound. This is an
    estimate of the uncertainty, not a confidence interval.
    """
    near_zero = sum(
        float(rule.weights[rule.nodes.abs() <= band].sum()) for rule in density.rules
    ) / len(density.rules)
    return math.sqrt((standard_error or 0.0) ** 2 + near_zero**2)


def _extremes_reason(reason: str, converged: bool) -> str:
    """Restate an exact-method reason for counts taken over the extremes only."""
    note = " Counts in this sentence cover only the extreme eigenvalues found."
    if not converged:
        note += " Lanczos did not converge, so the extremes may be inexact."
    return reason + note
