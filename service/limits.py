"""ASGI middleware that reads request bodies under a size limit and a timeout."""

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import BodyTimeout, BodyTooLarge, ServiceError, error_response

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BodyLimit:
    """Largest body a path accepts, and the setting that changes it."""

    max_bytes: int
    setting: str


class BodySizeLimit:
    """Read each request body in full before the app runs, within limits.

    ``path_limits`` maps exact request paths (such as ``/v1/datasets``) to
    their own limits; every other path gets ``max_bytes``, which the setting
    SADDLE_MAX_BODY_BYTES sets. A declared Content-Length above the limit is
    rejected with 413 before any of the body is read. A body without one
    (chunked) is counted as it arrives and rejected with 413 as soon as it
    passes the limit, so at most the limit is ever buffered. When no part of
    the body arrives for ``body_timeout_s`` seconds, the request is rejected
    with 408 (setting SADDLE_BODY_TIMEOUT_S).

    Reading here, rather than while the app parses, lets these errors reach
    the client as the documented error body: FastAPI turns an exception
    raised while it reads the body into a generic 400.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        path_limits: Mapping[str, BodyLimit] | None = None,
        body_timeout_s: float = 10.0,
    ) -> None:
        self.app = app
        self.default = BodyLimit(max_bytes, "SADDLE_MAX_BODY_BYTES")
        self.path_limits = dict(path_limits or {})
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        limit = self.path_limits.get(scope["path"].rstrip("/"), self.default)
        try:
            self._check_declared_length(scope, limit)
            body = await self._read_body(receive, limit)
        except ServiceError as error:
            logger.info(
                "%s %s rejected with %d: %s",
                scope["method"],
                scope["path"],
                error.status_code,
                error.message,
            )
            response = error_response(error.status_code, error.code, error.message)
            await response(scope, receive, send)
            return
        except _ClientDisconnected:
            logger.info(
                "%s %s: the client disconnected before the body ended",
                scope["method"],
                scope["path"],
            )
            return

        replayed = False

        async def replay_receive() -> Message:
            # The app gets the whole body at once, then whatever the server
            # sends next (a disconnect).
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay_receive, send)

    def _check_declared_length(self, scope: Scope, limit: BodyLimit) -> None:
        headers = dict(scope.get("headers", []))
        declared = headers.get(b"content-length")
        if declared and declared.isdigit() and int(declared) > limit.max_bytes:
            raise _too_large(limit)

    async def _read_body(self, receive: Receive, limit: BodyLimit) -> bytes:
        chunks: list[bytes] = []
        received = 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), self.body_timeout_s)
            except TimeoutError:
                raise BodyTimeout(
                    f"no part of the request body arrived for {self.body_timeout_s:g} "
                    f"s after {received} bytes; send the whole body without pausing "
                    "(the limit is the setting SADDLE_BODY_TIMEOUT_S)"
                ) from None
            if message["type"] == "http.disconnect":
                raise _ClientDisconnected
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > limit.max_bytes:
                raise _too_large(limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _too_large(limit: BodyLimit) -> BodyTooLarge:
    return BodyTooLarge(
        f"request body is larger than {limit.max_bytes} bytes; send a smaller body "
        f"(the limit is the setting {limit.setting})"
    )


class _ClientDisconnected(Exception):
    """The client closed the connection before its body ended."""
