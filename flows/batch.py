"""``batch_generate``: many variable sets through one template, concurrently, within a budget.

Deployment entrypoint: ``flows/batch.py:batch_generate``.

How a batch runs:

1. Every prompt is rendered and checked first; a bad template or a missing variable refuses the
   whole batch before any request.
2. The cost of the whole batch is estimated
   (:func:`prefect_cometapi.billing.prices.estimate_cost`); over
   ``max_cost_usd`` the batch is refused with zero requests (items already in the image cache
   are not counted).
3. Items run end to end (generate -> upscale -> upload) in ``process_item`` task runs, at most
   ``concurrency`` at a time: a sliding window over the flow's thread pool, refilled as each item
   finishes, so a slow item never holds up a whole wave. Each returns a small record; no image
   bytes stay in the flow.
4. A failed item (content policy, say) is reported with the API's message; the batch goes on.
   The run ends Failed only with ``all_or_nothing=True``.
5. ``generate_image`` is cached on what determines the image, and prompts and item ids are
   deterministic, so re-running after a crash pays only for the unfinished items.
6. With ``chunk_deployment`` and more than ``chunk_size`` items, step 3 runs in chunk flow runs
   of that deployment instead, which the pool's workers share (:mod:`.fanout`); steps 1-2 and
   the totals, progress and artifacts stay in this run.
7. With ``review``, step 3 is split in two: every item is generated first, the run waits for a
   person to approve or reject each image in the Prefect UI (rejected ones are regenerated and
   reviewed again), and only the approved ones go on to upscale and S3
   (:mod:`prefect_cometapi.batching.gate`). Review runs here, not in chunk runs.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Annotated

from prefect import flow, get_run_logger
from prefect.states import Completed
from pydantic import Field

from prefect_cometapi.batching.gate import review_items, run_created, settle
from prefect_cometapi.batching.sources import (
    EXAMPLE_ITEMS,
    EXAMPLE_TEMPLATE,
    Item,
    build_items,
    check_concurrency_limits,
    template_source,
)
from prefect_cometapi.batching.window import Concurrency, run_items
from prefect_cometapi.billing.budget import _check_budget
from prefect_cometapi.blocks.credentials import resolve_credentials
from prefect_cometapi.errors import BatchFailedError, ValidationError
from prefect_cometapi.forms.fields import OptionalText
from prefect_cometapi.forms.options import (
    CredentialsBlock,
    ImageOptions,
    OptionalItems,
    OptionalUSD,
    S3Options,
    UpscaleOptions,
    check_distinct_keys,
)
from prefect_cometapi.forms.review import NO_REVIEW, ReviewOptions
from prefect_cometapi.reports.artifacts import Progress, publish
from prefect_cometapi.reports.outcomes import ItemOutcome, RunSummary
from prefect_cometapi.templates import render_template

__all__ = ["FLOW_NAME", "GALLERY_TITLE", "batch_generate"]

FLOW_NAME = "batch-generate"
GALLERY_TITLE = "Batch results"
"""The heading of the gallery artifact of every batch run."""
MAX_LISTED_ERRORS = 10
DEFAULT_CHUNK_SIZE = 100
MAX_CHUNK_SIZE = 10_000


def _render_prompts(template: str, items: list[Item]) -> list[str]:
    """Render every item's prompt; refuse the batch if any item cannot be rendered.

    Args:
        template: Template text or a local template path.
        items: The items.

    Returns:
        The prompts, in item order.

    Raises:
        ValidationError: Listing the items that fail (at most 10 shown), before any request.
    """
    prompts: list[str] = []
    problems: list[str] = []
    for item in items:
        try:
            prompts.append(render_template(template, item.variables))
        except ValidationError as exc:
            if exc.param == "template":
                raise
            problems.append(f"{item.item_id}: {exc.rule}")
    if problems:
        shown = "; ".join(problems[:MAX_LISTED_ERRORS])
        more = f" (and {len(problems) - MAX_LISTED_ERRORS} more)" if len(problems) > 10 else ""
        raise ValidationError("items", f"{len(problems)} item(s) cannot be rendered: {shown}{more}")
    return prompts


@flow(name=FLOW_NAME)
def batch_generate(
    s3: S3Options,
    template: OptionalText = None,
    items: OptionalItems = None,
    items_file: OptionalText = None,
    id_field: str = "id",
    image: ImageOptions = ImageOptions(),  # noqa: B008 - frozen pydantic model
    upscale: UpscaleOptions = UpscaleOptions(),  # noqa: B008
    concurrency: Concurrency = 8,
    max_cost_usd: OptionalUSD = None,
    all_or_nothing: bool = False,
    credentials_block: CredentialsBlock = None,
    base_url: OptionalText = None,
    concurrency_limit: OptionalText = None,
    rate_limit: OptionalText = None,
    spend_limit: OptionalText = None,
    chunk_deployment: OptionalText = None,
    chunk_size: Annotated[int, Field(ge=1, le=MAX_CHUNK_SIZE)] = DEFAULT_CHUNK_SIZE,
    review: ReviewOptions = NO_REVIEW,
) -> RunSummary:
    """Generate one image set per item from a template, concurrently, and upload them to S3.

    Args:
        s3: Where the images go (bucket, prefix, key template with {item}, endpoint, links).
        template: Jinja2 prompt template: text, a local file path (.j2/.jinja/.txt/.md), or an
            s3:// or https:// URI. Empty: the packaged example product-banner template.
        items: Variable sets, one per item (e.g. [{"id": "lamp", "name": "Lumen lamp"}]).
        items_file: More items from a CSV, JSONL or JSON file (local path, s3:// or https://).
            With neither items nor a file and no template, the packaged example products.
        id_field: The variable holding each item's id (used in S3 keys and reports).
        image: Request options: size preset or custom size, quality, format, n, variant.
        upscale: Optional upscale after generation, e.g. 1536x864 -> 3840x2160.
        concurrency: Items in flight at once (each holds one API request at a time).
        max_cost_usd: Refuse to start when the estimated cost is over this (USD).
        all_or_nothing: End the run Failed if any item fails (the rest are still delivered).
        credentials_block: Name of a saved CometAPI Credentials block; empty uses the
            COMETAPI_KEY environment variable of the worker.
        base_url: Override the API base URL (e.g. another gateway or a local emulator).
        concurrency_limit: A Prefect global concurrency limit (slots) shared by all workers.
        rate_limit: A Prefect global concurrency limit with slot decay, used as a rate limit.
        spend_limit: A spend limit shared by all workers: a global concurrency limit with slot
            decay whose slots are tenths of a cent
            (prefect_cometapi.billing.spend.create_spend_limit);
            each request waits for its estimated cost to fit in the budget.
        chunk_deployment: A batch-generate-chunk deployment (e.g.
            "batch-generate-chunk/fleet-chunk"): batches of more than chunk_size items are split
            into runs of it that the pool's workers share. Empty: everything runs here.
        chunk_size: Items per chunk run when chunk_deployment is set.
        review: Wait for a person to approve or reject each generated image before anything
            is upscaled or uploaded (timeout, what happens then, rounds of regeneration).
            Off by default.

    Returns:
        The run summary: counts, total cost, S3 URIs and each item's record (no image bytes).
    """
    started = time.monotonic()
    logger = get_run_logger()
    credentials = resolve_credentials(credentials_block, base_url)
    credentials.resolved_api_key()  # no key: fail now, before anything is sent
    if template is None and not items and not items_file:
        items_file = str(EXAMPLE_ITEMS)
    source = template_source(template or str(EXAMPLE_TEMPLATE), s3.endpoint_url)
    batch = build_items(items, items_file, id_field, s3.endpoint_url)
    upscale.check_source_size(image.request_size)
    prompts = _render_prompts(source, batch)
    check_distinct_keys(
        s3, image, [(item.item_id, p) for item, p in zip(batch, prompts, strict=True)]
    )
    estimate = _check_budget(prompts, image, max_cost_usd, credentials)
    check_concurrency_limits(concurrency_limit, rate_limit, spend_limit)
    logger.info(
        "Batch of %d item(s), concurrency %d, estimated cost %s",
        len(batch),
        concurrency,
        "unknown" if estimate is None else f"${estimate:.4f}",
    )

    run_time = datetime.now(timezone.utc)
    reviewed = None
    if review.enabled:
        run_time = run_created() or run_time  # the same after a resume restarts the run
        reviewed = review_items(
            batch, prompts, image, upscale, s3, run_time, credentials, review, FLOW_NAME,
            GALLERY_TITLE, concurrency,
            {"concurrency_limit": concurrency_limit, "rate_limit": rate_limit,
             "spend_limit": spend_limit},
        )  # fmt: skip
        approved = reviewed.approved
        finishing = run_items(
            [c.item for c in approved], [c.prompt for c in approved], credentials, image,
            upscale, s3, run_time, concurrency, concurrency_limit, rate_limit, spend_limit,
            images=[c.image for c in approved],
        )  # fmt: skip
    elif chunk_deployment and len(batch) > chunk_size:
        from prefect_cometapi.batching.chunks import (
            check_chunk_deployment,
            chunk_parameters,
            run_chunks,
        )

        shared = chunk_parameters(
            s3=s3,
            image=image,
            upscale=upscale,
            concurrency=concurrency,
            credentials_block=credentials_block,
            base_url=base_url,
            concurrency_limit=concurrency_limit,
            rate_limit=rate_limit,
            spend_limit=spend_limit,
            run_time=run_time,
            max_cost_usd=max_cost_usd,
        )
        check_chunk_deployment(chunk_deployment)
        finishing = run_chunks(chunk_deployment, batch, prompts, chunk_size, shared, image)
    else:
        finishing = run_items(
            batch, prompts, credentials, image, upscale, s3, run_time, concurrency,
            concurrency_limit, rate_limit, spend_limit,
        )  # fmt: skip
    progress = Progress(FLOW_NAME, len(batch) if reviewed is None else len(reviewed.approved))
    outcomes: list[ItemOutcome] = []
    for outcome in finishing:
        outcomes.append(outcome)
        if outcome.status == "failed":
            logger.warning(
                "Item %s failed: %s: %s", outcome.item_id, outcome.error_code, outcome.error
            )
        progress.advance(failed=outcome.status == "failed")

    review_log = []
    if reviewed is not None:
        outcomes = settle(reviewed, outcomes)
        review_log = reviewed.entries
    summary = RunSummary.from_outcomes(
        FLOW_NAME, outcomes, time.monotonic() - started, estimate, review=review_log
    )
    publish(summary, FLOW_NAME, GALLERY_TITLE)
    logger.info("%s", summary.headline())
    if summary.failed and all_or_nothing:
        raise BatchFailedError(summary)
    return Completed(message=summary.headline(), data=summary)  # type: ignore[return-value]
