"""Reading the API's answers: status and error mapping, the images and ``usage`` they carry,
the Retry-After headers and the redaction of error bodies."""

from __future__ import annotations

import base64
import email.utils
import math
import time
from typing import Any

import httpx

from prefect_cometapi.errors import (
    UnexpectedResponseError,
    error_class_for,
    is_transient_status,
    redact,
)

__all__ = ["check_response", "check_usage", "image_sources"]

#: More tokens than any image request can use: a ``usage`` number above it is refused.
MAX_USAGE_TOKENS = 10_000_000


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


def check_response(response: httpx.Response, api_key: str) -> dict[str, Any]:
    """Return the JSON body of a successful response or raise the matching error.

    Args:
        response: The API's answer, its body read.
        api_key: The key, redacted from every message and body kept on the error.

    Returns:
        The JSON body, with a non-empty ``data`` list.

    Raises:
        APIStatusError: Its subclass for the status and the error code.
        UnexpectedResponseError: A redirect, a body that is not JSON, no ``data`` list.
    """
    status = response.status_code
    url = redact(str(response.request.url), api_key)
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
        if is_transient_status(status):
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
        message = redact(str(err.get("message") or f"HTTP {status}"), api_key)
        raise error_class_for(status, code)(
            status,
            message,
            code=code,
            param=err.get("param") or None,
            error_type=err.get("type") or None,
            request_id=response.headers.get("x-request-id"),
            retry_after=_retry_after(response.headers),
            body=_redact_obj(body, api_key),
        )
    if not isinstance(body.get("data"), list) or not body["data"]:
        raise UnexpectedResponseError(status, "JSON without a 'data' list of images", url)
    return body


def image_sources(body: dict[str, Any], where: str) -> list[bytes | str]:
    """Each ``data[]`` entry as decoded ``b64_json`` bytes, or the ``url`` to download.

    Args:
        body: The checked JSON body.
        where: The base URL, for error messages.

    Returns:
        Bytes or a URL per image.

    Raises:
        UnexpectedResponseError: An entry with neither, or undecodable base64.
    """
    sources: list[bytes | str] = []
    for i, item in enumerate(body["data"]):
        item = item if isinstance(item, dict) else {}
        if item.get("b64_json"):
            try:
                sources.append(base64.b64decode(item["b64_json"], validate=False))
            except (ValueError, TypeError):
                raise UnexpectedResponseError(
                    200, f"an undecodable data[{i}].b64_json", where
                ) from None
        elif isinstance(item.get("url"), str) and item["url"].startswith(("https://", "http://")):
            sources.append(item["url"])
        else:
            raise UnexpectedResponseError(200, f"data[{i}] with neither b64_json nor url", where)
    return sources


def check_usage(usage: Any, where: str) -> None:
    """Refuse ``usage`` numbers no real answer has: negative, non-finite, fractional or absurd.

    Args:
        usage: The answer's ``usage`` object.
        where: The base URL, for error messages.

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
                200, f"an impossible usage.{name} ({str(value)[:40]})", where
            )
