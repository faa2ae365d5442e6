"""A real stack per session: redis-server, a Celery worker and the API."""

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.processes import (
    ManagedProcess,
    start_api,
    start_worker,
    wait_until,
)

TERMINAL = {"succeeded", "failed", "cancelled"}
RUN_TIMEOUT_S = 240.0

# Small, fast runs: a few hundred updates on iris or digits.
FAST_SPEC: dict[str, Any] = {
    "dataset": {"name": "iris"},
    "model": {"hidden_sizes": [8], "activation": "tanh"},
    "optimizer": {"name": "adam", "learning_rate": 0.05},
    "batch_size": 16,
    "epochs": 30,
    "device": "cpu",
}


@dataclass
class Stack:
    redis_url: str
    api_url: str
    directory: Path
    worker: ManagedProcess
    api: ManagedProcess
    http: httpx.Client

    def submit(self, spec: dict[str, Any]) -> str:
        response = self.http.post("/v1/experiments", json=spec)
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    def get(self, experiment_id: str) -> dict[str, Any]:
        response = self.http.get(f"/v1/experiments/{experiment_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def wait_for(
        self,
        experiment_id: str,
        condition: Callable[[dict[str, Any]], bool],
        what: str,
        timeout_s: float = RUN_TIMEOUT_S,
    ) -> dict[str, Any]:
        record: dict[str, Any] = {}

        def check() -> bool:
            nonlocal record
            record = self.get(experiment_id)
            return condition(record)

        try:
            wait_until(check, timeout_s, f"experiment {experiment_id} {what}")
        except TimeoutError as error:
            raise AssertionError(
                f"{error}; last record {record}\nworker log:\n{self.worker.log_tail()}"
            ) from error
        return record

    def wait_finished(self, experiment_id: str) -> dict[str, Any]:
        return self.wait_for(
            experiment_id, lambda record: record["status"] in TERMINAL, "to finish"
        )


@pytest.fixture(scope="session")
def stack(redis_port: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    directory = tmp_path_factory.mktemp("stack")
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    worker = start_worker(
        directory, redis_url, "worker-1", SADDLE_METRICS_FLUSH_INTERVAL_S="0.1"
    )
    api, api_url = start_api(directory, redis_url)
    http = httpx.Client(base_url=api_url, timeout=30)

    def ready() -> bool:
        return http.get("/readyz").status_code == 200

    try:
        wait_until(ready, 120, "a worker heartbeat in /readyz")
    except TimeoutError:
        pytest.fail(f"worker did not start:\n{worker.log_tail()}")
    yield Stack(redis_url, api_url, directory, worker, api, http)
    http.close()
    api.stop()
    worker.stop()
