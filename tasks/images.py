"""The image tasks: ``generate_image`` and ``edit_image``, and their async twins.

Named as in prefect-aws (``upload_to_bucket`` / ``aupload_to_bucket``): ``agenerate_image`` and
``aedit_image`` take the same arguments (all declared once in
:mod:`prefect_cometapi.image_params`) and are awaited in ``async def`` flows, or gathered; they
use the async HTTP client (no thread per request). Both twins of a task share one cache policy,
so a sync and an async call of the same request share one cache entry, and everything around
the request (:mod:`prefect_cometapi.tasks.image_core`): the attempt budget, the serializer
check, persistence, logs, events and the cost ledger.

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

import asyncio
from typing import Any

from prefect import task
from prefect.runtime import task_run as runtime_task_run

from prefect_cometapi.blocks.credentials import (
    CredentialsLike,
    aresolve_credentials,
    resolve_credentials,
)
from prefect_cometapi.caching.policy import fetched_inputs
from prefect_cometapi.image_params import image_request
from prefect_cometapi.inputs import EditSource, resolve_inputs
from prefect_cometapi.limits import aapi_budget, api_budget
from prefect_cometapi.models import ImageResult
from prefect_cometapi.spend import aacquire_spend, acquire_spend
from prefect_cometapi.tasks.image_core import (
    ASYNC_TASK_OPTIONS,
    CACHE_EXPIRATION,
    TASK_OPTIONS,
    TASK_RETRIES,
    TASK_RETRY_DELAYS,
    ImageCall,
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

ImageSource = EditSource


def _needs_io(images: Any, mask: Any) -> bool:
    many = images if isinstance(images, (list, tuple)) else [images]
    return any(isinstance(s, str) or hasattr(s, "__fspath__") for s in [*many, mask])


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
        spend_limit: Name of a spend limit (:mod:`prefect_cometapi.spend`): the request's
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
    call = ImageCall("generations", {"prompt": prompt, **params})
    params.pop("variant")
    try:
        with (
            resolve_credentials(credentials).get_client() as client,
            acquire_spend(spend_limit, call.estimated_usd(), spend_limit_wait),
            api_budget(concurrency_limit, rate_limit),
        ):
            result = client.generate(prompt, **params)
    except Exception as exc:
        call.failed(exc)
        raise
    return call.succeeded(result)


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
        spend_limit: Name of a spend limit (:mod:`prefect_cometapi.spend`): the request's
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
    call = ImageCall("generations", {"prompt": prompt, **params})
    params.pop("variant")
    try:
        creds = await aresolve_credentials(credentials)
        async with (
            creds.get_async_client() as client,
            aacquire_spend(spend_limit, call.estimated_usd(), spend_limit_wait),
            aapi_budget(concurrency_limit, rate_limit),
        ):
            result = await client.generate(prompt, **params)
    except Exception as exc:
        call.failed(exc)
        raise
    return call.succeeded(result)


@task(name="edit-image", task_run_name=run_name("edit-image"), **TASK_OPTIONS)
@image_request("edits", task=True)
def edit_image(
    prompt: str,
    images: ImageSource | list[ImageSource],
    mask: ImageSource | None = None,
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
        spend_limit: Name of a spend limit (:mod:`prefect_cometapi.spend`).
        spend_limit_wait: Over the spend limit, wait (default) or raise ``SpendLimitError``.

    Returns:
        The images with the request's usage and cost.
    """
    call = ImageCall("edits", {"prompt": prompt, **params})
    params.pop("variant")
    try:
        # The bytes the cache key was computed from, when it was: fetched once, hashed and sent.
        fetched = fetched_inputs(runtime_task_run.id)
        image_bytes, mask_bytes = fetched or resolve_inputs(images, mask, s3_endpoint_url)
        with (
            resolve_credentials(credentials).get_client() as client,
            acquire_spend(spend_limit, call.estimated_usd(len(image_bytes)), spend_limit_wait),
            api_budget(concurrency_limit, rate_limit),
        ):
            result = client.edit(prompt, image_bytes, mask=mask_bytes, **params)
    except Exception as exc:
        call.failed(exc)
        raise
    return call.succeeded(result)


@task(name="edit-image", task_run_name=run_name("edit-image"), **ASYNC_TASK_OPTIONS)
@image_request("edits", task=True)
async def aedit_image(
    prompt: str,
    images: ImageSource | list[ImageSource],
    mask: ImageSource | None = None,
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
        spend_limit: Name of a spend limit (:mod:`prefect_cometapi.spend`).
        spend_limit_wait: Over the spend limit, wait (default) or raise ``SpendLimitError``.

    Returns:
        The images with the request's usage and cost.
    """
    call = ImageCall("edits", {"prompt": prompt, **params})
    params.pop("variant")
    try:
        fetched = fetched_inputs(runtime_task_run.id)
        if fetched:
            image_bytes, mask_bytes = fetched
        elif _needs_io(images, mask):
            image_bytes, mask_bytes = await asyncio.to_thread(
                resolve_inputs, images, mask, s3_endpoint_url
            )
        else:
            image_bytes, mask_bytes = resolve_inputs(images, mask, s3_endpoint_url)
        creds = await aresolve_credentials(credentials)
        async with (
            creds.get_async_client() as client,
            aacquire_spend(spend_limit, call.estimated_usd(len(image_bytes)), spend_limit_wait),
            aapi_budget(concurrency_limit, rate_limit),
        ):
            result = await client.edit(prompt, image_bytes, mask=mask_bytes, **params)
    except Exception as exc:
        call.failed(exc)
        raise
    return call.succeeded(result)
