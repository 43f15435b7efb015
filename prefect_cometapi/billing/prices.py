"""Prices, token estimates and cost: every price and estimate constant, in one table each.

Cost of a request = text input tokens x text price + image input tokens x image-input price +
output tokens x image-output price (prices in USD per million tokens). The actual ``usage`` the
API returns is what is billed; the estimates here are for pre-flight budgets (the batch budget,
the spend limit) and for the emulator's ``usage``.

Sources, constant by constant:

- :data:`DEFAULT_PRICES`: CometAPI's model page for gpt-image-2
  (https://www.cometapi.com/models/openai/gpt-image-2/, "Input $4/M, Output $24/M"); OpenAI's
  model pages for gpt-image-1 ($5 text / $10 image in, $40 out;
  https://developers.openai.com/ja-JP/api/docs/models/gpt-image-1) and gpt-image-1-mini ($2 /
  $2.50 in, $8 out; https://developers.openai.com/de-DE/api/docs/models/gpt-image-1-mini);
  gpt-image-1.5 ($5 / $8 in, $32 out) as quoted at
  https://www.llmreference.com/model/gpt-image-1.5/openai-api and consistent with OpenAI's
  per-image prices ($0.009 / $0.034 / $0.133 = 272 / 1056 / 4160 tokens x $32/M).
- output tokens of gpt-image-1, -1-mini and -1.5 (:func:`estimate_output_tokens`): OpenAI's
  fixed table by size and quality from its image generation guide, quoted at
  https://community.openai.com/t/what-is-the-difference-between-image-generation-and-output-of-image-tokens/1371851.
- output tokens of gpt-image-2: OpenAI publishes only a calculator; the community formula at
  https://community.openai.com/t/gpt-image-2-output-pricing-calculator-online-and-in-your-code/1382699
  reproduces every published data point (and CometAPI's 196 tokens for 1024x1024 low). An
  estimate, not an official formula.
- input-image tokens of an edit (:data:`EDIT_IMAGE_TOKENS`): no formula is published (the count
  depends on the image); the values are those CometAPI reported for edits: 768 per input image
  for gpt-image-2, 194 for gpt-image-1.
- text tokens (:data:`CHARS_PER_TEXT_TOKEN`): OpenAI's rule of thumb of about four characters
  of English text a token (https://help.openai.com/en/articles/4936856-what-are-tokens-and-how-to-count-them).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

from prefect_cometapi.client.rules import base_model, is_flexible_size_model, parse_size
from prefect_cometapi.errors import ValidationError
from prefect_cometapi.models import Usage

__all__ = [
    "DEFAULT_PRICES",
    "ModelPrice",
    "PRICES_ENV",
    "cost_usd",
    "estimate_cost",
    "estimate_input_image_tokens",
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
#: OpenAI's elsewhere (sources in the module docstring). Override per call with ``prices={...}``.
DEFAULT_PRICES: dict[str, ModelPrice] = {
    "gpt-image-2": ModelPrice(text_input=4.0, image_input=4.0, image_output=24.0),
    "gpt-image-1.5": ModelPrice(text_input=5.0, image_input=8.0, image_output=32.0),
    "gpt-image-1-mini": ModelPrice(text_input=2.0, image_input=2.5, image_output=8.0),
    "gpt-image-1": ModelPrice(text_input=5.0, image_input=10.0, image_output=40.0),
}

PRICES_ENV = "PREFECT_COMETAPI_PRICES"
"""Worker setting: prices of models the table lacks (or different ones), as JSON, e.g.
``{"my-model": {"text_input": 5, "image_input": 8, "image_output": 32}}`` (USD per million
tokens). A model priced nowhere is refused by every cost guard; this is how an operator lets
one through (a run parameter cannot)."""

#: Output tokens of one gpt-image-1 / -1-mini / -1.5 image by quality and size (OpenAI's table).
_LEGACY_TOKENS = {
    "low": {"1024x1024": 272, "1024x1536": 408, "1536x1024": 400},
    "medium": {"1024x1024": 1056, "1024x1536": 1584, "1536x1024": 1568},
    "high": {"1024x1024": 4160, "1024x1536": 6240, "1536x1024": 6208},
}
#: The quality factor of the community's gpt-image-2 output-token formula.
_GPT_IMAGE_2_FACTOR = {"low": 16, "medium": 48, "high": 96}
#: ``size="auto"`` is estimated as the most expensive common square and ``quality="auto"`` as
#: ``high``: a budget guard should over- rather than under-estimate.
AUTO_SIZE_ESTIMATE = "1024x1024"
AUTO_QUALITY_ESTIMATE = "high"
#: Input-image tokens per input image of an edit, by model (values CometAPI reported; the real
#: count depends on the image).
EDIT_IMAGE_TOKENS: dict[str, int] = {"gpt-image-2": 768}
#: Input-image tokens per input image of an edit for the other models (gpt-image-1's).
EDIT_IMAGE_TOKENS_LEGACY = 194
#: Characters of prompt text per estimated text token.
CHARS_PER_TEXT_TOKEN = 4


def price_for(model: str, prices: Mapping[str, ModelPrice] | None = None) -> ModelPrice | None:
    """Look up a model's price (snapshots such as ``gpt-image-2-2026-04-21`` use the base name).

    Args:
        model: The model name.
        prices: A table overriding :data:`DEFAULT_PRICES` entry by entry.

    Returns:
        The price, or ``None`` when the model is in none of the tables (:data:`DEFAULT_PRICES`,
        the worker's :data:`PRICES_ENV`, ``prices``).
    """
    table = {**DEFAULT_PRICES, **worker_prices(), **(prices or {})}
    return table.get(model) or table.get(base_model(model))


def worker_prices() -> dict[str, ModelPrice]:
    """The worker's own prices (:data:`PRICES_ENV`).

    Returns:
        ``model -> price``; empty when the variable is unset.

    Raises:
        ValidationError: The variable is not a JSON object of models to the three prices, each
            a finite number >= 0.
    """
    text = (os.environ.get(PRICES_ENV) or "").strip()
    if not text:
        return {}
    rule = (
        'a JSON object like {"model": {"text_input": 5, "image_input": 8, "image_output": 32}} '
        "(USD per million tokens, numbers >= 0)"
    )
    try:
        raw = json.loads(text)
        table = {
            str(model): ModelPrice(
                **{k: float(entry[k]) for k in ("text_input", "image_input", "image_output")}
            )
            for model, entry in raw.items()
        }
    except (ValueError, TypeError, KeyError, AttributeError):
        raise ValidationError(PRICES_ENV, rule) from None
    for price in table.values():
        if not all(math.isfinite(v) and v >= 0 for v in vars(price).values()):
            raise ValidationError(PRICES_ENV, rule)
    return table


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
    return max(1, -(-len(prompt) // CHARS_PER_TEXT_TOKEN))


def estimate_input_image_tokens(model: str, images: int) -> int:
    """Estimate the input-image tokens of an edit's input images.

    Args:
        model: The model (a snapshot such as ``gpt-image-2-2026-04-21`` counts as its base).
        images: Number of input images.

    Returns:
        Estimated image input tokens (0 for no images).
    """
    return EDIT_IMAGE_TOKENS.get(base_model(model), EDIT_IMAGE_TOKENS_LEGACY) * images


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
