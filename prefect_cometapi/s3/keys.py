"""S3 bucket names and object keys: checked before any request, rendered from templates.

A rendered key can never escape its prefix: absolute paths, ``..``/``.``/empty segments,
backslashes, control characters and keys over 1024 bytes are refused. So are characters that
make a key read differently from what it is (:func:`hidden_characters`): C0 and C1 controls
(NEL U+0085), format characters (right-to-left override U+202E, zero-width space U+200B,
BOM), line and paragraph separators, spaces other than U+0020, private-use and unassigned code
points, and look-alikes of ``.``, ``/`` and ``\\`` (fullwidth dots U+FF0E, one-dot leader
U+2024, fullwidth and division slashes).
"""

from __future__ import annotations

import ipaddress
import re
import string
import unicodedata
from datetime import datetime, timezone
from typing import Any

from prefect_cometapi.errors import ValidationError
from prefect_cometapi.models import GeneratedImage
from prefect_cometapi.text import slugify

__all__ = [
    "DEFAULT_ITEM_KEY_TEMPLATE",
    "DEFAULT_KEY_TEMPLATE",
    "KEY_PLACEHOLDERS",
    "check_key_template",
    "hidden_characters",
    "normalize_prefix",
    "render_key",
    "template_fields",
    "validate_bucket_name",
    "validate_key",
]

DEFAULT_KEY_TEMPLATE = "{prefix}{date}/{sha256}.{ext}"
"""Key of ``upload_to_s3``: ``<prefix>YYYY-MM-DD/<sha256>.<ext>`` (UTC date); same image, same
key."""
DEFAULT_ITEM_KEY_TEMPLATE = "{prefix}{date}/{item}-{sha8}.{ext}"
"""Key of the flows (``S3Options.key_template``): ``<prefix>YYYY-MM-DD/<item id>-<sha8>.<ext>``."""
MAX_KEY_BYTES = 1024
SLUG_CHARS = 48
"""Length of the ``{slug}`` placeholder."""

KEY_PLACEHOLDERS: tuple[str, ...] = tuple(
    "prefix date year month day sha256 sha8 ext format model width height size index quality "
    "slug".split()
)
"""Placeholders :func:`render_key` knows, besides the caller's own ``**extra`` names."""

_EXTENSIONS = {"jpeg": "jpg"}
_SAMPLE_VALUES: dict[str, Any] = {
    **{name: name for name in KEY_PLACEHOLDERS},
    "date": "2000-01-01", "year": "2000", "month": "01", "day": "01",
    "sha256": "0" * 64, "sha8": "0" * 8, "ext": "png", "format": "png", "size": "1x1",
    "width": 1, "height": 1, "index": 0,
}  # fmt: skip
"""A value of the right type for each built-in placeholder (:func:`check_key_template`)."""
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.\-]*[a-z0-9]$")
_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_HIDDEN_CATEGORIES = frozenset(("Cc", "Cf", "Co", "Cs", "Cn", "Zl", "Zp", "Zs"))
_PATH_LOOKALIKES = frozenset("\u2215\u2044\u29f8\u29f9\u2216\ufe68")
_BUCKET_BAD_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_BUCKET_BAD_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--table-s3")


def validate_bucket_name(bucket: str) -> str:
    """Check a bucket name against S3's naming rules (general purpose buckets).

    Args:
        bucket: The bucket name.

    Returns:
        The name, unchanged.

    Raises:
        ValidationError: ``param="bucket"`` naming the rule it breaks.
    """

    def bad(rule: str) -> ValidationError:
        return ValidationError("bucket", rule, bucket)

    if not isinstance(bucket, str) or not bucket:
        raise bad("give the bucket name, e.g. 'my-images' (not an s3:// URI)")
    if bucket.startswith("s3://") or "/" in bucket:
        raise bad("give the bare bucket name; put folders in 'prefix' or the key template")
    if not 3 <= len(bucket) <= 63:
        raise bad("S3 bucket names are 3 to 63 characters long")
    if not _BUCKET_RE.match(bucket):
        raise bad(
            "S3 bucket names use only lowercase letters, digits, dots and hyphens, and start "
            "and end with a letter or digit"
        )
    if ".." in bucket:
        raise bad("S3 bucket names must not contain two adjacent dots")
    try:
        ipaddress.IPv4Address(bucket)
    except ValueError:
        pass
    else:
        raise bad("S3 bucket names must not look like an IP address")
    if bucket.startswith(_BUCKET_BAD_PREFIXES) or bucket.endswith(_BUCKET_BAD_SUFFIXES):
        raise bad("S3 reserves this bucket name prefix/suffix")
    return bucket


def hidden_characters(value: str) -> list[str]:
    """The characters of a key or prefix that hide, reorder or imitate others.

    Args:
        value: A key, a prefix or a part of one.

    Returns:
        ``U+XXXX`` for each such character, in order (empty when there is none).
    """
    found = []
    for ch in value:
        if ch == " ":
            continue
        folded = unicodedata.normalize("NFKC", ch)
        if (
            unicodedata.category(ch) in _HIDDEN_CATEGORIES
            or ch in _PATH_LOOKALIKES
            or (folded != ch and any(c in folded for c in "./\\"))
        ):
            found.append(f"U+{ord(ch):04X}")
    return found


def _check_path(value: str, param: str, *, allow_trailing_slash: bool) -> None:
    """Refuse anything that could escape a prefix or confuse S3 tools."""

    def bad(rule: str) -> ValidationError:
        return ValidationError(param, rule, value)

    if _CONTROL_RE.search(value):
        raise bad("control characters (newlines, tabs, NUL...) are not allowed in S3 keys")
    if hidden := hidden_characters(value):
        raise bad(
            f"invisible, reordering or look-alike characters ({', '.join(hidden[:5])}) are not "
            "allowed in S3 keys: the key would read differently from what it is"
        )
    if "\\" in value:
        raise bad("backslashes are not allowed; use '/' to separate folders")
    if value.startswith("/"):
        raise bad("must be relative: remove the leading '/'")
    segments = value.split("/")
    if allow_trailing_slash and value.endswith("/"):
        segments = segments[:-1]
    for segment in segments:
        if segment in ("", ".", ".."):
            raise bad("empty, '.' and '..' path segments are not allowed (no '//' either)")


def validate_key(key: str, *, param: str = "key") -> str:
    """Check a complete object key.

    Args:
        key: The object key.
        param: The parameter name to blame in the error.

    Returns:
        The key, unchanged.

    Raises:
        ValidationError: Empty, absolute, containing ``..``/``.``/empty segments, backslashes or
            control characters, ending in ``/``, or longer than 1024 UTF-8 bytes.
    """
    if not isinstance(key, str) or not key:
        raise ValidationError(param, "the object key is empty", key)
    _check_path(key, param, allow_trailing_slash=False)
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise ValidationError(param, f"S3 keys are at most {MAX_KEY_BYTES} bytes (UTF-8)", key)
    return key


def normalize_prefix(prefix: str) -> str:
    """Validate a key prefix and make it end in ``/`` (``"banners"`` -> ``"banners/"``).

    Args:
        prefix: ``""`` or a relative folder path.

    Returns:
        ``""`` or the prefix with exactly one trailing ``/``.

    Raises:
        ValidationError: ``param="prefix"`` if it is absolute or could escape (``..``).
    """
    if prefix is None or prefix == "":
        return ""
    if not isinstance(prefix, str):
        raise ValidationError("prefix", "must be a string", prefix)
    _check_path(prefix, "prefix", allow_trailing_slash=True)
    return prefix if prefix.endswith("/") else prefix + "/"


def template_fields(template: str) -> set[str]:
    """The placeholder names a key template uses (``"{date}/{sha8}"`` -> ``{"date", "sha8"}``).

    Args:
        template: A key template.

    Returns:
        The names (empty for a malformed template; :func:`render_key` reports those).
    """
    try:
        return {field for _, field, _, _ in string.Formatter().parse(template) if field}
    except ValueError:
        return set()


def render_key(
    template: str,
    image: GeneratedImage,
    /,
    *,
    prefix: str = "",
    now: datetime | None = None,
    **extra: Any,
) -> str:
    """Render an object key from a template.

    Placeholders: ``{prefix}``, ``{date}`` (UTC ``YYYY-MM-DD``), ``{year}``, ``{month}``,
    ``{day}``, ``{sha256}``, ``{sha8}`` (first 8 hex digits), ``{ext}`` (``png``/``jpg``/
    ``webp``), ``{format}``, ``{model}``, ``{width}``, ``{height}``, ``{size}`` (``WxH``),
    ``{index}``, ``{quality}``, ``{slug}`` (ASCII slug of the prompt) and any name passed in
    ``extra`` (e.g. ``item_id``; an ``extra`` name also overrides a built-in one, e.g. a fixed
    ``date`` for a scheduled run). Placeholders are plain names: format specs and conversions
    (``{index:03d}``, ``{item:.2}``, ``{slug!r}``) are refused, since a spec can cut a value
    short and make two images share a key.

    A non-empty ``prefix`` gets a trailing ``/``; if the template has no ``{prefix}`` it is put in
    front. The result must stay inside the prefix.

    Args:
        template: E.g. :data:`DEFAULT_KEY_TEMPLATE`.
        image: The image being stored.
        prefix: A folder for every key, e.g. ``"banners/"``.
        now: The time used for the date placeholders (default: now, UTC).
        **extra: More placeholder values.

    Returns:
        The key.

    Raises:
        ValidationError: ``param="key_template"`` for an unknown placeholder, a malformed
            template or a key that escapes the prefix (absolute, ``..``, backslash, empty
            segment, control characters, over 1024 bytes); ``param="prefix"`` for a bad prefix.
    """
    return _render(template, key_values(image, now), prefix, extra)


def key_values(image: GeneratedImage, now: datetime | None = None) -> dict[str, Any]:
    """The values of the built-in placeholders for one image.

    Args:
        image: The image being stored.
        now: The time used for the date placeholders (default: now, UTC).

    Returns:
        ``{placeholder: value}`` for every name in :data:`KEY_PLACEHOLDERS` but ``prefix``.
    """
    moment = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return {
        "date": moment.strftime("%Y-%m-%d"),
        "year": moment.strftime("%Y"),
        "month": moment.strftime("%m"),
        "day": moment.strftime("%d"),
        "sha256": image.sha256,
        "sha8": image.sha256[:8],
        "ext": _EXTENSIONS.get(image.format, image.format),
        "format": image.format,
        "model": image.model,
        "width": image.width,
        "height": image.height,
        "size": image.size,
        "index": image.index,
        "quality": str((image.params or {}).get("quality") or "auto"),
        "slug": slugify(image.prompt or "", SLUG_CHARS),
    }


def check_key_template(template: str, *, prefix: str = "", names: tuple[str, ...] = ()) -> None:
    """Check a key template before any image exists, with the rules of :func:`render_key`.

    The template is rendered with a value of the right type for each placeholder (numbers for
    ``{width}``, ``{height}`` and ``{index}``) and the result must be a valid key inside the
    prefix.

    Args:
        template: The key template.
        prefix: The prefix it will be rendered with.
        names: The caller's own placeholder names (e.g. ``("item",)`` for the flows).

    Raises:
        ValidationError: As :func:`render_key`.
    """
    _render(template, _SAMPLE_VALUES, prefix, {name: name for name in names})


def _render(template: str, values: dict[str, Any], prefix: str, extra: dict[str, Any]) -> str:
    if not isinstance(template, str) or not template.strip():
        raise ValidationError("key_template", "the key template is empty", template)
    norm_prefix = normalize_prefix(prefix)
    values = dict(values)
    for name, value in extra.items():
        if name == "prefix":
            raise ValidationError("key_vars", "'prefix' is set with the prefix parameter", name)
        if not _IDENT_RE.match(name):
            raise ValidationError("key_vars", "placeholder names are Python identifiers", name)
        values[name] = value
    values["prefix"] = norm_prefix

    used: set[str] = set()
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValidationError("key_template", f"malformed template: {exc}", template) from None
    for _literal, field, spec, conversion in parsed:
        if field is None:
            continue
        if not _IDENT_RE.match(field):
            raise ValidationError(
                "key_template",
                "placeholders are plain names like {sha256} (no positional, '.' or '[]' access)",
                template,
            )
        if spec or conversion:
            raise ValidationError(
                "key_template",
                f"format specs and conversions are not allowed (in {{{field}"
                f"{'!' + conversion if conversion else ''}{':' + spec if spec else ''}}}): they "
                "can cut values short and make images share a key",
                template,
            )
        if field not in values:
            known = ", ".join(sorted(set(KEY_PLACEHOLDERS) | set(extra)))
            raise ValidationError(
                "key_template",
                f"unknown placeholder {{{field}}}; known: {known} (pass more in key_vars)",
                template,
            )
        used.add(field)
    try:
        key = template.format_map(values)
    except (ValueError, TypeError) as exc:
        raise ValidationError("key_template", f"cannot render: {exc}", template) from None
    if norm_prefix and "prefix" not in used:
        key = norm_prefix + key
    validate_key(key, param="key_template")
    if not key.startswith(norm_prefix):  # pragma: no cover - guarded by the checks above
        raise ValidationError("key_template", "the key must stay inside the prefix", key)
    return key
