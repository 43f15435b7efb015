"""The image tasks: ``generate_image`` and ``edit_image``.

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

import time
from datetime import timedelta
from typing import Any

from prefect import get_run_logger, task
from prefect.runtime import task_run as runtime_task_run

from prefect_cometapi.blocks import CometAPICredentials
from prefect_cometapi.caching.policy import fetched_inputs, image_cache_policy
from prefect_cometapi.caching.serializer import IMAGE_RESULT_SERIALIZER
from prefect_cometapi.errors import retry_on_transient
from prefect_cometapi.image_params import image_request
from prefect_cometapi.inputs import EditSource, resolve_inputs
from prefect_cometapi.limits import api_budget
from prefect_cometapi.models import ImageResult
from prefect_cometapi.text import excerpt, slugify

__all__ = ["CACHE_EXPIRATION", "TASK_RETRIES", "edit_image", "generate_image"]

TASK_RETRIES = 2
TASK_RETRY_DELAYS = [30, 120]
CACHE_EXPIRATION = timedelta(days=30)
TAGS = ["cometapi"]
RUN_NAME_SLUG_CHARS = 32


def _run_name(kind: str) -> Any:
    def name() -> str:
        params = runtime_task_run.parameters
        slug = slugify(str(params.get("prompt", "")), RUN_NAME_SLUG_CHARS)
        return f"{kind}-{params.get('size', 'auto')}-{slug}"

    return name


def _log_summary(kind: str, result: ImageResult, seconds: float) -> None:
    first = result.images[0]
    usage = result.usage
    tokens = f"{usage.input_tokens} in / {usage.output_tokens} out" if usage else "n/a"
    cost = f"${result.cost_usd:.4f}" if result.cost_usd is not None else "n/a"
    get_run_logger().info(
        "%s %d image(s) %s quality=%s tokens=%s cost=%s in %.2f s (attempts=%d): %r",
        kind,
        len(result.images),
        first.size,
        result.params.get("quality") or "auto",
        tokens,
        cost,
        seconds,
        result.attempts,
        excerpt(first.prompt),
    )


#: What both image tasks share: tags, the attempt budget and the cache.
_TASK_OPTIONS: dict[str, Any] = {
    "tags": TAGS,
    "retries": TASK_RETRIES,
    "retry_delay_seconds": TASK_RETRY_DELAYS,
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": retry_on_transient,
    "cache_policy": image_cache_policy(),
    "cache_expiration": CACHE_EXPIRATION,
    "persist_result": True,
    "result_serializer": IMAGE_RESULT_SERIALIZER,
}


def _credentials(credentials: CometAPICredentials | None) -> CometAPICredentials:
    return credentials if credentials is not None else CometAPICredentials()


@task(name="generate-image", task_run_name=_run_name("generate-image"), **_TASK_OPTIONS)
@image_request("generations", task=True)
def generate_image(
    prompt: str,
    credentials: CometAPICredentials | None = None,
    *,
    concurrency_limit: str | None = None,
    rate_limit: str | None = None,
    **params: Any,
) -> ImageResult:
    """Generate images from a prompt (``POST /images/generations``), cached and retried.

    The result is persisted and cached for 30 days on what determines the image (model, prompt,
    size, quality, format, compression, background, moderation, ``n`` and ``variant``), so a
    re-run pays nothing; concurrent identical calls wait for one another instead of paying
    twice. Change ``variant`` to ask for a new image on purpose, or run with
    ``generate_image.with_options(refresh_cache=True)``. Retries follow the module's attempt
    budget: at most ``(max_retries + 1) x 3`` HTTP attempts, only for transient failures.

    Args:
        prompt: What to draw (at most 32,000 characters).
        credentials: A ``CometAPICredentials`` block; the ``COMETAPI_KEY`` environment variable
            and the default base URL when omitted.
        {params}
        concurrency_limit: Name of a Prefect global concurrency limit to hold a slot of during
            the API call (shared by every worker).
        rate_limit: Name of a Prefect global concurrency limit with slot decay, used as a rate.

    Returns:
        The images (bytes, format, size, sha256) with the request's usage and cost.

    Example:
        ```python
        from prefect import flow
        from prefect_cometapi import CometAPICredentials
        from prefect_cometapi.tasks import generate_image

        @flow
        def banner():
            credentials = CometAPICredentials.load("BLOCK_NAME")
            return generate_image("a lighthouse at dawn", credentials, size="1536x1024")
        ```
    """
    started = time.monotonic()
    params.pop("variant")
    with (
        _credentials(credentials).get_client() as client,
        api_budget(concurrency_limit, rate_limit),
    ):
        result = client.generate(prompt, **params)
    _log_summary("generated", result, time.monotonic() - started)
    return result


ImageSource = EditSource


@task(name="edit-image", task_run_name=_run_name("edit-image"), **_TASK_OPTIONS)
@image_request("edits", task=True)
def edit_image(
    prompt: str,
    images: ImageSource | list[ImageSource],
    mask: ImageSource | None = None,
    credentials: CometAPICredentials | None = None,
    *,
    s3_endpoint_url: str | None = None,
    concurrency_limit: str | None = None,
    rate_limit: str | None = None,
    **params: Any,
) -> ImageResult:
    """Edit or combine images (``POST /images/edits``), cached and retried like
    :func:`generate_image`.

    The cache key includes the sha256 of every input image and of the mask, so the same bytes
    from a path, a URL or S3 hit the same cache entry.

    Args:
        prompt: What to change or make.
        images: One input or a list of up to 16: bytes, a local path, an ``https://`` URL, an
            ``s3://bucket/key`` URI or a ``GeneratedImage`` (PNG/WebP/JPEG under 50 MB each).
        mask: Optional PNG with alpha, the size of the first image (transparent = edit here),
            from the same kinds of source.
        credentials: A ``CometAPICredentials`` block; ``COMETAPI_KEY`` when omitted.
        {params}
        s3_endpoint_url: Endpoint for ``s3://`` inputs on S3-compatible stores.
        concurrency_limit: Name of a Prefect global concurrency limit (slots).
        rate_limit: Name of a Prefect global concurrency limit with slot decay.

    Returns:
        The images with the request's usage and cost.
    """
    started = time.monotonic()
    params.pop("variant")
    # The bytes the cache key was computed from, when it was: fetched once, hashed and sent.
    fetched = fetched_inputs(runtime_task_run.id)
    image_bytes, mask_bytes = fetched or resolve_inputs(images, mask, s3_endpoint_url)
    with (
        _credentials(credentials).get_client() as client,
        api_budget(concurrency_limit, rate_limit),
    ):
        result = client.edit(prompt, image_bytes, mask=mask_bytes, **params)
    _log_summary("edited", result, time.monotonic() - started)
    return result
