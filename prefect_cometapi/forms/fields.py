"""Optional parameters as Prefect's forms should show them: one plain field, no None switch.

Pydantic describes ``T | None`` as ``anyOf: [T, null]``, which the Prefect UI renders as a
switch between the field and 'Property is type "None"'. Where an empty field means the same as
``None`` (no custom size, no endpoint, no limit...), :func:`optional` keeps the Python type
(``None`` still works from code and is still the default) but describes the field to the form as
plain ``T``, and an empty string typed in a form becomes ``None``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BeforeValidator, SecretStr, WithJsonSchema

__all__ = [
    "OptionalDateTime",
    "OptionalObject",
    "OptionalSecret",
    "OptionalText",
    "empty_to_none",
    "optional",
]


def empty_to_none(value: Any) -> Any:
    """``None`` for an empty or blank string (what a cleared form field sends), else ``value``.

    Args:
        value: The submitted value.

    Returns:
        The value to validate.
    """
    if isinstance(value, str) and not value.strip():
        return None
    return value


def optional(python_type: Any, json_schema: dict[str, Any]) -> Any:
    """``python_type | None`` that forms show as the plain field ``json_schema`` describes.

    Args:
        python_type: The type of a set value.
        json_schema: What the form renders (``{"type": "integer", "minimum": 0}``...).

    Returns:
        An ``Annotated`` type for a model field or a flow parameter.
    """
    return Annotated[
        python_type | None, BeforeValidator(empty_to_none), WithJsonSchema(json_schema)
    ]


OptionalText = optional(str, {"type": "string"})
"""A string that may be left empty (``None``)."""
OptionalObject = optional(dict[str, Any], {"type": "object"})
"""A JSON object that may be left empty (``None``)."""
OptionalDateTime = optional(datetime, {"type": "string", "format": "date-time"})
"""A date and time that may be left empty (``None``)."""
OptionalSecret = optional(SecretStr, {"type": "string", "format": "password", "writeOnly": True})
"""A secret (a password input in the UI) that may be left empty (``None``)."""
