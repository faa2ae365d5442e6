"""The sweeps API in process, against a real redis-server and no worker."""

import csv
import io
import json
import math
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from kombu.exceptions import OperationalError

from saddlepoint.records import (
    CriticalPointAnalysis,
    ExperimentStatus,
    Failure,
    FailureCode,
    TrainingSummary,
    Verdict,
)
from saddlepoint.settings import Settings
from saddlepoint.store import ExperimentStore
from service.app import create_app
from service.queue import TaskQueue
from service.schemas import ANALYSIS_COLUMNS, SUMMARY_COLUMNS, table_cell

UNKNOWN_ID = "01ARZ3NDEKTSV4RRFFQ69G5FAV"
IRIS_BASE: dict[str, Any] = {
    "dataset": {"name": "iris"},
    "model": {"hidden_sizes": [4]},
    "epochs": 2,
}


@pytest.fixture
def settings(redis_url: str) -> Settings:
    return Settings(redis_url=redis_url, max_sweep_children=8)


@pytest.fixture
def client(settings: Settings, redis_client: redis.Redis) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def error_of(response: Any) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    return dict(body["error"])


def reject_constant(name: str) -> None:
    raise AssertionError(f"response contains the non-JSON constant {name}")


def submit(client: TestClient, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/v1/sweeps", json=body)
    assert response.status_code == 202, response.text
    return dict(response.json())


def summary(**fields: Any) -> TrainingSummary:
    values: dict[str, Any] = {
        "steps": 16,
        "epochs": 2,
        "train_loss": 0.25,
        "train_accuracy": 0.9,
        "val_loss": 0.5,
        "val_accuracy": 0.8,
        "wall_time_s": 1.5,
        "device": "cpu",
        "parameter_count": 35,
        "updates_per_epoch": 8,
        "mean_step_time_ms": 0.75,
        "mean_epoch_time_s": 0.01,
        "gradient_noise": 0.125,
    }
    values.update(fields)
    return TrainingSummary.model_validate(values)


def analysis() -> CriticalPointAnalysis:
    return CriticalPointAnalysis(
        loss=0.25,
        gradient_norm=0.002,
        gradient_tolerance=0.001,
        parameter_count=35,
        samples=120,
        dtype="float64",
        eigenvalue_tolerance=1e-9,
        positive_count=30,
        negative_count=5,
        zero_count=0,
        min_eigenvalue=-0.1,
        max_eigenvalue=2.0,
        minimum_ratio=30 / 35,
        verdict=Verdict.NOT_CRITICAL,
        verdict_reason="the gradient norm is above the tolerance",
        eigenvalues=[0.0] * 35,
        elapsed_s=0.1,
    )


def finish(store: ExperimentStore, experiment_id: str, result: TrainingSummary) -> None:
    assert store.mark_running(experiment_id, "w@host").applied
    assert store.mark_succeeded(experiment_id, result).applied


def test_submit_grid_creates_and_queues_children(
    client: TestClient, store: ExperimentStore, redis_client: redis.Redis
) -> None:
    body = submit(
        client,
        {
            "name": "devices",
            "base": IRIS_BASE,
            "grid": {"device": ["cpu", "auto"], "optimizer.learning_rate": [0.1, 0.2]},
        },
    )
    assert body["name"] == "devices"
    assert body["paths"] == ["device", "optimizer.learning_rate"]
    assert body["enqueue_failed"] == []
    assert body["counts"] == {
        "queued": 4,
        "running": 0,
        "succeeded": 0,
        "failed": 0,
        "cancelled": 0,
        "total": 4,
    }
    assert body["finished"] is False
    assert body["links"]["table"] == f"/v1/sweeps/{body['id']}/table"
    assert [child["values"] for child in body["children"]] == [
        {"device": "cpu", "optimizer.learning_rate": 0.1},
        {"device": "cpu", "optimizer.learning_rate": 0.2},
        {"device": "auto", "optimizer.learning_rate": 0.1},
        {"device": "auto", "optimizer.learning_rate": 0.2},
    ]
    assert redis_client.llen("cpu") == 2
    assert redis_client.llen("any") == 2
    for child in body["children"]:
        record = store.get(child["experiment_id"])
        assert record is not None
        assert record.status == ExperimentStatus.QUEUED
        assert record.sweep_id == body["id"]
        assert record.spec.dataset.name == "iris"
        assert record.spec.device.value == child["values"]["device"]


def test_submit_sets_location_and_child_record_shows_sweep(
    client: TestClient,
) -> None:
    response = client.post(
        "/v1/sweeps", json={"base": IRIS_BASE, "overrides": [{"seed": 3}]}
    )
    assert response.status_code == 202
    body = response.json()
    assert response.headers["location"] == f"/v1/sweeps/{body['id']}"
    child_id = body["children"][0]["experiment_id"]
    child = client.get(f"/v1/experiments/{child_id}").json()
    assert child["sweep_id"] == body["id"]
    assert child["spec"]["seed"] == 3


def test_get_sweep_counts_statuses(client: TestClient, store: ExperimentStore) -> None:
    created = submit(client, {"base": IRIS_BASE, "grid": {"seed": [1, 2, 3, 4]}})
    ids = [child["experiment_id"] for child in created["children"]]
    finish(store, ids[0], summary())
    store.mark_running(ids[1], "w@host")
    store.mark_failed(ids[2], Failure(code=FailureCode.DIVERGED, message="nan", step=3))
    body = client.get(f"/v1/sweeps/{created['id']}").json()
    assert body["counts"] == {
        "queued": 1,
        "running": 1,
        "succeeded": 1,
        "failed": 1,
        "cancelled": 0,
        "total": 4,
    }
    assert [child["status"] for child in body["children"]] == [
        "succeeded",
        "running",
        "failed",
        "queued",
    ]
    assert body["children"][2]["failure_code"] == "diverged"
    assert body["base"]["dataset"]["name"] == "iris"
    assert body["grid"] == {"seed": [1, 2, 3, 4]}
    assert body["finished"] is False


@pytest.mark.parametrize("sweep_id", [UNKNOWN_ID, "not-an-id"])
def test_get_unknown_sweep_is_404(client: TestClient, sweep_id: str) -> None:
    for path in ["", "/table"]:
        response = client.get(f"/v1/sweeps/{sweep_id}{path}")
        assert response.status_code == 404
        error = error_of(response)
        assert error["code"] == "sweep_not_found"
        assert sweep_id in error["message"]


def test_list_sweeps_pages_newest_first(client: TestClient) -> None:
    ids = [
        submit(client, {"base": IRIS_BASE, "overrides": [{}]})["id"] for _ in range(3)
    ]
    first = client.get("/v1/sweeps", params={"limit": 2}).json()
    second = client.get(
        "/v1/sweeps", params={"limit": 2, "cursor": first["next_cursor"]}
    ).json()
    listed = [item["id"] for item in first["items"] + second["items"]]
    assert listed == sorted(ids, reverse=True)
    assert second["next_cursor"] is None
    assert first["items"][0]["counts"]["queued"] == 1
    assert "children" not in first["items"][0]


def test_list_sweeps_invalid_cursor_is_400(client: TestClient) -> None:
    response = client.get("/v1/sweeps", params={"cursor": "bogus"})
    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_cursor"


def test_invalid_child_is_422_with_index_and_path(
    client: TestClient, store: ExperimentStore, redis_client: redis.Redis
) -> None:
    response = client.post(
        "/v1/sweeps",
        json={
            "base": IRIS_BASE,
            "grid": {"optimizer.learning_rate": [0.1, -1], "batch_size": [8, 500]},
        },
    )
    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "invalid_spec"
    fields = [detail["field"] for detail in error["details"]]
    assert fields == [
        "children.1.batch_size",
        "children.2.optimizer.learning_rate",
        "children.3.optimizer.learning_rate",
        "children.3.batch_size",
    ]
    detail = error["details"][1]
    assert detail["value"] == -1
    assert detail["message"].startswith("child 2 (")
    assert "greater than 0" in detail["message"]
    assert "children.1.batch_size" in error["message"]
    assert "3 more problems" in error["message"]
    assert "3 children are invalid" in error["message"]
    # Nothing was stored or queued.
    assert store.list_ids(limit=10) == []
    assert redis_client.llen("any") == 0


def test_unknown_path_is_422_with_suggestion(client: TestClient) -> None:
    response = client.post(
        "/v1/sweeps", json={"grid": {"optimizer.learnin_rate": [0.1]}}
    )
    assert response.status_code == 422
    detail = error_of(response)["details"][0]
    assert detail["field"] == "grid.optimizer.learnin_rate"
    assert "did you mean 'optimizer.learning_rate'" in detail["message"]


def test_too_many_children_is_422(client: TestClient) -> None:
    response = client.post(
        "/v1/sweeps", json={"grid": {"seed": [1, 2, 3], "epochs": [1, 2, 3]}}
    )
    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "sweep_too_large"
    assert "9 children" in error["message"]
    assert "at most 8" in error["message"]
    assert error["details"][0]["field"] == "grid"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"base": IRIS_BASE}, ""),
        ({"grid": {"seed": []}}, "grid.seed"),
        ({"base": {"epochs": 0}, "grid": {"seed": [1]}}, "base.epochs"),
        ({"overrides": [{"seed": 1}], "extra": 1}, "extra"),
    ],
)
def test_malformed_sweep_is_422(
    client: TestClient, body: dict[str, Any], field: str
) -> None:
    response = client.post("/v1/sweeps", json=body)
    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "invalid_spec"
    assert error["details"][0]["field"] == field


def test_nan_in_grid_is_422_with_strict_json(client: TestClient) -> None:
    response = client.post(
        "/v1/sweeps",
        content='{"grid": {"optimizer.learning_rate": [NaN]}}',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422
    json.loads(response.text, parse_constant=reject_constant)
    detail = error_of(response)["details"][0]
    assert detail["field"] == "children.0.optimizer.learning_rate"
    assert "finite" in detail["message"]


def test_partial_enqueue_failure_marks_rest_failed(
    client: TestClient, store: ExperimentStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue: TaskQueue = client.app.state.queue  # type: ignore[attr-defined]
    sent: list[str] = []

    def send_once(experiment_id: str, spec: Any) -> None:
        if sent:
            raise OperationalError("broker down")
        sent.append(experiment_id)

    monkeypatch.setattr(queue, "send_experiment", send_once)
    body = submit(client, {"base": IRIS_BASE, "grid": {"seed": [1, 2, 3]}})
    ids = [child["experiment_id"] for child in body["children"]]
    assert sent == ids[:1]
    assert body["enqueue_failed"] == ids[1:]
    assert body["counts"]["queued"] == 1
    assert body["counts"]["failed"] == 2
    for experiment_id in ids[1:]:
        record = store.get(experiment_id)
        assert record is not None
        assert record.status == ExperimentStatus.FAILED
        assert record.failure is not None
        assert record.failure.code == FailureCode.ENQUEUE_FAILED
    second = store.get(ids[1])
    third = store.get(ids[2])
    assert second is not None and second.failure is not None
    assert third is not None and third.failure is not None
    assert "broker down" in second.failure.message
    assert "earlier child" in third.failure.message


def test_no_child_queued_is_503(
    client: TestClient, store: ExperimentStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue: TaskQueue = client.app.state.queue  # type: ignore[attr-defined]

    def refuse(experiment_id: str, spec: Any) -> None:
        raise OperationalError("broker down")

    monkeypatch.setattr(queue, "send_experiment", refuse)
    response = client.post(
        "/v1/sweeps", json={"base": IRIS_BASE, "grid": {"seed": [1, 2]}}
    )
    assert response.status_code == 503
    error = error_of(response)
    assert error["code"] == "queue_unavailable"
    records = store.get_many(store.list_ids(limit=10))
    assert len(records) == 2
    assert all(record.status == ExperimentStatus.FAILED for record in records)


def test_table_json_reads_summaries_and_analysis(
    client: TestClient, store: ExperimentStore
) -> None:
    created = submit(
        client,
        {"base": IRIS_BASE, "grid": {"optimizer.learning_rate": [0.1, 0.2, 0.3]}},
    )
    ids = [child["experiment_id"] for child in created["children"]]
    finish(store, ids[0], summary())
    store.save_analysis(ids[0], analysis())
    # An older summary without the timing fields: those cells become null.
    finish(
        store,
        ids[1],
        summary(
            val_loss=None,
            updates_per_epoch=None,
            mean_step_time_ms=None,
            mean_epoch_time_s=None,
            gradient_noise=None,
        ),
    )

    response = client.get(f"/v1/sweeps/{created['id']}/table")
    assert response.status_code == 200
    table = json.loads(response.text, parse_constant=reject_constant)
    assert table["sweep_id"] == created["id"]
    assert table["columns"] == [
        "index",
        "experiment_id",
        "optimizer.learning_rate",
        "status",
        "failure_code",
        *SUMMARY_COLUMNS,
        *ANALYSIS_COLUMNS,
    ]
    first, second, third = table["rows"]
    assert first["index"] == 0
    assert first["experiment_id"] == ids[0]
    assert first["optimizer.learning_rate"] == 0.1
    assert first["status"] == "succeeded"
    assert first["val_accuracy"] == 0.8
    assert first["mean_step_time_ms"] == 0.75
    assert first["mean_epoch_time_s"] == 0.01
    assert first["updates_per_epoch"] == 8
    assert first["gradient_noise"] == 0.125
    assert first["wall_time_s"] == 1.5
    assert first["verdict"] == "not_critical"
    assert first["minimum_ratio"] == pytest.approx(30 / 35)
    assert first["gradient_norm"] == 0.002
    assert second["val_loss"] is None
    assert second["mean_step_time_ms"] is None
    assert second["verdict"] is None
    assert third["status"] == "queued"
    assert third["train_loss"] is None
    assert all(set(row) == set(table["columns"]) for row in table["rows"])


def test_table_csv_has_header_and_empty_cells(
    client: TestClient, store: ExperimentStore
) -> None:
    created = submit(client, {"base": IRIS_BASE, "grid": {"batch_size": [8, "full"]}})
    ids = [child["experiment_id"] for child in created["children"]]
    finish(store, ids[0], summary(val_loss=None))
    url = f"/v1/sweeps/{created['id']}/table"

    by_query = client.get(url, params={"format": "csv"})
    by_accept = client.get(url, headers={"accept": "text/csv"})
    for response in (by_query, by_accept):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/csv")
    assert by_query.text == by_accept.text

    rows = list(csv.DictReader(io.StringIO(by_query.text)))
    header = by_query.text.splitlines()[0].split(",")
    assert header[:5] == [
        "index",
        "experiment_id",
        "batch_size",
        "status",
        "failure_code",
    ]
    assert len(rows) == 2
    assert rows[0]["batch_size"] == "8"
    assert rows[1]["batch_size"] == "full"
    assert rows[0]["val_accuracy"] == "0.8"
    assert rows[0]["val_loss"] == ""
    assert rows[1]["status"] == "queued"
    assert rows[1]["train_loss"] == ""
    assert "nan" not in by_query.text.lower()
    assert "inf" not in by_query.text.lower()


def test_table_csv_writes_objects_as_json(client: TestClient) -> None:
    created = submit(
        client,
        {
            "base": IRIS_BASE,
            "overrides": [{"optimizer": {"name": "adam", "learning_rate": 0.01}}],
        },
    )
    text = client.get(f"/v1/sweeps/{created['id']}/table?format=csv").text
    row = next(csv.DictReader(io.StringIO(text)))
    assert json.loads(row["optimizer"])["name"] == "adam"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (float("nan"), None),
        (float("inf"), None),
        (-math.inf, None),
        (0.5, 0.5),
        (3, 3),
        (None, None),
        (Verdict.SADDLE_POINT, "saddle_point"),
        (True, True),
    ],
)
def test_table_cell_is_finite_json(value: object, expected: object) -> None:
    assert table_cell(value) == expected


def test_cancel_sweep_cancels_unfinished(
    client: TestClient, store: ExperimentStore
) -> None:
    created = submit(client, {"base": IRIS_BASE, "grid": {"seed": [1, 2, 3]}})
    ids = [child["experiment_id"] for child in created["children"]]
    finish(store, ids[0], summary())
    store.mark_running(ids[1], "w@host")

    response = client.post(f"/v1/sweeps/{created['id']}/cancel")
    assert response.status_code == 202
    statuses = [child["status"] for child in response.json()["children"]]
    assert statuses == ["succeeded", "running", "cancelled"]
    running = store.get(ids[1])
    assert running is not None
    assert running.cancel_requested

    store.mark_cancelled(ids[1])
    again = client.post(f"/v1/sweeps/{created['id']}/cancel")
    assert again.status_code == 409
    assert error_of(again)["code"] == "sweep_finished"
    assert client.get(f"/v1/sweeps/{created['id']}").json()["finished"] is True


def test_cancel_unknown_sweep_is_404(client: TestClient) -> None:
    response = client.post(f"/v1/sweeps/{UNKNOWN_ID}/cancel")
    assert response.status_code == 404


def test_many_problems_are_capped(client: TestClient) -> None:
    grid: dict[str, list[Any]] = {
        "epochs": [0],
        "seed": [-1],
        "optimizer.learning_rate": [-1],
        "optimizer.momentum": [2],
        "batch_size": [0],
        "dataset.validation_fraction": [0.9],
        "model.hidden_sizes": [[0]],
        "name": [f"child {index}" for index in range(8)],
    }
    response = client.post("/v1/sweeps", json={"grid": grid})
    assert response.status_code == 422
    error = error_of(response)
    assert len(error["details"]) == 50
    assert "8 children are invalid" in error["message"]
    assert "details lists the first 50 problems" in error["message"]


def test_census_plot_without_points_says_so() -> None:
    from service.census import Census, render_svg

    picture = render_svg(Census(sweep_id="s", points=[], pending=2), "census")
    assert "no child has an analysis yet" in picture
    assert "pending 2" in picture
    assert picture.startswith("<svg")
