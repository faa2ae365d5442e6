"""A sweep over HTTP, its children trained by a real Celery worker process."""

import csv
import io
from typing import Any

from tests.integration.conftest import FAST_SPEC, RUN_TIMEOUT_S, Stack
from tests.support.processes import wait_until


def wait_sweep_finished(stack: Stack, sweep_id: str) -> dict[str, Any]:
    sweep: dict[str, Any] = {}

    def finished() -> bool:
        nonlocal sweep
        sweep = stack.http.get(f"/v1/sweeps/{sweep_id}").json()
        return bool(sweep["finished"])

    try:
        wait_until(finished, 2 * RUN_TIMEOUT_S, f"sweep {sweep_id} to finish")
    except TimeoutError as error:
        raise AssertionError(
            f"{error}; last state {sweep}\nworker log:\n{stack.worker.log_tail()}"
        ) from error
    return sweep


def test_two_child_sweep_runs_to_table(stack: Stack) -> None:
    body = {
        "name": "iris learning rates",
        "base": {**FAST_SPEC, "analysis": {"enabled": False}},
        "grid": {"optimizer.learning_rate": [0.05, 0.01]},
    }
    response = stack.http.post("/v1/sweeps", json=body)
    assert response.status_code == 202, response.text
    sweep_id = response.json()["id"]

    sweep = wait_sweep_finished(stack, sweep_id)
    assert sweep["counts"]["succeeded"] == 2, sweep
    assert sweep["counts"]["total"] == 2

    table = stack.http.get(f"/v1/sweeps/{sweep_id}/table").json()
    rows = table["rows"]
    assert len(rows) == 2
    assert [row["optimizer.learning_rate"] for row in rows] == [0.05, 0.01]
    for row in rows:
        assert row["status"] == "succeeded"
        assert 0 <= row["train_accuracy"] <= 1
        assert 0 <= row["val_accuracy"] <= 1
        assert row["wall_time_s"] > 0
        assert row["verdict"] is None
    assert rows[0]["val_accuracy"] > 0.8

    text = stack.http.get(f"/v1/sweeps/{sweep_id}/table?format=csv").text
    csv_rows = list(csv.DictReader(io.StringIO(text)))
    assert [row["experiment_id"] for row in csv_rows] == [
        row["experiment_id"] for row in rows
    ]
    assert float(csv_rows[0]["val_accuracy"]) == rows[0]["val_accuracy"]
