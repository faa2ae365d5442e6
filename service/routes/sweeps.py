"""Sweeps: submit many experiments from one base spec, follow them, tabulate them."""

import csv
import io
import json
import logging
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response, status
from kombu.exceptions import OperationalError

from saddlepoint.ids import is_ulid
from saddlepoint.records import (
    CriticalPointAnalysis,
    ExperimentRecord,
    ExperimentStatus,
    Failure,
    FailureCode,
)
from saddlepoint.spec.data import DatasetNotResolved
from saddlepoint.spec.sweep import (
    InvalidSweep,
    PlannedChild,
    SweepSpec,
    SweepTooLarge,
    plan_sweep,
)
from saddlepoint.store import SweepRecord, SweepStore
from service.census import Census, census_point, render_svg
from service.deps import QueueDep, SettingsDep, StoreDep
from service.errors import (
    ErrorDetail,
    ErrorResponse,
    InvalidCursor,
    InvalidSpec,
    QueueUnavailable,
    ServiceError,
    json_safe,
)
from service.queue import TaskQueue
from service.routes.datasets import DatasetStoreDep, resolve_uploaded_dataset
from service.schemas import (
    SweepCreated,
    SweepList,
    SweepListItem,
    SweepPublic,
    SweepTable,
)

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/sweeps", tags=["sweeps"])

# An invalid sweep can have an error in every child. The response lists at most
# this many details, and its message states how many problems there were.
MAX_ERROR_DETAILS = 50


class SweepTooLargeError(ServiceError):
    status_code = 422
    code = "sweep_too_large"


class SweepNotFound(ServiceError):
    status_code = 404
    code = "sweep_not_found"

    def __init__(self, sweep_id: str):
        super().__init__(
            f"sweep {sweep_id!r} does not exist; list sweeps with GET /v1/sweeps"
        )


class SweepFinished(ServiceError):
    status_code = 409
    code = "sweep_finished"


def get_sweep_store(store: StoreDep) -> SweepStore:
    return SweepStore(store)


SweepStoreDep = Annotated[SweepStore, Depends(get_sweep_store)]
SweepId = Annotated[
    str, Path(description="Sweep id (a 26-character ULID).", max_length=64)
]
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "Unknown sweep."}
}


def load_sweep(sweeps: SweepStore, sweep_id: str) -> SweepRecord:
    sweep = sweeps.get(sweep_id) if is_ulid(sweep_id) else None
    if sweep is None:
        raise SweepNotFound(sweep_id)
    return sweep


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=SweepCreated,
    responses={
        422: {
            "model": ErrorResponse,
            "description": "The sweep, a path or a child spec is invalid.",
        },
        503: {
            "model": ErrorResponse,
            "description": "Redis is unavailable, or the queue accepted no child.",
        },
    },
)
def submit_sweep(
    sweep: SweepSpec,
    response: Response,
    sweeps: SweepStoreDep,
    queue: QueueDep,
    settings: SettingsDep,
    datasets: DatasetStoreDep,
) -> SweepCreated:
    """Expand a base spec into child experiments and queue every one of them.

    Name spec fields by dotted path (`optimizer.learning_rate`, `batch_size`).
    Send either `grid`, which maps each path to a list of values and runs
    their cartesian product (the last path varies fastest), or `overrides`, a
    list with one mapping of path to value per child. A path may name a whole
    object (`optimizer`) and also a field inside it (`optimizer.learning_rate`);
    the object is replaced first. To switch the optimizer or schedule to
    another name, override the whole object, or set only those fields in the
    base that both names share.

    Every child is validated as a full experiment spec before anything is
    stored, and one invalid child rejects the sweep with 422: each detail's
    `field` is `children.<index>.<spec field>`, and its message repeats the
    child's values. More children than `SADDLE_MAX_SWEEP_CHILDREN` are
    rejected with `sweep_too_large`.

    Each child is an ordinary experiment with `sweep_id` set. Children that
    the task queue does not accept are failed with code `enqueue_failed` and
    listed in `enqueue_failed`. If it accepts none, the response is 503.
    """
    sweep = sweep.model_copy(
        update={"base": resolve_uploaded_dataset(sweep.base, datasets)}
    )
    try:
        children = plan_sweep(sweep, settings.max_sweep_children, settings.limits)
    except DatasetNotResolved as error:
        detail = ErrorDetail(
            field="grid",
            message=(
                f"{error}; a sweep cannot vary dataset.id, so set the uploaded "
                "dataset in the base spec and sweep other fields"
            ),
        )
        raise InvalidSpec(str(detail.message), [detail]) from error
    except SweepTooLarge as error:
        raise SweepTooLargeError(str(error), _error_details(error)) from error
    except InvalidSweep as error:
        raise InvalidSpec(_summarize(error), _error_details(error)) from error

    record, experiments = sweeps.create(sweep, children)
    enqueue_failed = _enqueue_children(queue, sweeps, record.id, children, experiments)
    if len(enqueue_failed) == len(children):
        raise QueueUnavailable(
            f"the task queue is unavailable, so sweep {record.id} was stored with "
            f"all {len(children)} children failed as enqueue_failed; submit it "
            "again once GET /readyz reports ready"
        )

    logger.info(
        "sweep %s accepted: %d children, %d not queued",
        record.id,
        len(children),
        len(enqueue_failed),
    )
    public = SweepPublic.from_children(record, sweeps.children(record))
    response.headers["Location"] = public.links.self
    return SweepCreated(**dict(public), enqueue_failed=enqueue_failed)


def _enqueue_children(
    queue: TaskQueue,
    sweeps: SweepStore,
    sweep_id: str,
    children: Sequence[PlannedChild],
    experiments: Sequence[ExperimentRecord],
) -> list[str]:
    """Send each child to its queue; return the ids of those not queued.

    Sending already retries (the queue's publish retry policy), so after one
    failure the rest are failed without trying: each try would wait out the
    same retries against a broker that is down.
    """
    failed: list[str] = []
    cause: str | None = None
    for child, experiment in zip(children, experiments, strict=True):
        if cause is None:
            try:
                queue.send_experiment(experiment.id, child.spec)
                continue
            except OperationalError as error:
                cause = str(error)
                logger.error(
                    "sweep %s: child %d (experiment %s) could not be queued: %s",
                    sweep_id,
                    child.index,
                    experiment.id,
                    error,
                )
                message = f"the task queue did not accept the experiment: {cause}"
        else:
            message = (
                "not sent because the task queue did not accept an earlier child "
                f"of sweep {sweep_id}: {cause}"
            )
        sweeps.experiments.mark_failed(
            experiment.id, Failure(code=FailureCode.ENQUEUE_FAILED, message=message)
        )
        failed.append(experiment.id)
    return failed


def _error_details(error: InvalidSweep) -> list[ErrorDetail]:
    return [
        ErrorDetail(
            field=problem.field,
            value=json_safe(problem.value),
            message=problem.message,
        )
        for problem in error.problems[:MAX_ERROR_DETAILS]
    ]


def _summarize(error: InvalidSweep) -> str:
    first = error.problems[0]
    total = len(error.problems)
    invalid_children = len({p.child for p in error.problems if p.child is not None})
    message = f"invalid sweep: {first.field}: {first.message}"
    if total > 1:
        message += f" (and {total - 1} more problems)"
    if invalid_children > 1:
        message += f"; {invalid_children} children are invalid"
    if total > MAX_ERROR_DETAILS:
        message += f"; details lists the first {MAX_ERROR_DETAILS} problems"
    return message


@router.get("", response_model=SweepList, responses={400: {"model": ErrorResponse}})
def list_sweeps(
    sweeps: SweepStoreDep,
    limit: Annotated[int, Query(ge=1, le=100, description="Page size.")] = 20,
    cursor: Annotated[
        str | None, Query(description="``next_cursor`` of the previous page.")
    ] = None,
) -> SweepList:
    """List sweeps, newest first, one page at a time, with counts by status."""
    if cursor is not None and not is_ulid(cursor):
        raise InvalidCursor(
            f"cursor {cursor!r} is invalid; pass the next_cursor of a previous "
            "page, or omit it for the first page"
        )
    ids = sweeps.list_ids(limit=limit + 1, before=cursor)
    page, more = ids[:limit], len(ids) > limit
    items = [
        SweepListItem.from_record(sweep, sweeps.child_statuses(sweep.experiment_ids))
        for sweep in sweeps.get_many(page)
    ]
    return SweepList(items=items, next_cursor=page[-1] if more else None)


@router.get("/{sweep_id}", response_model=SweepPublic, responses=NOT_FOUND)
def get_sweep(sweeps: SweepStoreDep, sweep_id: SweepId) -> SweepPublic:
    """Return the sweep, its counts by status, and each child's values and status.

    The sweep is finished once every child has succeeded, failed or been
    cancelled.
    """
    sweep = load_sweep(sweeps, sweep_id)
    return SweepPublic.from_children(sweep, sweeps.children(sweep))


@router.get(
    "/{sweep_id}/table",
    response_model=SweepTable,
    responses={
        **NOT_FOUND,
        200: {
            "description": "The table as JSON, or as CSV with a header row.",
            "content": {"text/csv": {"schema": {"type": "string"}}},
        },
    },
)
def get_sweep_table(
    request: Request,
    sweeps: SweepStoreDep,
    sweep_id: SweepId,
    output_format: Annotated[
        Literal["json", "csv"] | None,
        Query(
            alias="format",
            description="json or csv; without it, Accept: text/csv selects CSV.",
        ),
    ] = None,
) -> Response | SweepTable:
    """Return one row per child: its varied values, status and outcomes.

    The outcomes are the final train and validation loss and accuracy, the
    mean time per update and per epoch, the updates per epoch, the gradient
    noise and the wall time. A child with an analysis adds its verdict,
    minimum ratio and gradient norm. A value that a child does not have yet,
    or never records, is null in JSON and an empty cell in CSV; floats are
    always finite.
    """
    sweep = load_sweep(sweeps, sweep_id)
    records = sweeps.children(sweep)
    analyses = [_analysis_of(sweeps, record) for record in records]
    table = SweepTable.build(sweep, records, analyses)
    accept = request.headers.get("accept", "")
    if output_format == "csv" or (output_format is None and "text/csv" in accept):
        return Response(
            content=render_csv(table),
            media_type="text/csv",
            headers={"Content-Disposition": f'inline; filename="sweep-{sweep.id}.csv"'},
        )
    return table


@router.get("/{sweep_id}/census", response_model=Census, responses=NOT_FOUND)
def get_sweep_census(sweeps: SweepStoreDep, sweep_id: SweepId) -> Census:
    """Return each finished child's critical point: loss, minimum ratio, verdict.

    Meant for sweeps of kind `census`, whose children search for a critical
    point after training, so the analysis describes a point whose gradient
    (nearly) vanishes. Children still running count as `pending`.
    """
    return _census(sweeps, load_sweep(sweeps, sweep_id))


@router.get(
    "/{sweep_id}/census.svg",
    response_class=Response,
    responses={
        **NOT_FOUND,
        200: {"content": {"image/svg+xml": {"schema": {"type": "string"}}}},
    },
)
def get_sweep_census_plot(sweeps: SweepStoreDep, sweep_id: SweepId) -> Response:
    """Plot the census as SVG: minimum ratio across, training loss up."""
    sweep = load_sweep(sweeps, sweep_id)
    title = f"census {sweep.name or sweep.id}: {len(sweep.children)} networks"
    return Response(
        content=render_svg(_census(sweeps, sweep), title), media_type="image/svg+xml"
    )


def _census(sweeps: SweepStore, sweep: SweepRecord) -> Census:
    records = sweeps.children(sweep)
    points, pending = [], 0
    for child, record in zip(sweep.children, records, strict=True):
        analysis = _analysis_of(sweeps, record)
        if record is None or analysis is None:
            pending += 1
            continue
        points.append(census_point(record, child.values, analysis))
    return Census(sweep_id=sweep.id, points=points, pending=pending)


def _analysis_of(
    sweeps: SweepStore, record: ExperimentRecord | None
) -> CriticalPointAnalysis | None:
    if record is None or record.status != ExperimentStatus.SUCCEEDED:
        return None
    if not record.spec.analysis.enabled:
        return None
    return sweeps.experiments.get_analysis(record.id)


def render_csv(table: SweepTable) -> str:
    """Render the table with a header row; null becomes an empty cell."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(table.columns)
    for row in table.rows:
        writer.writerow([_csv_cell(row.get(column)) for column in table.columns])
    return buffer.getvalue()


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


@router.post(
    "/{sweep_id}/cancel",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=SweepPublic,
    responses={
        **NOT_FOUND,
        409: {"model": ErrorResponse, "description": "Every child already ended."},
    },
)
def cancel_sweep(sweeps: SweepStoreDep, sweep_id: SweepId) -> SweepPublic:
    """Cancel every child that is still queued or running.

    Queued children become `cancelled` at once; running ones stop within one
    update. Children that already ended keep their status. Returns 409 when
    every child had already ended.
    """
    sweep = load_sweep(sweeps, sweep_id)
    requested = 0
    for experiment_id in sweep.experiment_ids:
        previous = sweeps.experiments.request_cancel(experiment_id)
        if previous is not None and not previous.is_terminal:
            requested += 1
    if requested == 0:
        raise SweepFinished(
            f"every child of sweep {sweep_id} already ended; only queued or "
            "running children can be cancelled"
        )
    logger.info("sweep %s: cancel requested for %d children", sweep_id, requested)
    return SweepPublic.from_children(sweep, sweeps.children(sweep))
