"""Typed flow parameters: what the Prefect UI renders as a form (dropdowns, numbers, free text).

Every model is frozen, forbids unknown fields and checks its values with the project's own
validation (:mod:`prefect_cometapi.client.rules`, :mod:`prefect_cometapi.s3.keys`), so a bad form
fails the run before any request is sent.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    create_model,
    model_validator,
)

from prefect_cometapi.allowlist import check_s3_endpoint
from prefect_cometapi.blocks import CometAPICredentials
from prefect_cometapi.client.params import (
    DEFAULT_MODEL,
    Background,
    ImageFormat,
    Moderation,
    Quality,
    form_params,
    validated_names,
)
from prefect_cometapi.client.params import InputFidelity as ApiInputFidelity
from prefect_cometapi.client.rules import parse_size, validate_options
from prefect_cometapi.errors import ValidationError
from prefect_cometapi.forms.fields import OptionalText, empty_to_none, optional
from prefect_cometapi.models import GeneratedImage
from prefect_cometapi.s3.keys import (
    DEFAULT_ITEM_KEY_TEMPLATE,
    check_key_template,
    render_key,
    validate_bucket_name,
)
from prefect_cometapi.s3.target import saved_bucket_block
from prefect_cometapi.upscaling import plan_upscale

__all__ = ["ImageOptions", "S3Options", "UpscaleMode", "UpscaleOptions", "check_distinct_keys"]

SizePreset = Literal[
    "auto",
    "1024x1024",
    "1536x1024",
    "1024x1536",
    "1536x864",
    "864x1536",
    "2048x1152",
    "2048x2048",
    "2560x1440",
    "3840x2160",
    "2160x3840",
]
"""Request sizes offered in the UI (any valid ``WxH`` goes in ``custom_size``)."""

UpscaleTarget = Literal[
    "none", "1920x1080", "2560x1440", "3840x2160", "4096x2160", "5120x2880", "7680x4320"
]
"""Upscale targets offered in the UI (``none`` = no upscale; others via ``custom_size``)."""

UpscaleMode = Literal["fit", "cover", "stretch"]
UpscaleFormat = Literal["same", "png", "jpeg", "webp"]

Compression = optional(
    Annotated[int, Field(ge=0, le=100)], {"type": "integer", "minimum": 0, "maximum": 100}
)
"""JPEG/WebP compression 0-100; empty (``None``) for the API's default."""
LongEdge = optional(
    Annotated[int, Field(ge=16, le=7680)], {"type": "integer", "minimum": 16, "maximum": 7680}
)
"""An upscale's longer side in pixels; empty (``None``) to use the target instead."""
PresignSeconds = optional(
    Annotated[int, Field(ge=1, le=604800)], {"type": "integer", "minimum": 1, "maximum": 604800}
)
"""Lifetime of presigned links in seconds; empty (``None``) for no links."""

CredentialsBlock = Annotated[
    CometAPICredentials | str | None,
    BeforeValidator(empty_to_none),
    WithJsonSchema({"type": "string"}),
]
"""The flows' ``credentials_block``: a saved CometAPI Credentials block's name in the form (the
deployments fill in ``cometapi``), the block itself from code, or empty for the worker's
``COMETAPI_KEY``."""
InputFidelity = optional(
    ApiInputFidelity, {"type": "string", "enum": list(get_args(ApiInputFidelity))}
)
"""An edit's input fidelity; empty (``None``) for the model's default."""
OptionalItems = optional(list[dict[str, Any]], {"type": "array", "items": {"type": "object"}})
"""A batch's variable sets; empty (``None``) when they come from a file."""
OptionalUSD = optional(Annotated[float, Field(ge=0)], {"type": "number", "minimum": 0})
"""An amount in USD; empty (``None``) for no limit."""

DEFAULT_PREFIX = "cometapi/"

_FROZEN = ConfigDict(frozen=True, extra="forbid")


def _wxh(value: str | None, param: str) -> str | None:
    if value is None or not str(value).strip():
        return None
    text = str(value).strip().lower()
    try:
        dims = parse_size(text)
    except ValidationError:
        raise ValidationError(param, "must be 'WIDTHxHEIGHT', e.g. '1792x1024'", value) from None
    if dims is None:
        raise ValidationError(param, "must be 'WIDTHxHEIGHT', not 'auto'", value)
    return text


#: How the form shows the image parameters: a drop-down type and a UI default where it differs
#: from the API's, with a description. Parameters of the schema (:data:`IMAGE_PARAMS
#: <prefect_cometapi.client.params.IMAGE_PARAMS>`) not listed here appear with the schema's type,
#: default and text; ``custom_size`` is the form's own (a free ``WxH`` beside the presets).
#: The order is the form's.
IMAGE_FORM: dict[str, tuple[Any, Any]] = {
    "size": (SizePreset, Field("1024x1024", description="Size preset of the generated image.")),
    "custom_size": (
        OptionalText,
        Field(None, description="Custom WxH (e.g. 1792x1024); overrides the preset when set."),
    ),
    "quality": (Quality, Field("medium", description="Rendering quality (low is cheapest).")),
    "output_format": (ImageFormat, Field("png", description="Image format the API returns.")),
    "output_compression": (
        Compression,
        Field(None, description="Compression 0-100 for jpeg/webp (empty for png)."),
    ),
    "background": (Background, Field("auto", description="transparent needs png or webp.")),
    "moderation": (Moderation, Field("auto", description="Content moderation strictness.")),
    "n": (int, Field(1, ge=1, le=10, description="Images per prompt (each one is billed).")),
    "model": (str, Field(DEFAULT_MODEL, description="Model name.")),
    "variant": (
        int,
        Field(0, ge=0, description="Bump to get new images for an identical request (cache key)."),
    ),
}
_FORM_ONLY = ("custom_size",)


def _image_fields() -> dict[str, Any]:
    """The fields of :class:`ImageOptions`: :data:`IMAGE_FORM`, then the schema's others."""
    names = {p.name for p in form_params()}
    unknown = set(IMAGE_FORM) - names - set(_FORM_ONLY)
    if unknown:
        raise RuntimeError(f"IMAGE_FORM names parameters the schema lacks: {sorted(unknown)}")
    fields = dict(IMAGE_FORM)
    for p in form_params():
        if p.name not in fields:
            fields[p.name] = (p.annotation, Field(p.default, description=p.doc))
    return fields


class _ImageOptionsBase(BaseModel):
    """What to ask the Images API for (one request per item).

    Attributes:
        size: A size preset; ``auto`` lets the model choose.
        custom_size: Any other ``WxH`` (gpt-image-2: sides divisible by 16, long edge <= 3840,
            aspect <= 3:1); when set it wins over ``size``.
        quality: ``low`` is cheapest; ``auto`` is billed (and estimated) like ``high``.
        output_format: The format the API returns.
        output_compression: 0-100, only for jpeg/webp.
        background: ``transparent`` needs png or webp.
        moderation: ``low`` is less strict.
        n: Images per request (each is billed).
        model: The model.
        variant: Change it to get new images for the same request (the cache is keyed on it).
    """

    model_config = _FROZEN

    @model_validator(mode="after")
    def _check(self) -> _ImageOptionsBase:
        validate_options(
            **{k: v for k, v in self.request_kwargs().items() if k in validated_names()}
        )
        return self

    @property
    def request_size(self) -> str:
        """The size sent to the API: ``custom_size`` if set, else the preset."""
        return _wxh(getattr(self, "custom_size", None), "custom_size") or self.size

    def request_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``generate_image`` / ``edit_image``.

        Returns:
            Every image parameter the form holds (``size`` as :attr:`request_size`).
        """
        values = {p.name: getattr(self, p.name) for p in form_params()}
        values["size"] = self.request_size
        return values


ImageOptions = create_model(
    "ImageOptions", __base__=_ImageOptionsBase, __module__=__name__, **_image_fields()
)
ImageOptions.__doc__ = _ImageOptionsBase.__doc__


class UpscaleOptions(BaseModel):
    """Optional resize after generation (Lanczos), e.g. 1536x864 -> 3840x2160.

    A ``WxH`` target is the exact size of the result. With the default mode ``cover`` an image
    of another aspect is centre-cropped to the target's; generate at the target's aspect
    (1536x864 for 16:9 targets, 864x1536 for 9:16) to keep the whole picture. ``fit`` keeps the
    whole picture inside the target and is refused before any request when the generated size
    has another aspect (the result would be smaller than the target on one side).

    Attributes:
        target: A preset target; ``none`` for no upscale.
        custom_size: Any other ``WxH`` target; wins over ``target``.
        long_edge: Make the longer side this long instead (wins over both sizes).
        mode: How a ``WxH`` target is met: ``cover`` it exactly with a centre crop (default),
            ``fit`` the same aspect into it, or ``stretch`` to it.
        output_format: ``same`` keeps the generated format.
        quality: JPEG/WebP quality.
        sharpen: A light unsharp mask after resizing.
    """

    model_config = _FROZEN

    target: UpscaleTarget = Field(
        "none",
        description="Exact size of the result; none = keep the generated size. Generate at the "
        "same aspect (e.g. 1536x864 for 16:9) to keep the whole picture; otherwise mode cover "
        "crops it.",
    )
    custom_size: OptionalText = Field(None, description="Custom WxH target; overrides target.")
    long_edge: LongEdge = Field(None, description="Longer side in pixels; overrides both sizes.")
    mode: UpscaleMode = Field(
        "cover",
        description="cover: exactly the target, centre-cropped if the aspect differs; fit: only "
        "for images of the target's aspect (refused otherwise); stretch: exactly the target, "
        "distorted.",
    )
    output_format: UpscaleFormat = Field("same", description="Format of the upscaled file.")
    quality: int = Field(90, ge=1, le=100, description="JPEG/WebP quality of the upscale.")
    sharpen: bool = Field(False, description="Light unsharp mask after resizing.")

    @model_validator(mode="after")
    def _check(self) -> UpscaleOptions:
        _wxh(self.custom_size, "custom_size")
        return self

    @property
    def enabled(self) -> bool:
        """Whether any target is set."""
        return self.long_edge is not None or bool(self.custom_size) or self.target != "none"

    def task_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``upscale_image`` (only meaningful when :attr:`enabled`).

        Returns:
            ``size`` or ``long_edge``, ``mode``, ``output_format``, ``quality``, ``sharpen``.
        """
        kwargs: dict[str, Any] = {
            "mode": self.mode,
            "output_format": None if self.output_format == "same" else self.output_format,
            "quality": self.quality,
            "sharpen": self.sharpen,
        }
        if self.long_edge is not None:
            kwargs["long_edge"] = self.long_edge
        else:
            kwargs["size"] = _wxh(self.custom_size, "custom_size") or self.target
        return kwargs

    def check_source_size(self, request_size: str) -> None:
        """Refuse, before any request is paid for, an upscale that would fail on the images.

        The images come back at the requested size, so the upscale's output can be planned now:
        a target over the 8K pixel cap or smaller than the images would otherwise fail only
        after the API has billed them, and ``fit`` into a target of another aspect would give
        less than the target. With size ``auto`` (unknown until the images exist) only ``fit``
        to a ``WxH`` target is refused, since it may not give the target.

        Args:
            request_size: The size sent to the API (``ImageOptions.request_size``).

        Raises:
            ValidationError: ``param="upscale"`` naming the rule the target breaks.
        """
        if not self.enabled:
            return
        kwargs = self.task_kwargs()
        target = kwargs.get("size")
        dims = parse_size(request_size)
        if dims is None:
            if target is not None and self.mode == "fit":
                raise ValidationError(
                    "upscale",
                    f"mode fit cannot promise {target} from size auto (the aspect is unknown "
                    "until the image exists): choose a size of the target's aspect, or mode "
                    "cover",
                )
            return
        try:
            out, _ = plan_upscale(
                dims, size=target, long_edge=kwargs.get("long_edge"), mode=self.mode
            )
        except ValidationError as exc:
            raise ValidationError(
                "upscale", f"{exc.rule} (the images are generated at {request_size})"
            ) from None
        if target is not None and f"{out[0]}x{out[1]}" != target:
            raise ValidationError(
                "upscale",
                f"mode fit gives {out[0]}x{out[1]} from {request_size}, not the target {target}: "
                "generate at the target's aspect, or use mode cover (centre crop) or stretch",
            )


class S3Options(BaseModel):
    """Where the images go: a bucket name, or a saved prefect-aws ``S3Bucket`` block.

    Attributes:
        bucket: The bucket name (it must exist); empty when ``bucket_block`` is given. From code,
            a saved ``S3Bucket`` block is accepted here too and kept as its name.
        bucket_block: Name of a saved prefect-aws ``S3Bucket`` block (made by whoever runs the
            workers): its bucket, credentials, endpoint and ``bucket_folder`` (put before
            ``prefix``); empty when ``bucket`` is given.
        prefix: A folder for every key.
        key_template: The object key; placeholders as in
            :func:`prefect_cometapi.s3.keys.render_key` plus ``{item}`` (the item id).
        endpoint_url: An S3-compatible endpoint (MinIO, R2...); empty for AWS (or the
            ``S3Bucket`` block's own). Only endpoints the worker lists in
            ``PREFECT_COMETAPI_ALLOWED_S3_ENDPOINTS`` are accepted.
        aws_credentials_block: Name of a prefect-aws ``AwsCredentials`` block for ``bucket``;
            empty for boto3's standard chain (environment, profile, instance role).
        presign_expires: Lifetime of the presigned links in the gallery (seconds); empty for none.
    """

    model_config = _FROZEN

    bucket: OptionalText = Field(
        None, description="S3 bucket name (must exist); or give bucket_block instead."
    )
    bucket_block: OptionalText = Field(
        None,
        description="Name of a saved prefect-aws S3Bucket block (its bucket, credentials and "
        "endpoint); instead of bucket.",
    )
    prefix: str = Field(DEFAULT_PREFIX, description="Folder for every key, e.g. banners/.")
    key_template: str = Field(
        DEFAULT_ITEM_KEY_TEMPLATE,
        description="Object key template: {prefix} {date} {item} {sha256} {sha8} {ext} {size} "
        "{index} {quality} {slug} ...",
    )
    endpoint_url: OptionalText = Field(
        None,
        description="S3-compatible endpoint URL (optional; the worker must allow it in "
        "PREFECT_COMETAPI_ALLOWED_S3_ENDPOINTS).",
    )
    aws_credentials_block: OptionalText = Field(
        None, description="prefect-aws AwsCredentials block name (optional)."
    )
    presign_expires: PresignSeconds = Field(
        3600, description="Presigned link lifetime in seconds (empty: none)."
    )

    @model_validator(mode="before")
    @classmethod
    def _bucket_block_object(cls, data: Any) -> Any:
        """From code, ``bucket=<a saved S3Bucket block>`` becomes ``bucket_block=<its name>``."""
        if isinstance(data, dict) and not isinstance(data.get("bucket"), (str, type(None))):
            return {**data, "bucket": None, "bucket_block": saved_bucket_block(data["bucket"])}
        return data

    @model_validator(mode="after")
    def _check(self) -> S3Options:
        if (self.bucket is None) == (self.bucket_block is None):
            what = "not both" if self.bucket else "one of them"
            raise ValidationError(
                "s3.bucket", f"give a bucket name or bucket_block (an S3Bucket's name), {what}"
            )
        if self.bucket_block is not None and self.aws_credentials_block is not None:
            raise ValidationError(
                "s3.aws_credentials_block",
                "leave it empty with bucket_block: the S3Bucket block has its own credentials",
            )
        if self.bucket is not None:
            validate_bucket_name(self.bucket)
        check_s3_endpoint(self.endpoint_url, param="s3.endpoint_url")
        check_key_template(self.key_template, prefix=self.prefix, names=("item",))
        return self


def check_distinct_keys(
    s3: S3Options, image: ImageOptions, items: Sequence[tuple[str, str]]
) -> None:
    """Refuse a run in which two images would be stored under the same key.

    Every item's keys are rendered before the first request, with what is known now (the item
    id, its prompt, the image index, the options) and, for ``{sha256}``/``{sha8}``, a stand-in
    unique to each image; keys that coincide mean one image would overwrite another.

    Args:
        s3: The S3 options.
        image: The request options (``n`` images per item).
        items: ``(item id, prompt)`` of every item of the run.

    Raises:
        ValidationError: ``param="key_template"`` listing the items whose keys collide.
    """
    width, height = parse_size(image.request_size) or (1024, 1024)
    now = datetime.now(timezone.utc)
    owners: dict[str, list[str]] = {}
    for item_id, prompt in items:
        for index in range(image.n):
            stand_in = hashlib.sha256(f"{item_id}\0{index}".encode()).hexdigest()
            probe = GeneratedImage(
                data=b"", format=image.output_format, width=width, height=height,
                sha256=stand_in, model=image.model, prompt=prompt, index=index,
                params={"quality": image.quality},
            )  # fmt: skip
            key = render_key(s3.key_template, probe, prefix=s3.prefix, now=now, item=item_id)
            owners.setdefault(key, []).append(item_id if image.n == 1 else f"{item_id}[{index}]")
    clashes = [(key, names) for key, names in owners.items() if len(names) > 1]
    if clashes:
        shown = "; ".join(f"{', '.join(names[:5])} -> {key}" for key, names in clashes[:5])
        more = f" (and {len(clashes) - 5} more keys)" if len(clashes) > 5 else ""
        raise ValidationError(
            "key_template",
            f"images would overwrite each other under the same key: {shown}{more}; add {{item}}"
            ", {index} or {sha8}",
            s3.key_template,
        )
