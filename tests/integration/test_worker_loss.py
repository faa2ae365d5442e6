"""A worker killed mid-run: another worker restarts the run and finishes it.

Uses its own Redis database, API and workers with a 5 s lease, so the
orphaned run is noticed within seconds rather than the default minute.
"""

from collections.abc import Iterator

import httpx
import pytest

from tests.integration.conftest import FAST_SPEC, TERMINAL
from tests.support.processes import (
    ManagedProcess,
    start_api,
    start_worker,
    wait_until,
)

LEASE = {"SADDLE_LEASE_S": "5", "SADDLE_METRICS_FLUSH_INTERVAL_S": "0.1"}


@pytest.fixture
def loss_stack(
    redis_port: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[httpx.Client, list[ManagedProcess]]]:
    directory = tmp_path_factory.mktemp("worker-loss")
    redis_url = f"redis://127.0.0.1:{redis_port}/2"
    api, api_url = start_api(directory, redis_url)
    processes = [api]
    http = httpx.Client(base_url=api_url, timeout=30)
    yield http, processes
    http.close()
    for process in processes:
        process.stop()


def test_killed_worker_run_restarts_elsewhere(
    loss_stack: tuple[httpx.Client, list[ManagedProcess]],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    http, processes = loss_stack
    directory = tmp_path_factory.mktemp("workers")
    redis_url = processes[0].env["REDIS_URL"]
    doomed = start_worker(directory, redis_url, "doomed", **LEASE)
    processes.append(doomed)
    wait_until(lambda: http.get("/readyz").status_code == 200, 120, "the first worker")

    spec = {**FAST_SPEC, "batch_size": 1, "epochs": 40, "analysis": {"enabled": False}}
    experiment_id = http.post("/v1/experiments", json=spec).json()["id"]

    def progressed() -> bool:
        record = http.get(f"/v1/experiments/{experiment_id}").json()
        return bool(record["progress"]["steps_completed"] > 0)

    wait_until(progressed, 120, "the run to start")
    doomed.kill()

    survivor = start_worker(directory, redis_url, "survivor", **LEASE)
    processes.append(survivor)

    def finished() -> bool:
        record = http.get(f"/v1/experiments/{experiment_id}").json()
        return record["status"] in TERMINAL

    try:
        wait_until(finished, 240, "the restarted run to finish")
    except TimeoutError as error:
        raise AssertionError(f"{error}\n{survivor.log_tail()}") from error
    record = http.get(f"/v1/experiments/{experiment_id}").json()
    assert record["status"] == "succeeded"
    assert record["attempts"] == 2
    assert record["worker"] == "survivor@localhost"
    assert record["progress"]["steps_completed"] == record["progress"]["total_steps"]
