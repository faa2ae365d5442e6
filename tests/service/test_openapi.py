"""The committed OpenAPI document matches the app."""

from pathlib import Path

from service.openapi import render_openapi


def test_openapi_document_is_current(repo_root: Path) -> None:
    committed = (repo_root / "openapi" / "openapi.json").read_text()
    assert committed == render_openapi(), (
        "openapi/openapi.json is stale; regenerate it with `make openapi`"
    )
