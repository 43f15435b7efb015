"""A run's keys are rendered before its first request: no image may overwrite another."""

from __future__ import annotations

import pytest

from prefect_cometapi.errors import ValidationError
from prefect_cometapi.flows import ImageOptions, S3Options
from prefect_cometapi.forms.options import check_distinct_keys

ITEMS = [("lamp", "A lamp on a desk"), ("lamp-2", "A lamp on a desk"), ("chair", "A red chair")]


def s3(template: str) -> S3Options:
    return S3Options(bucket="keys-bucket", prefix="out/", key_template=template)


@pytest.mark.parametrize(
    "template",
    ["{item}-{index}.{ext}", "{prefix}{date}/{item}-{sha8}.{ext}", "{slug}-{sha256}.{ext}"],
)
def test_distinct_keys_pass(template: str) -> None:
    check_distinct_keys(s3(template), ImageOptions(n=2), ITEMS)


@pytest.mark.parametrize(
    ("template", "n", "listed"),
    [
        ("{slug}.{ext}", 1, "lamp, lamp-2 -> out/a-lamp-on-a-desk.png"),
        ("{date}/banner.{ext}", 1, "lamp, lamp-2, chair -> out/"),
        ("{item}.{ext}", 2, "lamp[0], lamp[1] -> out/lamp.png"),
        ("{quality}-{size}.{ext}", 1, "lamp, lamp-2, chair"),
    ],
)
def test_colliding_keys_are_refused_listing_the_items(template: str, n: int, listed: str) -> None:
    with pytest.raises(ValidationError) as info:
        check_distinct_keys(s3(template), ImageOptions(n=n), ITEMS)
    assert info.value.param == "key_template"
    assert "would overwrite each other" in info.value.rule and listed in info.value.rule
