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

from prefect_cometapi.billing.caps import SPEND_LIMIT_ENV, limit_names
from prefect_cometapi.billing.prices import (
    PRICES_ENV,
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
"""Timeout of the one request with which a task that must not wait tries to take its slots.
A refusal does not wait for it: the server answers at once (HTTP 423) and the task raises."""
DEFAULT_BURST_FRACTION = 0.1
_FAIL_FAST_HTTPX = {"timeout": FAIL_FAST_TIMEOUT_S}


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


def estimate_request_usd(params: dict[str, Any], input_images: int = 0) -> float | None:
    """The estimated cost of one image request, from the token table.

    Args:
        params: The request's parameters (``model``, ``prompt``, ``size``, ``quality``, ``n``).
        input_images: Number of input images (edits).

    Returns:
        USD; ``None`` when the model's price is unknown (a spend limit then refuses the
        request: :func:`acquire_spend`).
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
    return cost_usd(usage, model)


def _unpriced(names: list[str]) -> ValidationError:
    return ValidationError(
        "model",
        f"no price is known for the requested model, so the spend limit {names[0]!r} cannot "
        f"count it; the worker's owner can price it with {PRICES_ENV}",
    )


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
            raise _missing(name) from None
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


def _no_budget(
    name: str, estimated_usd: float, slots: int, retry_after: str | None, limit: Any
) -> SpendLimitError:
    """The refusal for a limit that had no budget now, with what is left and how to get more."""
    needs = f"it needs {slots} slots (${slots * SLOT_USD:.3f})"
    wait_s = None
    if limit is not None:
        left = max(0, int(limit.limit - (limit.active_slots or 0)))
        decay = limit.slot_decay_per_second or 0.0
        needs += (
            f" and {left} of the limit's {limit.limit} (${left * SLOT_USD:.3f} of "
            f"${limit.limit * SLOT_USD:.3f}) are left; it frees ${decay * SLOT_USD * 3600:.2f} "
            "an hour"
        )
        if decay > 0:
            wait_s = max(0, slots - left) / decay
    if wait_s is None and retry_after is not None:
        try:
            wait_s = float(retry_after)  # the server's own estimate, queued requests included
        except ValueError:
            wait_s = None
    if wait_s is not None:
        needs += f", enough for this request in about {math.ceil(wait_s)} s"
    return SpendLimitError(
        name,
        estimated_usd,
        f"no budget left right now: {needs}. Wait for it with spend_limit_wait=True, or raise "
        f"the budget with prefect_cometapi.billing.spend.create_spend_limit({name!r}, dollars=..., "
        "window_s=...)",
    )


def _missing(name: str) -> ValidationError:
    return ValidationError(
        "spend_limit",
        f"no Prefect global concurrency limit is named {name!r}; create it with "
        "prefect_cometapi.billing.spend.create_spend_limit or leave the parameter empty",
    )


def _taken(name: str, response: Any) -> None:
    try:
        names = {limit.get("name") for limit in response.json()}
    except (ValueError, AttributeError, TypeError):
        return
    if name not in names:
        raise _missing(name)


def _take_now(name: str, estimated_usd: float, slots: int) -> None:
    """Take the slots with one request to the Prefect server, or raise at once without them.

    Prefect's ``rate_limit`` retries a refused request after the server's ``Retry-After``
    (the time the decay needs), so with a timeout it answered only when the timeout ran out
    (2 s and more). One ``increment_concurrency_slots`` call answers in a round trip.
    """
    import httpx
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True, httpx_settings=_FAIL_FAST_HTTPX) as client:
        try:
            response = client.increment_concurrency_slots(
                names=[name], slots=slots, mode="rate_limit"
            )
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code != 423:
                raise
            retry_after = exc.response.headers.get("Retry-After")
            try:
                limit = client.read_global_concurrency_limit_by_name(name)
            except Exception:  # noqa: BLE001 - what is left is a detail of the message
                limit = None
            raise _no_budget(name, estimated_usd, slots, retry_after, limit) from None
    _taken(name, response)


async def _atake_now(name: str, estimated_usd: float, slots: int) -> None:
    """:func:`_take_now` on the async client."""
    import httpx
    from prefect.client.orchestration import get_client

    async with get_client(httpx_settings=_FAIL_FAST_HTTPX) as client:
        try:
            response = await client.increment_concurrency_slots(
                names=[name], slots=slots, mode="rate_limit"
            )
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code != 423:
                raise
            retry_after = exc.response.headers.get("Retry-After")
            try:
                limit = await client.read_global_concurrency_limit_by_name(name)
            except Exception:  # noqa: BLE001 - what is left is a detail of the message
                limit = None
            raise _no_budget(name, estimated_usd, slots, retry_after, limit) from None
    _taken(name, response)


@contextmanager
def acquire_spend(
    name: str | None, estimated_usd: float | None, wait: bool = True
) -> Iterator[None]:
    """Take a request's estimated cost from a spend limit before it is sent.

    The worker's own spend limit (:data:`~prefect_cometapi.billing.caps.SPEND_LIMIT_ENV`) is
    taken too, whatever the run asked for.

    Args:
        name: The run's spend limit name; ``None`` for none.
        estimated_usd: The request's estimated cost; ``None`` when the model's price is unknown.
        wait: Wait for budget (default) or raise at once when there is none (one request to
            the Prefect server; the error says what is left and how to raise the limit).

    Yields:
        Once the budget is taken (it is not given back: it decays).

    Raises:
        SpendLimitError: The request is larger than the limit, or there was no budget and
            ``wait`` is false.
        ValidationError: A spend limit applies and the model's price is unknown.
    """
    names = limit_names(name, SPEND_LIMIT_ENV)
    if names and estimated_usd is None:
        raise _unpriced(names)
    usd = estimated_usd or 0.0
    for each in names:
        slots = _check(each, usd)
        if wait:
            from prefect.concurrency.sync import rate_limit

            rate_limit(each, occupy=slots, timeout_seconds=None, strict=True)
        else:
            _take_now(each, usd, slots)
    yield


@asynccontextmanager
async def aacquire_spend(
    name: str | None, estimated_usd: float | None, wait: bool = True
) -> AsyncIterator[None]:
    """:func:`acquire_spend` for async tasks (the wait is awaited).

    Args:
        name: The run's spend limit name; ``None`` for none.
        estimated_usd: The request's estimated cost; ``None`` when the model's price is unknown.
        wait: Wait for budget (default) or raise at once when there is none.

    Yields:
        Once the budget is taken.

    Raises:
        ValidationError: A spend limit applies and the model's price is unknown.
    """
    import asyncio

    names = limit_names(name, SPEND_LIMIT_ENV)
    if names and estimated_usd is None:
        raise _unpriced(names)
    usd = estimated_usd or 0.0
    for each in names:
        slots = await asyncio.to_thread(_check, each, usd)
        if wait:
            from prefect.concurrency.asyncio import rate_limit

            await rate_limit(each, occupy=slots, timeout_seconds=None, strict=True)
        else:
            await _atake_now(each, usd, slots)
    yield
