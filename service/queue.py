"""Producer side of the task queue: the API sends tasks but never runs them."""

import logging

from celery import Celery

from saddlepoint.queues import QUEUE_BY_DEVICE, RUN_EXPERIMENT_TASK
from saddlepoint.settings import Settings
from saddlepoint.spec import ExperimentSpec

logger = logging.getLogger(__name__)


class TaskQueue:
    """Sends experiment tasks to the queue that matches their device."""

    def __init__(self, settings: Settings) -> None:
        self.celery = Celery("saddlepoint-api", broker=settings.redis_url)
        self.celery.conf.update(
            broker_transport_options={
                "visibility_timeout": settings.visibility_timeout_s
            },
            broker_connection_retry_on_startup=True,
            task_publish_retry_policy={
                "max_retries": 3,
                "interval_start": 0.2,
                "interval_step": 0.5,
                "interval_max": 1.0,
            },
        )

    def send_experiment(self, experiment_id: str, spec: ExperimentSpec) -> None:
        queue = QUEUE_BY_DEVICE[spec.device]
        self.celery.send_task(
            RUN_EXPERIMENT_TASK, args=[experiment_id], queue=queue, retry=True
        )
        logger.info("experiment %s queued on %s", experiment_id, queue)

    def close(self) -> None:
        self.celery.close()
