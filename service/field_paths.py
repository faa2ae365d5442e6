"""Field paths of validation errors as the client wrote them.

Pydantic puts more than field names into an error location: the tag of a
discriminated union (``optimizer.rmsprop.eps``) and the member of a plain
union (``batch_size.int``). :func:`field_path` drops both. The tags come from
the JSON schema of the experiment spec, so a new optimizer, schedule, dataset
or layer needs no change here.
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from saddlepoint.spec import ExperimentSpec

# Prefixes that FastAPI puts ahead of the field path to name its source.
_LOCATION_SOURCES = ("body", "query", "path", "header", "cookie")
# Names that pydantic gives the members of a plain union in error locations:
# "int" and "float" for int | float, "literal['full']", "list[int]",
# "function-after[...]" for a validated member.
_MEMBER_NAMES = frozenset({"int", "float", "str", "bool", "none"})
_MEMBER_LABEL = re.compile(r"^[a-z][a-z-]*\[.*\]$")


@dataclass
class _TaggedUnion:
    """A discriminated union field of the spec, as its JSON schema shows it."""

    tag_field: str
    tags: list[str]
    member_fields: set[str]
    is_list: bool


@cache
def _tagged_unions() -> dict[str, _TaggedUnion]:
    """Map each spec property that contains a tagged union to the union.

    Read from the JSON schema of ExperimentSpec, whose fields include every
    tagged union of the other request bodies (sweep bases, schedule previews).
    A property that contains a list of union members, such as ``layers``, has
    ``is_list`` set.
    """
    schema = ExperimentSpec.model_json_schema()
    definitions = schema.get("$defs", {})
    unions: dict[str, _TaggedUnion] = {}
    for model in [schema, *definitions.values()]:
        for name, prop in model.get("properties", {}).items():
            found = _find_discriminator(prop)
            if found is None:
                continue
            discriminator, is_list = found
            mapping: dict[str, str] = discriminator.get("mapping", {})
            members = {ref.rsplit("/", 1)[-1] for ref in mapping.values()}
            fields = {
                field
                for member in members
                for field in definitions.get(member, {}).get("properties", {})
            }
            union = unions.setdefault(
                name,
                _TaggedUnion(
                    tag_field=discriminator["propertyName"],
                    tags=[],
                    member_fields=set(),
                    is_list=is_list,
                ),
            )
            union.tags.extend(tag for tag in mapping if tag not in union.tags)
            union.member_fields |= fields
    return unions


def _find_discriminator(prop: dict[str, Any]) -> tuple[dict[str, Any], bool] | None:
    """Return the discriminator of a property's union, and whether it is a list."""
    for candidate, is_list in ((prop, False), (prop.get("items", {}), True)):
        for option in [candidate, *candidate.get("anyOf", [])]:
            if "discriminator" in option:
                return option["discriminator"], is_list
    return None


def _union_at(parts: Sequence[str | int]) -> _TaggedUnion | None:
    """Return the tagged union whose member the location ``parts`` is inside."""
    if parts and isinstance(parts[-1], str):
        union = _tagged_unions().get(parts[-1])
        return union if union is not None and not union.is_list else None
    if len(parts) >= 2 and isinstance(parts[-1], int) and isinstance(parts[-2], str):
        union = _tagged_unions().get(parts[-2])
        return union if union is not None and union.is_list else None
    return None


def _is_union_tag(parts: Sequence[str | int], item: str | int) -> bool:
    """Return whether ``item`` is a tag that pydantic put in the location.

    A tag that is also a member's field, such as ``layers`` in
    ``model.layers``, counts as the field.
    """
    union = _union_at(parts)
    return (
        union is not None
        and isinstance(item, str)
        and item in union.tags
        and item not in union.member_fields
    )


def _is_member_label(item: str | int) -> bool:
    return isinstance(item, str) and (
        item in _MEMBER_NAMES or _MEMBER_LABEL.match(item) is not None
    )


def field_path(location: Sequence[str | int], kind: str = "") -> str:
    """Join an error location into the dotted path the client wrote.

    Drops the leading source (``body``, ``query``), union tags such as the
    ``rmsprop`` in ``optimizer.rmsprop.eps``, and union member names such as
    ``int``. The last item of an ``extra_forbidden`` error is the client's own
    key, so it is always kept.
    """
    items = list(location)
    if items and items[0] in _LOCATION_SOURCES:
        items = items[1:]
    parts: list[str | int] = []
    for position, item in enumerate(items):
        own_key = kind == "extra_forbidden" and position == len(items) - 1
        if not own_key and (_is_union_tag(parts, item) or _is_member_label(item)):
            continue
        parts.append(item)
    return ".".join(str(part) for part in parts)


def union_tags(field: str) -> list[str]:
    """Return the valid tags of the tagged union in spec property ``field``.

    Returns an empty list when ``field`` contains no tagged union.
    """
    union = _tagged_unions().get(field)
    return list(union.tags) if union else []
