"""Experiments over HTTP, trained by a real Celery worker process."""

from typing import Any

from tests.integration.conftest import FAST_SPEC, Stack


def read_all_metrics(stack: Stack, experiment_id: str) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    cursor = -1
    while True:
        page = stack.http.get(
            f"/v1/experiments/{experiment_id}/metrics",
            params={"after": cursor, "limit": 50},
        ).json()
        if not page["records"]:
            return records
        records += page["records"]
        cursor = page["next_cursor"]


def test_experiment_succeeds_with_analysis(stack: Stack) -> None:
    experiment_id = stack.submit({**FAST_SPEC, "name": "iris end to end"})
    record = stack.wait_finished(experiment_id)
    assert record["status"] == "succeeded", record
    assert record["attempts"] == 1
    assert record["progress"]["steps_completed"] == record["progress"]["total_steps"]
    assert record["progress"]["epochs_completed"] == 30
    assert record["summary"]["val_accuracy"] > 0.8
    assert record["latest"]["epoch"]["epoch"] == 29

    analysis = stack.http.get(f"/v1/experiments/{experiment_id}/analysis").json()
    parameters = 4 * 8 + 8 + 8 * 3 + 3
    assert analysis["parameter_count"] == parameters
    assert len(analysis["eigenvalues"]) == parameters
    counts = (
        analysis["positive_count"] + analysis["negative_count"] + analysis["zero_count"]
    )
    assert counts == parameters
    assert analysis["verdict"] in {
        "local_minimum",
        "saddle_point",
        "local_maximum",
        "degenerate",
        "not_critical",
    }
    if analysis["gradient_norm"] > analysis["gradient_tolerance"]:
        assert analysis["verdict"] == "not_critical"


def test_metrics_cursor_covers_run_exactly_once(stack: Stack) -> None:
    experiment_id = stack.submit(FAST_SPEC)
    seen: list[dict[str, Any]] = []
    cursor = -1
    # Poll while the run is in progress, as a client would.
    while True:
        page = stack.http.get(
            f"/v1/experiments/{experiment_id}/metrics",
            params={"after": cursor, "limit": 37},
        ).json()
        seen += page["records"]
        cursor = page["next_cursor"]
        if (
            page["status"] in {"succeeded", "failed", "cancelled"}
            and not page["records"]
        ):
            break
    steps = [record["step"] for record in seen if record["kind"] == "step"]
    epochs = [record["epoch"] for record in seen if record["kind"] == "epoch"]
    assert steps == list(range(8 * 30))  # 120 training samples / 16 = 8 per epoch
    assert epochs == list(range(30))
    assert seen == read_all_metrics(stack, experiment_id)


def test_diverging_run_fails_with_reason(stack: Stack) -> None:
    spec = {
        **FAST_SPEC,
        "dataset": {"name": "digits"},
        "model": {"hidden_sizes": [32], "activation": "relu"},
        "optimizer": {"name": "sgd", "learning_rate": 100.0, "momentum": 0.9},
        "epochs": 5,
    }
    experiment_id = stack.submit(spec)
    record = stack.wait_finished(experiment_id)
    assert record["status"] == "failed", record
    failure = record["failure"]
    assert failure["code"] == "diverged"
    assert failure["step"] is not None
    assert f"step {failure['step']}" in failure["message"]
    metrics = read_all_metrics(stack, experiment_id)
    steps = [item for item in metrics if item["kind"] == "step"]
    assert steps[-1]["step"] == failure["step"]
    assert steps[-1]["loss"] is None
    analysis = stack.http.get(f"/v1/experiments/{experiment_id}/analysis")
    assert analysis.status_code == 404


def test_cancel_running_experiment(stack: Stack) -> None:
    spec = {**FAST_SPEC, "batch_size": 1, "epochs": 2000}
    experiment_id = stack.submit(spec)
    stack.wait_for(
        experiment_id,
        lambda record: record["progress"]["steps_completed"] > 0,
        "to report progress",
    )
    response = stack.http.post(f"/v1/experiments/{experiment_id}/cancel")
    assert response.status_code == 202
    record = stack.wait_finished(experiment_id)
    assert record["status"] == "cancelled"
    assert record["progress"]["steps_completed"] < record["progress"]["total_steps"]
    again = stack.http.post(f"/v1/experiments/{experiment_id}/cancel")
    assert again.status_code == 409


def test_cancel_queued_experiment_never_starts(stack: Stack) -> None:
    # The single worker is busy with the first run, so the second stays queued.
    blocker = stack.submit({**FAST_SPEC, "batch_size": 1, "epochs": 2000})
    queued = stack.submit(FAST_SPEC)
    response = stack.http.post(f"/v1/experiments/{queued}/cancel")
    assert response.status_code == 202
    assert response.json()["status"] == "cancelled"
    stack.http.post(f"/v1/experiments/{blocker}/cancel")
    stack.wait_finished(blocker)
    # A later run on the same worker proves the cancelled task was consumed.
    after = stack.submit(FAST_SPEC)
    assert stack.wait_finished(after)["status"] == "succeeded"
    record = stack.get(queued)
    assert record["status"] == "cancelled"
    assert record["started_at"] is None
    assert record["attempts"] == 0


def test_auto_device_runs_on_cpu_worker(stack: Stack) -> None:
    experiment_id = stack.submit({**FAST_SPEC, "device": "auto"})
    record = stack.wait_finished(experiment_id)
    assert record["status"] == "succeeded"
    assert record["summary"]["device"] in {"cpu", "cuda"}
