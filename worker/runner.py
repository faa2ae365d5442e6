"""One experiment from start to finish: claim it, train, analyze, record.

Every outcome ends in the experiment record: ``succeeded``, ``cancelled``, or
``failed`` with a code and message. Only the death of the process itself
escapes, and then the broker hands the task to another worker.
"""

import gc
import logging
import time

import redis
import torch

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
from worker.analysis.critical_point import analyze_critical_point
from worker.engine.loop import (
    TrainingDiverged,
    TrainingResult,
    TrainingStopped,
    TrainingTimeLimit,
    train,
)
from worker.metrics import CancelWatcher, MetricsWriter

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


def run_experiment(
    experiment_id: str, worker_name: str, settings: Settings | None = None
) -> None:
    """Run the stored experiment ``experiment_id`` unless it already ended."""
    settings = settings or get_settings()
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    store = ExperimentStore(client)
    try:
        record = _claim(store, experiment_id, worker_name)
        if record is not None:
            _run_claimed(store, record, settings)
    finally:
        client.close()


def _claim(
    store: ExperimentStore, experiment_id: str, worker_name: str
) -> ExperimentRecord | None:
    """Mark the experiment running; return None when it must not run."""
    transition = store.mark_running(experiment_id, worker_name)
    if transition.previous is None:
        logger.error(
            "experiment %s: not found in the store; task dropped", experiment_id
        )
        return None
    if not transition.applied:
        logger.info(
            "experiment %s: skipped because it is %s",
            experiment_id,
            transition.previous.value,
        )
        return None

    record = store.get(experiment_id)
    if record is None:
        return None
    if record.attempts > MAX_ATTEMPTS:
        message = (
            f"the worker process died {record.attempts - 1} times while running "
            "this experiment (out of memory?); it was not retried again"
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


def _run_claimed(
    store: ExperimentStore, record: ExperimentRecord, settings: Settings
) -> None:
    experiment_id, spec = record.id, record.spec
    watcher = CancelWatcher(store, experiment_id).start()
    writer = MetricsWriter(
        store,
        experiment_id,
        record.progress,
        settings.metrics_flush_interval_s,
        watcher.event,
    )
    result: TrainingResult | None = None
    started = time.monotonic()
    logger.info("experiment %s: started, attempt %d", experiment_id, record.attempts)
    try:
        device = resolve_device(spec.device)
        result = train(spec, device, writer, time_limit_s=settings.run_time_limit_s)
        writer.flush()
        if watcher.event.is_set():
            raise TrainingStopped(result.summary.steps)
        _analyze_and_finish(store, writer, spec, result, settings)
    except TrainingStopped as stop:
        writer.flush()
        store.mark_cancelled(experiment_id)
        logger.info("experiment %s: cancelled at step %d", experiment_id, stop.step)
    except TrainingDiverged as error:
        writer.flush()
        _fail(store, experiment_id, FailureCode.DIVERGED, str(error), error.step)
    except TrainingTimeLimit as error:
        writer.flush()
        message = (
            f"training ran past the time limit of {settings.run_time_limit_s} s "
            f"at step {error.step}; use fewer epochs or a larger batch_size"
        )
        _fail(store, experiment_id, FailureCode.TIME_LIMIT, message, error.step)
    except DeviceUnavailable as error:
        _fail(store, experiment_id, FailureCode.DEVICE_UNAVAILABLE, str(error))
    except Exception as error:
        logger.exception("experiment %s: worker error", experiment_id)
        writer.flush()
        message = f"{type(error).__name__}: {error}"
        _fail(store, experiment_id, FailureCode.WORKER_ERROR, message)
    finally:
        watcher.stop()
        result = None
        _release_memory()
        logger.info(
            "experiment %s: finished in %.1f s",
            experiment_id,
            time.monotonic() - started,
        )


def _analyze_and_finish(
    store: ExperimentStore,
    writer: MetricsWriter,
    spec: ExperimentSpec,
    result: TrainingResult,
    settings: Settings,
) -> None:
    experiment_id = writer.experiment_id
    summary = result.summary
    if spec.analysis.enabled:
        writer.enter_phase(Phase.ANALYSIS)
        try:
            analysis = analyze_critical_point(
                result.model,
                spec.loss,
                result.data.train_x,
                result.data.train_y,
                spec.analysis,
                max_parameters=settings.max_exact_parameters,
            )
        except (ValueError, RuntimeError) as error:
            logger.exception("experiment %s: analysis failed", experiment_id)
            _fail(
                store,
                experiment_id,
                FailureCode.ANALYSIS_FAILED,
                f"training finished but the analysis failed: {error}",
                summary=summary,
            )
            return
        store.save_analysis(experiment_id, analysis)
        logger.info("experiment %s: verdict %s", experiment_id, analysis.verdict.value)
    writer.enter_phase(Phase.DONE)
    store.mark_succeeded(experiment_id, summary)
    logger.info(
        "experiment %s: succeeded, val_accuracy %.4f",
        experiment_id,
        summary.val_accuracy,
    )


def _fail(
    store: ExperimentStore,
    experiment_id: str,
    code: FailureCode,
    message: str,
    step: int | None = None,
    summary: TrainingSummary | None = None,
) -> None:
    store.mark_failed(
        experiment_id, Failure(code=code, message=message, step=step), summary
    )
    logger.error("experiment %s: failed (%s): %s", experiment_id, code.value, message)


def _release_memory() -> None:
    """Collect the dropped model and data so the next job has free GPU memory."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
