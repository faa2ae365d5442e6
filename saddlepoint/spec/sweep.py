"""Sweeps: one base spec and the values to vary, expanded into child specs.

A sweep names spec fields by dotted path (``"optimizer.learning_rate"``,
``"batch_size"``). A ``grid`` maps each path to a list of values and yields
their cartesian product, the last path varying fastest. ``overrides`` lists
the children explicitly, each a mapping of path to value.

Each child starts from the fields that the base spec sets, and its paths are
applied shortest first, so a whole object (``"optimizer"``) is replaced before
a path into it (``"optimizer.learning_rate"``) changes one of its fields. A
path into an object that the base leaves at its default starts from that
default. Every child is then validated as a full :class:`ExperimentSpec` and
against the deployment limits, and a sweep with any invalid child is rejected
as a whole.
"""

import copy
import difflib
import itertools
import json
import math
import types
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, Field, ValidationError, model_validator
from pydantic_core import ErrorDetails

from saddlepoint.spec.base import StrictModel
from saddlepoint.spec.experiment import ExperimentSpec, Limits, check_limits

MAX_NAME_CHARS = 200

SpecPath = Annotated[
    str,
    Field(
        min_length=1,
        max_length=200,
        description="Dotted path of a spec field, such as optimizer.learning_rate.",
    ),
]


class SweepSpec(StrictModel):
    """A base experiment spec and either a grid or a list of overrides."""

    name: str | None = Field(None, max_length=MAX_NAME_CHARS, description="Label.")
    kind: Literal["grid", "census"] = Field(
        "grid",
        description=(
            "grid: ordinary children. census: every child also searches for a "
            "critical point after training (analysis.critical_search is turned "
            "on) and GET /v1/sweeps/{id}/census scatters each point's minimum "
            "ratio against its training loss."
        ),
    )
    base: ExperimentSpec = Field(
        default_factory=ExperimentSpec,
        description="Spec that every child starts from.",
    )
    grid: dict[SpecPath, Annotated[list[Any], Field(min_length=1)]] | None = Field(
        None,
        min_length=1,
        description=(
            "Values to try for each path; the children are their cartesian "
            "product, the last path varying fastest."
        ),
    )
    overrides: Annotated[list[dict[SpecPath, Any]], Field(min_length=1)] | None = Field(
        None, description="One mapping of path to value per child."
    )

    @model_validator(mode="after")
    def _census_searches(self) -> "SweepSpec":
        """Turn on the analysis and the critical-point search for a census."""
        if self.kind != "census":
            return self
        analysis = self.base.analysis
        if analysis.enabled and analysis.critical_search.enabled:
            return self
        fields = self.base.model_dump(mode="json", exclude_unset=True)
        section = fields.setdefault("analysis", {})
        section["enabled"] = True
        section.setdefault("critical_search", {})["enabled"] = True
        base = ExperimentSpec.model_validate(fields)
        object.__setattr__(self, "base", base)
        return self

    @model_validator(mode="after")
    def _grid_or_overrides(self) -> "SweepSpec":
        if (self.grid is None) == (self.overrides is None):
            raise ValueError(
                "a sweep needs exactly one of grid (values per path, combined as "
                "a cartesian product) or overrides (a list of path-to-value "
                "mappings, one per child)"
            )
        return self

    @property
    def child_count(self) -> int:
        """Number of children, computed without expanding the grid."""
        if self.grid is not None:
            return math.prod(len(values) for values in self.grid.values())
        return len(self.overrides or [])

    @property
    def varied_paths(self) -> list[str]:
        """Paths in the grid's order, or in order of first use in the overrides."""
        if self.grid is not None:
            return list(self.grid)
        paths: dict[str, None] = {}
        for override in self.overrides or []:
            paths.update(dict.fromkeys(override))
        return list(paths)

    def assignments(self) -> Iterator[dict[str, Any]]:
        """Yield each child's mapping of path to requested value, in child order."""
        if self.grid is not None:
            paths = list(self.grid)
            for combination in itertools.product(*self.grid.values()):
                yield dict(zip(paths, combination, strict=True))
        else:
            yield from self.overrides or []


@dataclass(frozen=True)
class PlannedChild:
    """A validated child: its index, its value at each varied path, its spec."""

    index: int
    values: dict[str, Any]
    spec: ExperimentSpec


@dataclass(frozen=True)
class SweepProblem:
    """One reason a sweep is invalid.

    ``field`` is the location in the request: ``grid.<path>``,
    ``overrides.<i>.<path>`` or ``children.<i>.<spec field>``. ``child`` is the
    index of the invalid child, or None for a problem of the sweep as a whole.
    """

    field: str
    value: Any
    message: str
    child: int | None = None


class InvalidSweep(ValueError):
    """The sweep cannot run; ``problems`` lists every reason found."""

    def __init__(self, problems: Sequence[SweepProblem]) -> None:
        self.problems = list(problems)
        first = self.problems[0]
        more = len(self.problems) - 1
        suffix = f" (and {more} more problems)" if more else ""
        super().__init__(f"invalid sweep: {first.field}: {first.message}{suffix}")


class SweepTooLarge(InvalidSweep):
    """The sweep has more children than the deployment accepts."""


def plan_sweep(
    sweep: SweepSpec, max_children: int, limits: Limits
) -> list[PlannedChild]:
    """Expand ``sweep`` into validated child specs, in child order.

    Raises SweepTooLarge before expanding anything when the sweep has more
    than ``max_children`` children, and InvalidSweep when a path is unknown or
    any child fails validation or ``limits``.
    """
    _check_size(sweep, max_children)
    path_problems = _check_paths(sweep)
    if path_problems:
        raise InvalidSweep(path_problems)

    defaults = sweep.base.model_dump(mode="json")
    explicit = sweep.base.model_dump(mode="json", exclude_unset=True)
    paths = sweep.varied_paths
    children: list[PlannedChild] = []
    problems: list[SweepProblem] = []
    for index, assignment in enumerate(sweep.assignments()):
        label = _describe_assignment(assignment)
        data = _apply(explicit, defaults, assignment, index, label, problems)
        if data is None:
            continue
        if assignment and "name" not in assignment:
            data["name"] = _child_name(sweep.name or sweep.base.name, label)
        spec = _validate_child(data, index, label, limits, problems)
        if spec is not None:
            values = _effective_values(spec, paths)
            children.append(PlannedChild(index=index, values=values, spec=spec))
    if problems:
        raise InvalidSweep(problems)
    return children


def _check_size(sweep: SweepSpec, max_children: int) -> None:
    count = sweep.child_count
    if count <= max_children:
        return
    if sweep.grid is not None:
        sizes = " x ".join(str(len(values)) for values in sweep.grid.values())
        shape = f"a grid of {sizes} values"
        field = "grid"
    else:
        shape = "one per override"
        field = "overrides"
    message = (
        f"the sweep has {count} children ({shape}) but this service accepts at "
        f"most {max_children} per sweep; use fewer values, or split it into "
        "several sweeps"
    )
    raise SweepTooLarge([SweepProblem(field=field, value=count, message=message)])


def _check_paths(sweep: SweepSpec) -> list[SweepProblem]:
    """Check every path against the spec's fields, once per distinct path."""
    locations: dict[str, str] = {}
    if sweep.grid is not None:
        locations = {path: f"grid.{path}" for path in sweep.grid}
    for index, override in enumerate(sweep.overrides or []):
        for path in override:
            locations.setdefault(path, f"overrides.{index}.{path}")
    problems = []
    for path, location in locations.items():
        message = path_error(path)
        if message is not None:
            problems.append(SweepProblem(field=location, value=path, message=message))
    return problems


def path_error(path: str) -> str | None:
    """Return why ``path`` names no field of ExperimentSpec, or None if it does.

    A path may end at any field, an object or a single value, but it cannot
    go into a single value such as a list. Where a field is a union of
    objects (the optimizer, the schedule), the fields of every member count.
    """
    segments = path.split(".")
    if not all(segments):
        return (
            f"path {path!r} is invalid; write field names joined by dots, such "
            "as 'optimizer.learning_rate'"
        )
    models: tuple[type[BaseModel], ...] = (ExperimentSpec,)
    walked: list[str] = []
    for segment in segments:
        parent = ".".join(walked) or "the spec"
        if not models:
            return (
                f"unknown path {path!r}: {parent} is a single value, not an "
                f"object; set its whole value with the path {parent!r}"
            )
        fields = {name for model in models for name in model.model_fields}
        if segment not in fields:
            return _unknown_field_message(path, parent, walked, segment, fields)
        walked.append(segment)
        models = tuple(
            member
            for model in models
            if segment in model.model_fields
            for member in _object_members(model.model_fields[segment].annotation)
        )
    return None


def _unknown_field_message(
    path: str, parent: str, walked: list[str], segment: str, fields: set[str]
) -> str:
    names = sorted(fields)
    close = difflib.get_close_matches(segment, names, n=1)
    hint = f"did you mean {'.'.join([*walked, close[0]])!r}? " if close else ""
    return (
        f"unknown path {path!r}: {parent} has no field {segment!r}; {hint}"
        f"the fields of {parent} are {', '.join(names)}"
    )


def _object_members(annotation: Any) -> tuple[type[BaseModel], ...]:
    """Return the pydantic models that a field's annotation accepts."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _object_members(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        return tuple(
            member for arg in get_args(annotation) for member in _object_members(arg)
        )
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return (annotation,)
    return ()


def _apply(
    explicit: dict[str, Any],
    defaults: dict[str, Any],
    assignment: Mapping[str, Any],
    index: int,
    label: str,
    problems: list[SweepProblem],
) -> dict[str, Any] | None:
    """Return the base's fields with ``assignment`` applied, shortest path first.

    Appends a problem and returns None when a path goes into a value that an
    earlier, shorter path set to something other than an object.
    """
    data = copy.deepcopy(explicit)
    for path in sorted(assignment, key=lambda item: item.count(".")):
        segments = path.split(".")
        target: dict[str, Any] = data
        default: Any = defaults
        for depth, segment in enumerate(segments[:-1]):
            default = default.get(segment) if isinstance(default, dict) else None
            if segment not in target:
                target[segment] = copy.deepcopy(default) if default else {}
            if not isinstance(target[segment], dict):
                parent = ".".join(segments[: depth + 1])
                problems.append(
                    SweepProblem(
                        field=f"children.{index}.{path}",
                        value=target[segment],
                        message=(
                            f"child {index} ({label}): cannot set {path} because "
                            f"{parent} is {_render(target[segment])}, not an object"
                        ),
                        child=index,
                    )
                )
                return None
            target = target[segment]
        target[segments[-1]] = copy.deepcopy(assignment[path])
    return data


def _validate_child(
    data: dict[str, Any],
    index: int,
    label: str,
    limits: Limits,
    problems: list[SweepProblem],
) -> ExperimentSpec | None:
    try:
        spec = ExperimentSpec.model_validate(data)
    except ValidationError as error:
        for detail in error.errors():
            field, message = _describe_error(detail, data)
            problems.append(
                SweepProblem(
                    field=f"children.{index}.{field}",
                    value=detail.get("input"),
                    message=f"child {index} ({label}): {message}",
                    child=index,
                )
            )
        return None

    violations = check_limits(spec, limits)
    for violation in violations:
        problems.append(
            SweepProblem(
                field=f"children.{index}.{violation.field}",
                value=violation.value,
                message=f"child {index} ({label}): {violation.message}",
                child=index,
            )
        )
    return None if violations else spec


def _describe_error(error: ErrorDetails, data: Any) -> tuple[str, str]:
    """Return the dotted field of a pydantic error and a message with the fix.

    Pydantic puts union tags and member names (``sgd``, ``int``) into error
    locations. Walking the location through the child's data drops them,
    because they are not keys of the data.
    """
    location = list(error.get("loc", ()))
    parts: list[str] = []
    node = data
    for position, item in enumerate(location):
        last = position == len(location) - 1
        if _has_key(node, item):
            node = node[item]
        elif not last:
            continue
        parts.append(str(item))
    field = ".".join(parts)

    kind = error.get("type", "")
    message = str(error.get("msg", "invalid value"))
    if kind == "extra_forbidden":
        message = (
            f"unknown field {field!r}; remove it, check its spelling, or override "
            "the whole parent object when switching between kinds (such as "
            "optimizer names)"
        )
    elif kind == "missing":
        message = f"field {field!r} is required"
    elif kind == "union_tag_invalid":
        expected = error.get("ctx", {}).get("expected_tags", "")
        message = f"unknown name; use one of {expected}"
    return field, message


def _has_key(node: Any, item: str | int) -> bool:
    if isinstance(node, dict):
        return item in node
    return isinstance(node, list) and isinstance(item, int) and 0 <= item < len(node)


def _effective_values(spec: ExperimentSpec, paths: Sequence[str]) -> dict[str, Any]:
    """Return the child's value at each varied path, or None where it has no field."""
    dumped = spec.model_dump(mode="json")
    values: dict[str, Any] = {}
    for path in paths:
        node: Any = dumped
        for segment in path.split("."):
            node = node.get(segment) if isinstance(node, dict) else None
        values[path] = node
    return values


def _describe_assignment(assignment: Mapping[str, Any]) -> str:
    if not assignment:
        return "the base spec"
    return ", ".join(f"{path}={_render(value)}" for path, value in assignment.items())


def _render(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), default=str)


def _child_name(label: str | None, assignment: str) -> str:
    name = f"{label} [{assignment}]" if label else assignment
    if len(name) > MAX_NAME_CHARS:
        name = name[: MAX_NAME_CHARS - 3] + "..."
    return name
