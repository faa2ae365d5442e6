"""The ``saddle`` command against a real API process and redis-server, no worker.

Experiments that "finished" are written through the store directly.
"""

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from saddlepoint.analysis import AnalysisTrigger, CriticalPointAnalysis, Verdict
from saddlepoint.cli import main
from saddlepoint.cli.client import ExitCode
from saddlepoint.records import EpochMetrics, Failure, FailureCode, TrainingSummary
from saddlepoint.spec import ExperimentSpec
from saddlepoint.store import ExperimentStore
from saddlepoint.store.analyses import AnalysisStore, StoredParameters
from tests.conftest import UNIT_TEST_DB
from tests.support.processes import free_port, start_api

UNKNOWN_ID = "01ARZ3NDEKTSV4RRFFQ69G5FAV"
BAD_IDS = ["../../healthz", "01arz3ndektsv4rrffq69g5fav", "x" * 26, ""]


@pytest.fixture(scope="module")
def api_url(tmp_path_factory: pytest.TempPathFactory, redis_port: int) -> Iterator[str]:
    redis_url = f"redis://127.0.0.1:{redis_port}/{UNIT_TEST_DB}"
    api, base_url = start_api(tmp_path_factory.mktemp("api"), redis_url)
    yield base_url
    api.stop()


@pytest.fixture
def saddle(api_url: str, store: ExperimentStore) -> Any:
    """Run ``saddle`` against the test API; the store fixture empties Redis first."""
    runner = CliRunner()

    def run(*args: str) -> Result:
        return runner.invoke(main, ["--api", api_url, *args])

    return run


def spec_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.json"
    path.write_text(text)
    return path


def assert_no_traceback(result: Result) -> None:
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        result.exception
    )
    assert "Traceback" not in result.output


def regression_summary() -> TrainingSummary:
    return TrainingSummary(
        steps=8,
        epochs=2,
        train_loss=0.125,
        train_accuracy=None,
        val_loss=0.25,
        val_accuracy=None,
        wall_time_s=1.5,
        device="cpu",
        parameter_count=10,
    )


def succeeded_regression(store: ExperimentStore) -> str:
    spec = ExperimentSpec.model_validate(
        {"dataset": {"name": "sinc"}, "analysis": {"enabled": False}}
    )
    record = store.create(spec)
    assert store.mark_running(record.id, "w@host").applied
    assert store.mark_succeeded(record.id, regression_summary()).applied
    return record.id


def analysis(
    index: int, trigger: AnalysisTrigger, **fields: Any
) -> CriticalPointAnalysis:
    values: dict[str, Any] = {
        "index": index,
        "trigger": trigger,
        "epoch": index + 1,
        "loss": 0.5,
        "gradient_norm": 0.0025,
        "gradient_tolerance": 0.001,
        "parameter_count": 35,
        "samples": 120,
        "dtype": "float64",
        "eigenvalue_tolerance": 1e-9,
        "positive_count": 30,
        "negative_count": 5,
        "zero_count": 0,
        "min_eigenvalue": -0.1,
        "max_eigenvalue": 2.0,
        "minimum_ratio": 30 / 35,
        "verdict": Verdict.SADDLE_POINT,
        "verdict_reason": "both signs",
        "eigenvalues": [0.0] * 35,
        "elapsed_s": 0.1,
    }
    values.update(fields)
    return CriticalPointAnalysis.model_validate(values)


# Help and input checks


def test_help_documents_exit_codes(saddle: Any) -> None:
    result = saddle("--help")

    assert result.exit_code == 0
    assert "Exit status:" in result.output
    for line in ("0  the command worked", "1  the experiment failed", "2  the API"):
        assert line in result.output


def test_nan_spec_file_exits_2(saddle: Any, tmp_path: Path) -> None:
    result = saddle("submit", str(spec_file(tmp_path, '{"epochs": NaN}')), "--detach")

    assert result.exit_code == ExitCode.REJECTED
    assert "NaN is not valid JSON" in result.stderr
    assert_no_traceback(result)


def test_infinite_sweep_file_exits_2(saddle: Any, tmp_path: Path) -> None:
    path = spec_file(tmp_path, '{"grid": {"epochs": [-Infinity]}}')

    result = saddle("sweep", str(path), "--detach")

    assert result.exit_code == ExitCode.REJECTED
    assert "-Infinity is not valid JSON" in result.stderr


def test_malformed_spec_file_exits_2(saddle: Any, tmp_path: Path) -> None:
    result = saddle("submit", str(spec_file(tmp_path, "{epochs")), "--detach")

    assert result.exit_code == ExitCode.REJECTED
    assert "cannot read a JSON spec" in result.stderr
    assert_no_traceback(result)


@pytest.mark.parametrize("bad_id", BAD_IDS)
@pytest.mark.parametrize(
    "command", [["status"], ["metrics"], ["analysis"], ["analyses"], ["cancel"]]
)
def test_invalid_experiment_id_exits_2(
    saddle: Any, command: list[str], bad_id: str
) -> None:
    result = saddle(*command, bad_id)

    assert result.exit_code == 2
    assert "is not a valid experiment id" in result.output
    assert_no_traceback(result)


def test_invalid_id_for_continue_and_table(saddle: Any) -> None:
    continued = saddle("continue", "../../healthz", "--epochs", "2")
    table = saddle("table", "../healthz")

    assert continued.exit_code == 2
    assert "is not a valid experiment id" in continued.output
    assert table.exit_code == 2
    assert "is not a valid sweep id" in table.output


def test_unknown_experiment_exits_2(saddle: Any) -> None:
    result = saddle("status", UNKNOWN_ID)

    assert result.exit_code == ExitCode.REJECTED
    assert "HTTP 404 experiment_not_found" in result.stderr


def test_unreachable_api_exits_2(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"

    result = CliRunner().invoke(main, ["--api", url, "status", UNKNOWN_ID])

    assert result.exit_code == ExitCode.REJECTED
    assert "cannot reach the API" in result.stderr
    assert_no_traceback(result)


class UnexpectedShape(BaseHTTPRequestHandler):
    """Respond to every GET with a JSON object that is not an API record."""

    def do_GET(self) -> None:
        body = b'{"unexpected": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_unexpected_response_shape_exits_2() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), UnexpectedShape)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        result = CliRunner().invoke(main, ["--api", url, "status", UNKNOWN_ID])
    finally:
        server.shutdown()
        server.server_close()

    assert result.exit_code == ExitCode.REJECTED
    assert "without the expected fields" in result.stderr
    assert_no_traceback(result)


# Submitting


def test_submit_detach_prints_id(saddle: Any, tmp_path: Path) -> None:
    result = saddle("submit", str(spec_file(tmp_path, '{"epochs": 1}')), "--detach")

    assert result.exit_code == ExitCode.SUCCEEDED, result.output
    words = result.stdout.split()
    assert words[0] == "experiment"
    assert len(words[1]) == 26
    assert words[2] == "queued"
    # No worker runs in these tests, so the API warns that nothing consumes the queue.
    assert "warning: no live worker consumes the 'any' queue" in result.stderr


def test_submit_invalid_spec_exits_2(saddle: Any, tmp_path: Path) -> None:
    path = spec_file(
        tmp_path, '{"epochs": 0, "optimizer": {"name": "rmsprop", "eps": -1}}'
    )

    result = saddle("submit", str(path), "--detach")

    assert result.exit_code == ExitCode.REJECTED
    assert "HTTP 422 invalid_spec: invalid experiment spec" in result.stderr
    assert "optimizer.eps" in result.stderr
    assert result.stdout == ""


# Reading finished experiments


def test_status_of_regression_prints_na(saddle: Any, store: ExperimentStore) -> None:
    experiment_id = succeeded_regression(store)

    result = saddle("status", experiment_id)

    assert result.exit_code == ExitCode.SUCCEEDED, result.output
    assert f"experiment {experiment_id}: succeeded" in result.stdout
    assert "train loss 0.125, accuracy n/a" in result.stdout
    assert "validation loss 0.25, accuracy n/a" in result.stdout
    assert_no_traceback(result)


def test_status_of_failed_exits_1(saddle: Any, store: ExperimentStore) -> None:
    record = store.create(ExperimentSpec())
    failure = Failure(code=FailureCode.DIVERGED, message="loss is NaN", step=3)
    assert store.mark_failed(record.id, failure).applied

    result = saddle("status", record.id)

    assert result.exit_code == ExitCode.EXPERIMENT_FAILED
    assert "failure: diverged at step 3: loss is NaN" in result.stdout


def test_status_of_queued_exits_0(saddle: Any, store: ExperimentStore) -> None:
    record = store.create(ExperimentSpec())

    result = saddle("status", record.id)

    assert result.exit_code == ExitCode.SUCCEEDED
    assert f"experiment {record.id}: queued" in result.stdout


def test_metrics_prints_json_lines(saddle: Any, store: ExperimentStore) -> None:
    record = store.create(ExperimentSpec())
    epochs = [
        EpochMetrics(
            epoch=epoch,
            step=epoch * 4 + 3,
            train_loss=1.0 / (epoch + 1),
            train_accuracy=None,
            val_loss=None,
            val_accuracy=None,
            epoch_time_s=0.5,
        )
        for epoch in range(3)
    ]
    assert store.write_metrics(record.id, epochs)

    result = saddle("metrics", record.id)

    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["epoch"] for line in lines] == [0, 1, 2]
    assert lines[1]["train_loss"] == 0.5


def test_analyses_lists_one_line_each(saddle: Any, store: ExperimentStore) -> None:
    record = store.create(ExperimentSpec())
    analyses = AnalysisStore(store.client)
    analyses.save(record.id, analysis(0, AnalysisTrigger.EPOCH))
    analyses.save(
        record.id,
        analysis(
            1,
            AnalysisTrigger.FINAL,
            method="lanczos",
            minimum_ratio=None,
            positive_count=None,
            negative_count=None,
            zero_count=None,
            verdict=Verdict.LOCAL_MINIMUM,
        ),
    )

    result = saddle("analyses", record.id)

    assert result.exit_code == 0, result.output
    header, first, second = result.stdout.splitlines()
    assert header.split() == [
        "index",
        "trigger",
        "epoch",
        "verdict",
        "gradient_norm",
        "minimum_ratio",
        "method",
    ]
    assert first.split() == [
        "0",
        "epoch",
        "1",
        "saddle_point",
        "0.0025",
        "0.8571",
        "exact",
    ]
    assert second.split() == [
        "1",
        "final",
        "2",
        "local_minimum",
        "0.0025",
        "n/a",
        "lanczos",
    ]


def test_analyses_of_new_experiment_says_none(
    saddle: Any, store: ExperimentStore
) -> None:
    record = store.create(ExperimentSpec())

    result = saddle("analyses", record.id)

    assert result.exit_code == 0
    assert "has no analyses yet" in result.stderr


# Continuing


def test_continue_from_saved_point(saddle: Any, store: ExperimentStore) -> None:
    spec = ExperimentSpec()
    parent = store.create(spec)
    size = spec.parameter_count
    AnalysisStore(store.client).save_parameters(
        parent.id, "escape", StoredParameters("float64", size, bytes(8 * size))
    )

    result = saddle("continue", parent.id, "--epochs", "3", "--detach")

    assert result.exit_code == ExitCode.SUCCEEDED, result.output
    assert f"continues {parent.id} from its escape point" in result.stdout
    child_id = result.stdout.split()[1]
    child = store.get(child_id)
    assert child is not None
    assert child.spec.epochs == 3
    assert child.spec.initial_parameters is not None
    assert child.spec.initial_parameters.experiment_id == parent.id


def test_continue_without_saved_point_exits_2(
    saddle: Any, store: ExperimentStore
) -> None:
    parent = store.create(ExperimentSpec())

    result = saddle("continue", parent.id, "--point", "critical", "--epochs", "2")

    assert result.exit_code == ExitCode.REJECTED
    assert "saved no critical parameters" in result.stderr


# Sweeps


def test_table_of_submitted_sweep(saddle: Any, tmp_path: Path) -> None:
    body = {"base": {"epochs": 1}, "grid": {"optimizer.learning_rate": [0.1, 0.01]}}
    submitted = saddle("sweep", str(spec_file(tmp_path, json.dumps(body))), "--detach")
    sweep_id = submitted.stdout.split()[1].rstrip(":")

    result = saddle("table", sweep_id)

    assert submitted.exit_code == 0, submitted.output
    assert result.exit_code == 0, result.output
    header, *rows = result.stdout.splitlines()
    assert header.split()[:3] == ["index", "optimizer.learning_rate", "status"]
    assert [row.split()[:3] for row in rows] == [
        ["0", "0.1", "queued"],
        ["1", "0.01", "queued"],
    ]
