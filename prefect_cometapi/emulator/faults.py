"""Fault names and the responses the emulator sends for them (and for plain errors).

A fault comes from the ``X-Emulator-Fault`` request header, a ``[[fault:<name>]]`` marker in the
prompt, ``Emulator.script()`` or the random rates of the config, in that order of precedence.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.types import Receive, Scope, Send

__all__ = [
    "FAULTS",
    "FAULT_HEADER",
    "LATE_FAULTS",
    "DropResponse",
    "auth_error",
    "error_response",
    "fault_from_prompt",
    "fault_response",
    "new_request_id",
    "normalize_fault",
]

#: Every fault the emulator can inject.
FAULTS = frozenset(
    {
        "429",
        "insufficient_quota",
        "500",
        "500_invalid_request",
        "503",
        "524",
        "drop",
        "slow",
        "moderation",
        "html",
        "redirect",
        "401",
    }
)
#: Faults answered after validation (the others are answered before, like a gateway would).
LATE_FAULTS = frozenset({"slow", "moderation"})
FAULT_HEADER = "x-emulator-fault"
_MARKER = re.compile(r"\[\[fault:([A-Za-z0-9_]*)\]\]")


def normalize_fault(name: str | None) -> str | None:
    """Check a fault name; ``None``, ``""`` and ``"ok"`` mean no fault.

    Args:
        name: The fault name.

    Returns:
        The name, or ``None`` for no fault.

    Raises:
        ValueError: For an unknown name.
    """
    if name is None:
        return None
    name = str(name).strip().lower()
    if name in ("", "ok", "none"):
        return None
    if name not in FAULTS:
        raise ValueError(f"unknown emulator fault {name!r}; known: {', '.join(sorted(FAULTS))}")
    return name


def fault_from_prompt(prompt: Any) -> str | None:
    """The fault named by a ``[[fault:<name>]]`` marker in the prompt, if any.

    Args:
        prompt: The prompt (anything; only strings can carry a marker).

    Returns:
        The fault name (not yet checked), or ``None``.
    """
    if not isinstance(prompt, str):
        return None
    match = _MARKER.search(prompt)
    return match.group(1) if match else None


def new_request_id() -> str:
    """A fresh OpenAI-style request id."""
    return "req_" + uuid.uuid4().hex


def error_body(
    message: str, type_: str, param: str | None = None, code: str | None = None, **extra: Any
) -> dict[str, Any]:
    """OpenAI's error body ``{"error": {"message", "type", "param", "code", ...}}``.

    Args:
        message: Human-readable message.
        type_: Error type, e.g. ``invalid_request_error``.
        param: The offending parameter.
        code: Machine-readable code.
        **extra: More keys inside the error object (e.g. ``moderation_details``).

    Returns:
        The body.
    """
    return {"error": {"message": message, "type": type_, "param": param, "code": code, **extra}}


def error_response(
    status: int,
    message: str,
    type_: str,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """A JSON error response with OpenAI's body.

    Args:
        status: HTTP status.
        message: Message.
        type_: Error type.
        param: Offending parameter.
        code: Error code.
        headers: Extra response headers.
        **extra: More keys in the error object.

    Returns:
        The response.
    """
    return JSONResponse(
        error_body(message, type_, param, code, **extra), status_code=status, headers=headers
    )


def auth_error(message: str | None = None) -> JSONResponse:
    """401 ``invalid_api_key`` as OpenAI sends it (the key itself is never echoed).

    Args:
        message: Override of the message.

    Returns:
        The response.
    """
    return error_response(
        401,
        message
        or "Incorrect API key provided. You can find your API key at https://www.cometapi.com/.",
        "invalid_request_error",
        None,
        "invalid_api_key",
    )


class DropResponse(Response):
    """Announces a body with a ``content-length`` it never finishes, then closes the connection.

    The client sees a protocol/connection error, not an HTTP status.
    """

    def __init__(self) -> None:
        super().__init__(status_code=200)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Send the headers and a fragment of the body, then return without completing."""
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", b"65536"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b'{"created": 17', "more_body": True})
        # Returning now makes uvicorn close the transport mid-body.


_HTML_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>CometAPI - All AI Models in One API</title>
</head><body><h1>CometAPI</h1><p>One API for 500+ AI models.</p></body></html>
"""

_CLOUDFLARE_524 = """<!DOCTYPE html>
<html><head><title>api.cometapi.com | 524: A timeout occurred</title></head>
<body><h1>A timeout occurred</h1><span>Error code 524</span>
<p>The origin web server timed out responding to this request.</p>
<p>Cloudflare Ray ID: 0000000000000000</p></body></html>
"""


def fault_response(fault: str, retry_after_s: float, request_id: str) -> Response:
    """The response for an injected fault (not for ``slow``, which answers normally).

    Args:
        fault: A name from :data:`FAULTS`.
        retry_after_s: Seconds for ``retry-after``/``retry-after-ms`` (429 and 503).
        request_id: The request id (CometAPI embeds it in 500 messages).

    Returns:
        The response.

    Raises:
        ValueError: For ``slow`` or an unknown fault.
    """
    retry = {
        "retry-after": f"{retry_after_s:g}",
        "retry-after-ms": str(round(retry_after_s * 1000)),
    }
    if fault == "429":
        return error_response(
            429,
            "Rate limit reached for gpt-image-2 on images per min (IPM): Limit 5, Used 5, "
            f"Requested 1. Please try again in {retry_after_s:g}s.",
            "requests",
            None,
            "rate_limit_exceeded",
            headers=retry,
        )
    if fault == "insufficient_quota":
        return error_response(
            429,
            "You exceeded your current quota, please check your plan and billing details.",
            "insufficient_quota",
            None,
            "insufficient_quota",
        )
    if fault == "500":
        return error_response(
            500,
            "The server had an error while processing your request. Sorry about that!",
            "server_error",
        )
    if fault == "500_invalid_request":
        return error_response(
            500,
            f"Invalid request: the upstream rejected the request (request id: {request_id})",
            "comet_api_error",
            "",
            "invalid_request",
        )
    if fault == "503":
        return error_response(
            503,
            "The engine is currently overloaded, please try again later.",
            "server_error",
            None,
            "server_is_overloaded",
            headers=retry,
        )
    if fault == "524":
        return HTMLResponse(_CLOUDFLARE_524, status_code=524)
    if fault == "drop":
        return DropResponse()
    if fault == "moderation":
        return error_response(
            400,
            "Your request was rejected by the safety system. If you believe this is an error, "
            f"contact us at help.openai.com and include the request ID {request_id}. "
            "safety_violations=[violence].",
            "image_generation_user_error",
            None,
            "moderation_blocked",
            moderation_details={"moderation_stage": "input", "categories": ["violence"]},
        )
    if fault == "html":
        return HTMLResponse(_HTML_PAGE, status_code=200)
    if fault == "redirect":
        # Relative, so a client that follows it stays on loopback (a wrong base URL on the real
        # gateway redirects to the marketing site).
        return Response(status_code=301, headers={"location": "/"})
    if fault == "401":
        return auth_error()
    raise ValueError(f"fault {fault!r} has no fixed response")
