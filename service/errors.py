"""Errors the API returns, and the handlers that render them.

Every error response has one shape, documented in the OpenAPI schema as
``ErrorResponse``::

    {"error": {"code": "experiment_not_found", "message": "...", "details": []}}

``code`` is stable and meant for programs; ``message`` is for people and states
what to do next. Validation errors list each problem in ``details`` with the
field path, the rejected value and the fix.

An error body repeats parts of the request, so it is bounded. Field paths,
echoed values and messages are cut to a maximum length, and at most
``MAX_DETAILS`` details are listed. Lone UTF-16 surrogates, which JSON accepts
as ``"\\ud800"`` but UTF-8 cannot encode, become backslash escapes.
"""

import json
import logging
import math
import re
import sys
from collections.abc import Sequence
from functools import cache
from typing import Annotated, Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, BeforeValidator, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.field_paths import field_path, union_tags

logger = logging.getLogger(__name__)

# Bounds on what an error body repeats from the request, in characters, and
# on the number of details it lists.
MAX_FIELD_CHARS = 200
MAX_VALUE_CHARS = 200
MAX_DETAIL_MESSAGE_CHARS = 500
MAX_MESSAGE_CHARS = 1000
MAX_DETAILS = 50
# Longest rejected value quoted inside a message, ahead of the fix.
MAX_QUOTED_VALUE_CHARS = 60


def clean_text(text: str) -> str:
    """Replace lone UTF-16 surrogates in ``text`` with backslash escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def clip_text(text: str, max_chars: int) -> str:
    """Cut ``text`` to ``max_chars`` characters, marking a cut with "..."."""
    return text if len(text) <= max_chars else text[:max_chars] + "..."


def clean_json(value: Any) -> Any:
    """Apply :func:`clean_text` to every string and key inside ``value``."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_text(str(key)): clean_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [clean_json(item) for item in value]
    return value


def json_safe(value: Any) -> Any:
    """Return ``value`` with non-finite floats as strings and long values cut.

    Rejected input is echoed back in error details; NaN and Infinity are not
    JSON, and a huge value would make the error larger than the request.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, dict | list | tuple):
        text = json.dumps(value, default=str)
        if len(text) > MAX_VALUE_CHARS:
            return clip_text(text, MAX_VALUE_CHARS)
        if isinstance(value, dict):
            return {str(key): json_safe(item) for key, item in value.items()}
        return [json_safe(item) for item in value]
    if isinstance(value, str):
        return clip_text(value, MAX_VALUE_CHARS)
    return value


def _bounded_text(max_chars: int) -> BeforeValidator:
    """Return a validator that escapes lone surrogates and cuts to ``max_chars``."""

    def bound(value: Any) -> Any:
        if isinstance(value, str):
            return clip_text(clean_text(value), max_chars)
        return value

    return BeforeValidator(bound)


def _echoed_value(value: Any) -> Any:
    return clean_json(json_safe(value))


class ErrorDetail(BaseModel):
    """One problem: the field path, the rejected value and the fix."""

    field: Annotated[str, _bounded_text(MAX_FIELD_CHARS)]
    value: Annotated[Any, BeforeValidator(_echoed_value)] = None
    message: Annotated[str, _bounded_text(MAX_DETAIL_MESSAGE_CHARS)]


class ErrorBody(BaseModel):
    code: str
    message: Annotated[str, _bounded_text(MAX_MESSAGE_CHARS)]
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


class InvalidBody(ServiceError):
    """The request body is missing or is not a JSON document."""

    status_code = 400
    code = "invalid_body"


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


class BodyTimeout(ServiceError):
    """The client stopped sending the request body."""

    status_code = 408
    code = "body_timeout"


class ExperimentFinished(ServiceError):
    status_code = 409
    code = "experiment_finished"


class BodyTooLarge(ServiceError):
    status_code = 413
    code = "body_too_large"


class UnsupportedMediaType(ServiceError):
    """The body is not in a format the route reads (JSON, for spec routes)."""

    status_code = 415
    code = "unsupported_media_type"


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
    """Render the error body; more than ``MAX_DETAILS`` details are cut."""
    listed = list(details)
    if len(listed) > MAX_DETAILS:
        message = (
            f"{message}; details lists the first {MAX_DETAILS} of "
            f"{len(listed)} problems"
        )
        listed = listed[:MAX_DETAILS]
    body = ErrorResponse(error=ErrorBody(code=code, message=message, details=listed))
    return JSONResponse(status_code=status_code, content=body.model_dump(mode="json"))


# Validation errors: field paths and messages


def describe_validation_error(error: dict[str, Any]) -> ErrorDetail:
    """Turn one pydantic error into a detail that names the field and the fix."""
    kind = str(error.get("type", ""))
    field = clip_text(field_path(tuple(error.get("loc", ())), kind), MAX_FIELD_CHARS)
    context = error.get("ctx") or {}
    value = error.get("input")
    message = str(error.get("msg", "invalid value"))
    if kind == "extra_forbidden":
        message = f"unknown field {field!r}; remove it or check its spelling"
        location = [str(item) for item in error.get("loc", ())]
        if len(location) >= 3 and location[-2] in union_tags(location[-3]):
            message = (
                f"unknown field {field!r}: {location[-3]} {location[-2]!r} has no "
                f"{location[-1]!r}; remove it, or choose a {location[-3]} that has it"
            )
    elif kind == "missing":
        message = f"field {field!r} is required"
    elif kind == "union_tag_not_found":
        tag_field = str(context.get("discriminator", "")).strip("'")
        tags = union_tags(field.rsplit(".", 1)[-1])
        field = f"{field}.{tag_field}" if field else tag_field
        names = ", ".join(tags) if tags else "the documented names"
        message = f"field {field!r} is required; use one of {names}"
        value = None
    elif kind == "union_tag_invalid":
        tag_field = str(context.get("discriminator", "")).strip("'")
        expected = str(context.get("expected_tags", "")).replace("'", "")
        field = f"{field}.{tag_field}" if field else tag_field
        value = context.get("tag")
        quoted_tag = clip_text(str(value), MAX_QUOTED_VALUE_CHARS)
        message = f"unknown name {quoted_tag!r}; use one of {expected}"
    elif kind == "finite_number":
        message = "must be a finite number; NaN and Infinity are rejected"
    elif kind in ("model_attributes_type", "model_type", "dict_type"):
        message = f"{message}; send a JSON object"
    elif kind == "string_unicode":
        message = (
            "a key or string contains a lone UTF-16 surrogate (such as \\ud800), "
            "which is not valid Unicode; send valid UTF-8 text"
        )
    return ErrorDetail(field=field, value=value, message=message)


def summarize(
    details: Sequence[ErrorDetail],
    subject: str = "experiment spec",
    total: int | None = None,
) -> str:
    """Return the message of a validation error: the first problem and a count.

    ``subject`` names what was validated ("sweep spec"). ``total`` is the
    number of problems when ``details`` lists only the first of them.
    """
    count = len(details) if total is None else total
    first = details[0]
    where = f"{first.field}: " if first.field else ""
    message = f"invalid {subject}: {where}{first.message}"
    if count > 1:
        message += f" (and {count - 1} more problems)"
    if count > len(details):
        message += f"; details lists the first {len(details)}"
    return message


# Request bodies that are missing, unreadable or not JSON


def _body_model(request: Request) -> type[BaseModel] | None:
    """Return the model of the route's JSON body, if the route has one."""
    route = request.scope.get("route")
    field_info = getattr(getattr(route, "body_field", None), "field_info", None)
    annotation = getattr(field_info, "annotation", None)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _body_subject(model: type[BaseModel] | None) -> str:
    """Name a body model in words: SweepSpec becomes "sweep spec"."""
    if model is None:
        return "request body"
    return re.sub(r"(?<!^)(?=[A-Z])", " ", model.__name__).lower()


@cache
def _accepts_empty_object(model: type[BaseModel]) -> bool:
    try:
        model.model_validate({})
    except ValidationError:
        return False
    return True


def _unreadable_body_error(
    request: Request, exc: RequestValidationError
) -> ServiceError | None:
    """Return the error for a body that is missing, not JSON, or not valid JSON."""
    errors = exc.errors()
    for error in errors:
        if error.get("type") == "json_invalid":
            reason = (error.get("ctx") or {}).get("error", "")
            position = error["loc"][-1] if len(error["loc"]) > 1 else "?"
            message = (
                f"the request body is not valid JSON ({reason} at character "
                f"{position}); send a JSON object"
            )
            return InvalidBody(message, [ErrorDetail(field="body", message=message)])

    if isinstance(exc.body, bytes | bytearray):
        content_type = request.headers.get("content-type")
        sent = f"Content-Type {content_type!r}" if content_type else "no Content-Type"
        message = (
            f"the request body was sent with {sent}; send a JSON object with "
            "Content-Type: application/json"
        )
        return UnsupportedMediaType(message)

    body_missing = any(
        error.get("type") == "missing" and tuple(error.get("loc", ())) == ("body",)
        for error in errors
    )
    if body_missing:
        model = _body_model(request)
        message = "the request body is missing; send a JSON object"
        if model is not None and _accepts_empty_object(model):
            message += " ({} for all defaults)"
        return InvalidBody(message, [ErrorDetail(field="body", message=message)])
    return None


def describe_body_parse_error(cause: BaseException) -> str | None:
    """Say why a body that is not a readable JSON document failed to parse.

    ``cause`` is what ``json.loads`` raised outside its own syntax errors.
    Returns None for any other exception.
    """
    if isinstance(cause, UnicodeDecodeError):
        reason = f"it is not valid UTF-8 (byte {cause.start})"
    elif isinstance(cause, RecursionError):
        reason = "its arrays or objects are nested too deeply"
    elif isinstance(cause, ValueError) and "digits" in str(cause):
        reason = f"a number in it has more than {sys.get_int_max_str_digits()} digits"
    else:
        return None
    return (
        f"the request body cannot be parsed: {reason}; send a UTF-8 encoded JSON "
        "object (nesting depth and the digits of a number are limited)"
    )


# Handlers


async def _handle_service_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    if exc.status_code >= 500:
        logger.warning("%s %s failed: %s", request.method, request.url.path, exc)
    return error_response(exc.status_code, exc.code, exc.message, exc.details)


async def _handle_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    in_body = any(error.get("loc", ("",))[0] == "body" for error in errors)
    if in_body:
        unreadable = _unreadable_body_error(request, exc)
        if unreadable is not None:
            return await _handle_service_error(request, unreadable)

    details = [describe_validation_error(error) for error in errors[:MAX_DETAILS]]
    if not details:
        details = [ErrorDetail(field="body", message="request is invalid")]
    if in_body:
        subject = _body_subject(_body_model(request))
        message = summarize(details, subject, total=len(errors))
        return error_response(422, InvalidSpec.code, message, details)
    message = summarize(details, "request", total=len(errors))
    return error_response(422, "invalid_request", message, details)


async def _handle_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    # FastAPI turns every exception of json.loads other than a syntax error
    # into a plain 400 "There was an error parsing the body", raised from it.
    if exc.status_code == 400 and exc.__cause__ is not None:
        reason = describe_body_parse_error(exc.__cause__)
        if reason is not None:
            detail = ErrorDetail(field="body", message=reason)
            return error_response(400, InvalidBody.code, reason, [detail])
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
