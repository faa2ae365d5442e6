"""Commands for sweeps: submit one, follow it, print its table."""

import json
import sys
import time
from pathlib import Path
from typing import Any

import click
from tqdm import tqdm

from saddlepoint.cli.client import (
    SWEEP_ID,
    ApiClient,
    ExitCode,
    read_json_file,
    url_path,
)


@click.command()
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
    body = read_json_file(sweep_file, "sweep")
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
    table = client.request("GET", url_path("v1", "sweeps", sweep_id, "table"))
    click.echo(format_table(table))
    all_succeeded = final["counts"]["succeeded"] == final["counts"]["total"]
    sys.exit(ExitCode.SUCCEEDED if all_succeeded else ExitCode.EXPERIMENT_FAILED)


@click.command()
@click.argument("sweep_id", type=SWEEP_ID)
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV with a header row.")
@click.pass_obj
def table(client: ApiClient, sweep_id: str, as_csv: bool) -> None:
    """Print a sweep's table: one row per experiment with its values and outcomes.

    The aligned form leaves out columns that are empty in every row (except
    index and status), prints an empty cell as '-', and rounds numbers to 4
    significant digits. The CSV form has every column at full precision.
    """
    path = url_path("v1", "sweeps", sweep_id, "table")
    if as_csv:
        click.echo(client.send("GET", path, params={"format": "csv"}).text, nl=False)
        return
    click.echo(format_table(client.request("GET", path)))


COMMANDS = [sweep, table]


def follow_sweep(client: ApiClient, sweep_id: str, poll_interval: float) -> Any:
    """Show a bar of finished experiments until all have ended; return the sweep."""
    path = url_path("v1", "sweeps", sweep_id)
    record = client.request("GET", path)
    with tqdm(total=record["counts"]["total"], unit="run") as bar:
        while True:
            counts = record["counts"]
            ended = counts["succeeded"] + counts["failed"] + counts["cancelled"]
            bar.update(ended - bar.n)
            bar.set_postfix(running=counts["running"], failed=counts["failed"])
            if record["finished"]:
                return record
            time.sleep(poll_interval)
            record = client.request("GET", path)


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
