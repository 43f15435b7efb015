"""The JSON form of the result types: ``model_dump``, ``model_dump_json``, ``model_validate``.

``ImageResult``, ``GeneratedImage``, ``Usage`` and ``S3Object`` are frozen dataclasses (cheap to
build and copy on the hot path). This mixin gives them the method names Pydantic users know, with
a small JSON form by default (sizes, sha256, usage, cost, request id, S3 URI: what a log, an
artifact, an API answer or a downstream task needs) and the image bytes only on request
(``include_data=True``, base64 in JSON). The full form round-trips::

    text = result.model_dump_json(include_data=True)
    assert ImageResult.model_validate_json(text) == result

Each class says what it dumps in ``_dump`` and how it is rebuilt in ``_load``.
"""

from __future__ import annotations

import json
from typing import Any, Literal, TypeVar

__all__ = ["DumpMode", "JSONForm"]

DumpMode = Literal["python", "json"]

_T = TypeVar("_T", bound="JSONForm")


class JSONForm:
    """Mixin: Pydantic-style dump and validate methods for a frozen dataclass."""

    def _dump(self, mode: DumpMode, include_data: bool) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def _load(cls: type[_T], data: dict[str, Any]) -> _T:
        raise NotImplementedError

    def model_dump(
        self, *, mode: DumpMode = "python", include_data: bool = False
    ) -> dict[str, Any]:
        """This value as a dict.

        Args:
            mode: ``"python"`` keeps bytes as bytes; ``"json"`` gives only JSON types (bytes as
                base64 text).
            include_data: Include the image bytes (``data``); without them the dict describes the
                image (size, format, sha256, cost...) but cannot be turned back into one.

        Returns:
            A new dict.
        """
        return self._dump(mode, include_data)

    def model_dump_json(self, *, include_data: bool = False, indent: int | None = None) -> str:
        """This value as JSON text.

        Args:
            include_data: Include the image bytes, base64-encoded.
            indent: Indentation, as for ``json.dumps``.

        Returns:
            The JSON text.
        """
        return json.dumps(self._dump("json", include_data), indent=indent, ensure_ascii=False)

    @classmethod
    def model_validate(cls: type[_T], obj: Any) -> _T:
        """Rebuild a value from :meth:`model_dump` output (either mode) or an instance.

        Args:
            obj: An instance (returned as is) or a dict.

        Returns:
            The value.

        Raises:
            ValueError: ``obj`` is not a dict of this type's form (for images: dumped without
                ``include_data=True``).
        """
        if isinstance(obj, cls):
            return obj
        if not isinstance(obj, dict):
            raise ValueError(f"{cls.__name__}.model_validate expects a dict, not {type(obj)!r}")
        try:
            return cls._load(obj)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a {cls.__name__} dump: {exc}") from exc

    @classmethod
    def model_validate_json(cls: type[_T], text: str | bytes) -> _T:
        """Rebuild a value from :meth:`model_dump_json` text.

        Args:
            text: The JSON text.

        Returns:
            The value.
        """
        return cls.model_validate(json.loads(text))
