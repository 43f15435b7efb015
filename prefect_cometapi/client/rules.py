"""The Images API's rules, checked before any request is sent (and by the emulator, as the API).

Every function raises :class:`~prefect_cometapi.errors.ValidationError` naming the parameter and
the rule.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import Any

from PIL import Image

from prefect_cometapi.client.params import (
    BACKGROUNDS,
    INPUT_FIDELITIES,
    MODERATIONS,
    OUTPUT_FORMATS,
    QUALITIES,
)
from prefect_cometapi.errors import ValidationError

__all__ = [
    "INPUT_FIDELITY_MODELS",
    "LEGACY_SIZES",
    "MAX_IMAGE_BYTES",
    "MAX_MASK_BYTES",
    "MAX_PROMPT_CHARS",
    "base_model",
    "check_edit_count",
    "check_edit_size",
    "inspect_image",
    "is_flexible_size_model",
    "parse_size",
    "validate_edit_images",
    "validate_options",
    "validate_params",
    "validate_prompt",
]

MAX_PROMPT_CHARS = 32_000
MAX_N = 10
MAX_EDIT_IMAGES = 16
MAX_IMAGE_BYTES = 50 * 1024 * 1024
MAX_MASK_BYTES = 4 * 1024 * 1024

LEGACY_SIZES = ("1024x1024", "1536x1024", "1024x1536", "auto")
LEGACY_MODELS = ("gpt-image-1", "gpt-image-1-mini", "gpt-image-1.5")
INPUT_FIDELITY_MODELS = ("gpt-image-1", "gpt-image-1.5")
EDIT_IMAGE_FORMATS = {"PNG": "png", "WEBP": "webp", "JPEG": "jpeg", "MPO": "jpeg"}

# gpt-image-2 custom sizes
SIZE_MULTIPLE = 16
MAX_EDGE = 3840
MAX_ASPECT = 3
MIN_PIXELS = 655_360
MAX_PIXELS = 8_294_400


def base_model(model: str) -> str:
    """The family name of a model: ``gpt-image-2-2026-04-21`` -> ``gpt-image-2``.

    Args:
        model: A model name or dated snapshot.

    Returns:
        The base name, or ``model`` unchanged when it is not a known GPT image model.
    """
    for name in ("gpt-image-2", *LEGACY_MODELS):
        if model == name or (model.startswith(name + "-") and model[len(name) + 1 :][:1].isdigit()):
            return name
    return model


def is_flexible_size_model(model: str) -> bool:
    """Whether ``model`` takes any valid ``WxH`` (gpt-image-2 and its snapshots)."""
    return base_model(model) == "gpt-image-2"


def is_legacy_model(model: str) -> bool:
    """Whether ``model`` is an older GPT image model limited to three fixed sizes."""
    return base_model(model) in LEGACY_MODELS


def parse_size(size: str) -> tuple[int, int] | None:
    """Parse ``"WxH"`` into ``(W, H)``; ``"auto"`` gives ``None``.

    Args:
        size: The size string.

    Returns:
        ``(width, height)`` or ``None`` for ``auto``.

    Raises:
        ValidationError: If the string is not ``auto`` nor ``WIDTHxHEIGHT``.
    """
    if size == "auto":
        return None
    parts = str(size).lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and p[0] != "0" for p in parts):
        raise ValidationError("size", "must be 'auto' or 'WIDTHxHEIGHT', e.g. '1536x1024'", size)
    return int(parts[0]), int(parts[1])


def validate_size(model: str, size: str) -> tuple[int, int] | None:
    """Check ``size`` against the model's size rules.

    gpt-image-2: both sides divisible by 16, long edge <= 3840, long:short <= 3:1,
    655,360 <= W*H <= 8,294,400. Older GPT image models: 1024x1024, 1536x1024, 1024x1536, auto.
    Other models served by CometAPI are only checked for the ``WxH`` shape.

    Args:
        model: The model name.
        size: The requested size.

    Returns:
        ``(width, height)``, or ``None`` for ``auto``.

    Raises:
        ValidationError: If the size breaks a rule.
    """
    dims = parse_size(size)
    if is_legacy_model(model) and size not in LEGACY_SIZES:
        raise ValidationError("size", f"{model} accepts only {', '.join(LEGACY_SIZES)}", size)
    if dims is None or not is_flexible_size_model(model):
        return dims
    w, h = dims
    if w % SIZE_MULTIPLE or h % SIZE_MULTIPLE:
        raise ValidationError("size", "width and height must both be divisible by 16", size)
    if max(w, h) > MAX_EDGE:
        raise ValidationError("size", f"the long edge must be at most {MAX_EDGE} px", size)
    if max(w, h) > MAX_ASPECT * min(w, h):
        raise ValidationError("size", "the aspect ratio must be between 1:3 and 3:1", size)
    if not MIN_PIXELS <= w * h <= MAX_PIXELS:
        raise ValidationError(
            "size",
            f"width x height must be between {MIN_PIXELS:,} and {MAX_PIXELS:,} pixels "
            f"(1024x640 to 3840x2160); {size} has {w * h:,}",
            size,
        )
    return dims


def _one_of(param: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValidationError(param, f"must be one of {', '.join(allowed)}", value)


def validate_prompt(prompt: object) -> str:
    """Check that the prompt is a non-empty string of at most 32,000 characters.

    Args:
        prompt: The prompt.

    Returns:
        The prompt.

    Raises:
        ValidationError: If it is empty, not a string or too long.
    """
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValidationError("prompt", "must be a non-empty string", prompt)
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ValidationError(
            "prompt",
            f"must be at most {MAX_PROMPT_CHARS:,} characters; it has {len(prompt):,}",
        )
    return prompt


def validate_options(
    *,
    model: str,
    n: object = 1,
    size: str = "auto",
    quality: str | None = None,
    output_format: str | None = None,
    output_compression: object = None,
    background: str | None = None,
    moderation: str | None = None,
    input_fidelity: str | None = None,
) -> None:
    """Check the request parameters other than the prompt (what the flows' forms hold).

    Args:
        model: Model name (must be non-empty).
        n: Number of images, 1..10.
        size: See :func:`validate_size`.
        quality: low|medium|high|auto or ``None``.
        output_format: png|jpeg|webp or ``None`` (png).
        output_compression: 0..100, only with jpeg or webp.
        background: transparent|opaque|auto; transparent needs png or webp.
        moderation: low|auto.
        input_fidelity: high|low, only for models that accept it (not gpt-image-2).

    Raises:
        ValidationError: On the first rule broken.
    """
    _check_model(model)
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_N:
        raise ValidationError("n", f"must be an integer from 1 to {MAX_N}", n)
    validate_size(model, size)
    if quality is not None:
        _one_of("quality", quality, QUALITIES)
    if output_format is not None:
        _one_of("output_format", output_format, OUTPUT_FORMATS)
    fmt = output_format or "png"
    if output_compression is not None:
        if (
            isinstance(output_compression, bool)
            or not isinstance(output_compression, int)
            or not 0 <= output_compression <= 100
        ):
            raise ValidationError(
                "output_compression", "must be an integer from 0 to 100", output_compression
            )
        if fmt == "png":
            raise ValidationError(
                "output_compression", "applies only to output_format 'jpeg' or 'webp', not png"
            )
    if background is not None:
        _one_of("background", background, BACKGROUNDS)
        if background == "transparent" and fmt == "jpeg":
            raise ValidationError(
                "background", "'transparent' needs output_format 'png' or 'webp', not jpeg"
            )
    if moderation is not None:
        _one_of("moderation", moderation, MODERATIONS)
    if input_fidelity is not None:
        _one_of("input_fidelity", input_fidelity, INPUT_FIDELITIES)
        if base_model(model) not in INPUT_FIDELITY_MODELS:
            raise ValidationError(
                "input_fidelity",
                f"is not supported by {model} (only {', '.join(INPUT_FIDELITY_MODELS)}); "
                "leave it unset",
            )


def validate_params(*, prompt: object, **options: Any) -> None:
    """Check a whole request: the prompt (:func:`validate_prompt`) and every other parameter
    (:func:`validate_options`).

    Args:
        prompt: The prompt.
        **options: The arguments of :func:`validate_options`.

    Raises:
        ValidationError: On the first rule broken.
    """
    _check_model(options.get("model"))
    validate_prompt(prompt)
    validate_options(**options)


def _check_model(model: object) -> None:
    if not isinstance(model, str) or not model.strip():
        raise ValidationError("model", "must be a non-empty model name, e.g. 'gpt-image-2'", model)


@dataclass(frozen=True)
class ImageInfo:
    """What the header of an encoded image says.

    Attributes:
        format: ``png``, ``webp`` or ``jpeg``.
        width: Pixel width.
        height: Pixel height.
        has_alpha: Whether it has an alpha channel (or transparency).
    """

    format: str
    width: int
    height: int
    has_alpha: bool


def inspect_image(data: bytes, param: str = "image") -> ImageInfo:
    """Read an encoded image's header (no full decode) and refuse what is not an image.

    Args:
        data: The encoded bytes.
        param: The parameter name to put in errors.

    Returns:
        Its :class:`ImageInfo`.

    Raises:
        ValidationError: For bytes that are not a readable image or a decompression bomb.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                fmt = img.format or ""
                has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
                    "transparency" in img.info
                )
                return ImageInfo(
                    EDIT_IMAGE_FORMATS.get(fmt, fmt.lower()), img.width, img.height, has_alpha
                )
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ValidationError(param, f"is too large to decode safely ({exc})") from None
    except Exception:  # noqa: BLE001 - Pillow raises many types for junk input
        raise ValidationError(
            param, "is not a readable image (expected PNG, WebP or JPEG bytes)"
        ) from None


def check_edit_count(count: int) -> None:
    """Check how many input images an edit has (1 to 16); applied before any is read.

    Args:
        count: The number of input images.

    Raises:
        ValidationError: None, or more than 16.
    """
    if count < 1:
        raise ValidationError("image", "at least one input image is required")
    if count > MAX_EDIT_IMAGES:
        raise ValidationError(
            "image", f"at most {MAX_EDIT_IMAGES} input images are allowed; got {count}"
        )


def check_edit_size(param: str, size: int, what: str = "it") -> None:
    """Check one edit input's size: an image under 50 MB, the mask under 4 MB.

    Applied to a file's size before it is read, and to the bytes themselves.

    Args:
        param: ``mask``, or the image's parameter (``image``, ``images[3]``...).
        size: Its size in bytes.
        what: What the message names (a path, or "it").

    Raises:
        ValidationError: Too large.
    """
    limit = MAX_MASK_BYTES if param == "mask" else MAX_IMAGE_BYTES
    if size >= limit:
        raise ValidationError(
            param, f"must be smaller than {limit // (1024 * 1024)} MB; {what} has {size:,} bytes"
        )


def validate_edit_images(images: list[bytes], mask: bytes | None = None) -> list[ImageInfo]:
    """Check edit inputs: 1..16 images, each PNG/WebP/JPEG under 50 MB; the mask a PNG with alpha,
    under 4 MB and the size of the first image.

    Args:
        images: The encoded input images.
        mask: The encoded mask, if any.

    Returns:
        The :class:`ImageInfo` of each image.

    Raises:
        ValidationError: On the first rule broken.
    """
    check_edit_count(len(images))
    infos = []
    for i, data in enumerate(images):
        param = "image" if len(images) == 1 else f"image[{i}]"
        check_edit_size(param, len(data))
        info = inspect_image(data, param)
        if info.format not in OUTPUT_FORMATS:
            raise ValidationError(param, f"must be PNG, WebP or JPEG, not {info.format or '?'}")
        infos.append(info)
    if mask is not None:
        check_edit_size("mask", len(mask))
        info = inspect_image(mask, "mask")
        if info.format != "png":
            raise ValidationError("mask", f"must be a PNG, not {info.format or '?'}")
        if not info.has_alpha:
            raise ValidationError(
                "mask", "must have an alpha channel (transparent pixels mark the area to edit)"
            )
        first = infos[0]
        if (info.width, info.height) != (first.width, first.height):
            raise ValidationError(
                "mask",
                f"must be the size of the first image ({first.width}x{first.height}); "
                f"it is {info.width}x{info.height}",
            )
    return infos
