"""Commands for single experiments: submit, follow, inspect, continue, cancel."""

import json
import sys
import time
from pathlib import Path
from typing import Any

import click
from tqdm import tqdm

from saddlepoint.cli.client import (
    EXPERIMENT_ID,
    TERMINAL,
    ApiClient,
    ExitCode,
    format_fraction,
    format_number,
    print_json,
    print_warnings,
    read_json_file,
    url_path,
)

# Points an experiment can save and another continue from; the API checks
# the value too and lists the valid ones.
SAVED_POINTS = ("final", "escape", "critical")

POLL_INTERVAL = click.option(
    "--poll-interval",
    default=0.5,
    show_default=True,
    type=click.FloatRange(min=0.05),
    help="Seconds between polls.",
)


def experiment_path(experiment_id: str, *rest: str) -> str:
    return url_path("v1", "experiments", experiment_id, *rest)


@click.command()
@click.argument(
    "spec_file", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option("--detach", is_flag=True, help="Print the id and return at once.")
@POLL_INTERVAL
@click.pass_obj
def submit(
    client: ApiClient, spec_file: Path, detach: bool, poll_interval: float
) -> None:
    """Submit the JSON spec in SPEC_FILE, follow it, and print the result."""
    spec = read_json_file(spec_file, "spec")
    created = client.request("POST", "/v1/experiments", json=spec)
    click.echo(f"experiment {created['id']} {created['status']}")
    print_warnings(created)
    if detach:
        return
    record = follow(client, created["id"], poll_interval)
    sys.exit(report(client, record))


@click.command(name="continue")
@click.argument("experiment_id", type=EXPERIMENT_ID)
@click.option(
    "--point",
    type=click.Choice(SAVED_POINTS),
    default="escape",
    show_default=True,
    help=(
        "Saved point to start from: final (where training stopped), escape "
        "(the best point of the saddle escape) or critical (the end of the "
        "critical-point search)."
    ),
)
@click.option(
    "--epochs", required=True, type=click.IntRange(min=1), help="Epochs to train."
)
@click.option("--name", default=None, help="Name of the new experiment.")
@click.option("--detach", is_flag=True, help="Print the new id and return at once.")
@POLL_INTERVAL
@click.pass_obj
def continue_experiment(
    client: ApiClient,
    experiment_id: str,
    point: str,
    epochs: int,
    name: str | None,
    detach: bool,
    poll_interval: float,
) -> None:
    """Train on from a point EXPERIMENT_ID saved, as a new experiment.

    The new experiment has the spec of EXPERIMENT_ID, starts from the saved
    --point and trains for --epochs epochs. It is followed and reported like
    submit.
    """
    body: dict[str, Any] = {"point": point, "epochs": epochs}
    if name is not None:
        body["name"] = name
    created = client.request(
        "POST", experiment_path(experiment_id, "continue"), json=body
    )
    click.echo(
        f"experiment {created['id']} {created['status']}: continues "
        f"{experiment_id} from its {point} point"
    )
    print_warnings(created)
    if detach:
        return
    record = follow(client, created["id"], poll_interval)
    sys.exit(report(client, record))


@click.command()
@click.argument("experiment_id", type=EXPERIMENT_ID)
@click.option("--json", "as_json", is_flag=True, help="Print the raw record.")
@click.pass_obj
def status(client: ApiClient, experiment_id: str, as_json: bool) -> None:
    """Print the status, progress and results of an experiment."""
    record = client.request("GET", experiment_path(experiment_id))
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
        sys.exit(report(client, record, announce=False))


@click.command()
@click.argument("experiment_id", type=EXPERIMENT_ID)
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
            experiment_path(experiment_id, "metrics"),
            params={"after": after, "limit": 10_000},
        )
        for record in page["records"]:
            if kind in ("all", record["kind"]):
                click.echo(json.dumps(record))
        if not page["records"]:
            return
        after = page["next_cursor"]


@click.command()
@click.argument("experiment_id", type=EXPERIMENT_ID)
@click.pass_obj
def analysis(client: ApiClient, experiment_id: str) -> None:
    """Print the critical-point analysis as JSON."""
    print_json(client.request("GET", experiment_path(experiment_id, "analysis")))


ANALYSES_COLUMNS = (
    "index",
    "trigger",
    "epoch",
    "verdict",
    "gradient_norm",
    "minimum_ratio",
    "method",
)


@click.command()
@click.argument("experiment_id", type=EXPERIMENT_ID)
@click.pass_obj
def analyses(client: ApiClient, experiment_id: str) -> None:
    """List every analysis of an experiment, one line each, in the order they ran.

    Columns: index, trigger (final, epoch, gradient_threshold or
    critical_search), epoch, verdict, gradient norm, minimum ratio (the share
    of positive eigenvalues) and method (exact or lanczos).
    """
    results = client.request("GET", experiment_path(experiment_id, "analyses"))
    if not results:
        click.echo(f"experiment {experiment_id} has no analyses yet", err=True)
        return
    rows = [
        [
            str(result["index"]),
            str(result["trigger"]),
            "-" if result.get("epoch") is None else str(result["epoch"]),
            str(result["verdict"]),
            format_number(result["gradient_norm"]),
            format_fraction(result.get("minimum_ratio")),
            str(result.get("method", "exact")),
        ]
        for result in results
    ]
    click.echo(align_columns(list(ANALYSES_COLUMNS), rows))


def align_columns(header: list[str], rows: list[list[str]]) -> str:
    """Left-align text columns two spaces apart, under a header line."""
    widths = [
        max(len(line[index]) for line in [header, *rows])
        for index in range(len(header))
    ]
    lines = [
        "  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True))
        for line in [header, *rows]
    ]
    return "\n".join(line.rstrip() for line in lines)


@click.command()
@click.argument("experiment_id", type=EXPERIMENT_ID)
@click.pass_obj
def cancel(client: ApiClient, experiment_id: str) -> None:
    """Cancel a queued or running experiment."""
    record = client.request("POST", experiment_path(experiment_id, "cancel"))
    state = record["status"]
    if state == "running":
        state = "running, cancel requested"
    click.echo(f"experiment {record['id']}: {state}")


@click.command(name="list")
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


COMMANDS = [
    submit,
    continue_experiment,
    status,
    metrics,
    analysis,
    analyses,
    cancel,
    list_experiments,
]


def follow(client: ApiClient, experiment_id: str, poll_interval: float) -> Any:
    """Show a progress bar until the experiment ends; return its final record."""
    path = experiment_path(experiment_id)
    record = client.request("GET", path)
    cursor = -1
    announced_analysis = False
    with tqdm(total=record["progress"]["total_steps"], unit="step") as bar:
        while True:
            page = client.request(
                "GET",
                experiment_path(experiment_id, "metrics"),
                params={"after": cursor, "limit": 10_000},
            )
            cursor = page["next_cursor"]
            update_bar(bar, page["records"])
            if page["status"] in TERMINAL and not page["records"]:
                break
            if page["records"]:
                continue
            if not announced_analysis:
                record = client.request("GET", path)
                if record["progress"]["phase"] == "analysis":
                    bar.set_description("Hessian analysis")
                    announced_analysis = True
            time.sleep(poll_interval)
    return client.request("GET", path)


def update_bar(bar: tqdm, records: list[dict[str, Any]]) -> None:
    steps = [record for record in records if record["kind"] == "step"]
    epochs = [record for record in records if record["kind"] == "epoch"]
    if steps:
        bar.update(steps[-1]["step"] + 1 - bar.n)
    if epochs:
        last = epochs[-1]
        bar.set_postfix(
            epoch=last["epoch"],
            train_loss=format_number(last.get("train_loss")),
            val_acc=format_number(last.get("val_accuracy")),
        )


def report(client: ApiClient, record: dict[str, Any], announce: bool = True) -> int:
    """Print the outcome of a finished experiment; return the exit code.

    ``announce`` prints the status line first, which ``status`` already did.
    """
    experiment_id = record["id"]
    if announce:
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
        # Accuracy is null for regression datasets.
        click.echo(
            f"  train loss {format_number(summary.get('train_loss'))}, "
            f"accuracy {format_fraction(summary.get('train_accuracy'))}"
        )
        click.echo(
            f"  validation loss {format_number(summary.get('val_loss'))}, "
            f"accuracy {format_fraction(summary.get('val_accuracy'))}"
        )
    if record["status"] == "succeeded" and record["spec"]["analysis"]["enabled"]:
        print_analysis(
            client.request("GET", experiment_path(experiment_id, "analysis"))
        )
    if record["status"] == "succeeded":
        return ExitCode.SUCCEEDED
    return ExitCode.EXPERIMENT_FAILED


def print_analysis(result: dict[str, Any]) -> None:
    click.echo(f"  verdict: {result['verdict']}")
    click.echo(f"    {result['verdict_reason']}")
    click.echo(
        f"    loss {format_number(result['loss'])}, gradient norm "
        f"{format_number(result['gradient_norm'])} "
        f"(tolerance {format_number(result['gradient_tolerance'])})"
    )
    if result.get("positive_count") is not None:
        click.echo(
            f"    eigenvalues of {result['parameter_count']} parameters: "
            f"{result['positive_count']} positive, {result['negative_count']} "
            f"negative, {result['zero_count']} zero (|eigenvalue| <= "
            f"{format_number(result['eigenvalue_tolerance'])})"
        )
    click.echo(
        f"    min {format_number(result['min_eigenvalue'])}, max "
        f"{format_number(result['max_eigenvalue'])}, minimum ratio "
        f"{format_fraction(result.get('minimum_ratio'))}"
    )
    escape = result.get("escape")
    trials = [
        trial for trial in (escape or {}).get("trials", []) if trial["loss"] is not None
    ]
    if escape and escape.get("best_step_size") is not None and trials:
        best = min(trials, key=lambda trial: trial["loss"])
        click.echo(
            f"    escape along eigenvalue {format_number(escape['eigenvalue'])}: "
            f"step {best['step_size']:g} lowers the loss by "
            f"{format_number(-best['loss_change'])}"
        )
