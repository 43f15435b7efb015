"""The image tasks: ``generate_image`` and ``edit_image``, and their async twins.

Named as in prefect-aws (``upload_to_bucket`` / ``aupload_to_bucket``): ``agenerate_image`` and
``aedit_image`` take the same arguments (all declared once in
:mod:`prefect_cometapi.client.params`) and are awaited in ``async def`` flows, or gathered; they
use the async HTTP client (no thread per request). Both twins of a task share one cache policy,
so a sync and an async call of the same request share one cache entry, and everything around
the request (:mod:`prefect_cometapi.orchestration.call`): the attempt budget, the serializer
check, limits, persistence, logs, events and the cost ledger.

Attempt budget (one number to remember): each task attempt lets the client try
``credentials.max_retries + 1`` times (default 3) with short backoff, honouring Retry-After; the
task itself is retried ``TASK_RETRIES`` times (default 2, after 30 s and 120 s, +-50 % jitter)
for outages that outlast that. So one image request makes at most
``(max_retries + 1) x (TASK_RETRIES + 1)`` = 9 HTTP attempts by default, and only for errors that
can succeed on a retry: bad requests, content policy, auth, permission, not found and quota
errors fail on the first answer. Change it with ``generate_image.with_options(retries=...)`` and
the block's ``max_retries``.
"""

from __future__ import annotations

from typing import Any

from prefect import task

from prefect_cometapi.blocks.credentials import CredentialsLike
from prefect_cometapi.client.params import image_request
from prefect_cometapi.inputs.coerce import ImageLike
from prefect_cometapi.models import ImageResult
from prefect_cometapi.orchestration.call import ImageCall
from prefect_cometapi.orchestration.options import (
    ASYNC_TASK_OPTIONS,
    CACHE_EXPIRATION,
    TASK_OPTIONS,
    TASK_RETRIES,
    TASK_RETRY_DELAYS,
    run_name,
)

__all__ = [
    "CACHE_EXPIRATION",
    "TASK_RETRIES",
    "TASK_RETRY_DELAYS",
    "aedit_image",
    "agenerate_image",
    "edit_image",
    "generate_image",
]


@task(name="generate-image", task_run_name=run_name("generate-image"), **TASK_OPTIONS)
@image_request("generations", task=True)
def generate_image(
    prompt: str,
    credentials: CredentialsLike = None,
    *,
    concurrency_limit: str | None = None,
    rate_limit: str | None = None,
    spend_limit: str | None = None,
    spend_limit_wait: bool = True,
    **params: Any,
) -> ImageResult:
    """Generate images from a prompt (``POST /images/generations``), cached and retried.

    The result is persisted and cached for 30 days on what determines the image (model, prompt,
    size, quality, format, compression, background, moderation, ``n`` and ``variant``), so a
    re-run pays nothing; concurrent identical calls wait for one another instead of paying
    twice. The result is persisted as soon as this task ends, also inside another task of yours
    that fails later. Change ``variant`` to ask for a new image on purpose, or run with
    ``generate_image.with_options(refresh_cache=True)``. Retries follow the module's attempt
    budget: at most ``(max_retries + 1) x 3`` HTTP attempts, only for transient failures.

    Args:
        prompt: What to draw (at most 32,000 characters).
        credentials: A ``CometAPICredentials`` block or a saved block's name; the
            ``COMETAPI_KEY`` environment variable and the default base URL when omitted.
        {params}
        concurrency_limit: Name of a Prefect global concurrency limit to hold a slot of during
            the API call (shared by every worker).
        rate_limit: Name of a Prefect global concurrency limit with slot decay, used as a rate.
        spend_limit: Name of a spend limit (:mod:`prefect_cometapi.billing.spend`): the request's
            estimated cost is taken from it before sending.
        spend_limit_wait: Over the spend limit, wait for budget (default) or raise
            ``SpendLimitError`` without sending.

    Returns:
        The images (bytes, format, size, sha256) with the request's usage and cost.

    Example:
        ```python
        from prefect import flow
        from prefect_cometapi.tasks import generate_image

        @flow
        def banner():
            return generate_image("a lighthouse at dawn", "BLOCK_NAME", size="1536x1024")
        ```
    """
    limits = (concurrency_limit, rate_limit, spend_limit, spend_limit_wait)
    return ImageCall("generations", prompt, params, credentials, limits).run()


@task(name="generate-image", task_run_name=run_name("generate-image"), **ASYNC_TASK_OPTIONS)
@image_request("generations", task=True)
async def agenerate_image(
    prompt: str,
    credentials: CredentialsLike = None,
    *,
    concurrency_limit: str | None = None,
    rate_limit: str | None = None,
    spend_limit: str | None = None,
    spend_limit_wait: bool = True,
    **params: Any,
) -> ImageResult:
    """The async twin of :func:`generate_image`: same arguments, cache, retries and events.

    Args:
        prompt: What to draw (at most 32,000 characters).
        credentials: A ``CometAPICredentials`` block or a saved block's name; the
            ``COMETAPI_KEY`` environment variable and the default base URL when omitted.
        {params}
        concurrency_limit: Name of a Prefect global concurrency limit (slots).
        rate_limit: Name of a Prefect global concurrency limit with slot decay, used as a rate.
        spend_limit: Name of a spend limit (:mod:`prefect_cometapi.billing.spend`): the request's
            estimated cost is taken from it before sending.
        spend_limit_wait: Over the spend limit, wait for budget (default) or raise
            ``SpendLimitError`` without sending.

    Returns:
        The images (bytes, format, size, sha256) with the request's usage and cost.

    Example:
        ```python
        import asyncio
        from prefect import flow
        from prefect_cometapi.tasks import agenerate_image

        @flow
        async def banners(prompts: list[str]):
            return await asyncio.gather(*(agenerate_image(p, "BLOCK_NAME") for p in prompts))
        ```
    """
    limits = (concurrency_limit, rate_limit, spend_limit, spend_limit_wait)
    return await ImageCall("generations", prompt, params, credentials, limits).arun()


@task(name="edit-image", task_run_name=run_name("edit-image"), **TASK_OPTIONS)
@image_request("edits", task=True)
def edit_image(
    prompt: str,
    images: ImageLike | list[ImageLike],
    mask: ImageLike | None = None,
    credentials: CredentialsLike = None,
    *,
    s3_endpoint_url: str | None = None,
    concurrency_limit: str | None = None,
    rate_limit: str | None = None,
    spend_limit: str | None = None,
    spend_limit_wait: bool = True,
    **params: Any,
) -> ImageResult:
    """Edit or combine images (``POST /images/edits``), cached and retried like
    :func:`generate_image`.

    The cache key includes the sha256 of every input image and of the mask, so the same bytes
    from a path, a URL or S3 hit the same cache entry.

    Args:
        prompt: What to change or make.
        images: One input or a list of up to 16: bytes, a local path, an ``https://`` URL, an
            ``s3://bucket/key`` URI, a ``GeneratedImage`` or an ``ImageResult`` holding one
            image (PNG/WebP/JPEG under 50 MB each).
        mask: Optional PNG with alpha, the size of the first image (transparent = edit here),
            from the same kinds of source.
        credentials: A ``CometAPICredentials`` block or a saved block's name;
            ``COMETAPI_KEY`` when omitted.
        {params}
        s3_endpoint_url: Endpoint for ``s3://`` inputs on S3-compatible stores.
        concurrency_limit: Name of a Prefect global concurrency limit (slots).
        rate_limit: Name of a Prefect global concurrency limit with slot decay.
        spend_limit: Name of a spend limit (:mod:`prefect_cometapi.billing.spend`).
        spend_limit_wait: Over the spend limit, wait (default) or raise ``SpendLimitError``.

    Returns:
        The images with the request's usage and cost.
    """
    limits = (concurrency_limit, rate_limit, spend_limit, spend_limit_wait)
    sources = (images, mask, s3_endpoint_url)
    return ImageCall("edits", prompt, params, credentials, limits, sources).run()


@task(name="edit-image", task_run_name=run_name("edit-image"), **ASYNC_TASK_OPTIONS)
@image_request("edits", task=True)
async def aedit_image(
    prompt: str,
    images: ImageLike | list[ImageLike],
    mask: ImageLike | None = None,
    credentials: CredentialsLike = None,
    *,
    s3_endpoint_url: str | None = None,
    concurrency_limit: str | None = None,
    rate_limit: str | None = None,
    spend_limit: str | None = None,
    spend_limit_wait: bool = True,
    **params: Any,
) -> ImageResult:
    """The async twin of :func:`edit_image`: same arguments, cache, retries and events.

    Inputs given as paths, URLs or ``s3://`` URIs are read in a worker thread; the request
    itself uses the async client.

    Args:
        prompt: What to change or make.
        images: One input or a list of up to 16 (as for :func:`edit_image`).
        mask: Optional PNG with alpha, the size of the first image.
        credentials: A ``CometAPICredentials`` block or a saved block's name;
            ``COMETAPI_KEY`` when omitted.
        {params}
        s3_endpoint_url: Endpoint for ``s3://`` inputs on S3-compatible stores.
        concurrency_limit: Name of a Prefect global concurrency limit (slots).
        rate_limit: Name of a Prefect global concurrency limit with slot decay.
        spend_limit: Name of a spend limit (:mod:`prefect_cometapi.billing.spend`).
        spend_limit_wait: Over the spend limit, wait (default) or raise ``SpendLimitError``.

    Returns:
        The images with the request's usage and cost.
    """
    limits = (concurrency_limit, rate_limit, spend_limit, spend_limit_wait)
    sources = (images, mask, s3_endpoint_url)
    return await ImageCall("edits", prompt, params, credentials, limits, sources).arun()
