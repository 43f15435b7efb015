"""The worker's own caps: budgets and limits that every flow run on the worker obeys.

Run parameters (``max_cost_usd``, ``spend_limit``, ``concurrency_limit``, ``rate_limit``) are
typed by whoever starts the run, so a custom run can empty them. These settings are read from
the worker's environment and add to what a run asks for; a run can make them stricter, never
lift them:

``PREFECT_COMETAPI_MAX_COST_USD``
    The most one flow run may be estimated to cost, in USD (``batch_generate``,
    ``batch_generate_chunk``, ``generate_and_upload``, ``edit_and_upload``): a run's own
    ``max_cost_usd`` counts only when it is lower. Set, it also refuses every model the price
    table does not know (its cost cannot be estimated).
``PREFECT_COMETAPI_SPEND_LIMIT``
    The name of a spend limit (:mod:`prefect_cometapi.billing.spend`) every image request of
    the worker takes its estimated cost from, besides the run's ``spend_limit``.
``PREFECT_COMETAPI_CONCURRENCY_LIMIT`` / ``PREFECT_COMETAPI_RATE_LIMIT``
    Names of Prefect global concurrency limits every image request of the worker holds, besides
    the run's ``concurrency_limit`` / ``rate_limit``.

Prices of models the table lacks are the operator's too: ``PREFECT_COMETAPI_PRICES``
(:data:`prefect_cometapi.billing.prices.PRICES_ENV`).
"""

from __future__ import annotations

import math
import os

from prefect_cometapi.errors import ValidationError

__all__ = [
    "CONCURRENCY_LIMIT_ENV",
    "MAX_COST_ENV",
    "RATE_LIMIT_ENV",
    "SPEND_LIMIT_ENV",
    "limit_names",
    "run_budget",
]

MAX_COST_ENV = "PREFECT_COMETAPI_MAX_COST_USD"
SPEND_LIMIT_ENV = "PREFECT_COMETAPI_SPEND_LIMIT"
CONCURRENCY_LIMIT_ENV = "PREFECT_COMETAPI_CONCURRENCY_LIMIT"
RATE_LIMIT_ENV = "PREFECT_COMETAPI_RATE_LIMIT"


def worker_setting(env_name: str) -> str | None:
    """A worker setting's value, stripped; ``None`` when unset or empty.

    Args:
        env_name: The environment variable.

    Returns:
        The value or ``None``.
    """
    return (os.environ.get(env_name) or "").strip() or None


def worker_max_cost_usd() -> float | None:
    """The worker's per-run budget (:data:`MAX_COST_ENV`).

    Returns:
        USD, or ``None`` when not set.

    Raises:
        ValidationError: The variable is not a finite number of dollars >= 0.
    """
    text = worker_setting(MAX_COST_ENV)
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise ValidationError(
            MAX_COST_ENV, "the worker's budget must be a number of USD >= 0", text
        )
    return value


def run_budget(max_cost_usd: float | None) -> float | None:
    """The budget a run gets: the lower of its own ``max_cost_usd`` and the worker's.

    Args:
        max_cost_usd: The run parameter (``None`` for none).

    Returns:
        The budget in USD, or ``None`` when neither is set.
    """
    worker = worker_max_cost_usd()
    if worker is None or (max_cost_usd is not None and max_cost_usd < worker):
        return max_cost_usd
    return worker


def limit_names(run_value: str | None, env_name: str) -> list[str]:
    """The limits to take: the run's (if any) and the worker's (if set), once each.

    Args:
        run_value: The run's limit name, e.g. the ``concurrency_limit`` parameter.
        env_name: The worker setting, e.g. :data:`CONCURRENCY_LIMIT_ENV`.

    Returns:
        Zero, one or two names, the worker's first.
    """
    names = [worker_setting(env_name), (run_value or "").strip() or None]
    return list(dict.fromkeys(name for name in names if name))
