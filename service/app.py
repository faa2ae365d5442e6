"""FastAPI application factory."""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis
from fastapi import FastAPI

from saddlepoint import __version__
from saddlepoint.settings import Settings, get_settings
from saddlepoint.store import ExperimentStore
from service.errors import install_error_handlers
from service.limits import BodyLimit, BodySizeLimit
from service.openapi_errors import document_errors
from service.queue import TaskQueue
from service.routes import datasets, experiments, health, schedules, sweeps

logger = logging.getLogger(__name__)

DESCRIPTION = """\
Train PyTorch models on real data through a queue of workers, follow their
metrics, and find out whether training stopped at a local minimum, a saddle
point, or not at a critical point at all.

Errors share one body: `{"error": {"code", "message", "details"}}`.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the API with its Redis store and task queue."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = redis.Redis.from_url(
            settings.redis_url,
            decode_responses=True,
            socket_timeout=5,
            socket_connect_timeout=5,
            health_check_interval=30,
        )
        app.state.settings = settings
        app.state.store = ExperimentStore(client)
        app.state.queue = TaskQueue(settings)
        logger.info("API started; Redis at %s", _redact(settings.redis_url))
        yield
        app.state.queue.close()
        client.close()

    app = FastAPI(
        title="saddlepoint",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.max_body_bytes,
        path_limits={
            "/v1/datasets": BodyLimit(
                settings.max_upload_bytes, "SADDLE_MAX_UPLOAD_BYTES"
            )
        },
        body_timeout_s=settings.body_timeout_s,
    )
    routers = [
        experiments.router,
        sweeps.router,
        schedules.router,
        datasets.router,
        health.router,
    ]
    for router in routers:
        app.include_router(router)
    document_errors(app, routers)
    return app


def _redact(url: str) -> str:
    """Hide the password of a Redis URL for logging."""
    scheme, _, rest = url.partition("://")
    if "@" not in rest:
        return url
    return f"{scheme}://***@{rest.split('@', 1)[1]}"
