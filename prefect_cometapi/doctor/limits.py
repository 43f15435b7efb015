"""The doctor's check of the global concurrency limits the flows are told to use."""

from __future__ import annotations

from typing import Any

from prefect_cometapi.billing.spend import SLOT_USD
from prefect_cometapi.doctor.result import CheckResult, DoctorContext, Status

__all__ = ["check_limits"]


def check_limits(ctx: DoctorContext) -> list[CheckResult]:
    """The global concurrency limits the flows are told to use exist on the Prefect server.

    ``rate_limit`` and ``spend_limit`` must have slot decay (a rate, a dollar budget); a spend
    limit's line gives its burst and refill in dollars.

    Args:
        ctx: The doctor's context.

    Returns:
        One result per limit named (none when no limit is named).
    """
    named = [
        ("concurrency-limit", ctx.options.concurrency_limit),
        ("rate-limit", ctx.options.rate_limit),
        ("spend-limit", ctx.options.spend_limit),
    ]
    named = [(kind, name) for kind, name in named if name]
    if not named:
        return []
    if not ctx.prefect_ok:
        return [
            CheckResult(kind, Status.SKIPPED, f"{name!r} not looked up: no Prefect API", "")
            for kind, name in named
        ]
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    results = []
    with get_client(sync_client=True) as client:
        for kind, name in named:
            try:
                limit = client.read_global_concurrency_limit_by_name(name)
            except ObjectNotFound:
                results.append(_missing_limit(kind, name))
                continue
            results.append(_limit_result(kind, name, limit))
    return results


def _missing_limit(kind: str, name: str) -> CheckResult:
    if kind == "spend-limit":
        fix = (
            'create it: python -c "from prefect_cometapi.billing.spend import create_spend_limit; '
            f"create_spend_limit('{name}', dollars=5.0, window_s=3600)\""
        )
        what = "spend limit"
    elif kind == "rate-limit":
        fix = f"create it: prefect gcl create {name} --limit 10 --slot-decay-per-second 1"
        what = "rate limit"
    else:
        fix = f"create it: prefect gcl create {name} --limit 8"
        what = "concurrency limit"
    return CheckResult(
        kind,
        Status.PROBLEM,
        f"the {what} {name!r} does not exist on the Prefect server (every request of a run "
        "that names it would fail)",
        fix + ", or leave the parameter empty",
        {"limit": name, "exists": False},
    )


def _limit_result(kind: str, name: str, limit: Any) -> CheckResult:
    slots = int(getattr(limit, "limit", 0))
    decay = float(getattr(limit, "slot_decay_per_second", 0) or 0)
    active = bool(getattr(limit, "active", True))
    details = {"limit": name, "exists": True, "slots": slots, "slot_decay_per_second": decay}
    if kind != "concurrency-limit" and not decay:
        return CheckResult(
            kind,
            Status.PROBLEM,
            f"the global concurrency limit {name!r} has no slot decay, so it cannot be a "
            f"{kind.replace('-', ' ')}",
            f"prefect gcl update {name} --slot-decay-per-second R (or use it as concurrency_limit)",
            details,
        )
    if not active:
        return CheckResult(
            kind,
            Status.WARNING,
            f"the global concurrency limit {name!r} exists but is inactive: it limits nothing",
            f"prefect gcl enable {name}",
            details,
        )
    if kind == "spend-limit":
        text = (
            f"the spend limit {name!r} exists: bursts of up to ${slots * SLOT_USD:.2f}, "
            f"refilled at ${decay * SLOT_USD * 3600:.2f} an hour"
        )
    elif kind == "rate-limit":
        text = f"the rate limit {name!r} exists: {slots} at once, {decay * 60:g} a minute"
    else:
        text = f"the concurrency limit {name!r} exists: {slots} requests in flight"
    return CheckResult(kind, Status.OK, text, details=details)
