"""Celery application of the workers: ``celery -A worker.celery_app worker``.

The parent process imports this module and :mod:`worker.tasks` only, neither
of which imports torch, so nothing touches CUDA before the pool forks its
children. Each child imports torch on its first task.
"""

import logging
import os
import threading
from typing import Any

import redis
from celery import Celery
from celery.signals import worker_ready, worker_shutdown

from saddlepoint.queues import QUEUE_BY_DEVICE, RUN_EXPERIMENT_TASK
from saddlepoint.settings import get_settings
from saddlepoint.spec import Device
from saddlepoint.store import ExperimentStore, utc_now

logger = logging.getLogger(__name__)

settings = get_settings()

app = Celery("saddlepoint", broker=settings.redis_url, include=["worker.tasks"])
app.conf.update(
    # The experiment record in Redis is the source of truth, not task results.
    task_ignore_result=True,
    # Acknowledge after the run, and put a task back if its process dies, so a
    # killed pool process does not lose its experiment.
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    broker_transport_options={"visibility_timeout": settings.visibility_timeout_s},
    broker_connection_retry_on_startup=True,
    task_default_queue=QUEUE_BY_DEVICE[Device.AUTO],
    worker_hijack_root_logger=True,
    worker_send_task_events=False,
)


class Heartbeat:
    """Renews this worker's key in Redis so ``/readyz`` can count live workers."""

    def __init__(self, name: str, info: dict[str, Any], ttl_s: int) -> None:
        client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
        self.store = ExperimentStore(client)
        self.name = name
        self.info = info
        self.ttl_s = ttl_s
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)
        try:
            self.store.remove_heartbeat(self.name)
        except redis.RedisError as error:
            logger.warning("could not remove heartbeat of %s: %s", self.name, error)

    def _run(self) -> None:
        failing = False
        while not self._stopping.is_set():
            try:
                self.store.write_heartbeat(self.name, self.info, self.ttl_s)
                self._requeue_orphans()
                if failing:
                    logger.warning("heartbeat of %s restored", self.name)
                failing = False
            except redis.RedisError as error:
                if not failing:
                    logger.warning("heartbeat of %s failed: %s", self.name, error)
                failing = True
            self._stopping.wait(self.ttl_s / 3)

    def _requeue_orphans(self) -> None:
        """Send a task again for every run whose worker stopped renewing its lease.

        Any live worker may do this; a lock lets only one send per lease period.
        The claim then succeeds because the lease has expired.
        """
        for experiment_id in self.store.expired_leases():
            lock = f"requeue:{experiment_id}"
            if not self.store.try_lock(lock, max(int(settings.lease_s), 1)):
                continue
            record = self.store.get(experiment_id)
            if record is None:
                continue
            app.send_task(
                RUN_EXPERIMENT_TASK,
                args=[experiment_id],
                queue=QUEUE_BY_DEVICE[record.spec.device],
            )
            logger.warning(
                "experiment %s: worker %s stopped renewing its lease; run requeued",
                experiment_id,
                record.worker,
            )


_heartbeat: Heartbeat | None = None


@worker_ready.connect
def _start_heartbeat(sender: Any, **_: Any) -> None:
    """Start the heartbeat once the consumer is ready; ``sender`` is the consumer."""
    global _heartbeat
    queues = []
    if sender.task_consumer is not None:
        queues = [queue.name for queue in sender.task_consumer.queues]
    controller = sender.controller
    info = {
        "name": sender.hostname,
        "pid": os.getpid(),
        "queues": queues,
        "concurrency": getattr(controller, "concurrency", None),
        "started_at": utc_now().isoformat(),
    }
    _heartbeat = Heartbeat(sender.hostname, info, settings.heartbeat_ttl_s)
    _heartbeat.start()
    logger.info("worker %s ready on queues %s", sender.hostname, ",".join(queues))


@worker_shutdown.connect
def _stop_heartbeat(**_: Any) -> None:
    if _heartbeat is not None:
        _heartbeat.stop()
