"""The JSON form of the result types: Pydantic-style ``model_dump``, ``model_dump_json`` and
``model_validate`` for frozen dataclasses, and the Pydantic core schema that lets Prefect's
serializers store them."""

from __future__ import annotations

import json
from typing import Any, Literal, TypeVar

from pydantic_core import SchemaSerializer, core_schema

__all__ = ["DumpMode", "JSONForm"]


DumpMode = Literal["python", "json"]


_T = TypeVar("_T", bound="JSONForm")


def _pydantic_dump(value: JSONForm, info: core_schema.SerializationInfo) -> dict[str, Any]:
    return value.model_dump(mode="json" if info.mode_is_json() else "python", include_data=True)


class JSONForm:
    """Mixin: Pydantic-style dump and validate methods for a frozen dataclass.

    Subclasses also carry a Pydantic core schema (their full form, bytes included), so they
    work as Pydantic field types and through ``pydantic_core.to_jsonable_python``, which is what
    Prefect's ``json`` result serializer uses.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # What pydantic_core looks for when it meets an instance of an unknown class.
        cls.__pydantic_serializer__ = SchemaSerializer(cls._core_schema())  # type: ignore[attr-defined]

    @classmethod
    def _core_schema(cls) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls.model_validate,
            serialization=core_schema.plain_serializer_function_ser_schema(
                _pydantic_dump, info_arg=True
            ),
        )

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> core_schema.CoreSchema:
        """The Pydantic schema: validate with :meth:`model_validate`, dump the full form."""
        return cls._core_schema()

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: Any, handler: Any) -> dict[str, Any]:
        """The JSON schema of the dumped form (an object), e.g. for a flow parameter."""
        return {"type": "object", "title": cls.__name__}

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
                image (size, format, sha256, cost...) and validates back into a value without
                bytes (``has_data`` false).

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
            ValueError: ``obj`` is not a dict of this type's form.
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
