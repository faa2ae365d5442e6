"""Training hooks that batch metric records into Redis and watch for cancel."""

import logging
import threading
import time

import redis

from saddlepoint.records import (
    EpochMetrics,
    MetricRecord,
    Phase,
    Progress,
    StepMetrics,
)
from saddlepoint.store import CANCEL_CHANNEL, ExperimentStore

logger = logging.getLogger(__name__)


class RecordLost(Exception):
    """The experiment's record vanished from Redis or another worker took it."""


class MetricsWriter:
    """Buffers metric records and writes them to Redis in batches.

    A batch goes out when ``flush_interval_s`` has passed since the last one,
    at the end of every epoch, and on :meth:`flush`, so logging costs one Redis
    round trip per interval rather than one per update.
    """

    def __init__(
        self,
        store: ExperimentStore,
        experiment_id: str,
        progress: Progress,
        flush_interval_s: float,
        stop_event: threading.Event,
    ) -> None:
        self.store = store
        self.experiment_id = experiment_id
        self.progress = progress.model_copy(update={"phase": Phase.TRAINING})
        self.flush_interval_s = flush_interval_s
        self.stop_event = stop_event
        self._buffer: list[MetricRecord] = []
        self._last_flush = time.monotonic()

    def on_step(self, record: StepMetrics) -> None:
        self._buffer.append(record)
        self.progress.steps_completed = record.step + 1
        if time.monotonic() - self._last_flush >= self.flush_interval_s:
            self.flush()

    def on_epoch(self, record: EpochMetrics) -> None:
        self._buffer.append(record)
        self.progress.epochs_completed = record.epoch + 1
        self.flush()

    def should_stop(self) -> bool:
        return self.stop_event.is_set()

    def enter_phase(self, phase: Phase) -> None:
        """Write the buffered records and the new phase, e.g. before the analysis."""
        self.progress.phase = phase
        self.flush()

    def flush(self) -> None:
        """Write the buffered records; raise RecordLost if the record is gone."""
        records, self._buffer = self._buffer, []
        written = self.store.write_metrics(self.experiment_id, records, self.progress)
        self._last_flush = time.monotonic()
        if not written:
            raise RecordLost(
                f"experiment {self.experiment_id} is no longer in Redis; its "
                "metrics were not written"
            )


class CancelWatcher:
    """Sets ``event`` when the run must stop, and renews the run's lease.

    A thread listens on the cancel channel, so the training loop only reads an
    in-process flag before each update. Every ``poll_interval_s`` it also
    renews the worker's lease and reads the stored cancel flag, in case a
    message was published before the subscription or lost in a reconnect.
    When the record is gone or another worker owns it, ``lost`` is set too.
    """

    def __init__(
        self,
        store: ExperimentStore,
        experiment_id: str,
        worker: str,
        lease_s: float,
        poll_interval_s: float = 2.0,
    ) -> None:
        self.store = store
        self.experiment_id = experiment_id
        self.worker = worker
        self.lease_s = lease_s
        self.poll_interval_s = min(poll_interval_s, lease_s / 4)
        self.event = threading.Event()
        self.lost = threading.Event()
        self._closing = threading.Event()
        self._thread = threading.Thread(
            target=self._watch, name=f"cancel-watcher-{experiment_id}", daemon=True
        )

    def start(self) -> "CancelWatcher":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._closing.set()
        self._thread.join(timeout=5)

    def _watch(self) -> None:
        while not self._closing.is_set() and not self.event.is_set():
            try:
                self._listen()
            except redis.RedisError as error:
                logger.warning(
                    "experiment %s: cancel watcher lost Redis (%s); retrying",
                    self.experiment_id,
                    error,
                )
                self._closing.wait(1.0)

    def _listen(self) -> None:
        pubsub = self.store.client.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(CANCEL_CHANNEL)
            last_poll = 0.0
            while not self._closing.is_set():
                if time.monotonic() - last_poll >= self.poll_interval_s:
                    last_poll = time.monotonic()
                    if not self._renew():
                        return
                message = pubsub.get_message(timeout=0.2)
                if message and message.get("data") == self.experiment_id:
                    self._cancel()
                    return
        finally:
            pubsub.close()

    def _renew(self) -> bool:
        """Renew the lease and read the cancel flag; return False to stop."""
        status = self.store.renew_lease(self.experiment_id, self.worker, self.lease_s)
        if status in ("", "lost"):
            logger.error(
                "experiment %s: %s; stopping this copy of the run",
                self.experiment_id,
                "record is gone" if status == "" else "another worker took it over",
            )
            self.lost.set()
            self.event.set()
            return False
        if self.store.is_cancel_requested(self.experiment_id):
            self._cancel()
            return False
        return True

    def _cancel(self) -> None:
        logger.info("experiment %s: cancel requested", self.experiment_id)
        self.event.set()
