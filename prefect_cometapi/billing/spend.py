"""A dollar budget shared by every worker: a Prefect global concurrency limit with slot decay.

One slot is :data:`SLOT_USD` (a tenth of a cent). Before sending, an image request takes its
estimated cost in slots from the limit; the slots decay at the budget's rate, so all workers
together cannot take more than the limit holds plus what has decayed. A limit of ``C`` slots
decaying at ``r`` slots a second admits at most ``C + r * W`` slots in any window of ``W``
seconds, so :func:`spend_limit_settings` sizes it for a strict bound: a burst of
``burst_usd`` (default a tenth of the budget) and a decay of ``(budget - burst) / window``;
in every rolling window the estimated spend stays within the budget, and sustained spending
runs at ``budget - burst`` per window.

Create it once (or with ``prefect gcl create NAME --limit L --slot-decay-per-second R`` using the
numbers :func:`spend_limit_settings` returns)::

    from prefect_cometapi.billing.spend import create_spend_limit

    create_spend_limit("cometapi-spend", dollars=5.0, window_s=3600)

then pass ``spend_limit="cometapi-spend"`` to the image tasks, ``batch_generate`` or a deployment.
Over the budget a request waits for the limit to decay (``spend_limit_wait=True``, the default)
or raises :class:`~prefect_cometapi.errors.SpendLimitError` without sending
(``spend_limit_wait=False``). The estimate is the token table's
(:func:`~prefect_cometapi.billing.prices.estimate_cost`); edits add their input images' tokens.
"""

from __future__ import annotations

import math
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from prefect_cometapi.billing.prices import (
    cost_usd,
    estimate_input_image_tokens,
    estimate_output_tokens,
    estimate_text_tokens,
)
from prefect_cometapi.errors import SpendLimitError, ValidationError
from prefect_cometapi.models import Usage

__all__ = [
    "FAIL_FAST_TIMEOUT_S",
    "SLOT_USD",
    "SpendLimitSettings",
    "acquire_spend",
    "aacquire_spend",
    "create_spend_limit",
    "estimate_request_usd",
    "spend_limit_settings",
    "spend_slots",
]

SLOT_USD = 0.001
"""Dollars one slot of a spend limit stands for."""
FAIL_FAST_TIMEOUT_S = 2.0
"""How long a request that must not wait tries to take its slots (one round trip or two)."""
DEFAULT_BURST_FRACTION = 0.1


class SpendLimitSettings(tuple):
    """``(limit, slot_decay_per_second)`` of a spend limit's global concurrency limit."""

    __slots__ = ()

    def __new__(cls, limit: int, slot_decay_per_second: float) -> SpendLimitSettings:
        """Build the pair.

        Args:
            limit: Slots.
            slot_decay_per_second: Decay rate.

        Returns:
            The pair.
        """
        return super().__new__(cls, (limit, slot_decay_per_second))

    @property
    def limit(self) -> int:
        """Slots the limit holds (the burst)."""
        return self[0]

    @property
    def slot_decay_per_second(self) -> float:
        """Slots freed per second."""
        return self[1]


def spend_slots(estimated_usd: float) -> int:
    """Slots a request of this estimated cost takes (rounded up, at least one).

    Args:
        estimated_usd: The estimate.

    Returns:
        The slots.
    """
    return max(1, math.ceil(round(estimated_usd / SLOT_USD, 6)))


def spend_limit_settings(
    dollars: float, window_s: float, burst_usd: float | None = None
) -> SpendLimitSettings:
    """Size a spend limit so that no rolling window of ``window_s`` spends more than ``dollars``.

    Args:
        dollars: The budget per window.
        window_s: The window in seconds.
        burst_usd: What may be spent at once from idle (and the largest single request);
            default a tenth of the budget.

    Returns:
        The limit in slots and its decay in slots per second.

    Raises:
        ValidationError: A non-positive budget or window, or a burst outside (0, budget).
    """
    if dollars <= 0 or window_s <= 0:
        raise ValidationError("dollars", "the budget and the window must be positive", dollars)
    burst = dollars * DEFAULT_BURST_FRACTION if burst_usd is None else burst_usd
    if not 0 < burst < dollars:
        raise ValidationError("burst_usd", "must be above 0 and below the budget", burst_usd)
    limit = math.floor(round(burst / SLOT_USD, 6))
    decay = (math.floor(round(dollars / SLOT_USD, 6)) - limit) / window_s
    return SpendLimitSettings(limit, decay)


def create_spend_limit(
    name: str, dollars: float, window_s: float, burst_usd: float | None = None
) -> SpendLimitSettings:
    """Create (or resize) the global concurrency limit of a spend limit on the Prefect server.

    Args:
        name: The limit's name (what ``spend_limit=`` takes).
        dollars: The budget per window.
        window_s: The window in seconds.
        burst_usd: See :func:`spend_limit_settings`.

    Returns:
        The settings applied.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import (
        GlobalConcurrencyLimitCreate,
        GlobalConcurrencyLimitUpdate,
    )
    from prefect.exceptions import ObjectNotFound

    settings = spend_limit_settings(dollars, window_s, burst_usd)
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(
                    name=name,
                    limit=settings.limit,
                    slot_decay_per_second=settings.slot_decay_per_second,
                )
            )
        else:
            client.update_global_concurrency_limit(
                name,
                GlobalConcurrencyLimitUpdate(
                    limit=settings.limit, slot_decay_per_second=settings.slot_decay_per_second
                ),
            )
    return settings


def estimate_request_usd(params: dict[str, Any], input_images: int = 0) -> float:
    """The estimated cost of one image request, from the token table.

    Args:
        params: The request's parameters (``model``, ``prompt``, ``size``, ``quality``, ``n``).
        input_images: Number of input images (edits).

    Returns:
        USD; 0 when the model's price is unknown.
    """
    model = str(params.get("model"))
    text = estimate_text_tokens(str(params.get("prompt", "")))
    image_in = estimate_input_image_tokens(model, input_images)
    out = estimate_output_tokens(model, str(params.get("size") or "auto"), params.get("quality"))
    usage = Usage(
        input_tokens=text + image_in,
        text_input_tokens=text,
        image_input_tokens=image_in,
        output_tokens=out * int(params.get("n") or 1),
    )
    return cost_usd(usage, model) or 0.0


_limits: dict[str, int] = {}
_limits_lock = threading.Lock()


def _capacity(name: str) -> int:
    with _limits_lock:
        known = _limits.get(name)
    if known is not None:
        return known
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            limit = client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            raise ValidationError(
                "spend_limit",
                f"no Prefect global concurrency limit is named {name!r}; create it with "
                "prefect_cometapi.billing.spend.create_spend_limit or leave the parameter empty",
            ) from None
    if not limit.slot_decay_per_second:
        raise ValidationError(
            "spend_limit", f"the global concurrency limit {name!r} has no slot decay"
        )
    with _limits_lock:
        _limits[name] = limit.limit
    return limit.limit


def _check(name: str, estimated_usd: float) -> int:
    slots = spend_slots(estimated_usd)
    capacity = _capacity(name)
    if slots > capacity:
        raise SpendLimitError(
            name,
            estimated_usd,
            f"it needs {slots} slots of ${SLOT_USD} and the limit holds {capacity}; raise the "
            "limit's burst",
        )
    return slots


@contextmanager
def acquire_spend(name: str | None, estimated_usd: float, wait: bool = True) -> Iterator[None]:
    """Take a request's estimated cost from a spend limit before it is sent.

    Args:
        name: The spend limit's name; ``None`` for none.
        estimated_usd: The request's estimated cost.
        wait: Wait for budget (default) or raise at once when there is none.

    Yields:
        Once the budget is taken (it is not given back: it decays).

    Raises:
        SpendLimitError: The request is larger than the limit, or there was no budget and
            ``wait`` is false.
    """
    if name:
        from prefect.concurrency.sync import rate_limit

        slots = _check(name, estimated_usd)
        try:
            rate_limit(
                name,
                occupy=slots,
                timeout_seconds=None if wait else FAIL_FAST_TIMEOUT_S,
                strict=True,
            )
        except TimeoutError:
            raise SpendLimitError(name, estimated_usd, "no budget left right now") from None
    yield


@asynccontextmanager
async def aacquire_spend(
    name: str | None, estimated_usd: float, wait: bool = True
) -> AsyncIterator[None]:
    """:func:`acquire_spend` for async tasks (the wait is awaited).

    Args:
        name: The spend limit's name; ``None`` for none.
        estimated_usd: The request's estimated cost.
        wait: Wait for budget (default) or raise at once when there is none.

    Yields:
        Once the budget is taken.
    """
    if name:
        import asyncio

        from prefect.concurrency.asyncio import rate_limit

        slots = await asyncio.to_thread(_check, name, estimated_usd)
        try:
            await rate_limit(
                name,
                occupy=slots,
                timeout_seconds=None if wait else FAIL_FAST_TIMEOUT_S,
                strict=True,
            )
        except TimeoutError:
            raise SpendLimitError(name, estimated_usd, "no budget left right now") from None
    yield
