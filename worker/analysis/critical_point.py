"""Second-order test of the point where training stopped, with the exact Hessian.

A point is critical when its gradient norm is at most the spec's
``gradient_tolerance``. The signs of the Hessian's eigenvalues then determine
what kind of critical point it is: all positive is a strict local minimum, both
signs a saddle point. Eigenvalues within a relative threshold of zero count as
zero, and zero directions leave the second-order test undecided.
"""

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from saddlepoint.records import (
    CriticalPointAnalysis,
    Escape,
    EscapeTrial,
    Verdict,
    finite_or_none,
)
from saddlepoint.spec import AnalysisSpec, LossName
from saddlepoint.spec.analysis import ModelMode
from worker.analysis.objective import LossObjective

logger = logging.getLogger(__name__)

ESCAPE_STEP_SIZES = (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0)

# Absolute lower bound of the zero threshold, so that an all-zero Hessian
# (threshold 0 otherwise) still classifies as degenerate.
# NOTE: this bound is absolute, so a Hessian whose eigenvalues are all smaller
# than 1e-12 in magnitude counts as degenerate whatever its scale.
ZERO_EIGENVALUE_FLOOR = 1e-12

CURVATURE_NAMES = {
    Verdict.SADDLE_POINT: "a saddle point",
    Verdict.LOCAL_MINIMUM: "a local minimum",
    Verdict.LOCAL_MAXIMUM: "a local maximum",
    Verdict.DEGENERATE: "a degenerate point",
}


@dataclass(frozen=True)
class Classification:
    """Verdict of the second-order test and the eigenvalue counts behind it."""

    verdict: Verdict
    reason: str
    eigenvalue_threshold: float
    positive_count: int
    negative_count: int
    zero_count: int


def classify(
    gradient_norm: float, eigenvalues: Tensor, spec: AnalysisSpec
) -> Classification:
    """Classify a point from its gradient norm and Hessian eigenvalues (P,).

    An eigenvalue counts as zero when its magnitude is at most
    ``spec.eigenvalue_tolerance`` times the largest magnitude, or at most
    ``ZERO_EIGENVALUE_FLOOR``. A gradient norm above
    ``spec.gradient_tolerance`` gives ``not_critical`` whatever the
    curvature, and the reason then states what the curvature alone indicates.
    """
    largest = float(eigenvalues.abs().max()) if eigenvalues.numel() else 0.0
    threshold = max(spec.eigenvalue_tolerance * largest, ZERO_EIGENVALUE_FLOOR)
    positive = int((eigenvalues > threshold).sum())
    negative = int((eigenvalues < -threshold).sum())
    zero = eigenvalues.numel() - positive - negative
    curvature = curvature_verdict(positive, negative, zero)

    if gradient_norm > spec.gradient_tolerance:
        verdict = Verdict.NOT_CRITICAL
        reason = (
            f"The gradient norm {gradient_norm:.3g} is above the tolerance "
            f"{spec.gradient_tolerance:.3g}, so this is not a critical point, "
            f"although the curvature alone ({positive} positive, {negative} "
            f"negative and {zero} zero eigenvalues) would indicate "
            f"{CURVATURE_NAMES[curvature]}."
        )
    else:
        verdict = curvature
        reason = _critical_reason(
            gradient_norm, spec, curvature, positive, negative, zero, threshold
        )
    return Classification(verdict, reason, threshold, positive, negative, zero)


def curvature_verdict(positive: int, negative: int, zero: int) -> Verdict:
    """Name the critical point from its eigenvalue signs.

    Both signs prove a saddle point whatever the zero directions do. With one
    sign and some zero eigenvalues the second-order test cannot decide: the
    flat directions do, at higher order, so the point is ``degenerate``.
    """
    if positive and negative:
        return Verdict.SADDLE_POINT
    if zero:
        return Verdict.DEGENERATE
    if positive:
        return Verdict.LOCAL_MINIMUM
    if negative:
        return Verdict.LOCAL_MAXIMUM
    return Verdict.DEGENERATE


def _critical_reason(
    gradient_norm: float,
    spec: AnalysisSpec,
    curvature: Verdict,
    positive: int,
    negative: int,
    zero: int,
    threshold: float,
) -> str:
    """Write the one-sentence reason for a point whose gradient is small enough."""
    opening = (
        f"The gradient norm {gradient_norm:.3g} is within the tolerance "
        f"{spec.gradient_tolerance:.3g}"
    )
    if curvature == Verdict.SADDLE_POINT:
        return (
            f"{opening} and the Hessian has {negative} negative, {positive} "
            f"positive and {zero} zero eigenvalues, so this is a saddle point."
        )
    if curvature == Verdict.DEGENERATE:
        if positive == 0 and negative == 0:
            return (
                f"{opening} but all {zero} eigenvalues are within {threshold:.3g} "
                "of zero, so the second-order test cannot classify this point."
            )
        sign = "positive" if positive else "negative"
        return (
            f"{opening}, {positive + negative} eigenvalues are {sign} and none has "
            f"the other sign, but {zero} zero directions (|eigenvalue| <= "
            f"{threshold:.3g}) decide at higher order whether this is a local "
            f"{'minimum' if positive else 'maximum'}: the point is degenerate."
        )
    sign, extremum = (
        ("positive", "minimum")
        if curvature == Verdict.LOCAL_MINIMUM
        else ("negative", "maximum")
    )
    return (
        f"{opening} and all {positive + negative} eigenvalues are {sign}, "
        f"so this is a strict local {extremum}."
    )


def escape_along(
    loss_at: Callable[[Tensor], float],
    theta: Tensor,
    grad: Tensor,
    direction: Tensor,
    eigenvalue: float,
    loss_before: float,
    step_sizes: Sequence[float] = ESCAPE_STEP_SIZES,
) -> tuple[Escape, Tensor | None]:
    """Evaluate the loss along a unit eigenvector of a negative eigenvalue.

    ``theta``, ``grad`` and ``direction`` have shape (P,). The direction v is
    oriented so that grad . v <= 0, which makes the step descend to first order
    as well. Each step size t costs one loss evaluation at theta + t v. Returns
    the escape report and the best point found (None if no step lowered the
    loss). Each trial's ``predicted_change`` is the second-order term
    0.5 * eigenvalue * t**2, and ``first_order_change`` is t * grad . v.
    """
    v = -direction if float(grad @ direction) > 0 else direction
    slope = float(grad @ v)

    trials = []
    best: tuple[float, float] | None = None
    with torch.no_grad():
        for step_size in step_sizes:
            loss = finite_or_none(loss_at(theta + step_size * v))
            change = None if loss is None else finite_or_none(loss - loss_before)
            if (
                loss is not None
                and loss < loss_before
                and (best is None or loss < best[0])
            ):
                best = (loss, step_size)
            trials.append(
                EscapeTrial(
                    step_size=step_size,
                    loss=loss,
                    loss_change=change,
                    predicted_change=0.5 * eigenvalue * step_size**2,
                    first_order_change=slope * step_size,
                )
            )

    escape = Escape(
        eigenvalue=eigenvalue,
        loss_before=loss_before,
        trials=trials,
        best_step_size=None if best is None else best[1],
    )
    best_point = None if best is None else theta + best[1] * v
    return escape, best_point


def try_escape(
    f: Callable[[Tensor], Tensor],
    theta: Tensor,
    grad: Tensor,
    hessian: Tensor,
    eigenvalue: float,
    loss_before: float,
) -> Escape:
    """Escape along the lowest eigenvector of ``hessian`` (P, P) with loss ``f``."""
    _, vectors = torch.linalg.eigh(hessian)
    escape, _ = escape_along(
        lambda point: float(f(point)),
        theta,
        grad,
        vectors[:, 0],
        eigenvalue,
        loss_before,
    )
    return escape


@dataclass(frozen=True)
class ExactAnalysis:
    analysis: CriticalPointAnalysis
    escaped_theta: Tensor | None


def analyze_exact(
    objective: LossObjective, spec: AnalysisSpec, chunk_size: int = 32
) -> ExactAnalysis:
    """Run the second-order test with the full Hessian of ``objective``.

    Builds the (P, P) Hessian from P Hessian-vector products in batches of
    ``chunk_size``, then ``torch.linalg.eigh`` gives every eigenvalue and the
    eigenvectors. Those give the share of the gradient in zero-curvature
    directions and, when an eigenvalue is negative, the escape direction.
    Cost: P products, one O(P^3) eigendecomposition and O(P^2) memory.

    Raises ValueError when the loss, gradient or Hessian is not finite.
    """
    started = time.perf_counter()
    loss_value = objective.loss()
    grad = objective.gradient()
    gradient_norm = float(torch.linalg.vector_norm(grad))
    check_finite(loss_value, gradient_norm)

    hessian = objective.hessian(chunk_size=chunk_size)
    if not bool(torch.isfinite(hessian).all()):
        raise ValueError(
            "the Hessian has NaN or infinite entries at these parameters, so "
            "its eigenvalues are undefined"
        )
    eigenvalues, eigenvectors = torch.linalg.eigh(hessian)
    del hessian
    result = classify(gradient_norm, eigenvalues, spec)
    flat_share = _gradient_flat_share(
        grad, gradient_norm, eigenvalues, eigenvectors, result.eigenvalue_threshold
    )

    escape, escaped_theta = None, None
    if result.negative_count > 0 and spec.escape.enabled:
        escape, escaped_theta = escape_along(
            objective.loss,
            objective.theta,
            grad,
            eigenvectors[:, 0],
            float(eigenvalues[0]),
            loss_value,
            spec.escape.step_sizes,
        )

    extremes = None
    if spec.eigenvectors:
        k = min(spec.top_k, eigenvalues.numel())
        picked = torch.cat([eigenvectors[:, :k], eigenvectors[:, -k:]], dim=1)
        extremes = picked.T.tolist()

    parameter_count = objective.dim
    analysis = CriticalPointAnalysis(
        loss=loss_value,
        gradient_norm=gradient_norm,
        gradient_tolerance=spec.gradient_tolerance,
        parameter_count=parameter_count,
        samples=objective.samples,
        dtype=str(objective.theta.dtype).removeprefix("torch."),
        mode=spec.mode.value,
        method="exact",
        eigenvalue_tolerance=result.eigenvalue_threshold,
        positive_count=result.positive_count,
        negative_count=result.negative_count,
        zero_count=result.zero_count,
        min_eigenvalue=float(eigenvalues[0]),
        max_eigenvalue=float(eigenvalues[-1]),
        minimum_ratio=result.positive_count / parameter_count,
        gradient_flat_share=flat_share,
        verdict=result.verdict,
        verdict_reason=result.reason,
        eigenvalues=eigenvalues.tolist(),
        eigenvectors=extremes,
        escape=escape,
        hvp_count=objective.hvp_count,
        elapsed_s=time.perf_counter() - started,
    )
    return ExactAnalysis(analysis, escaped_theta)


def _gradient_flat_share(
    grad: Tensor,
    gradient_norm: float,
    eigenvalues: Tensor,
    eigenvectors: Tensor,
    threshold: float,
) -> float | None:
    """Return |V0^T g|^2 / |g|^2 for the zero-eigenvalue eigenvectors V0 (P, Z)."""
    if gradient_norm == 0.0:
        return None
    flat = eigenvalues.abs() <= threshold
    if not bool(flat.any()):
        return 0.0
    projection = eigenvectors[:, flat].T @ grad
    return min(float(projection.square().sum()) / gradient_norm**2, 1.0)


def analyze_critical_point(
    model: nn.Module,
    loss: LossName,
    inputs: Tensor,
    targets: Tensor,
    spec: AnalysisSpec,
    *,
    chunk_size: int = 32,
    max_parameters: int | None = None,
) -> CriticalPointAnalysis:
    """Run the exact second-order test on ``model`` over all of ``inputs``.

    Works on a float64 copy of ``model`` in the spec's mode on the device of
    ``inputs`` (N, ...), so the caller's model is left unchanged; see
    :func:`analyze_exact` for the method and cost.

    Raises ValueError when the model has more than ``max_parameters``
    parameters, or when the loss, gradient or Hessian is not finite.
    """
    parameter_count = sum(p.numel() for p in model.parameters())
    _check_size(parameter_count, max_parameters)
    objective = LossObjective(model, loss, inputs, targets, mode=spec.mode)
    if spec.mode == ModelMode.TRAIN:
        objective.check_consistency()
    result = analyze_exact(objective, spec, chunk_size=chunk_size).analysis
    logger.info(
        "critical-point analysis of %d parameters took %.2f s, verdict %s",
        parameter_count,
        result.elapsed_s,
        result.verdict.value,
    )
    return result


def _check_size(parameter_count: int, max_parameters: int | None) -> None:
    if parameter_count == 0:
        raise ValueError("the model has no parameters, so there is no Hessian")
    if max_parameters is not None and parameter_count > max_parameters:
        raise ValueError(
            f"the model has {parameter_count} parameters but the exact Hessian "
            f"analysis accepts at most {max_parameters}, so use a smaller model "
            'or analysis.method "lanczos"'
        )


def check_finite(loss_value: float, gradient_norm: float) -> None:
    if not (math.isfinite(loss_value) and math.isfinite(gradient_norm)):
        raise ValueError(
            f"the loss ({loss_value}) or the gradient norm ({gradient_norm}) is "
            "not finite at these parameters, so the point cannot be analyzed. "
            "Check the run for divergence."
        )
