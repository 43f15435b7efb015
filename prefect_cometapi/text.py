"""Text helpers shared by keys, metadata, run names and reports: ASCII, slugs, excerpts."""

from __future__ import annotations

import re
import unicodedata

from prefect_cometapi.errors import redact

__all__ = ["EXCERPT_CHARS", "ascii_text", "excerpt", "slugify"]

EXCERPT_CHARS = 80
"""Length of a prompt excerpt in logs, reports and artifacts."""

_NOT_SLUG = re.compile(r"[^a-z0-9]+")


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
