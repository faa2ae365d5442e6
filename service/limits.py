"""ASGI middleware that rejects request bodies above a size limit."""

from collections.abc import Mapping
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import BodyTooLarge, error_response


@dataclass(frozen=True)
class BodyLimit:
    """Largest body a path accepts, and the setting that changes it."""

    max_bytes: int
    setting: str


class BodySizeLimit:
    """Reject with 413 a body that exceeds its path's limit, declared or streamed.

    ``path_limits`` maps exact request paths (such as ``/v1/datasets``) to
    their own limits; every other path gets ``max_bytes``, which the setting
    SADDLE_MAX_BODY_BYTES sets. A declared Content-Length is checked before
    the body is read. A chunked body is counted as it arrives, so the app
    never buffers more than the limit.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        path_limits: Mapping[str, BodyLimit] | None = None,
    ) -> None:
        self.app = app
        self.default = BodyLimit(max_bytes, "SADDLE_MAX_BODY_BYTES")
        self.path_limits = dict(path_limits or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        limit = self.path_limits.get(scope["path"].rstrip("/"), self.default)
        headers = dict(scope.get("headers", []))
        declared = headers.get(b"content-length")
        if declared and declared.isdigit() and int(declared) > limit.max_bytes:
            await self._reject(limit, scope, receive, send)
            return

        received = 0
        response_started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit.max_bytes:
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if not response_started:
                await self._reject(limit, scope, receive, send)

    async def _reject(
        self, limit: BodyLimit, scope: Scope, receive: Receive, send: Send
    ) -> None:
        response = error_response(
            413,
            BodyTooLarge.code,
            f"request body is larger than {limit.max_bytes} bytes; send a smaller "
            f"body (the limit is the setting {limit.setting})",
        )
        await response(scope, receive, send)


class _TooLarge(Exception):
    pass
