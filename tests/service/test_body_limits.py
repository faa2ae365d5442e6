"""The body middleware: size limits per path, chunked bodies and stalled clients."""

import asyncio
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from starlette.types import Message, Receive, Scope, Send

from saddlepoint.settings import Settings
from service.app import create_app
from service.limits import BodyLimit, BodySizeLimit
from tests.support.processes import start_api

JSON = {"content-type": "application/json"}


@pytest.fixture
def client(redis_url: str, redis_client: redis.Redis) -> Iterator[TestClient]:
    settings = Settings(
        redis_url=redis_url, max_body_bytes=4096, max_upload_bytes=200_000
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def error_of(response: Any) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    return dict(body["error"])


def test_chunked_body_over_limit_is_413(client: TestClient) -> None:
    chunks = [b'{"name": "', b"x" * 3000, b"x" * 3000, b'"}']

    response = client.post("/v1/experiments", content=iter(chunks), headers=JSON)

    assert response.status_code == 413
    error = error_of(response)
    assert error["code"] == "body_too_large"
    assert "4096 bytes" in error["message"]
    assert "SADDLE_MAX_BODY_BYTES" in error["message"]


def test_chunked_body_under_limit_is_read(client: TestClient) -> None:
    chunks = [b'{"name": "', b"x" * 100, b'", "epochs": 2}']

    response = client.post("/v1/experiments", content=iter(chunks), headers=JSON)

    assert response.status_code == 202
    assert response.json()["status"] == "queued"


def test_upload_path_has_its_own_limit(client: TestClient) -> None:
    text = "a,label\n" + "1.0,0\n1.0,1\n" * 1000

    response = client.post(
        "/v1/datasets",
        params={"task": "classification", "label_column": "label"},
        content=text,
        headers={"content-type": "text/csv"},
    )

    assert len(text) > 4096
    assert response.status_code == 201, response.text


def test_chunked_upload_over_limit_is_413(client: TestClient) -> None:
    chunks = [b"a,label\n", *([b"1.0,0\n" * 10_000] * 4)]

    response = client.post(
        "/v1/datasets",
        params={"task": "classification", "label_column": "label"},
        content=iter(chunks),
        headers={"content-type": "text/csv"},
    )

    assert response.status_code == 413
    error = error_of(response)
    assert "200000 bytes" in error["message"]
    assert "SADDLE_MAX_UPLOAD_BYTES" in error["message"]


# The middleware alone, driven through ASGI messages


class Recorder:
    """An ASGI app that stores the body it reads and responds with 200."""

    def __init__(self) -> None:
        self.body = b""
        self.after_body: Message | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        self.body = message["body"]
        assert not message.get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        self.after_body = await receive()


def http_scope(path: str = "/v1/experiments") -> Scope:
    return {"type": "http", "method": "POST", "path": path, "headers": []}


def run_middleware(
    middleware: BodySizeLimit, messages: list[Message], stall: bool = False
) -> list[Message]:
    """Feed ``messages`` to the middleware; after them, block or disconnect."""
    sent: list[Message] = []
    pending = list(messages)

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        if stall:
            await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(asyncio.wait_for(middleware(http_scope(), receive, send), 10))
    return sent


def body_chunk(data: bytes, more: bool) -> Message:
    return {"type": "http.request", "body": data, "more_body": more}


def test_body_is_replayed_whole() -> None:
    app = Recorder()
    middleware = BodySizeLimit(app, max_bytes=100)

    sent = run_middleware(
        middleware,
        [body_chunk(b"ab", True), body_chunk(b"", True), body_chunk(b"c", False)],
    )

    assert app.body == b"abc"
    assert sent[0]["status"] == 200
    assert app.after_body == {"type": "http.disconnect"}


def test_stalled_body_is_408() -> None:
    app = Recorder()
    middleware = BodySizeLimit(app, max_bytes=100, body_timeout_s=0.05)

    sent = run_middleware(middleware, [body_chunk(b"0123456789", True)], stall=True)

    assert sent[0]["status"] == 408
    error = json.loads(sent[1]["body"])["error"]
    assert error["code"] == "body_timeout"
    assert "after 10 bytes" in error["message"]
    assert "SADDLE_BODY_TIMEOUT_S" in error["message"]
    assert app.body == b""


def test_disconnect_mid_body_sends_nothing() -> None:
    app = Recorder()
    middleware = BodySizeLimit(app, max_bytes=100)

    sent = run_middleware(middleware, [body_chunk(b"01234", True)])

    assert sent == []
    assert app.body == b""


def test_path_limit_counts_streamed_bytes() -> None:
    app = Recorder()
    middleware = BodySizeLimit(
        app, max_bytes=10, path_limits={"/v1/experiments": BodyLimit(5, "LIMIT")}
    )

    sent = run_middleware(
        middleware, [body_chunk(b"0123", True), body_chunk(b"45", False)]
    )

    assert sent[0]["status"] == 413
    assert "LIMIT" in json.loads(sent[1]["body"])["error"]["message"]


# A real server and a client that stops sending


def read_reply(sock: socket.socket) -> bytes:
    """Read until the server closes the connection or the JSON body ends."""
    reply = b""
    while not reply.endswith(b"}}"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        reply += chunk
    return reply


def test_stalled_body_over_socket_is_408(tmp_path: Path, redis_url: str) -> None:
    api, base_url = start_api(tmp_path, redis_url, SADDLE_BODY_TIMEOUT_S="0.5")
    try:
        port = int(base_url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(
                b"POST /v1/experiments HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
                b'{"name": "'
            )
            reply = read_reply(sock)
    finally:
        api.stop()

    assert reply.startswith(b"HTTP/1.1 408 "), reply[:200]
    assert b'"code":"body_timeout"' in reply
