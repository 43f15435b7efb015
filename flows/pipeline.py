"""Single-prompt flows: ``generate_and_upload`` and ``edit_and_upload``.

Deployment entrypoints: ``flows/pipeline.py:generate_and_upload`` and
``flows/pipeline.py:edit_and_upload``. Every parameter is JSON (block names, not blocks), so the
Prefect UI renders a form for it.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

from prefect import flow, get_run_logger

from prefect_cometapi.batching.delivery import deliver_image
from prefect_cometapi.batching.gate import review_items, run_created, settle
from prefect_cometapi.batching.item import outcome_for
from prefect_cometapi.batching.requesting import edit_step, generate_step, run_request
from prefect_cometapi.batching.sources import Item, template_source
from prefect_cometapi.billing.budget import _check_budget
from prefect_cometapi.blocks.credentials import resolve_credentials
from prefect_cometapi.forms.fields import OptionalObject, OptionalText
from prefect_cometapi.forms.options import (
    CredentialsBlock,
    ImageOptions,
    InputFidelity,
    OptionalUSD,
    S3Options,
    UpscaleOptions,
    check_distinct_keys,
)
from prefect_cometapi.forms.review import NO_REVIEW, ReviewOptions
from prefect_cometapi.reports.artifacts import Progress, publish
from prefect_cometapi.reports.outcomes import RunSummary
from prefect_cometapi.tasks.prompts import render_prompt
from prefect_cometapi.text import private_prompts, prompt_token, slugify

__all__ = ["edit_and_upload", "generate_and_upload"]

ITEM_ID_CHARS = 40
"""Length of the item id made from a prompt."""


def _default_item_id(prompt: str) -> str:
    """An item id for a single-prompt run: a short slug of the prompt.

    With prompts private (``PREFECT_COMETAPI_PRIVATE_PROMPTS``) it shows no prompt text: a
    short hash of the prompt instead (:func:`~prefect_cometapi.text.prompt_token`).

    Args:
        prompt: The rendered prompt.

    Returns:
        E.g. ``a-lighthouse-at-dawn``, or ``p-3f2a9c01be``.
    """
    return prompt_token(prompt) if private_prompts() else slugify(prompt, ITEM_ID_CHARS)


def _single_run(
    flow_name: str,
    title: str,
    prompt: str,
    image: ImageOptions,
    upscale: UpscaleOptions,
    s3: S3Options,
    item_id: str | None,
    request: Any,
    request_kwargs: dict[str, Any],
    max_cost_usd: float | None = None,
    review: ReviewOptions = NO_REVIEW,
    variables: dict[str, Any] | None = None,
) -> RunSummary:
    """Check keys, size and budget; (review;) request, deliver each image, publish artifacts;
    raise the request's error if it failed."""
    started = time.monotonic()
    logger = get_run_logger()
    item = item_id or _default_item_id(prompt)
    check_distinct_keys(s3, image, [(item, prompt)])
    upscale.check_source_size(image.request_size)
    inputs = len(request_kwargs.get("images") or ())
    _check_budget([prompt], image, max_cost_usd, request_kwargs.get("credentials"), inputs)
    run_time = datetime.now(timezone.utc)
    reviewed = None
    if review.enabled:
        run_time = run_created() or run_time  # the same after a resume restarts the run
        limits = {k: request_kwargs.get(k) for k in ("concurrency_limit", "rate_limit")}
        reviewed = review_items(
            [Item(item, 0, dict(variables or {}))], [prompt], image, upscale, s3, run_time,
            request_kwargs.get("credentials"), review, flow_name, title, 1, limits,
        )  # fmt: skip
        if not reviewed.approved:
            summary = RunSummary.from_outcomes(
                flow_name, settle(reviewed, []), time.monotonic() - started,
                review=reviewed.entries,
            )  # fmt: skip
            publish(summary, flow_name, title)
            logger.info("%s", summary.headline())
            if reviewed.failed:
                raise RuntimeError(f"the image request failed: {summary.failures}")
            return summary
        prompt, image = reviewed.approved[0].prompt, reviewed.approved[0].image
        request_kwargs = {**request_kwargs, **image.request_kwargs()}
    progress = Progress(flow_name, image.n)
    result, cached, error = run_request(request, prompt=prompt, **request_kwargs)
    delivered = []
    if result is not None:
        try:
            for position in range(len(result.images)):
                delivered.append(
                    deliver_image(result.images[position], item, s3, upscale, run_time)
                )
                progress.advance()
        except Exception as exc:  # noqa: BLE001 - published, then raised below
            error = exc
    outcome = outcome_for(item, 0, prompt, image, result, cached, delivered, error, started)
    del result
    outcomes = [outcome] if reviewed is None else settle(reviewed, [outcome])
    summary = RunSummary.from_outcomes(
        flow_name, outcomes, time.monotonic() - started,
        review=reviewed.entries if reviewed is not None else None,
    )  # fmt: skip
    if error is not None:
        progress.advance(failed=True)
    publish(summary, flow_name, title)
    logger.info("%s", summary.headline())
    if error is not None:
        raise error
    return summary


@flow(name="generate-and-upload")
def generate_and_upload(
    prompt: str,
    s3: S3Options,
    variables: OptionalObject = None,
    image: ImageOptions = ImageOptions(),  # noqa: B008 - frozen pydantic model
    upscale: UpscaleOptions = UpscaleOptions(),  # noqa: B008
    credentials_block: CredentialsBlock = None,
    base_url: OptionalText = None,
    item_id: OptionalText = None,
    concurrency_limit: OptionalText = None,
    rate_limit: OptionalText = None,
    max_cost_usd: OptionalUSD = None,
    review: ReviewOptions = NO_REVIEW,
) -> RunSummary:
    """Render a prompt, generate images, optionally upscale them, and upload them to S3.

    Args:
        prompt: A prompt, or a Jinja2 template rendered with ``variables`` (template text, a
            local file path ending in .j2/.jinja/.txt/.md, or an s3:// or https:// URI).
        s3: Where the images go (bucket, prefix, key template, endpoint, presigned links).
        variables: Values for the template's placeholders.
        image: Request options: size preset or custom size, quality, format, n, variant.
        upscale: Optional upscale after generation, e.g. 1536x864 -> 3840x2160.
        credentials_block: Name of a saved CometAPI Credentials block; empty uses the
            COMETAPI_KEY environment variable of the worker.
        base_url: Override the API base URL (e.g. another gateway or a local emulator).
        item_id: The {item} placeholder of the key template (default: a slug of the prompt).
        concurrency_limit: A Prefect global concurrency limit to hold during the API call.
        rate_limit: A Prefect global concurrency limit with slot decay, used as a rate limit.
        max_cost_usd: Refuse to send when the estimated cost is over this (USD); the worker's
            PREFECT_COMETAPI_MAX_COST_USD applies when it is lower.
        review: Wait for a person to approve or reject the images before they are upscaled
            or uploaded (a rejected one is regenerated); off by default.

    Returns:
        The run summary: S3 URIs, tokens and total cost (no image bytes).
    """
    credentials = resolve_credentials(credentials_block, base_url)
    credentials.resolved_api_key()  # no key: fail now, before anything is sent
    rendered = render_prompt(template_source(prompt, s3.endpoint_url), variables)
    return _single_run(
        "generate-and-upload",
        "Generated images",
        rendered,
        image,
        upscale,
        s3,
        item_id,
        generate_step,
        {
            "credentials": credentials,
            "concurrency_limit": concurrency_limit,
            "rate_limit": rate_limit,
            **image.request_kwargs(),
        },
        max_cost_usd,
        review,
        variables,
    )


@flow(name="edit-and-upload")
def edit_and_upload(
    prompt: str,
    images: list[str],
    s3: S3Options,
    mask: OptionalText = None,
    variables: OptionalObject = None,
    image: ImageOptions = ImageOptions(size="auto"),  # noqa: B008 - frozen pydantic model
    input_fidelity: InputFidelity = None,
    upscale: UpscaleOptions = UpscaleOptions(),  # noqa: B008
    credentials_block: CredentialsBlock = None,
    base_url: OptionalText = None,
    item_id: OptionalText = None,
    concurrency_limit: OptionalText = None,
    rate_limit: OptionalText = None,
    max_cost_usd: OptionalUSD = None,
) -> RunSummary:
    """Edit or combine source images with a prompt (and a mask), optionally upscale, upload.

    Args:
        prompt: What to change, or a Jinja2 template rendered with ``variables``.
        images: Source images (1-16): local paths, https:// URLs or s3:// URIs.
        s3: Where the results go; its endpoint is also used for s3:// sources.
        mask: Optional PNG mask with alpha (transparent = edit here), same kinds of source.
        variables: Values for the template's placeholders.
        image: Request options; size auto keeps the first source's size.
        input_fidelity: high/low, only for gpt-image-1 and gpt-image-1.5 (not gpt-image-2).
        upscale: Optional upscale after editing.
        credentials_block: Name of a saved CometAPI Credentials block; empty uses COMETAPI_KEY.
        base_url: Override the API base URL.
        item_id: The {item} placeholder of the key template (default: a slug of the prompt).
        concurrency_limit: A Prefect global concurrency limit to hold during the API call.
        rate_limit: A Prefect global concurrency limit with slot decay, used as a rate limit.
        max_cost_usd: Refuse to send when the estimated cost is over this (USD); the worker's
            PREFECT_COMETAPI_MAX_COST_USD applies when it is lower.

    Returns:
        The run summary: S3 URIs, tokens and total cost (no image bytes).
    """
    credentials = resolve_credentials(credentials_block, base_url)
    credentials.resolved_api_key()
    rendered = render_prompt(template_source(prompt, s3.endpoint_url), variables)
    return _single_run(
        "edit-and-upload",
        "Edited images",
        rendered,
        image,
        upscale,
        s3,
        item_id,
        edit_step,
        {
            "images": list(images),
            "mask": mask,
            "credentials": credentials,
            "input_fidelity": input_fidelity,
            "s3_endpoint_url": s3.endpoint_url,
            "concurrency_limit": concurrency_limit,
            "rate_limit": rate_limit,
            **image.request_kwargs(),
        },
        max_cost_usd,
    )
