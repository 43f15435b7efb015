"""One batch item's pipeline: generate -> (upscale) -> upload, returning a small record.

After a delivery, the item's record goes to the delivery ledger (:mod:`.ledger`), so that a
re-run finds it already in S3 and runs nothing for it (:func:`.window.run_items`).

Each image's bytes live only while its item is being processed: the generation is persisted by
``generate_image`` (and not kept in Prefect's in-memory result cache), the upscale is handed to
the upload and dropped, and what comes back is an
:class:`~prefect_cometapi.reports.outcomes.ItemOutcome`. So a batch's memory does not grow with
its size.

Per item there is one task run, ``generate-image-<item id>`` (two with an upscale; see
:func:`~prefect_cometapi.orchestration.options.run_label`): :func:`process_item`
itself is plain code that :func:`.window.run_items` runs in a worker thread of the flow run
(with the flow run's context), and the upload and its asset declaration run in it too (see
:mod:`.delivery`). The image task's run is what carries the cache, the request's retries and
its state; a second task run around it would add Prefect's bookkeeping (its state changes,
events and the server's work on them) to every item without doing anything of its own.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

from prefect.utilities.annotations import quote

from prefect_cometapi.batching.delivery import deliver_result
from prefect_cometapi.batching.ledger import delivery_key, record_delivery
from prefect_cometapi.batching.memory import map_large_blocks, release_freed_memory
from prefect_cometapi.batching.requesting import generate_step, run_request
from prefect_cometapi.blocks import CometAPICredentials
from prefect_cometapi.forms.options import ImageOptions, S3Options, UpscaleOptions
from prefect_cometapi.models import ImageResult
from prefect_cometapi.orchestration.limits import request_slot
from prefect_cometapi.orchestration.options import run_label
from prefect_cometapi.reports.outcomes import DeliveredImage, ItemOutcome, describe_error
from prefect_cometapi.reports.previews import with_previews
from prefect_cometapi.text import prompt_excerpt

__all__ = ["api_slots", "generate_item", "outcome_for", "process_item"]

_api_slots: dict[str, threading.BoundedSemaphore] = {}


@contextmanager
def api_slots(size: int) -> Iterator[str]:
    """A process-wide semaphore bounding the API requests of one batch, known by a token.

    Items in flight may outnumber API requests: the image task holds a slot during its HTTP
    exchange only (:func:`~prefect_cometapi.orchestration.limits.request_slot`), so an item that is
    starting, persisting its result or uploading holds none, and ``concurrency`` requests stay
    busy meanwhile. The token (a string) is what :func:`process_item` receives (a plain value in
    its records and logs); the semaphore itself never leaves the process.

    Args:
        size: Requests allowed at once.

    Yields:
        The token to pass as ``process_item(api_slots=...)``.
    """
    token = uuid.uuid4().hex
    _api_slots[token] = threading.BoundedSemaphore(size)
    try:
        yield token
    finally:
        _api_slots.pop(token, None)


def outcome_for(
    item_id: str,
    index: int,
    prompt: str,
    image: ImageOptions,
    result: ImageResult | None,
    cached: bool,
    delivered: list[DeliveredImage],
    error: BaseException | None,
    started: float,
    already_delivered: bool = False,
) -> ItemOutcome:
    """Build an item's record.

    Args:
        item_id: The item id.
        index: The item's position.
        prompt: Its prompt.
        image: The request options.
        result: The API's result (``None`` if the request failed).
        cached: Whether the result came from the cache.
        delivered: What was stored.
        error: What went wrong, if anything.
        started: ``time.monotonic()`` when the item started.
        already_delivered: Its objects were already in S3 (nothing was requested or uploaded).

    Returns:
        The record.
    """
    paid = result is not None and not cached
    usage = result.usage if paid and result is not None else None
    code, message = describe_error(error) if error is not None else (None, None)
    return ItemOutcome(
        item_id=item_id,
        index=index,
        status="failed" if error is not None else "delivered",
        prompt_excerpt=prompt_excerpt(prompt),
        size=image.request_size,
        quality=image.quality,
        images=with_previews(delivered, result, index),
        input_tokens=usage.input_tokens if usage else 0,
        output_tokens=usage.output_tokens if usage else 0,
        cost_usd=(result.cost_usd or 0.0) if paid and result is not None else 0.0,
        cached=cached,
        already_delivered=already_delivered,
        error_code=code,
        error=message,
        seconds=round(time.monotonic() - started, 3),
    )


def process_item(
    item_id: str,
    index: int,
    prompt: str,
    credentials: CometAPICredentials,
    image: ImageOptions,
    upscale: UpscaleOptions,
    s3: S3Options,
    run_time: datetime | None = None,
    concurrency_limit: str | None = None,
    rate_limit: str | None = None,
    api_slots: str | None = None,
    spend_limit: str | None = None,
) -> ItemOutcome:
    """Generate, upscale and upload one batch item; return its small record.

    Call it inside a flow run (in any thread that carries the flow run's context). A failure
    (content policy, an upload error...) does not raise: the record says ``failed`` with the
    error's code and message, so the batch can go on and report it.

    Args:
        item_id: The item's id.
        index: Its position in the batch.
        prompt: The rendered prompt.
        credentials: The API credentials.
        image: The request options.
        upscale: The upscale options.
        s3: Where to store the images.
        run_time: The time for the key's date placeholders.
        concurrency_limit: A Prefect global concurrency limit to hold during the API call.
        rate_limit: A Prefect global concurrency limit with slot decay, used as a rate.
        api_slots: Token of the batch's request semaphore (see :func:`api_slots`).
        spend_limit: A spend limit (:mod:`prefect_cometapi.billing.spend`) to take each request's
            estimated cost from.

    Returns:
        The item's record.
    """
    started = time.monotonic()
    if upscale.enabled:
        map_large_blocks()
    result, cached, error = generate_item(
        prompt,
        credentials,
        image,
        concurrency_limit,
        rate_limit,
        api_slots,
        spend_limit,
        item_id=item_id,
    )
    delivered: list[DeliveredImage] = []
    if result is not None:
        delivered, error = deliver_item(
            item_id, index, prompt, result, credentials, image, upscale, s3, run_time
        )
    return outcome_for(item_id, index, prompt, image, result, cached, delivered, error, started)


def generate_item(
    prompt: str,
    credentials: CometAPICredentials,
    image: ImageOptions,
    concurrency_limit: str | None = None,
    rate_limit: str | None = None,
    api_slots: str | None = None,
    spend_limit: str | None = None,
    *,
    item_id: str | None = None,
) -> tuple[ImageResult | None, bool, BaseException | None]:
    """The first phase of an item: its ``generate-image`` task run (cached on the request).

    The review gate runs this phase for every item, waits for the reviewer, then runs
    :func:`process_item` for the approved ones, whose generation is then a cache hit.

    Args:
        prompt: The rendered prompt.
        credentials: The API credentials.
        image: The request options.
        concurrency_limit: A Prefect global concurrency limit to hold during the API call.
        rate_limit: A Prefect global concurrency limit with slot decay, used as a rate.
        api_slots: Token of the batch's request semaphore (see :func:`api_slots`).
        spend_limit: A spend limit to take the request's estimated cost from.
        item_id: The item's id, which names the task run (``generate-image-<item id>``).

    Returns:
        ``(result, cached, error)`` as :func:`~.requesting.run_request` gives them.
    """
    # The slot is held around the HTTP exchange only (inside the image task), not the task run.
    # The paid image is persisted when the image task run ends (no transaction encloses it
    # here), before the upload: a failed upload or a killed process does not lose it.
    with run_label(item_id), request_slot(_api_slots.get(api_slots) if api_slots else None):
        return run_request(
            generate_step,
            prompt=prompt,
            credentials=quote(credentials),  # Prefect need not walk it for task inputs
            concurrency_limit=concurrency_limit,
            rate_limit=rate_limit,
            spend_limit=spend_limit,
            **image.request_kwargs(),
        )


def deliver_item(
    item_id: str,
    index: int,
    prompt: str,
    result: ImageResult,
    credentials: CometAPICredentials,
    image: ImageOptions,
    upscale: UpscaleOptions,
    s3: S3Options,
    run_time: datetime | None = None,
) -> tuple[list[DeliveredImage], BaseException | None]:
    """The second phase of an item: upscale, upload, record the delivery in the ledger.

    Args:
        item_id: The item's id.
        index: Its position in the batch.
        prompt: The rendered prompt.
        result: Its generation.
        credentials: The API credentials (part of the ledger key).
        image: The request options.
        upscale: The upscale options.
        s3: Where to store the images.
        run_time: The time for the key's date placeholders.

    Returns:
        ``(delivered, error)``: what was stored (with previews), and what failed if anything.
    """
    ledger_key = delivery_key(
        prompt, image, upscale, s3, item_id, run_time, credentials=credentials
    )
    delivered: list[DeliveredImage] = []
    error: BaseException | None = None
    try:
        # Previews go into the ledger's record too: a re-run that finds the item delivered
        # has no image bytes to make them from.
        delivered = with_previews(
            deliver_result(result, item_id, s3, upscale, run_time), result, index
        )
    except Exception as exc:  # noqa: BLE001 - reported in the item's record
        error = exc
    else:
        record_delivery(ledger_key, delivered)
    if upscale.enabled:
        release_freed_memory()
    return delivered, error
