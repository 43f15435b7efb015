"""API keys: where the key comes from (argument, ``SecretStr`` or ``COMETAPI_KEY``) and the
check that it can be sent in an HTTP header."""

from __future__ import annotations

import os
from typing import Any

from prefect_cometapi.errors import (
    MissingAPIKeyError,
    ValidationError,
)

__all__ = ["check_api_key", "resolve_api_key"]


def resolve_api_key(api_key: Any = None) -> str:
    """Return the API key from the argument (a str or ``SecretStr``) or ``COMETAPI_KEY``.

    Args:
        api_key: A key, a pydantic ``SecretStr``, or ``None``.

    Returns:
        The key.

    Raises:
        MissingAPIKeyError: If neither is set.
    """
    if api_key is not None and hasattr(api_key, "get_secret_value"):
        api_key = api_key.get_secret_value()
    from_env = not api_key
    key = (api_key or os.environ.get("COMETAPI_KEY") or "").strip()
    if not key:
        raise MissingAPIKeyError()
    check_api_key(key, "COMETAPI_KEY" if from_env else "api_key")
    return key


def check_api_key(key: str, param: str = "api_key") -> None:
    """Refuse a key that cannot be sent in an HTTP header, without ever showing the key.

    A key pasted with an invisible character (a zero-width space, a non-breaking space), a
    non-ASCII look-alike or a line break would otherwise fail deep inside the HTTP library with
    an error whose text holds the whole key.

    Args:
        key: The key, already stripped of surrounding whitespace.
        param: What to call it in the error (``api_key`` or ``COMETAPI_KEY``).

    Raises:
        ValidationError: Naming the position and kind of the first bad character (never the
            key itself).
    """
    for position, char in enumerate(key, start=1):
        if not 0x21 <= ord(char) <= 0x7E:
            kind = (
                "a line break"
                if char in "\r\n"
                else "a space"
                if char.isspace() and ord(char) < 0x80
                else f"the non-printable or non-ASCII character U+{ord(char):04X}"
            )
            raise ValidationError(
                param,
                f"the API key has {kind} at position {position} of {len(key)}, which cannot be "
                "sent in an HTTP header (often a copy-paste artefact); paste the key again",
            )
