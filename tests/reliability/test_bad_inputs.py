"""Issue 6, item 7: the bad input matrix, one table across the client, the tasks and the flows.

Every row is one bad input given at one layer: the sync or async ``CometAPIClient``, a task
(``generate_image``, ``edit_image``, ``render_prompt``, ``upscale_image``, ``upload_to_s3``) or
a flow (``generate_and_upload``, ``edit_and_upload``, ``batch_generate``). Each must fail with a
typed error whose message names the parameter and the rule, before a single request reaches the
emulator and before anything is written to S3.

The rows cover every rule of the foundation's validation list (prompt, ``n``, the gpt-image-2
size rules, the older models' fixed sizes, the enums, compression, transparency, edit images,
masks, ``input_fidelity``, the API key) plus templates, the upscale cap, S3 bucket names and
keys, unreadable and non-image inputs, and a decompression-bomb PNG. Flow parameters given as
JSON (what a deployment receives) are checked by Prefect against the typed models, whose
validators run the same rules, so those rows expect Prefect's ``ParameterTypeError`` carrying
our message. Each row salts its prompt, so no cached result can hide a request.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import re
import struct
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
from PIL import Image
from prefect.exceptions import ParameterTypeError
from reliability_support import FailingRuns

from prefect_cometapi import AsyncCometAPIClient, CometAPIClient, CometAPICredentials
from prefect_cometapi.client.rules import MAX_PROMPT_CHARS
from prefect_cometapi.errors import MissingAPIKeyError, ValidationError
from prefect_cometapi.flows import (
    ImageOptions,
    S3Options,
)
from prefect_cometapi.models import GeneratedImage
from prefect_cometapi.tasks import (
    edit_image,
    generate_image,
    render_prompt,
    upload_to_s3,
    upscale_image,
)

# Tasks called outside a flow (library use) cannot send their logs to the API; Prefect says so.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Logger 'prefect.task_runs' attempted to send logs:UserWarning"
)

#: What a decompression bomb claims to be: 10 billion pixels in a file of about 100 bytes.
BOMB_SIDE = 100_000


# ------------------------------------------------------------------------------ input files


def encode(size: tuple[int, int] = (1024, 1024), fmt: str = "PNG", mode: str = "RGB") -> bytes:
    """A solid image of ``size`` encoded as ``fmt``."""
    buf = io.BytesIO()
    colour: Any = (0, 0, 0, 0) if mode == "RGBA" else (20, 120, 200)
    Image.new(mode, size, colour).save(buf, fmt)
    return buf.getvalue()


def bomb_png(width: int = BOMB_SIDE, height: int = BOMB_SIDE) -> bytes:
    """A valid PNG header claiming ``width`` x ``height`` pixels, with almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def generated(data: bytes, fmt: str = "png", size: tuple[int, int] = (1024, 1024)) -> Any:
    """A ``GeneratedImage`` as the image tasks would return it."""
    return GeneratedImage(
        data=data,
        format=fmt,
        width=size[0],
        height=size[1],
        sha256=hashlib.sha256(data).hexdigest(),
        model="gpt-image-2",
        prompt="a test image",
    )


@dataclass
class Ctx(FailingRuns):
    """What a row needs: the servers, the flows with good defaults (:class:`FailingRuns`), files.

    Attributes:
        base_url: The emulator's base URL.
        api_key: The key it accepts.
        bucket: The test's fresh bucket on moto.
        endpoint_url: moto's endpoint.
        tmp: A directory for input files.
    """

    base_url: str
    api_key: str
    bucket: str
    endpoint_url: str
    tmp: Path
    edit_size: ClassVar[str] = "auto"

    def good_image(self) -> str:
        return self.file("good.png", encode())

    def file(self, name: str, data: bytes) -> str:
        """Write ``data`` to ``name`` in the temp dir; return its path."""
        path = self.tmp / name
        path.write_bytes(data)
        return str(path)

    def s3_json(self, **changes: Any) -> dict[str, Any]:
        """Good S3 options as JSON (what a deployment run receives), with ``changes``."""
        return {"bucket": self.bucket, "endpoint_url": self.endpoint_url, **changes}

    def client(self, call: str, *args: Any, **kwargs: Any) -> Any:
        """Call ``generate``/``edit`` on a sync client (retries on: nothing may go out)."""
        with CometAPIClient(self.api_key, base_url=self.base_url, max_retries=3) as client:
            return getattr(client, call)(*args, **kwargs)

    def async_client(self, call: str, *args: Any, **kwargs: Any) -> Any:
        """Call ``generate``/``edit`` on an async client."""

        async def main() -> Any:
            async with AsyncCometAPIClient(
                self.api_key, base_url=self.base_url, max_retries=3
            ) as client:
                return await getattr(client, call)(*args, **kwargs)

        return asyncio.run(main())


@dataclass(frozen=True)
class Case:
    """One bad input.

    Attributes:
        id: The row's name.
        layer: ``client``, ``task`` or ``flow`` (flows must also leave S3 untouched).
        run: Makes the call that must fail.
        error: The exception type expected.
        param: The parameter the message must name (and ``ValidationError.param``).
        rule: A regex the message must match: the rule, in the message's own words.
    """

    id: str
    layer: str
    run: Callable[[Ctx], Any]
    error: type[BaseException]
    param: str | None
    rule: str


V = ValidationError
PT = ParameterTypeError
LONG_PROMPT = "x" * (MAX_PROMPT_CHARS + 1)

CASES: list[Case] = [
    # ---------------------------------------------------------------- the client, sync and async
    Case("client-empty-prompt", "client", lambda c: c.client("generate", ""), V, "prompt",
         "must be a non-empty string"),
    Case("async-client-prompt-over-32000", "client",
         lambda c: c.async_client("generate", LONG_PROMPT), V, "prompt",
         "at most 32,000 characters; it has 32,001"),
    Case("client-n-11", "client", lambda c: c.client("generate", c.prompt(), n=11), V, "n",
         "integer from 1 to 10"),
    Case("client-edit-size-not-divisible-by-16", "client",
         lambda c: c.client("edit", c.prompt(), encode(), size="1000x1008"), V, "size",
         "divisible by 16"),
    Case("client-aspect-over-3-to-1", "client",
         lambda c: c.client("generate", c.prompt(), size="3840x1136"), V, "size",
         "aspect ratio must be between 1:3 and 3:1"),
    Case("async-client-too-many-pixels", "client",
         lambda c: c.async_client("generate", c.prompt(), size="3840x2176"), V, "size",
         "8,294,400 pixels"),
    Case("client-gpt-image-1-custom-size", "client",
         lambda c: c.client("generate", c.prompt(), model="gpt-image-1", size="1792x1024"), V,
         "size", "gpt-image-1 accepts only 1024x1024, 1536x1024, 1024x1536"),
    Case("client-output-format-gif", "client",
         lambda c: c.client("generate", c.prompt(), output_format="gif"), V, "output_format",
         "one of png, jpeg, webp"),
    Case("client-compression-101", "client",
         lambda c: c.client("generate", c.prompt(), output_format="jpeg", output_compression=101),
         V, "output_compression", "integer from 0 to 100"),
    Case("async-client-mask-jpeg", "client",
         lambda c: c.async_client("edit", c.prompt(), encode(), mask=encode(fmt="JPEG")), V,
         "mask", "must be a PNG, not jpeg"),
    Case("client-edit-decompression-bomb", "client",
         lambda c: c.client("edit", c.prompt(), bomb_png()), V, "image",
         "too large to decode safely"),
    Case("client-unreadable-path", "client",
         lambda c: c.client("edit", c.prompt(), "/proc/self/mem"), V, "image",
         r"could not be read from \.\.\./mem"),
    Case("client-no-api-key", "client", lambda c: CometAPIClient(None, base_url=c.base_url),
         MissingAPIKeyError, None, "COMETAPI_KEY"),
    # ---------------------------------------------------------------- the tasks
    Case("generate_image-n-0", "task",
         lambda c: generate_image(c.prompt(), c.credentials, n=0), V, "n",
         "integer from 1 to 10"),
    Case("generate_image-long-edge-over-3840", "task",
         lambda c: generate_image(c.prompt(), c.credentials, size="4096x2048"), V, "size",
         "long edge must be at most 3840"),
    Case("generate_image-quality-ultra", "task",
         lambda c: generate_image(c.prompt(), c.credentials, quality="ultra"), V, "quality",
         "one of low, medium, high, auto"),
    Case("generate_image-background-none", "task",
         lambda c: generate_image(c.prompt(), c.credentials, background="none"), V, "background",
         "one of transparent, opaque, auto"),
    Case("generate_image-moderation-strict", "task",
         lambda c: generate_image(c.prompt(), c.credentials, moderation="strict"), V,
         "moderation", "one of low, auto"),
    Case("generate_image-compression-with-png", "task",
         lambda c: generate_image(c.prompt(), c.credentials, output_compression=50), V,
         "output_compression", "only to output_format 'jpeg' or 'webp', not png"),
    Case("generate_image-transparent-jpeg", "task",
         lambda c: generate_image(
             c.prompt(), c.credentials, background="transparent", output_format="jpeg"
         ), V, "background", "'transparent' needs output_format 'png' or 'webp', not jpeg"),
    Case("generate_image-no-api-key", "task",
         lambda c: generate_image(c.prompt(), CometAPICredentials(base_url=c.base_url)),
         MissingAPIKeyError, None, "COMETAPI_KEY"),
    Case("edit_image-too-few-pixels", "task",
         lambda c: edit_image(c.prompt(), encode(), credentials=c.credentials, size="1008x640"),
         V, "size", "between 655,360 and 8,294,400 pixels"),
    Case("edit_image-17-images", "task",
         lambda c: edit_image(c.prompt(), [encode((64, 64))] * 17, credentials=c.credentials),
         V, "image", "at most 16 input images"),
    Case("edit_image-mask-without-alpha", "task",
         lambda c: edit_image(c.prompt(), encode(), mask=encode(), credentials=c.credentials), V,
         "mask", "must have an alpha channel"),
    Case("edit_image-input-fidelity-gpt-image-2", "task",
         lambda c: edit_image(
             c.prompt(), encode(), credentials=c.credentials, input_fidelity="low"
         ), V, "input_fidelity", "not supported by gpt-image-2"),
    Case("edit_image-gpt-image-1-mini-size", "task",
         lambda c: edit_image(
             c.prompt(), encode(), credentials=c.credentials, model="gpt-image-1-mini",
             size="2048x2048",
         ), V, "size", "gpt-image-1-mini accepts only"),
    Case("edit_image-missing-path", "task",
         lambda c: edit_image(c.prompt(), str(c.tmp / "nope.png"), credentials=c.credentials),
         V, "images", r"file not found: .*nope\.png"),
    Case("edit_image-text-file-as-image", "task",
         lambda c: edit_image(
             c.prompt(), c.file("notes.png", b"just some text\n"), credentials=c.credentials
         ), V, "image", "not a readable image"),
    Case("render_prompt-syntax-error", "task",
         lambda c: render_prompt("A banner for {{ name }\nin {% if %}", {"name": "x"}), V,
         "template", "syntax error on line 1"),
    Case("render_prompt-every-missing-variable", "task",
         lambda c: render_prompt("{{ product }} in {{ colour }} on {{ table }}", {"colour": 1}),
         V, "variables", "missing template variables: product, table"),
    Case("upscale_image-over-the-pixel-cap", "task",
         lambda c: upscale_image(generated(encode()), factor=10), V, "factor",
         "10240x10240 = 104,857,600 pixels, over the limit of 33,177,600"),
    Case("upscale_image-decompression-bomb", "task",
         lambda c: upscale_image(generated(bomb_png(), size=(BOMB_SIDE, BOMB_SIDE)), factor=2),
         V, "image", "too large to decode safely"),
    Case("upload_to_s3-bucket-uppercase", "task",
         lambda c: upload_to_s3(generated(encode()), "Bad_Bucket", endpoint_url=c.endpoint_url),
         V, "bucket", "lowercase letters, digits, dots and hyphens"),
    Case("upload_to_s3-bucket-as-uri", "task",
         lambda c: upload_to_s3(generated(encode()), f"s3://{c.bucket}",
                                endpoint_url=c.endpoint_url),
         V, "bucket", "bare bucket name"),
    Case("upload_to_s3-key-escapes-prefix", "task",
         lambda c: upload_to_s3(generated(encode()), c.bucket, key_template="../{sha8}.{ext}",
                                prefix="safe/", endpoint_url=c.endpoint_url),
         V, "key_template", r"'\.\.' path segments are not allowed"),
    Case("upload_to_s3-absolute-key", "task",
         lambda c: upload_to_s3(generated(encode()), c.bucket, key_template="/etc/{sha8}.{ext}",
                                endpoint_url=c.endpoint_url),
         V, "key_template", "must be relative"),
    # ---------------------------------------------------------------- the flows
    Case("generate_and_upload-blank-prompt", "flow",
         lambda c: c.generate_flow(prompt="   \n  "), V, "prompt", "non-empty"),
    Case("generate_and_upload-template-syntax", "flow",
         lambda c: c.generate_flow(prompt=c.prompt("{% for x in %}{{ x }}")), V, "template",
         "syntax error"),
    Case("generate_and_upload-missing-variables", "flow",
         lambda c: c.generate_flow(prompt=c.prompt("{{ b }} {{ a }} {{ c.d }}"),
                                   variables={"c": {"d": 1}}),
         V, "variables", "missing template variables: a, b;"),
    Case("generate_and_upload-no-api-key", "flow",
         lambda c: c.generate_flow(credentials_block=None, base_url=c.base_url),
         MissingAPIKeyError, None, "COMETAPI_KEY"),
    Case("generate_and_upload-json-size-not-16", "flow",
         lambda c: c.generate_flow(image={"custom_size": "1024x1000"}), PT, "size",
         "divisible by 16"),
    Case("generate_and_upload-json-compression-png", "flow",
         lambda c: c.generate_flow(image={"output_compression": 10}), PT, "output_compression",
         "not png"),
    Case("generate_and_upload-json-bad-bucket", "flow",
         lambda c: c.generate_flow(s3=c.s3_json(bucket="192.168.0.1")), PT, "bucket",
         "must not look like an IP address"),
    Case("generate_and_upload-json-absolute-key", "flow",
         lambda c: c.generate_flow(s3=c.s3_json(prefix="", key_template="/{item}-{sha8}.{ext}")),
         PT, "key_template", "must be relative"),
    Case("generate_and_upload-upscale-over-the-cap", "flow",
         lambda c: c.generate_flow(upscale={"custom_size": "10000x10000"}), V, "upscale",
         "100,000,000 pixels, over the limit"),
    Case("generate_and_upload-upscale-long-edge-over-the-cap", "flow",
         lambda c: c.generate_flow(upscale={"long_edge": 7680}), V, "upscale",
         "7680x7680 = 58,982,400 pixels, over the limit.*generated at 1024x1024"),
    Case("generate_and_upload-upscale-fit-other-aspect", "flow",
         lambda c: c.generate_flow(upscale={"target": "3840x2160", "mode": "fit"}), V,
         "upscale", "mode fit gives 2160x2160 from 1024x1024, not the target 3840x2160"),
    Case("generate_and_upload-upscale-fit-from-auto", "flow",
         lambda c: c.generate_flow(image={"size": "auto"},
                                   upscale={"target": "1920x1080", "mode": "fit"}), V,
         "upscale", "mode fit cannot promise 1920x1080 from size auto"),
    Case("edit_and_upload-input-fidelity-gpt-image-2", "flow",
         lambda c: c.edit_flow(input_fidelity="high"), V, "input_fidelity",
         "not supported by gpt-image-2"),
    Case("edit_and_upload-gif-input", "flow",
         lambda c: c.edit_flow(images=[c.file("in.gif", encode(fmt="GIF"))]), V, "image",
         "must be PNG, WebP or JPEG, not gif"),
    Case("edit_and_upload-mask-size-differs", "flow",
         lambda c: c.edit_flow(mask=c.file("mask.png", encode((1024, 1536), mode="RGBA"))), V,
         "mask", "must be the size of the first image \\(1024x1024\\); it is 1024x1536"),
    Case("edit_and_upload-decompression-bomb", "flow",
         lambda c: c.edit_flow(images=[c.file("bomb.png", bomb_png())]), V, "image",
         "too large to decode safely"),
    Case("edit_and_upload-unreadable-file", "flow",
         lambda c: c.edit_flow(images=["/proc/self/mem"]), V, "images",
         "/proc/self/mem is outside the folders inputs may be read from"),
    Case("edit_and_upload-directory-as-image", "flow",
         lambda c: c.edit_flow(images=[str(c.tmp)]), V, "images", "is a directory"),
    Case("edit_and_upload-17-images", "flow",
         lambda c: c.edit_flow(images=[c.file("small.png", encode((64, 64)))] * 17), V, "image",
         "at most 16 input images are allowed; got 17"),
    Case("batch_generate-item-prompt-over-32000", "flow",
         lambda c: c.batch_flow(template=c.prompt("{{ text }}"),
                                items=[{"id": "ok", "text": "fine"},
                                       {"id": "huge", "text": LONG_PROMPT}]),
         V, "items", "1 item\\(s\\) cannot be rendered: huge: must be at most 32,000"),
    Case("batch_generate-every-missing-variable", "flow",
         lambda c: c.batch_flow(template=c.prompt("{{ name }} in {{ colour }} on {{ table }}"),
                                items=[{"id": "a", "name": "A"}, {"id": "b", "colour": "red"}]),
         V, "items", "2 item\\(s\\) cannot be rendered: a: missing template variables: "
                     "colour, table;.* b: missing template variables: name, table;"),
    Case("batch_generate-json-n-0", "flow", lambda c: c.batch_flow(image={"n": 0}), PT,
         "image.n", "greater than or equal to 1"),
    Case("batch_generate-json-legacy-size", "flow",
         lambda c: c.batch_flow(image={"model": "gpt-image-1.5", "size": "1536x864"}), PT,
         "size", "gpt-image-1.5 accepts only"),
    Case("batch_generate-json-reserved-bucket", "flow",
         lambda c: c.batch_flow(s3=c.s3_json(bucket="xn--images")), PT, "bucket",
         "reserves this bucket name prefix"),
    Case("batch_generate-no-api-key", "flow",
         lambda c: c.batch_flow(credentials_block=None, base_url=c.base_url),
         MissingAPIKeyError, None, "COMETAPI_KEY"),
    Case("batch_generate-upscale-downscale", "flow",
         lambda c: c.batch_flow(upscale={"target": "1920x1080", "mode": "cover"},
                                image=ImageOptions(size="2560x1440", quality="low")),
         V, "upscale", "downscale, not an upscale"),
]  # fmt: skip


def test_the_matrix_covers_every_layer_and_entry_point() -> None:
    """The table is the one place for bad inputs: every layer and entry point has rows."""
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 25
    layers = {case.layer for case in CASES}
    assert layers == {"client", "task", "flow"}
    for name in (
        "client", "async-client", "generate_image", "edit_image", "render_prompt",
        "upscale_image", "upload_to_s3", "generate_and_upload", "edit_and_upload",
        "batch_generate",
    ):  # fmt: skip
        assert any(i.startswith(name + "-") for i in ids), f"no row for {name}"


def test_the_bomb_is_tiny_and_claims_ten_billion_pixels() -> None:
    data = bomb_png()
    assert len(data) < 200
    assert data[16:24] == struct.pack(">II", BOMB_SIDE, BOMB_SIDE)
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(data))


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_refused_with_a_typed_readable_error_and_nothing_sent(
    case: Case,
    emulator: Any,
    api_key: str,
    s3_server: Any,
    s3_bucket: str,
    s3_client: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("COMETAPI_KEY", raising=False)
    ctx = Ctx(
        base_url=emulator.base_url,
        api_key=api_key,
        credentials=CometAPICredentials(api_key=api_key, base_url=emulator.base_url, max_retries=0),
        s3=S3Options(bucket=s3_bucket, endpoint_url=s3_server.endpoint_url, presign_expires=None),
        bucket=s3_bucket,
        endpoint_url=s3_server.endpoint_url,
        tmp=tmp_path,
        salt=uuid.uuid4().hex[:10],
    )

    with pytest.raises(BaseException) as info:  # noqa: PT011 - the exact type is checked below
        case.run(ctx)

    error = info.value
    text = str(error)
    assert type(error) is case.error, f"{type(error).__name__}: {text}"
    if isinstance(error, ValidationError):
        assert error.param == case.param, text
        assert text.startswith(f"Invalid {case.param!r}: ") and "No request was sent" in text
    elif case.param is not None:
        assert case.param in text, text
    assert re.search(case.rule, text, re.DOTALL), f"{case.rule!r} not in {text!r}"
    assert api_key not in text and "Traceback" not in text
    assert len(text) < 2000, "a readable error, not a dump"

    assert emulator.requests == [], f"{len(emulator.requests)} request(s) reached the API"
    assert emulator.billed_images == 0
    listing = s3_client.list_objects_v2(Bucket=s3_bucket)
    assert listing.get("KeyCount", 0) == 0, listing.get("Contents")
    assert not s3_client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads")
