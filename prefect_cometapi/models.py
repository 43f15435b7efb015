"""The typed values the client returns and the tasks pass along: usage, one image, one response.

``ImageResult``, ``GeneratedImage``, ``Usage`` and ``S3Object`` are frozen dataclasses (cheap to
build and copy on the hot path). The :class:`JSONForm` mixin gives them the method names
Pydantic users know, with a small JSON form by default (sizes, sha256, usage, cost, request
id, S3 URI: what a log, an artifact, an API answer or a downstream task needs) and the image
bytes only on request (``include_data=True``, base64 in JSON). The full form round-trips::

    text = result.model_dump_json(include_data=True)
    assert ImageResult.model_validate_json(text) == result

Each class says what it dumps in ``_dump`` and how it is rebuilt in ``_load``.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeVar

__all__ = [
    "CONTENT_TYPES",
    "DumpMode",
    "JSONForm",
    "Background",
    "GeneratedImage",
    "ImageFormat",
    "ImageResult",
    "InputFidelity",
    "Moderation",
    "Quality",
    "Usage",
]

ImageFormat = Literal["png", "jpeg", "webp"]
Quality = Literal["low", "medium", "high", "auto"]
Background = Literal["transparent", "opaque", "auto"]
Moderation = Literal["low", "auto"]
InputFidelity = Literal["high", "low"]

CONTENT_TYPES: dict[str, str] = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}

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


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


@dataclass(frozen=True)
class Usage(JSONForm):
    """Token usage the API reported for one request (all images of it together).

    Attributes:
        input_tokens: All input tokens (text + images).
        output_tokens: Image output tokens.
        total_tokens: As reported, or input + output.
        text_input_tokens: ``input_tokens_details.text_tokens``.
        image_input_tokens: ``input_tokens_details.image_tokens``.
        raw: The ``usage`` object as received (unknown keys kept).
    """

    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    text_input_tokens: int = 0
    image_input_tokens: int = 0
    raw: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_api(cls, usage: Any) -> Usage | None:
        """Parse a ``usage`` object leniently (unknown keys ignored, missing ones zero).

        Args:
            usage: The ``usage`` value of an ``ImagesResponse``, or ``None``.

        Returns:
            A ``Usage``, or ``None`` when the response carried none.
        """
        if not isinstance(usage, dict):
            return None
        details = usage.get("input_tokens_details") or {}
        if not isinstance(details, dict):
            details = {}
        input_tokens = _int(usage.get("input_tokens"))
        output_tokens = _int(usage.get("output_tokens"))
        text = _int(details.get("text_tokens"))
        image = _int(details.get("image_tokens"))
        if not (text or image):
            text = input_tokens
        return cls(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            total_tokens=_int(usage.get("total_tokens")) or input_tokens + output_tokens,
            text_input_tokens=text,
            image_input_tokens=image,
            raw=dict(usage),
        )

    def _dump(self, mode: DumpMode, include_data: bool) -> dict[str, Any]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.total_tokens,
            "text_input_tokens": self.text_input_tokens,
            "image_input_tokens": self.image_input_tokens,
            "raw": dict(self.raw),
        }

    @classmethod
    def _load(cls, data: dict[str, Any]) -> Usage:
        return cls(
            input_tokens=int(data.get("input_tokens", 0)),
            output_tokens=int(data.get("output_tokens", 0)),
            total_tokens=int(data.get("total_tokens", 0)),
            text_input_tokens=int(data.get("text_input_tokens", 0)),
            image_input_tokens=int(data.get("image_input_tokens", 0)),
            raw=dict(data.get("raw") or {}),
        )


@dataclass(frozen=True)
class GeneratedImage(JSONForm):
    """One image and everything known about it, carried from task to task.

    Attributes:
        data: The encoded image bytes.
        format: ``png``, ``jpeg`` or ``webp`` (what the bytes are, not what was asked).
        width: Pixel width.
        height: Pixel height.
        sha256: Hex SHA-256 of ``data``.
        model: The model that made it.
        prompt: The prompt it was made from.
        params: The request parameters that determine it (no secrets).
        index: Its position in the response (0-based).
        usage: The request's usage (shared by all images of the request).
        cost_usd: This image's share of the request's cost, if the price is known.
        revised_prompt: The API's revised prompt, if it returned one.
        source_sha256: For derived images (an upscale), the sha256 of the image it came from.
    """

    data: bytes = field(repr=False)
    format: str
    width: int
    height: int
    sha256: str
    model: str
    prompt: str = field(repr=False)
    params: dict[str, Any] = field(default_factory=dict, repr=False)
    index: int = 0
    usage: Usage | None = field(default=None, repr=False)
    cost_usd: float | None = None
    revised_prompt: str | None = field(default=None, repr=False)
    source_sha256: str | None = None

    @property
    def size(self) -> str:
        """``"WxH"`` of the actual pixels."""
        return f"{self.width}x{self.height}"

    @property
    def content_type(self) -> str:
        """The MIME type of ``data``."""
        return CONTENT_TYPES.get(self.format, "application/octet-stream")

    def with_data(self, data: bytes, fmt: str, width: int, height: int) -> GeneratedImage:
        """A copy carrying new pixels (e.g. an upscale), remembering where they came from.

        Args:
            data: The new encoded bytes.
            fmt: Their format.
            width: Their width.
            height: Their height.

        Returns:
            A new ``GeneratedImage`` with the same model, prompt, params, usage and cost.
        """
        return replace(
            self,
            data=data,
            format=fmt,
            width=width,
            height=height,
            sha256=hashlib.sha256(data).hexdigest(),
            source_sha256=self.source_sha256 or self.sha256,
        )

    def _dump(self, mode: DumpMode, include_data: bool, with_usage: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format": self.format,
            "content_type": self.content_type,
            "width": self.width,
            "height": self.height,
            "size": self.size,
            "bytes": len(self.data),
            "sha256": self.sha256,
            "model": self.model,
            "prompt": self.prompt,
            "params": dict(self.params),
            "index": self.index,
            "cost_usd": self.cost_usd,
            "revised_prompt": self.revised_prompt,
            "source_sha256": self.source_sha256,
        }
        if with_usage:
            out["usage"] = self.usage._dump(mode, False) if self.usage else None
        if include_data:
            out["data"] = base64.b64encode(self.data).decode() if mode == "json" else self.data
        return out

    @classmethod
    def _load(cls, data: dict[str, Any], usage: Usage | None = None) -> GeneratedImage:
        if "data" not in data:
            raise ValueError(
                "this GeneratedImage was dumped without its bytes (use include_data=True)"
            )
        raw = data["data"]
        blob = raw if isinstance(raw, bytes) else base64.b64decode(raw, validate=True)
        if "usage" in data:
            usage = Usage.model_validate(data["usage"]) if data["usage"] is not None else None
        return cls(
            data=blob,
            format=data["format"],
            width=int(data["width"]),
            height=int(data["height"]),
            sha256=data["sha256"],
            model=data["model"],
            prompt=data.get("prompt", ""),
            params=dict(data.get("params") or {}),
            index=int(data.get("index", 0)),
            usage=usage,
            cost_usd=data.get("cost_usd"),
            revised_prompt=data.get("revised_prompt"),
            source_sha256=data.get("source_sha256"),
        )


@dataclass(frozen=True)
class ImageResult(JSONForm):
    """The answer to one generations or edits request.

    Attributes:
        images: The images, in the API's order.
        model: The model that was asked.
        params: The request parameters (no secrets, no image bytes).
        usage: Token usage, if the API reported it.
        cost_usd: Cost of the whole request in USD, if the model's price is known.
        created: The API's ``created`` timestamp.
        request_id: The ``x-request-id`` header, if any.
        attempts: How many HTTP attempts the client made.
    """

    images: list[GeneratedImage]
    model: str
    params: dict[str, Any] = field(repr=False)
    usage: Usage | None = None
    cost_usd: float | None = None
    created: int | None = None
    request_id: str | None = None
    attempts: int = 1

    def _dump(self, mode: DumpMode, include_data: bool) -> dict[str, Any]:
        # The request's usage is written once, not once per image (each image shares it).
        shared = all(image.usage == self.usage for image in self.images)
        return {
            "model": self.model,
            "request_id": self.request_id,
            "created": self.created,
            "attempts": self.attempts,
            "usage": self.usage._dump(mode, False) if self.usage else None,
            "cost_usd": self.cost_usd,
            "params": dict(self.params),
            "images": [
                image._dump(mode, include_data, with_usage=not shared) for image in self.images
            ],
        }

    @classmethod
    def _load(cls, data: dict[str, Any]) -> ImageResult:
        usage = Usage.model_validate(data["usage"]) if data.get("usage") is not None else None
        return cls(
            images=[GeneratedImage._load(image, usage) for image in data["images"]],
            model=data["model"],
            params=dict(data.get("params") or {}),
            usage=usage,
            cost_usd=data.get("cost_usd"),
            created=data.get("created"),
            request_id=data.get("request_id"),
            attempts=int(data.get("attempts", 1)),
        )
