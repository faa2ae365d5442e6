"""Response bodies of the API, beyond the records the store returns."""

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from saddlepoint.records import (
    CriticalPointAnalysis,
    ExperimentRecord,
    ExperimentStatus,
    FailureCode,
    MetricRecord,
    finite_or_none,
)
from saddlepoint.spec import ExperimentSpec
from saddlepoint.spec.initial import SavedPoint
from saddlepoint.store import SweepRecord


class ExperimentLinks(BaseModel):
    self: str
    metrics: str
    analysis: str
    cancel: str

    @classmethod
    def for_id(cls, experiment_id: str) -> "ExperimentLinks":
        base = f"/v1/experiments/{experiment_id}"
        return cls(
            self=base,
            metrics=f"{base}/metrics",
            analysis=f"{base}/analysis",
            cancel=f"{base}/cancel",
        )


class ContinueRequest(BaseModel):
    """Saved point to continue an experiment from, and the epochs to train."""

    model_config = ConfigDict(extra="forbid")

    point: SavedPoint = SavedPoint.ESCAPE
    epochs: int = Field(ge=1, le=100_000)
    name: str | None = Field(None, max_length=200)


class ExperimentCreated(BaseModel):
    id: str
    status: ExperimentStatus
    links: ExperimentLinks
    warnings: list[str] = Field(
        default_factory=list,
        description=(
            "Problems that do not stop the experiment but may keep it queued, "
            "such as no live worker consuming its device's queue."
        ),
    )


class ExperimentPublic(ExperimentRecord):
    links: ExperimentLinks

    @classmethod
    def from_record(cls, record: ExperimentRecord) -> "ExperimentPublic":
        return cls(**dict(record), links=ExperimentLinks.for_id(record.id))


class ExperimentList(BaseModel):
    items: list[ExperimentPublic]
    next_cursor: str | None = Field(
        description="Pass as ``cursor`` for the next page; null on the last page."
    )


class MetricsPage(BaseModel):
    status: ExperimentStatus = Field(
        description=(
            "Status read before the records. When it is terminal and fewer than "
            "``limit`` records came back, no more records will appear."
        )
    )
    records: list[MetricRecord]
    next_cursor: int = Field(description="Pass as ``after`` in the next request.")


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    redis: str
    workers: list[dict[str, object]]
    queues: dict[str, int] = Field(
        description=(
            "Live workers that consume each queue: any (device auto), cpu and "
            "cuda. Experiments wait in a queue with 0 until a worker for it starts."
        )
    )
    problems: list[str]


class SweepLinks(BaseModel):
    self: str
    table: str
    cancel: str

    @classmethod
    def for_id(cls, sweep_id: str) -> "SweepLinks":
        base = f"/v1/sweeps/{sweep_id}"
        return cls(self=base, table=f"{base}/table", cancel=f"{base}/cancel")


class SweepCounts(BaseModel):
    """Number of children in each status."""

    queued: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    total: int = 0

    @classmethod
    def count(cls, statuses: Iterable[ExperimentStatus | None]) -> "SweepCounts":
        counts = cls()
        for status in statuses:
            counts.total += 1
            if status is not None:
                name = status.value
                setattr(counts, name, getattr(counts, name) + 1)
        return counts

    @property
    def finished(self) -> bool:
        return self.succeeded + self.failed + self.cancelled == self.total


class SweepChildPublic(BaseModel):
    index: int = Field(description="Position in the grid's product or override list.")
    experiment_id: str
    values: dict[str, Any] = Field(
        description="Value of each varied path; null where the child has no such field."
    )
    status: ExperimentStatus | None = Field(
        description="Status of the experiment; null if its record is missing."
    )
    failure_code: FailureCode | None = None


class SweepListItem(BaseModel):
    id: str
    name: str | None
    created_at: datetime
    paths: list[str] = Field(description="Varied paths, in the order of the request.")
    counts: SweepCounts
    finished: bool = Field(description="True once every child has ended.")
    links: SweepLinks

    @classmethod
    def from_record(
        cls, sweep: SweepRecord, statuses: Sequence[ExperimentStatus | None]
    ) -> "SweepListItem":
        counts = SweepCounts.count(statuses)
        return cls(
            id=sweep.id,
            name=sweep.name,
            created_at=sweep.created_at,
            paths=sweep.paths,
            counts=counts,
            finished=counts.finished,
            links=SweepLinks.for_id(sweep.id),
        )


class SweepPublic(SweepListItem):
    base: ExperimentSpec
    grid: dict[str, list[Any]] | None
    overrides: list[dict[str, Any]] | None
    children: list[SweepChildPublic]

    @classmethod
    def from_children(
        cls, sweep: SweepRecord, records: Sequence[ExperimentRecord | None]
    ) -> "SweepPublic":
        children = [
            SweepChildPublic(
                index=child.index,
                experiment_id=child.experiment_id,
                values=child.values,
                status=record.status if record else None,
                failure_code=record.failure.code if record and record.failure else None,
            )
            for child, record in zip(sweep.children, records, strict=True)
        ]
        item = SweepListItem.from_record(sweep, [child.status for child in children])
        return cls(
            **dict(item),
            base=sweep.base,
            grid=sweep.grid,
            overrides=sweep.overrides,
            children=children,
        )


class SweepCreated(SweepPublic):
    enqueue_failed: list[str] = Field(
        description=(
            "Ids of children that the task queue did not accept. They are failed "
            "with code enqueue_failed; submit them again once GET /readyz "
            "reports ready."
        )
    )


class SweepList(BaseModel):
    items: list[SweepListItem]
    next_cursor: str | None = Field(
        description="Pass as ``cursor`` for the next page; null on the last page."
    )


# Columns of the sweep table after the varied paths, each read from the child's
# TrainingSummary or analysis by this name. A name that the record lacks (an
# older summary, or no analysis) gives null.
SUMMARY_COLUMNS = (
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "mean_step_time_ms",
    "mean_epoch_time_s",
    "updates_per_epoch",
    "gradient_noise",
    "wall_time_s",
)
ANALYSIS_COLUMNS = ("verdict", "minimum_ratio", "gradient_norm")
STATUS_COLUMNS = ("status", "failure_code")
ID_COLUMNS = ("index", "experiment_id")

TableCell = float | int | str | bool | None


class SweepTable(BaseModel):
    sweep_id: str
    columns: list[str] = Field(
        description=(
            "Column names in order: index, experiment_id, the varied paths, "
            "status, failure_code, then the outcomes."
        )
    )
    rows: list[dict[str, Any]] = Field(
        description=(
            "One row per child, in child order, keyed by column. Outcomes are "
            "null while a child runs, when it failed before the value existed, "
            "or when its analysis is disabled."
        )
    )

    @classmethod
    def build(
        cls,
        sweep: SweepRecord,
        records: Sequence[ExperimentRecord | None],
        analyses: Sequence[CriticalPointAnalysis | None],
    ) -> "SweepTable":
        columns = [
            *ID_COLUMNS,
            *sweep.paths,
            *STATUS_COLUMNS,
            *SUMMARY_COLUMNS,
            *ANALYSIS_COLUMNS,
        ]
        rows = []
        for child, record, analysis in zip(
            sweep.children, records, analyses, strict=True
        ):
            row: dict[str, Any] = {
                "index": child.index,
                "experiment_id": child.experiment_id,
            }
            row.update({path: child.values.get(path) for path in sweep.paths})
            summary = record.summary if record else None
            failure = record.failure if record else None
            row["status"] = record.status.value if record else None
            row["failure_code"] = failure.code.value if failure else None
            for name in SUMMARY_COLUMNS:
                row[name] = table_cell(getattr(summary, name, None))
            for name in ANALYSIS_COLUMNS:
                row[name] = table_cell(getattr(analysis, name, None))
            rows.append(row)
        return cls(sweep_id=sweep.id, columns=columns, rows=rows)


def table_cell(value: object) -> TableCell:
    """Return a value as a JSON scalar; NaN and infinities become null."""
    if value is None or isinstance(value, bool | int | str):
        return value.value if isinstance(value, StrEnum) else value
    if isinstance(value, float):
        return finite_or_none(value)
    return json.dumps(value, separators=(",", ":"), default=str)
