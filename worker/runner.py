"""One experiment from start to finish: claim it, train, analyze, record.

Every outcome ends in the experiment record: ``succeeded``, ``cancelled``, or
``failed`` with a code and message. Only the death of the process, or the
loss of Redis itself, escapes; then the run's lease expires and another worker
restarts it.
"""

import gc
import logging
import time

import redis
import torch
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from saddlepoint.records import (
    ExperimentRecord,
    Failure,
    FailureCode,
    Phase,
    TrainingSummary,
)
from saddlepoint.settings import Settings, get_settings
from saddlepoint.spec import Device, ExperimentSpec
from saddlepoint.store import ExperimentStore
from worker.engine.data import TensorSplit
from worker.engine.loop import (
    TrainingDiverged,
    TrainingResult,
    TrainingStopped,
    TrainingTimeLimit,
    train,
)
from worker.metrics import CancelWatcher, MetricsWriter, RecordLost
from worker.phases import AnalysisInterrupted, AnalysisPhases, load_initial_parameters

logger = logging.getLogger(__name__)

# A run whose worker died this many times is failed instead of retried, so one
# experiment that kills its process cannot occupy the workers forever.
MAX_ATTEMPTS = 3


class DeviceUnavailable(Exception):
    pass


def resolve_device(requested: Device) -> torch.device:
    """Map the spec's device to a torch device; ``auto`` prefers CUDA."""
    if requested == Device.CPU:
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if requested == Device.CUDA:
        raise DeviceUnavailable(
            "the spec asks for device cuda but this worker has no CUDA device; "
            'use device "auto" or "cpu", or start a worker on a GPU machine'
        )
    return torch.device("cpu")


def connect(settings: Settings) -> redis.Redis:
    """Connect to Redis, retrying commands through restarts of up to ~30 s."""
    return redis.Redis.from_url(
        settings.redis_url,
        decode_responses=True,
        socket_timeout=30,
        socket_connect_timeout=5,
        health_check_interval=30,
        retry=Retry(ExponentialBackoff(cap=5.0, base=0.2), retries=10),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
    )


def run_experiment(
    experiment_id: str, worker_name: str, settings: Settings | None = None
) -> None:
    """Run the stored experiment ``experiment_id`` unless it already ended."""
    settings = settings or get_settings()
    client = connect(settings)
    store = ExperimentStore(client)
    try:
        record = _claim(store, experiment_id, worker_name, settings)
        if record is not None:
            Run(store, record, worker_name, settings).execute()
    finally:
        client.close()


def _claim(
    store: ExperimentStore, experiment_id: str, worker_name: str, settings: Settings
) -> ExperimentRecord | None:
    """Mark the experiment running; return None when it must not run."""
    transition = store.mark_running(experiment_id, worker_name, settings.lease_s)
    if transition.previous is None:
        logger.error(
            "experiment %s: not found in the store; task dropped", experiment_id
        )
        return None
    if not transition.applied:
        logger.info(
            "experiment %s: skipped because it is %s%s",
            experiment_id,
            transition.previous.value,
            " under a live lease" if transition.previous == "running" else "",
        )
        return None

    record = store.get(experiment_id)
    if record is None:
        return None
    if record.attempts > MAX_ATTEMPTS:
        message = (
            f"the worker running this experiment died {record.attempts - 1} "
            "times (out of memory?), so it was not restarted again"
        )
        store.mark_failed(
            experiment_id, Failure(code=FailureCode.WORKER_LOST, message=message)
        )
        logger.error("experiment %s: %s", experiment_id, message)
        return None
    if record.attempts > 1:
        logger.warning(
            "experiment %s: restarting, attempt %d", experiment_id, record.attempts
        )
    return record


class RunHooks(MetricsWriter):
    """Metric batching plus the analyses that run during training."""

    phases: AnalysisPhases

    def after_epoch(
        self, model: torch.nn.Module, data: TensorSplit, epoch: int, steps: int
    ) -> None:
        self.phases.after_epoch(model, data, epoch, steps)


class Run:
    """The claimed experiment, with its watcher, metric writer and analyses."""

    def __init__(
        self,
        store: ExperimentStore,
        record: ExperimentRecord,
        worker: str,
        settings: Settings,
    ) -> None:
        self.store = store
        self.record = record
        self.experiment_id = record.id
        self.spec: ExperimentSpec = record.spec
        self.settings = settings
        self.watcher = CancelWatcher(store, record.id, worker, settings.lease_s)
        deadline = (
            time.monotonic()
            + settings.run_time_limit_s
            + settings.analysis_time_limit_s
        )
        self.phases = AnalysisPhases(
            store, record.id, record.spec, settings, self.watcher.event, deadline
        )
        self.hooks = RunHooks(
            store,
            record.id,
            record.progress,
            settings.metrics_flush_interval_s,
            self.watcher.event,
        )
        self.hooks.phases = self.phases

    def execute(self) -> None:
        started = time.monotonic()
        self.watcher.start()
        logger.info(
            "experiment %s: started, attempt %d",
            self.experiment_id,
            self.record.attempts,
        )
        try:
            self._train_and_analyze()
        finally:
            self.watcher.stop()
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            logger.info(
                "experiment %s: finished in %.1f s",
                self.experiment_id,
                time.monotonic() - started,
            )

    def _train_and_analyze(self) -> None:
        summary: TrainingSummary | None = None
        try:
            device = resolve_device(self.spec.device)
            initial = load_initial_parameters(self.store, self.spec)
            result = train(
                self.spec,
                device,
                self.hooks,
                time_limit_s=self.settings.run_time_limit_s,
                initial_parameters=initial,
            )
            summary = result.summary
            self._flush_phase(Phase.ANALYSIS if self.spec.analysis.enabled else None)
            if self.watcher.event.is_set():
                raise TrainingStopped(summary.steps)
            self._analyze(result)
            self._finish_succeeded(summary)
        except (TrainingStopped, AnalysisInterrupted) as stop:
            self._stopped(stop, summary)
        except TrainingDiverged as error:
            self._fail(FailureCode.DIVERGED, str(error), error.step)
        except TrainingTimeLimit as error:
            message = (
                f"training ran past the time limit of {self.settings.run_time_limit_s}"
                f" s at step {error.step}; use fewer epochs or a larger batch_size"
            )
            self._fail(FailureCode.TIME_LIMIT, message, error.step)
        except DeviceUnavailable as error:
            self._fail(FailureCode.DEVICE_UNAVAILABLE, str(error))
        except RecordLost as error:
            logger.error("experiment %s: %s; run abandoned", self.experiment_id, error)
        except AnalysisFailed as error:
            self._fail(FailureCode.ANALYSIS_FAILED, str(error), summary=summary)
        except ValueError as error:
            # Bad saved parameters or an analysis the spec cannot have.
            logger.exception("experiment %s: invalid run", self.experiment_id)
            self._fail(FailureCode.WORKER_ERROR, str(error), summary=summary)
        except redis.RedisError:
            # Redis stayed down through the retries: the lease runs out and
            # another worker restarts the run once Redis is back.
            logger.exception("experiment %s: Redis unavailable", self.experiment_id)
            raise
        except Exception as error:
            logger.exception("experiment %s: worker error", self.experiment_id)
            message = f"{type(error).__name__}: {error}"
            self._fail(FailureCode.WORKER_ERROR, message, summary=summary)

    def _analyze(self, result: TrainingResult) -> None:
        if not self.spec.analysis.enabled:
            return
        try:
            analysis = self.phases.final(
                result.model, result.data, result.summary.steps
            )
        except (AnalysisInterrupted, RecordLost):
            raise
        except (ValueError, RuntimeError) as error:
            logger.exception("experiment %s: analysis failed", self.experiment_id)
            raise AnalysisFailed(
                f"training finished but the analysis failed: {error}"
            ) from error
        logger.info(
            "experiment %s: verdict %s", self.experiment_id, analysis.verdict.value
        )

    def _flush_phase(self, phase: Phase | None) -> None:
        if phase is not None:
            self.hooks.enter_phase(phase)
        else:
            self.hooks.flush()

    def _finish_succeeded(self, summary: TrainingSummary) -> None:
        self.hooks.enter_phase(Phase.DONE)
        self.store.mark_succeeded(self.experiment_id, summary)
        logger.info(
            "experiment %s: succeeded, val_accuracy %s",
            self.experiment_id,
            summary.val_accuracy,
        )

    def _stopped(
        self,
        stop: TrainingStopped | AnalysisInterrupted,
        summary: TrainingSummary | None,
    ) -> None:
        if self.watcher.lost.is_set():
            logger.error("experiment %s: run abandoned", self.experiment_id)
            return
        if isinstance(stop, AnalysisInterrupted) and not stop.cancelled:
            message = (
                "the analysis ran past its time limit of "
                f"{self.settings.analysis_time_limit_s} s; use analysis.method "
                '"lanczos", fewer analysis.samples or a smaller model'
            )
            self._fail(FailureCode.TIME_LIMIT, message, summary=summary)
            return
        self.hooks.enter_phase(Phase.DONE)
        self.store.mark_cancelled(self.experiment_id)
        logger.info("experiment %s: cancelled", self.experiment_id)

    def _fail(
        self,
        code: FailureCode,
        message: str,
        step: int | None = None,
        summary: TrainingSummary | None = None,
    ) -> None:
        try:
            self.hooks.enter_phase(Phase.DONE)
        except RecordLost:
            return
        self.store.mark_failed(
            self.experiment_id, Failure(code=code, message=message, step=step), summary
        )
        logger.error(
            "experiment %s: failed (%s): %s", self.experiment_id, code.value, message
        )


class AnalysisFailed(Exception):
    pass
