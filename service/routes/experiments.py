"""Experiments: submit, inspect, list, follow metrics, read the analysis, cancel."""

import logging
from typing import Annotated, Any

import redis
from fastapi import APIRouter, Path, Query, Response, status
from kombu.exceptions import OperationalError
from pydantic import ValidationError

from saddlepoint.ids import is_ulid
from saddlepoint.queues import QUEUE_BY_DEVICE
from saddlepoint.records import (
    CriticalPointAnalysis,
    ExperimentRecord,
    Failure,
    FailureCode,
)
from saddlepoint.settings import Settings
from saddlepoint.spec import ExperimentSpec, check_limits
from saddlepoint.store import ExperimentStore
from saddlepoint.store.analyses import AnalysisStore
from service.deps import QueueDep, SettingsDep, StoreDep
from service.errors import (
    AnalysisNotAvailable,
    ErrorDetail,
    ErrorResponse,
    ExperimentFinished,
    ExperimentNotFound,
    InvalidCursor,
    InvalidSpec,
    QueueUnavailable,
    describe_validation_error,
    summarize,
)
from service.queue import TaskQueue
from service.routes.datasets import DatasetStoreDep, resolve_uploaded_dataset
from service.routes.health import count_queue_workers
from service.schemas import (
    ContinueRequest,
    ExperimentCreated,
    ExperimentLinks,
    ExperimentList,
    ExperimentPublic,
    MetricsPage,
)

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/experiments", tags=["experiments"])

ExperimentId = Annotated[
    str, Path(description="Experiment id (a 26-character ULID).", max_length=64)
]
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "Unknown experiment."}
}
# Largest integer that a JSON client using doubles reads exactly.
MAX_JSON_SAFE_INTEGER = 2**53


def load_experiment(store: StoreDep, experiment_id: str) -> ExperimentRecord:
    record = store.get(experiment_id) if is_ulid(experiment_id) else None
    if record is None:
        raise ExperimentNotFound(experiment_id)
    return record


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ExperimentCreated,
    responses={
        422: {"model": ErrorResponse, "description": "The spec is invalid."},
        503: {"model": ErrorResponse, "description": "Redis is unavailable."},
    },
)
def submit_experiment(
    spec: ExperimentSpec,
    response: Response,
    store: StoreDep,
    queue: QueueDep,
    settings: SettingsDep,
    datasets: DatasetStoreDep,
) -> ExperimentCreated:
    """Validate a spec, store it as a queued experiment and send it to a worker.

    Returns at once with the id; follow the experiment with the links. Every
    field has a default, so `{}` trains the default MLP on digits. `warnings`
    lists problems that do not reject the spec, such as no live worker on
    the queue of its `device` (the experiment then waits until one starts).
    """
    spec = resolve_uploaded_dataset(spec, datasets)
    check_initial_parameters(spec, store)
    return create_and_queue(spec, response, store, queue, settings)


def check_initial_parameters(spec: ExperimentSpec, store: ExperimentStore) -> None:
    """Raise InvalidSpec unless the saved parameters the spec names exist."""
    initial = spec.initial_parameters
    if initial is None:
        return
    saved = AnalysisStore(store.client).load_parameters(
        initial.experiment_id, initial.point.value
    )
    if saved is not None and saved.size == spec.parameter_count:
        return
    if saved is None:
        message = (
            f"experiment {initial.experiment_id} saved no {initial.point.value} "
            "parameters; pick a succeeded experiment whose analysis ran (escape "
            "needs a step that lowered the loss, critical needs "
            "analysis.critical_search)"
        )
    else:
        message = (
            f"the saved parameters have {saved.size} entries but this spec's "
            f"model has {spec.parameter_count}; use the same model and dataset "
            "as the saving experiment"
        )
    detail = ErrorDetail(
        field="initial_parameters", value=initial.model_dump(), message=message
    )
    raise InvalidSpec(summarize([detail]), [detail])


def create_and_queue(
    spec: ExperimentSpec,
    response: Response,
    store: ExperimentStore,
    queue: TaskQueue,
    settings: Settings,
) -> ExperimentCreated:
    """Check the deployment limits, store the experiment and queue its task."""
    violations = check_limits(spec, settings.limits)
    if violations:
        details = [
            ErrorDetail(field=item.field, value=item.value, message=item.message)
            for item in violations
        ]
        raise InvalidSpec(summarize(details), details)

    record = store.create(spec)
    try:
        queue.send_experiment(record.id, spec)
    except OperationalError as error:
        # The record exists, so mark it failed rather than leave it queued forever.
        store.mark_failed(
            record.id,
            Failure(
                code=FailureCode.ENQUEUE_FAILED,
                message=f"the task queue did not accept the experiment: {error}",
            ),
        )
        logger.error("experiment %s could not be queued: %s", record.id, error)
        raise QueueUnavailable(
            f"the task queue is unavailable, so experiment {record.id} was marked "
            "failed; submit it again once GET /readyz reports ready"
        ) from error

    logger.info("experiment %s accepted", record.id)
    links = ExperimentLinks.for_id(record.id)
    response.headers["Location"] = links.self
    return ExperimentCreated(
        id=record.id,
        status=record.status,
        links=links,
        warnings=check_queue_consumers(spec, store),
    )


def check_queue_consumers(spec: ExperimentSpec, store: ExperimentStore) -> list[str]:
    """Return a warning unless a live worker consumes the spec's device queue."""
    queue_name = QUEUE_BY_DEVICE[spec.device]
    try:
        workers = store.live_workers()
    except redis.RedisError as error:
        # The experiment is already stored and queued, so report, not fail.
        logger.warning("cannot read worker heartbeats: %s", error)
        return [f"cannot check for live workers ({error}); see GET /readyz"]
    if count_queue_workers(workers).get(queue_name, 0) > 0:
        return []
    device_queue = "cuda" if queue_name == "cuda" else "cpu"
    return [
        f"no live worker consumes the {queue_name!r} queue that device "
        f"{spec.device.value!r} sends to, so the experiment stays queued until "
        "one starts; start one with `celery -A worker.celery_app worker "
        f"--queues any,{device_queue}`, and see the queues in GET /readyz"
    ]


@router.get(
    "", response_model=ExperimentList, responses={400: {"model": ErrorResponse}}
)
def list_experiments(
    store: StoreDep,
    limit: Annotated[int, Query(ge=1, le=100, description="Page size.")] = 20,
    cursor: Annotated[
        str | None, Query(description="``next_cursor`` of the previous page.")
    ] = None,
) -> ExperimentList:
    """List experiments, newest first, one page at a time."""
    if cursor is not None and not is_ulid(cursor):
        raise InvalidCursor(
            f"cursor {cursor!r} is invalid; pass the next_cursor of a previous "
            "page, or omit it for the first page"
        )
    ids = store.list_ids(limit=limit + 1, before=cursor)
    page, more = ids[:limit], len(ids) > limit
    records = store.get_many(page)
    return ExperimentList(
        items=[ExperimentPublic.from_record(record) for record in records],
        next_cursor=page[-1] if more else None,
    )


@router.get("/{experiment_id}", response_model=ExperimentPublic, responses=NOT_FOUND)
def get_experiment(store: StoreDep, experiment_id: ExperimentId) -> ExperimentPublic:
    """Return status, spec, timestamps, progress, latest metrics and results."""
    return ExperimentPublic.from_record(load_experiment(store, experiment_id))


@router.get("/{experiment_id}/metrics", response_model=MetricsPage, responses=NOT_FOUND)
def read_metrics(
    store: StoreDep,
    experiment_id: ExperimentId,
    after: Annotated[
        int,
        Query(
            ge=-1,
            le=MAX_JSON_SAFE_INTEGER,
            description="``next_cursor`` of the previous page; -1 at start.",
        ),
    ] = -1,
    limit: Annotated[int, Query(ge=1, le=10_000, description="Page size.")] = 1000,
) -> MetricsPage:
    """Return step and epoch records after the cursor, oldest first.

    Poll with the returned ``next_cursor`` to see every record exactly once.
    """
    record = load_experiment(store, experiment_id)
    page = store.read_metrics(experiment_id, after=after, limit=limit)
    return MetricsPage(
        status=record.status, records=page.records, next_cursor=page.next_cursor
    )


@router.get(
    "/{experiment_id}/analysis",
    response_model=CriticalPointAnalysis,
    responses=NOT_FOUND,
)
def get_analysis(store: StoreDep, experiment_id: ExperimentId) -> CriticalPointAnalysis:
    """Return the critical-point analysis of the parameters where training stopped.

    Available once the experiment has succeeded with the analysis enabled.
    """
    record = load_experiment(store, experiment_id)
    analysis = store.get_analysis(experiment_id)
    if analysis is not None:
        return analysis
    if not record.spec.analysis.enabled:
        reason = "its spec has analysis.enabled set to false"
    elif record.status.is_terminal:
        reason = f"it ended as {record.status.value} before the analysis"
    else:
        reason = f"it is {record.status.value}; poll again after it succeeds"
    raise AnalysisNotAvailable(f"experiment {experiment_id} has no analysis: {reason}")


@router.get(
    "/{experiment_id}/analyses",
    response_model=list[CriticalPointAnalysis],
    responses=NOT_FOUND,
)
def list_analyses(
    store: StoreDep, experiment_id: ExperimentId
) -> list[CriticalPointAnalysis]:
    """List every analysis of the experiment in the order they ran.

    Besides the final one these include analyses during training
    (`analysis.periodic`) and the one after a critical-point search
    (`analysis.critical_search`); `trigger` names the kind of each.
    """
    load_experiment(store, experiment_id)
    return AnalysisStore(store.client).list(experiment_id)


@router.post(
    "/{experiment_id}/continue",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ExperimentCreated,
    responses={
        **NOT_FOUND,
        422: {"model": ErrorResponse, "description": "Nothing saved to continue."},
    },
)
def continue_experiment(
    store: StoreDep,
    queue: QueueDep,
    settings: SettingsDep,
    experiment_id: ExperimentId,
    request: ContinueRequest,
    response: Response,
) -> ExperimentCreated:
    """Train on from a point this experiment saved, as a new linked experiment.

    `point` is `final` (where training stopped), `escape` (the best point of
    the saddle escape) or `critical` (the end of the critical-point search).
    The new spec is this experiment's with `epochs` and `initial_parameters`
    replaced, and with the escape's own continuation turned off.
    """
    parent = load_experiment(store, experiment_id)
    fields = parent.spec.model_dump(mode="json")
    fields["epochs"] = request.epochs
    fields["name"] = request.name or (
        f"continuation of {experiment_id} from its {request.point.value} point"
    )
    fields["initial_parameters"] = {
        "experiment_id": experiment_id,
        "point": request.point.value,
    }
    fields["analysis"]["escape"]["continue_epochs"] = 0
    try:
        spec = ExperimentSpec.model_validate(fields)
    except ValidationError as error:
        details = [describe_validation_error(dict(item)) for item in error.errors()]
        raise InvalidSpec(summarize(details), details) from error
    check_initial_parameters(spec, store)
    return create_and_queue(spec, response, store, queue, settings)


@router.post(
    "/{experiment_id}/cancel",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ExperimentPublic,
    responses={
        **NOT_FOUND,
        409: {"model": ErrorResponse, "description": "Already finished."},
    },
)
def cancel_experiment(store: StoreDep, experiment_id: ExperimentId) -> ExperimentPublic:
    """Cancel an experiment.

    A queued experiment becomes ``cancelled`` at once and never starts. A
    running one stops within one update; until then it shows
    ``cancel_requested``. A finished one is rejected with 409.
    """
    previous = store.request_cancel(experiment_id) if is_ulid(experiment_id) else None
    if previous is None:
        raise ExperimentNotFound(experiment_id)
    if previous.is_terminal:
        raise ExperimentFinished(
            f"experiment {experiment_id} already ended as {previous.value}; "
            "only queued or running experiments can be cancelled"
        )
    logger.info("experiment %s cancel requested while %s", experiment_id, previous)
    record = load_experiment(store, experiment_id)
    return ExperimentPublic.from_record(record)
