"""The sans-I/O exchange with the Images API that both clients drive.

:class:`ClientCore` holds everything that must not drift between the sync and the async client:
request building and validation, response parsing, error mapping and the retry decision. Its
:meth:`ClientCore.exchange` generator yields what to do (``post``, ``get``, ``sleep``) and
receives the answers; it never does I/O itself.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import logging
import math
import os
import random
import time
import uuid
import zlib
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Union

import httpx

from prefect_cometapi.allowlist import check_base_url
from prefect_cometapi.decoding import BodyTooLarge, BoundedDecoder, UnsupportedEncoding
from prefect_cometapi.errors import (
    APIConnectionError,
    APITimeoutError,
    CometAPIError,
    ImageDownloadError,
    MissingAPIKeyError,
    UnexpectedResponseError,
    ValidationError,
    error_class_for,
    redact,
)
from prefect_cometapi.image_params import request_defaults, validated_names
from prefect_cometapi.models import GeneratedImage, ImageResult, Usage
from prefect_cometapi.pricing import ModelPrice, cost_usd
from prefect_cometapi.validation import (
    MAX_IMAGE_BYTES,
    inspect_image,
    validate_edit_images,
    validate_params,
)

__all__ = [
    "BACKOFF_BASE_S",
    "BACKOFF_MAX_S",
    "CALL_ATTEMPT_HEADER",
    "CALL_ID_HEADER",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_READ_TIMEOUT",
    "DOWNLOAD_ATTEMPTS",
    "MAX_DOWNLOAD_BYTES",
    "MAX_RESPONSE_BYTES",
    "MAX_RETRY_AFTER_S",
    "MAX_USAGE_TOKENS",
    "BodyReader",
    "ClientCore",
    "ImageInput",
    "PreparedRequest",
    "check_api_key",
    "resolve_api_key",
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
#: More tokens than any image request can use: a ``usage`` number above it is refused.
MAX_USAGE_TOKENS = 10_000_000

ImageInput = Union[bytes, bytearray, str, os.PathLike, IO[bytes]]  # noqa: UP007 (runtime alias, py3.10)
"""An input image: its bytes, a local path, or a binary file object."""


def resolve_api_key(api_key: Any = None) -> str:
    """Return the API key from the argument (a str or ``SecretStr``) or ``COMETAPI_KEY``.

    Args:
        api_key: A key, a pydantic ``SecretStr``, or ``None``.

    Returns:
        The key.

    Raises:
        MissingAPIKeyError: If neither is set.
    """
    if api_key is not None and hasattr(api_key, "get_secret_value"):
        api_key = api_key.get_secret_value()
    from_env = not api_key
    key = (api_key or os.environ.get("COMETAPI_KEY") or "").strip()
    if not key:
        raise MissingAPIKeyError()
    check_api_key(key, "COMETAPI_KEY" if from_env else "api_key")
    return key


def check_api_key(key: str, param: str = "api_key") -> None:
    """Refuse a key that cannot be sent in an HTTP header, without ever showing the key.

    A key pasted with an invisible character (a zero-width space, a non-breaking space), a
    non-ASCII look-alike or a line break would otherwise fail deep inside the HTTP library with
    an error whose text holds the whole key.

    Args:
        key: The key, already stripped of surrounding whitespace.
        param: What to call it in the error (``api_key`` or ``COMETAPI_KEY``).

    Raises:
        ValidationError: Naming the position and kind of the first bad character (never the
            key itself).
    """
    for position, char in enumerate(key, start=1):
        if not 0x21 <= ord(char) <= 0x7E:
            kind = (
                "a line break"
                if char in "\r\n"
                else "a space"
                if char.isspace() and ord(char) < 0x80
                else f"the non-printable or non-ASCII character U+{ord(char):04X}"
            )
            raise ValidationError(
                param,
                f"the API key has {kind} at position {position} of {len(key)}, which cannot be "
                "sent in an HTTP header (often a copy-paste artefact); paste the key again",
            )


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


def _read_image(source: ImageInput, param: str) -> tuple[bytes, str]:
    """Read an input image into bytes and a filename."""
    if isinstance(source, (bytes, bytearray)):
        return bytes(source), param
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            size = path.stat().st_size
            if size >= MAX_IMAGE_BYTES:
                raise ValidationError(
                    param, f"must be smaller than 50 MB; {path} has {size:,} bytes"
                )
            return path.read_bytes(), path.name
        except OSError as exc:
            raise ValidationError(param, f"could not be read from {path}: {exc.strerror}") from None
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
        image: ImageInput | Sequence[ImageInput],
        mask: ImageInput | None,
        **options: Any,
    ) -> PreparedRequest:
        """Validate and build a multipart ``POST /images/edits`` request."""
        params = _drop_none({**request_defaults(), **options})
        validate_params(prompt=prompt, **_validated_subset(params))
        sources = list(image) if isinstance(image, (list, tuple)) else [image]
        many = len(sources) > 1
        images = [_read_image(s, f"image[{i}]" if many else "image") for i, s in enumerate(sources)]
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
                body = self.check_response(response)
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
        for source in self.image_sources(body):
            blobs.append(
                source if isinstance(source, bytes) else (yield from self._download(source))
            )
        return self.build_result(prepared, body, blobs, response, retries + 1)

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

    def check_response(self, response: httpx.Response) -> dict[str, Any]:
        """Return the JSON body of a successful response or raise the matching error."""
        status = response.status_code
        url = redact(str(response.request.url), self._api_key)
        if 300 <= status < 400:
            where = response.headers.get("location", "elsewhere")
            raise UnexpectedResponseError(status, f"a redirect to {where}", url)
        try:
            body = response.json()
        except ValueError:
            body = None
        except RecursionError:
            raise UnexpectedResponseError(status, "JSON nested too deeply", url) from None
        if not isinstance(body, dict):
            if status >= 500 or status in (408, 409, 429):
                cls = error_class_for(status, None)
                raise cls(
                    status,
                    f"The gateway answered HTTP {status} without a JSON body.",
                    request_id=response.headers.get("x-request-id"),
                    retry_after=_retry_after(response.headers),
                )
            kind = response.headers.get("content-type", "").split(";")[0] or "an empty body"
            raise UnexpectedResponseError(status, kind, url)
        if status >= 400:
            err = body.get("error") if isinstance(body.get("error"), dict) else {}
            code = err.get("code") or None
            message = redact(str(err.get("message") or f"HTTP {status}"), self._api_key)
            raise error_class_for(status, code)(
                status,
                message,
                code=code,
                param=err.get("param") or None,
                error_type=err.get("type") or None,
                request_id=response.headers.get("x-request-id"),
                retry_after=_retry_after(response.headers),
                body=_redact_obj(body, self._api_key),
            )
        if not isinstance(body.get("data"), list) or not body["data"]:
            raise UnexpectedResponseError(status, "JSON without a 'data' list of images", url)
        return body

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

    # -- parsing ------------------------------------------------------------------------------

    def image_sources(self, body: dict[str, Any]) -> list[bytes | str]:
        """Each ``data[]`` entry as decoded ``b64_json`` bytes, or the ``url`` to download."""
        sources: list[bytes | str] = []
        for i, item in enumerate(body["data"]):
            item = item if isinstance(item, dict) else {}
            if item.get("b64_json"):
                try:
                    sources.append(base64.b64decode(item["b64_json"], validate=False))
                except (ValueError, TypeError):
                    raise UnexpectedResponseError(
                        200, f"an undecodable data[{i}].b64_json", self.base_url
                    ) from None
            elif isinstance(item.get("url"), str) and item["url"].startswith(
                ("https://", "http://")
            ):
                sources.append(item["url"])
            else:
                raise UnexpectedResponseError(
                    200, f"data[{i}] with neither b64_json nor url", self.base_url
                )
        return sources

    def check_usage(self, usage: Any) -> None:
        """Refuse ``usage`` numbers no real answer has: negative, non-finite, fractional or absurd.

        Raises:
            UnexpectedResponseError: Naming the field (the cost would be meaningless).
        """
        if not isinstance(usage, dict):
            return
        fields = {k: usage.get(k) for k in ("input_tokens", "output_tokens", "total_tokens")}
        details = usage.get("input_tokens_details")
        if isinstance(details, dict):
            for key in ("text_tokens", "image_tokens"):
                fields[f"input_tokens_details.{key}"] = details.get(key)
        for name, value in fields.items():
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                bad = True
            else:
                bad = not math.isfinite(value) or value != int(value)
                bad = bad or not 0 <= value <= MAX_USAGE_TOKENS
            if bad:
                raise UnexpectedResponseError(
                    200, f"an impossible usage.{name} ({str(value)[:40]})", self.base_url
                )

    def build_result(
        self,
        prepared: PreparedRequest,
        body: dict[str, Any],
        blobs: list[bytes],
        response: httpx.Response,
        attempts: int,
    ) -> ImageResult:
        """Assemble the typed result from the parsed body and the image bytes."""
        self.check_usage(body.get("usage"))
        usage = Usage.from_api(body.get("usage"))
        total = cost_usd(usage, prepared.model, self.prices)
        share = None if total is None else round(total / len(blobs), 6)
        images = []
        for i, (blob, item) in enumerate(zip(blobs, body["data"], strict=True)):
            try:
                info = inspect_image(blob, f"data[{i}]")
            except ValidationError as exc:
                raise UnexpectedResponseError(200, exc.rule, self.base_url) from None
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


def _validated_subset(params: dict[str, Any]) -> dict[str, Any]:
    return {k: params[k] for k in validated_names() if k in params}


def _filename(name: str, fmt: str) -> str:
    stem = Path(name).stem or "image"
    return f"{stem}.{'jpg' if fmt == 'jpeg' else fmt}"


def _retry_after(headers: httpx.Headers) -> float | None:
    """Seconds from ``retry-after-ms``, else ``retry-after`` (seconds or an HTTP date)."""
    value = headers.get("retry-after-ms")
    if value:
        try:
            seconds = float(value) / 1000
            return seconds if math.isfinite(seconds) else None
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
        return seconds if math.isfinite(seconds) else None
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _redact_obj(obj: Any, secret: str) -> Any:
    if isinstance(obj, dict):
        return {k: _redact_obj(v, secret) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_redact_obj(v, secret) for v in obj]
    return redact(obj, secret) if isinstance(obj, str) else obj


class BodyReader:
    """Collects a streamed body, enforcing a byte cap (raw and decompressed) and a deadline.

    The drivers feed it the raw stream chunk by chunk (``iter_raw``); it decodes with
    :class:`~prefect_cometapi.decoding.BoundedDecoder`, which never inflates past the cap. So
    a trickling server, an endless chunked body or a compression bomb ends in a typed error
    while it is being read, holding at most the cap in memory.

    Args:
        response: The streamed response.
        cap: The most bytes accepted, on the wire and after decompression.
        deadline: ``time.monotonic()`` by which the whole body must have arrived.
        where: The base URL, for the error message.
    """

    def __init__(self, response: httpx.Response, cap: int, deadline: float, where: str) -> None:
        self.response = response
        self.cap = cap
        self.deadline = deadline
        self.where = where
        self.chunks: list[bytes] = []
        try:
            self.decoder = BoundedDecoder(response.headers.get("content-encoding"), cap)
        except UnsupportedEncoding as exc:
            raise UnexpectedResponseError(response.status_code, f"{exc}", where) from None

    def _too_large(self) -> UnexpectedResponseError:
        return UnexpectedResponseError(
            self.response.status_code,
            f"a body over {self.cap // (1024 * 1024)} MB (stopped reading)",
            self.where,
        )

    def add(self, chunk: bytes) -> None:
        """Take one raw chunk (as received, still compressed).

        Raises:
            UnexpectedResponseError: Over the cap (raw or decoded), or not valid for its
                ``Content-Encoding``.
            httpx.ReadTimeout: Past the deadline (the exchange treats it as a timeout).
        """
        if self.response.num_bytes_downloaded > self.cap:
            raise self._too_large()
        try:
            self.chunks.extend(self.decoder.decode(chunk))
        except BodyTooLarge:
            self.chunks.clear()
            raise self._too_large() from None
        except zlib.error:
            self.chunks.clear()
            raise UnexpectedResponseError(
                self.response.status_code,
                "a body that is not valid for its Content-Encoding",
                self.where,
            ) from None
        if time.monotonic() > self.deadline:
            raise httpx.ReadTimeout(
                "the answer took longer than the attempt's total deadline",
                request=self.response.request,
            )

    def add_decoded(self, body: bytes) -> None:
        """Take a body an ``httpx`` event hook already read (and decoded) in full.

        Raises:
            UnexpectedResponseError: Over the cap.
        """
        if len(body) > self.cap:
            raise self._too_large()
        self.chunks.append(body)

    def finished(self) -> httpx.Response:
        """The response with its whole (decoded) body in memory.

        Returns:
            A new ``httpx.Response`` with the same status, headers (without the encoding) and
            request.
        """
        dropped = ("content-encoding", "content-length", "transfer-encoding")
        headers = [
            (k, v) for k, v in self.response.headers.multi_items() if k.lower() not in dropped
        ]
        body = b"".join(self.chunks)
        self.chunks.clear()
        return httpx.Response(
            self.response.status_code, headers=headers, content=body, request=self.response.request
        )
