"""Issue 6, item 6: a batch of 100+ items under a mix of faults loses nothing and pays once.

The emulator injects 15 % 429 (with a short Retry-After), 5 % 503, 2 % dropped connections and
1 % responses slower than the client's read timeout; a few items are refused by the content
policy. Every item must end delivered (bytes in S3, SHA-256 verified by S3 and by us) or failed
with its reason; the emulator billed each delivered item exactly once plus the answers the
client gave up on (the "slow" ones and, on a loaded machine, any other answer that came after
the client's read timeout: proven by the client's next attempt of the same call, see
``abandoned_answers``), billed by the API although nobody read them; and no request is ever
sent again after an answer that retrying cannot fix.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections import Counter
from typing import Any

from reliability_support import (
    SMALL_IMAGE,
    abandoned_answers,
    assert_accounted,
    assert_delivered_intact,
    assert_no_retry_after_final_error,
    batch_items,
    batch_template,
    by_prompt,
    s3_options,
    small_image,
)

from prefect_cometapi import CometAPIClient, CometAPICredentials
from prefect_cometapi.client.core import CALL_ATTEMPT_HEADER, CALL_ID_HEADER
from prefect_cometapi.flows import RunSummary, batch_generate

N_ITEMS = 104
MODERATED = (5, 37, 71, 100)
READ_TIMEOUT_S = 3.0
SLOW_S = READ_TIMEOUT_S + 1.5
FAULT_RATES = {"rate_429": 0.15, "rate_503": 0.05, "rate_drop": 0.02, "rate_slow": 0.01}


def test_fault_mix_every_item_delivered_or_reported_and_nothing_paid_twice(
    emulator: Any,
    api_key: str,
    s3_server: Any,
    s3_bucket: str,
    s3_client: Any,
    fast_task_retries: Any,
) -> None:
    emulator.configure(
        **FAULT_RATES, retry_after_s=0.05, slow_s=SLOW_S, latency_s=0.02, seed=20260421
    )
    # One of each fault up front, so a lucky draw cannot leave a kind untested.
    emulator.script("slow", "drop", "503", "429", "429")
    credentials = CometAPICredentials(
        api_key=api_key,
        base_url=emulator.base_url,
        read_timeout=READ_TIMEOUT_S,
        connect_timeout=2.0,
        max_retries=2,
    )
    template = batch_template(f"faults-{uuid.uuid4().hex[:8]}")
    summary = batch_generate(
        s3=s3_options(bucket=s3_bucket, endpoint_url=s3_server.endpoint_url, prefix="mix/"),
        template=template,
        items=batch_items(N_ITEMS, moderated=MODERATED),
        image=small_image(),
        concurrency=8,
        credentials_block=credentials,
    )
    emulator.wait_idle(timeout=SLOW_S + 10)  # the abandoned slow answers are still billed
    records = emulator.requests

    # Nothing lost: every item is delivered or failed with a reason, exactly once.
    assert isinstance(summary, RunSummary)
    assert_accounted(summary, N_ITEMS)
    failed = {o.item_id: o for o in summary.outcomes if o.status == "failed"}
    assert sorted(failed) == [f"item-{i:03d}" for i in MODERATED], summary.failures
    for outcome in failed.values():
        assert outcome.error_code == "moderation_blocked"
        assert "safety system" in (outcome.error or "")
    assert summary.delivered == N_ITEMS - len(MODERATED)

    # Delivered means: in S3, bytes == record's sha256 == S3's own ChecksumSHA256.
    objects = assert_delivered_intact(s3_client, s3_bucket, summary.outcomes)
    assert len(objects) == summary.images == summary.delivered

    # The faults really happened, and were retried.
    faults = Counter(r.fault for r in records)
    for kind in ("429", "503", "drop", "slow", "moderation"):
        assert faults[kind] >= 1, f"no {kind!r} fault was injected: {faults}"
    assert faults["429"] >= 10 and faults["moderation"] == len(MODERATED)
    assert len(records) > N_ITEMS + 10

    # Billing: each prompt was paid exactly once for its delivered image, plus the answers the
    # client gave up on (the real API bills those too), and nothing else.
    delivered_prompts = {o.item_id for o in summary.outcomes if o.status == "delivered"}
    groups = by_prompt(records)
    assert len(groups) == N_ITEMS
    abandoned_total = 0
    for prompt, group in groups.items():
        billed = sum(1 for r in group if r.billed_images)
        abandoned = len(abandoned_answers(group))
        abandoned_total += abandoned
        item_id = next(o.item_id for o in summary.outcomes if _prompt_matches(o, prompt))
        paid_for = (1 if item_id in delivered_prompts else 0) + abandoned
        assert billed == paid_for, f"{item_id} billed {billed} times: {group}"
    assert emulator.billed_images == summary.images + abandoned_total
    assert emulator.billed_requests == sum(1 for r in records if r.billed_images)

    # A non-retryable answer (moderation, any 4xx but 408/409/429) is always the last request.
    assert_no_retry_after_final_error(records)
    for position in MODERATED:
        moderated = [r for r in records if f"product {position} on" in r.params["prompt"]]
        assert len(moderated) == 1, moderated


def test_an_answer_is_abandoned_only_if_the_same_call_went_on(emulator: Any, api_key: str) -> None:
    """The billing check's proof: a later attempt of the same call, never a second call."""
    emulator.configure(slow_s=READ_TIMEOUT_S + 0.5, light_images=True)
    emulator.script("slow", "ok", "ok")
    prompt = f"reliability abandoned {uuid.uuid4().hex[:8]}"
    with CometAPIClient(
        api_key, base_url=emulator.base_url, read_timeout=READ_TIMEOUT_S, max_retries=1
    ) as client:
        assert client.generate(prompt, **SMALL_IMAGE).attempts == 2
        client.generate(prompt, **SMALL_IMAGE)  # a second call for the same prompt: paid twice
    emulator.wait_idle(timeout=10)
    late, taken, second = emulator.requests
    assert late.headers[CALL_ID_HEADER] == taken.headers[CALL_ID_HEADER]
    assert second.headers[CALL_ID_HEADER] != taken.headers[CALL_ID_HEADER]
    assert [r.headers[CALL_ATTEMPT_HEADER] for r in (late, taken, second)] == ["1", "2", "1"]
    assert all(r.billed_images == 1 for r in (late, taken, second))
    # An answer that came after the read timeout without the "slow" fault (a loaded machine):
    # the call's second attempt proves the client never took it.
    late_unfaulted = dataclasses.replace(late, fault=None)
    assert abandoned_answers([late_unfaulted, taken]) == [late_unfaulted]
    # A second call after a taken answer is a second payment, not an abandoned answer.
    assert abandoned_answers([taken, second]) == []
    assert abandoned_answers([late_unfaulted, taken, second]) == [late_unfaulted]


def _prompt_matches(outcome: Any, prompt: str) -> bool:
    return f"product {outcome.index} on" in prompt
