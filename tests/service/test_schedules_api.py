"""POST /v1/schedules/preview in process, against a real redis-server.

The app opens Redis on startup, so these tests use the shared redis fixture
even though the preview itself never touches the store.
"""

import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from saddlepoint.settings import Settings
from service.app import create_app

URL = "/v1/schedules/preview"


@pytest.fixture
def client(redis_url: str, redis_client: redis.Redis) -> Iterator[TestClient]:
    settings = Settings(redis_url=redis_url, max_body_bytes=4096)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def error_of(response: Any) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    return dict(body["error"])


def close(values: list[float]) -> object:
    return pytest.approx(values, rel=1e-12, abs=1e-15)


def test_preview_direct_constant_with_warmup(client: TestClient) -> None:
    response = client.post(
        URL,
        json={
            "schedule": {"name": "constant", "warmup_steps": 4},
            "learning_rate": 0.4,
            "total_steps": 6,
        },
    )

    assert response.status_code == 200
    body = response.json()
    assert body["learning_rates"] == close([0.1, 0.2, 0.3, 0.4, 0.4, 0.4])
    assert body["total_steps"] == 6
    assert body["learning_rate"] == 0.4
    assert body["schedule"] == {"name": "constant", "warmup_steps": 4}


def test_preview_direct_multi_step(client: TestClient) -> None:
    response = client.post(
        URL,
        json={
            "schedule": {"name": "multi_step", "milestones": [2, 3], "gamma": 0.5},
            "learning_rate": 0.4,
            "total_steps": 5,
        },
    )

    assert response.status_code == 200
    assert response.json()["learning_rates"] == close([0.4, 0.4, 0.2, 0.1, 0.1])


def test_preview_spec_derives_total_steps(client: TestClient) -> None:
    # Iris keeps 120 training samples: 2 updates of 60 per epoch, 6 in all.
    # Cosine after 1 warmup update: progress (step − 1)/4.
    spec = {
        "dataset": {"name": "iris"},
        "optimizer": {"name": "adam", "learning_rate": 0.2},
        "schedule": {"name": "cosine", "warmup_steps": 1},
        "batch_size": 60,
        "epochs": 3,
    }
    response = client.post(URL, json={"spec": spec})
    expected = [0.2] + [
        0.1 * (1 + math.cos(math.pi * (step - 1) / 4)) for step in range(1, 6)
    ]

    assert response.status_code == 200
    body = response.json()
    assert body["total_steps"] == 6
    assert body["learning_rate"] == 0.2
    assert body["learning_rates"] == close(expected)


def test_preview_default_spec(client: TestClient) -> None:
    # The default spec: digits, batch 32 (45 updates per epoch), 20 epochs.
    response = client.post(URL, json={"spec": {}})

    assert response.status_code == 200
    body = response.json()
    assert body["total_steps"] == 900
    assert body["learning_rates"] == [0.1] * 900


def test_preview_at_step_limit(client: TestClient) -> None:
    response = client.post(
        URL,
        json={
            "schedule": {"name": "exponential", "gamma": 0.9999},
            "learning_rate": 1.0,
            "total_steps": 100_000,
        },
    )

    assert response.status_code == 200
    rates = response.json()["learning_rates"]
    assert len(rates) == 100_000
    assert rates[-1] == pytest.approx(0.9999**99_999, rel=1e-9)


def test_preview_over_step_limit_names_fix(client: TestClient) -> None:
    response = client.post(
        URL,
        json={
            "schedule": {"name": "constant"},
            "learning_rate": 0.1,
            "total_steps": 100_001,
        },
    )

    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "invalid_spec"
    detail = error["details"][0]
    assert detail["field"] == "total_steps"
    assert detail["value"] == 100_001
    assert "use at most 100000" in detail["message"]


def test_preview_spec_over_step_limit_names_fix(client: TestClient) -> None:
    # Digits keeps 1437 training samples: 100 epochs of batch 1 is 143,700 updates.
    response = client.post(URL, json={"spec": {"batch_size": 1, "epochs": 100}})

    assert response.status_code == 422
    detail = error_of(response)["details"][0]
    assert detail["field"] == "spec.epochs"
    assert detail["value"] == 100
    assert "143700 updates" in detail["message"]
    assert "fewer epochs or a larger batch_size" in detail["message"]


def test_preview_both_forms_rejected(client: TestClient) -> None:
    response = client.post(URL, json={"spec": {}, "learning_rate": 0.3})

    assert response.status_code == 422
    detail = error_of(response)["details"][0]
    assert detail["field"] == "learning_rate"
    assert detail["value"] == 0.3
    assert "optimizer.learning_rate" in detail["message"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "schedule"),
        ({"schedule": {"name": "constant"}, "total_steps": 5}, "learning_rate"),
        ({"schedule": {"name": "constant"}, "learning_rate": 0.1}, "total_steps"),
    ],
    ids=["empty", "no-learning-rate", "no-total-steps"],
)
def test_preview_missing_field_named(
    client: TestClient, body: dict[str, Any], field: str
) -> None:
    response = client.post(URL, json=body)

    assert response.status_code == 422
    detail = error_of(response)["details"][0]
    assert detail["field"] == field
    assert "send spec, or all of schedule" in detail["message"]


@pytest.mark.parametrize(
    ("body", "field", "fragment"),
    [
        (
            {
                "schedule": {"name": "cosine", "min_factor": 2},
                "learning_rate": 0.1,
                "total_steps": 5,
            },
            "schedule.min_factor",
            "less than or equal to 1",
        ),
        (
            {"schedule": {"name": "linear"}, "learning_rate": 0, "total_steps": 5},
            "learning_rate",
            "greater than 0",
        ),
        (
            {"schedule": {"name": "constant"}, "learning_rate": 0.1, "total_steps": 0},
            "total_steps",
            "greater than or equal to 1",
        ),
        (
            {"spec": {"optimizer": {"name": "sgd", "learning_rate": -1}}},
            "spec.optimizer.learning_rate",
            "greater than 0",
        ),
        (
            {"schedule": {"name": "warm"}, "learning_rate": 0.1, "total_steps": 5},
            "schedule.name",
            "one_cycle",
        ),
        ({"steps": 5}, "steps", "unknown field"),
    ],
    ids=[
        "schedule-field",
        "learning-rate",
        "total-steps",
        "spec-field",
        "unknown-schedule",
        "unknown-field",
    ],
)
def test_preview_invalid_field_named(
    client: TestClient, body: dict[str, Any], field: str, fragment: str
) -> None:
    response = client.post(URL, json=body)

    assert response.status_code == 422
    fields = [detail["field"] for detail in error_of(response)["details"]]
    assert field in fields
    detail = error_of(response)["details"][fields.index(field)]
    assert fragment in detail["message"]


@pytest.mark.parametrize(
    ("schedule", "fragment"),
    [
        ({"name": "multi_step", "milestones": [4, 2]}, "sort them"),
        ({"name": "inverse_sqrt", "warmup_steps": 0}, "use 1 or more"),
        ({"name": "one_cycle", "warmup_steps": 3}, "set warmup_steps to 0"),
    ],
    ids=["milestones", "inverse-sqrt", "one-cycle"],
)
def test_preview_schedule_rule_explains_fix(
    client: TestClient, schedule: dict[str, Any], fragment: str
) -> None:
    body = {"schedule": schedule, "learning_rate": 0.1, "total_steps": 5}

    response = client.post(URL, json=body)

    assert response.status_code == 422
    assert fragment in error_of(response)["details"][0]["message"]


def test_service_preview_does_not_import_torch(repo_root: Path) -> None:
    code = (
        "import sys, service.app, service.routes.schedules; "
        "sys.exit('torch' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=repo_root, capture_output=True, timeout=120
    )

    assert result.returncode == 0, result.stderr.decode()
