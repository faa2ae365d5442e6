"""The ``saddle`` command: submit specs, follow runs, read results."""

import json
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import click
import httpx
from tqdm import tqdm

DEFAULT_API_URL = "http://127.0.0.1:8000"
TERMINAL = {"succeeded", "failed", "cancelled"}


class ApiClient:
    """Thin HTTP client of the saddlepoint API that exits with its error message."""

    def __init__(self, base_url: str, timeout_s: float = 30.0) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=timeout_s)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send a request and return the decoded JSON body."""
        return self.send(method, path, **kwargs).json()

    def send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send a request and return the successful response."""
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            fail(f"cannot reach the API at {self.http.base_url}: {error}")
        if response.is_success:
            return response
        fail(describe_error(response))


def describe_error(response: httpx.Response) -> str:
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}: {response.text[:500]}"
    lines = [f"HTTP {response.status_code} {error['code']}: {error['message']}"]
    for detail in error.get("details", [])[1:]:
        lines.append(f"  {detail['field']}: {detail['message']}")
    return "\n".join(lines)


def fail(message: str, code: int = 2) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2))


@click.group()
@click.option(
    "--api",
    envvar="SADDLE_API_URL",
    default=DEFAULT_API_URL,
    show_default=True,
    help="Base URL of the API (or set SADDLE_API_URL).",
)
@click.pass_context
def main(context: click.Context, api: str) -> None:
    """Run optimization experiments on a saddlepoint service."""
    context.obj = ApiClient(api)


@main.command()
@click.argument(
    "spec_file", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option("--detach", is_flag=True, help="Print the id and return at once.")
@click.option(
    "--poll-interval",
    default=0.5,
    show_default=True,
    type=click.FloatRange(min=0.05),
    help="Seconds between polls.",
)
@click.pass_obj
def submit(
    client: ApiClient, spec_file: Path, detach: bool, poll_interval: float
) -> None:
    """Submit the JSON spec in SPEC_FILE, follow it, and print the result."""
    try:
        spec = json.loads(spec_file.read_text())
    except (OSError, ValueError) as error:
        fail(f"cannot read a JSON spec from {spec_file}: {error}")
    created = client.request("POST", "/v1/experiments", json=spec)
    experiment_id = created["id"]
    click.echo(f"experiment {experiment_id} {created['status']}")
    if detach:
        return
    record = follow(client, experiment_id, poll_interval)
    sys.exit(report(client, record))


@main.command()
@click.argument("experiment_id")
@click.option("--json", "as_json", is_flag=True, help="Print the raw record.")
@click.pass_obj
def status(client: ApiClient, experiment_id: str, as_json: bool) -> None:
    """Print the status, progress and results of an experiment."""
    record = client.request("GET", f"/v1/experiments/{experiment_id}")
    if as_json:
        print_json(record)
        return
    progress = record["progress"]
    click.echo(f"experiment {record['id']}: {record['status']}")
    click.echo(
        f"  step {progress['steps_completed']}/{progress['total_steps']}, "
        f"epoch {progress['epochs_completed']}/{progress['total_epochs']}"
    )
    if record["status"] in TERMINAL:
        report(client, record)


@main.command()
@click.argument("experiment_id")
@click.option("--after", default=-1, show_default=True, help="Cursor to start after.")
@click.option(
    "--kind",
    type=click.Choice(["all", "step", "epoch"]),
    default="epoch",
    show_default=True,
    help="Which records to print.",
)
@click.pass_obj
def metrics(client: ApiClient, experiment_id: str, after: int, kind: str) -> None:
    """Print an experiment's metric records as JSON lines."""
    while True:
        page = client.request(
            "GET",
            f"/v1/experiments/{experiment_id}/metrics",
            params={"after": after, "limit": 10_000},
        )
        for record in page["records"]:
            if kind in ("all", record["kind"]):
                click.echo(json.dumps(record))
        if not page["records"]:
            return
        after = page["next_cursor"]


@main.command()
@click.argument("experiment_id")
@click.pass_obj
def analysis(client: ApiClient, experiment_id: str) -> None:
    """Print the critical-point analysis as JSON."""
    print_json(client.request("GET", f"/v1/experiments/{experiment_id}/analysis"))


@main.command()
@click.argument("experiment_id")
@click.pass_obj
def cancel(client: ApiClient, experiment_id: str) -> None:
    """Cancel a queued or running experiment."""
    record = client.request("POST", f"/v1/experiments/{experiment_id}/cancel")
    state = record["status"]
    if state == "running":
        state = "running, cancel requested"
    click.echo(f"experiment {record['id']}: {state}")


@main.command(name="list")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 100))
@click.pass_obj
def list_experiments(client: ApiClient, limit: int) -> None:
    """List the newest experiments."""
    page = client.request("GET", "/v1/experiments", params={"limit": limit})
    for record in page["items"]:
        name = record["spec"].get("name") or ""
        click.echo(
            f"{record['id']}  {record['status']:<10} {record['created_at']}  {name}"
        )


@main.command()
@click.argument(
    "sweep_file", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option("--detach", is_flag=True, help="Print the sweep id and return at once.")
@click.option(
    "--poll-interval",
    default=1.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="Seconds between polls.",
)
@click.pass_obj
def sweep(
    client: ApiClient, sweep_file: Path, detach: bool, poll_interval: float
) -> None:
    """Submit the JSON sweep in SWEEP_FILE, follow it, and print its table.

    Exits 0 when every child succeeds and 1 otherwise.
    """
    try:
        body = json.loads(sweep_file.read_text())
    except (OSError, ValueError) as error:
        fail(f"cannot read a JSON sweep from {sweep_file}: {error}")
    created = client.request("POST", "/v1/sweeps", json=body)
    sweep_id = created["id"]
    click.echo(f"sweep {sweep_id}: {created['counts']['total']} experiments")
    if created["enqueue_failed"]:
        click.echo(
            f"  {len(created['enqueue_failed'])} could not be queued and are "
            "failed as enqueue_failed",
            err=True,
        )
    if detach:
        return
    final = follow_sweep(client, sweep_id, poll_interval)
    table = client.request("GET", f"/v1/sweeps/{sweep_id}/table")
    click.echo(format_table(table))
    sys.exit(0 if final["counts"]["succeeded"] == final["counts"]["total"] else 1)


@main.command()
@click.argument("sweep_id")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV with a header row.")
@click.pass_obj
def table(client: ApiClient, sweep_id: str, as_csv: bool) -> None:
    """Print a sweep's table: one row per experiment with its values and outcomes.

    The aligned form leaves out columns that are empty in every row (except
    index and status), prints an empty cell as '-', and rounds numbers to 4
    significant digits. The CSV form has every column at full precision.
    """
    path = f"/v1/sweeps/{sweep_id}/table"
    if as_csv:
        click.echo(client.send("GET", path, params={"format": "csv"}).text, nl=False)
        return
    click.echo(format_table(client.request("GET", path)))


def follow_sweep(client: ApiClient, sweep_id: str, poll_interval: float) -> Any:
    """Show a bar of finished experiments until all have ended; return the sweep."""
    record = client.request("GET", f"/v1/sweeps/{sweep_id}")
    with tqdm(total=record["counts"]["total"], unit="run") as bar:
        while True:
            counts = record["counts"]
            ended = counts["succeeded"] + counts["failed"] + counts["cancelled"]
            bar.update(ended - bar.n)
            bar.set_postfix(running=counts["running"], failed=counts["failed"])
            if record["finished"]:
                return record
            time.sleep(poll_interval)
            record = client.request("GET", f"/v1/sweeps/{sweep_id}")


# Columns that the aligned table prints even when every cell is empty.
ALWAYS_SHOWN = {"index", "status"}


def format_table(table: dict[str, Any]) -> str:
    """Align a sweep table for a terminal, with the experiment id last."""
    rows: list[dict[str, Any]] = table["rows"]
    columns = [
        column
        for column in table["columns"]
        if column != "experiment_id"
        and (column in ALWAYS_SHOWN or any(row.get(column) is not None for row in rows))
    ]
    columns.append("experiment_id")
    cells = [[format_cell(row.get(column)) for column in columns] for row in rows]
    widths = [
        max([len(column), *(len(line[i]) for line in cells)])
        for i, column in enumerate(columns)
    ]
    numeric = [
        all(
            isinstance(row.get(column), int | float) or row.get(column) is None
            for row in rows
        )
        for column in columns
    ]
    lines = []
    for line in [columns, *cells]:
        padded = [
            text.rjust(width) if right else text.ljust(width)
            for text, width, right in zip(line, widths, numeric, strict=True)
        ]
        lines.append("  ".join(padded).rstrip())
    return "\n".join(lines)


def format_cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def follow(client: ApiClient, experiment_id: str, poll_interval: float) -> Any:
    """Show a progress bar until the experiment ends; return its final record."""
    record = client.request("GET", f"/v1/experiments/{experiment_id}")
    cursor = -1
    announced_analysis = False
    with tqdm(total=record["progress"]["total_steps"], unit="step") as bar:
        while True:
            page = client.request(
                "GET",
                f"/v1/experiments/{experiment_id}/metrics",
                params={"after": cursor, "limit": 10_000},
            )
            cursor = page["next_cursor"]
            update_bar(bar, page["records"])
            if page["status"] in TERMINAL and not page["records"]:
                break
            if page["records"]:
                continue
            if not announced_analysis:
                record = client.request("GET", f"/v1/experiments/{experiment_id}")
                if record["progress"]["phase"] == "analysis":
                    bar.set_description("Hessian analysis")
                    announced_analysis = True
            time.sleep(poll_interval)
    return client.request("GET", f"/v1/experiments/{experiment_id}")


def update_bar(bar: tqdm, records: list[dict[str, Any]]) -> None:
    steps = [record for record in records if record["kind"] == "step"]
    epochs = [record for record in records if record["kind"] == "epoch"]
    if steps:
        bar.update(steps[-1]["step"] + 1 - bar.n)
    if epochs:
        last = epochs[-1]
        bar.set_postfix(
            epoch=last["epoch"],
            train_loss=format_number(last["train_loss"]),
            val_acc=format_number(last["val_accuracy"]),
        )


def report(client: ApiClient, record: dict[str, Any]) -> int:
    """Print the outcome of a finished experiment; return the exit code."""
    experiment_id = record["id"]
    click.echo(f"experiment {experiment_id}: {record['status']}")
    failure = record.get("failure")
    if failure:
        step = f" at step {failure['step']}" if failure.get("step") is not None else ""
        click.echo(f"  failure: {failure['code']}{step}: {failure['message']}")
    summary = record.get("summary")
    if summary:
        click.echo(
            f"  {summary['steps']} steps, {summary['epochs']} epochs in "
            f"{summary['wall_time_s']:.1f} s on {summary['device']}"
        )
        click.echo(
            f"  train loss {format_number(summary['train_loss'])}, "
            f"accuracy {summary['train_accuracy']:.4f}"
        )
        click.echo(
            f"  validation loss {format_number(summary['val_loss'])}, "
            f"accuracy {summary['val_accuracy']:.4f}"
        )
    if record["status"] == "succeeded" and record["spec"]["analysis"]["enabled"]:
        print_analysis(
            client.request("GET", f"/v1/experiments/{experiment_id}/analysis")
        )
    return 0 if record["status"] == "succeeded" else 1


def print_analysis(result: dict[str, Any]) -> None:
    click.echo(f"  verdict: {result['verdict']}")
    click.echo(f"    {result['verdict_reason']}")
    click.echo(
        f"    loss {format_number(result['loss'])}, gradient norm "
        f"{format_number(result['gradient_norm'])} "
        f"(tolerance {format_number(result['gradient_tolerance'])})"
    )
    click.echo(
        f"    eigenvalues of {result['parameter_count']} parameters: "
        f"{result['positive_count']} positive, {result['negative_count']} negative, "
        f"{result['zero_count']} zero (|eigenvalue| <= "
        f"{format_number(result['eigenvalue_tolerance'])})"
    )
    click.echo(
        f"    min {format_number(result['min_eigenvalue'])}, max "
        f"{format_number(result['max_eigenvalue'])}, minimum ratio "
        f"{result['minimum_ratio']:.4f}"
    )
    escape = result.get("escape")
    if escape and escape.get("best_step_size") is not None:
        best = min(
            (trial for trial in escape["trials"] if trial["loss"] is not None),
            key=lambda trial: trial["loss"],
        )
        click.echo(
            f"    escape along eigenvalue {format_number(escape['eigenvalue'])}: "
            f"step {best['step_size']:g} lowers the loss by "
            f"{format_number(-best['loss_change'])}"
        )


def format_number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


if __name__ == "__main__":
    main()
