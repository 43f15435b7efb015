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

import re
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar
from datetime import timedelta
from typing import Any

from prefect import Task, get_run_logger, task
from prefect.client.schemas.objects import TaskRun
from prefect.runtime import task_run as runtime_task_run
from prefect.states import State

from prefect_cometapi.blocks import CometAPICredentials
from prefect_cometapi.errors import is_retryable
from prefect_cometapi.models import GeneratedImage, ImageResult
from prefect_cometapi.tasks.caching import image_cache_policy
from prefect_cometapi.tasks.inputs import load_image_bytes
from prefect_cometapi.validation import DEFAULT_MODEL

TASK_RETRIES = 2
TASK_RETRY_DELAYS = [30, 120]
CACHE_EXPIRATION = timedelta(days=30)
TAGS = ["cometapi"]
PROMPT_LOG_CHARS = 80


def retry_on_transient(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """``retry_condition_fn`` for the image tasks: retry only what can succeed on a retry.

    Args:
        task: The task.
        task_run: The task run.
        state: The failed state.

    Returns:
        ``True`` for connection errors, timeouts, 408/409/429 (not ``insufficient_quota``) and
        5xx; ``False`` for everything else (bad request, content policy, auth, permission, not
        found, quota, validation).
    """
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - the state's own exception
        return is_retryable(exc)
    return False


def _slug(text: str, limit: int = 32) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].rstrip("-") or "image"


def _run_name(kind: str) -> Any:
    def name() -> str:
        params = runtime_task_run.parameters
        return f"{kind}-{params.get('size', 'auto')}-{_slug(str(params.get('prompt', '')))}"

    return name


def _excerpt(prompt: str) -> str:
    text = " ".join(prompt.split())
    return text if len(text) <= PROMPT_LOG_CHARS else text[: PROMPT_LOG_CHARS - 3] + "..."


_request_slot: ContextVar[threading.Semaphore | None] = ContextVar(
    "cometapi_request_slot", default=None
)


@contextmanager
def request_slot(semaphore: threading.Semaphore | None) -> Iterator[None]:
    """Make the image tasks called in this context hold ``semaphore`` during their API call.

    A process-local bound on requests in flight that covers the HTTP exchange only, not the
    task run around it (cache lookup, locking, persisting the result), so a batch keeps its
    ``concurrency`` requests busy while that work runs beside them.

    Args:
        semaphore: The semaphore; ``None`` for no bound.

    Yields:
        While the tasks called here use it.
    """
    token = _request_slot.set(semaphore)
    try:
        yield
    finally:
        _request_slot.reset(token)


@contextmanager
def api_budget(concurrency_limit: str | None, rate_limit: str | None) -> Iterator[None]:
    """Hold a request slot (:func:`request_slot`), a global concurrency slot and/or a rate token.

    Args:
        concurrency_limit: Name of a global concurrency limit (slots); ``None`` for none.
        rate_limit: Name of a global concurrency limit with slot decay (a rate); ``None``.

    Yields:
        While the slots are held. The limits must exist (``prefect gcl create``).
    """
    with ExitStack() as stack:
        slot = _request_slot.get()
        if slot is not None:
            stack.enter_context(slot)
        if rate_limit:
            from prefect.concurrency.sync import rate_limit as take_rate

            take_rate(rate_limit, strict=True)
        if concurrency_limit:
            from prefect.concurrency.sync import concurrency

            stack.enter_context(concurrency(concurrency_limit, occupy=1, strict=True))
        yield


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
        _excerpt(first.prompt),
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
}


def _credentials(credentials: CometAPICredentials | None) -> CometAPICredentials:
    return credentials if credentials is not None else CometAPICredentials()


@task(name="generate-image", task_run_name=_run_name("generate-image"), **_TASK_OPTIONS)
def generate_image(
    prompt: str,
    credentials: CometAPICredentials | None = None,
    model: str = DEFAULT_MODEL,
    n: int = 1,
    size: str = "auto",
    quality: str | None = None,
    background: str | None = None,
    output_format: str | None = None,
    output_compression: int | None = None,
    moderation: str | None = None,
    user: str | None = None,
    variant: int = 0,
    concurrency_limit: str | None = None,
    rate_limit: str | None = None,
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
        model: The model (default ``gpt-image-2``).
        n: Number of images, 1-10 (each is billed).
        size: ``auto`` or ``WxH`` (gpt-image-2: sides divisible by 16, long edge <= 3840,
            aspect <= 3:1, 655,360-8,294,400 pixels).
        quality: ``low``, ``medium``, ``high`` or ``auto``.
        background: ``transparent`` (png/webp), ``opaque`` or ``auto``.
        output_format: ``png``, ``jpeg`` or ``webp``.
        output_compression: 0-100, jpeg/webp only.
        moderation: ``low`` or ``auto``.
        user: An end-user id for abuse monitoring (not part of the cache key).
        variant: Part of the cache key only: change it to get a new image for the same request.
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
    with (
        _credentials(credentials).get_client() as client,
        api_budget(concurrency_limit, rate_limit),
    ):
        result = client.generate(
            prompt, model=model, n=n, size=size, quality=quality, background=background,
            output_format=output_format, output_compression=output_compression,
            moderation=moderation, user=user,
        )  # fmt: skip
    _log_summary("generated", result, time.monotonic() - started)
    return result


ImageSource = Any  # bytes | str | PathLike | GeneratedImage (``https://``/``s3://`` URIs as str)


def resolve_inputs(
    images: ImageSource | Sequence[ImageSource],
    mask: ImageSource | None,
    options: dict[str, Any],
) -> tuple[list[bytes], bytes | None]:
    """Load edit inputs into bytes: bytes, paths, ``https://`` URLs, ``s3://`` URIs or images.

    Args:
        images: One source or a list of sources.
        mask: The mask source, if any.
        options: The task's inputs (for ``s3_endpoint_url``).

    Returns:
        The image bytes and the mask bytes.
    """
    endpoint = options.get("s3_endpoint_url")

    def load(source: ImageSource) -> bytes:
        if isinstance(source, GeneratedImage):
            return source.data
        return load_image_bytes(source, endpoint_url=endpoint)

    many = images if isinstance(images, (list, tuple)) else [images]
    return [load(s) for s in many], (load(mask) if mask is not None else None)


@task(name="edit-image", task_run_name=_run_name("edit-image"), **_TASK_OPTIONS)
def edit_image(
    prompt: str,
    images: ImageSource | list[ImageSource],
    mask: ImageSource | None = None,
    credentials: CometAPICredentials | None = None,
    model: str = DEFAULT_MODEL,
    n: int = 1,
    size: str = "auto",
    quality: str | None = None,
    background: str | None = None,
    output_format: str | None = None,
    output_compression: int | None = None,
    moderation: str | None = None,
    input_fidelity: str | None = None,
    user: str | None = None,
    variant: int = 0,
    s3_endpoint_url: str | None = None,
    concurrency_limit: str | None = None,
    rate_limit: str | None = None,
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
        model: The model (default ``gpt-image-2``).
        n: Number of images, 1-10.
        size: ``auto`` (the input's size) or ``WxH``.
        quality: ``low``, ``medium``, ``high`` or ``auto``.
        background: ``transparent`` (png/webp), ``opaque`` or ``auto``.
        output_format: ``png``, ``jpeg`` or ``webp``.
        output_compression: 0-100, jpeg/webp only.
        moderation: ``low`` or ``auto``.
        input_fidelity: ``high``/``low``; gpt-image-1 and gpt-image-1.5 only.
        user: An end-user id.
        variant: Part of the cache key only: change it to get a new image.
        s3_endpoint_url: Endpoint for ``s3://`` inputs on S3-compatible stores.
        concurrency_limit: Name of a Prefect global concurrency limit (slots).
        rate_limit: Name of a Prefect global concurrency limit with slot decay.

    Returns:
        The images with the request's usage and cost.
    """
    started = time.monotonic()
    image_bytes, mask_bytes = resolve_inputs(images, mask, {"s3_endpoint_url": s3_endpoint_url})
    with (
        _credentials(credentials).get_client() as client,
        api_budget(concurrency_limit, rate_limit),
    ):
        result = client.edit(
            prompt, image_bytes, mask=mask_bytes, model=model, n=n, size=size, quality=quality,
            background=background, output_format=output_format,
            output_compression=output_compression, moderation=moderation,
            input_fidelity=input_fidelity, user=user,
        )  # fmt: skip
    _log_summary("edited", result, time.monotonic() - started)
    return result
