"""The runner in process, against a real redis-server, without Celery."""

import pytest
import torch

from saddlepoint.records import ExperimentStatus, FailureCode, Phase
from saddlepoint.settings import Settings
from saddlepoint.spec import ExperimentSpec
from saddlepoint.store import ExperimentStore
from worker.runner import MAX_ATTEMPTS, run_experiment

TINY = {
    "dataset": {"name": "iris"},
    "model": {"hidden_sizes": [4]},
    "optimizer": {"name": "adam", "learning_rate": 0.05},
    "batch_size": "full",
    "epochs": 5,
    "device": "cpu",
}


@pytest.fixture
def settings(redis_url: str) -> Settings:
    return Settings(redis_url=redis_url)


def run(store: ExperimentStore, settings: Settings, spec: dict[str, object]) -> str:
    record = store.create(ExperimentSpec.model_validate(spec))
    run_experiment(record.id, "test-worker", settings)
    return record.id


def test_success_records_summary_and_analysis(
    store: ExperimentStore, settings: Settings
) -> None:
    experiment_id = run(store, settings, TINY)
    record = store.get(experiment_id)
    assert record is not None
    assert record.status == ExperimentStatus.SUCCEEDED
    assert record.progress.phase == Phase.DONE
    assert record.progress.steps_completed == 5
    assert record.summary is not None
    assert record.summary.steps == 5
    analysis = store.get_analysis(experiment_id)
    assert analysis is not None
    assert analysis.parameter_count == 4 * 4 + 4 + 4 * 3 + 3


def test_analysis_disabled_stores_none(
    store: ExperimentStore, settings: Settings
) -> None:
    experiment_id = run(store, settings, {**TINY, "analysis": {"enabled": False}})
    record = store.get(experiment_id)
    assert record is not None
    assert record.status == ExperimentStatus.SUCCEEDED
    assert store.get_analysis(experiment_id) is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_gpu_fails_clearly(
    store: ExperimentStore, settings: Settings
) -> None:
    experiment_id = run(store, settings, {**TINY, "device": "cuda"})
    record = store.get(experiment_id)
    assert record is not None
    assert record.status == ExperimentStatus.FAILED
    assert record.failure is not None
    assert record.failure.code == FailureCode.DEVICE_UNAVAILABLE
    assert "no CUDA device" in record.failure.message


def test_cancelled_before_start_never_runs(
    store: ExperimentStore, settings: Settings
) -> None:
    record = store.create(ExperimentSpec.model_validate(TINY))
    store.request_cancel(record.id)
    run_experiment(record.id, "test-worker", settings)
    loaded = store.get(record.id)
    assert loaded is not None
    assert loaded.status == ExperimentStatus.CANCELLED
    assert loaded.attempts == 0
    assert store.read_metrics(record.id, after=-1, limit=10).records == []


def test_repeatedly_lost_run_fails(store: ExperimentStore, settings: Settings) -> None:
    record = store.create(ExperimentSpec.model_validate(TINY))
    # Each start that never finished left the status running and counted.
    for _ in range(MAX_ATTEMPTS):
        store.mark_running(record.id, "dead-worker", lease_s=0)
    run_experiment(record.id, "test-worker", settings)
    loaded = store.get(record.id)
    assert loaded is not None
    assert loaded.status == ExperimentStatus.FAILED
    assert loaded.failure is not None
    assert loaded.failure.code == FailureCode.WORKER_LOST


def test_redelivered_run_restarts(store: ExperimentStore, settings: Settings) -> None:
    record = store.create(ExperimentSpec.model_validate(TINY))
    store.mark_running(record.id, "dead-worker", lease_s=0)
    run_experiment(record.id, "test-worker", settings)
    loaded = store.get(record.id)
    assert loaded is not None
    assert loaded.status == ExperimentStatus.SUCCEEDED
    assert loaded.attempts == 2
    assert loaded.worker == "test-worker"


def test_unknown_id_is_ignored(store: ExperimentStore, settings: Settings) -> None:
    run_experiment("01ARZ3NDEKTSV4RRFFQ69G5FAV", "test-worker", settings)
    assert store.get("01ARZ3NDEKTSV4RRFFQ69G5FAV") is None
