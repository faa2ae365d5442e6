"""Document the errors every route can return, all with the ErrorResponse body.

FastAPI documents a 422 with its own ``HTTPValidationError`` body on every
route with parameters, but the error handlers return ``ErrorResponse``.
It also cannot know the errors that come from the middleware (408, 413), from
unreadable bodies (400, 415) or from Redis (503). :func:`document_errors`
rewrites the generated document to match what the API sends.
"""

from collections.abc import Callable, Iterable
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from service.deps import get_queue, get_store

ERROR_SCHEMA = {"$ref": "#/components/schemas/ErrorResponse"}
# FastAPI's own validation error bodies, which the API never sends.
FASTAPI_ERROR_SCHEMAS = ("HTTPValidationError", "ValidationError")

INVALID_PARAMETER = "A path or query parameter is invalid; details name each one."
INVALID_JSON_BODY = "The body is invalid; details name each field and the fix."
JSON_BODY_ERRORS = {
    "400": (
        "The body is missing or cannot be parsed as JSON (code invalid_body): "
        "invalid syntax, not UTF-8, nested too deeply or a number with too "
        "many digits."
    ),
    "415": "The body is not sent with Content-Type: application/json.",
}
ANY_BODY_ERRORS = {
    "408": (
        "The body stopped arriving for longer than SADDLE_BODY_TIMEOUT_S "
        "(code body_timeout)."
    ),
    "413": (
        "The body is larger than SADDLE_MAX_BODY_BYTES, or SADDLE_MAX_UPLOAD_BYTES "
        "for uploads (code body_too_large)."
    ),
}
REDIS_UNAVAILABLE = (
    "Redis, which holds the store and the task queue, is unavailable "
    "(code store_unavailable or queue_unavailable)."
)


def document_errors(app: FastAPI, routers: Iterable[APIRouter]) -> None:
    """Make ``app.openapi()`` document each route's error responses.

    ``routers`` are the routers included in ``app``. Their routes show which
    operations read a body and which use Redis.
    """
    routes = [
        route
        for router in routers
        for route in router.routes
        if isinstance(route, APIRoute)
    ]
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        schema = generate()
        for route in routes:
            for method in route.methods or ():
                operation = schema["paths"][route.path].get(method.lower())
                if operation is not None:
                    _document_route_errors(route, operation)
        for name in FASTAPI_ERROR_SCHEMAS:
            schema.get("components", {}).get("schemas", {}).pop(name, None)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _document_route_errors(route: APIRoute, operation: dict[str, Any]) -> None:
    """Add the errors ``route`` can return to its operation, in place."""
    responses: dict[str, Any] = operation["responses"]
    if "422" in responses:
        json_body = route.body_field is not None
        description = INVALID_JSON_BODY if json_body else INVALID_PARAMETER
        _replace_fastapi_error(responses, "422", description)
    if "requestBody" in operation:
        if route.body_field is not None:
            _add_missing(responses, JSON_BODY_ERRORS)
            _add_missing(responses, {"422": INVALID_JSON_BODY})
        _add_missing(responses, ANY_BODY_ERRORS)
    if _depends_on(route.dependant, (get_store, get_queue)):
        _add_missing(responses, {"503": REDIS_UNAVAILABLE})
    operation["responses"] = dict(sorted(responses.items()))


def _replace_fastapi_error(
    responses: dict[str, Any], status: str, description: str
) -> None:
    content = responses[status].get("content", {}).get("application/json", {})
    ref = content.get("schema", {}).get("$ref", "")
    if ref.rsplit("/", 1)[-1] in FASTAPI_ERROR_SCHEMAS:
        responses[status] = _error_doc(description)


def _add_missing(responses: dict[str, Any], errors: dict[str, str]) -> None:
    for status, description in errors.items():
        responses.setdefault(status, _error_doc(description))


def _error_doc(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": ERROR_SCHEMA}},
    }


def _depends_on(dependant: Dependant, calls: tuple[Callable[..., Any], ...]) -> bool:
    """Return whether ``dependant`` uses any of ``calls``, directly or not."""
    return any(
        any(dependency.call is call for call in calls) or _depends_on(dependency, calls)
        for dependency in dependant.dependencies
    )
