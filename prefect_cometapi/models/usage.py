"""Token usage as the API reports it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prefect_cometapi.models.json_form import DumpMode, JSONForm

__all__ = ["Usage"]


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
