"""Entry point of the critical-point analysis: pick samples, method and run.

``auto`` picks the exact method up to ``auto_exact_parameters`` parameters
and Lanczos above; the threshold is a deployment setting whose default comes
from ``bench/auto_threshold.py`` (see docs/benchmarks.md).
"""

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from saddlepoint.analysis import AnalysisTrigger, CriticalPointAnalysis
from saddlepoint.spec import AnalysisSpec, LossName
from saddlepoint.spec.analysis import AnalysisMethod, ModelMode
from worker.analysis.critical_point import analyze_exact
from worker.analysis.iterative import analyze_iterative
from worker.analysis.objective import LossObjective

logger = logging.getLogger(__name__)

# The exact method keeps the Hessian and its eigenvectors, 16 * P^2 bytes,
# plus a LAPACK workspace of about the same size again.
EXACT_BYTES_PER_ENTRY = 32
MEMORY_HEADROOM = 0.8


class AnalysisTooLarge(ValueError):
    """The exact method would not fit in memory or over the deployment limit."""


@dataclass(frozen=True)
class AnalysisOutcome:
    analysis: CriticalPointAnalysis
    theta: Tensor
    escaped_theta: Tensor | None


def choose_method(
    spec: AnalysisSpec,
    parameter_count: int,
    max_exact_parameters: int,
    auto_exact_parameters: int,
) -> AnalysisMethod:
    """Resolve ``auto`` and check that ``exact`` is allowed for this size."""
    if spec.method == AnalysisMethod.LANCZOS:
        return AnalysisMethod.LANCZOS
    if spec.method == AnalysisMethod.AUTO:
        if parameter_count <= min(auto_exact_parameters, max_exact_parameters):
            return AnalysisMethod.EXACT
        return AnalysisMethod.LANCZOS
    if parameter_count > max_exact_parameters:
        raise AnalysisTooLarge(
            f"the model has {parameter_count} parameters but the exact method "
            f"accepts at most {max_exact_parameters}; set analysis.method to "
            '"lanczos" or "auto"'
        )
    return AnalysisMethod.EXACT


def check_exact_memory(parameter_count: int, device: torch.device) -> None:
    """Raise AnalysisTooLarge when the exact Hessian would not fit in memory."""
    needed = EXACT_BYTES_PER_ENTRY * parameter_count**2
    available = available_memory(device)
    if available is not None and needed > MEMORY_HEADROOM * available:
        raise AnalysisTooLarge(
            f"the exact Hessian of {parameter_count} parameters needs about "
            f"{needed / 2**30:.1f} GiB but {available / 2**30:.1f} GiB is free "
            f'on {device}; set analysis.method to "lanczos"'
        )


def available_memory(device: torch.device) -> int | None:
    """Return the free bytes on ``device``, or None when unknown."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None


def select_samples(
    inputs: Tensor, targets: Tensor, spec: AnalysisSpec
) -> tuple[Tensor, Tensor]:
    """Return all samples, or the spec's fixed random subset of them.

    The subset depends only on ``subset_seed`` and N, so every analysis of a
    run uses the same samples.
    """
    count = inputs.shape[0]
    if spec.samples == "full" or spec.samples >= count:
        return inputs, targets
    generator = torch.Generator().manual_seed(spec.subset_seed)
    chosen = torch.randperm(count, generator=generator)[: spec.samples]
    chosen = chosen.sort().values.to(inputs.device)
    return inputs[chosen], targets[chosen]


def analyze(
    model: nn.Module,
    loss: LossName,
    inputs: Tensor,
    targets: Tensor,
    spec: AnalysisSpec,
    *,
    max_exact_parameters: int,
    auto_exact_parameters: int,
    index: int = 0,
    trigger: AnalysisTrigger = AnalysisTrigger.FINAL,
    epoch: int | None = None,
    step: int | None = None,
    interrupt: Callable[[], None] | None = None,
) -> AnalysisOutcome:
    """Analyze ``model`` at its current parameters; the model is not changed.

    ``interrupt`` runs before every gradient and Hessian-vector product and
    may raise to abandon the analysis (a cancel, a time limit). Raises
    ValueError (AnalysisTooLarge, InconsistentObjective among them) with a
    message that names what to change.
    """
    inputs, targets = select_samples(inputs, targets, spec)
    objective = LossObjective(
        model, loss, inputs, targets, mode=spec.mode, interrupt=interrupt
    )
    return analyze_objective(
        objective,
        spec,
        max_exact_parameters=max_exact_parameters,
        auto_exact_parameters=auto_exact_parameters,
        index=index,
        trigger=trigger,
        epoch=epoch,
        step=step,
    )


def analyze_objective(
    objective: LossObjective,
    spec: AnalysisSpec,
    *,
    max_exact_parameters: int,
    auto_exact_parameters: int,
    index: int,
    trigger: AnalysisTrigger,
    epoch: int | None,
    step: int | None,
) -> AnalysisOutcome:
    """Analyze an objective at its ``theta``; see :func:`analyze`."""
    if spec.mode == ModelMode.TRAIN:
        objective.check_consistency()
    method = choose_method(
        spec, objective.dim, max_exact_parameters, auto_exact_parameters
    )

    if method == AnalysisMethod.EXACT:
        check_exact_memory(objective.dim, objective.device)
        exact = analyze_exact(objective, spec)
        analysis, escaped = exact.analysis, exact.escaped_theta
    else:
        iterative = analyze_iterative(objective, spec, seed=spec.subset_seed)
        analysis, escaped = iterative.analysis, iterative.escaped_theta

    analysis = analysis.model_copy(
        update={"index": index, "trigger": trigger, "epoch": epoch, "step": step}
    )
    logger.info(
        "analysis %d (%s, %s) of %d parameters: %s in %.2f s with %d products",
        index,
        trigger.value,
        method.value,
        objective.dim,
        analysis.verdict.value,
        analysis.elapsed_s,
        objective.hvp_count,
    )
    return AnalysisOutcome(analysis, objective.theta, escaped)
