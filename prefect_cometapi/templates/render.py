"""Render a Jinja2 prompt template (a string or a file) into a checked prompt.

Templates run in Jinja2's immutable sandbox with ``StrictUndefined``, so a template typed into
the Prefect UI can neither reach Python internals nor silently drop a variable. Every problem
becomes a :class:`~prefect_cometapi.errors.ValidationError` raised before any request is sent:

* missing variables (all of them, in one message) -> ``param="variables"``;
* syntax errors (with the line number), sandbox violations, other rendering errors
  -> ``param="template"``;
* an empty prompt or one over 32,000 characters -> ``param="prompt"``.

Example:
    >>> render_template(
    ...     "A banner for {{ name | upper }}: {{ features | join(', ') }}",
    ...     {"name": "Lumen", "features": ["solar", "waterproof"]},
    ... )
    'A banner for LUMEN: solar, waterproof'
"""

from __future__ import annotations

import functools
import os
import stat
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jinja2 import TemplateError, TemplateSyntaxError, UndefinedError, meta, nodes
from jinja2.sandbox import SecurityError

from prefect_cometapi.allowlist import confine_path, shown_path
from prefect_cometapi.client.rules import MAX_PROMPT_CHARS, validate_prompt
from prefect_cometapi.errors import ValidationError
from prefect_cometapi.templates.sandbox import PromptEnvironment, render_budget

__all__ = [
    "MAX_RENDER_CHARS",
    "MAX_TEMPLATE_BYTES",
    "TEMPLATE_SUFFIXES",
    "render_template",
]

TEMPLATE_SUFFIXES = (".j2", ".jinja", ".jinja2", ".txt", ".md")
"""A ``str`` template ending in one of these (and naming an existing file) is read from disk."""

MAX_TEMPLATE_BYTES = 1024 * 1024
"""Template files larger than this (1 MiB) are refused."""

MAX_RENDER_CHARS = 1_000_000
"""Rendering stops (and fails) once the raw output passes this many characters."""

_OPTIONAL_FILTERS = frozenset({"default", "d"})
_OPTIONAL_TESTS = frozenset({"defined", "undefined"})

_ENV = PromptEnvironment(
    autoescape=False,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=False,
)


def _looks_like_path(text: str) -> bool:
    return (
        "\n" not in text
        and "{{" not in text
        and "{%" not in text
        and text.strip() == text
        and text.lower().endswith(TEMPLATE_SUFFIXES)
    )


def _load_source(template: str | os.PathLike[str]) -> tuple[str, str | None]:
    """Return ``(source, file name or None)`` following the documented string-or-path rule."""
    if isinstance(template, os.PathLike):
        path = Path(template)
    elif isinstance(template, str):
        if not _looks_like_path(template):
            return template, None
        path = Path(template).expanduser()
        if not path.is_file() and any(ch.isspace() for ch in template):
            return template, None  # a one-line prompt that happens to end in ".md"
    else:
        raise ValidationError(
            "template", "must be a template string or a path to a template file", template
        )
    # What is checked (inside an allowed root, a regular file, its size) is what is read: the
    # resolved path, opened once.
    real = confine_path(path, "template")
    try:
        with real.open("rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise ValidationError("template", f"template file {path.name!r} is not a file")
            raw = handle.read(MAX_TEMPLATE_BYTES + 1)
    except FileNotFoundError:
        raise ValidationError(
            "template", f"template file {shown_path(path)!r} does not exist"
        ) from None
    except OSError as exc:
        raise ValidationError(
            "template", f"template file {path.name!r} cannot be read: {exc.strerror}"
        ) from None
    if len(raw) > MAX_TEMPLATE_BYTES:
        raise ValidationError(
            "template", f"template file {path.name!r} is over 1 MiB; the limit is 1 MiB"
        )
    try:
        return raw.decode("utf-8"), path.name
    except UnicodeDecodeError as exc:
        raise ValidationError(
            "template", f"template file {path.name!r} cannot be read as UTF-8 text: {exc}"
        ) from None


def _optional_names(ast: nodes.Template) -> set[str]:
    """Names the template guards itself (``x is defined``, ``x | default(...)``)."""
    names: set[str] = set()
    for node in ast.find_all((nodes.Test, nodes.Filter)):
        wanted = _OPTIONAL_TESTS if isinstance(node, nodes.Test) else _OPTIONAL_FILTERS
        if node.name in wanted and isinstance(node.node, nodes.Name):
            names.add(node.node.name)
    return names


def _template_line(exc: BaseException) -> int | None:
    """The template line Jinja2 attributed ``exc`` to (it rewrites tracebacks), if any."""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.filename == "<template>" or frame.filename.endswith(TEMPLATE_SUFFIXES):
            return frame.lineno
    return None


def _where(exc: BaseException, name: str | None) -> str:
    line = _template_line(exc)
    if line is None:
        return ""
    return f" (line {line}{f' of {name}' if name else ''})"


def _security_rule(exc: SecurityError) -> str:
    detail = str(exc.message or exc).removesuffix(".")
    if detail.startswith("access to "):
        detail = "to access " + detail.removeprefix("access to ").removesuffix(" is unsafe")
    return f"the template tried {detail}, which the sandbox refuses"


def _render(template: Any, variables: Mapping[str, Any]) -> str:
    """Render within a fresh budget, with a running bound on size and the prompt limit."""
    with render_budget():
        return _collect(template.generate(variables))


def _collect(stream: Any) -> str:
    chunks: list[str] = []
    total = 0
    first: int | None = None  # offset of the first non-space character
    last_end = 0  # offset just past the last non-space character
    for chunk in stream:
        if chunk.strip():
            if first is None:
                first = total + len(chunk) - len(chunk.lstrip())
            last_end = total + len(chunk.rstrip())
        chunks.append(chunk)
        total += len(chunk)
        if first is not None and last_end - first > MAX_PROMPT_CHARS:
            raise ValidationError(
                "prompt",
                f"must be at most {MAX_PROMPT_CHARS:,} characters; the template rendered more "
                "(rendering stopped early)",
            )
        if total > MAX_RENDER_CHARS:
            raise ValidationError(
                "template", f"rendered more than {MAX_RENDER_CHARS:,} characters; stopped"
            )
    return "".join(chunks)


@functools.lru_cache(maxsize=32)
def _compile(source: str, name: str | None) -> tuple[frozenset[str], Any]:
    """Parse and compile a template once: its required names and the compiled template.

    A batch renders one template per item, so it is compiled once, not per item. Compiled
    templates are safe to render from several threads. Errors are not cached.
    """
    ast = _ENV.parse(source, name=name)
    required = meta.find_undeclared_variables(ast) - _optional_names(ast)
    return frozenset(required), _ENV.from_string(_ENV.parse_bounded(source, name=name))


def render_template(
    template: str | os.PathLike[str], variables: Mapping[str, Any] | None = None
) -> str:
    """Render a Jinja2 prompt template and check the result is a valid prompt.

    Whether ``template`` is text or a file:

    * a :class:`~pathlib.Path` (any ``os.PathLike``) is always a file;
    * a ``str`` containing a newline, ``{{`` or ``{%`` is always template text;
    * a one-line ``str`` ending in ``.j2``, ``.jinja``, ``.jinja2``, ``.txt`` or ``.md``
      (case-insensitive) is a file path when that file exists. If it does not exist and the
      string has no whitespace (so it can only be a path), a ``ValidationError`` says the file is
      missing; otherwise it is template text;
    * any other ``str`` is template text.

    Files are read as UTF-8 (at most 1 MiB). Rendering uses Jinja2's immutable sandbox,
    ``StrictUndefined``, no autoescaping, and ``trim_blocks``/``lstrip_blocks``, so
    ``{% for f in features %}- {{ f | title }}\\n{% endfor %}`` gives one clean line per item.
    Names the template guards itself (``{% if x is defined %}``, ``{{ x | default('') }}``) are
    optional; every other name must be in ``variables``. The result is stripped of leading and
    trailing whitespace.

    Args:
        template: Template text, or the path of a template file (see the rule above).
        variables: Values for the template's names. Keys must be strings.

    Returns:
        The rendered, stripped prompt (1 to 32,000 characters).

    Raises:
        ValidationError: ``param="variables"`` when variables are missing (all are listed, also
            a missing attribute such as ``product.colour``) or ``variables`` is not a mapping;
            ``param="template"`` for a missing file, a syntax error (with its line), a sandbox
            violation or another rendering error; ``param="prompt"`` when the rendered prompt is
            empty or longer than 32,000 characters.
    """
    if variables is None:
        variables = {}
    if not isinstance(variables, Mapping):
        raise ValidationError("variables", "must be a mapping of names to values", variables)
    bad_keys = [k for k in variables if not isinstance(k, str)]
    if bad_keys:
        raise ValidationError("variables", "keys must be strings", bad_keys)

    source, name = _load_source(template)
    try:
        required, compiled = _compile(source, name)
        missing = required - set(variables)
        if missing:
            raise ValidationError(
                "variables",
                f"missing template variables: {', '.join(sorted(missing))}; "
                "pass them in variables=...",
            )
        rendered = _render(compiled, variables)
    except TemplateSyntaxError as exc:
        where = f"line {exc.lineno}" + (f" of {name}" if name else "")
        raise ValidationError("template", f"syntax error on {where}: {exc.message}") from None
    except SecurityError as exc:
        raise ValidationError("template", _security_rule(exc) + _where(exc, name)) from None
    except UndefinedError as exc:
        raise ValidationError(
            "variables",
            f"missing template value: {exc.message}{_where(exc, name)}; pass it in variables=...",
        ) from None
    except ValidationError:
        raise
    except (TemplateError, TypeError, ValueError, ArithmeticError, LookupError) as exc:
        raise ValidationError(
            "template", f"rendering failed{_where(exc, name)}: {type(exc).__name__}: {exc}"
        ) from None
    except RecursionError:
        raise ValidationError("template", "rendering recursed too deeply") from None
    except MemoryError:
        raise ValidationError("template", "rendering ran out of memory; stopped") from None
    return validate_prompt(rendered.strip())
