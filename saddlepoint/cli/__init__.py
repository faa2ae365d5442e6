"""The ``saddle`` command: submit specs, follow runs, read results."""

from typing import Any

import click

from saddlepoint.cli import experiments, sweeps
from saddlepoint.cli.client import (
    DEFAULT_API_URL,
    EXIT_CODES_HELP,
    ApiClient,
    fail,
)


class SaddleGroup(click.Group):
    """Command group that reports a malformed API response without a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (KeyError, TypeError, IndexError) as error:
            # The commands index responses by the documented schema; a body
            # without those fields comes from another server or version.
            fail(
                "the API sent a response without the expected fields "
                f"({type(error).__name__}: {error}); check that --api names a "
                "saddlepoint API of this version"
            )


@click.group(cls=SaddleGroup, epilog=EXIT_CODES_HELP)
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


for command in [*experiments.COMMANDS, *sweeps.COMMANDS]:
    main.add_command(command)
