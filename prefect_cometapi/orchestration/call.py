"""What the sync and async image tasks share: options, limits, persistence, logs and events.

Each image task (``generate_image``, ``edit_image`` and their async twins ``agenerate_image``,
``aedit_image``, in :mod:`prefect_cometapi.tasks.images`) is a few lines: it builds an
:class:`ImageCall` (the endpoint, the prompt, the parameters and an edit's sources) and runs it;
the call makes the request itself. :meth:`ImageCall.run` (sync) and :meth:`ImageCall.arun`
(async) do it, once for both twins:

- the task options (the attempt budget, the cache policy, expiration, persistence; no tags:
  Prefect asks its server for a tag concurrency slot before every run of a tagged task, a
  round trip per image even when no such limit exists; add tags with ``with_options``);
- before any request: the result serializer is checked to round-trip an ``ImageResult``, so a
  ``result_serializer`` that would silently turn the cache off is refused instead; the edit
  inputs are read (the bytes the cache key was computed from, when it was), the credentials
  resolved, the request's estimated cost taken from the spend limit and a slot of the
  concurrency and rate limits held;
- on success: the task's own transaction is switched to commit eagerly, so a paid image is
  persisted when the image task ends even inside another task (whose later failure would
  otherwise lose it); the success log line with tokens, cost and request id; the
  ``prefect-cometapi.image.generated`` event and the spend events; the cost ledger entry;
- on failure: the ``.refused`` (content policy) or ``.failed`` event;
- on a cache hit (the task body does not run): an ``on_completion`` hook logs the cost avoided
  and emits ``.cached``.

Attempt budget (one number to remember): each task attempt lets the client try
``credentials.max_retries + 1`` times (default 3) with short backoff, honouring Retry-After; the
task itself is retried ``TASK_RETRIES`` times (default 2, after 30 s and 120 s, +-50 % jitter)
for outages that outlast that. So one image request makes at most
``(max_retries + 1) x (TASK_RETRIES + 1)`` = 9 HTTP attempts by default, and only for errors that
can succeed on a retry.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from prefect import get_run_logger

from prefect_cometapi.billing.ledger import record_failure, record_request
from prefect_cometapi.billing.spend import aacquire_spend, acquire_spend, estimate_request_usd
from prefect_cometapi.blocks.credentials import (
    CredentialsLike,
    aresolve_credentials,
    resolve_credentials,
)
from prefect_cometapi.client import AsyncCometAPIClient, CometAPIClient
from prefect_cometapi.client.core import PreparedRequest
from prefect_cometapi.client.params import Endpoint
from prefect_cometapi.errors import (
    APIStatusError,
    ContentPolicyError,
    redact,
)
from prefect_cometapi.events import emit_image_event, emit_spend
from prefect_cometapi.inputs.coerce import resolve_inputs
from prefect_cometapi.models import ImageResult
from prefect_cometapi.orchestration.late import late_answer_guard
from prefect_cometapi.orchestration.limits import aapi_budget, api_budget
from prefect_cometapi.orchestration.options import (
    _cost,
    _tokens,
    check_result_serializer,
    persist_on_finish,
    stamp_cache_key,
)
from prefect_cometapi.text import prompt_excerpt

__all__ = ["ImageCall"]


EditInputs = tuple[list[bytes], "bytes | None"]
"""An edit's input images and mask, as bytes."""


def _needs_io(images: Any, mask: Any) -> bool:
    many = images if isinstance(images, (list, tuple)) else [images]
    return any(isinstance(s, str) or hasattr(s, "__fspath__") for s in [*many, mask])


def _execute(credentials: Any, prepared: PreparedRequest) -> ImageResult:
    """Send a prepared request with a sync client of its own (for a late-answer guard)."""
    with credentials.get_client() as client:
        return client.execute(prepared)


class ImageCall:
    """One call of an image task: checks, the request itself, its limits, and the reports after.

    The task builds the call (endpoint, prompt, parameters and, for an edit, its sources) and
    runs it; the call reads the edit inputs, opens the client and sends the request itself.

    An edit's sources are read once: when Prefect computed the cache key, the bytes it hashed
    are already in the task's arguments (the cache policy put them there,
    :class:`~prefect_cometapi.caching.policy.ImageRequestCachePolicy`), so they are what is
    sent; otherwise they are read here.

    Args:
        endpoint: ``generations`` or ``edits``.
        prompt: The prompt.
        params: The task's image parameters (``variant`` included; it is not sent).
        credentials: A block, a saved block's name or ``None``.
        limits: The task's ``(concurrency_limit, rate_limit, spend_limit, spend_limit_wait)``:
            the names of a global concurrency limit to hold a slot of, of one with slot decay
            used as a rate, of a spend limit (each ``None`` for none), and whether to wait for
            the spend limit's budget (else raise).
        sources: An edit's ``(images, mask, s3_endpoint_url)`` as the task got them.

    Attributes:
        sent: The parameters to send (``params`` without ``variant``).
    """

    def __init__(
        self,
        endpoint: Endpoint,
        prompt: str,
        params: dict[str, Any],
        credentials: CredentialsLike,
        limits: tuple[str | None, str | None, str | None, bool],
        sources: tuple[Any, Any, str | None] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.prompt = prompt
        self.params = {"prompt": prompt, **params}
        self.sent = {k: v for k, v in params.items() if k != "variant"}
        self.model = str(params.get("model"))
        self.credentials = credentials
        self.sources = sources
        concurrency_limit, rate_limit, spend_limit, spend_limit_wait = limits
        self._budget = (concurrency_limit, rate_limit)
        self._spend = (spend_limit, spend_limit_wait)
        self.started = time.monotonic()
        check_result_serializer()

    def run(self) -> ImageResult:
        """Read the edit inputs, make the request with the sync client and report it.

        Returns:
            The result.
        """
        try:
            loaded = resolve_inputs(*self.sources) if self.sources else None
            credentials = resolve_credentials(self.credentials)
            guard = late_answer_guard(credentials, stamp_cache_key, get_run_logger())
            with (
                credentials.get_client() as client,
                acquire_spend(self._spend[0], self.estimated_usd(loaded), self._spend[1]),
                api_budget(*self._budget),
            ):
                prepared = self._prepare(client, loaded)
                if guard is None:
                    result = client.execute(prepared)
                else:
                    result = guard.run(lambda: _execute(credentials, prepared))
        except Exception as exc:
            self.failed(exc)
            raise
        return self.succeeded(result)

    async def arun(self) -> ImageResult:
        """Make the request with the async client and report it (as :meth:`run`); paths, URLs
        and ``s3://`` URIs not read yet are read in a worker thread.

        Returns:
            The result.
        """
        try:
            loaded = None
            if self.sources and _needs_io(*self.sources[:2]):
                loaded = await asyncio.to_thread(resolve_inputs, *self.sources)
            elif self.sources:
                loaded = resolve_inputs(*self.sources)
            credentials = await aresolve_credentials(self.credentials)
            guard = late_answer_guard(credentials, stamp_cache_key, get_run_logger())
            async with (
                credentials.get_async_client() as client,
                aacquire_spend(self._spend[0], self.estimated_usd(loaded), self._spend[1]),
                aapi_budget(*self._budget),
            ):
                prepared = self._prepare(client, loaded)
                if guard is None:
                    result = await client.execute(prepared)
                else:
                    result = await guard.arun(lambda: _execute(credentials, prepared))
        except Exception as exc:
            self.failed(exc)
            raise
        return self.succeeded(result)

    def _prepare(
        self, client: CometAPIClient | AsyncCometAPIClient, inputs: EditInputs | None
    ) -> PreparedRequest:
        """The validated request to send (no I/O; the inputs are bytes by now)."""
        images, mask = inputs or (None, None)
        return client.prepare(self.endpoint, self.prompt, images, mask, **self.sent)

    def estimated_usd(self, inputs: EditInputs | None = None) -> float:
        """The request's estimated cost (what a spend limit takes before sending).

        Args:
            inputs: The edit inputs, if any (their images count).

        Returns:
            USD.
        """
        return estimate_request_usd(self.params, len(inputs[0]) if inputs else 0)

    @property
    def seconds(self) -> float:
        """Seconds since the call began."""
        return time.monotonic() - self.started

    def succeeded(self, result: ImageResult) -> ImageResult:
        """Persist on finish, log, emit the events and record the cost of a paid result.

        Args:
            result: The API's result.

        Returns:
            ``result``.
        """
        persist_on_finish()
        result = stamp_cache_key(result)
        seconds = self.seconds
        first = result.images[0]
        shown = prompt_excerpt(first.prompt)
        get_run_logger().info(
            "%s %d image(s) %s quality=%s tokens=%s cost=%s request_id=%s in %.2f s "
            "(attempts=%d)%s",
            "generated" if self.endpoint == "generations" else "edited",
            len(result.images),
            first.size,
            result.params.get("quality") or "auto",
            _tokens(result.usage),
            _cost(result.cost_usd),
            result.request_id or "n/a",
            seconds,
            result.attempts,
            f": {shown!r}" if shown else "",
        )
        emit_image_event(
            "generated",
            endpoint=self.endpoint,
            model=self.model,
            params=self.params,
            result=result,
            seconds=seconds,
        )
        emit_spend(result.cost_usd)
        record_request(self.endpoint, result, cached=False)
        return result

    def failed(self, error: BaseException) -> None:
        """Emit the ``.refused`` or ``.failed`` event of an attempt that raised.

        Args:
            error: What was raised.
        """
        outcome = "refused" if isinstance(error, ContentPolicyError) else "failed"
        if isinstance(error, APIStatusError):
            code = error.code or f"http_{error.status_code}"
            message = error.message
        else:
            code, message = type(error).__name__, str(error)
        record_failure(self.endpoint, self.params, code, redact(message))
        emit_image_event(
            outcome,
            endpoint=self.endpoint,
            model=self.model,
            params=self.params,
            error=error,
            seconds=self.seconds,
        )
