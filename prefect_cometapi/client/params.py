"""The parameters of an image request, declared once.

:data:`IMAGE_PARAMS` lists every parameter of ``POST /images/generations`` and
``POST /images/edits`` besides the prompt and the input images: its name, type, default, what it
means, which endpoints take it, whether it is sent to the API, checked by
:func:`~prefect_cometapi.client.rules.validate_options` and part of the image cache key. Everything
else is derived from it:

* the keyword parameters of :meth:`CometAPIClient.generate <prefect_cometapi.CometAPIClient>`,
  ``edit`` and their async twins (:func:`image_request`, identical for both clients);
* the parameters of the ``generate_image`` and ``edit_image`` tasks (the same decorator);
* the image cache key (:func:`cache_key_names`);
* the fields of the flows' ``ImageOptions`` form (:func:`form_params`).

Adding a parameter to the API means adding one :class:`ImageParam` here. The module imports
nothing else from the package, so the schema is complete before anything derives from it.
"""

from __future__ import annotations

import functools
import inspect
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, get_args

__all__ = [
    "BACKGROUNDS",
    "DEFAULT_MODEL",
    "IMAGE_PARAMS",
    "INPUT_FIDELITIES",
    "MODERATIONS",
    "OUTPUT_FORMATS",
    "QUALITIES",
    "Background",
    "Endpoint",
    "ImageFormat",
    "ImageParam",
    "InputFidelity",
    "Moderation",
    "Quality",
    "cache_key_names",
    "form_params",
    "image_request",
    "params_for",
    "request_defaults",
    "validated_names",
]

DEFAULT_MODEL = "gpt-image-2"
"""The model asked for when none is named."""

Endpoint = Literal["generations", "edits"]
"""The two image endpoints."""

BOTH: tuple[Endpoint, ...] = ("generations", "edits")

# The API's enumerations, declared once: the rules check against the tuples, the forms offer
# the literals.
Quality = Literal["low", "medium", "high", "auto"]
"""``quality``."""
ImageFormat = Literal["png", "jpeg", "webp"]
"""``output_format``, and the formats an edit input may have."""
Background = Literal["transparent", "opaque", "auto"]
"""``background``."""
Moderation = Literal["low", "auto"]
"""``moderation``."""
InputFidelity = Literal["high", "low"]
"""``input_fidelity`` (gpt-image-1 and gpt-image-1.5 only)."""

QUALITIES: tuple[str, ...] = get_args(Quality)
OUTPUT_FORMATS: tuple[str, ...] = get_args(ImageFormat)
BACKGROUNDS: tuple[str, ...] = get_args(Background)
MODERATIONS: tuple[str, ...] = get_args(Moderation)
INPUT_FIDELITIES: tuple[str, ...] = get_args(InputFidelity)

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class ImageParam:
    """One parameter of an image request.

    Attributes:
        name: The parameter's name (the API's field name when it is sent).
        annotation: Its type, as the client and task signatures show it.
        default: Its default (``None``: not sent, the API's own default applies).
        doc: What it means, one sentence or two (used in the generated docstrings).
        endpoints: The endpoints that take it.
        sent: Whether it is sent to the API (``False`` for ``variant``, a cache-key-only knob).
        validated: Whether :func:`~prefect_cometapi.client.rules.validate_options` checks it.
        cache_key: Whether it is part of the image cache key (it changes the image).
        in_form: Whether the flows' ``ImageOptions`` form offers it.
    """

    name: str
    annotation: Any
    default: Any
    doc: str
    endpoints: tuple[Endpoint, ...] = BOTH
    sent: bool = True
    validated: bool = True
    cache_key: bool = True
    in_form: bool = True


IMAGE_PARAMS: tuple[ImageParam, ...] = (
    ImageParam("model", str, DEFAULT_MODEL, "The model (default ``gpt-image-2``)."),
    ImageParam("n", int, 1, "Number of images, 1-10 (each is billed)."),
    ImageParam(
        "size",
        str,
        "auto",
        "``auto`` or ``WxH``; gpt-image-2 takes any size with both sides divisible by 16, long "
        "edge <= 3840, aspect <= 3:1 and 655,360-8,294,400 pixels (edits: ``auto`` is the "
        "input's size).",
    ),
    ImageParam("quality", str | None, None, "``low``, ``medium``, ``high`` or ``auto``."),
    ImageParam(
        "background", str | None, None, "``transparent`` (png/webp only), ``opaque`` or ``auto``."
    ),
    ImageParam("output_format", str | None, None, "``png``, ``jpeg`` or ``webp``."),
    ImageParam("output_compression", int | None, None, "0-100, jpeg/webp only."),
    ImageParam("moderation", str | None, None, "``low`` or ``auto``."),
    ImageParam(
        "input_fidelity",
        str | None,
        None,
        "``high``/``low``; only gpt-image-1 and gpt-image-1.5 accept it.",
        endpoints=("edits",),
        in_form=False,
    ),
    ImageParam(
        "user",
        str | None,
        None,
        "An end-user id for abuse monitoring (not part of the cache key).",
        validated=False,
        cache_key=False,
        in_form=False,
    ),
    ImageParam(
        "variant",
        int,
        0,
        "Part of the cache key only: change it to get a new image for the same request.",
        sent=False,
        validated=False,
    ),
)
"""Every image request parameter, in signature order."""


def params_for(endpoint: Endpoint, *, sent_only: bool = False) -> tuple[ImageParam, ...]:
    """The parameters an endpoint takes.

    Args:
        endpoint: ``"generations"`` or ``"edits"``.
        sent_only: Only those sent to the API (what the clients take).

    Returns:
        The parameters, in signature order.
    """
    return tuple(p for p in IMAGE_PARAMS if endpoint in p.endpoints and (p.sent or not sent_only))


def cache_key_names() -> tuple[str, ...]:
    """The names whose values make up the image cache key, besides the prompt.

    Returns:
        The names, in declaration order.
    """
    return tuple(p.name for p in IMAGE_PARAMS if p.cache_key)


def validated_names() -> tuple[str, ...]:
    """The names :func:`~prefect_cometapi.client.rules.validate_options` takes.

    Returns:
        The names, in declaration order.
    """
    return tuple(p.name for p in IMAGE_PARAMS if p.validated)


def request_defaults() -> dict[str, Any]:
    """The defaults sent with every request (those that are not ``None``).

    Returns:
        ``{name: default}`` for the sent parameters with a default.
    """
    return {p.name: p.default for p in IMAGE_PARAMS if p.sent and p.default is not None}


def form_params() -> tuple[ImageParam, ...]:
    """The parameters the flows' ``ImageOptions`` form offers.

    Returns:
        The parameters, in declaration order.
    """
    return tuple(p for p in IMAGE_PARAMS if p.in_form)


def _parameters(
    fn: Callable[..., Any], params: tuple[ImageParam, ...], kind: inspect._ParameterKind
) -> inspect.Signature:
    """``fn``'s signature with ``**params`` replaced by the image parameters."""
    own = inspect.signature(fn)
    head: list[inspect.Parameter] = []
    tail: list[inspect.Parameter] = []
    for parameter in own.parameters.values():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            continue
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY:
            tail.append(parameter.replace(kind=kind))
        else:
            head.append(parameter)
    middle = [
        inspect.Parameter(p.name, kind, default=p.default, annotation=p.annotation) for p in params
    ]
    return own.replace(parameters=[*head, *middle, *tail])


def _args_doc(params: tuple[ImageParam, ...], indent: str) -> str:
    lines: list[str] = []
    for p in params:
        lines.extend(
            textwrap.wrap(
                f"{p.name}: {p.doc}",
                width=96,
                initial_indent=indent,
                subsequent_indent=indent + "    ",
            )
        )
    return "\n".join(lines).lstrip()


def image_request(endpoint: Endpoint, *, task: bool = False) -> Callable[[F], F]:
    """Give a function the image parameters of ``endpoint`` in place of its ``**params``.

    The decorated function is written with a ``**params`` catch-all; the result has a real
    signature: the function's own leading parameters, then the image parameters with their
    defaults, then the function's keyword-only parameters. Calls are bound against that
    signature (an unknown name is a ``TypeError``, as for any function) and the function
    receives every image parameter in ``params``. ``{params}`` in the docstring becomes one
    ``Args`` entry per image parameter. Coroutine functions stay coroutine functions.

    Args:
        endpoint: ``"generations"`` or ``"edits"``.
        task: For the tasks: every parameter (``variant`` too), positional or keyword. Otherwise
            (the clients) only the sent parameters, keyword-only.

    Returns:
        The decorator.
    """
    params = params_for(endpoint, sent_only=not task)
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD if task else inspect.Parameter.KEYWORD_ONLY

    def decorate(fn: F) -> F:
        signature = _parameters(fn, params, kind)

        def bind(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            return bound.arguments

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def call_async(*args: Any, **kwargs: Any) -> Any:
                return await fn(**bind(args, kwargs))

            wrapper: Any = call_async
        else:

            @functools.wraps(fn)
            def call(*args: Any, **kwargs: Any) -> Any:
                return fn(**bind(args, kwargs))

            wrapper = call
        wrapper.__signature__ = signature
        del wrapper.__wrapped__  # the signature above, not fn's, is the truth
        wrapper.__annotations__ = {
            name: p.annotation
            for name, p in signature.parameters.items()
            if p.annotation is not inspect.Parameter.empty
        }
        if signature.return_annotation is not inspect.Signature.empty:
            wrapper.__annotations__["return"] = signature.return_annotation
        if fn.__doc__ and "{params}" in fn.__doc__:
            indent = _indent_of(fn.__doc__, "{params}")
            wrapper.__doc__ = fn.__doc__.replace("{params}", _args_doc(params, indent))
        return wrapper

    return decorate


def _indent_of(doc: str, marker: str) -> str:
    line = next(line for line in doc.splitlines() if marker in line)
    return line[: len(line) - len(line.lstrip())]
