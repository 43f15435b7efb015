"""The review gate's rounds: generate, show, wait for the reviewer, regenerate the rejected.

:func:`review_items` runs in the flow run, before any upscale or upload:

1. Every item under review is generated (:func:`~.item.generate_item`, the same cached
   ``generate-image`` task run the batch's items use), a few at a time; its thumbnails, sizes
   and cost are kept, its bytes are not.
2. The round's gallery is published and the run waits for an answer
   (:func:`wait_for_answer`): in a deployment it is *suspended* (the worker's process exits; a
   resume schedules the run again, which starts from the top, where every generation is a
   cache hit and every earlier answer is returned by Prefect under its stable pause key);
   outside one it is *paused* in place.
3. Verdicts are applied (:func:`~.review.interpret`), recorded and emitted; what the answer
   could not decide is asked again. Rejected items are regenerated (the reviewer's new prompt,
   or the same prompt with the next ``variant``) for the next round, up to ``max_rounds``.

Nobody answering within ``timeout_s`` ends the round by ``on_timeout``
(:mod:`.waiting`).
"""

from __future__ import annotations

import contextvars
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from prefect import get_run_logger
from prefect.context import FlowRunContext

from prefect_cometapi.batching.item import api_slots, generate_item
from prefect_cometapi.batching.ledger import delivery_key
from prefect_cometapi.batching.review import (
    MAX_ATTEMPTS,
    interpret,
    pause_key,
    record_verdict,
    stored_verdict,
    timeout_verdicts,
    verdict_key,
)
from prefect_cometapi.batching.sources import Item
from prefect_cometapi.batching.waiting import wait_for_answer
from prefect_cometapi.errors import CometAPIError
from prefect_cometapi.events import emit_review_event
from prefect_cometapi.forms.options import ImageOptions, S3Options, UpscaleOptions
from prefect_cometapi.forms.review import ReviewOptions, decision_form
from prefect_cometapi.reports.outcomes import ItemOutcome, ReviewEntry, describe_error
from prefect_cometapi.reports.previews import preview_data_uri
from prefect_cometapi.reports.review import ReviewTile, publish_review, review_markdown
from prefect_cometapi.text import private_prompts, prompt_excerpt

__all__ = ["review_items", "run_created", "settle"]


class ReviewTimeoutError(CometAPIError):
    """Nobody answered a review round in time and ``on_timeout`` is ``fail``."""


@dataclass
class Candidate:
    """One item's image set under review in one round.

    Attributes:
        item: The item.
        prompt: Its prompt in this round.
        image: Its request options in this round (``variant`` bumped on regeneration).
        round: The round.
        key: Its :func:`~.review.verdict_key`.
        cost_usd: What its generation cost this run (0 when cached).
        cached: The generation came from the cache.
        previews: Thumbnails (``data:`` URIs).
        sizes: ``WxH`` of each image.
        input_tokens: Input tokens paid for it.
        output_tokens: Output tokens paid for it.
        error: ``(code, message)`` when the generation failed.
    """

    item: Item
    prompt: str
    image: ImageOptions
    round: int
    key: str = ""
    cost_usd: float = 0.0
    cached: bool = False
    previews: list[str] = field(default_factory=list)
    sizes: list[str] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    error: tuple[str, str] | None = None


@dataclass
class ReviewResult:
    """What review decided.

    Attributes:
        approved: The approved image sets (their last round's prompt and options).
        rejected: Items still rejected after the last round (or by a timeout).
        failed: Items whose generation failed.
        entries: Every verdict, in order.
        paid: Item id -> what its generations cost this run, all rounds together.
        tokens: Item id -> ``(input, output)`` tokens paid, all rounds together.
    """

    approved: list[Candidate] = field(default_factory=list)
    rejected: list[Candidate] = field(default_factory=list)
    failed: list[Candidate] = field(default_factory=list)
    entries: list[ReviewEntry] = field(default_factory=list)
    paid: dict[str, float] = field(default_factory=dict)
    tokens: dict[str, tuple[int, int]] = field(default_factory=dict)


def _generate(
    candidates: Sequence[Candidate],
    credentials: Any,
    concurrency: int,
    limits: dict[str, str | None],
) -> None:
    """Generate every candidate (at most ``concurrency`` requests at once), keep thumbnails."""

    def one(candidate: Candidate, slots: str) -> None:
        result, cached, error = generate_item(
            candidate.prompt,
            credentials,
            candidate.image,
            api_slots=slots,
            item_id=candidate.item.item_id,
            **limits,
        )
        if result is None:
            candidate.error = describe_error(error or RuntimeError("the request failed"))
            return
        candidate.cached = cached
        if not cached:
            candidate.cost_usd = result.cost_usd or 0.0
            if result.usage is not None:
                candidate.input_tokens = result.usage.input_tokens
                candidate.output_tokens = result.usage.output_tokens
        candidate.previews = [preview_data_uri(image) for image in result.images]
        candidate.sizes = [image.size for image in result.images]

    with (
        api_slots(concurrency) as slots,
        ThreadPoolExecutor(max(1, concurrency), thread_name_prefix="cometapi-review") as pool,
    ):
        futures = [
            pool.submit(contextvars.copy_context().run, one, candidate, slots)
            for candidate in candidates
        ]
        for future in futures:
            future.result()


def run_created() -> datetime | None:
    """When the current flow run was created: a run time that stays the same when a resumed
    run starts again from the top (the keys' date placeholders and the verdict keys use it).

    Returns:
        The time, or ``None`` outside a flow run.
    """
    context = FlowRunContext.get()
    flow_run = context.flow_run if context else None
    return flow_run.created if flow_run is not None and flow_run.created else None


def review_items(
    batch: Sequence[Item],
    prompts: Sequence[str],
    image: ImageOptions,
    upscale: UpscaleOptions,
    s3: S3Options,
    run_time: Any,
    credentials: Any,
    options: ReviewOptions,
    flow_name: str,
    title: str,
    concurrency: int = 4,
    limits: dict[str, str | None] | None = None,
    hide_prompts: bool | None = None,
) -> ReviewResult:
    """Run the review rounds of a batch (see the module's description).

    Args:
        batch: The items.
        prompts: Their rendered prompts.
        image: The request options.
        upscale: The upscale options (part of each image's identity for the verdict records).
        s3: Where approved images go (likewise).
        run_time: The run's time (likewise).
        credentials: The API credentials.
        options: The review options.
        flow_name: The flow's name (artifact keys).
        title: The gallery's heading.
        concurrency: Generations at once.
        limits: ``concurrency_limit``, ``rate_limit``, ``spend_limit`` for the image task.
        hide_prompts: Leave prompts out of the gallery (default: prompts are private,
            ``PREFECT_COMETAPI_PRIVATE_PROMPTS``).

    Returns:
        What was approved, rejected and failed, and every verdict.

    Raises:
        ReviewTimeoutError: Nobody answered in time and ``on_timeout`` is ``fail``, or a round
            got :data:`~.review.MAX_ATTEMPTS` answers that decided nothing.
    """
    logger = get_run_logger()
    if hide_prompts is None:
        hide_prompts = private_prompts()
    context = FlowRunContext.get()
    flow_run_id = str(context.flow_run.id) if context and context.flow_run else None
    limits = limits or {}
    result = ReviewResult()
    approved_in: dict[str, int] = {}

    def candidate(item: Item, prompt: str, options_: ImageOptions, round_: int) -> Candidate:
        key = delivery_key(
            prompt, options_, upscale, s3, item.item_id, run_time, credentials=credentials
        )
        return Candidate(item, prompt, options_, round_, verdict_key(key))

    current = [candidate(i, p, image, 1) for i, p in zip(batch, prompts, strict=True)]
    for round_number in range(1, options.max_rounds + 1):
        _generate(current, credentials, concurrency, limits)
        for c in current:
            result.paid[c.item.item_id] = result.paid.get(c.item.item_id, 0.0) + c.cost_usd
            tokens = result.tokens.get(c.item.item_id, (0, 0))
            result.tokens[c.item.item_id] = (
                tokens[0] + c.input_tokens,
                tokens[1] + c.output_tokens,
            )
        result.failed += [c for c in current if c.error is not None]
        live = [c for c in current if c.error is None]
        by_id = {c.item.item_id: c for c in live}
        costs = {c.item.item_id: c.cost_usd for c in live}
        decided: dict[str, ReviewEntry] = {}
        new_prompts: dict[str, str] = {}
        for c in live:
            known = stored_verdict(c.key, flow_run_id)
            if known is not None:
                decided[c.item.item_id] = known.entry.model_copy(
                    update={"round": round_number, "by": "earlier_run", "cost_usd": c.cost_usd}
                )
                if known.new_prompt:
                    new_prompts[c.item.item_id] = known.new_prompt
        timed_out = False
        problems: list[str] = []
        attempt = 0
        while pending := [c for c in live if c.item.item_id not in decided]:
            attempt += 1
            if attempt > MAX_ATTEMPTS:
                raise ReviewTimeoutError(
                    f"review round {round_number}: {MAX_ATTEMPTS} answers decided nothing"
                )
            tiles = [
                ReviewTile(
                    c.item.item_id,
                    None if hide_prompts else c.prompt,
                    c.previews,
                    c.sizes,
                    c.cost_usd,
                    c.cached,
                    c.image.variant,
                )
                for c in pending
            ]
            publish_review(
                flow_name,
                review_markdown(
                    title,
                    round_number,
                    options.max_rounds,
                    tiles,
                    problems,
                    options.timeout_s,
                    options.on_timeout,
                ),
                result.entries + list(decided.values()),
            )
            ids = [c.item.item_id for c in pending]
            key = pause_key(round_number, attempt, [c.key for c in pending])
            logger.info(
                "Review round %d: waiting for a decision on %d item(s): %s",
                round_number,
                len(ids),
                ", ".join(ids),
            )
            answer = wait_for_answer(decision_form(ids), key, options)
            if answer is None:
                if options.on_timeout == "fail":
                    raise ReviewTimeoutError(
                        f"review round {round_number}: nobody answered within "
                        f"{options.timeout_s} s (on_timeout=fail)"
                    )
                logger.warning(
                    "Review round %d: nobody answered within %d s: %s",
                    round_number,
                    options.timeout_s,
                    options.on_timeout,
                )
                for entry in timeout_verdicts(
                    ids, round_number, options.on_timeout, costs
                ).values():
                    decided[entry.item_id] = entry
                    _emit(entry)
                timed_out = True
                break
            read = interpret(
                answer,
                round_number,
                ids,
                approved_in,
                {c.item.item_id: c.item.variables for c in pending},
                costs,
            )
            problems = read.problems
            for problem in problems:
                logger.warning("Review round %d: %s", round_number, problem)
            for item_id, entry in read.entries.items():
                decided[item_id] = entry
                if item_id in read.new_prompts:
                    new_prompts[item_id] = read.new_prompts[item_id]
                record_verdict(
                    by_id[item_id].key, entry, flow_run_id, read.new_prompts.get(item_id), _emit
                )
        following: list[Candidate] = []
        for c in live:
            entry = decided[c.item.item_id]
            result.entries.append(entry)
            if entry.decision == "approved":
                result.approved.append(c)
                approved_in[c.item.item_id] = round_number
            elif timed_out or round_number == options.max_rounds:
                result.rejected.append(c)
            else:
                prompt = new_prompts.get(c.item.item_id)
                options_ = (
                    c.image
                    if prompt
                    else c.image.model_copy(update={"variant": c.image.variant + 1})
                )
                following.append(candidate(c.item, prompt or c.prompt, options_, round_number + 1))
        current = following
        if not current:
            break
    publish_review(flow_name, None, result.entries)
    return result


def _emit(entry: ReviewEntry) -> None:
    emit_review_event(
        entry.decision,
        entry.item_id,
        round_number=entry.round,
        by=entry.by,
        reviewer=entry.reviewer,
        note=entry.note,
        cost_usd=entry.cost_usd,
    )


def settle(reviewed: ReviewResult, delivered: Sequence[ItemOutcome]) -> list[ItemOutcome]:
    """Every item's record after review: the delivered ones with what their review rounds paid,
    the rejected ones (status ``rejected``) and the failed generations.

    Args:
        reviewed: What review decided.
        delivered: The approved items' records from the delivery phase (their generation is
            a cache hit there, so they carry no cost of their own).

    Returns:
        One record per item.
    """
    outcomes: list[ItemOutcome] = []

    def paid(item_id: str) -> dict[str, Any]:
        cost = round(reviewed.paid.get(item_id, 0.0), 6)
        tokens = reviewed.tokens.get(item_id, (0, 0))
        return {
            "cost_usd": cost,
            "input_tokens": tokens[0],
            "output_tokens": tokens[1],
            "cached": cost == 0.0,
        }

    for outcome in delivered:
        outcomes.append(outcome.model_copy(update=paid(outcome.item_id)))
    for c, status in [(c, "rejected") for c in reviewed.rejected] + [
        (c, "failed") for c in reviewed.failed
    ]:
        code, message = c.error or (None, None)
        outcomes.append(
            ItemOutcome(
                item_id=c.item.item_id,
                index=c.item.index,
                status=status,  # type: ignore[arg-type]
                prompt_excerpt=prompt_excerpt(c.prompt),
                size=c.image.request_size,
                quality=c.image.quality,
                error_code=code,
                error=message,
                **paid(c.item.item_id),
            )
        )
    return outcomes
