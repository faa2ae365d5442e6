"""Fixtures shared by every test folder: one real redis-server per session."""

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from saddlepoint.store import ExperimentStore
from tests.support.processes import start_redis

# Database 0 belongs to the integration tests and their workers; unit tests
# use this one, emptied before each test.
UNIT_TEST_DB = 1


@pytest.fixture(scope="session")
def redis_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    server, port = start_redis(tmp_path_factory.mktemp("redis"))
    yield port
    server.stop()


@pytest.fixture
def redis_url(redis_port: int) -> str:
    return f"redis://127.0.0.1:{redis_port}/{UNIT_TEST_DB}"


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def store(redis_client: redis.Redis) -> ExperimentStore:
    return ExperimentStore(redis_client)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]
