"""Real servers for tests: redis-server, Celery workers and the API.

Each listens on a free loopback port, writes its log under a temporary folder,
and is stopped by the process id this module started.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import redis

REPO_ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``condition`` every 0.1 s; raise TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")


class ManagedProcess:
    """A child process with its log file, stopped with SIGTERM then SIGKILL."""

    def __init__(self, name: str, args: list[str], log_path: Path, env: dict[str, str]):
        self.name = name
        self.env = env
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            args,
            cwd=REPO_ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self, timeout_s: float = 20.0) -> None:
        if self.alive():
            # The process leads its own session, so this reaches its pool too.
            os.killpg(self.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.process.wait(timeout=timeout_s)
        self._log.close()

    def kill(self) -> None:
        """End the process group at once, as a crash or OOM kill would."""
        if self.alive():
            os.killpg(self.pid, signal.SIGKILL)
            self.process.wait(timeout=30)


def child_env(**overrides: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(overrides)
    return env


def start_redis(directory: Path) -> tuple[ManagedProcess, int]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError(
            "redis-server is not installed; run `make test`, which installs it, "
            "or `apt-get install redis-server`"
        )
    port = free_port()
    args = [
        binary,
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--save", "",
        "--appendonly", "no",
        "--dir", str(directory),
    ]  # fmt: skip
    server = ManagedProcess("redis", args, directory / "redis.log", child_env())
    client = redis.Redis(port=port)

    def answers() -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    wait_until(answers, STARTUP_TIMEOUT_S, f"redis-server on port {port}")
    client.close()
    return server, port


def start_worker(
    directory: Path, redis_url: str, name: str, queues: str = "any,cpu", **env: str
) -> ManagedProcess:
    args = [
        sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker",
        "--loglevel", "INFO",
        "--concurrency", "1",
        "--queues", queues,
        "--hostname", f"{name}@localhost",
        "--without-mingle", "--without-gossip",
    ]  # fmt: skip
    environment = child_env(REDIS_URL=redis_url, **env)
    return ManagedProcess(name, args, directory / f"{name}.log", environment)


def start_api(
    directory: Path, redis_url: str, **env: str
) -> tuple[ManagedProcess, str]:
    port = free_port()
    args = [
        sys.executable, "-m", "uvicorn", "service.main:app",
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    api = ManagedProcess(
        "api", args, directory / "api.log", child_env(REDIS_URL=redis_url, **env)
    )
    base_url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(healthy, STARTUP_TIMEOUT_S, f"the API on port {port}")
    return api, base_url
