"""The chunk flow checks its parameters again (issue 23, item 4): unit rows without a server.

The flow-level rows (the chunk run by hand, zero requests) are in
``tests/reliability/test_hostile_parameters.py``; the fan-out itself in ``tests/test_fleet.py``.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest

from prefect_cometapi import CometAPICredentials
from prefect_cometapi.batching.chunks import ChunkItem, check_chunk, chunk_parameters
from prefect_cometapi.batching.sources import build_items
from prefect_cometapi.billing.caps import MAX_COST_ENV
from prefect_cometapi.errors import BudgetExceededError, ValidationError
from prefect_cometapi.flows import ImageOptions, S3Options, UpscaleOptions

IMAGE = ImageOptions(size="1024x1024", quality="low")
S3 = S3Options(bucket="chunk-bucket", presign_expires=None)


def _check(items: list[ChunkItem], **changes: Any) -> float | None:
    options: dict[str, Any] = {
        "s3": S3, "image": IMAGE, "upscale": UpscaleOptions(),
        "credentials": CometAPICredentials(api_key="sk-x"), "max_cost_usd": None,
        "concurrency_limit": None, "rate_limit": None, "spend_limit": None,
    }  # fmt: skip
    return check_chunk(items, **{**options, **changes})


def test_the_ids_build_items_makes_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MAX_COST_ENV, raising=False)
    rows = [{"id": "Lamp/1"}, {"id": "x" * 200}, {"id": "x" * 200}, {}, {"id": "_a"}]
    items = [
        ChunkItem(item_id=i.item_id, index=i.index, prompt=f"p {i.index}")
        for i in build_items(rows, None)
    ]
    assert _check(items) > 0


@pytest.mark.parametrize(
    ("items", "rule"),
    [
        ([], "at least one"),
        ([ChunkItem(item_id="a", index=0, prompt="p"), ChunkItem(item_id="a", index=1, prompt="q")],
         "share an id"),
        ([ChunkItem(item_id="a", index=0, prompt="p"), ChunkItem(item_id="b", index=0, prompt="q")],
         "share an id or a position"),
        ([ChunkItem(item_id="../x", index=0, prompt="p")], "item ids are"),
        ([ChunkItem(item_id="a\u202eb", index=0, prompt="p")], "item ids are"),
        ([ChunkItem(item_id="a", index=0, prompt=" ")], "non-empty"),
    ],
)  # fmt: skip
def test_what_the_parent_refuses_the_chunk_refuses(items: list[ChunkItem], rule: str) -> None:
    with pytest.raises(ValidationError, match=rule):
        _check(items)


def test_the_budget_is_checked_again_under_the_worker_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    items = [ChunkItem(item_id=f"i{n}", index=n, prompt="p") for n in range(3)]
    with pytest.raises(BudgetExceededError):
        _check(items, max_cost_usd=0.0001)
    monkeypatch.setenv(MAX_COST_ENV, "0.0001")
    with pytest.raises(BudgetExceededError):
        _check(items)


def test_the_parent_hands_its_budget_to_the_chunks() -> None:
    shared = dict(
        s3=S3, image=IMAGE, upscale=UpscaleOptions(), concurrency=4, credentials_block=None,
        base_url=None, concurrency_limit=None, rate_limit="", run_time=datetime.now(timezone.utc),
    )  # fmt: skip
    assert chunk_parameters(**shared, max_cost_usd=0)["max_cost_usd"] == 0
    assert "max_cost_usd" not in chunk_parameters(
        **shared
    ) and "rate_limit" not in chunk_parameters(**shared)
