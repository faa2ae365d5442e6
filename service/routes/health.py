"""Liveness and readiness probes."""

from collections.abc import Iterable, Mapping

import redis
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from saddlepoint.queues import QUEUE_BY_DEVICE
from service.deps import StoreDep
from service.schemas import Health, Readiness

router = APIRouter(tags=["health"])


def count_queue_workers(workers: Iterable[Mapping[str, object]]) -> dict[str, int]:
    """Count the live workers that consume each device queue.

    ``workers`` are heartbeat payloads, whose ``queues`` lists the queue names
    a worker consumes. A payload without that list counts for no queue.
    """
    counts = dict.fromkeys(QUEUE_BY_DEVICE.values(), 0)
    for worker in workers:
        queues = worker.get("queues")
        if not isinstance(queues, list):
            continue
        for name in set(queues):
            if isinstance(name, str):
                counts[name] = counts.get(name, 0) + 1
    return counts


@router.get("/healthz", response_model=Health)
def check_health() -> Health:
    """Report that the API process is up. Touches nothing else."""
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Not ready."}},
)
def check_readiness(store: StoreDep) -> JSONResponse:
    """Report whether Redis responds and at least one worker sent a heartbeat.

    `queues` counts the live workers on each device queue. A queue with 0
    does not make the API unready, because a deployment without GPUs has no
    `cuda` worker, but experiments sent to it wait until one starts.
    """
    problems: list[str] = []
    workers: list[dict[str, object]] = []
    redis_state = "ok"
    try:
        store.client.ping()
        workers = store.live_workers()
    except redis.RedisError as error:
        redis_state = "unavailable"
        problems.append(f"Redis does not answer: {error}")
    if redis_state == "ok" and not workers:
        problems.append(
            "no worker is alive; start one with `celery -A worker.celery_app worker`"
        )
    body = Readiness(
        status="ready" if not problems else "not_ready",
        redis=redis_state,
        workers=workers,
        queues=count_queue_workers(workers),
        problems=problems,
    )
    return JSONResponse(
        status_code=200 if not problems else 503, content=body.model_dump(mode="json")
    )
