"""Tagged unions whose validation errors name fields as the client wrote them.

Pydantic puts the tag of a discriminated union into each error location, so a
bad kernel size would be reported at ``model.layers.layers.3.conv2d.kernel_size``.
:func:`tag_validator` removes those tags, fills in a default tag when one is
given, and rejects a missing or unknown tag with a message that lists the
valid ones. :func:`validation_error` builds an error at a chosen location,
for validators that check more than one field.
"""

import typing
from collections.abc import Callable
from typing import Any

from pydantic import (
    BaseModel,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError


def tag_validator(
    union: Any, tag: str, noun: str, default: str | None = None
) -> WrapValidator:
    """Return the validator that goes with ``Field(discriminator=tag)`` on ``union``.

    Use it as ``Annotated[A | B, Field(discriminator=tag), tag_validator(...)]``.
    Each member declares ``tag`` as a ``Literal`` of one or more values.
    ``noun`` names the thing in messages ("layer", "dataset"). A JSON object
    without the tag gets ``default``, or fails when ``default`` is None.
    """
    choices = [
        value for member in typing.get_args(union) for value in _tag_values(member, tag)
    ]
    return WrapValidator(_make_validator(tag, noun, choices, default))


def _tag_values(member: type[BaseModel], tag: str) -> list[str]:
    annotation = member.model_fields[tag].annotation
    return [str(value) for value in typing.get_args(annotation)]


def _make_validator(
    tag: str, noun: str, choices: list[str], default: str | None
) -> Callable[[Any, ValidatorFunctionWrapHandler], Any]:
    listed = ", ".join(choices)

    def validate(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        if not isinstance(value, dict):
            return handler(value)
        tag_value = value.get(tag, default)
        if tag_value is None:
            raise validation_error(
                "union_tag_missing",
                f"{noun} needs a {tag!r} field; use one of {listed}",
                (tag,),
                value,
            )
        if not isinstance(tag_value, str) or tag_value not in choices:
            raise validation_error(
                "union_tag_unknown",
                f"unknown {noun} {tag_value!r}; use one of {listed}",
                (tag,),
                tag_value,
            )
        try:
            return handler({**value, tag: tag_value})
        except ValidationError as error:
            raise _without_tag(error, tag_value) from None

    return validate


def validation_error(
    kind: str, message: str, loc: tuple[str | int, ...], value: Any
) -> ValidationError:
    """Build a one-error ValidationError at ``loc``, relative to the validated value.

    Raised from a validator, its location is appended to the validator's own.
    """
    # Without a context, pydantic uses the template as the message unchanged.
    detail = InitErrorDetails(
        type=PydanticCustomError(kind, message), loc=loc, input=value
    )
    return ValidationError.from_exception_data("spec", [detail])


def _without_tag(error: ValidationError, tag_value: str) -> ValidationError:
    """Copy ``error`` with the leading tag removed from every location."""
    details = []
    for item in error.errors():
        loc = tuple(item["loc"])
        if loc and loc[0] == tag_value:
            loc = loc[1:]
        details.append(
            InitErrorDetails(
                type=PydanticCustomError(item["type"], item["msg"]),
                loc=loc,
                input=item["input"],
            )
        )
    return ValidationError.from_exception_data(error.title, details)
