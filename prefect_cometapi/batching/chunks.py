"""Chunking a large batch: one run of the chunk deployment per ``chunk_size`` items, and their
outcomes added up (the chunk flow itself is ``prefect_cometapi.flows.fanout.batch_generate_chunk``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from prefect import get_run_logger
from pydantic import BaseModel, ConfigDict, Field

from prefect_cometapi.batching.sources import MAX_ITEMS, Item, check_concurrency_limits
from prefect_cometapi.batching.window import failed_outcome
from prefect_cometapi.billing.budget import _check_budget
from prefect_cometapi.blocks import CometAPICredentials
from prefect_cometapi.client.rules import validate_prompt
from prefect_cometapi.errors import ValidationError
from prefect_cometapi.forms.options import (
    ImageOptions,
    S3Options,
    UpscaleOptions,
    check_distinct_keys,
)
from prefect_cometapi.reports.outcomes import ItemOutcome, RunSummary

__all__ = [
    "ChunkItem",
    "check_chunk",
    "check_chunk_deployment",
    "chunk_parameters",
    "run_chunks",
    "CHUNK_FLOW_NAME",
]


CHUNK_FLOW_NAME = "batch-generate-chunk"
POLL_S = 2.0
"""Seconds between two looks at the chunk runs' states."""


CHUNK_TAGS = ("cometapi", "chunk")
_CHUNK_ID_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,79}$")
"""The ids ``build_items`` makes (its cleaned ids, ``item-0001``, ``<id>-<n>`` for repeats)."""


class ChunkItem(BaseModel):
    """One item handed to a chunk: its id, its position in the whole batch and its prompt.

    Attributes:
        item_id: The item's id (used in S3 keys and reports).
        index: Its position in the parent batch (0-based), so totals keep the batch's order.
        prompt: The prompt, already rendered and checked by the parent.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    item_id: str = Field(description="The item's id (S3 keys and reports).")
    index: int = Field(ge=0, description="Position in the parent batch (0-based).")
    prompt: str = Field(description="The rendered prompt.")


def _without_default_nulls(options: Any) -> dict[str, Any]:
    """An options model as JSON, without the None values that are its fields' defaults anyway.

    Args:
        options: A pydantic model of the flow's options.

    Returns:
        Its JSON form, the default nulls left out (a deployment's schema refuses them).
    """
    data = options.model_dump(mode="json")
    fields = type(options).model_fields
    return {
        name: value
        for name, value in data.items()
        if value is not None or name not in fields or fields[name].default is not None
    }


def chunk_parameters(
    *,
    s3: S3Options,
    image: ImageOptions,
    upscale: UpscaleOptions,
    concurrency: int,
    credentials_block: CometAPICredentials | str | None,
    base_url: str | None,
    concurrency_limit: str | None,
    rate_limit: str | None,
    run_time: datetime,
    spend_limit: str | None = None,
    max_cost_usd: float | None = None,
) -> dict[str, Any]:
    """The parameters every chunk of a batch shares (JSON, as a deployment run takes them).

    Args:
        s3: Where the images go.
        image: Request options.
        upscale: Upscale options.
        concurrency: Items in flight per chunk.
        credentials_block: The parent's credentials: a block *name* or ``None``.
        base_url: API base URL override.
        concurrency_limit: Global concurrency limit name.
        rate_limit: Rate limit name.
        run_time: The parent's start time.
        spend_limit: Spend limit name.
        max_cost_usd: The batch's budget (each chunk checks its own items against it again).

    Returns:
        Parameters for :func:`batch_generate_chunk` without ``items``.

    Raises:
        ValidationError: ``param="credentials_block"`` for a block object: chunks run elsewhere
            and get only a block name, so the key never travels in flow run parameters.
    """
    if isinstance(credentials_block, CometAPICredentials):
        raise ValidationError(
            "credentials_block",
            "a fanned-out batch (chunk_deployment) needs the NAME of a saved CometAPI "
            "Credentials block (or none, for the workers' COMETAPI_KEY), not a block object: "
            "the chunks run on other workers and must not receive the key as a parameter",
        )
    optional = {
        "credentials_block": credentials_block,
        "base_url": base_url,
        "concurrency_limit": concurrency_limit,
        "rate_limit": rate_limit,
        "spend_limit": spend_limit,
        "max_cost_usd": max_cost_usd,
    }
    # Unset values are left out: their defaults are None, and the chunk's parameter schema
    # (plain fields in the UI) refuses an explicit null.
    return {
        "s3": _without_default_nulls(s3),
        "image": _without_default_nulls(image),
        "upscale": _without_default_nulls(upscale),
        "concurrency": concurrency,
        **{name: value for name, value in optional.items() if value is not None and value != ""},
        "run_time": run_time.isoformat(),
    }


def check_chunk(
    items: Sequence[ChunkItem],
    *,
    s3: S3Options,
    image: ImageOptions,
    upscale: UpscaleOptions,
    credentials: CometAPICredentials,
    max_cost_usd: float | None,
    concurrency_limit: str | None,
    rate_limit: str | None,
    spend_limit: str | None,
) -> float | None:
    """Check a chunk's parameters with every rule ``batch_generate`` applies to its batch.

    The chunk deployment can be started by anyone with run access, by hand, with any items: it
    trusts nothing its parameters say about the parent. So it checks again what the parent
    checked (the item cap, ids as ``build_items`` makes them, each id and position once, each
    prompt's rules, the upscale's source size, distinct S3 keys, the budget, which the worker's
    ``PREFECT_COMETAPI_MAX_COST_USD`` caps, and that the named limits exist); the worker's own
    limits are taken by every request anyway. A chunk run by hand can do no more than a
    ``batch_generate`` run with the same items.

    Args:
        items: The chunk's items.
        s3: Where the images go.
        image: Request options.
        upscale: Upscale options.
        credentials: The resolved credentials (the cache's service for the budget).
        max_cost_usd: The run's budget (the parent's); the worker's applies when lower.
        concurrency_limit: Global concurrency limit name.
        rate_limit: Rate limit name.
        spend_limit: Spend limit name.

    Returns:
        The chunk's estimated cost (``None`` when the price is unknown and nothing guards it).

    Raises:
        ValidationError: The first rule broken (``BudgetExceededError`` over the budget).
    """
    if not items:
        raise ValidationError("items", "a chunk needs at least one item")
    if len(items) > MAX_ITEMS:
        raise ValidationError("items", f"at most {MAX_ITEMS:,} items per batch", len(items))
    ids: set[str] = set()
    indexes: set[int] = set()
    for item in items:
        if not _CHUNK_ID_RE.match(item.item_id):
            raise ValidationError(
                "items",
                "item ids are 1-80 letters, digits, '.', '_' and '-' (as batch_generate makes "
                "them)",
                item.item_id,
            )
        if item.item_id in ids or item.index in indexes:
            raise ValidationError(
                "items",
                "two items share an id or a position: one image would overwrite the other",
                item.item_id if item.item_id in ids else item.index,
            )
        ids.add(item.item_id)
        indexes.add(item.index)
        validate_prompt(item.prompt)
    upscale.check_source_size(image.request_size)
    prompts = [item.prompt for item in items]
    check_distinct_keys(s3, image, [(item.item_id, item.prompt) for item in items])
    estimate = _check_budget(prompts, image, max_cost_usd, credentials)
    check_concurrency_limits(concurrency_limit, rate_limit, spend_limit)
    return estimate


def check_chunk_deployment(name: str) -> None:
    """Make sure the chunk deployment exists before anything starts.

    Args:
        name: ``"batch-generate-chunk/<deployment>"``.

    Raises:
        ValidationError: ``param="chunk_deployment"`` when the server has no such deployment.
    """
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound

    try:
        with get_client(sync_client=True) as client:
            client.read_deployment_by_name(name)
    except (ObjectNotFound, ValueError) as exc:
        raise ValidationError(
            "chunk_deployment",
            f"no deployment named {name!r} ({type(exc).__name__}); deploy "
            "flows/fanout.py:batch_generate_chunk (see deployments/prefect.yaml) or leave it "
            "empty to run the batch in this flow run",
        ) from None


def _chunk_outcomes(
    flow_run: Any, batch: list[Item], prompts: list[str], indexes: list[int], image: ImageOptions
) -> list[ItemOutcome]:
    """The records of a finished chunk run; its items count as failed if it did not complete.

    Args:
        flow_run: The chunk's flow run, in a final state.
        batch: The parent's items.
        prompts: The parent's prompts.
        indexes: Positions of the chunk's items in ``batch``.
        image: Request options (for the records of failed items).

    Returns:
        One record per item of the chunk, in chunk order.
    """
    state = flow_run.state
    summary: Any = None
    why = f"chunk run {flow_run.name} ended {state.type.value if state else 'without a state'}"
    if state is not None and state.message:
        why += f": {state.message}"
    code = "chunk_failed"
    if state is not None and state.is_completed():
        try:
            summary = state.result(raise_on_failure=False)
        except Exception as exc:  # noqa: BLE001 - reported on every item of the chunk
            summary = exc
        if not isinstance(summary, RunSummary):
            code = "chunk_result_unreadable"
            why = (
                f"the result of chunk run {flow_run.name} cannot be read here ({summary!r}); "
                "the workers need shared result storage (PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK)"
            )
            summary = None
    by_id = {o.item_id: o for o in summary.outcomes} if summary is not None else {}
    outcomes: list[ItemOutcome] = []
    for index in indexes:
        item = batch[index]
        found = by_id.get(item.item_id)
        if found is not None:
            outcomes.append(found.model_copy(update={"index": item.index}))
        else:
            why_item = why if summary is None else f"missing from the result of {flow_run.name}"
            outcomes.append(failed_outcome(item, prompts[index], image, code, why_item))
    return outcomes


def run_chunks(
    deployment: str,
    batch: list[Item],
    prompts: list[str],
    chunk_size: int,
    parameters: dict[str, Any],
    image: ImageOptions,
) -> Iterator[ItemOutcome]:
    """Start one run of ``deployment`` per chunk and yield the items' records as chunks finish.

    Call it from inside a flow run: the chunk runs are linked to it as subflow runs.

    Args:
        deployment: The chunk deployment, ``"batch-generate-chunk/<name>"``.
        batch: All items.
        prompts: Their rendered prompts.
        chunk_size: Items per chunk.
        parameters: The shared chunk parameters (:func:`chunk_parameters`).
        image: Request options (for records of items whose chunk failed).

    Yields:
        Each item's record, a chunk at a time, in the order the chunks finish.
    """
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.deployments import run_deployment
    from prefect.runtime import flow_run as current_run

    logger = get_run_logger()
    parent_id = current_run.id or "local"
    parent_name = current_run.name or "batch"
    starts = list(range(0, len(batch), chunk_size))
    pending: dict[UUID, list[int]] = {}
    for number, start in enumerate(starts, start=1):
        indexes = list(range(start, min(start + chunk_size, len(batch))))
        items = [
            ChunkItem(item_id=batch[i].item_id, index=batch[i].index, prompt=prompts[i])
            for i in indexes
        ]
        run = run_deployment(
            deployment,
            parameters={**parameters, "items": [i.model_dump(mode="json") for i in items]},
            timeout=0,
            as_subflow=True,
            flow_run_name=f"{parent_name}-chunk-{number}-of-{len(starts)}",
            tags=list(CHUNK_TAGS),
            idempotency_key=f"{parent_id}-chunk-{number}-of-{len(starts)}",
        )
        pending[run.id] = indexes
    logger.info(
        "Fanned out %d item(s) into %d chunk run(s) of up to %d on %s",
        len(batch),
        len(starts),
        chunk_size,
        deployment,
    )
    with get_client(sync_client=True) as client:
        while pending:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=list(pending)))
            )
            for run in runs:
                if run.id in pending and run.state is not None and run.state.is_final():
                    indexes = pending.pop(run.id)
                    if not run.state.is_completed():
                        logger.warning("Chunk run %s ended %s", run.name, run.state.type.value)
                    yield from _chunk_outcomes(run, batch, prompts, indexes, image)
            if pending:
                time.sleep(POLL_S)
