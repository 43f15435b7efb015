"""The image endpoints (parse, authenticate, inject faults, validate as the API does, draw) and
the free models list."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from prefect_cometapi.billing.prices import (
    estimate_input_image_tokens,
    estimate_output_tokens,
    estimate_text_tokens,
)
from prefect_cometapi.client.rules import (
    INPUT_FIDELITY_MODELS,
    base_model,
    parse_size,
    validate_edit_images,
    validate_params,
)
from prefect_cometapi.emulator import drawing
from prefect_cometapi.emulator.faults import (
    FAULT_HEADER,
    LATE_FAULTS,
    DropResponse,
    auth_error,
    error_response,
    fault_from_prompt,
    fault_response,
    new_request_id,
    normalize_fault,
)
from prefect_cometapi.emulator.multipart import MultipartError, parse_multipart
from prefect_cometapi.emulator.state import EmulatorConfig, EmulatorState, RequestRecord
from prefect_cometapi.errors import ValidationError

__all__ = ["handle_image_request", "handle_models_request"]

logger = logging.getLogger(__name__)

#: Model names the emulator serves; anything else is a 404 ``model_not_found``.
KNOWN_MODELS = frozenset(
    {"gpt-image-2", "gpt-image-2-2026-04-21", "gpt-image-1", "gpt-image-1-mini", "gpt-image-1.5"}
)
#: The model each endpoint uses when the request names none (what OpenAI documents; dall-e-2 is
#: retired, so a generation without ``model`` gets a 404).
DEFAULT_MODELS = {"generations": "dall-e-2", "edits": "gpt-image-1.5"}
IMAGE_FIELDS = ("image", "image[]")
_INT = re.compile(r"^[+-]?\d+$")
_NO_REQUEST_SENT = " No request was sent."
_BAD_JSON = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using "
    "your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was "
    "not valid JSON.)"
)


class _Reject(Exception):
    """Internal: stop handling and answer with this response."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


def _invalid(message: str, param: str | None = None, code: str | None = "invalid_value") -> _Reject:
    return _Reject(error_response(400, message, "invalid_request_error", param, code))


@dataclass
class _Parsed:
    params: dict[str, Any] = field(default_factory=dict)
    images: list[bytes] = field(default_factory=list)
    mask: bytes | None = None
    error: _Reject | None = None


async def _parse_json(request: Request) -> _Parsed:
    raw = await request.body()
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return _Parsed(error=_invalid(_BAD_JSON, code=None))
    if not isinstance(body, dict):
        return _Parsed(error=_invalid(_BAD_JSON + " The body must be a JSON object.", code=None))
    return _Parsed(params=body)


def _file_meta(part: Any) -> dict[str, Any]:
    return {
        "filename": part.filename,
        "content_type": part.content_type,
        "size": len(part.data),
        "sha256": hashlib.sha256(part.data).hexdigest(),
    }


async def _parse_edit(request: Request, record: RequestRecord) -> _Parsed:
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() == "application/json":
        parsed = await _parse_json(request)
        if parsed.error is None:
            parsed.error = _invalid(
                "The emulator takes edits as multipart/form-data with 'image' (or repeated "
                "'image[]') file parts, as CometAPI documents; JSON edits are not supported.",
                "image",
                "unsupported_content_type",
            )
        return parsed
    try:
        parts = parse_multipart(await request.body(), content_type)
    except MultipartError as exc:
        return _Parsed(error=_invalid(f"Could not parse the multipart form: {exc}.", code=None))
    parsed = _Parsed()
    for part in parts:
        if part.is_file:
            record.files.setdefault(part.name, []).append(_file_meta(part))
            if part.name in IMAGE_FIELDS:
                parsed.images.append(part.data)
            elif part.name == "mask":
                if parsed.mask is not None:
                    parsed.error = parsed.error or _invalid("Only one 'mask' is allowed.", "mask")
                parsed.mask = part.data
        else:
            parsed.params[part.name] = part.data.decode("utf-8", "replace")
            if part.name in (*IMAGE_FIELDS, "mask"):
                parsed.error = parsed.error or _invalid(
                    f"'{part.name}' must be sent as a file part, not a text field.", "image"
                )
    return parsed


def _authenticate(request: Request, state: EmulatorState) -> None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise _Reject(
            auth_error(
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
            )
        )
    keys = state.config.api_keys
    if keys is not None and token not in keys:
        raise _Reject(auth_error())


def _choose_fault(request: Request, params: dict[str, Any], state: EmulatorState) -> str | None:
    explicit = request.headers.get(FAULT_HEADER)
    if explicit is None:
        explicit = fault_from_prompt(params.get("prompt"))
    if explicit is not None:
        try:
            return normalize_fault(explicit)
        except ValueError as exc:
            raise _invalid(str(exc), None, "unknown_emulator_fault") from None
    return state.draw_fault()


def _as_int(value: Any, multipart: bool) -> Any:
    """Multipart fields arrive as strings: turn int-strings into ints, leave the rest to fail."""
    if multipart and isinstance(value, str) and _INT.match(value.strip()):
        return int(value)
    return value


@dataclass(frozen=True)
class _Job:
    model: str
    prompt: str
    n: int
    width: int
    height: int
    output_format: str
    compression: int | None
    transparent: bool
    quality: str


def _validate(endpoint: str, parsed: _Parsed) -> _Job:
    """Check the request as the API does; raise :class:`_Reject` with its error response."""
    p = {k: v for k, v in parsed.params.items() if v is not None}
    multipart = endpoint == "edits"
    model = p.get("model", DEFAULT_MODELS[endpoint])
    if not isinstance(model, str) or model not in KNOWN_MODELS:
        raise _Reject(
            error_response(
                404,
                f"The model `{model}` does not exist or you do not have access to it.",
                "invalid_request_error",
                None,
                "model_not_found",
            )
        )
    if str(p.get("stream", "false")).lower() not in ("false", "0"):
        raise _invalid("Streaming is not supported for image models on CometAPI.", "stream")
    input_fidelity = p.get("input_fidelity") if endpoint == "edits" else None
    if input_fidelity is not None and base_model(model) not in INPUT_FIDELITY_MODELS:
        raise _Reject(
            error_response(
                400,
                f"The model '{model}' does not support the 'input_fidelity' parameter.",
                "image_generation_user_error",
                "input_fidelity",
                "invalid_input_fidelity_model",
            )
        )
    n = _as_int(p.get("n", 1), multipart)
    compression = _as_int(p.get("output_compression"), multipart)
    size = p.get("size", "auto")
    try:
        validate_params(
            model=model,
            prompt=p.get("prompt"),
            n=n,
            size=size,
            quality=p.get("quality"),
            output_format=p.get("output_format"),
            output_compression=compression,
            background=p.get("background"),
            moderation=p.get("moderation"),
            input_fidelity=input_fidelity,
        )
        infos = validate_edit_images(parsed.images, parsed.mask) if multipart else []
    except ValidationError as err:
        message = str(err).removesuffix(_NO_REQUEST_SENT)
        if err.param == "size" and "divisible by 16" in err.rule:
            message = f"Invalid size '{size}'. Width and height must both be divisible by 16."
        raise _invalid(message, err.param) from None
    dims = parse_size(size)
    if dims is None:
        dims = (infos[0].width, infos[0].height) if infos else (1024, 1024)
    quality = p.get("quality")
    return _Job(
        model=model,
        prompt=p["prompt"],
        n=n,
        width=dims[0],
        height=dims[1],
        output_format=p.get("output_format", "png"),
        compression=compression,
        transparent=p.get("background") == "transparent",
        quality=quality if quality in ("low", "medium", "high") else "high",
    )


async def _render(job: _Job, parsed: _Parsed, config: EmulatorConfig) -> list[bytes]:
    light = config.light_images
    pooled = config.image_pool > 0 and not light and not parsed.images
    pooled = pooled and job.output_format == "png" and not job.transparent

    def one(index: int) -> bytes:
        if pooled:
            return drawing.pooled_generation(
                job.prompt, index, job.width, job.height, config.image_pool
            )
        common = {
            "light": light,
            "output_format": job.output_format,
            "compression": job.compression,
            "transparent": job.transparent,
            "model": job.model,
            "quality": job.quality,
        }
        if parsed.images:
            return drawing.render_edit(
                job.prompt,
                index,
                job.n,
                job.width,
                job.height,
                parsed.images,
                parsed.mask,
                **common,
            )
        return drawing.render_generation(job.prompt, index, job.n, job.width, job.height, **common)

    return list(await asyncio.gather(*(anyio.to_thread.run_sync(one, i) for i in range(job.n))))


def _usage(job: _Job, input_images: int) -> dict[str, Any]:
    text = estimate_text_tokens(job.prompt)
    image_in = estimate_input_image_tokens(job.model, input_images)
    out = estimate_output_tokens(job.model, f"{job.width}x{job.height}", job.quality) * job.n
    return {
        "input_tokens": text + image_in,
        "input_tokens_details": {"text_tokens": text, "image_tokens": image_in},
        "output_tokens": out,
        "output_tokens_details": {"image_tokens": out, "text_tokens": 0},
        "total_tokens": text + image_in + out,
    }


def _start_drawing(
    endpoint: str, parsed: _Parsed, state: EmulatorState
) -> asyncio.Future[list[bytes]] | None:
    """Start drawing a valid request's images in the background (``None`` if it is invalid)."""
    try:
        job = _validate(endpoint, parsed)
    except _Reject:
        return None
    return asyncio.ensure_future(_render(job, parsed, state.config))


async def _answer(
    request: Request, state: EmulatorState, record: RequestRecord, endpoint: str, request_id: str
) -> tuple[Response, int]:
    parsed = await (_parse_edit(request, record) if endpoint == "edits" else _parse_json(request))
    record.params = dict(parsed.params)
    _authenticate(request, state)
    if parsed.error is not None:
        raise parsed.error
    fault = _choose_fault(request, parsed.params, state)
    record.fault = fault
    started = time.monotonic()
    # The image is drawn while the latency passes, as the real API works during its latency;
    # drawing after it would add the emulator's own CPU to every request's wall time.
    drawing_task = _start_drawing(endpoint, parsed, state) if fault in (None, "slow") else None
    try:
        if state.config.latency_s > 0:
            await asyncio.sleep(max(0.0, started + state.config.latency_s - time.monotonic()))
        if fault is not None and fault not in LATE_FAULTS:
            return fault_response(fault, state.config.retry_after_s, request_id), 0
        job = _validate(endpoint, parsed)
        if fault == "moderation":
            return fault_response(fault, state.config.retry_after_s, request_id), 0
        if fault == "slow":
            await asyncio.sleep(state.config.slow_s)
        images = await (drawing_task or _render(job, parsed, state.config))
    finally:
        if drawing_task is not None and not drawing_task.done():
            drawing_task.cancel()
    body = {
        "created": int(time.time()),
        "data": [{"b64_json": base64.b64encode(data).decode("ascii")} for data in images],
        "background": "transparent" if job.transparent else "opaque",
        "output_format": job.output_format,
        "quality": job.quality,
        "size": f"{job.width}x{job.height}",
        "usage": _usage(job, len(parsed.images)),
    }
    headers = {"openai-processing-ms": str(round((time.monotonic() - started) * 1000))}
    return JSONResponse(body, headers=headers), job.n


async def handle_image_request(request: Request, endpoint: str) -> Response:
    """Serve ``POST /v1/images/generations`` or ``/v1/images/edits``, logging it in the state.

    Args:
        request: The request.
        endpoint: ``generations`` or ``edits``.

    Returns:
        The response (with an ``x-request-id`` header), or one that drops the connection.
    """
    state: EmulatorState = request.app.state.emulator
    request_id = new_request_id()
    headers = {k: v for k, v in request.headers.items() if k.lower() != "authorization"}
    record = state.begin(endpoint, headers)
    response: Response | None = None
    billed = 0
    try:
        response, billed = await _answer(request, state, record, endpoint, request_id)
    except _Reject as reject:
        response = reject.response
    except Exception:
        logger.exception("CometAPI emulator failed on a %s request", endpoint)
        response = error_response(
            500, "The emulator failed on this request (see its log).", "server_error"
        )
    finally:
        dropped = response is None or isinstance(response, DropResponse)
        state.finish(record, None if dropped else response.status_code, billed)
    if not isinstance(response, DropResponse):
        response.headers["x-request-id"] = request_id
    return response


async def handle_models_request(request: Request) -> Response:
    """Serve ``GET /v1/models``: the models the emulator knows, free, with auth as for images.

    Neither logged nor billed: a health check (``prefect-cometapi doctor``) calls it before any
    image is asked for.

    Args:
        request: The request.

    Returns:
        OpenAI's list shape (``{"object": "list", "data": [{"id": ..., "object": "model",
        ...}]}``), or the same 401 as the image endpoints.
    """
    state: EmulatorState = request.app.state.emulator
    try:
        _authenticate(request, state)
    except _Reject as reject:
        response = reject.response
    else:
        models = [
            {"id": name, "object": "model", "created": 0, "owned_by": "openai"}
            for name in sorted(KNOWN_MODELS)
        ]
        response = JSONResponse({"object": "list", "data": models})
    response.headers["x-request-id"] = new_request_id()
    return response
