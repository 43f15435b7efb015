"""The budget check of a batch: its estimated cost against ``max_cost_usd``, discounting what
the image cache already holds."""

from __future__ import annotations

from typing import Any

from prefect_cometapi.batching.requesting import image_result_store
from prefect_cometapi.billing.prices import estimate_cost
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


def _check_budget(
    prompts: list[str],
    image: ImageOptions,
    max_cost_usd: float | None,
    credentials: CometAPICredentials | None = None,
) -> float | None:
    """Estimate the batch's cost and refuse it when over budget.

    Args:
        prompts: The rendered prompts.
        image: The request options.
        max_cost_usd: The budget; ``None`` for no limit.
        credentials: The credentials the requests use (their service is part of the cache
            key); ``None`` for the default.

    Returns:
        The estimate in USD (``None`` when the model's price is unknown).

    Raises:
        BudgetExceededError: Over budget, even after discounting items already in the cache.
        ValidationError: A budget is set but the model's price is unknown.
    """
    per_item = [
        estimate_cost(image.model, p, image.request_size, image.quality, image.n) for p in prompts
    ]
    if any(cost is None for cost in per_item):
        if max_cost_usd is not None:
            raise ValidationError(
                "max_cost_usd",
                f"no price is known for model {image.model!r}, so the budget cannot be checked",
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
