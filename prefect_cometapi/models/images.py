"""One generated image (:class:`GeneratedImage`) and one API response (:class:`ImageResult`)."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field, fields, replace
from typing import Any

from prefect_cometapi.errors import ImageDataMissingError
from prefect_cometapi.models.json_form import DumpMode, JSONForm
from prefect_cometapi.models.usage import Usage

__all__ = ["CONTENT_TYPES", "GeneratedImage", "ImageResult"]

CONTENT_TYPES: dict[str, str] = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


class _ImageBytes:
    """``GeneratedImage.data``: the bytes, or :class:`ImageDataMissingError` when there are none."""

    def __get__(self, obj: GeneratedImage | None, owner: type | None = None) -> bytes:
        if obj is None:
            raise AttributeError("data")
        value = obj.__dict__.get("data")
        if value is None:
            raise ImageDataMissingError(obj.missing_data_hint())
        return value

    def __set__(self, obj: GeneratedImage, value: bytes | None) -> None:
        obj.__dict__["data"] = value


@dataclass(frozen=True, eq=False)
class GeneratedImage(JSONForm):
    """One image and everything known about it, carried from task to task.

    Attributes:
        data: The encoded image bytes (reading it raises :class:`ImageDataMissingError` on an
            image rebuilt from a dump without them; see :attr:`has_data`).
        format: ``png``, ``jpeg`` or ``webp`` (what the bytes are, not what was asked).
        width: Pixel width.
        height: Pixel height.
        sha256: Hex SHA-256 of ``data``.
        model: The model that made it.
        prompt: The prompt it was made from.
        params: The request parameters that determine it (no secrets).
        index: Its position in the response (0-based).
        usage: The request's usage (shared by all images of the request).
        cost_usd: This image's share of the request's price, if the price is known (also on a
            cache hit: what the image cost when it was paid for).
        revised_prompt: The API's revised prompt, if it returned one.
        source_sha256: For derived images (an upscale), the sha256 of the image it came from.
        cached: ``True`` when this run got the image from the cache (and paid nothing for it).
        s3_uri: Where the image is stored, when known (``s3://bucket/key``).
        cache_key: The cache record the image came from or went to, when known.
        stored_bytes: The byte count a dump without bytes recorded (``None`` otherwise).
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
    cached: bool = False
    s3_uri: str | None = None
    cache_key: str | None = field(default=None, repr=False)
    stored_bytes: int | None = field(default=None, repr=False)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(
            self.__dict__.get(f.name) == other.__dict__.get(f.name)
            for f in fields(self)
            if f.name != "stored_bytes"
        )

    __hash__ = None  # type: ignore[assignment]

    @property
    def has_data(self) -> bool:
        """Whether the image's bytes are here (``False`` after a dump without them)."""
        return self.__dict__.get("data") is not None

    @property
    def nbytes(self) -> int:
        """The size of the encoded image in bytes (also without the bytes at hand)."""
        data = self.__dict__.get("data")
        return len(data) if data is not None else int(self.stored_bytes or 0)

    @property
    def billed_usd(self) -> float | None:
        """What this run paid for the image: 0 when it came from the cache, else its price."""
        return 0.0 if self.cached else self.cost_usd

    def missing_data_hint(self) -> str:
        """Why the bytes are missing and where to get them (the error's message)."""
        where = [f"download them from {self.s3_uri}"] if self.s3_uri else []
        record = f" (cache key {self.cache_key})" if self.cache_key else ""
        where.append(
            "run the same image task call again: its cache record"
            f"{record} returns them without paying again"
        )
        return (
            f"image {self.index} (sha256 {self.sha256}) was rebuilt from a dump without its "
            "bytes (model_dump() without include_data=True); " + ", or ".join(where)
        )

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
            s3_uri=None,
            stored_bytes=None,
        )

    def as_cached(self, cache_key: str | None = None) -> GeneratedImage:
        """This image as a cache hit delivers it: ``cached`` true, nothing billed.

        Args:
            cache_key: The cache record it came from, if known.

        Returns:
            A copy (the same object when it already says so).
        """
        key = cache_key or self.cache_key
        if self.cached and key == self.cache_key:
            return self
        return replace(self, data=self.__dict__.get("data"), cached=True, cache_key=key)

    def _dump(self, mode: DumpMode, include_data: bool, with_usage: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format": self.format,
            "content_type": self.content_type,
            "width": self.width,
            "height": self.height,
            "size": self.size,
            "bytes": self.nbytes,
            "sha256": self.sha256,
            "model": self.model,
            "prompt": self.prompt,
            "params": dict(self.params),
            "index": self.index,
            "cost_usd": self.cost_usd,
            "cached": self.cached,
            "billed_usd": self.billed_usd,
            "revised_prompt": self.revised_prompt,
            "source_sha256": self.source_sha256,
            "s3_uri": self.s3_uri,
            "cache_key": self.cache_key,
        }
        if with_usage:
            out["usage"] = self.usage._dump(mode, False) if self.usage else None
        if include_data and self.has_data:
            out["data"] = base64.b64encode(self.data).decode() if mode == "json" else self.data
        return out

    @classmethod
    def _load(cls, data: dict[str, Any], usage: Usage | None = None) -> GeneratedImage:
        raw = data.get("data")
        if raw is None:
            blob = None
        elif isinstance(raw, (bytes, bytearray)):
            blob = bytes(raw)
        else:
            blob = base64.b64decode(raw, validate=True)
        if "usage" in data:
            usage = Usage.model_validate(data["usage"]) if data["usage"] is not None else None
        return cls(
            data=blob,  # type: ignore[arg-type]
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
            cached=bool(data.get("cached", False)),
            s3_uri=data.get("s3_uri"),
            cache_key=data.get("cache_key"),
            stored_bytes=None if blob is not None else int(data.get("bytes") or 0),
        )


# After the dataclass is made: it must not see the descriptor as the field's default.
GeneratedImage.data = _ImageBytes()  # type: ignore[assignment,misc]


@dataclass(frozen=True)
class ImageResult(JSONForm):
    """The answer to one generations or edits request.

    Attributes:
        images: The images, in the API's order.
        model: The model that was asked.
        params: The request parameters (no secrets, no image bytes).
        usage: Token usage, if the API reported it.
        cost_usd: The price of the whole request in USD, if the model's price is known (also on
            a cache hit: what the request cost when it was paid for).
        created: The API's ``created`` timestamp.
        request_id: The ``x-request-id`` header, if any.
        attempts: How many HTTP attempts the client made.
        cached: ``True`` when this run got the result from the cache (and paid nothing).
        cache_key: The task cache record it came from or was stored in, when known.
    """

    images: list[GeneratedImage]
    model: str
    params: dict[str, Any] = field(repr=False)
    usage: Usage | None = None
    cost_usd: float | None = None
    created: int | None = None
    request_id: str | None = None
    attempts: int = 1
    cached: bool = False
    cache_key: str | None = field(default=None, repr=False)

    @property
    def billed_usd(self) -> float | None:
        """What this run paid for the request: 0 on a cache hit, else ``cost_usd``.

        Sum this (not ``cost_usd``) over a run's results for what the run spent.
        """
        return 0.0 if self.cached else self.cost_usd

    @property
    def has_data(self) -> bool:
        """Whether every image's bytes are here (``False`` after a dump without them)."""
        return all(image.has_data for image in self.images)

    def as_cached(self, cache_key: str | None = None) -> ImageResult:
        """This result as a cache hit delivers it: ``cached`` true on it and its images.

        Args:
            cache_key: The cache record it came from, if known.

        Returns:
            A copy (the same object when it already says so).
        """
        key = cache_key or self.cache_key
        if self.cached and key == self.cache_key and all(i.cached for i in self.images):
            return self
        return replace(
            self,
            images=[image.as_cached(key) for image in self.images],
            cached=True,
            cache_key=key,
        )

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
            "cached": self.cached,
            "billed_usd": self.billed_usd,
            "cache_key": self.cache_key,
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
            cached=bool(data.get("cached", False)),
            cache_key=data.get("cache_key"),
        )
