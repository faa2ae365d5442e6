"""Second-order test of the point where training stopped, with the exact Hessian.

A point is critical when its gradient norm is at most the spec's
``gradient_tolerance``. The signs of the Hessian's eigenvalues then determine
what kind of critical point it is: all positive is a strict local minimum, both
signs a saddle point. Eigenvalues within a relative threshold of zero count as
zero, and zero directions leave the second-order test undecided.
"""

import copy
import logging
import math
import time
from dataclasses import dataclass

import scipy.linalg
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
from worker.analysis.hessian import (
    LossFunction,
    flatten_parameters,
    gradient,
    hessian_matrix,
    make_loss_function,
)

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
    curvature = _curvature_verdict(positive, negative)

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


def _curvature_verdict(positive: int, negative: int) -> Verdict:
    if positive and negative:
        return Verdict.SADDLE_POINT
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
        return (
            f"{opening} but all {zero} eigenvalues are within {threshold:.3g} of "
            "zero, so the second-order test cannot classify this point."
        )
    sign, extremum = (
        ("positive", "minimum")
        if curvature == Verdict.LOCAL_MINIMUM
        else ("negative", "maximum")
    )
    if zero == 0:
        return (
            f"{opening} and all {positive + negative} eigenvalues are {sign}, "
            f"so this is a strict local {extremum}."
        )
    return (
        f"{opening} and {positive + negative} eigenvalues are {sign}, so this is "
        f"a local {extremum} to second order, but {zero} zero directions "
        f"(|eigenvalue| <= {threshold:.3g}) leave it undecided at higher order."
    )


def lowest_eigenvector(hessian: Tensor) -> Tensor:
    """Return the unit eigenvector (P,) of the smallest eigenvalue of ``hessian``.

    Uses LAPACK through ``scipy.linalg.eigh`` with ``subset_by_index=[0, 0]``
    on the CPU. It tridiagonalizes once, as a full eigenvalue solve does, but
    back-transforms only one vector.
    """
    matrix = hessian.detach().cpu().numpy()
    _, vectors = scipy.linalg.eigh(matrix, subset_by_index=[0, 0])
    return torch.from_numpy(vectors[:, 0]).to(hessian.device, hessian.dtype)


def try_escape(
    f: LossFunction,
    theta: Tensor,
    grad: Tensor,
    hessian: Tensor,
    eigenvalue: float,
    loss_before: float,
) -> Escape:
    """Evaluate the loss along the eigenvector of the most negative eigenvalue.

    ``theta`` and ``grad`` have shape (P,) and ``hessian`` (P, P). The unit
    eigenvector v is oriented so that grad . v <= 0, which makes the step
    descend to first order as well. Each step size t in
    ``ESCAPE_STEP_SIZES`` costs one loss evaluation at theta + t v. Each
    trial's ``predicted_change`` is the second-order term 0.5 * eigenvalue *
    t**2, and it leaves out the first-order term t * grad . v.
    """
    v = lowest_eigenvector(hessian)
    if float(grad @ v) > 0:
        v = -v

    trials = []
    finite_losses: list[tuple[float, float]] = []
    with torch.no_grad():
        for step_size in ESCAPE_STEP_SIZES:
            loss = finite_or_none(float(f(theta + step_size * v)))
            change = None if loss is None else finite_or_none(loss - loss_before)
            if loss is not None:
                finite_losses.append((loss, step_size))
            trials.append(
                EscapeTrial(
                    step_size=step_size,
                    loss=loss,
                    loss_change=change,
                    predicted_change=0.5 * eigenvalue * step_size**2,
                )
            )

    lowest_loss, best_step_size = min(finite_losses, default=(loss_before, None))
    return Escape(
        eigenvalue=eigenvalue,
        loss_before=loss_before,
        trials=trials,
        best_step_size=best_step_size if lowest_loss < loss_before else None,
    )


def analyze_critical_point(
    model: nn.Module,
    loss: LossName,
    inputs: Tensor,
    targets: Tensor,
    spec: AnalysisSpec,
    *,
    chunk_size: int = 256,
    max_parameters: int | None = None,
) -> CriticalPointAnalysis:
    """Run the second-order test on ``model`` with the exact Hessian in float64.

    Works on a float64 copy of ``model`` in eval mode on the device of
    ``inputs`` (N, ...), so the caller's model is left unchanged. The loss is
    the mean over all N samples against class indices ``targets`` (N,).
    Builds the full (P, P) Hessian, takes all eigenvalues with
    ``torch.linalg.eigvalsh`` and classifies the point with :func:`classify`.
    When some eigenvalue is negative, :func:`try_escape` also steps along its
    eigenvector. Cost: P Hessian-vector products in batches of
    ``chunk_size``, one gradient, two O(P^3) eigenvalue solves when an
    eigenvalue is negative (one otherwise) and O(P^2) memory.

    Raises ValueError when the model has more than ``max_parameters``
    parameters, or when the loss, gradient or Hessian is not finite.
    """
    started = time.perf_counter()
    parameter_count = sum(p.numel() for p in model.parameters())
    _check_size(parameter_count, max_parameters)

    f, theta = _float64_loss_function(model, loss, inputs, targets)
    loss_value = float(f(theta))
    grad = gradient(f, theta)
    gradient_norm = float(torch.linalg.vector_norm(grad))
    _check_finite(loss_value, gradient_norm)

    hessian = hessian_matrix(f, theta, chunk_size=chunk_size)
    if not bool(torch.isfinite(hessian).all()):
        raise ValueError(
            "the Hessian has NaN or infinite entries at these parameters, so "
            "its eigenvalues are undefined"
        )
    eigenvalues = torch.linalg.eigvalsh(hessian)
    result = classify(gradient_norm, eigenvalues, spec)

    escape = None
    if result.negative_count > 0:
        escape = try_escape(f, theta, grad, hessian, float(eigenvalues[0]), loss_value)

    elapsed_s = time.perf_counter() - started
    logger.info(
        "critical-point analysis of %d parameters took %.2f s, verdict %s",
        parameter_count,
        elapsed_s,
        result.verdict.value,
    )
    return CriticalPointAnalysis(
        loss=loss_value,
        gradient_norm=gradient_norm,
        gradient_tolerance=spec.gradient_tolerance,
        parameter_count=parameter_count,
        samples=inputs.shape[0],
        dtype="float64",
        eigenvalue_tolerance=result.eigenvalue_threshold,
        positive_count=result.positive_count,
        negative_count=result.negative_count,
        zero_count=result.zero_count,
        min_eigenvalue=float(eigenvalues[0]),
        max_eigenvalue=float(eigenvalues[-1]),
        minimum_ratio=result.positive_count / parameter_count,
        verdict=result.verdict,
        verdict_reason=result.reason,
        eigenvalues=eigenvalues.tolist(),
        escape=escape,
        elapsed_s=elapsed_s,
    )


def _check_size(parameter_count: int, max_parameters: int | None) -> None:
    if parameter_count == 0:
        raise ValueError("the model has no parameters, so there is no Hessian")
    if max_parameters is not None and parameter_count > max_parameters:
        raise ValueError(
            f"the model has {parameter_count} parameters but the exact Hessian "
            f"analysis accepts at most {max_parameters}, so use a smaller model "
            "or raise max_parameters"
        )


def _float64_loss_function(
    model: nn.Module, loss: LossName, inputs: Tensor, targets: Tensor
) -> tuple[LossFunction, Tensor]:
    """Copy ``model`` to float64 in eval mode and return its loss and theta (P,)."""
    if inputs.shape[0] == 0:
        raise ValueError("inputs has no samples, but the analysis needs at least one")
    device = inputs.device
    copied = copy.deepcopy(model).to(device=device, dtype=torch.float64).eval()
    inputs = inputs.to(torch.float64)
    f = make_loss_function(copied, loss, inputs, targets.to(device))
    theta, _ = flatten_parameters(copied)
    return f, theta


def _check_finite(loss_value: float, gradient_norm: float) -> None:
    if not (math.isfinite(loss_value) and math.isfinite(gradient_norm)):
        raise ValueError(
            f"the loss ({loss_value}) or the gradient norm ({gradient_norm}) is "
            "not finite at these parameters, so the point cannot be analyzed. "
            "Check the run for divergence."
        )
