"""The HTTP clients for the Images API: a sync and an async twin driving one exchange.

Both clients drive :class:`~prefect_cometapi.client.core.ClientCore`'s sans-I/O exchange, which
holds request building and validation, response parsing, error mapping and the retry decision;
:class:`CometAPIClient` and :class:`AsyncCometAPIClient` only move bytes and sleep.

Example:
    ```python
    from prefect_cometapi import CometAPIClient

    with CometAPIClient(api_key="sk-...") as client:
        result = client.generate("a red bicycle, studio photo", size="1536x1024", quality="low")
        open("bike.png", "wb").write(result.images[0].data)
    ```
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import time
from collections.abc import Mapping, Sequence
from typing import IO, Any

import httpx

from prefect_cometapi.allowlist import DEFAULT_BASE_URL
from prefect_cometapi.billing.prices import ModelPrice
from prefect_cometapi.client import core as exchange
from prefect_cometapi.client.body import ACCEPT_ENCODING, BodyReader
from prefect_cometapi.client.core import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_RETRIES,
    DEFAULT_READ_TIMEOUT,
    ClientCore,
    PreparedRequest,
)
from prefect_cometapi.client.images import ImageLike
from prefect_cometapi.client.params import Endpoint, image_request
from prefect_cometapi.models import ImageResult

__all__ = ["AsyncCometAPIClient", "CometAPIClient"]


@functools.lru_cache(maxsize=1)
def _ssl_context() -> ssl.SSLContext:
    # One TLS context for every client of the process: building one loads the CA bundle, which a
    # task that makes a client per request would otherwise pay each time.
    return httpx.create_ssl_context()


def _timeout(connect_timeout: float, read_timeout: float) -> httpx.Timeout:
    return httpx.Timeout(read_timeout, connect=connect_timeout)


class _ClientBase:
    """What the two clients share around the exchange: the core, its requests and ``repr``."""

    _core: ClientCore

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self._core.base_url!r})"

    def prepare(
        self,
        endpoint: Endpoint,
        prompt: str,
        image: ImageLike | IO[bytes] | Sequence[ImageLike | IO[bytes]] | None = None,
        mask: ImageLike | IO[bytes] | None = None,
        **params: Any,
    ) -> PreparedRequest:
        """Validate and build a request without sending it (send it with ``execute``).

        Args:
            endpoint: ``"generations"`` or ``"edits"``.
            prompt: The prompt.
            image: The input image(s) of an edit.
            mask: The mask of an edit.
            **params: The image parameters, as ``generate`` and ``edit`` take them.

        Returns:
            The request.

        Raises:
            ValidationError: For a parameter or input the API would refuse.
        """
        if endpoint == "generations":
            return self._core.prepare_generate(prompt, **params)
        return self._core.prepare_edit(prompt, image, mask, **params)


class CometAPIClient(_ClientBase):
    """Synchronous client for CometAPI's OpenAI-compatible Images API.

    Args:
        api_key: The key (str or ``SecretStr``); ``COMETAPI_KEY`` when omitted.
        base_url: The API base, ending in ``/v1``.
        connect_timeout: Seconds to establish a connection.
        read_timeout: Seconds to wait for an answer (images can take minutes).
        max_retries: Retries of transient failures (so ``max_retries + 1`` attempts at most).
        prices: Price overrides per model, merged over :data:`~prefect_cometapi.DEFAULT_PRICES`.
        http_client: An ``httpx.Client`` to use instead of the client's own (not closed by us).

    Raises:
        MissingAPIKeyError: If no key is given and ``COMETAPI_KEY`` is unset.
    """

    def __init__(
        self,
        api_key: Any = None,
        *,
        base_url: str = DEFAULT_BASE_URL,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        prices: Mapping[str, ModelPrice] | None = None,
        http_client: httpx.Client | None = None,
    ) -> None:
        self._core = ClientCore(api_key, base_url, max_retries, prices, read_timeout)
        self._timeout = _timeout(connect_timeout, read_timeout)
        # Each attempt, body included, ends within this (a per-read timeout alone lets a server
        # that trickles a byte now and then hold the worker for ever).
        self._deadline_s = connect_timeout + read_timeout
        self._owns_http = http_client is None
        self._http = http_client or httpx.Client(
            timeout=self._timeout, follow_redirects=False, verify=_ssl_context()
        )

    def __enter__(self) -> CometAPIClient:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self) -> None:
        """Close the underlying HTTP connections (if the client opened them)."""
        if self._owns_http:
            self._http.close()

    @image_request("generations")
    def generate(self, prompt: str, **params: Any) -> ImageResult:
        """Create images from a prompt (``POST /images/generations``).

        Every parameter is validated before anything is sent.

        Args:
            prompt: What to draw (at most 32,000 characters).
            {params}

        Returns:
            The images with their bytes, size, sha256, usage and cost.

        Raises:
            ValidationError: For a parameter the API would refuse (no request is sent).
            APIStatusError: A subclass matching the API's error, after retries if retryable.
            APIConnectionError: If no answer came, after retries.
        """
        return self.execute(self._core.prepare_generate(prompt, **params))

    @image_request("edits")
    def edit(
        self,
        prompt: str,
        image: ImageLike | IO[bytes] | Sequence[ImageLike | IO[bytes]],
        *,
        mask: ImageLike | IO[bytes] | None = None,
        **params: Any,
    ) -> ImageResult:
        """Edit or combine images (``POST /images/edits``, multipart).

        One image is sent as ``image``, several (up to 16) as repeated ``image[]`` parts; the
        mask (a PNG with alpha, the size of the first image) marks with transparent pixels the
        area to change.

        Args:
            prompt: What to change or make.
            image: One input image or a list of up to 16 (bytes, paths, binary files or results;
                PNG/WebP/JPEG under 50 MB each).
            {params}
            mask: Optional mask.

        Returns:
            The images with their bytes, size, sha256, usage and cost.

        Raises:
            ValidationError: For bad parameters or input images (no request is sent).
            APIStatusError: A subclass matching the API's error, after retries if retryable.
            APIConnectionError: If no answer came, after retries.
        """
        return self.execute(self._core.prepare_edit(prompt, image, mask, **params))

    def execute(self, prepared: PreparedRequest) -> ImageResult:
        """Send a prepared request (:meth:`prepare`): drive the core's exchange with blocking I/O.

        Args:
            prepared: The request.

        Returns:
            The images with their bytes, size, sha256, usage and cost.
        """
        steps = self._core.exchange(prepared)
        reply: Any = None
        error: Exception | None = None
        while True:
            try:
                kind, arg = steps.throw(error) if error else steps.send(reply)
            except StopIteration as done:
                return done.value
            reply, error = None, None
            try:
                if kind == "sleep":
                    time.sleep(arg)
                elif kind == "post":
                    reply = self._send("POST", arg, exchange.MAX_RESPONSE_BYTES, False)
                else:
                    reply = self._send("GET", {"url": arg}, exchange.MAX_DOWNLOAD_BYTES)
            except httpx.HTTPError as exc:
                error = exc

    def _send(
        self, method: str, kwargs: dict[str, Any], cap: int, follow_redirects: bool = True
    ) -> httpx.Response:
        """One request whose body is streamed under ``cap`` bytes and the attempt's deadline."""
        deadline = time.monotonic() + self._deadline_s
        request = self._http.build_request(method, **kwargs, timeout=self._timeout)
        request.headers["Accept-Encoding"] = ACCEPT_ENCODING  # what BodyReader decodes
        response = self._http.send(request, stream=True, follow_redirects=follow_redirects)
        try:
            reader = BodyReader(response, cap, deadline, self._core.base_url)
            if response.is_stream_consumed:  # an event hook of the caller's client read it
                reader.add_decoded(response.content)
            else:
                for chunk in response.iter_raw():
                    reader.add(chunk)
            return reader.finished()
        finally:
            response.close()


class AsyncCometAPIClient(_ClientBase):
    """Asynchronous twin of :class:`CometAPIClient` (same parameters, same behaviour).

    Args:
        api_key: The key (str or ``SecretStr``); ``COMETAPI_KEY`` when omitted.
        base_url: The API base, ending in ``/v1``.
        connect_timeout: Seconds to establish a connection.
        read_timeout: Seconds to wait for an answer (images can take minutes).
        max_retries: Retries of transient failures (so ``max_retries + 1`` attempts at most).
        prices: Price overrides per model.
        http_client: An ``httpx.AsyncClient`` to use instead of the client's own.

    Raises:
        MissingAPIKeyError: If no key is given and ``COMETAPI_KEY`` is unset.
    """

    def __init__(
        self,
        api_key: Any = None,
        *,
        base_url: str = DEFAULT_BASE_URL,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        prices: Mapping[str, ModelPrice] | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self._core = ClientCore(api_key, base_url, max_retries, prices, read_timeout)
        self._timeout = _timeout(connect_timeout, read_timeout)
        # Each attempt, body included, ends within this (a per-read timeout alone lets a server
        # that trickles a byte now and then hold the worker for ever).
        self._deadline_s = connect_timeout + read_timeout
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient(
            timeout=self._timeout, follow_redirects=False, verify=_ssl_context()
        )

    async def __aenter__(self) -> AsyncCometAPIClient:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the underlying HTTP connections (if the client opened them)."""
        if self._owns_http:
            await self._http.aclose()

    @image_request("generations")
    async def generate(self, prompt: str, **params: Any) -> ImageResult:
        """Create images from a prompt; as :meth:`CometAPIClient.generate`.

        Every parameter is validated before anything is sent.

        Args:
            prompt: What to draw (at most 32,000 characters).
            {params}

        Returns:
            The images with their bytes, size, sha256, usage and cost.

        Raises:
            ValidationError: For a parameter the API would refuse (no request is sent).
            APIStatusError: A subclass matching the API's error, after retries if retryable.
            APIConnectionError: If no answer came, after retries.
        """
        return await self.execute(self._core.prepare_generate(prompt, **params))

    @image_request("edits")
    async def edit(
        self,
        prompt: str,
        image: ImageLike | IO[bytes] | Sequence[ImageLike | IO[bytes]],
        *,
        mask: ImageLike | IO[bytes] | None = None,
        **params: Any,
    ) -> ImageResult:
        """Edit or combine images (``POST /images/edits``); as :meth:`CometAPIClient.edit`.

        One image is sent as ``image``, several (up to 16) as repeated ``image[]`` parts; the
        mask (a PNG with alpha, the size of the first image) marks with transparent pixels the
        area to change.

        Args:
            prompt: What to change or make.
            image: One input image or a list of up to 16 (bytes, paths, binary files or results;
                PNG/WebP/JPEG under 50 MB each).
            {params}
            mask: Optional mask.

        Returns:
            The images with their bytes, size, sha256, usage and cost.

        Raises:
            ValidationError: For bad parameters or input images (no request is sent).
            APIStatusError: A subclass matching the API's error, after retries if retryable.
            APIConnectionError: If no answer came, after retries.
        """
        return await self.execute(self._core.prepare_edit(prompt, image, mask, **params))

    async def execute(self, prepared: PreparedRequest) -> ImageResult:
        """Send a prepared request (:meth:`prepare`): drive the core's exchange with async I/O.

        Args:
            prepared: The request.

        Returns:
            The images with their bytes, size, sha256, usage and cost.
        """
        steps = self._core.exchange(prepared)
        reply: Any = None
        error: Exception | None = None
        while True:
            try:
                kind, arg = steps.throw(error) if error else steps.send(reply)
            except StopIteration as done:
                return done.value
            reply, error = None, None
            try:
                if kind == "sleep":
                    await asyncio.sleep(arg)
                elif kind == "post":
                    reply = await self._send("POST", arg, exchange.MAX_RESPONSE_BYTES, False)
                else:
                    reply = await self._send("GET", {"url": arg}, exchange.MAX_DOWNLOAD_BYTES)
            except httpx.HTTPError as exc:
                error = exc

    async def _send(
        self, method: str, kwargs: dict[str, Any], cap: int, follow_redirects: bool = True
    ) -> httpx.Response:
        """One request whose body is streamed under ``cap`` bytes and the attempt's deadline."""
        deadline = time.monotonic() + self._deadline_s
        request = self._http.build_request(method, **kwargs, timeout=self._timeout)
        request.headers["Accept-Encoding"] = ACCEPT_ENCODING  # what BodyReader decodes
        response = await self._http.send(request, stream=True, follow_redirects=follow_redirects)
        try:
            reader = BodyReader(response, cap, deadline, self._core.base_url)
            if response.is_stream_consumed:  # an event hook of the caller's client read it
                reader.add_decoded(response.content)
            else:
                async for chunk in response.aiter_raw():
                    reader.add(chunk)
            return reader.finished()
        finally:
            await response.aclose()
