"""Celery tasks. Thin on purpose: the work lives in :mod:`worker.runner`."""

from celery import Task

from saddlepoint.queues import RUN_EXPERIMENT_TASK
from worker.celery_app import app


@app.task(name=RUN_EXPERIMENT_TASK, bind=True)
def run_experiment(self: Task, experiment_id: str) -> None:
    """Train and analyze one stored experiment; the record contains the outcome."""
    # Imported here so the pool's parent process never imports torch.
    from worker.runner import run_experiment as run

    run(experiment_id, worker_name=self.request.hostname or "worker")
