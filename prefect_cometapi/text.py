"""Text helpers shared by keys, metadata, run names and reports: ASCII, slugs, excerpts, dollars."""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata

from prefect_cometapi.errors import redact

__all__ = [
    "PRIVATE_PROMPTS_ENV",
    "ascii_text",
    "excerpt",
    "markdown_text",
    "private_prompts",
    "prompt_excerpt",
    "prompt_token",
    "slugify",
    "usd",
]

PRIVATE_PROMPTS_ENV = "PREFECT_COMETAPI_PRIVATE_PROMPTS"
"""Set to ``1`` (or ``true``, ``yes``, ``on``) on a worker to keep prompt text out of task-run
names, logs, events and artifacts (off by default); see :func:`private_prompts`."""

EXCERPT_CHARS = 80
"""Length of a prompt excerpt in logs, reports and artifacts."""
USD_DECIMALS = 4
"""Decimal places of every cost a report shows: a low-quality 1024x1024 image is $0.0047."""

_NOT_SLUG = re.compile(r"[^a-z0-9]+")
_MD_SPECIAL = re.compile(r"([\\`*\[\]<>&|~])")
_MD_AUTOLINK = re.compile(r"(?i)(?<=https):|(?<=http):|(?<=ftp):|(?<=www)\.|@")
_INVISIBLE = frozenset(("Cc", "Cf", "Zl", "Zp", "Zs"))


def ascii_text(text: str, limit: int | None = None) -> str:
    """Printable-ASCII version of ``text`` (transliterated where possible, whitespace collapsed).

    Args:
        text: Any text.
        limit: Cut to at most this many characters (an ellipsis ``...`` marks the cut).

    Returns:
        Text made only of printable ASCII characters, safe for S3 metadata and HTTP headers.
    """
    try:
        from text_unidecode import unidecode  # installed with prefect (via python-slugify)

        text = unidecode(text)
    except ImportError:  # pragma: no cover - fallback without transliteration tables
        text = unicodedata.normalize("NFKD", text)
    text = text.encode("ascii", "ignore").decode("ascii")
    text = " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())
    if limit is not None and len(text) > limit:
        text = text[: max(limit - 3, 0)].rstrip() + "..."
    return text


def slugify(text: str, limit: int | None = None, *, empty: str = "image") -> str:
    """Lowercase ASCII letters and digits joined by ``-``: ``"A Lamp, 2x!"`` -> ``a-lamp-2x``.

    Args:
        text: Any text (transliterated with :func:`ascii_text`).
        limit: At most this many characters (no trailing ``-`` after the cut).
        empty: What to return when nothing is left.

    Returns:
        The slug, or ``empty``.
    """
    slug = _NOT_SLUG.sub("-", ascii_text(text).lower()).strip("-")
    if limit is not None:
        slug = slug[:limit].rstrip("-")
    return slug or empty


def excerpt(prompt: str, limit: int = EXCERPT_CHARS) -> str:
    """A one-line excerpt of a prompt, scrubbed of anything that looks like a key.

    Args:
        prompt: The prompt.
        limit: Maximum length (an ellipsis marks a cut).

    Returns:
        The excerpt.
    """
    text = redact(" ".join(str(prompt).split()))
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def private_prompts() -> bool:
    """Whether prompt text is kept out of run names, logs, events and artifacts.

    Read from :data:`PREFECT_COMETAPI_PRIVATE_PROMPTS <PRIVATE_PROMPTS_ENV>` of the process
    that runs the flow (a worker's environment, or a deployment's job variables) each time.

    Returns:
        ``True`` when the variable is ``1``, ``true``, ``yes`` or ``on``.
    """
    value = os.environ.get(PRIVATE_PROMPTS_ENV, "").strip().lower()
    return value in ("1", "true", "yes", "on")


def prompt_excerpt(prompt: str, limit: int = EXCERPT_CHARS) -> str:
    """:func:`excerpt` of a prompt for logs and reports, or ``""`` when prompts are private.

    Args:
        prompt: The prompt.
        limit: Maximum length.

    Returns:
        The excerpt, or an empty string.
    """
    return "" if private_prompts() else excerpt(prompt, limit)


def prompt_token(prompt: str) -> str:
    """A short stable name for a prompt that does not show it: ``p-`` and 10 hex digits.

    Args:
        prompt: The prompt.

    Returns:
        E.g. ``p-3f2a9c01be``.
    """
    return "p-" + hashlib.sha256(str(prompt).encode()).hexdigest()[:10]


def _defang(match: re.Match[str]) -> str:
    return f"\\[{match.group(0)}\\]"


def markdown_text(value: object, limit: int | None = None) -> str:
    """The one escape for every value a run can reach in a markdown artifact or a table cell.

    The Prefect UI renders artifact markdown, artifact descriptions and every string cell of a
    table artifact as GitHub-flavoured markdown. Run parameters reach all of these (item ids,
    prefixes, prompts, S3 keys, error messages), so each such value goes through this function,
    which makes it inert text showing the same characters:

    * control, format (bidi overrides, zero-width), separator characters and whitespace runs
      become one space, so no value can start a new block (heading, list, table row, reference
      definition ``[x]: url``) or reorder what a reader sees;
    * ``\\ ` * [ ] < > & | ~`` are backslash-escaped, so no link, image, reference link,
      autolink ``<http://x>``, HTML tag, entity, code span or strikethrough can form;
    * the ``:`` after ``http``/``https``/``ftp``, the ``.`` after ``www`` and every ``@`` are
      bracketed (``http[:]//x``, ``www[.]x``, ``a[@]b``), so GFM's bare-URL and e-mail
      autolinking cannot make a link either. Escaping them is not enough: Prefect's v2 UI
      autolinks the text after the escapes are resolved (seen in headless Chromium,
      ``tools/ui_check.py --hostile-only``), so these are the only characters shown changed.

    Everything else (letters, digits, ``/ . : - _`` of S3 URIs) is left as it is, so a table
    read through the API keeps plain S3 URIs and item ids.

    Args:
        value: Any value (its ``str()``).
        limit: Cut the text, before escaping, to at most this many characters (``...`` marks it).

    Returns:
        Markdown that renders as the (whitespace-collapsed) text, URLs and e-mail addresses
        defanged.
    """
    text = "".join(" " if unicodedata.category(ch) in _INVISIBLE else ch for ch in str(value))
    text = " ".join(text.split())
    if limit is not None and len(text) > limit:
        text = text[: max(limit - 3, 0)].rstrip() + "..."
    return _MD_AUTOLINK.sub(_defang, _MD_SPECIAL.sub(r"\\\1", text))


def usd(amount: float) -> str:
    """A cost as every report shows it: ``0.004704`` -> ``$0.0047``, ``0`` -> ``$0.0000``.

    Args:
        amount: Dollars.

    Returns:
        The amount with a dollar sign and :data:`USD_DECIMALS` decimal places.
    """
    return f"${amount:.{USD_DECIMALS}f}"
