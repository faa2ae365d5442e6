"""HTTP client, input checks and exit codes shared by the ``saddle`` commands."""

import json
import sys
from enum import IntEnum
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import quote

import click
import httpx

from saddlepoint.ids import is_ulid

DEFAULT_API_URL = "http://127.0.0.1:8000"
TERMINAL = {"succeeded", "failed", "cancelled"}


class ExitCode(IntEnum):
    """Exit status of every ``saddle`` command."""

    SUCCEEDED = 0
    # The experiment failed or was cancelled, or a sweep child did not succeed.
    EXPERIMENT_FAILED = 1
    # The API rejected the request or could not be reached, or an input file
    # or argument is invalid. Click's own usage errors also exit 2.
    REJECTED = 2


EXIT_CODES_HELP = """\b
Exit status:
  0  the command worked; submit, continue and status: the experiment
     succeeded (status: or has not finished yet)
  1  the experiment failed or was cancelled; sweep: a child did not succeed
  2  the API rejected the request or could not be reached, or an input
     file or argument is invalid
"""


def fail(message: str, code: ExitCode = ExitCode.REJECTED) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


class ApiClient:
    """Thin HTTP client of the saddlepoint API that exits with its error message."""

    def __init__(self, base_url: str, timeout_s: float = 30.0) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=timeout_s)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send a request and return the decoded JSON body."""
        response = self.send(method, path, **kwargs)
        try:
            return response.json()
        except ValueError:
            fail(
                f"the API at {self.http.base_url} sent a body that is not JSON "
                f"for {method} {path}; check that --api names a saddlepoint API"
            )

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
    """Return the API's error message and details, or the raw body if it has none."""
    try:
        error = response.json()["error"]
        lines = [f"HTTP {response.status_code} {error['code']}: {error['message']}"]
        details = error.get("details") or []
        for detail in details[1:]:
            lines.append(f"  {detail['field']}: {detail['message']}")
    except (ValueError, KeyError, TypeError, AttributeError):
        return f"HTTP {response.status_code}: {response.text[:500]}"
    return "\n".join(lines)


class ResourceId(click.ParamType):
    """An experiment or sweep id: a ULID, 26 characters of Crockford base32.

    Checked before it goes into a URL path, so no argument can reach another
    route (``../../healthz``); it is also percent-encoded there.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.name = f"{kind} id"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> str:
        text = str(value)
        if not is_ulid(text):
            self.fail(
                f"{text!r} is not a valid {self.kind} id; ids are 26 characters of "
                "Crockford base32 (digits and capital letters except I, L, O "
                "and U), as printed when it was submitted",
                param,
                ctx,
            )
        return text


EXPERIMENT_ID = ResourceId("experiment")
SWEEP_ID = ResourceId("sweep")


def url_path(*segments: str) -> str:
    """Join path segments, percent-encoding each one."""
    return "/" + "/".join(quote(segment, safe="") for segment in segments)


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON; write a finite number")


def read_json_file(path: Path, document_kind: str) -> Any:
    """Read a JSON file, exiting with code 2 if it is unreadable or not strict JSON.

    Python's json module accepts NaN and Infinity, which JSON does not, so
    they are rejected here with the rest of the invalid input.
    """
    try:
        return json.loads(path.read_text(), parse_constant=_reject_constant)
    except (OSError, ValueError) as error:
        fail(f"cannot read a JSON {document_kind} from {path}: {error}")


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2))


def print_warnings(created: dict[str, Any]) -> None:
    """Print the warnings the API returned with an accepted request."""
    for warning in created.get("warnings") or []:
        click.echo(f"warning: {warning}", err=True)


def format_number(value: float | None) -> str:
    """Format a number with 4 significant digits, or "n/a" when it is missing."""
    return "n/a" if value is None else f"{value:.4g}"


def format_fraction(value: float | None) -> str:
    """Format a value in [0, 1] with 4 decimals, or "n/a" when it is missing."""
    return "n/a" if value is None else f"{value:.4f}"
