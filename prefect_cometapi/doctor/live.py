"""``--live``: one cheapest generation, its estimated price said before it is sent."""

from __future__ import annotations

import time
from collections.abc import Callable

from prefect_cometapi.billing.prices import DEFAULT_PRICES, estimate_cost
from prefect_cometapi.client.rules import LEGACY_SIZES, is_flexible_size_model
from prefect_cometapi.doctor.result import CheckResult, DoctorContext, Status
from prefect_cometapi.errors import CometAPIError, redact

__all__ = ["cheapest_generation", "check_live"]

LIVE_PROMPT = "a small grey test square"
"""The prompt of the ``--live`` generation (short: text tokens are billed too)."""
_SMALLEST_FLEXIBLE = ("1024x640", "640x1024")
"""The smallest sizes a flexible-size model takes (the API's minimum pixel count)."""

LiveChoice = tuple[str, str, str, float]
"""``(model, size, quality, estimated USD)``."""


def cheapest_generation(models: list[str] | None = None) -> LiveChoice:
    """The cheapest generation by the price table: model, size and quality.

    Args:
        models: The models the API lists; only those are considered (empty or ``None``: every
            model with a price).

    Returns:
        ``(model, size, quality, estimated USD)``.
    """
    listed = set(models or ())
    candidates = [m for m in DEFAULT_PRICES if not listed or m in listed] or list(DEFAULT_PRICES)
    best: LiveChoice | None = None
    for model in candidates:
        sizes = [s for s in LEGACY_SIZES if s != "auto"]
        if is_flexible_size_model(model):
            sizes += list(_SMALLEST_FLEXIBLE)
        for size in sizes:
            usd = estimate_cost(model, LIVE_PROMPT, size, "low")
            if usd is not None and (best is None or usd < best[3]):
                best = (model, size, "low", usd)
    assert best is not None  # DEFAULT_PRICES is never empty
    return best


def check_live(ctx: DoctorContext, announce: Callable[[str], None]) -> CheckResult:
    """Spend one cheapest generation through the client the tasks use, without retries.

    Args:
        ctx: The doctor's context (the API check must have passed).
        announce: Called with the model, size and estimated price before anything is sent.

    Returns:
        ``ok`` with the billed cost, or ``problem`` with the API's error (never the key).
    """
    if not ctx.options.live:
        return CheckResult("live", Status.SKIPPED, "not asked (--live spends one cheapest image)")
    if not ctx.api_ok or ctx.block is None or ctx.base_url is None:
        return CheckResult(
            "live",
            Status.SKIPPED,
            "nothing was spent: the key, the base URL and the API must pass first",
            "fix the lines above",
        )
    model, size, quality, estimate = cheapest_generation(ctx.models)
    details = {"model": model, "size": size, "quality": quality, "estimated_usd": estimate}
    announce(
        f"--live: sending one generation ({model}, {size}, quality {quality}), estimated "
        f"${estimate:.4f}"
    )
    block = ctx.block.model_copy(update={"max_retries": 0})  # one request, billed once at most
    started = time.monotonic()
    try:
        with block.get_client() as client:
            result = client.generate(LIVE_PROMPT, model=model, size=size, quality=quality, n=1)
    except CometAPIError as exc:
        return CheckResult(
            "live",
            Status.PROBLEM,
            f"the generation failed: {type(exc).__name__}: {redact(str(exc), ctx.api_key)[:300]}",
            "read the error: a refused key, no balance or a model this account may not use",
            details,
        )
    seconds = time.monotonic() - started
    billed = result.billed_usd
    details.update({"billed_usd": billed, "seconds": round(seconds, 2)})
    shown = "unknown" if billed is None else f"${billed:.4f}"
    return CheckResult(
        "live",
        Status.OK,
        f"one {model} {size} {quality} image in {seconds:.1f} s, billed {shown} (estimated "
        f"${estimate:.4f})",
        details=details,
    )
