"""Response bodies of the API, beyond the records the store returns."""

from pydantic import BaseModel, Field

from saddlepoint.records import ExperimentRecord, ExperimentStatus, MetricRecord


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


class ExperimentCreated(BaseModel):
    id: str
    status: ExperimentStatus
    links: ExperimentLinks


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
    problems: list[str]
