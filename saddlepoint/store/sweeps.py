"""Sweeps and the experiments they create, in Redis."""

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from pydantic import Field

from saddlepoint.ids import new_ulid
from saddlepoint.records import ExperimentRecord, ExperimentStatus, Record
from saddlepoint.spec import ExperimentSpec
from saddlepoint.spec.sweep import PlannedChild, SweepSpec
from saddlepoint.store.experiments import (
    ExperimentStore,
    add_experiment,
    experiment_key,
    new_experiment_record,
    utc_now,
)
from saddlepoint.store.keys import PREFIX

SWEEPS_KEY = PREFIX + "sweeps"


def sweep_key(sweep_id: str) -> str:
    return f"{PREFIX}sweep:{sweep_id}"


class SweepChild(Record):
    """One child of a sweep: its experiment and its value at each varied path."""

    index: int
    experiment_id: str
    values: dict[str, Any] = Field(
        description="Value of each varied path; null where the child has no such field."
    )


class SweepRecord(Record):
    """A sweep as stored; the children's status lives in their experiments."""

    id: str
    name: str | None
    kind: str = "grid"
    created_at: datetime
    base: ExperimentSpec
    grid: dict[str, list[Any]] | None = None
    overrides: list[dict[str, Any]] | None = None
    paths: list[str] = Field(description="Varied paths, in the order of the request.")
    children: list[SweepChild]

    @property
    def experiment_ids(self) -> list[str]:
        return [child.experiment_id for child in self.children]


class SweepStore:
    """Sweeps next to the experiments of an :class:`ExperimentStore`.

    A sweep is written once, with its children, and never changes afterwards.
    """

    def __init__(self, experiments: ExperimentStore) -> None:
        self.experiments = experiments
        self.client = experiments.client

    def create(
        self, sweep: SweepSpec, children: Sequence[PlannedChild]
    ) -> tuple[SweepRecord, list[ExperimentRecord]]:
        """Store the sweep and one queued experiment per child in one transaction.

        Either the sweep and all its experiments exist afterwards, or none of
        them does.
        """
        sweep_id = new_ulid()
        records = [new_experiment_record(child.spec, sweep_id) for child in children]
        sweep_record = SweepRecord(
            id=sweep_id,
            name=sweep.name,
            kind=sweep.kind,
            created_at=utc_now(),
            base=sweep.base,
            grid=sweep.grid,
            overrides=sweep.overrides,
            paths=sweep.varied_paths,
            children=[
                SweepChild(
                    index=child.index, experiment_id=record.id, values=child.values
                )
                for child, record in zip(children, records, strict=True)
            ],
        )
        with self.client.pipeline(transaction=True) as pipe:
            for record in records:
                add_experiment(pipe, record)
            pipe.set(sweep_key(sweep_id), sweep_record.model_dump_json())
            pipe.zadd(SWEEPS_KEY, {sweep_id: 0})
            pipe.execute()
        return sweep_record, records

    def get(self, sweep_id: str) -> SweepRecord | None:
        payload = cast(str | None, self.client.get(sweep_key(sweep_id)))
        if payload is None:
            return None
        return SweepRecord.model_validate_json(payload)

    def list_ids(self, limit: int, before: str | None = None) -> list[str]:
        """Return up to ``limit`` sweep ids, newest first, older than ``before``."""
        upper = f"({before}" if before else "+"
        return cast(
            list[str],
            self.client.zrevrangebylex(SWEEPS_KEY, upper, "-", start=0, num=limit),
        )

    def get_many(self, sweep_ids: Sequence[str]) -> list[SweepRecord]:
        payloads = cast(
            list[str | None],
            self.client.mget([sweep_key(sweep_id) for sweep_id in sweep_ids])
            if sweep_ids
            else [],
        )
        return [
            SweepRecord.model_validate_json(payload)
            for payload in payloads
            if payload is not None
        ]

    def children(self, sweep: SweepRecord) -> list[ExperimentRecord | None]:
        """Return each child's experiment record in child order; None if missing."""
        found = {
            record.id: record
            for record in self.experiments.get_many(sweep.experiment_ids)
        }
        return [found.get(experiment_id) for experiment_id in sweep.experiment_ids]

    def child_statuses(
        self, experiment_ids: Sequence[str]
    ) -> list[ExperimentStatus | None]:
        """Return the status of each experiment, reading only that field."""
        with self.client.pipeline(transaction=False) as pipe:
            for experiment_id in experiment_ids:
                pipe.hget(experiment_key(experiment_id), "status")
            statuses = cast(list[str | None], pipe.execute())
        return [ExperimentStatus(status) if status else None for status in statuses]
