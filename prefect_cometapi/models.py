"""The typed values the client returns and the tasks pass along: usage, one image, one response."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Any, Literal

__all__ = [
    "CONTENT_TYPES",
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


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


@dataclass(frozen=True)
class Usage:
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


@dataclass(frozen=True)
class GeneratedImage:
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


@dataclass(frozen=True)
class ImageResult:
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
