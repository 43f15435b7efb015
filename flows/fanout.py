"""Fan-out: a large batch split into chunk flow runs that the workers of a pool share.

Deployment entrypoint of the chunks: ``flows/fanout.py:batch_generate_chunk``.

``batch_generate(chunk_deployment=..., chunk_size=...)`` renders and checks every prompt and the
budget itself, then :func:`~prefect_cometapi.batching.chunks.run_chunks` starts one run of the
chunk deployment per ``chunk_size`` items (:func:`prefect.deployments.run_deployment`, linked as
subflow runs, each with an idempotency key). Each chunk runs :func:`batch_generate_chunk`, which
processes its items like an in-process batch
(:func:`~prefect_cometapi.batching.window.run_items`) and returns a
:class:`~prefect_cometapi.reports.outcomes.RunSummary` of small records that the parent adds up.
What the pool needs (shared result storage, the credentials block, its concurrency limit) is in
docs/fleet.md, "A fleet of workers".
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

from prefect import flow, get_run_logger
from prefect.states import Completed

from prefect_cometapi.batching.chunks import CHUNK_FLOW_NAME, ChunkItem, check_chunk
from prefect_cometapi.batching.sources import Item
from prefect_cometapi.batching.window import Concurrency, run_items
from prefect_cometapi.blocks.credentials import resolve_credentials
from prefect_cometapi.forms.fields import OptionalDateTime, OptionalText
from prefect_cometapi.forms.options import ImageOptions, OptionalUSD, S3Options, UpscaleOptions
from prefect_cometapi.reports.artifacts import Progress
from prefect_cometapi.reports.outcomes import ItemOutcome, RunSummary

__all__ = ["batch_generate_chunk"]


@flow(name=CHUNK_FLOW_NAME, persist_result=True)
def batch_generate_chunk(
    items: list[ChunkItem],
    s3: S3Options,
    image: ImageOptions = ImageOptions(),  # noqa: B008 - frozen pydantic model
    upscale: UpscaleOptions = UpscaleOptions(),  # noqa: B008
    concurrency: Concurrency = 8,
    credentials_block: OptionalText = None,
    base_url: OptionalText = None,
    concurrency_limit: OptionalText = None,
    rate_limit: OptionalText = None,
    run_time: OptionalDateTime = None,
    spend_limit: OptionalText = None,
    max_cost_usd: OptionalUSD = None,
) -> RunSummary:
    """Process one chunk of a fanned-out batch and return its items' small records.

    Started by ``batch_generate`` (``chunk_deployment``); its result is persisted so the parent
    run can read it, which is why the pool needs shared result storage. Anyone with run access
    can start this deployment by hand, so before anything is sent it checks its parameters
    again with every rule the parent applies (:func:`~prefect_cometapi.batching.chunks.
    check_chunk`): a chunk can do no more than a ``batch_generate`` run of the same items.

    Args:
        items: The chunk's items (id, position in the batch, rendered prompt).
        s3: Where the images go.
        image: Request options.
        upscale: Optional upscale after generation.
        concurrency: Items of this chunk in flight at once.
        credentials_block: Name of a saved CometAPI Credentials block; empty uses the
            COMETAPI_KEY environment variable of the worker.
        base_url: Override the API base URL.
        concurrency_limit: A Prefect global concurrency limit (slots) shared by all workers.
        rate_limit: A Prefect global concurrency limit with slot decay, used as a rate limit.
        run_time: The parent's start time, for the date placeholders of the S3 keys.
        spend_limit: A spend limit shared by all workers (see ``batch_generate``).
        max_cost_usd: The batch's budget, checked again against this chunk's items (the
            worker's PREFECT_COMETAPI_MAX_COST_USD applies when lower).

    Returns:
        The chunk's summary (its ``outcomes`` are what the parent adds up).
    """
    started = time.monotonic()
    credentials = resolve_credentials(credentials_block, base_url)
    credentials.resolved_api_key()
    check_chunk(
        items, s3=s3, image=image, upscale=upscale, credentials=credentials,
        max_cost_usd=max_cost_usd, concurrency_limit=concurrency_limit, rate_limit=rate_limit,
        spend_limit=spend_limit,
    )  # fmt: skip
    batch = [Item(item_id=i.item_id, index=i.index, variables={}) for i in items]
    prompts = [i.prompt for i in items]
    progress = Progress(CHUNK_FLOW_NAME, len(batch))
    outcomes: list[ItemOutcome] = []
    for outcome in run_items(
        batch,
        prompts,
        credentials,
        image,
        upscale,
        s3,
        run_time or datetime.now(timezone.utc),
        concurrency,
        concurrency_limit,
        rate_limit,
        spend_limit,
    ):
        outcomes.append(outcome)
        progress.advance(failed=outcome.status == "failed")
    summary = RunSummary.from_outcomes(CHUNK_FLOW_NAME, outcomes, time.monotonic() - started)
    get_run_logger().info("%s", summary.headline())
    return Completed(message=summary.headline(), data=summary)  # type: ignore[return-value]
