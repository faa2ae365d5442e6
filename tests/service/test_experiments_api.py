"""The HTTP API in process, against a real redis-server and no worker."""

import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from saddlepoint.records import ExperimentStatus
from saddlepoint.settings import Settings
from saddlepoint.store import ExperimentStore
from service.app import create_app

UNKNOWN_ID = "01ARZ3NDEKTSV4RRFFQ69G5FAV"


@pytest.fixture
def settings(redis_url: str) -> Settings:
    return Settings(redis_url=redis_url, max_body_bytes=4096)


@pytest.fixture
def client(settings: Settings, redis_client: redis.Redis) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def reject_constant(name: str) -> None:
    raise AssertionError(f"response contains the non-JSON constant {name}")


def error_of(response: Any) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    return dict(body["error"])


def test_submit_returns_202_with_links(client: TestClient, store: ExperimentStore):
    response = client.post("/v1/experiments", json={"epochs": 2})
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "queued"
    assert body["links"]["self"] == f"/v1/experiments/{body['id']}"
    assert response.headers["location"] == body["links"]["self"]
    record = store.get(body["id"])
    assert record is not None
    assert record.spec.epochs == 2


def test_submit_sends_task_to_device_queue(
    client: TestClient, redis_client: redis.Redis
) -> None:
    client.post("/v1/experiments", json={"device": "cpu"})
    client.post("/v1/experiments", json={"device": "auto"})
    assert redis_client.llen("cpu") == 1
    assert redis_client.llen("any") == 1


def test_get_returns_record(client: TestClient) -> None:
    created = client.post("/v1/experiments", json={"name": "x"}).json()
    response = client.get(f"/v1/experiments/{created['id']}")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "queued"
    assert body["spec"]["name"] == "x"
    assert body["progress"]["steps_completed"] == 0
    assert body["progress"]["total_steps"] == 45 * 20
    assert body["failure"] is None


@pytest.mark.parametrize("experiment_id", [UNKNOWN_ID, "not-an-id", "x" * 64])
def test_get_unknown_is_404(client: TestClient, experiment_id: str) -> None:
    response = client.get(f"/v1/experiments/{experiment_id}")
    assert response.status_code == 404
    error = error_of(response)
    assert error["code"] == "experiment_not_found"
    assert experiment_id in error["message"]


def test_list_pages_with_cursor(client: TestClient) -> None:
    ids = [client.post("/v1/experiments", json={}).json()["id"] for _ in range(5)]
    first = client.get("/v1/experiments", params={"limit": 3}).json()
    second = client.get(
        "/v1/experiments", params={"limit": 3, "cursor": first["next_cursor"]}
    ).json()
    listed = [item["id"] for item in first["items"] + second["items"]]
    assert listed == sorted(ids, reverse=True)
    assert second["next_cursor"] is None


def test_list_invalid_cursor_is_400(client: TestClient) -> None:
    response = client.get("/v1/experiments", params={"cursor": "bogus"})
    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_cursor"


def test_list_limit_out_of_range_is_422(client: TestClient) -> None:
    response = client.get("/v1/experiments", params={"limit": 0})
    assert response.status_code == 422
    error = error_of(response)
    assert error["details"][0]["field"] == "limit"


def test_metrics_empty_page_keeps_cursor(client: TestClient) -> None:
    created = client.post("/v1/experiments", json={}).json()
    response = client.get(f"/v1/experiments/{created['id']}/metrics?after=7")
    assert response.status_code == 200
    assert response.json() == {"status": "queued", "records": [], "next_cursor": 7}


def test_analysis_before_finish_is_404(client: TestClient) -> None:
    created = client.post("/v1/experiments", json={}).json()
    response = client.get(f"/v1/experiments/{created['id']}/analysis")
    assert response.status_code == 404
    error = error_of(response)
    assert error["code"] == "analysis_not_available"
    assert "queued" in error["message"]


def test_cancel_queued_then_conflict(client: TestClient) -> None:
    created = client.post("/v1/experiments", json={}).json()
    url = f"/v1/experiments/{created['id']}/cancel"
    first = client.post(url)
    assert first.status_code == 202
    assert first.json()["status"] == ExperimentStatus.CANCELLED
    second = client.post(url)
    assert second.status_code == 409
    error = error_of(second)
    assert error["code"] == "experiment_finished"
    assert "cancelled" in error["message"]


def test_cancel_unknown_is_404(client: TestClient) -> None:
    response = client.post(f"/v1/experiments/{UNKNOWN_ID}/cancel")
    assert response.status_code == 404


INVALID_SPECS = [
    ({"epochs": 0}, "epochs", "greater than or equal to 1"),
    ({"epochs": "many"}, "epochs", "valid integer"),
    ({"batch_size": 5000}, "batch_size", "use an integer from 1 to 1437"),
    ({"batch_size": 0}, "batch_size", "use an integer from 1 to 1437"),
    ({"batch_size": "half"}, "batch_size", "full"),
    ({"batch_size": True}, "batch_size", "full"),
    ({"batch_size": 2.5}, "batch_size", "full"),
    ({"name": 5}, "name", "valid string"),
    ({"dataset": {"name": "mnist"}}, "dataset.name", "digits"),
    ({"dataset": {"validation_fraction": 0.9}}, "dataset.validation_fraction", "0.5"),
    ({"model": {"hidden_sizes": [0]}}, "model.hidden_sizes.0", "greater than"),
    ({"model": {"activation": "swish"}}, "model.activation", "relu"),
    ({"loss": "hinge"}, "loss", "cross_entropy"),
    ({"optimizer": {"name": "lbfgs"}}, "optimizer.name", "sgd"),
    (
        {"optimizer": {"name": "sgd", "learning_rate": -1}},
        "optimizer.learning_rate",
        "greater than 0",
    ),
    (
        {"optimizer": {"name": "sgd", "momentum": 1.0}},
        "optimizer.momentum",
        "less than 1",
    ),
    (
        {"optimizer": {"name": "sgd", "nesterov": True}},
        "optimizer.nesterov",
        "momentum > 0",
    ),
    (
        {"optimizer": {"name": "adam", "betas": [0.9, 1.5]}},
        "optimizer.betas.1",
        "less than 1",
    ),
    ({"schedule": {"name": "step"}}, "schedule.step_size", "required"),
    (
        {"schedule": {"name": "cosine", "warmup_steps": -1}},
        "schedule.warmup_steps",
        "greater than or equal to 0",
    ),
    ({"device": "tpu"}, "device", "cuda"),
    ({"seed": -1}, "seed", "greater than or equal to 0"),
    ({"learning_rate": 0.1}, "learning_rate", "unknown field"),
    ({"model": {"layers": 3}}, "model.layers", "unknown field"),
    (
        {"analysis": {"gradient_tolerance": 0}},
        "analysis.gradient_tolerance",
        "greater than 0",
    ),
]


@pytest.mark.parametrize(("spec", "field", "fragment"), INVALID_SPECS)
def test_invalid_spec_names_field_and_fix(
    client: TestClient, spec: dict[str, Any], field: str, fragment: str
) -> None:
    response = client.post("/v1/experiments", json=spec)
    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "invalid_spec"
    fields = [detail["field"] for detail in error["details"]]
    assert field in fields
    detail = error["details"][fields.index(field)]
    assert fragment in detail["message"]
    assert field in error["message"] or len(error["details"]) > 1


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_rejected(client: TestClient, literal: str) -> None:
    body = '{"optimizer": {"name": "sgd", "learning_rate": LITERAL}}'
    body = body.replace("LITERAL", literal)
    response = client.post(
        "/v1/experiments", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    # The echoed value must still be strict JSON, which has no NaN or Infinity.
    json.loads(response.text, parse_constant=reject_constant)
    detail = error_of(response)["details"][0]
    assert detail["field"] == "optimizer.learning_rate"
    assert "finite" in detail["message"]


def test_malformed_json_is_400(client: TestClient) -> None:
    response = client.post(
        "/v1/experiments",
        content="{not json",
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "invalid_body"
    assert error["details"][0]["field"] == "body"
    assert "not valid JSON" in error["details"][0]["message"]


def test_body_not_object_is_422(client: TestClient) -> None:
    response = client.post("/v1/experiments", json=[1, 2, 3])
    assert response.status_code == 422
    assert error_of(response)["code"] == "invalid_spec"


def test_large_body_is_413(client: TestClient) -> None:
    response = client.post("/v1/experiments", json={"name": "x" * 10_000})
    assert response.status_code == 413
    error = error_of(response)
    assert error["code"] == "body_too_large"
    assert "4096" in error["message"]


def test_model_over_exact_limit_names_fix(client: TestClient) -> None:
    exact = {"model": {"hidden_sizes": [512]}, "analysis": {"method": "exact"}}
    response = client.post("/v1/experiments", json=exact)
    assert response.status_code == 422
    detail = error_of(response)["details"][0]
    assert detail["field"] == "model.hidden_sizes"
    assert "analysis.enabled" in detail["message"]
    disabled = client.post(
        "/v1/experiments",
        json={"model": {"hidden_sizes": [512]}, "analysis": {"enabled": False}},
    )
    assert disabled.status_code == 202


def test_too_many_steps_names_fix(client: TestClient) -> None:
    response = client.post("/v1/experiments", json={"batch_size": 1, "epochs": 100_000})
    assert response.status_code == 422
    detail = error_of(response)["details"][0]
    assert detail["field"] == "epochs"
    assert "fewer epochs" in detail["message"]


def test_redis_down_is_503(settings: Settings) -> None:
    down = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    with TestClient(create_app(down)) as test_client:
        response = test_client.get(f"/v1/experiments/{UNKNOWN_ID}")
        assert response.status_code == 503
        assert error_of(response)["code"] == "store_unavailable"
        ready = test_client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["redis"] == "unavailable"


def test_healthz_and_readyz_without_workers(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert "no worker is alive" in ready.json()["problems"][0]


def test_readyz_with_heartbeat(client: TestClient, store: ExperimentStore) -> None:
    store.write_heartbeat("w@host", {"name": "w@host"}, ttl_s=30)
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["workers"] == [{"name": "w@host"}]


def test_readyz_counts_workers_per_queue(
    client: TestClient, store: ExperimentStore
) -> None:
    store.write_heartbeat("a@host", {"queues": ["any", "cpu"]}, ttl_s=30)
    store.write_heartbeat("b@host", {"queues": ["any", "cpu"]}, ttl_s=30)

    body = client.get("/readyz").json()

    assert body["status"] == "ready"
    assert body["queues"] == {"any": 2, "cpu": 2, "cuda": 0}


def test_readyz_without_workers_lists_empty_queues(client: TestClient) -> None:
    body = client.get("/readyz").json()

    assert body["queues"] == {"any": 0, "cpu": 0, "cuda": 0}


def test_submit_warns_without_queue_consumer(
    client: TestClient, store: ExperimentStore
) -> None:
    store.write_heartbeat("cpu@host", {"queues": ["any", "cpu"]}, ttl_s=30)

    cuda = client.post("/v1/experiments", json={"device": "cuda"})
    cpu = client.post("/v1/experiments", json={"device": "cpu"})

    assert cuda.status_code == 202
    warnings = cuda.json()["warnings"]
    assert len(warnings) == 1
    assert "'cuda' queue" in warnings[0]
    assert "--queues any,cuda" in warnings[0]
    assert cpu.json()["warnings"] == []


def test_submit_without_workers_warns(client: TestClient) -> None:
    response = client.post("/v1/experiments", json={})

    assert response.status_code == 202
    assert "'any' queue" in response.json()["warnings"][0]


@pytest.mark.parametrize("after", ["1" * 400, str(2**53 + 1)])
def test_metrics_cursor_above_bound_is_422(client: TestClient, after: str) -> None:
    created = client.post("/v1/experiments", json={}).json()

    response = client.get(
        f"/v1/experiments/{created['id']}/metrics", params={"after": after}
    )

    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "invalid_request"
    assert error["details"][0]["field"] == "after"
    assert len(response.content) < 2_000


def test_metrics_cursor_at_bound_is_read(client: TestClient) -> None:
    created = client.post("/v1/experiments", json={}).json()

    response = client.get(
        f"/v1/experiments/{created['id']}/metrics", params={"after": 2**53}
    )

    assert response.status_code == 200
    assert response.json()["next_cursor"] == 2**53


def test_unknown_route_uses_error_body(client: TestClient) -> None:
    response = client.get("/v2/nothing")
    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"
