"""S3 goes down in the middle of a batch: nothing is lost, nothing is paid twice, no long hang.

The test runs its own moto server (``ThreadedMotoServer`` on a loopback port; the session's
shared one is left alone) and stops it from a watcher thread once the emulator has billed a third
of the batch. ``stop()`` closes the listening socket, so every later upload meets a refused
connection, as with an S3 endpoint that has gone away. Then:

A blip (down for a few seconds, then back on the same port) is ridden out by the upload retries
within the run: every item delivered once, whole, nothing partial. A longer outage:

1. The run finishes; each item is delivered (its object in S3 with the sha256 it reports) or
   failed with a reason naming the unreachable S3 endpoint. None goes missing, none is left half
   written, and every image was paid for exactly once.
2. Every paid image is in the image cache, failed items included (``persist_when_paid``). A new
   server on the same port, and the same batch again: zero requests to the API, every item
   delivered and verified. moto keeps its backends in this process's memory, so what was stored
   before the outage is still there after the restart (as with a real S3); those objects are
   found, not uploaded again.
3. A failed item gives up after the delivery retries (``UPLOAD_RETRY_DELAYS``, 2 s + 10 s) plus
   botocore's own quick retries, not after minutes.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from typing import Any

import pytest
from fixtures_s3 import S3Server, allow_endpoint
from moto.server import ThreadedMotoServer
from reliability_support import (
    UNDATED_KEY_TEMPLATE,
    assert_accounted,
    assert_delivered_intact,
    batch_items,
    batch_template,
    cached_prompts,
    rendered_prompts,
    s3_options,
    small_image,
)

from prefect_cometapi import CometAPICredentials
from prefect_cometapi.flows import RunSummary, batch_generate
from prefect_cometapi.s3.upload import UPLOAD_RETRY_DELAYS

pytestmark = pytest.mark.timeout(180)

N_ITEMS = 24
CONCURRENCY = 8
OUTAGE_AFTER_BILLED = N_ITEMS // 3
LATENCY_S = 1.0
"""Each request takes a second, so the batch's requests come in waves of ``CONCURRENCY`` and the
outage falls between the first wave's uploads and the second wave's."""
WATCH_TIMEOUT_S = 30.0
SHORT_OUTAGE_S = 3.0
"""A blip: longer than the first upload retry's wait (2 s), shorter than the second's (10 s)."""
FAILED_ITEM_SLACK_S = 8.0
"""Per failed item, allowed on top of the delivery retry delays: the request itself (one
second), waiting for a request slot, botocore's own retries (tens of milliseconds each on a
refused connection) and a busy machine."""


class OutageS3:
    """A moto server on one loopback port that can be stopped and started again on that port.

    Attributes:
        port: The port, fixed by the first start.
    """

    def __init__(self) -> None:
        self.port = 0
        self._server: Any = None
        self.start()

    @property
    def endpoint_url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the server is up."""
        return self._server is not None

    def start(self) -> None:
        """Start a new server (on the same port after the first start)."""
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        server.start()
        self.port = server.get_host_and_port()[1]
        self._server = server
        allow_endpoint(self.endpoint_url)

    def stop(self) -> None:
        """Stop the server; its listening socket is closed (werkzeug closes it on shutdown)."""
        server, self._server = self._server, None
        server.stop()

    def client(self) -> Any:
        """A boto3 client without retries, for the test's own checks."""
        return S3Server(endpoint_url=self.endpoint_url, server=self._server).client()

    def refuses_connections(self) -> bool:
        """Whether a TCP connection to the port is refused right away."""
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=2).close()
        except ConnectionRefusedError:
            return True
        except OSError:
            return False
        return False


def stop_mid_batch(
    emulator: Any,
    s3: OutageS3,
    bucket: str,
    seen: dict[str, Any],
    restart_after_s: float | None = None,
) -> None:
    """Stop ``s3`` once a third of the batch is billed and the first objects are stored.

    Runs in a thread; what it saw (or the error it met) goes into ``seen``.

    Args:
        emulator: The session's emulator.
        s3: The server to stop.
        bucket: The batch's bucket.
        seen: Filled with ``billed_at_stop``, ``objects_at_stop``, ``stop_s``, ``refused``
            (and ``failed_before_restart`` when restarted).
        restart_after_s: Start the server again (same port, same data) this long after the stop.
    """
    try:
        probe = s3.client()
        deadline = time.monotonic() + WATCH_TIMEOUT_S
        objects = 0
        while time.monotonic() < deadline:
            if emulator.billed_requests >= OUTAGE_AFTER_BILLED:
                objects = probe.list_objects_v2(Bucket=bucket).get("KeyCount", 0)
                if objects >= 1:
                    break
            time.sleep(0.02)
        seen["billed_at_stop"] = emulator.billed_requests
        seen["objects_at_stop"] = objects
        started = time.monotonic()
        s3.stop()
        seen["stop_s"] = time.monotonic() - started
        seen["refused"] = s3.refuses_connections()
        if restart_after_s is not None:
            time.sleep(restart_after_s)
            s3.start()
    except BaseException as exc:  # noqa: BLE001 - reported by the test
        seen["error"] = exc


@pytest.fixture
def outage_s3() -> Any:
    """The test's own S3 server; stopped at the end whatever state the test left it in."""
    s3 = OutageS3()
    yield s3
    if s3.running:
        s3.stop()


def outage_batch(
    credentials: CometAPICredentials, s3: OutageS3, salt: str
) -> tuple[dict[str, Any], str]:
    """A fresh bucket on ``s3`` and ``batch_generate``'s arguments: N_ITEMS small images into it.

    Args:
        credentials: The emulator's credentials.
        s3: The test's S3 server.
        salt: Makes the prompts new to the session's image cache.

    Returns:
        ``(arguments, bucket)``.
    """
    bucket = f"outage-{uuid.uuid4().hex[:20]}"
    s3.client().create_bucket(Bucket=bucket)
    params = {
        "s3": s3_options(
            bucket, s3.endpoint_url, prefix="outage/", key_template=UNDATED_KEY_TEMPLATE
        ),
        "template": batch_template(salt),
        "items": batch_items(N_ITEMS),
        "image": small_image(),
        "concurrency": CONCURRENCY,
        "credentials_block": credentials,
    }
    return params, bucket


def run_through_outage(
    emulator: Any, s3: OutageS3, bucket: str, params: dict[str, Any], restart_after_s: float | None
) -> tuple[RunSummary, dict[str, Any], float]:
    """Run the batch while a watcher stops ``s3`` mid-batch (and restarts it, if asked).

    Args:
        emulator: The session's emulator.
        s3: The server the batch uploads to.
        bucket: The batch's bucket.
        params: ``batch_generate``'s arguments.
        restart_after_s: Start ``s3`` again this long after the stop; ``None``: leave it down.

    Returns:
        ``(summary, what the watcher saw, the run's wall seconds)``; the run completed.
    """
    seen: dict[str, Any] = {}
    watcher = threading.Thread(
        target=stop_mid_batch, args=(emulator, s3, bucket, seen, restart_after_s), daemon=True
    )
    watcher.start()
    started = time.monotonic()
    state = batch_generate(**params, return_state=True)
    wall_s = time.monotonic() - started
    watcher.join(timeout=(restart_after_s or 0) + 5)
    assert not watcher.is_alive()
    assert "error" not in seen, seen.get("error")
    assert seen["refused"], "the stopped server's port still accepts connections"
    assert OUTAGE_AFTER_BILLED <= seen["billed_at_stop"] < N_ITEMS, seen
    assert state.is_completed(), state.message
    summary = state.result()
    assert isinstance(summary, RunSummary)
    assert_accounted(summary, N_ITEMS)
    return summary, seen, wall_s


def test_a_short_s3_outage_mid_batch_is_ridden_out_by_the_upload_retries(
    emulator: Any, credentials: CometAPICredentials, outage_s3: OutageS3
) -> None:
    """S3 is down for a few seconds, then back on the same port: the same run delivers all."""
    params, bucket = outage_batch(credentials, outage_s3, f"s3-blip-{uuid.uuid4().hex[:10]}")
    emulator.configure(latency_s=LATENCY_S)
    summary, _, _ = run_through_outage(emulator, outage_s3, bucket, params, SHORT_OUTAGE_S)
    assert (summary.delivered, summary.failed) == (N_ITEMS, 0), summary.failures
    # The outage was felt: some items waited for a retry, and none waited for the last one.
    seconds = sorted(o.seconds for o in summary.outcomes)
    assert seconds[-1] >= UPLOAD_RETRY_DELAYS[0], f"no upload met the outage: {seconds}"
    assert seconds[-1] <= sum(UPLOAD_RETRY_DELAYS) + FAILED_ITEM_SLACK_S, seconds
    assert emulator.billed_requests == N_ITEMS and len(emulator.requests) == N_ITEMS

    # One whole object per item, checksums verified, no multipart upload left behind.
    client = outage_s3.client()
    stored = assert_delivered_intact(client, bucket, summary.outcomes)
    assert len(stored) == N_ITEMS
    listing = client.list_objects_v2(Bucket=bucket)
    assert listing["KeyCount"] == N_ITEMS, "duplicate or stray objects"
    assert not client.list_multipart_uploads(Bucket=bucket).get("Uploads"), "partial uploads"
    client.delete_objects(
        Bucket=bucket, Delete={"Objects": [{"Key": o["Key"]} for o in listing["Contents"]]}
    )
    client.delete_bucket(Bucket=bucket)


def test_s3_outage_mid_batch_loses_nothing_and_the_rerun_pays_nothing(
    emulator: Any, credentials: CometAPICredentials, outage_s3: OutageS3
) -> None:
    salt = f"s3-outage-{uuid.uuid4().hex[:10]}"
    image = small_image()
    params, bucket = outage_batch(credentials, outage_s3, salt)
    prompts = rendered_prompts(salt, N_ITEMS)
    key = credentials.resolved_api_key()
    assert not cached_prompts(prompts, image, key), "the salt is not fresh"
    emulator.configure(latency_s=LATENCY_S)

    # --- Run 1: S3 goes away once a third of the items are paid for. -------------------------
    first, seen, first_run_s = run_through_outage(emulator, outage_s3, bucket, params, None)
    failed = [o for o in first.outcomes if o.status == "failed"]
    delivered = [o for o in first.outcomes if o.status == "delivered"]
    assert len(delivered) >= seen["objects_at_stop"] >= 1, seen
    assert len(failed) >= N_ITEMS - seen["billed_at_stop"], "the outage hit no item"
    for outcome in failed:
        assert outcome.error_code == "S3UploadError", outcome
        assert "could not reach the S3 endpoint" in (outcome.error or ""), outcome.error
        assert f"127.0.0.1:{outage_s3.port}" in (outcome.error or ""), outcome.error
        assert f"s3://{bucket}/outage/{outcome.item_id}-" in (outcome.error or ""), outcome.error
        assert not outcome.cached and outcome.cost_usd > 0, "a failed item's image was not paid for"

    # Every item was paid for exactly once, and every paid image is in the cache.
    requests = emulator.requests
    assert len(requests) == N_ITEMS and emulator.billed_requests == N_ITEMS
    assert sorted(r.params["prompt"] for r in requests) == sorted(prompts)
    assert cached_prompts(prompts, image, key) == set(prompts), "a paid image is not in the cache"

    # Bounded: each failed item waited out the delivery retries, and not much more.
    retry_wait_s = sum(UPLOAD_RETRY_DELAYS)
    failed_s = sorted(o.seconds for o in failed)
    assert retry_wait_s <= failed_s[0], f"the outage was not retried: {failed_s}"
    assert failed_s[-1] <= retry_wait_s + FAILED_ITEM_SLACK_S, f"failed items took {failed_s}"

    # --- S3 is back (same port, same data): the same batch pays nothing and delivers all. ----
    outage_s3.start()
    client = outage_s3.client()
    client.head_bucket(Bucket=bucket)  # moto's backends live in this process: the bucket is back
    stored = assert_delivered_intact(client, bucket, first.outcomes)  # nothing partial either
    assert len(stored) == len(delivered)

    started = time.monotonic()
    again = batch_generate(**params, return_state=True)
    second_run_s = time.monotonic() - started
    assert again.is_completed(), again.message
    second = again.result()
    assert isinstance(second, RunSummary)
    assert len(emulator.requests) == N_ITEMS, "the re-run sent image requests again"
    assert emulator.billed_requests == N_ITEMS
    assert_accounted(second, N_ITEMS)
    assert (second.delivered, second.failed, second.cached) == (N_ITEMS, 0, N_ITEMS)
    assert second.total_cost_usd == 0
    assert_delivered_intact(client, bucket, second.outcomes)
    assert set(first.uris) <= set(second.uris) and len(second.uris) == N_ITEMS
    # What run 1 stored was found, not uploaded again; the rest was uploaded now.
    existed = {o.item_id for o in second.outcomes if o.images[0].existed}
    assert existed == {o.item_id for o in delivered}

    print(
        f"\nS3 outage: stop after {seen['billed_at_stop']} billed "
        f"({seen['objects_at_stop']} stored, stop took {seen['stop_s']:.2f} s); run 1 "
        f"{first_run_s:.1f} s: {len(delivered)} delivered, {len(failed)} failed, failed items "
        f"{failed_s[0]:.1f}-{failed_s[-1]:.1f} s each; re-run {second_run_s:.1f} s: "
        f"{len(emulator.requests) - N_ITEMS} new requests, {len(existed)} objects found, "
        f"{N_ITEMS - len(existed)} uploaded"
    )
    client.delete_objects(
        Bucket=bucket, Delete={"Objects": [{"Key": o.images[0].key} for o in second.outcomes]}
    )
    client.delete_bucket(Bucket=bucket)
