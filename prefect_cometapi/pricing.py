"""Prices, token estimates and cost: one table the user can override.

Cost of a request = text input tokens x text price + image input tokens x image-input price +
output tokens x image-output price (prices in USD per million tokens). The actual ``usage`` the
API returns is what is billed; :func:`estimate_output_tokens` is only for pre-flight budgets (and
for the emulator's ``usage``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from prefect_cometapi.models import Usage
from prefect_cometapi.validation import base_model, is_flexible_size_model, parse_size

__all__ = [
    "AUTO_QUALITY_ESTIMATE",
    "AUTO_SIZE_ESTIMATE",
    "DEFAULT_PRICES",
    "ModelPrice",
    "cost_usd",
    "estimate_cost",
    "estimate_output_tokens",
    "estimate_text_tokens",
    "price_for",
]


@dataclass(frozen=True)
class ModelPrice:
    """USD per one million tokens.

    Attributes:
        text_input: Text input tokens.
        image_input: Image input tokens (edits).
        image_output: Image output tokens.
    """

    text_input: float
    image_input: float
    image_output: float


#: CometAPI's list prices where it publishes them (gpt-image-2: "Input $4/M, Output $24/M"),
#: OpenAI's elsewhere. Override per call with ``prices={...}`` or on the credentials block.
DEFAULT_PRICES: dict[str, ModelPrice] = {
    "gpt-image-2": ModelPrice(text_input=4.0, image_input=4.0, image_output=24.0),
    "gpt-image-1.5": ModelPrice(text_input=5.0, image_input=8.0, image_output=32.0),
    "gpt-image-1-mini": ModelPrice(text_input=2.0, image_input=2.5, image_output=8.0),
    "gpt-image-1": ModelPrice(text_input=5.0, image_input=10.0, image_output=40.0),
}

_LEGACY_TOKENS = {
    "low": {"1024x1024": 272, "1024x1536": 408, "1536x1024": 400},
    "medium": {"1024x1024": 1056, "1024x1536": 1584, "1536x1024": 1568},
    "high": {"1024x1024": 4160, "1024x1536": 6240, "1536x1024": 6208},
}
_GPT_IMAGE_2_FACTOR = {"low": 16, "medium": 48, "high": 96}
#: ``size="auto"`` is estimated as the most expensive common square and ``quality="auto"`` as
#: ``high``: a budget guard should over- rather than under-estimate.
AUTO_SIZE_ESTIMATE = "1024x1024"
AUTO_QUALITY_ESTIMATE = "high"


def price_for(model: str, prices: Mapping[str, ModelPrice] | None = None) -> ModelPrice | None:
    """Look up a model's price (snapshots such as ``gpt-image-2-2026-04-21`` use the base name).

    Args:
        model: The model name.
        prices: A table overriding :data:`DEFAULT_PRICES` entry by entry.

    Returns:
        The price, or ``None`` when the model is in neither table.
    """
    table = {**DEFAULT_PRICES, **(prices or {})}
    return table.get(model) or table.get(base_model(model))


def cost_usd(
    usage: Usage | None, model: str, prices: Mapping[str, ModelPrice] | None = None
) -> float | None:
    """The cost of a request from its reported usage.

    Args:
        usage: The request's usage.
        model: The model billed.
        prices: Price overrides.

    Returns:
        USD rounded to 6 places, or ``None`` when usage or price is unknown.
    """
    price = price_for(model, prices)
    if usage is None or price is None:
        return None
    total = (
        usage.text_input_tokens * price.text_input
        + usage.image_input_tokens * price.image_input
        + usage.output_tokens * price.image_output
    ) / 1_000_000
    return round(total, 6)


def estimate_output_tokens(model: str, size: str, quality: str | None) -> int:
    """Estimate the image output tokens of one image.

    gpt-image-2 uses the community-derived formula that reproduces every published data point
    (an estimate, not an official formula); older models use OpenAI's fixed table.

    Args:
        model: The model.
        size: ``WxH`` or ``auto``.
        quality: low|medium|high|auto or ``None``.

    Returns:
        Estimated output tokens for one image.
    """
    q = quality if quality in _GPT_IMAGE_2_FACTOR else AUTO_QUALITY_ESTIMATE
    dims = parse_size(size if size != "auto" else AUTO_SIZE_ESTIMATE)
    assert dims is not None
    w, h = dims
    if not is_flexible_size_model(model):
        table = _LEGACY_TOKENS[q]
        return table.get(f"{w}x{h}", max(table.values()))
    f = _GPT_IMAGE_2_FACTOR[q]
    long_edge, short_edge = max(w, h), min(w, h)
    s = (2 * f * short_edge + long_edge) // (2 * long_edge)
    return (f * s * (2_000_000 + w * h) + 4_000_000 - 1) // 4_000_000


def estimate_text_tokens(prompt: str) -> int:
    """A rough text-token estimate for a prompt (about four characters a token).

    Args:
        prompt: The prompt.

    Returns:
        Estimated text input tokens (at least 1).
    """
    return max(1, (len(prompt) + 3) // 4)


def estimate_cost(
    model: str,
    prompt: str,
    size: str,
    quality: str | None,
    n: int = 1,
    prices: Mapping[str, ModelPrice] | None = None,
) -> float | None:
    """Estimate a generation request's cost before sending it.

    Args:
        model: The model.
        prompt: The prompt.
        size: ``WxH`` or ``auto``.
        quality: The quality.
        n: Number of images (each billed as a separate generation).
        prices: Price overrides.

    Returns:
        Estimated USD, or ``None`` when the model's price is unknown.
    """
    usage = Usage(
        input_tokens=estimate_text_tokens(prompt),
        text_input_tokens=estimate_text_tokens(prompt),
        output_tokens=estimate_output_tokens(model, size, quality),
    )
    one = cost_usd(usage, model, prices)
    return None if one is None else round(one * n, 6)
