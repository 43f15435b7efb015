"""Helpers shared by the reliability tests: batch parameters, S3 checks, emulator record checks.

Imported by the test modules of this directory (pytest puts the directory on ``sys.path``) and
by ``crash_batch.py``, the script the crash-and-resume test runs in a subprocess, so the same
batch is built the same way in both processes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any, ClassVar

from markdown_it import MarkdownIt

from prefect_cometapi import CometAPICredentials
from prefect_cometapi.allowlist import ALLOWED_BASE_URLS_ENV
from prefect_cometapi.client.core import CALL_ATTEMPT_HEADER, CALL_ID_HEADER
from prefect_cometapi.emulator import RequestRecord
from prefect_cometapi.flows import (
    ImageOptions,
    ItemOutcome,
    RunSummary,
    S3Options,
    batch_generate,
    edit_and_upload,
    generate_and_upload,
)

#: Small and cheap: the reliability suite is about what happens around the request.
SMALL_IMAGE = {"size": "1024x1024", "quality": "low"}
#: The statuses after which a client may send the same request again (plus 5xx and no answer).
RETRYABLE_4XX = frozenset({408, 409, 429})
MODERATION_MARKER = "[[fault:moderation]]"


def batch_items(count: int, moderated: Iterable[int] = ()) -> list[dict[str, Any]]:
    """Items ``item-000``... for a batch; the ``moderated`` positions carry the moderation marker.

    Args:
        count: How many items.
        moderated: Positions whose prompt the emulator refuses (``moderation_blocked``).

    Returns:
        The items (``id``, ``n`` and ``extra`` variables).
    """
    blocked = set(moderated)
    return [
        {"id": f"item-{i:03d}", "n": i, "extra": MODERATION_MARKER if i in blocked else ""}
        for i in range(count)
    ]


def batch_template(tag: str) -> str:
    """A template whose prompts no other test renders (the result cache lives all session).

    Args:
        tag: A unique tag.

    Returns:
        The template text.
    """
    return f"reliability {tag} product {{{{ n }}}} on a plain background {{{{ extra }}}}"


def s3_options(bucket: str, endpoint_url: str, **changes: Any) -> S3Options:
    """S3 options for moto, without presigned links.

    Args:
        bucket: The bucket.
        endpoint_url: moto's endpoint.
        **changes: Other ``S3Options`` fields.

    Returns:
        The options.
    """
    fields: dict[str, Any] = {
        "bucket": bucket,
        "endpoint_url": endpoint_url,
        "presign_expires": None,
        **changes,
    }
    return S3Options(**fields)


def small_image(**changes: Any) -> ImageOptions:
    """``ImageOptions`` for a 1024x1024 low-quality image.

    Args:
        **changes: Other fields.

    Returns:
        The options.
    """
    return ImageOptions(**{**SMALL_IMAGE, **changes})


def b64_sha256(data: bytes) -> str:
    """The base64 SHA-256 S3 reports as ``ChecksumSHA256``."""
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


@dataclass(frozen=True)
class StoredObject:
    """One object read back from S3.

    Attributes:
        key: Its key.
        data: Its bytes.
        metadata: Its user metadata.
        checksum_sha256: What S3 reports as its SHA-256 (base64).
    """

    key: str
    data: bytes
    metadata: dict[str, str]
    checksum_sha256: str | None


def read_bucket(s3_client: Any, bucket: str) -> dict[str, StoredObject]:
    """Every object of a bucket with its bytes, metadata and stored checksum.

    Args:
        s3_client: A boto3 S3 client.
        bucket: The bucket.

    Returns:
        ``key -> StoredObject``.
    """
    objects: dict[str, StoredObject] = {}
    for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for entry in page.get("Contents", []):
            key = entry["Key"]
            head = s3_client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
            body = s3_client.get_object(Bucket=bucket, Key=key)["Body"].read()
            objects[key] = StoredObject(
                key=key,
                data=body,
                metadata=dict(head.get("Metadata") or {}),
                checksum_sha256=head.get("ChecksumSHA256"),
            )
    return objects


def assert_delivered_intact(
    s3_client: Any, bucket: str, outcomes: Iterable[ItemOutcome]
) -> dict[str, StoredObject]:
    """Every delivered image is in S3 with S3's own SHA-256 equal to the bytes' and the record's.

    Also checks that the bucket holds nothing else: no stray, partial or duplicate object.

    Args:
        s3_client: A boto3 S3 client.
        bucket: The bucket.
        outcomes: The items' records.

    Returns:
        The bucket's objects.
    """
    objects = read_bucket(s3_client, bucket)
    expected: dict[str, str] = {}
    for outcome in outcomes:
        if outcome.status != "delivered":
            assert not outcome.images, outcome
            continue
        assert outcome.images, f"{outcome.item_id} delivered without an image"
        for image in outcome.images:
            assert image.bucket == bucket and image.uri == f"s3://{bucket}/{image.key}"
            assert image.key not in expected, f"two images share {image.key}"
            expected[image.key] = image.sha256
    assert sorted(objects) == sorted(expected), "the bucket holds other objects than delivered"
    for key, sha256 in expected.items():
        stored = objects[key]
        assert hashlib.sha256(stored.data).hexdigest() == sha256, key
        assert stored.checksum_sha256 == b64_sha256(stored.data), f"S3 checksum of {key}"
        attributes = s3_client.get_object_attributes(
            Bucket=bucket, Key=key, ObjectAttributes=["Checksum", "ObjectSize"]
        )
        assert attributes["Checksum"]["ChecksumSHA256"] == b64_sha256(stored.data), key
        assert attributes["ObjectSize"] == len(stored.data), key
    assert not s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads"), "pending uploads"
    return objects


def assert_accounted(summary: RunSummary, count: int) -> None:
    """Every item is in the summary exactly once, delivered or failed with a reason.

    Args:
        summary: The batch's summary.
        count: Items in the batch.
    """
    assert summary.items == count
    assert summary.delivered + summary.failed == count
    assert sorted(o.index for o in summary.outcomes) == list(range(count))
    assert len({o.item_id for o in summary.outcomes}) == count
    for outcome in summary.outcomes:
        if outcome.status == "failed":
            assert outcome.error_code and outcome.error, f"{outcome.item_id} failed silently"
            assert summary.failures[outcome.item_id]
        else:
            assert outcome.error is None and outcome.images


def by_prompt(records: Iterable[RequestRecord]) -> dict[str, list[RequestRecord]]:
    """The emulator's records grouped by prompt, each group in arrival order.

    Args:
        records: ``emulator.requests``.

    Returns:
        ``prompt -> records``.
    """
    groups: dict[str, list[RequestRecord]] = defaultdict(list)
    for record in sorted(records, key=lambda r: r.started_at):
        groups[str(record.params.get("prompt"))].append(record)
    return dict(groups)


def abandoned_answers(records: Iterable[RequestRecord]) -> list[RequestRecord]:
    """The billed answers the client never took, proven by its own later attempts.

    The client sends every attempt of one call with the call's id and the attempt's number
    (:data:`~prefect_cometapi.client.core.CALL_ID_HEADER`), and sends a call again only when it got
    no usable answer. So a billed answer followed by a later attempt of the same call was given
    up on: the client's read timed out (the answer came later than ``read_timeout``, on a loaded
    machine too, not only for the emulator's "slow" fault) or the connection broke while it read.
    The real API bills those answers too. A "slow" answer is one by construction (it sleeps
    longer than the read timeout), even when it was its call's last attempt.

    Args:
        records: ``emulator.requests`` (any subset, e.g. one prompt's).

    Returns:
        Those billed records, in arrival order.
    """
    records = sorted(records, key=lambda r: r.started_at)
    last_attempt: dict[str, int] = {}
    for record in records:
        call = record.headers.get(CALL_ID_HEADER)
        if call is not None:
            attempt = int(record.headers[CALL_ATTEMPT_HEADER])
            last_attempt[call] = max(attempt, last_attempt.get(call, 0))
    abandoned = []
    for record in records:
        if not record.billed_images:
            continue
        call = record.headers.get(CALL_ID_HEADER)
        retried = call is not None and int(record.headers[CALL_ATTEMPT_HEADER]) < last_attempt[call]
        if retried or record.fault == "slow":
            abandoned.append(record)
    return abandoned


def assert_no_retry_after_final_error(records: Iterable[RequestRecord]) -> None:
    """No request is sent again after an answer that retrying cannot fix.

    A 4xx other than 408, 409 and 429 (and a 429 ``insufficient_quota``) must be the last
    request of its prompt.

    Args:
        records: ``emulator.requests``.
    """
    for prompt, group in by_prompt(records).items():
        for position, record in enumerate(group[:-1]):
            final = record.status is not None and 400 <= record.status < 500
            final = final and record.status not in RETRYABLE_4XX
            final = final or record.fault == "insufficient_quota"
            assert not final, (
                f"request {position + 1} of {prompt!r} got {record.status} ({record.fault}) "
                f"and was sent again {len(group) - position - 1} more time(s)"
            )


#: Keys without the date, so a batch re-run after midnight still finds its objects.
UNDATED_KEY_TEMPLATE = "{prefix}{item}-{sha8}.{ext}"


def crash_batch_kwargs(
    base_url: str, bucket: str, endpoint_url: str, tag: str, count: int, concurrency: int
) -> dict[str, Any]:
    """``batch_generate``'s arguments for the crash-and-resume batch (key from ``COMETAPI_KEY``).

    Args:
        base_url: The emulator's base URL.
        bucket: The bucket.
        endpoint_url: moto's endpoint.
        tag: The batch's unique tag.
        count: Items.
        concurrency: Items in flight.

    Returns:
        The keyword arguments.
    """
    return {
        "s3": s3_options(bucket, endpoint_url, prefix="crash/", key_template=UNDATED_KEY_TEMPLATE),
        "template": batch_template(tag),
        "items": batch_items(count),
        "image": small_image(),
        "concurrency": concurrency,
        "base_url": base_url,
    }


def rendered_prompts(tag: str, count: int) -> list[str]:
    """The prompts of ``batch_items(count)`` through ``batch_template(tag)``, in item order.

    Args:
        tag: The batch's tag.
        count: Items.

    Returns:
        The prompts.
    """
    from prefect_cometapi.templates import render_template

    return [render_template(batch_template(tag), item) for item in batch_items(count)]


def cached_prompts(
    prompts: Iterable[str], image: ImageOptions, api_key: str, base_url: str | None = None
) -> set[str]:
    """The prompts whose generation is in the image cache (persisted result present).

    Args:
        prompts: Prompts to look up.
        image: The request options they were sent with.
        api_key: The key they were sent with (part of the cache key in the default
            ``per-key`` cache scope).
        base_url: The API they were sent to (the session's emulator by default).

    Returns:
        The cached ones.
    """
    from prefect.results import get_result_store

    from prefect_cometapi.batching.requesting import generate_step
    from prefect_cometapi.caching import image_cache_key

    store = get_result_store().update_for_task(generate_step)
    service = CometAPICredentials(
        api_key=api_key, base_url=base_url or os.environ[ALLOWED_BASE_URLS_ENV]
    )
    return {
        prompt
        for prompt in prompts
        if store.exists(
            image_cache_key(
                "generations",
                {"prompt": prompt, "credentials": service, **image.request_kwargs()},
            )
        )
    }


@dataclass
class FailingRuns:
    """Runs the three flows with good defaults, so that a row breaks one thing; each must fail.

    The input-matrix tests (``test_bad_inputs.py``, ``test_hostile_parameters.py``) subclass it
    with their own servers and files.

    Attributes:
        credentials: A block for the emulator.
        s3: Good S3 options (the test's bucket on moto).
        salt: A fresh word for prompts.
        edit_size: The ``size`` an edit run asks for by default.
    """

    credentials: CometAPICredentials
    s3: S3Options
    salt: str
    edit_size: ClassVar[str] = "1024x1024"

    def prompt(self, text: str = "a lighthouse at dawn") -> str:
        """A prompt no other test has sent."""
        return f"{text} {self.salt}"

    def good_image(self) -> str:
        """The path of a good edit input (subclasses say where it is)."""
        raise NotImplementedError

    def flow(self, flow: Any, **params: Any) -> Any:
        """Run a flow that must fail; raise the exception its failed state holds."""
        params.setdefault("credentials_block", self.credentials)
        params.setdefault("s3", self.s3)
        state = flow(**params, return_state=True)
        assert state.is_failed(), f"the run ended {state.type}: {state.message}"
        error = state.result(raise_on_failure=False)
        assert isinstance(error, BaseException), error
        raise error

    def generate_flow(self, **params: Any) -> Any:
        """``generate_and_upload`` with a fresh prompt and small images, plus ``params``."""
        params.setdefault("prompt", self.prompt())
        params.setdefault("image", ImageOptions(size="1024x1024", quality="low"))
        return self.flow(generate_and_upload, **params)

    def edit_flow(self, **params: Any) -> Any:
        """``edit_and_upload`` of a good image with a fresh prompt, plus ``params``."""
        params.setdefault("prompt", self.prompt("make it blue"))
        params.setdefault("images", [self.good_image()])
        params.setdefault("image", ImageOptions(size=self.edit_size, quality="low"))
        return self.flow(edit_and_upload, **params)

    def batch_flow(self, **params: Any) -> Any:
        """``batch_generate`` of two good items with a fresh template, plus ``params``."""
        params.setdefault("template", f"A banner for {{{{ name }}}} {self.salt}")
        params.setdefault("items", [{"id": "a", "name": "Lamp"}, {"id": "b", "name": "Chair"}])
        params.setdefault("image", ImageOptions(size="1024x1024", quality="low"))
        return self.flow(batch_generate, **params)


class _Tags(HTMLParser):
    """The tags and URL attributes of rendered HTML."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


#: Tags our artifacts' markdown renders to; anything else came from a value.
OUR_TAGS = frozenset("p h1 h2 h3 strong em ul li img br".split())
#: What GFM would autolink in the text (Prefect's v2 UI autolinks after resolving escapes): a
#: scheme's ``:``, ``www.`` or ``@`` not bracketed by ``markdown_text``.
_GFM_AUTOLINK = re.compile(r"(?i)(?:(?:https?|ftp):|www\.)|(?<!\[)@")


def assert_inert_markdown(text: str, where: str) -> None:
    """Check that artifact text shows no link, no HTML and no image but our own previews.

    ``text`` is rendered with a CommonMark renderer (HTML allowed, as the UI allows it): the
    only tags allowed are the ones our markdown makes, every ``<img>`` must be a
    ``data:image/`` preview and there must be no ``<a>``. Then the text is searched for what
    GFM's extended autolinking (not in CommonMark) would turn into a link.

    Args:
        text: An artifact's markdown, description or table cell.
        where: What it is (for the message).
    """
    parser = _Tags()
    parser.feed(MarkdownIt("commonmark").render(text))
    for tag, attrs in parser.tags:
        assert tag in OUR_TAGS, f"{where}: a <{tag} {attrs}> element in {text!r}"
        if tag == "img":
            assert (attrs.get("src") or "").startswith("data:image/"), f"{where}: {attrs}"
    assert not _GFM_AUTOLINK.search(text), f"{where}: GFM would autolink in {text!r}"
    hidden = [c for c in text if c != "\n" and unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")]
    assert not hidden, f"{where}: invisible or reordering characters {hidden!r} in {text!r}"


def assert_artifacts_inert(artifacts: dict[str, Any]) -> None:
    """:func:`assert_inert_markdown` on every artifact's description, markdown and table cells.

    Args:
        artifacts: ``key -> artifact`` of one run (``flow_checks.read_artifacts``).
    """
    assert artifacts, "the run published no artifact"
    for key, artifact in artifacts.items():
        assert_inert_markdown(artifact.description or "", f"{key} description")
        if artifact.type == "markdown":
            assert_inert_markdown(artifact.data, f"{key} markdown")
        elif artifact.type == "table":
            rows = artifact.data if isinstance(artifact.data, list) else json.loads(artifact.data)
            for row in rows:
                for name, value in row.items():
                    assert_inert_markdown(str(value), f"{key} cell {name}")
