"""The analysis phases of a run: during training, at the end, and after a
critical-point search, plus the continuation from an escaped saddle."""

import logging
import threading
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

from saddlepoint.analysis import (
    AnalysisTrigger,
    CriticalPointAnalysis,
    CriticalSearchReport,
)
from saddlepoint.queues import QUEUE_BY_DEVICE, RUN_EXPERIMENT_TASK
from saddlepoint.settings import Settings
from saddlepoint.spec import ExperimentSpec
from saddlepoint.store import ExperimentStore
from saddlepoint.store.analyses import AnalysisStore, StoredParameters
from worker.analysis.analyze import (
    AnalysisOutcome,
    analyze,
    analyze_objective,
    select_samples,
)
from worker.analysis.critical_search import find_critical_point
from worker.analysis.objective import LossObjective
from worker.engine.data import TensorSplit

logger = logging.getLogger(__name__)


class AnalysisInterrupted(Exception):
    """The run was cancelled, or its time ran out, during an analysis."""

    def __init__(self, cancelled: bool) -> None:
        reason = "cancelled" if cancelled else "out of time"
        super().__init__(f"analysis interrupted: {reason}")
        self.cancelled = cancelled


class AnalysisPhases:
    """Runs and stores every analysis of one experiment, numbered in order."""

    def __init__(
        self,
        store: ExperimentStore,
        experiment_id: str,
        spec: ExperimentSpec,
        settings: Settings,
        stop_event: threading.Event,
        deadline: float,
    ) -> None:
        self.store = store
        self.analyses = AnalysisStore(store.client)
        self.experiment_id = experiment_id
        self.spec = spec
        self.settings = settings
        self.stop_event = stop_event
        self.deadline = deadline
        self.index = 0
        self.gradient_trigger_fired = False

    def interrupt(self) -> None:
        """Raise AnalysisInterrupted once the run is cancelled or out of time."""
        if self.stop_event.is_set():
            raise AnalysisInterrupted(cancelled=True)
        if time.monotonic() > self.deadline:
            raise AnalysisInterrupted(cancelled=False)

    def after_epoch(
        self, model: nn.Module, data: TensorSplit, epoch: int, steps: int
    ) -> None:
        """Analyze during training when the spec's periodic triggers fire."""
        periodic = self.spec.analysis.periodic
        if not self.spec.analysis.enabled or self.index >= periodic.max_analyses:
            return
        last_epoch = epoch == self.spec.epochs - 1
        every = periodic.every_epochs
        trigger = None
        if every is not None and (epoch + 1) % every == 0 and not last_epoch:
            trigger = AnalysisTrigger.EPOCH
        elif (
            periodic.gradient_norm_below is not None and not self.gradient_trigger_fired
        ):
            norm = self._gradient_norm(model, data)
            if norm < periodic.gradient_norm_below:
                self.gradient_trigger_fired = True
                trigger = AnalysisTrigger.GRADIENT_THRESHOLD
        if trigger is not None:
            self._run(model, data, trigger, epoch, steps)

    def final(
        self, model: nn.Module, data: TensorSplit, steps: int
    ) -> CriticalPointAnalysis:
        """Analyze where training stopped, then search for a critical point.

        Saves the final parameters, the best escaped point, and the
        searched point, so later experiments can start from them. Returns the
        last analysis, which ``GET /analysis`` shows.
        """
        epoch = self.spec.epochs - 1
        outcome = self._run(model, data, AnalysisTrigger.FINAL, epoch, steps)
        self._save_parameters("final", outcome.theta)
        last = outcome.analysis
        if outcome.escaped_theta is not None:
            self._save_parameters("escape", outcome.escaped_theta)
            last = self._continue_from_escape(last)
        if self.spec.analysis.critical_search.enabled:
            last = self._search(outcome.theta, model, data, steps)
        self.store.save_analysis(self.experiment_id, last)
        return last

    def _run(
        self,
        model: nn.Module,
        data: TensorSplit,
        trigger: AnalysisTrigger,
        epoch: int,
        steps: int,
    ) -> AnalysisOutcome:
        outcome = analyze(
            model,
            self.spec.loss,
            data.train_x,
            data.train_y,
            self.spec.analysis,
            max_exact_parameters=self.settings.max_exact_parameters,
            auto_exact_parameters=self.settings.auto_exact_parameters,
            index=self.index,
            trigger=trigger,
            epoch=epoch,
            step=steps,
            interrupt=self.interrupt,
        )
        self.index += 1
        self.analyses.save(self.experiment_id, outcome.analysis)
        return outcome

    def _search(
        self, theta: Tensor, model: nn.Module, data: TensorSplit, steps: int
    ) -> CriticalPointAnalysis:
        spec = self.spec.analysis
        objective = self._objective(model, data)
        result = find_critical_point(objective, spec.critical_search)
        self._save_parameters("critical", result.theta)
        outcome = analyze_objective(
            objective.at(result.theta),
            spec,
            max_exact_parameters=self.settings.max_exact_parameters,
            auto_exact_parameters=self.settings.auto_exact_parameters,
            index=self.index,
            trigger=AnalysisTrigger.CRITICAL_SEARCH,
            epoch=self.spec.epochs - 1,
            step=steps,
        )
        self.index += 1
        report = CriticalSearchReport(
            method=spec.critical_search.method,
            steps=result.steps,
            initial_gradient_norm=result.initial_gradient_norm,
            gradient_norm=result.gradient_norm,
            converged=result.converged,
            hvp_count=result.hvp_count,
            elapsed_s=result.elapsed_s,
        )
        analysis = outcome.analysis.model_copy(update={"search": report})
        self.analyses.save(self.experiment_id, analysis)
        return analysis

    def _objective(self, model: nn.Module, data: TensorSplit) -> LossObjective:
        inputs, targets = select_samples(data.train_x, data.train_y, self.spec.analysis)
        return LossObjective(
            model,
            self.spec.loss,
            inputs,
            targets,
            mode=self.spec.analysis.mode,
            interrupt=self.interrupt,
        )

    def _gradient_norm(self, model: nn.Module, data: TensorSplit) -> float:
        return float(self._objective(model, data).gradient().norm())

    def _save_parameters(self, name: str, theta: Tensor) -> None:
        vector = theta.detach().to("cpu", torch.float64).contiguous()
        self.analyses.save_parameters(
            self.experiment_id,
            name,
            StoredParameters(
                dtype="float64", size=vector.numel(), data=vector.numpy().tobytes()
            ),
        )

    def _continue_from_escape(
        self, analysis: CriticalPointAnalysis
    ) -> CriticalPointAnalysis:
        """Start the spec's continuation run from the escaped point, if asked."""
        epochs = self.spec.analysis.escape.continue_epochs
        if epochs == 0 or analysis.escape is None:
            return analysis
        child_id = start_continuation(
            self.store, self.experiment_id, self.spec, "escape", epochs
        )
        escape = analysis.escape.model_copy(update={"continuation_id": child_id})
        updated = analysis.model_copy(update={"escape": escape})
        self.analyses.save(self.experiment_id, updated)
        return updated


def start_continuation(
    store: ExperimentStore,
    parent_id: str,
    parent_spec: ExperimentSpec,
    point: str,
    epochs: int,
    send: Callable[[str, ExperimentSpec], None] | None = None,
) -> str:
    """Create and queue an experiment that trains on from a saved point.

    The child copies the parent's spec with ``epochs`` and ``initial_parameters``
    replaced, and never continues again itself, so chains stay finite.
    """
    fields = parent_spec.model_dump(mode="json")
    fields["epochs"] = epochs
    fields["initial_parameters"] = {"experiment_id": parent_id, "point": point}
    fields["name"] = f"continuation of {parent_id} from its {point} point"
    fields.setdefault("analysis", {}).setdefault("escape", {})["continue_epochs"] = 0
    child_spec = ExperimentSpec.model_validate(fields)
    child = store.create(child_spec)
    (send or _send_task)(child.id, child_spec)
    logger.info(
        "experiment %s: continuation %s queued from its %s point",
        parent_id,
        child.id,
        point,
    )
    return child.id


def _send_task(experiment_id: str, spec: ExperimentSpec) -> None:
    from worker.celery_app import app

    app.send_task(
        RUN_EXPERIMENT_TASK,
        args=[experiment_id],
        queue=QUEUE_BY_DEVICE[spec.device],
    )


def load_initial_parameters(
    store: ExperimentStore, spec: ExperimentSpec
) -> Tensor | None:
    """Return the saved flat parameters the spec starts from, if any.

    Raises ValueError naming the experiment and point when they are missing.
    """
    initial = spec.initial_parameters
    if initial is None:
        return None
    saved = AnalysisStore(store.client).load_parameters(
        initial.experiment_id, initial.point.value
    )
    if saved is None:
        raise ValueError(
            f"experiment {initial.experiment_id} saved no {initial.point.value} "
            "parameters; its analysis must have run (and, for escape, found a "
            "step that lowers the loss)"
        )
    dtype = torch.float64 if saved.dtype == "float64" else torch.float32
    return torch.frombuffer(bytearray(saved.data), dtype=dtype).clone()
