"""The sans-I/O exchange with the Images API that both clients drive.

:class:`ClientCore` holds everything that must not drift between the sync and the async client:
request building and validation, response parsing, error mapping and the retry decision. Its
:meth:`ClientCore.exchange` generator yields what to do (``post``, ``get``, ``sleep``) and
receives the answers; it never does I/O itself.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import uuid
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx

from prefect_cometapi.allowlist import check_base_url
from prefect_cometapi.billing.prices import ModelPrice, cost_usd
from prefect_cometapi.client.body import read_path
from prefect_cometapi.client.images import ImageLike, given_image
from prefect_cometapi.client.keys import resolve_api_key
from prefect_cometapi.client.params import request_defaults, validated_names
from prefect_cometapi.client.response import check_response, check_usage, image_sources
from prefect_cometapi.client.rules import (
    MAX_IMAGE_BYTES,
    check_edit_count,
    check_edit_size,
    inspect_image,
    validate_edit_images,
    validate_params,
)
from prefect_cometapi.errors import (
    APIConnectionError,
    APITimeoutError,
    CometAPIError,
    ImageDownloadError,
    UnexpectedResponseError,
    ValidationError,
    redact,
)
from prefect_cometapi.models import GeneratedImage, ImageResult, Usage

__all__ = [
    "BACKOFF_BASE_S",
    "CALL_ATTEMPT_HEADER",
    "CALL_ID_HEADER",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_READ_TIMEOUT",
    "MAX_DOWNLOAD_BYTES",
    "MAX_RESPONSE_BYTES",
    "ClientCore",
    "PreparedRequest",
]

logger = logging.getLogger("prefect_cometapi.client")

#: Image generation at high quality and 4K can take minutes: the read timeout must not cut it.
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_READ_TIMEOUT = 600.0
DEFAULT_MAX_RETRIES = 2
#: A server asking us to wait longer than this is not retried (the error is raised instead).
MAX_RETRY_AFTER_S = 120.0
BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 8.0
#: Attempts to download an image returned as a URL (the request itself is never re-sent for it).
DOWNLOAD_ATTEMPTS = 3
MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024
#: Sent with every attempt of one client call: the call's id (the same on each of its retries)
#: and the attempt's number (1, 2, ...), so a request log tells a retry from a second call. A
#: later attempt of a call whose earlier attempt was answered 200 proves the client never took
#: that answer (its read timed out or the connection broke while reading).
CALL_ID_HEADER = "x-cometapi-call-id"
CALL_ATTEMPT_HEADER = "x-cometapi-attempt"
#: The largest API answer read (raw and decompressed): ten 4K PNGs in base64 fit well below it.
MAX_RESPONSE_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class PreparedRequest:
    """A validated request, ready to send."""

    path: str
    model: str
    prompt: str
    params: dict[str, Any]
    json: dict[str, Any] | None = None
    data: dict[str, str] | None = None
    files: list[tuple[str, tuple[str, bytes, str]]] | None = None


def _check_file_size(source: Any, param: str) -> None:
    """Refuse a local file over its size rule from ``stat``, before any input is read."""
    if isinstance(source, (str, os.PathLike)):
        try:
            size = Path(source).stat().st_size
        except OSError:
            return  # reading it says why
        check_edit_size(param, size, str(source))


def _read_image(source: ImageLike | IO[bytes], param: str) -> tuple[bytes, str]:
    """Read an input image into bytes and a filename."""
    given = given_image(source, param)
    if given is not None:
        return given.data, param
    if isinstance(source, (bytes, bytearray)):
        return bytes(source), param
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)  # its size rule was checked before any input was read
        return read_path(path, MAX_IMAGE_BYTES, param), path.name
    if hasattr(source, "read"):
        data = source.read()
        if not isinstance(data, bytes):
            raise ValidationError(param, "file objects must be opened in binary mode ('rb')")
        return data, Path(getattr(source, "name", param) or param).name
    raise ValidationError(param, "must be bytes, a path or a binary file object", type(source))


def _drop_none(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


class ClientCore:
    """What the sync and async clients share: building, parsing, errors and retry decisions."""

    def __init__(
        self,
        api_key: Any,
        base_url: str,
        max_retries: int,
        prices: Mapping[str, ModelPrice] | None,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
    ) -> None:
        if api_key is not None and hasattr(api_key, "get_secret_value"):
            api_key = api_key.get_secret_value()
        if not api_key and os.environ.get("COMETAPI_KEY", "").strip():
            # The worker's own COMETAPI_KEY goes only to hosts the worker allows (checked before
            # the key itself, so a refused host never depends on the key's contents).
            check_base_url(base_url)
        self._api_key = resolve_api_key(api_key)
        self.read_timeout = read_timeout
        self.base_url = base_url.rstrip("/")
        if max_retries < 0:
            raise ValidationError("max_retries", "must be 0 or more", max_retries)
        self.max_retries = max_retries
        self.prices = dict(prices or {})

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r})"

    @property
    def auth_headers(self) -> dict[str, str]:
        """Headers for API calls (never sent to image download URLs)."""
        return {"Authorization": f"Bearer {self._api_key}"}

    # -- building -----------------------------------------------------------------------------

    def prepare_generate(self, prompt: str, **options: Any) -> PreparedRequest:
        """Validate and build a ``POST /images/generations`` request."""
        params = _drop_none({**request_defaults(), **options})
        validate_params(prompt=prompt, **_validated_subset(params))
        body = {"prompt": prompt, **params}
        return PreparedRequest("/images/generations", params["model"], prompt, params, json=body)

    def prepare_edit(
        self,
        prompt: str,
        image: ImageLike | IO[bytes] | Sequence[ImageLike | IO[bytes]],
        mask: ImageLike | IO[bytes] | None,
        **options: Any,
    ) -> PreparedRequest:
        """Validate and build a multipart ``POST /images/edits`` request."""
        params = _drop_none({**request_defaults(), **options})
        validate_params(prompt=prompt, **_validated_subset(params))
        sources = list(image) if isinstance(image, (list, tuple)) else [image]
        check_edit_count(len(sources))  # count, then read
        many = len(sources) > 1
        names = [f"image[{i}]" if many else "image" for i in range(len(sources))]
        for source, name in [*zip(sources, names, strict=True), (mask, "mask")]:
            _check_file_size(source, name)
        images = [_read_image(s, name) for s, name in zip(sources, names, strict=True)]
        mask_data = _read_image(mask, "mask") if mask is not None else None
        infos = validate_edit_images([d for d, _ in images], mask_data[0] if mask_data else None)
        field = "image[]" if many else "image"
        files = [
            (field, (_filename(name, info.format), data, f"image/{info.format}"))
            for (data, name), info in zip(images, infos, strict=True)
        ]
        if mask_data:
            files.append(("mask", (_filename(mask_data[1], "png"), mask_data[0], "image/png")))
        record = {
            **params,
            "image_sha256": [hashlib.sha256(d).hexdigest() for d, _ in images],
        }
        if mask_data:
            record["mask_sha256"] = hashlib.sha256(mask_data[0]).hexdigest()
        data = {"prompt": prompt, **{k: str(v) for k, v in params.items()}}
        return PreparedRequest(
            "/images/edits", params["model"], prompt, record, data=data, files=files
        )

    # -- the exchange (sans I/O) ----------------------------------------------------------------

    def exchange(self, prepared: PreparedRequest) -> Generator[tuple[str, Any], Any, ImageResult]:
        """The whole request/retry/download conversation, without doing any I/O itself.

        It yields ``("post", request_kwargs)``, ``("get", url)`` or ``("sleep", seconds)``; the
        driver (sync or async) performs the step and sends back the ``httpx.Response`` or throws
        the ``httpx.HTTPError`` in. Keeping every decision here is what makes the two clients
        behave identically.
        """
        retries = 0
        call_id = uuid.uuid4().hex
        while True:
            try:
                response = yield "post", self.request_kwargs(prepared, call_id, retries + 1)
                body = check_response(response, self._api_key)
                break
            except httpx.HTTPError as exc:
                error = self.wrap_transport_error(exc)
            except CometAPIError as exc:
                error = exc
            delay = self.retry_delay(error, retries)
            if delay is None:
                raise error
            self.log_retry(error, delay, retries)
            yield "sleep", delay
            retries += 1
        # The images are paid for now: a failed download must never send the request again.
        blobs = []
        for source in image_sources(body, self.base_url):
            blobs.append(
                source if isinstance(source, bytes) else (yield from self._download(source))
            )
        return build_result(
            prepared, body, blobs, response, retries + 1, self.prices, self.base_url
        )

    def _download(self, url: str) -> Generator[tuple[str, Any], Any, bytes]:
        for attempt in range(DOWNLOAD_ATTEMPTS):
            try:
                response = yield "get", url
                return self.downloaded(response)
            except httpx.HTTPError as exc:
                if attempt + 1 == DOWNLOAD_ATTEMPTS:
                    raise self.download_error(url, exc) from None
            yield "sleep", BACKOFF_BASE_S * 2**attempt
        raise AssertionError("unreachable")

    def request_kwargs(
        self, prepared: PreparedRequest, call_id: str | None = None, attempt: int = 1
    ) -> dict[str, Any]:
        """Keyword arguments of ``httpx.Client.post`` for a prepared request.

        Args:
            prepared: The request.
            call_id: The client call's id (:data:`CALL_ID_HEADER`); none sent when ``None``.
            attempt: The attempt's number within the call (:data:`CALL_ATTEMPT_HEADER`).

        Returns:
            ``url``, ``headers``, ``json``, ``data`` and ``files``.
        """
        headers = self.auth_headers
        if call_id is not None:
            headers = {**headers, CALL_ID_HEADER: call_id, CALL_ATTEMPT_HEADER: str(attempt)}
        return {
            "url": self.base_url + prepared.path,
            "headers": headers,
            "json": prepared.json,
            "data": prepared.data,
            "files": prepared.files,
        }

    # -- errors and retries -------------------------------------------------------------------

    def wrap_transport_error(self, exc: httpx.HTTPError) -> CometAPIError:
        """Turn an httpx transport error into ours (no key, a hint about what to do)."""
        if isinstance(exc, httpx.TimeoutException):
            return APITimeoutError(
                f"No answer from {self.base_url} within the read timeout ({self.read_timeout} s). "
                "High quality and 4K images can take minutes: raise read_timeout on the "
                "CometAPICredentials block if this repeats."
            )
        return APIConnectionError(
            f"Could not reach {self.base_url}: "
            f"{redact(str(exc) or type(exc).__name__, self._api_key)}. "
            "Check the network and the base URL."
        )

    def retry_delay(self, error: CometAPIError, retries_taken: int) -> float | None:
        """Seconds to wait before the next attempt, or ``None`` if the error must be raised.

        Retries only what can succeed (see :func:`prefect_cometapi.errors.is_retryable`), at most
        ``max_retries`` times; honours ``retry-after-ms``/``retry-after`` up to 120 s, otherwise
        exponential backoff 0.5, 1, 2, 4, 8 s with 0-25 % jitter.
        """
        if not error.retryable or retries_taken >= self.max_retries:
            return None
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None and retry_after > MAX_RETRY_AFTER_S:
            return None
        if retry_after is not None and retry_after > 0:
            return retry_after
        return min(BACKOFF_BASE_S * 2**retries_taken, BACKOFF_MAX_S) * (1 - 0.25 * random.random())

    def log_retry(self, error: CometAPIError, delay: float, retries_taken: int) -> None:
        """Log one retry at WARNING (no key, no prompt)."""
        logger.warning(
            "CometAPI request failed (%s: %s); retry %d/%d in %.2f s",
            type(error).__name__,
            str(error)[:200],
            retries_taken + 1,
            self.max_retries,
            delay,
        )

    def downloaded(self, response: httpx.Response) -> bytes:
        """The bytes of an image download (capped while reading by the driver, see
        :class:`BodyReader`), raising ``httpx.HTTPStatusError`` on an error status."""
        response.raise_for_status()
        return response.content

    def download_error(self, url: str, exc: httpx.HTTPError) -> CometAPIError:
        """The error for an image URL that could not be fetched (not retried: it is paid for)."""
        return ImageDownloadError(
            f"The images were generated (and billed) but {url.split('?')[0]} could not be "
            f"downloaded: {redact(str(exc), self._api_key)}. The URL may have expired."
        )


def _validated_subset(params: dict[str, Any]) -> dict[str, Any]:
    return {k: params[k] for k in validated_names() if k in params}


def _filename(name: str, fmt: str) -> str:
    stem = Path(name).stem or "image"
    return f"{stem}.{'jpg' if fmt == 'jpeg' else fmt}"


def build_result(
    prepared: PreparedRequest,
    body: dict[str, Any],
    blobs: list[bytes],
    response: httpx.Response,
    attempts: int,
    prices: Mapping[str, ModelPrice],
    where: str,
) -> ImageResult:
    """Assemble the typed result from the parsed body and the image bytes.

    Args:
        prepared: The request sent.
        body: The checked JSON body.
        blobs: Each image's bytes.
        response: The answer (for its request id).
        attempts: How many attempts the call took.
        prices: The price table for the cost.
        where: The base URL, for error messages.

    Returns:
        The result.
    """
    check_usage(body.get("usage"), where)
    usage = Usage.from_api(body.get("usage"))
    total = cost_usd(usage, prepared.model, prices)
    share = None if total is None else round(total / len(blobs), 6)
    images = []
    for i, (blob, item) in enumerate(zip(blobs, body["data"], strict=True)):
        try:
            info = inspect_image(blob, f"data[{i}]")
        except ValidationError as exc:
            raise UnexpectedResponseError(200, exc.rule, where) from None
        images.append(
            GeneratedImage(
                data=blob,
                format=info.format,
                width=info.width,
                height=info.height,
                sha256=hashlib.sha256(blob).hexdigest(),
                model=prepared.model,
                prompt=prepared.prompt,
                params=prepared.params,
                index=i,
                usage=usage,
                cost_usd=share,
                revised_prompt=(item or {}).get("revised_prompt")
                if isinstance(item, dict)
                else None,
            )
        )
    created = body.get("created")
    return ImageResult(
        images=images,
        model=prepared.model,
        params=prepared.params,
        usage=usage,
        cost_usd=total,
        created=created if isinstance(created, int) else None,
        request_id=response.headers.get("x-request-id"),
        attempts=attempts,
    )
