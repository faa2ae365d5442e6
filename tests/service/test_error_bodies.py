"""Error bodies for hostile or malformed requests: escaped, bounded, helpful."""

import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from saddlepoint.settings import Settings
from service.app import create_app
from service.errors import MAX_DETAILS, MAX_FIELD_CHARS

JSON = {"content-type": "application/json"}
UNKNOWN_ID = "01ARZ3NDEKTSV4RRFFQ69G5FAV"


@pytest.fixture
def client(redis_url: str, redis_client: redis.Redis) -> Iterator[TestClient]:
    # The default body limit (1 MB), so oversized fields reach validation.
    with TestClient(create_app(Settings(redis_url=redis_url))) as test_client:
        yield test_client


def error_of(response: Any) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    return dict(body["error"])


def post_raw(client: TestClient, url: str, body: str | bytes) -> Any:
    return client.post(url, content=body, headers=JSON)


# Lone UTF-16 surrogates


@pytest.mark.parametrize(
    "body",
    [
        r'{"name": "\ud800"}',
        r'{"\ud800": 1}',
        r'{"optimizer": {"name": "sgd", "\udfff": 1}}',
        r'{"model": {"activation": "\ud800"}}',
    ],
    ids=["value", "key", "nested-key", "enum-value"],
)
def test_lone_surrogate_is_escaped_in_error(client: TestClient, body: str) -> None:
    response = post_raw(client, "/v1/experiments", body)

    assert response.status_code == 422
    # The body must be strict UTF-8 JSON, which cannot contain a lone surrogate.
    text = response.content.decode("utf-8")
    error = json.loads(text)["error"]
    assert error["code"] == "invalid_spec"
    assert "lone UTF-16 surrogate" in error["message"]
    # The surrogate comes back as the six characters of its escape.
    assert "\\ud" in str(error["details"][0]["value"])


def test_lone_surrogate_in_sweep_is_escaped(client: TestClient) -> None:
    response = post_raw(client, "/v1/sweeps", r'{"grid": {"\ud800": [1]}}')

    assert response.status_code == 422
    assert "\\ud800" in response.content.decode("utf-8")


# Size of error bodies


def test_huge_unknown_key_is_cut(client: TestClient) -> None:
    key = "k" * 900_000
    response = client.post("/v1/experiments", json={key: 1})

    assert response.status_code == 422
    assert len(response.content) < 5_000
    detail = error_of(response)["details"][0]
    assert len(detail["field"]) <= MAX_FIELD_CHARS + 3
    assert detail["field"].endswith("...")
    assert "unknown field" in detail["message"]


def test_many_unknown_keys_are_capped(client: TestClient) -> None:
    body = {f"k{index}": 0 for index in range(60_000)}
    response = client.post("/v1/experiments", json=body)

    assert response.status_code == 422
    assert len(response.content) < 50_000
    error = error_of(response)
    assert len(error["details"]) == MAX_DETAILS
    assert "59999 more problems" in error["message"]
    assert f"first {MAX_DETAILS}" in error["message"]


def test_long_unknown_tag_is_cut(client: TestClient) -> None:
    response = client.post(
        "/v1/experiments", json={"optimizer": {"name": "x" * 500_000}}
    )

    assert response.status_code == 422
    assert len(response.content) < 5_000
    detail = error_of(response)["details"][0]
    assert detail["field"] == "optimizer.name"
    assert "adamw" in detail["message"]


# Bodies that are not a JSON document


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b'{"name": "\xff\xfe"}', "not valid UTF-8"),
        ('{"name": ' + "[" * 5000 + "]" * 5000 + "}", "nested too deeply"),
        ('{"seed": ' + "7" * 5000 + "}", "digits"),
        ("{not json", "not valid JSON"),
    ],
    ids=["not-utf8", "deep-nesting", "long-integer", "syntax"],
)
def test_unparseable_body_is_invalid_body(
    client: TestClient, body: str | bytes, fragment: str
) -> None:
    response = post_raw(client, "/v1/experiments", body)

    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "invalid_body"
    assert fragment in error["message"]
    assert "JSON object" in error["message"]
    assert error["details"][0]["field"] == "body"


def test_empty_body_says_send_object(client: TestClient) -> None:
    response = client.post("/v1/experiments", headers=JSON)

    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "invalid_body"
    assert "request body is missing" in error["message"]
    assert "({} for all defaults)" in error["message"]
    assert error["details"][0]["field"] == "body"


def test_empty_sweep_body_has_no_default_hint(client: TestClient) -> None:
    response = client.post("/v1/sweeps", headers=JSON)

    assert response.status_code == 400
    message = error_of(response)["message"]
    assert "request body is missing" in message
    assert "defaults" not in message


@pytest.mark.parametrize(
    ("headers", "content", "sent"),
    [
        ({"content-type": "text/plain"}, b"{}", "'text/plain'"),
        (
            {"content-type": "application/x-www-form-urlencoded"},
            b"epochs=2",
            "'application/x-www-form-urlencoded'",
        ),
        ({}, b"{}", "no Content-Type"),
    ],
    ids=["text", "form", "none"],
)
def test_non_json_content_type_is_415(
    client: TestClient, headers: dict[str, str], content: bytes, sent: str
) -> None:
    response = client.post("/v1/experiments", content=content, headers=headers)

    assert response.status_code == 415
    error = error_of(response)
    assert error["code"] == "unsupported_media_type"
    assert sent in error["message"]
    assert "Content-Type: application/json" in error["message"]


# Union tags in field paths and messages


@pytest.mark.parametrize(
    ("spec", "field", "names"),
    [
        ({"optimizer": {}}, "optimizer.name", ["sgd", "adagrad", "rmsprop", "adamw"]),
        ({"schedule": {}}, "schedule.name", ["multi_step", "one_cycle", "linear"]),
        ({"optimizer": {"name": 3}}, "optimizer.name", ["adam"]),
        ({"dataset": {"name": "mnist"}}, "dataset.name", ["digits", "sinc"]),
        ({"model": {"kind": "cnn"}}, "model.kind", ["mlp", "layers"]),
        (
            {"model": {"kind": "layers", "layers": [{}]}},
            "model.layers.0.kind",
            ["linear", "conv2d"],
        ),
    ],
    ids=["optimizer", "schedule", "tag-not-string", "dataset", "model", "layer"],
)
def test_missing_or_unknown_tag_lists_names(
    client: TestClient, spec: dict[str, Any], field: str, names: list[str]
) -> None:
    response = client.post("/v1/experiments", json=spec)

    assert response.status_code == 422
    detail = error_of(response)["details"][0]
    assert detail["field"] == field
    for name in names:
        assert name in detail["message"]
    assert "discriminator" not in detail["message"]


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"optimizer": {"name": "rmsprop", "eps": -1}}, "optimizer.eps"),
        ({"optimizer": {"name": "adamw", "weight_decay": 2}}, "optimizer.weight_decay"),
        ({"optimizer": {"name": "adagrad", "momentum": 0.9}}, "optimizer.momentum"),
        ({"schedule": {"name": "one_cycle", "max_lr": 1}}, "schedule.max_lr"),
        ({"schedule": {"name": "exponential", "gamma": 0}}, "schedule.gamma"),
        (
            {"schedule": {"name": "inverse_sqrt", "warmup_steps": -1}},
            "schedule.warmup_steps",
        ),
        (
            {
                "model": {
                    "kind": "layers",
                    "layers": [{"kind": "conv2d", "out_channels": 2, "kernel_size": 0}],
                }
            },
            "model.layers.0.kernel_size",
        ),
    ],
    ids=[
        "rmsprop",
        "adamw",
        "adagrad-unknown",
        "one-cycle",
        "exponential",
        "inverse-sqrt",
        "layer",
    ],
)
def test_union_member_field_has_no_tag(
    client: TestClient, spec: dict[str, Any], field: str
) -> None:
    response = client.post("/v1/experiments", json=spec)

    assert response.status_code == 422
    fields = [detail["field"] for detail in error_of(response)["details"]]
    assert field in fields


@pytest.mark.parametrize(
    ("url", "body", "prefix"),
    [
        ("/v1/experiments", {"epochs": 0}, "invalid experiment spec: epochs"),
        ("/v1/sweeps", {"grid": 5}, "invalid sweep spec: grid"),
        ("/v1/schedules/preview", {"steps": 5}, "invalid schedule preview request"),
        (
            f"/v1/experiments/{UNKNOWN_ID}/continue",
            {"epochs": 0},
            "invalid continue request: epochs",
        ),
    ],
    ids=["experiment", "sweep", "preview", "continue"],
)
def test_validation_message_names_body(
    client: TestClient, url: str, body: dict[str, Any], prefix: str
) -> None:
    response = client.post(url, json=body)

    assert response.status_code == 422
    assert error_of(response)["message"].startswith(prefix)


def test_query_error_is_invalid_request(client: TestClient) -> None:
    response = client.get("/v1/experiments", params={"limit": 0})

    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "invalid_request"
    assert error["message"].startswith("invalid request: limit")


def test_field_of_other_union_member_named(client: TestClient) -> None:
    response = client.post(
        "/v1/experiments", json={"optimizer": {"name": "adam", "momentum": 0.9}}
    )
    assert response.status_code == 422
    detail = response.json()["error"]["details"][0]
    assert detail["field"] == "optimizer.momentum"
    assert "optimizer 'adam' has no 'momentum'" in detail["message"]
