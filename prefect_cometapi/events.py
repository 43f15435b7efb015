"""The Prefect events the tasks emit, for automations and the event feed.

Image requests (one event per task call or cache hit)::

    prefect-cometapi.image.generated   an image request was paid for (generations or edits)
    prefect-cometapi.image.cached      the task was served from the cache (nothing paid)
    prefect-cometapi.image.refused     the API refused the request (content policy)
    prefect-cometapi.image.failed      any other failure of a task attempt

Their resource is the model (``prefect-cometapi.model.gpt-image-2``); Prefect relates each to
the task run, flow run, flow, deployment and work pool it came from, so automations can filter
on any of them. The payload carries the endpoint, size, quality, ``n``, request id, tokens,
cost (or the cost avoided by a cache hit), duration and the images' sha256 and sizes; the
result events also carry ``cached`` and ``billed_usd``, the figures of the same names on the
``ImageResult`` (what this run paid: 0 on a cache hit).

Spending: every paid request also emits ``prefect-cometapi.spend.increment`` events, one per
:data:`SPEND_INCREMENT_USD` spent (a process carries the remainder to its next request), on the
resource ``prefect-cometapi.spend.deployment.<id>`` (``.flow-run.<id>`` outside deployments).
Prefect's event triggers count events, so "more than $5 in an hour" is "more than 50 of these
within 3600 s" (see docs/reference.md, "Events").

Review (the review gate of the batch flows), one event per verdict, on the resource
``prefect-cometapi.item.<item id>``, with the round, who decided (``reviewer``, ``approve_all``,
``reject_all``, ``timeout``) and what the reviewed image cost::

    prefect-cometapi.review.approved   the image goes on to upscale and S3
    prefect-cometapi.review.rejected   not delivered (regenerated while rounds remain)

Uploads emit ``prefect.asset.materialization.succeeded`` for the S3 object, as ``@materialize``
would (:func:`declare_asset`).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

from prefect.automations import Automation
from prefect.context import FlowRunContext, TaskRunContext
from prefect.events import Event, emit_event
from prefect.events.actions import ActionTypes, DoNothing
from prefect.events.schemas.automations import EventTrigger, Posture

from prefect_cometapi.errors import APIStatusError, redact
from prefect_cometapi.models import GeneratedImage, ImageResult

if TYPE_CHECKING:
    from prefect_cometapi.s3.upload import S3Object

__all__ = [
    "IMAGE_EVENT_PREFIX",
    "SPEND_EVENT",
    "SPEND_INCREMENT_USD",
    "declare_asset",
    "emit_image_event",
    "emit_review_event",
    "emit_spend",
    "spend_automation",
]

IMAGE_EVENT_PREFIX = "prefect-cometapi.image"
SPEND_EVENT = "prefect-cometapi.spend.increment"
REVIEW_EVENT_PREFIX = "prefect-cometapi.review"
SPEND_INCREMENT_USD = 0.10
"""Dollars one spend event stands for."""
MATERIALIZED_BY = "prefect-cometapi"
_ASSET_KEY_FORBIDDEN = set(" \n\r\t\0#?&%\"'<>[]{}|\\^`")
_MAX_ASSET_KEY = 512

Outcome = Literal["generated", "cached", "refused", "failed"]

_carry: dict[str, float] = {}
_carry_lock = threading.Lock()


def model_resource(model: str) -> dict[str, str]:
    """The resource an image event is about: the model.

    Args:
        model: The model name.

    Returns:
        Prefect resource labels.
    """
    return {
        "prefect.resource.id": f"prefect-cometapi.model.{model}",
        "prefect.resource.name": model,
    }


def _run_scope() -> str:
    flow_ctx = FlowRunContext.get()
    flow_run = getattr(flow_ctx, "flow_run", None)
    if flow_run is not None and flow_run.deployment_id is not None:
        return f"deployment.{flow_run.deployment_id}"
    if flow_run is not None:
        return f"flow-run.{flow_run.id}"
    task_ctx = TaskRunContext.get()
    if task_ctx is not None and task_ctx.task_run.flow_run_id is not None:
        return f"flow-run.{task_ctx.task_run.flow_run_id}"
    return "process"


def spend_resource_id() -> str:
    """The spend resource of the current run: its deployment, else its flow run.

    Returns:
        E.g. ``prefect-cometapi.spend.deployment.9a1c...``.
    """
    return f"prefect-cometapi.spend.{_run_scope()}"


def emit_spend(cost_usd: float | None) -> int:
    """Emit one :data:`SPEND_EVENT` per :data:`SPEND_INCREMENT_USD` spent.

    What is left below one increment is carried to the next call for the same deployment (or
    flow run) in this process.

    Args:
        cost_usd: What a request cost.

    Returns:
        How many events were emitted.
    """
    if not cost_usd or cost_usd <= 0:
        return 0
    resource_id = spend_resource_id()
    with _carry_lock:
        total = _carry.get(resource_id, 0.0) + cost_usd
        # A tiny epsilon so that 0.3 / 0.1 counts three increments, not 2.9999.
        count = int((total + 1e-9) // SPEND_INCREMENT_USD)
        _carry[resource_id] = max(total - count * SPEND_INCREMENT_USD, 0.0)
    for _ in range(count):
        emit_event(
            event=SPEND_EVENT,
            resource={"prefect.resource.id": resource_id, "prefect.resource.name": "spend"},
            payload={"usd": SPEND_INCREMENT_USD},
        )
    return count


def spend_automation(
    dollars: float,
    within_s: float = 3600,
    name: str = "cometapi-spend",
    actions: Sequence[ActionTypes] | None = None,
) -> Automation:
    """An automation that fires when one deployment spends more than ``dollars`` in a window.

    It counts :data:`SPEND_EVENT` events (one per :data:`SPEND_INCREMENT_USD`) per deployment
    spend resource; each process may hold back less than one increment, so the count can trail
    the spend by up to ``SPEND_INCREMENT_USD`` per worker process.

    Args:
        dollars: The spend that fires it (rounded up to whole increments).
        within_s: The window in seconds.
        name: The automation's name.
        actions: What to do (e.g. ``SendNotification(block_document_id=..., subject=...,
            body=...)``); default ``DoNothing`` (only the automation's own event).

    Returns:
        The automation, not yet created: call ``.create()`` on it.
    """
    return Automation(
        name=name,
        description=f"A deployment spent more than ${dollars:g} within {within_s:g} s",
        trigger=EventTrigger(
            expect={SPEND_EVENT},
            match={"prefect.resource.id": "prefect-cometapi.spend.deployment.*"},
            for_each={"prefect.resource.id"},
            posture=Posture.Reactive,
            threshold=math.ceil(round(dollars / SPEND_INCREMENT_USD, 6)),
            within=timedelta(seconds=within_s),
        ),
        actions=list(actions) if actions else [DoNothing()],
    )


def _images(images: list[GeneratedImage]) -> list[dict[str, Any]]:
    return [{"sha256": i.sha256, "size": i.size, "bytes": i.nbytes} for i in images]


def emit_image_event(
    outcome: Outcome,
    *,
    endpoint: str,
    model: str,
    params: dict[str, Any],
    result: ImageResult | None = None,
    error: BaseException | None = None,
    seconds: float | None = None,
) -> Event | None:
    """Emit one ``prefect-cometapi.image.*`` event.

    Args:
        outcome: ``generated``, ``cached``, ``refused`` or ``failed``.
        endpoint: ``generations`` or ``edits``.
        model: The model.
        params: The request's parameters (size, quality, n...; never a secret).
        result: The result (generated or cached).
        error: The error (refused or failed).
        seconds: How long the task call took.

    Returns:
        The event, when the events client returns it.
    """
    payload: dict[str, Any] = {
        "endpoint": endpoint,
        "model": model,
        "size": params.get("size") or "auto",
        "quality": params.get("quality") or "auto",
        "n": params.get("n", 1),
        "duration_s": round(seconds, 3) if seconds is not None else None,
    }
    if result is not None:
        usage = result.usage
        cost = result.cost_usd
        payload.update(
            request_id=result.request_id,
            input_tokens=usage.input_tokens if usage else None,
            output_tokens=usage.output_tokens if usage else None,
            total_tokens=usage.total_tokens if usage else None,
            cost_usd=cost if outcome == "generated" else 0.0,
            # The same two figures as on the result: whether this run paid, and what.
            cached=outcome == "cached",
            billed_usd=cost if outcome == "generated" else 0.0,
            images=_images(result.images),
        )
        if outcome == "cached":
            payload["cost_avoided_usd"] = cost
    if error is not None:
        payload["error_type"] = type(error).__name__
        payload["error"] = redact(str(error))[:500]
        if isinstance(error, APIStatusError):
            payload.update(
                status_code=error.status_code, code=error.code, request_id=error.request_id
            )
        payload["retryable"] = bool(getattr(error, "retryable", False))
    return emit_event(
        event=f"{IMAGE_EVENT_PREFIX}.{outcome}",
        resource=model_resource(model),
        payload=payload,
    )


def asset_key_ok(uri: str) -> bool:
    """Whether Prefect accepts ``uri`` as an asset key (S3 keys allow more characters).

    Args:
        uri: ``s3://bucket/key``.

    Returns:
        ``True`` when it can be declared as an asset.
    """
    return len(uri) <= _MAX_ASSET_KEY and not (set(uri) & _ASSET_KEY_FORBIDDEN)


def declare_asset(stored: S3Object, image: GeneratedImage, ok: bool = True) -> None:
    """Emit the materialization event of an S3 object (what ``@materialize`` emits).

    Keys are only known after the image exists, which ``@materialize`` (assets fixed when the
    task is made) does not fit, so the event is emitted directly; inside a run Prefect links it
    to the flow and task run.

    Args:
        stored: The stored object.
        image: The image it holds.
        ok: ``False`` to record a failed materialization.
    """
    if not asset_key_ok(stored.uri):
        return
    emit_event(
        event=f"prefect.asset.materialization.{'succeeded' if ok else 'failed'}",
        resource={
            "prefect.resource.id": stored.uri,
            "prefect.resource.name": stored.key,
            "prefect.asset.description": f"{image.size} {image.format} image by {image.model}",
        },
        related=[
            {
                "prefect.resource.id": MATERIALIZED_BY,
                "prefect.resource.role": "asset-materialized-by",
            }
        ],
        payload={
            "sha256": stored.sha256,
            "bytes": stored.size,
            "size": image.size,
            "format": image.format,
            "model": image.model,
            "content_type": stored.content_type,
            "existed": stored.existed,
        },
    )


def emit_review_event(
    decision: Literal["approved", "rejected"],
    item_id: str,
    *,
    round_number: int,
    by: str,
    reviewer: str | None = None,
    note: str | None = None,
    cost_usd: float = 0.0,
) -> Event | None:
    """Emit ``prefect-cometapi.review.approved`` or ``.rejected`` for one verdict.

    Args:
        decision: ``approved`` or ``rejected``.
        item_id: The item.
        round_number: The review round.
        by: ``reviewer``, ``approve_all``, ``reject_all`` or ``timeout``.
        reviewer: The name the reviewer gave.
        note: The reviewer's note.
        cost_usd: What the reviewed image cost this run.

    Returns:
        The event, when the events client returns it.
    """
    return emit_event(
        event=f"{REVIEW_EVENT_PREFIX}.{decision}",
        resource={
            "prefect.resource.id": f"prefect-cometapi.item.{item_id}",
            "prefect.resource.name": item_id,
        },
        payload={
            "item": item_id,
            "round": round_number,
            "by": by,
            "reviewer": reviewer,
            "note": (note or "")[:500] or None,
            "cost_usd": cost_usd,
        },
    )
