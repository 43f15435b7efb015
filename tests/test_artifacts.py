"""The gallery and tables as the Prefect UI receives them, without a browser.

What the UI renders was checked in headless Chromium (``tools/ui_check.py``): plain
``![x](data:image/...)`` images show, a linked image ``[![x](u)](u)`` shows as raw text. These
tests pin that shape on summaries built from real images.
"""

from __future__ import annotations

import hashlib
import io
import re
from unittest.mock import ANY

import pytest
from flow_checks import assert_gallery_shape
from PIL import Image

from prefect_cometapi.models import GeneratedImage, ImageResult
from prefect_cometapi.reports.artifacts import (
    PRESIGNED_LINKS_ENV,
    details_table,
    gallery_markdown,
    objects_table,
    results_description,
    results_table,
)
from prefect_cometapi.reports.outcomes import DeliveredImage, ItemOutcome, RunSummary
from prefect_cometapi.reports.previews import PREVIEWED_ITEMS, with_previews


def _image(size: tuple[int, int], mode: str = "RGB", fmt: str = "png") -> GeneratedImage:
    colour = (200, 40, 40, 0) if mode == "RGBA" else (200, 40, 40)
    out = io.BytesIO()
    Image.new(mode, size, colour).save(out, fmt.upper())
    data = out.getvalue()
    return GeneratedImage(
        data=data,
        format=fmt,
        width=size[0],
        height=size[1],
        sha256=hashlib.sha256(data).hexdigest(),
        model="gpt-image-2",
        prompt="p",
    )


def _outcome(index: int, image: GeneratedImage, url: str | None = None) -> ItemOutcome:
    item = f"item-{index:02d}"
    stored = DeliveredImage(
        uri=f"s3://bucket/out/{item}.png",
        bucket="bucket",
        key=f"out/{item}.png",
        url=url,
        sha256=image.sha256,
        size="3840x2160",
        format=image.format,
        bytes=len(image.data),
    )
    result = ImageResult(images=[image], model="gpt-image-2", params={})
    return ItemOutcome(
        item_id=item,
        index=index,
        status="delivered",
        prompt_excerpt="a prompt",
        size=image.size,
        quality="low",
        images=with_previews([stored], result, index),
        cost_usd=0.003,
    )


def test_gallery_previews_are_plain_embedded_images_with_uri_link_and_local_copy() -> None:
    source = _image((1536, 864))
    url = "https://s3.example/bucket/out/item-00.png?X-Amz-Signature=abc"
    outcomes = [_outcome(0, source, url), _outcome(1, _image((1024, 1536), "RGBA"))]
    failed = ItemOutcome(
        item_id="bad",
        index=2,
        status="failed",
        prompt_excerpt="x",
        size="1024x1024",
        quality="low",
        error_code="moderation_blocked",
        error="refused",
    )
    summary = RunSummary.from_outcomes("batch-generate", [*outcomes, failed])
    local = {outcomes[0].images[0].uri: "/home/me/demo-output/item-00.png"}

    markdown = gallery_markdown(summary, "Batch results", local)

    assert assert_gallery_shape(markdown, previews=2) == [(320, 180), (213, 320)]
    lines = markdown.split("\n")
    first = lines[lines.index("![item-00](" + outcomes[0].images[0].preview + ")") + 2]
    assert " · s3://bucket/out/item-00.png" in first
    assert "full size" not in first and url not in markdown  # presigned links: off by default
    assert "local copy /home/me/demo-output/item-00.png" in first
    assert first.startswith("3840x2160 png, $0.0030 · ") and first.endswith(" · prompt: a prompt")
    second = lines[lines.index("![item-01](" + outcomes[1].images[0].preview + ")") + 2]
    assert "s3://bucket/out/item-01.png" in second and "full size" not in second
    assert "**bad** (moderation_blocked): refused · prompt: x" in markdown
    assert "**Total cost: $0.0060** (" in markdown


def test_presigned_links_are_in_the_gallery_only_when_the_worker_allows_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = "https://s3.example/bucket/out/item-00.png?X-Amz-Signature=abc"
    summary = RunSummary.from_outcomes("batch-generate", [_outcome(0, _image((64, 64)), url)])
    monkeypatch.setenv(PRESIGNED_LINKS_ENV, "1")
    assert f"[full size]({url})" in gallery_markdown(summary, "t")
    odd = "https://s3.example/b/x.png?a=1)![t](http://attacker/t.png"
    summary.outcomes[0].images[0].url = odd
    assert "attacker" not in gallery_markdown(summary, "t")


def test_items_after_the_previewed_ones_are_one_line_each() -> None:
    source = _image((64, 64))
    outcomes = [_outcome(i, source) for i in range(PREVIEWED_ITEMS + 2)]
    markdown = gallery_markdown(RunSummary.from_outcomes("f", outcomes), "t")
    assert_gallery_shape(markdown, previews=PREVIEWED_ITEMS)
    for late in outcomes[PREVIEWED_ITEMS:]:
        assert f"- **{late.item_id}**: 3840x2160 png" in markdown
        assert late.images[0].preview is None


def test_results_table_holds_the_four_columns_read_first_details_and_objects_the_rest() -> None:
    summary = RunSummary.from_outcomes("f", [_outcome(0, _image((64, 64)))])
    assert results_table(summary) == [
        {"item": "item-00", "status": "delivered", "cost": "$0.0030", "object": "item-00.png"}
    ]
    assert results_description(summary).startswith(
        "Objects in s3://bucket/out/ (full S3 URIs in the objects table). 1/1 items delivered, "
        "0 failed, 1 images, $0.0030"
    )
    (detail,) = details_table(summary)
    assert detail == {
        "item": "item-00",
        "size": "64x64",
        "quality": "low",
        "output_size": "3840x2160",
        "input_tokens": 0,
        "output_tokens": 0,
        "cached": False,
        "seconds": 0.0,
    }
    (stored,) = objects_table(summary)
    assert stored == {"item": "item-00", "s3_uri": "s3://bucket/out/item-00.png", "bytes": ANY}
    assert stored["bytes"] == summary.outcomes[0].images[0].bytes > 0


def test_every_cost_in_the_artifacts_has_one_format() -> None:
    outcomes = [_outcome(0, _image((64, 64))), _outcome(1, _image((64, 64)))]
    outcomes[1] = outcomes[1].model_copy(update={"cost_usd": 0.0, "cached": True})
    summary = RunSummary.from_outcomes("f", outcomes, estimated_cost_usd=0.012345)
    texts = [
        gallery_markdown(summary, "t"),
        results_description(summary),
        *(str(row["cost"]) for row in results_table(summary)),
    ]
    costs = [cost for text in texts for cost in re.findall(r"\$[0-9][0-9,.]*[0-9]", text)]
    assert len(costs) >= 6, costs
    assert all(re.fullmatch(r"\$\d+\.\d{4}", cost) for cost in costs), costs
    assert "$0.0000" in costs and "$0.0123" in costs
