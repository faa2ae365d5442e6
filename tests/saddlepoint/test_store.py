"""ExperimentStore against a real redis-server."""

import threading

import pytest

from saddlepoint.records import (
    CriticalPointAnalysis,
    EpochMetrics,
    ExperimentStatus,
    Failure,
    FailureCode,
    Progress,
    StepMetrics,
    TrainingSummary,
    Verdict,
)
from saddlepoint.spec import ExperimentSpec
from saddlepoint.store import CANCEL_CHANNEL, ExperimentStore


def step(index: int, epoch: int = 0, loss: float | None = 1.0) -> StepMetrics:
    return StepMetrics(
        step=index,
        epoch=epoch,
        loss=loss,
        learning_rate=0.1,
        grad_norm=0.5,
        step_time_ms=1.0,
    )


def epoch_end(index: int, last_step: int) -> EpochMetrics:
    return EpochMetrics(
        epoch=index,
        step=last_step,
        train_loss=0.5,
        train_accuracy=0.9,
        val_loss=0.6,
        val_accuracy=0.8,
        epoch_time_s=0.1,
    )


def summary() -> TrainingSummary:
    return TrainingSummary(
        steps=10,
        epochs=1,
        train_loss=0.1,
        train_accuracy=1.0,
        val_loss=0.2,
        val_accuracy=0.95,
        wall_time_s=1.0,
        device="cpu",
        parameter_count=2410,
    )


def test_create_then_get_round_trips(store: ExperimentStore) -> None:
    spec = ExperimentSpec(name="round trip", epochs=3)
    created = store.create(spec)
    loaded = store.get(created.id)
    assert loaded is not None
    assert loaded.status == ExperimentStatus.QUEUED
    assert loaded.spec == spec
    assert loaded.progress.total_steps == spec.total_steps
    assert loaded.progress.total_epochs == 3
    assert loaded.created_at == created.created_at


def test_get_unknown_id_returns_none(store: ExperimentStore) -> None:
    assert store.get("01ARZ3NDEKTSV4RRFFQ69G5FAV") is None


def test_list_ids_pages_newest_first(store: ExperimentStore) -> None:
    ids = [store.create(ExperimentSpec()).id for _ in range(5)]
    first = store.list_ids(limit=2)
    second = store.list_ids(limit=2, before=first[-1])
    third = store.list_ids(limit=2, before=second[-1])
    assert first + second + third == sorted(ids, reverse=True)
    assert len(third) == 1


def test_running_then_succeeded(store: ExperimentStore) -> None:
    record = store.create(ExperimentSpec())
    started = store.mark_running(record.id, "worker-a")
    assert started.applied
    assert started.previous == ExperimentStatus.QUEUED
    finished = store.mark_succeeded(record.id, summary())
    assert finished.applied
    loaded = store.get(record.id)
    assert loaded is not None
    assert loaded.status == ExperimentStatus.SUCCEEDED
    assert loaded.attempts == 1
    assert loaded.worker == "worker-a"
    assert loaded.summary == summary()
    assert loaded.started_at is not None
    assert loaded.finished_at is not None


def test_terminal_status_is_final(store: ExperimentStore) -> None:
    record = store.create(ExperimentSpec())
    store.mark_running(record.id, "worker-a")
    store.mark_succeeded(record.id, summary())
    failure = Failure(code=FailureCode.WORKER_ERROR, message="late")
    assert not store.mark_failed(record.id, failure).applied
    assert not store.mark_running(record.id, "worker-b").applied
    loaded = store.get(record.id)
    assert loaded is not None
    assert loaded.status == ExperimentStatus.SUCCEEDED


def test_cancel_queued_is_immediate(store: ExperimentStore) -> None:
    record = store.create(ExperimentSpec())
    assert store.request_cancel(record.id) == ExperimentStatus.QUEUED
    loaded = store.get(record.id)
    assert loaded is not None
    assert loaded.status == ExperimentStatus.CANCELLED
    # A worker that picks the task up later must not start it.
    assert not store.mark_running(record.id, "worker-a").applied


def test_cancel_running_flags_and_publishes(store: ExperimentStore) -> None:
    record = store.create(ExperimentSpec())
    store.mark_running(record.id, "worker-a")
    pubsub = store.client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(CANCEL_CHANNEL)
    pubsub.get_message(timeout=1)
    assert store.request_cancel(record.id) == ExperimentStatus.RUNNING
    message = pubsub.get_message(timeout=5)
    pubsub.close()
    assert message is not None
    assert message["data"] == record.id
    assert store.is_cancel_requested(record.id)
    loaded = store.get(record.id)
    assert loaded is not None
    assert loaded.status == ExperimentStatus.RUNNING


def test_cancel_finished_reports_status(store: ExperimentStore) -> None:
    record = store.create(ExperimentSpec())
    store.mark_running(record.id, "worker-a")
    store.mark_succeeded(record.id, summary())
    assert store.request_cancel(record.id) == ExperimentStatus.SUCCEEDED
    assert not store.is_cancel_requested(record.id)


def test_cancel_unknown_returns_none(store: ExperimentStore) -> None:
    assert store.request_cancel("01ARZ3NDEKTSV4RRFFQ69G5FAV") is None


def test_concurrent_cancel_and_start_agree(store: ExperimentStore) -> None:
    """Whatever the interleaving, a cancelled experiment is never running."""
    for _ in range(20):
        record = store.create(ExperimentSpec())
        barrier = threading.Barrier(2)

        def cancel(experiment_id: str, barrier: threading.Barrier) -> None:
            barrier.wait()
            store.request_cancel(experiment_id)

        thread = threading.Thread(target=cancel, args=(record.id, barrier))
        thread.start()
        barrier.wait()
        started = store.mark_running(record.id, "worker-a")
        thread.join()
        loaded = store.get(record.id)
        assert loaded is not None
        if started.applied:
            assert loaded.status == ExperimentStatus.RUNNING
            assert loaded.cancel_requested
        else:
            assert loaded.status == ExperimentStatus.CANCELLED


def test_metrics_cursor_sees_each_record_once(store: ExperimentStore) -> None:
    record = store.create(ExperimentSpec())
    seen: list[tuple[str, int]] = []
    cursor = -1

    def drain(limit: int) -> None:
        nonlocal cursor
        while True:
            page = store.read_metrics(record.id, after=cursor, limit=limit)
            if not page.records:
                assert page.next_cursor == cursor
                return
            seen.extend((item.kind, item.step) for item in page.records)
            cursor = page.next_cursor

    for epoch in range(3):
        batch = [step(epoch * 4 + i, epoch) for i in range(4)]
        store.write_metrics(record.id, batch[:3])
        drain(limit=2)
        store.write_metrics(record.id, [*batch[3:], epoch_end(epoch, epoch * 4 + 3)])
        drain(limit=3)

    expected = []
    for epoch in range(3):
        expected += [("step", epoch * 4 + i) for i in range(4)]
        expected.append(("epoch", epoch * 4 + 3))
    assert seen == expected


def test_rewriting_metrics_changes_nothing(store: ExperimentStore) -> None:
    record = store.create(ExperimentSpec())
    batch = [step(0), step(1), epoch_end(0, 1)]
    store.write_metrics(record.id, batch)
    store.write_metrics(record.id, batch)
    page = store.read_metrics(record.id, after=-1, limit=100)
    assert [item.kind for item in page.records] == ["step", "step", "epoch"]
    assert page.next_cursor == 3


def test_metrics_update_progress_and_latest(store: ExperimentStore) -> None:
    record = store.create(ExperimentSpec())
    progress = Progress(
        steps_completed=2, total_steps=10, epochs_completed=1, total_epochs=5
    )
    store.write_metrics(record.id, [step(0), step(1), epoch_end(0, 1)], progress)
    loaded = store.get(record.id)
    assert loaded is not None
    assert loaded.progress == progress
    assert loaded.latest.step == step(1)
    assert loaded.latest.epoch == epoch_end(0, 1)


def test_non_finite_loss_is_stored_as_null(store: ExperimentStore) -> None:
    record = store.create(ExperimentSpec())
    store.write_metrics(record.id, [step(0, loss=None)])
    raw = store.client.hget(f"saddle:experiment:{record.id}:metric-data", "s:0")
    assert raw is not None
    assert '"loss":null' in raw


def test_analysis_round_trips(store: ExperimentStore) -> None:
    record = store.create(ExperimentSpec())
    analysis = CriticalPointAnalysis(
        loss=0.5,
        gradient_norm=1e-5,
        gradient_tolerance=1e-3,
        parameter_count=2,
        samples=1,
        dtype="float64",
        eigenvalue_tolerance=2e-6,
        positive_count=1,
        negative_count=1,
        zero_count=0,
        min_eigenvalue=-2.0,
        max_eigenvalue=2.0,
        minimum_ratio=0.5,
        verdict=Verdict.SADDLE_POINT,
        verdict_reason="both signs",
        eigenvalues=[-2.0, 2.0],
        elapsed_s=0.01,
    )
    assert store.get_analysis(record.id) is None
    store.save_analysis(record.id, analysis)
    assert store.get_analysis(record.id) == analysis


def test_heartbeats_expire(store: ExperimentStore) -> None:
    store.write_heartbeat("alive@host", {"name": "alive@host"}, ttl_s=60)
    store.write_heartbeat("gone@host", {"name": "gone@host"}, ttl_s=60)
    store.remove_heartbeat("gone@host")
    assert store.live_workers() == [{"name": "alive@host"}]
    assert store.client.ttl("saddle:worker:alive@host") > 0


@pytest.mark.parametrize("limit", [1, 7, 1000])
def test_metrics_page_sizes(store: ExperimentStore, limit: int) -> None:
    record = store.create(ExperimentSpec())
    store.write_metrics(record.id, [step(i) for i in range(20)])
    cursor, steps = -1, []
    while True:
        page = store.read_metrics(record.id, after=cursor, limit=limit)
        if not page.records:
            break
        assert len(page.records) <= limit
        steps += [item.step for item in page.records]
        cursor = page.next_cursor
    assert steps == list(range(20))


def test_live_lease_blocks_second_claim(store: ExperimentStore) -> None:
    record = store.create(ExperimentSpec())
    assert store.mark_running(record.id, "worker-a", lease_s=60).applied
    second = store.mark_running(record.id, "worker-b", lease_s=60)
    assert not second.applied
    assert second.previous == ExperimentStatus.RUNNING
    loaded = store.get(record.id)
    assert loaded is not None
    assert loaded.worker == "worker-a"
    assert loaded.lease_expires_at is not None


def test_expired_lease_is_reclaimed(store: ExperimentStore) -> None:
    record = store.create(ExperimentSpec())
    store.mark_running(record.id, "worker-a", lease_s=0)
    assert store.expired_leases() == [record.id]
    assert store.mark_running(record.id, "worker-b", lease_s=60).applied
    assert store.expired_leases() == []
    loaded = store.get(record.id)
    assert loaded is not None
    assert loaded.attempts == 2
    assert loaded.worker == "worker-b"


def test_renew_lease_reports_takeover(store: ExperimentStore) -> None:
    record = store.create(ExperimentSpec())
    store.mark_running(record.id, "worker-a", lease_s=0)
    store.mark_running(record.id, "worker-b", lease_s=60)
    assert store.renew_lease(record.id, "worker-b", 60) == "running"
    assert store.renew_lease(record.id, "worker-a", 60) == "lost"
    assert store.renew_lease("01ARZ3NDEKTSV4RRFFQ69G5FAV", "worker-a", 60) == ""


def test_finished_runs_leave_running_set(store: ExperimentStore) -> None:
    record = store.create(ExperimentSpec())
    store.mark_running(record.id, "worker-a", lease_s=0)
    store.mark_succeeded(record.id, summary())
    assert store.expired_leases() == []
    assert store.client.scard("saddle:running") == 0


def test_metrics_for_vanished_record_write_nothing(store: ExperimentStore) -> None:
    record = store.create(ExperimentSpec())
    store.client.delete(f"saddle:experiment:{record.id}")
    assert not store.write_metrics(record.id, [step(0)])
    assert store.read_metrics(record.id, after=-1, limit=10).records == []
    assert not store.client.exists(f"saddle:experiment:{record.id}")


def test_partial_record_reads_as_missing(store: ExperimentStore) -> None:
    store.client.hset("saddle:experiment:01ARZ3NDEKTSV4RRFFQ69G5FAV", "progress", "{}")
    assert store.get("01ARZ3NDEKTSV4RRFFQ69G5FAV") is None
    assert store.get_many(["01ARZ3NDEKTSV4RRFFQ69G5FAV"]) == []
