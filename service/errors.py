"""Errors the API returns, and the handlers that render them.

Every error response has one shape, documented in the OpenAPI schema as
``ErrorResponse``::

    {"error": {"code": "experiment_not_found", "message": "...", "details": []}}

``code`` is stable and meant for programs; ``message`` is for people and says
what to do next. Validation errors list each problem in ``details`` with the
field path, the rejected value and the fix.
"""

import json
import logging
import math
from collections.abc import Sequence
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger(__name__)

# Union tags that pydantic puts into error locations; users never write them.
_UNION_TAGS = {
    "optimizer": {"sgd", "adam"},
    "schedule": {"constant", "cosine", "step"},
}
# Member names that pydantic adds for plain unions such as ``int | None``.
_UNION_MEMBERS = {"int", "float", "str", "bool", "none"}
_MAX_VALUE_CHARS = 200


class ErrorDetail(BaseModel):
    field: str
    value: Any = None
    message: str


class ErrorBody(BaseModel):
    code: str
    message: str
    details: list[ErrorDetail] = []


class ErrorResponse(BaseModel):
    error: ErrorBody


class ServiceError(Exception):
    """Base of every error the API reports on purpose."""

    status_code = 400
    code = "bad_request"

    def __init__(self, message: str, details: list[ErrorDetail] | None = None):
        super().__init__(message)
        self.message = message
        self.details = details or []


class InvalidSpec(ServiceError):
    status_code = 422
    code = "invalid_spec"


class InvalidCursor(ServiceError):
    status_code = 400
    code = "invalid_cursor"


class ExperimentNotFound(ServiceError):
    status_code = 404
    code = "experiment_not_found"

    def __init__(self, experiment_id: str):
        super().__init__(
            f"experiment {experiment_id!r} does not exist; list experiments with "
            "GET /v1/experiments"
        )


class AnalysisNotAvailable(ServiceError):
    status_code = 404
    code = "analysis_not_available"


class ExperimentFinished(ServiceError):
    status_code = 409
    code = "experiment_finished"


class BodyTooLarge(ServiceError):
    status_code = 413
    code = "body_too_large"


class StoreUnavailable(ServiceError):
    status_code = 503
    code = "store_unavailable"


class QueueUnavailable(ServiceError):
    status_code = 503
    code = "queue_unavailable"


def error_response(
    status_code: int,
    code: str,
    message: str,
    details: Sequence[ErrorDetail] = (),
) -> JSONResponse:
    body = ErrorResponse(
        error=ErrorBody(code=code, message=message, details=list(details))
    )
    return JSONResponse(status_code=status_code, content=body.model_dump(mode="json"))


def json_safe(value: Any) -> Any:
    """Return ``value`` with non-finite floats as strings and long values cut.

    Rejected input is echoed back in error details; NaN and Infinity are not
    JSON, and a huge value would make the error larger than the request.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict | list | tuple):
        text = json.dumps(value, default=str)
        if len(text) > _MAX_VALUE_CHARS:
            return text[:_MAX_VALUE_CHARS] + "..."
        if isinstance(value, dict):
            return {str(key): json_safe(item) for key, item in value.items()}
        return [json_safe(item) for item in value]
    if isinstance(value, str | bytes) and len(value) > _MAX_VALUE_CHARS:
        return str(value[:_MAX_VALUE_CHARS]) + "..."
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value


def field_path(location: tuple[Any, ...]) -> str:
    """Join an error location into a dotted path without union tags."""
    parts: list[str] = []
    for item in location:
        if item in ("body", "query", "path") and not parts:
            continue
        if parts and str(item) in _UNION_TAGS.get(parts[-1], set()):
            continue
        if str(item) in _UNION_MEMBERS or str(item).startswith("literal["):
            continue
        parts.append(str(item))
    return ".".join(parts)


def describe_validation_error(error: dict[str, Any]) -> ErrorDetail:
    """Turn one pydantic error into a detail that names the field and the fix."""
    field = field_path(tuple(error.get("loc", ())))
    kind = error.get("type", "")
    message = str(error.get("msg", "invalid value"))
    if kind == "extra_forbidden":
        message = f"unknown field {field!r}; remove it or check its spelling"
    elif kind == "missing":
        message = f"field {field!r} is required"
    elif kind == "json_invalid":
        reason = error.get("ctx", {}).get("error", "")
        field = "body"
        message = f"request body is not valid JSON ({reason}); send a JSON object"
    elif kind == "finite_number":
        message = "must be a finite number; NaN and Infinity are rejected"
    elif kind == "model_attributes_type" or kind == "dict_type":
        message = f"{message}; send a JSON object"
    elif kind == "union_tag_invalid":
        expected = error.get("ctx", {}).get("expected_tags", "")
        message = f"unknown name; use one of {expected}"
    return ErrorDetail(
        field=field, value=json_safe(error.get("input")), message=message
    )


def summarize(details: list[ErrorDetail]) -> str:
    first = details[0]
    where = f"{first.field}: " if first.field else ""
    more = f" (and {len(details) - 1} more problems)" if len(details) > 1 else ""
    return f"invalid experiment spec: {where}{first.message}{more}"


async def _handle_service_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    if exc.status_code >= 500:
        logger.warning("%s %s failed: %s", request.method, request.url.path, exc)
    return error_response(exc.status_code, exc.code, exc.message, exc.details)


async def _handle_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = [describe_validation_error(error) for error in exc.errors()]
    if not details:
        details = [ErrorDetail(field="body", message="request is invalid")]
    in_body = any(error.get("loc", ("",))[0] == "body" for error in exc.errors())
    if in_body:
        return error_response(422, InvalidSpec.code, summarize(details), details)
    message = f"invalid request: {details[0].field}: {details[0].message}"
    return error_response(422, "invalid_request", message, details)


async def _handle_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    code = codes.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail))


async def _handle_redis_error(request: Request, exc: Exception) -> JSONResponse:
    logger.warning(
        "Redis unavailable on %s %s: %s", request.method, request.url.path, exc
    )
    return error_response(
        503,
        StoreUnavailable.code,
        "the experiment store (Redis) is unavailable; retry shortly, and check "
        "GET /readyz",
    )


async def _handle_unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(
        500, "internal_error", "internal error; the server log has the details"
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _handle_service_error)
    app.add_exception_handler(RequestValidationError, _handle_validation_error)
    app.add_exception_handler(StarletteHTTPException, _handle_http_error)
    app.add_exception_handler(redis.RedisError, _handle_redis_error)
    app.add_exception_handler(Exception, _handle_unexpected_error)
