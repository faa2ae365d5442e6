"""The committed OpenAPI document matches the app."""

import json
from pathlib import Path
from typing import Any

from service.openapi import render_openapi


def test_openapi_document_is_current(repo_root: Path) -> None:
    committed = (repo_root / "openapi" / "openapi.json").read_text()
    assert committed == render_openapi(), (
        "openapi/openapi.json is stale; regenerate it with `make openapi`"
    )


def operations() -> list[tuple[str, str, dict[str, Any]]]:
    document = json.loads(render_openapi())
    return [
        (path, method, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]


def schema_name(response: dict[str, Any]) -> str:
    schema = response.get("content", {}).get("application/json", {}).get("schema")
    return str((schema or {}).get("$ref", "")).rsplit("/", 1)[-1]


def test_every_error_uses_error_response() -> None:
    for path, method, operation in operations():
        for status, response in operation["responses"].items():
            if int(status) < 400 or (path, status) == ("/readyz", "503"):
                continue
            where = f"{method.upper()} {path} {status}"
            assert schema_name(response) == "ErrorResponse", where


def test_fastapi_validation_schemas_are_gone() -> None:
    document = json.loads(render_openapi())

    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    assert "ValidationError" not in schemas


def test_redis_routes_document_503() -> None:
    for path, method, operation in operations():
        if path.startswith("/v1/") and path != "/v1/schedules/preview":
            assert "503" in operation["responses"], f"{method.upper()} {path}"


def test_body_routes_document_body_errors() -> None:
    body_operations = [
        (path, method, operation)
        for path, method, operation in operations()
        if "requestBody" in operation
    ]

    assert len(body_operations) == 5
    for path, method, operation in body_operations:
        for status in ("408", "413", "422"):
            assert status in operation["responses"], f"{method} {path} {status}"
        json_body = "application/json" in operation["requestBody"]["content"]
        if json_body:
            assert "400" in operation["responses"], f"{method} {path}"
            assert "415" in operation["responses"], f"{method} {path}"
