"""Experiments, their metric records and analyses in Redis."""

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeAlias, cast

import redis
from pydantic import TypeAdapter

from saddlepoint.ids import new_ulid
from saddlepoint.records import (
    CriticalPointAnalysis,
    ExperimentRecord,
    ExperimentStatus,
    Failure,
    MetricRecord,
    Progress,
    StepMetrics,
    TrainingSummary,
)
from saddlepoint.spec import ExperimentSpec
from saddlepoint.store.keys import PREFIX

EXPERIMENTS_KEY = PREFIX + "experiments"
RUNNING_KEY = PREFIX + "running"
CANCEL_CHANNEL = PREFIX + "cancel"
WORKER_KEY_PATTERN = PREFIX + "worker:*"

# Field name to value of a hash. Keys are typed Any because redis-py's hset
# annotation has an invariant key union that no dict[str, ...] satisfies.
HashMapping: TypeAlias = dict[Any, str]

METRIC_ADAPTER: TypeAdapter[MetricRecord] = TypeAdapter(MetricRecord)

# Sets fields only when the current status is one of ARGV[1] (comma-separated).
# Returns {status before, 1 if applied else 0}; status before is "" when the
# experiment does not exist. ARGV[2] names a field to increment by one, or "".
_TRANSITION_SCRIPT = """
local current = redis.call('HGET', KEYS[1], 'status')
if not current then return {'', 0} end
for allowed in string.gmatch(ARGV[1], '[^,]+') do
  if allowed == current then
    if ARGV[2] ~= '' then redis.call('HINCRBY', KEYS[1], ARGV[2], 1) end
    if #ARGV > 2 then redis.call('HSET', KEYS[1], unpack(ARGV, 3)) end
    return {current, 1}
  end
end
return {current, 0}
"""

# Claims an experiment for a worker: a queued one, or a running one whose lease
# has expired because its worker died. KEYS[1] is the record, KEYS[2] the set
# of running ids. ARGV: now (s), lease expiry (s), worker, started_at.
# Returns {status before, 1 if claimed else 0}.
_CLAIM_SCRIPT = """
local current = redis.call('HGET', KEYS[1], 'status')
if not current then return {'', 0} end
local lease = tonumber(redis.call('HGET', KEYS[1], 'lease_expires_at') or '0')
if current == 'queued' or (current == 'running' and lease < tonumber(ARGV[1])) then
  redis.call('HINCRBY', KEYS[1], 'attempts', 1)
  redis.call('HSET', KEYS[1], 'status', 'running', 'lease_expires_at', ARGV[2],
             'worker', ARGV[3], 'started_at', ARGV[4])
  redis.call('SADD', KEYS[2], redis.call('HGET', KEYS[1], 'id'))
  return {current, 1}
end
return {current, 0}
"""

# Extends the lease of a running experiment that ARGV[1] owns. Returns the status,
# "" when the record is gone, or "lost" when another worker owns it now.
_RENEW_SCRIPT = """
local current = redis.call('HGET', KEYS[1], 'status')
if not current then return '' end
if current ~= 'running' then return current end
if redis.call('HGET', KEYS[1], 'worker') ~= ARGV[1] then return 'lost' end
redis.call('HSET', KEYS[1], 'lease_expires_at', ARGV[2])
return current
"""

# Writes metric records only while the record exists, so a flush after Redis
# lost its data never leaves a half record. KEYS: record, index, data.
# ARGV[1] is the number of records n, then n (name, ordinal, json) triples,
# then field/value pairs for the record hash. Returns 1, or 0 if it is gone.
_WRITE_METRICS_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local n = tonumber(ARGV[1])
for i = 0, n - 1 do
  local base = 2 + 3 * i
  redis.call('ZADD', KEYS[2], ARGV[base + 1], ARGV[base])
  redis.call('HSET', KEYS[3], ARGV[base], ARGV[base + 2])
end
if #ARGV > 1 + 3 * n then
  redis.call('HSET', KEYS[1], unpack(ARGV, 2 + 3 * n))
end
return 1
"""

# A queued experiment is cancelled at once; a running one is flagged and a
# message on the cancel channel reaches its worker. Returns the status before,
# or "" if the experiment is missing.
_CANCEL_SCRIPT = """
local current = redis.call('HGET', KEYS[1], 'status')
if not current then return '' end
if current == 'queued' then
  redis.call('HSET', KEYS[1], 'status', 'cancelled', 'finished_at', ARGV[1],
             'cancel_requested', '1')
elseif current == 'running' then
  redis.call('HSET', KEYS[1], 'cancel_requested', '1')
  redis.call('PUBLISH', KEYS[2], ARGV[2])
end
return current
"""


def utc_now() -> datetime:
    return datetime.now(UTC)


def experiment_key(experiment_id: str) -> str:
    return f"{PREFIX}experiment:{experiment_id}"


def metrics_index_key(experiment_id: str) -> str:
    return f"{PREFIX}experiment:{experiment_id}:metrics"


def metrics_data_key(experiment_id: str) -> str:
    return f"{PREFIX}experiment:{experiment_id}:metric-data"


def analysis_key(experiment_id: str) -> str:
    return f"{PREFIX}experiment:{experiment_id}:analysis"


def worker_key(name: str) -> str:
    return f"{PREFIX}worker:{name}"


def metric_name_and_ordinal(record: MetricRecord) -> tuple[str, int]:
    """Return the record's stable name and its position in the metrics order."""
    if isinstance(record, StepMetrics):
        return f"s:{record.step}", 2 * record.step
    return f"e:{record.epoch}", 2 * record.step + 1


@dataclass(frozen=True)
class Transition:
    """Outcome of a conditional status change."""

    previous: ExperimentStatus | None
    applied: bool


@dataclass(frozen=True)
class MetricsPage:
    records: list[MetricRecord]
    next_cursor: int


def new_experiment_record(
    spec: ExperimentSpec, sweep_id: str | None = None
) -> ExperimentRecord:
    """Return the record of a new queued experiment, not yet stored."""
    return ExperimentRecord(
        id=new_ulid(),
        status=ExperimentStatus.QUEUED,
        spec=spec,
        created_at=utc_now(),
        progress=Progress(total_steps=spec.total_steps, total_epochs=spec.epochs),
        sweep_id=sweep_id,
    )


def add_experiment(pipe: redis.client.Pipeline, record: ExperimentRecord) -> None:
    """Queue the commands that store a new experiment on ``pipe``."""
    fields: HashMapping = {
        "id": record.id,
        "status": record.status.value,
        "spec": record.spec.model_dump_json(),
        "created_at": record.created_at.isoformat(),
        "progress": record.progress.model_dump_json(),
        "cancel_requested": "0",
        "attempts": "0",
    }
    if record.sweep_id is not None:
        fields["sweep_id"] = record.sweep_id
    pipe.hset(experiment_key(record.id), mapping=fields)
    pipe.zadd(EXPERIMENTS_KEY, {record.id: 0})


def _json(value: Any) -> str:
    return json.dumps(value, allow_nan=False, separators=(",", ":"))


class ExperimentStore:
    """Experiments, their metrics and analyses in Redis.

    The client must be created with ``decode_responses=True``.
    """

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._transition = client.register_script(_TRANSITION_SCRIPT)
        self._cancel = client.register_script(_CANCEL_SCRIPT)
        self._claim = client.register_script(_CLAIM_SCRIPT)
        self._renew = client.register_script(_RENEW_SCRIPT)
        self._write_metrics = client.register_script(_WRITE_METRICS_SCRIPT)

    # Experiments

    def create(
        self, spec: ExperimentSpec, sweep_id: str | None = None
    ) -> ExperimentRecord:
        """Store a new queued experiment and return its record."""
        record = new_experiment_record(spec, sweep_id)
        with self.client.pipeline(transaction=True) as pipe:
            add_experiment(pipe, record)
            pipe.execute()
        return record

    def get(self, experiment_id: str) -> ExperimentRecord | None:
        fields = cast(
            dict[str, str], self.client.hgetall(experiment_key(experiment_id))
        )
        return _record_from_fields(fields) if _is_complete(fields) else None

    def exists(self, experiment_id: str) -> bool:
        return bool(self.client.exists(experiment_key(experiment_id)))

    def list_ids(self, limit: int, before: str | None = None) -> list[str]:
        """Return up to ``limit`` ids, newest first, older than ``before``."""
        upper = f"({before}" if before else "+"
        return cast(
            list[str],
            self.client.zrevrangebylex(EXPERIMENTS_KEY, upper, "-", start=0, num=limit),
        )

    def get_many(self, ids: Sequence[str]) -> list[ExperimentRecord]:
        with self.client.pipeline(transaction=False) as pipe:
            for experiment_id in ids:
                pipe.hgetall(experiment_key(experiment_id))
            rows = pipe.execute()
        return [_record_from_fields(fields) for fields in rows if _is_complete(fields)]

    # Status transitions

    def transition(
        self,
        experiment_id: str,
        allowed: Iterable[ExperimentStatus],
        fields: dict[str, str],
        increment: str = "",
    ) -> Transition:
        """Set ``fields`` only if the status is in ``allowed``, atomically."""
        argv: list[str] = [",".join(status.value for status in allowed), increment]
        for name, value in fields.items():
            argv += [name, value]
        previous, applied = self._transition(
            keys=[experiment_key(experiment_id)], args=argv
        )
        return Transition(
            previous=ExperimentStatus(previous) if previous else None,
            applied=bool(applied),
        )

    def mark_running(
        self, experiment_id: str, worker: str, lease_s: float = 60.0
    ) -> Transition:
        """Claim a queued experiment, or a running one whose lease expired.

        The worker then holds a lease of ``lease_s`` seconds, which it renews
        while it runs (:meth:`renew_lease`). A running experiment with a live
        lease is never claimed twice, so a redelivered task cannot start a
        second copy of a healthy run.
        """
        now = time.time()
        previous, applied = self._claim(
            keys=[experiment_key(experiment_id), RUNNING_KEY],
            args=[now, now + lease_s, worker, utc_now().isoformat()],
        )
        return Transition(
            previous=ExperimentStatus(previous) if previous else None,
            applied=bool(applied),
        )

    def renew_lease(self, experiment_id: str, worker: str, lease_s: float) -> str:
        """Extend ``worker``'s lease; return the status, "" if gone, or "lost"."""
        status = self._renew(
            keys=[experiment_key(experiment_id)],
            args=[worker, time.time() + lease_s],
        )
        return str(status)

    def expired_leases(self) -> list[str]:
        """Return ids that are running but whose worker stopped renewing."""
        ids = cast(list[str], sorted(self.client.smembers(RUNNING_KEY)))
        if not ids:
            return []
        now = time.time()
        with self.client.pipeline(transaction=False) as pipe:
            for experiment_id in ids:
                pipe.hmget(
                    experiment_key(experiment_id), ["status", "lease_expires_at"]
                )
            rows = pipe.execute()
        expired, finished = [], []
        for experiment_id, (status, lease) in zip(ids, rows, strict=True):
            if status != ExperimentStatus.RUNNING.value:
                finished.append(experiment_id)
            elif float(lease or 0) < now:
                expired.append(experiment_id)
        if finished:
            self.client.srem(RUNNING_KEY, *finished)
        return expired

    def try_lock(self, name: str, ttl_s: int) -> bool:
        """Take a named lock for ``ttl_s`` seconds unless someone holds it."""
        return bool(self.client.set(f"{PREFIX}lock:{name}", "1", nx=True, ex=ttl_s))

    def mark_succeeded(
        self, experiment_id: str, summary: TrainingSummary
    ) -> Transition:
        return self.transition(
            experiment_id,
            [ExperimentStatus.RUNNING],
            {
                "status": ExperimentStatus.SUCCEEDED.value,
                "finished_at": utc_now().isoformat(),
                "summary": summary.model_dump_json(),
            },
        )

    def mark_failed(
        self,
        experiment_id: str,
        failure: Failure,
        summary: TrainingSummary | None = None,
    ) -> Transition:
        """Fail a queued or running experiment; a finished one stays as it is."""
        fields = {
            "status": ExperimentStatus.FAILED.value,
            "finished_at": utc_now().isoformat(),
            "failure": failure.model_dump_json(),
        }
        if summary is not None:
            fields["summary"] = summary.model_dump_json()
        return self.transition(
            experiment_id, [ExperimentStatus.QUEUED, ExperimentStatus.RUNNING], fields
        )

    def mark_cancelled(self, experiment_id: str) -> Transition:
        return self.transition(
            experiment_id,
            [ExperimentStatus.QUEUED, ExperimentStatus.RUNNING],
            {
                "status": ExperimentStatus.CANCELLED.value,
                "finished_at": utc_now().isoformat(),
            },
        )

    def request_cancel(self, experiment_id: str) -> ExperimentStatus | None:
        """Cancel a queued experiment or flag a running one.

        Returns the status before the request, or None for an unknown id. A
        terminal status means nothing changed.
        """
        previous = self._cancel(
            keys=[experiment_key(experiment_id), CANCEL_CHANNEL],
            args=[utc_now().isoformat(), experiment_id],
        )
        return ExperimentStatus(previous) if previous else None

    def is_cancel_requested(self, experiment_id: str) -> bool:
        flag = self.client.hget(experiment_key(experiment_id), "cancel_requested")
        return flag == "1"

    # Metrics

    def write_metrics(
        self,
        experiment_id: str,
        records: Sequence[MetricRecord],
        progress: Progress | None = None,
    ) -> bool:
        """Store a batch of metric records and the progress atomically.

        Returns False, writing nothing, when the experiment's record no longer
        exists (Redis lost its data, say); the run should then stop.
        """
        args: list[str | int] = [len(records)]
        latest: dict[str, str] = {}
        for record in records:
            name, ordinal = metric_name_and_ordinal(record)
            payload = record.model_dump_json()
            args += [name, ordinal, payload]
            kind = "latest_step" if isinstance(record, StepMetrics) else "latest_epoch"
            latest[kind] = payload
        if progress is not None:
            latest["progress"] = progress.model_dump_json()
        for field, value in latest.items():
            args += [field, value]
        written = self._write_metrics(
            keys=[
                experiment_key(experiment_id),
                metrics_index_key(experiment_id),
                metrics_data_key(experiment_id),
            ],
            args=args,
        )
        return bool(written)

    def read_metrics(self, experiment_id: str, after: int, limit: int) -> MetricsPage:
        """Return up to ``limit`` records whose ordinal is greater than ``after``.

        The next cursor is the last returned ordinal, or ``after`` when nothing
        new exists, so a client that polls with it reads each record once. The
        worker writes records in order, so none can appear behind a cursor.
        """
        rows = cast(
            list[tuple[str, float]],
            self.client.zrangebyscore(
                metrics_index_key(experiment_id),
                f"({after}",
                "+inf",
                start=0,
                num=limit,
                withscores=True,
            ),
        )
        if not rows:
            return MetricsPage(records=[], next_cursor=after)
        names = [name for name, _ in rows]
        payloads = cast(
            list[str | None],
            self.client.hmget(metrics_data_key(experiment_id), names),
        )
        records = [
            METRIC_ADAPTER.validate_json(payload)
            for payload in payloads
            if payload is not None
        ]
        return MetricsPage(records=records, next_cursor=int(rows[-1][1]))

    # Analysis

    def set_phase(self, experiment_id: str, progress: Progress) -> None:
        self.client.hset(
            experiment_key(experiment_id), "progress", progress.model_dump_json()
        )

    def save_analysis(
        self, experiment_id: str, analysis: CriticalPointAnalysis
    ) -> None:
        self.client.set(analysis_key(experiment_id), analysis.model_dump_json())

    def get_analysis(self, experiment_id: str) -> CriticalPointAnalysis | None:
        payload = cast(str | None, self.client.get(analysis_key(experiment_id)))
        if payload is None:
            return None
        return CriticalPointAnalysis.model_validate_json(payload)

    # Workers

    def write_heartbeat(self, name: str, info: dict[str, Any], ttl_s: int) -> None:
        self.client.set(worker_key(name), _json(info), ex=ttl_s)

    def remove_heartbeat(self, name: str) -> None:
        self.client.delete(worker_key(name))

    def live_workers(self) -> list[dict[str, Any]]:
        keys = list(self.client.scan_iter(match=WORKER_KEY_PATTERN, count=100))
        if not keys:
            return []
        payloads = cast(list[str | None], self.client.mget(keys))
        return [json.loads(payload) for payload in payloads if payload]


def _is_complete(fields: dict[str, str]) -> bool:
    """Return whether a hash has every field that ``create`` writes."""
    return all(name in fields for name in ("id", "status", "spec", "created_at"))


def _record_from_fields(fields: dict[str, str]) -> ExperimentRecord:
    latest = {
        "step": _loads(fields.get("latest_step")),
        "epoch": _loads(fields.get("latest_epoch")),
    }
    return ExperimentRecord.model_validate(
        {
            "id": fields["id"],
            "status": fields["status"],
            "spec": json.loads(fields["spec"]),
            "created_at": fields["created_at"],
            "started_at": fields.get("started_at"),
            "finished_at": fields.get("finished_at"),
            "progress": json.loads(fields["progress"]),
            "latest": latest,
            "summary": _loads(fields.get("summary")),
            "failure": _loads(fields.get("failure")),
            "cancel_requested": fields.get("cancel_requested") == "1",
            "attempts": int(fields.get("attempts", "0")),
            "worker": fields.get("worker"),
            "lease_expires_at": _timestamp(fields.get("lease_expires_at")),
            "sweep_id": fields.get("sweep_id"),
        }
    )


def _timestamp(seconds: str | None) -> datetime | None:
    return datetime.fromtimestamp(float(seconds), UTC) if seconds else None


def _loads(payload: str | None) -> Any:
    return json.loads(payload) if payload else None
