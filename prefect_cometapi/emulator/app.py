"""The Starlette application: the two image endpoints and the models list, plus the
``/_emulator/*`` control API.

The control API (state, reset, config, script) changes what the emulator answers and shows what
it received, so it is off unless the app is built with ``control=True`` (the ``--control`` flag
of ``prefect-cometapi emulator``). Its POST endpoints accept only ``application/json`` bodies
(a web page cannot send those to another origin without a CORS preflight, which the emulator
never grants), and no answer ever contains the configured API keys.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from prefect_cometapi.emulator.faults import error_response
from prefect_cometapi.emulator.images import handle_image_request, handle_models_request
from prefect_cometapi.emulator.state import EmulatorState

__all__ = ["create_app"]


class _DropNoiseFilter(logging.Filter):
    """Hide uvicorn's complaint about the responses the "drop" fault leaves incomplete."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "returned without completing response" not in record.getMessage()


_DROP_FILTER = _DropNoiseFilter()


async def _generations(request: Request) -> Response:
    return await handle_image_request(request, "generations")


async def _edits(request: Request) -> Response:
    return await handle_image_request(request, "edits")


_JSON_ONLY = (
    "the control endpoints accept only Content-Type: application/json (send {} for no fields)"
)


_LOCAL_NAMES = frozenset({"127.0.0.1", "localhost", "[::1]"})
_FOREIGN_HOST = (
    "the control endpoints answer only Host: 127.0.0.1:<port> or localhost:<port> (a page on "
    "another site must not reach them through a name it points at this machine)"
)


def _is_local_host(request: Request) -> bool:
    """Whether the ``Host`` header names this machine's loopback and this server's port.

    A browser sends the name of the page's site as ``Host``, so checking it stops DNS
    rebinding: a site whose name is made to resolve to 127.0.0.1 cannot drive the emulator.
    """
    host = request.headers.get("host", "").strip().lower()
    name, _, port = host.rpartition(":")
    server = request.scope.get("server") or (None, None)
    return name in _LOCAL_NAMES and port.isdigit() and int(port) == server[1]


def _control(handler: Any) -> Any:
    """A control endpoint that refuses requests whose ``Host`` is not the loopback (403)."""

    async def guarded(request: Request) -> Response:
        if not _is_local_host(request):
            return error_response(403, _FOREIGN_HOST, "invalid_request_error")
        return await handler(request)

    return guarded


def _is_json(request: Request) -> bool:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return kind == "application/json"


async def _read_json(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        return {}
    return json.loads(raw)


async def _state(request: Request) -> Response:
    return JSONResponse(request.app.state.emulator.snapshot())


async def _health(request: Request) -> Response:
    return JSONResponse({"ok": True})


async def _reset(request: Request) -> Response:
    if not _is_json(request):
        return error_response(415, _JSON_ONLY, "invalid_request_error")
    request.app.state.emulator.reset()
    return JSONResponse({"ok": True})


async def _config(request: Request) -> Response:
    state: EmulatorState = request.app.state.emulator
    if not _is_json(request):
        return error_response(415, _JSON_ONLY, "invalid_request_error")
    try:
        changes = await _read_json(request)
        if not isinstance(changes, dict):
            raise TypeError("the body must be a JSON object of EmulatorConfig fields")
        state.configure(**changes)
    except (TypeError, ValueError) as exc:
        return error_response(400, str(exc), "invalid_request_error")
    return JSONResponse(state.config.to_json())


async def _script(request: Request) -> Response:
    state: EmulatorState = request.app.state.emulator
    if not _is_json(request):
        return error_response(415, _JSON_ONLY, "invalid_request_error")
    try:
        body = await _read_json(request)
        faults = body.get("faults") if isinstance(body, dict) else None
        if not isinstance(faults, list):
            raise TypeError('the body must be {"faults": [...]}')
        state.script(str(f) if f is not None else "" for f in faults)
    except (TypeError, ValueError) as exc:
        return error_response(400, str(exc), "invalid_request_error")
    return JSONResponse({"ok": True, "queued": len(faults)})


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    return error_response(
        status, f"Invalid URL ({request.method} {request.url.path})", "invalid_request_error"
    )


def create_app(state: EmulatorState, control: bool = False) -> Starlette:
    """Build the emulator's ASGI app around a state.

    Args:
        state: The shared configuration, log and counters.
        control: Serve the ``/_emulator/state|reset|config|script`` control endpoints (off by
            default: anyone who can reach the port could otherwise reconfigure the emulator);
            they answer only a ``Host`` of ``127.0.0.1``/``localhost``/``[::1]`` and this
            server's port (DNS rebinding from a browser page is refused with 403).

    Returns:
        The Starlette app (``app.state.emulator`` is ``state``).
    """
    uvicorn_log = logging.getLogger("uvicorn.error")
    if _DROP_FILTER not in uvicorn_log.filters:
        uvicorn_log.addFilter(_DROP_FILTER)
    routes = [
        Route("/v1/images/generations", _generations, methods=["POST"]),
        Route("/v1/images/edits", _edits, methods=["POST"]),
        Route("/v1/models", handle_models_request, methods=["GET"]),
        Route("/_emulator/health", _health, methods=["GET"]),
    ]
    if control:
        routes += [
            Route("/_emulator/state", _control(_state), methods=["GET"]),
            Route("/_emulator/reset", _control(_reset), methods=["POST"]),
            Route("/_emulator/config", _control(_config), methods=["POST"]),
            Route("/_emulator/script", _control(_script), methods=["POST"]),
        ]
    app = Starlette(
        routes=routes,
        exception_handlers={404: _http_error, 405: _http_error},
    )
    app.state.emulator = state
    return app
