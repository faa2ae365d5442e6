"""Liveness and readiness probes."""

import redis
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from service.deps import StoreDep
from service.schemas import Health, Readiness

router = APIRouter(tags=["health"])


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
    """Report whether Redis answers and at least one worker sent a heartbeat."""
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
        problems=problems,
    )
    return JSONResponse(
        status_code=200 if not problems else 503, content=body.model_dump(mode="json")
    )
