"""The prompt templates' sandbox: Jinja2's immutable sandbox, bounded in size, steps and time.

A template typed into a run form is hostile input. Jinja2's sandbox already keeps it away from
Python internals; this module also keeps it from exhausting the worker:

* every string, list or number a template builds is bounded *before* it is built: ``*``,
  ``+``, ``%``, ``**``, ``~`` and the filters and ``str`` methods that grow text (``center``,
  ``indent``, ``join``, ``replace``, ``format``, ``ljust``, ``zfill``...) check the size of what
  they would make against :data:`MAX_VALUE_CHARS`;
* everything a render outputs, including what ``{% set %}`` blocks and macros buffer, counts
  against :data:`MAX_OUTPUT_CHARS` (a loop is charged its body's literal text per iteration);
* loop iterations, calls and filter applications count against :data:`MAX_STEPS`, and a render
  stops after :data:`MAX_RENDER_SECONDS`.

Each refusal is a :class:`jinja2.sandbox.SecurityError` whose message completes "the template
tried ..."; :func:`prefect_cometapi.templates.render_template` turns it into a
``ValidationError`` naming the template.
"""

from __future__ import annotations

import contextlib
import functools
import operator
import re
import string
import time
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from typing import Any

from jinja2 import StrictUndefined, Undefined, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
from jinja2.visitor import NodeTransformer

__all__ = ["PromptEnvironment", "render_budget"]

MAX_VALUE_CHARS = 100_000
"""The largest string (or sequence, counted in characters) a template may build."""
MAX_OUTPUT_CHARS = 1_000_000
"""The most characters one render may output in total, buffered blocks and macros included."""
MAX_STEPS = 100_000
"""The most loop iterations, calls and filter applications in one render."""
MAX_RENDER_SECONDS = 5.0
"""The longest one render may take."""

_MAX_POWER_BITS = 100_000
_TIME_CHECK_EVERY = 256
_PERCENT_FIELD = re.compile(
    r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?([diouxXeEfFgGcrsa%])"
)
_DIGITS = re.compile(r"\d+")
#: ``str`` methods whose first argument is a width.
_WIDTH_METHODS = frozenset({"ljust", "rjust", "center", "zfill"})


class _Budget:
    """What one render has spent so far."""

    def __init__(self) -> None:
        self.steps = 0
        self.output = 0
        self.deadline = time.monotonic() + MAX_RENDER_SECONDS

    def step(self, count: int = 1) -> None:
        self.steps += count
        if self.steps > MAX_STEPS:
            raise SecurityError(f"more than {MAX_STEPS:,} loop iterations, calls and filters")
        if self.steps % _TIME_CHECK_EVERY < count and time.monotonic() > self.deadline:
            raise SecurityError(f"to render for longer than {MAX_RENDER_SECONDS:g} s")

    def emit(self, chars: int) -> None:
        self.output += chars
        if self.output > MAX_OUTPUT_CHARS:
            raise SecurityError(f"to output more than {MAX_OUTPUT_CHARS:,} characters")


_BUDGET: ContextVar[_Budget | None] = ContextVar("prefect_cometapi_template_budget", default=None)


@contextlib.contextmanager
def render_budget() -> Iterator[None]:
    """Give the renders in this block (one template's) a fresh budget of steps, output and time.

    Yields:
        Nothing.
    """
    token = _BUDGET.set(_Budget())
    try:
        yield
    finally:
        _BUDGET.reset(token)


def _step(count: int = 1) -> None:
    budget = _BUDGET.get()
    if budget is not None:
        budget.step(count)


def _size(value: Any, limit: int = MAX_VALUE_CHARS) -> int:
    """About how many characters ``str(value)`` has, counting no further than past ``limit``."""
    if isinstance(value, (str, bytes, bytearray)):
        return len(value)
    if value is None or isinstance(value, (bool, float, Undefined)):
        return 8
    if isinstance(value, int):
        return value.bit_length() // 3 + 2
    if isinstance(value, dict):
        value = [*value.keys(), *value.values()]
    if isinstance(value, (list, tuple, set, frozenset)):
        total = 2
        for item in value:
            total += _size(item, limit - total) + 2
            if total > limit:
                break
        return total
    return 16  # macros, loop objects, ranges and other small objects


def _refuse_over(size: int, what: str) -> None:
    if size > MAX_VALUE_CHARS:
        raise SecurityError(f"to build {what} of about {size:,} characters")


def _check_int(value: Any, what: str) -> None:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_VALUE_CHARS:
        raise SecurityError(f"to use {what} of {value:,}")


def _percent_size(fmt: str, args: Any) -> int:
    """An upper bound of ``len(fmt % args)``; refuses ``*`` widths."""
    total = len(fmt)
    for match in _PERCENT_FIELD.finditer(fmt):
        width, precision, _ = match.groups()
        if "*" in (width, precision):
            raise SecurityError("a '*' width in a % format")
        for number in (width, precision):
            if number:
                _check_int(int(number), "a % format width")
                total += int(number)
    return total + _size(args)


def _format_size(fmt: str, args: Iterable[Any]) -> int:
    """An upper bound of ``len(fmt.format(*args))``; refuses nested ``{}`` in a format spec."""
    total = len(fmt)
    try:
        fields = list(string.Formatter().parse(fmt))
    except ValueError:
        return total  # str.format raises the same error itself
    for _, _, spec, _ in fields:
        if not spec:
            continue
        if "{" in spec:
            raise SecurityError("a nested '{}' in a format spec")
        for number in _DIGITS.findall(spec):
            _check_int(int(number), "a format width")
            total += int(number)
    return total + sum(_size(a) for a in args)


def _join_size(items: Any, sep: str = "") -> int:
    if not isinstance(items, (list, tuple, set, frozenset, dict, str)):
        return 0  # a generator: its items are bounded where they are made
    total = 0
    for item in items:
        total += _size(item) + len(sep)
        if total > MAX_VALUE_CHARS:
            break
    return total


def _replace_size(text: str, old: str, new: str, count: int = -1) -> int:
    hits = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    return len(text) + hits * max(len(str(new)) - len(str(old)), 0)


def _check_str_method(method: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Bound a call of a ``str`` method that can grow text."""
    target = getattr(method, "__wrapped__", method)  # the sandbox wraps str.format
    text = getattr(target, "__self__", None)
    if not isinstance(text, str):
        return
    name = getattr(target, "__name__", "")
    for arg in (*args, *kwargs.values()):
        _check_int(arg, f"str.{name}() with an argument")
    if name in _WIDTH_METHODS and args:
        _refuse_over(int(args[0]) if isinstance(args[0], int) else 0, f"a str.{name}() result")
    elif name == "expandtabs":
        tab = args[0] if args else kwargs.get("tabsize", 8)
        _refuse_over(len(text) * (tab if isinstance(tab, int) else 8), "an expandtabs() result")
    elif name == "join" and args:
        _refuse_over(_join_size(args[0], text), "a joined string")
    elif name == "replace" and len(args) >= 2:
        _refuse_over(_replace_size(text, str(args[0]), str(args[1]), *args[2:3]), "a replace()")
    elif name in ("format", "format_map"):
        values = [*args, *kwargs.values()]
        if name == "format_map" and args and isinstance(args[0], dict):
            values = list(args[0].values())
        _refuse_over(_format_size(text, values), "a formatted string")


def _filter_guard(name: str, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Bound a filter's result before it runs."""
    for arg in (*args, *kwargs.values()):
        _check_int(arg, f"the {name!r} filter with an argument")
    text = value if isinstance(value, str) else None
    if name == "center" and args:
        _refuse_over(int(args[0]) if isinstance(args[0], int) else 0, "a centred string")
    elif name == "indent" and text is not None:
        width = args[0] if args else kwargs.get("width", 4)
        unit = len(width) if isinstance(width, str) else width if isinstance(width, int) else 4
        _refuse_over(len(text) + (text.count("\n") + 1) * unit, "an indented string")
    elif name == "join":
        sep = args[0] if args else kwargs.get("d", "")
        _refuse_over(_join_size(value, str(sep)), "a joined string")
    elif name == "replace" and text is not None and len(args) >= 2:
        _refuse_over(_replace_size(text, str(args[0]), str(args[1]), *args[2:3]), "a replace()")
    elif name == "format" and text is not None:
        _refuse_over(_percent_size(text, [*args, *kwargs.values()]), "a formatted string")
    elif name in ("string", "list", "tojson", "pprint", "urlize", "wordwrap", "forceescape", "e"):
        _refuse_over(_size(value), f"the {name!r} filter's input")


def _guarded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` with the step budget and the size checks of :func:`_filter_guard`."""
    pass_arg = getattr(func, "jinja_pass_arg", None)

    @functools.wraps(func)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        _step()
        own = args[1:] if pass_arg is not None else args  # drop the context/environment
        if own:
            _filter_guard(name, own[0], tuple(own[1:]), kwargs)
        result = func(*args, **kwargs)
        if isinstance(result, (str, list, tuple)):
            _refuse_over(_size(result), f"a {name!r} result")
        return result

    return guarded


def _loop_budget(iterable: Any, weight: int) -> Iterator[Any]:
    """Iterate, charging each pass one step and ``weight`` characters of literal output."""
    budget = _BUDGET.get()
    for item in iterable:
        if budget is not None:
            budget.step()
            budget.emit(weight)
        yield item


def _literal_chars(body: list[nodes.Node]) -> int:
    """Characters of template text directly in a loop body (nested loops charge their own)."""
    total = 0
    for node in body:
        if isinstance(node, nodes.For):
            continue
        if isinstance(node, nodes.TemplateData):
            total += len(node.data)
        total += _literal_chars(list(node.iter_child_nodes()))
    return total


class _Bounder(NodeTransformer):
    """Rewrites a parsed template: loops charge the budget, ``~`` checks its result's size."""

    def visit_For(self, node: nodes.For) -> nodes.Node:  # noqa: N802 - the visitor's naming
        node = self.generic_visit(node)
        weight = _literal_chars(node.body) + _literal_chars(node.else_)
        node.iter = nodes.Call(
            nodes.EnvironmentAttribute("loop_budget"),
            [node.iter, nodes.Const(weight)],
            [],
            None,
            None,
        )
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:  # noqa: N802
        node = self.generic_visit(node)
        return nodes.Call(
            nodes.EnvironmentAttribute("bounded_concat"),
            [nodes.List(node.nodes)],
            [],
            None,
            None,
        )


def _bounded_concat(parts: list[Any]) -> str:
    _refuse_over(sum(_size(p) for p in parts), "a '~' concatenation")
    return "".join(str(p) for p in parts)


def _bounded_lipsum(lipsum: Callable[..., str]) -> Callable[..., str]:
    """Jinja2's ``lipsum`` global, refusing a size whose words could exceed the bound."""

    @functools.wraps(lipsum)
    def bounded(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:  # noqa: A002
        if not all(isinstance(v, int) for v in (n, min, max)):
            raise SecurityError("to call lipsum() with non-integer sizes")
        _refuse_over(n * max * 12, "a lorem ipsum text")
        return lipsum(n=n, html=html, min=min, max=max)

    return bounded


def _finalize(value: Any) -> Any:
    """Every ``{{ ... }}`` output passes here before it is turned into text."""
    size = _size(value)
    _refuse_over(size, "an output")
    budget = _BUDGET.get()
    if budget is not None:
        budget.emit(size)
    return value


class PromptEnvironment(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox with the bounds of this module.

    Parse templates with :meth:`parse_bounded` (it rewrites loops and ``~``) and render them
    inside :func:`render_budget`.
    """

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, **options: Any) -> None:
        options.setdefault("undefined", StrictUndefined)
        super().__init__(finalize=_finalize, **options)
        self.filters = {name: _guarded_filter(name, f) for name, f in self.filters.items()}
        self.globals["lipsum"] = _bounded_lipsum(self.globals["lipsum"])
        self.loop_budget = _loop_budget
        self.bounded_concat = _bounded_concat

    def parse_bounded(self, source: str, name: str | None = None) -> nodes.Template:
        """Parse ``source`` and rewrite it so that its loops and concatenations are bounded.

        Args:
            source: The template text.
            name: Its file name, for error messages.

        Returns:
            The rewritten syntax tree (compile it with ``from_string``).
        """
        return _Bounder().visit(self.parse(source, name=name))

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        """Call ``__obj`` after charging a step and bounding ``str`` methods that grow text.

        Raises:
            SecurityError: Over the step budget, or the call would build too large a string.
        """
        if __obj is not _loop_budget and __obj is not _bounded_concat:
            _step()
            _check_str_method(__obj, args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)

    def call_binop(self, context: Any, operator_: str, left: Any, right: Any) -> Any:
        """Apply ``*``, ``**``, ``+`` or ``%`` after checking the result stays small.

        Raises:
            SecurityError: If the result would be a huge sequence, string or number.
        """
        _step()
        if operator_ == "**":
            if isinstance(left, int) and isinstance(right, int) and right > 0:
                if max(left.bit_length(), 1) * right > _MAX_POWER_BITS:
                    raise SecurityError(
                        f"to compute a power with about {left.bit_length() * right:,} bits"
                    )
            elif isinstance(right, (int, float)) and abs(right) > _MAX_POWER_BITS:
                raise SecurityError(f"to compute a power with exponent {right}")
            return operator.pow(left, right)
        if operator_ == "+":
            if isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple)):
                _refuse_over(_size(left) + _size(right), "a sum")
            return operator.add(left, right)
        if operator_ == "%":
            if isinstance(left, str):
                _refuse_over(_percent_size(left, right), "a % formatted string")
            return operator.mod(left, right)
        for seq, count in ((left, right), (right, left)):
            if isinstance(seq, (str, list, tuple)) and isinstance(count, int):
                _refuse_over(_size(seq) * max(count, 0), "a repeated sequence")
        return operator.mul(left, right)
