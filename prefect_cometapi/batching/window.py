"""Running a batch's items through :func:`~.item.process_item` in the current flow run.

:func:`run_items` keeps a sliding window of items in flight over a thread pool whose threads
carry the flow run's context, refilled as each item finishes, so a slow item never holds up a
whole wave; the batch flow and each chunk of a fanned-out batch use it alike.
"""

from __future__ import annotations

import contextvars
import queue
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated

from prefect import get_run_logger
from pydantic import Field

from prefect_cometapi.batching.item import api_slots, outcome_for, process_item
from prefect_cometapi.batching.ledger import check_deliveries, delivery_key
from prefect_cometapi.batching.sources import Item
from prefect_cometapi.blocks import CometAPICredentials
from prefect_cometapi.forms.options import ImageOptions, S3Options, UpscaleOptions
from prefect_cometapi.reports.outcomes import ItemOutcome, describe_error
from prefect_cometapi.text import prompt_excerpt

__all__ = ["DELIVERY_SHARE", "Concurrency", "failed_outcome", "run_items"]

DELIVERY_SHARE = 2
"""Items in flight = concurrency + concurrency // DELIVERY_SHARE: the extra ones upload (or
wait for a request slot) while ``concurrency`` requests keep the API busy."""
LEDGER_CHECKS = 16
"""Delivery checks (a record read and an S3 ``HEAD`` each) in flight at once, ahead of the
window: items already in S3 are done without a task run (see :mod:`.ledger`)."""
Concurrency = Annotated[int, Field(ge=1, le=64)]
"""The ``concurrency`` parameter of the batch flows: items' API requests at once."""


def failed_outcome(
    item: Item, prompt: str, image: ImageOptions, code: str | None, message: str | None
) -> ItemOutcome:
    """The record of an item that failed outside ``process_item`` (a crash, a lost chunk).

    Args:
        item: The item.
        prompt: Its rendered prompt.
        image: The request options.
        code: A short error code (the API's, or one of ours such as ``chunk_failed``).
        message: What went wrong, readable.

    Returns:
        A ``failed`` record.
    """
    return ItemOutcome(
        item_id=item.item_id,
        index=item.index,
        status="failed",
        prompt_excerpt=prompt_excerpt(prompt),
        size=image.request_size,
        quality=image.quality,
        error_code=code,
        error=message,
    )


@contextmanager
def _shutting_down(pool: ThreadPoolExecutor) -> Iterator[None]:
    """Shut the pool down on exit; items not started yet are cancelled, running ones finish."""
    try:
        yield
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def run_items(
    batch: list[Item],
    prompts: list[str],
    credentials: CometAPICredentials,
    image: ImageOptions,
    upscale: UpscaleOptions,
    s3: S3Options,
    run_time: datetime,
    concurrency: int,
    concurrency_limit: str | None = None,
    rate_limit: str | None = None,
    spend_limit: str | None = None,
    images: Sequence[ImageOptions] | None = None,
) -> Iterator[ItemOutcome]:
    """Run items end to end through ``process_item`` in the current flow run.

    A sliding window over a thread pool, refilled as each item finishes, with at most
    ``concurrency`` API requests at a time (see :data:`DELIVERY_SHARE`). An item whose objects
    are already in S3 from an earlier run (the delivery ledger, checked ahead of the window) is
    reported at once, with no task run: nothing is requested, read, upscaled or uploaded.

    Args:
        batch: The items.
        prompts: Their rendered prompts, in the same order.
        credentials: The API credentials.
        image: Request options.
        upscale: Upscale options.
        s3: Where the images go.
        run_time: The time for the keys' date placeholders.
        concurrency: API requests at once.
        concurrency_limit: A Prefect global concurrency limit (slots).
        rate_limit: A Prefect global concurrency limit with slot decay.
        spend_limit: A spend limit (:mod:`prefect_cometapi.billing.spend`).
        images: Per-item request options instead of ``image`` (the review gate's regenerated
            items carry their own ``variant``), in the same order.

    Yields:
        Each item's record as it finishes (completion order).
    """
    options = list(images) if images is not None else [image] * len(batch)
    finished: queue.SimpleQueue[tuple[bool, ItemOutcome]] = queue.SimpleQueue()
    window = concurrency + max(1, concurrency // DELIVERY_SHARE)
    keys = [
        delivery_key(
            prompts[i], options[i], upscale, s3, item.item_id, run_time, credentials=credentials
        )
        for i, item in enumerate(batch)
    ]
    logger = get_run_logger()
    pool = ThreadPoolExecutor(max_workers=window, thread_name_prefix="cometapi-item")
    with (
        api_slots(concurrency) as slots,
        check_deliveries(keys, s3, LEDGER_CHECKS) as checks,
        _shutting_down(pool),
    ):

        def submit(index: int) -> None:
            item = batch[index]
            # Each item runs with a copy of the flow run's context, so its image task run,
            # logs and asset events belong to this flow run.
            future = pool.submit(
                contextvars.copy_context().run,
                process_item,
                item.item_id,
                item.index,
                prompts[index],
                credentials,
                options[index],
                upscale,
                s3,
                run_time,
                concurrency_limit,
                rate_limit,
                slots,
                spend_limit,
            )
            future.add_done_callback(lambda done: finished.put((True, outcome_of(index, done))))

        def outcome_of(index: int, done: Future[ItemOutcome]) -> ItemOutcome:
            try:
                return done.result()
            except BaseException as exc:  # noqa: BLE001 - a crash must not lose the item
                return failed_outcome(
                    batch[index], prompts[index], options[index], *describe_error(exc)
                )

        next_index = 0
        in_flight = 0

        def fill() -> None:
            # Items already in S3 are done here, without a task run; the others take the window.
            nonlocal next_index, in_flight
            while next_index < len(batch) and in_flight < window:
                index, started = next_index, time.monotonic()
                next_index += 1
                found = checks[index].result()
                if found is None:
                    submit(index)
                    in_flight += 1
                    continue
                item = batch[index]
                logger.info(
                    "Item %s already delivered, SHA-256 checked in S3: %s; nothing requested, "
                    "upscaled or uploaded",
                    item.item_id,
                    ", ".join(d.uri for d in found),
                )
                record = outcome_for(
                    item.item_id, item.index, prompts[index], options[index], None, True, found,
                    None, started, already_delivered=True,
                )  # fmt: skip
                finished.put((False, record))

        fill()
        for _ in range(len(batch)):
            ran, outcome = finished.get()
            in_flight -= ran
            fill()
            yield outcome
