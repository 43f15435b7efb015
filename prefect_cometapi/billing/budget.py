"""The budget check of a run: its estimated cost against ``max_cost_usd`` (or the worker's
lower ``PREFECT_COMETAPI_MAX_COST_USD``, :mod:`.caps`), discounting what the image cache
already holds."""

from __future__ import annotations

from typing import Any

from prefect_cometapi.batching.requesting import image_result_store
from prefect_cometapi.billing.caps import MAX_COST_ENV, run_budget
from prefect_cometapi.billing.prices import PRICES_ENV, estimate_cost
from prefect_cometapi.billing.spend import estimate_request_usd
from prefect_cometapi.blocks import CometAPICredentials
from prefect_cometapi.caching.keys import image_cache_key
from prefect_cometapi.errors import BudgetExceededError, ValidationError
from prefect_cometapi.forms.options import (
    ImageOptions,
)


def _is_cached(prompt: str, image: ImageOptions, credentials: Any = None) -> bool:
    """Whether ``generate_image`` already holds this exact request's result (best effort)."""
    try:
        store = image_result_store()
        params = {"prompt": prompt, "credentials": credentials, **image.request_kwargs()}
        key = image_cache_key("generations", params)
        return bool(store.exists(key))
    except Exception:  # noqa: BLE001 - when in doubt, count it as a cost
        return False


def _estimate(prompt: str, image: ImageOptions, input_images: int) -> float | None:
    if input_images:
        params = {"model": image.model, "prompt": prompt, "size": image.request_size}
        return estimate_request_usd(
            {**params, "quality": image.quality, "n": image.n}, input_images
        )
    return estimate_cost(image.model, prompt, image.request_size, image.quality, image.n)


def _check_budget(
    prompts: list[str],
    image: ImageOptions,
    max_cost_usd: float | None,
    credentials: CometAPICredentials | None = None,
    input_images: int = 0,
) -> float | None:
    """Estimate the run's cost and refuse it when over budget.

    The budget is the lower of ``max_cost_usd`` and the worker's own
    (``PREFECT_COMETAPI_MAX_COST_USD``), so a run can tighten it, never lift it.

    Args:
        prompts: The rendered prompts.
        image: The request options.
        max_cost_usd: The run's budget; ``None`` for none (the worker's may still apply).
        credentials: The credentials the requests use (their service is part of the cache
            key); ``None`` for the default.
        input_images: Input images of each request (edits), counted in the estimate.

    Returns:
        The estimate in USD (``None`` when the model's price is unknown).

    Raises:
        BudgetExceededError: Over budget, even after discounting items already in the cache.
        ValidationError: A budget is set but the model's price is unknown.
    """
    max_cost_usd = run_budget(max_cost_usd)
    per_item = [_estimate(p, image, input_images) for p in prompts]
    if any(cost is None for cost in per_item):
        if max_cost_usd is not None:
            raise ValidationError(
                "max_cost_usd",
                f"no price is known for model {image.model!r}, so the budget of "
                f"${max_cost_usd:g} (the run's max_cost_usd or the worker's {MAX_COST_ENV}) "
                f"cannot be checked; the worker's owner can price it with {PRICES_ENV}",
            )
        return None
    estimate = round(sum(c for c in per_item if c is not None), 6)
    if max_cost_usd is None or estimate <= max_cost_usd:
        return estimate
    to_pay = [
        (p, c)
        for p, c in zip(prompts, per_item, strict=True)
        if not _is_cached(p, image, credentials)
    ]
    remaining = round(sum(c for _, c in to_pay if c is not None), 6)
    if remaining > max_cost_usd:
        raise BudgetExceededError(remaining, max_cost_usd, len(to_pay), image)
    return remaining
