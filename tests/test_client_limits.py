"""Hostile answers end in a typed error within the attempt's deadline, with memory bounded.

A real HTTP server on 127.0.0.1 answers the client's POST with a body that trickles, never ends,
or decompresses to far more than it sends; the client must stop reading at its caps.
"""

from __future__ import annotations

import gzip
import resource
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from prefect_cometapi import exchange
from prefect_cometapi.client import CometAPIClient
from prefect_cometapi.errors import APITimeoutError, UnexpectedResponseError

KEY = "sk-limits-test-0123456789"
CAP = 32 * 1024 * 1024
#: 1 GB of zeros gzipped (about 1 MB on the wire).
BOMB = gzip.compress(b"\0" * (64 * 1024 * 1024), compresslevel=9) * 16


class Hostile(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    mode = "trickle"

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        try:
            if self.mode == "trickle":  # a byte every 0.3 s: no single read ever times out
                self.send_header("Content-Length", "1000000")
                self.end_headers()
                for _ in range(1000):
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    time.sleep(0.3)
            elif self.mode == "endless":  # chunked, never finished
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                piece = b"[" * 65536
                while True:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            else:  # a gzip bomb
                self.send_header("Content-Encoding", "gzip")
                self.send_header("Content-Length", str(len(BOMB)))
                self.end_headers()
                self.wfile.write(BOMB)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        return


@pytest.fixture
def hostile_server() -> Iterator[Any]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hostile)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("mode", "error", "message"),
    [
        ("trickle", APITimeoutError, "No answer"),
        ("endless", UnexpectedResponseError, "a body over 32 MB"),
        ("bomb", UnexpectedResponseError, "a body over 32 MB"),
    ],
)
def test_hostile_answers_stop_at_the_caps_and_the_deadline(
    hostile_server: Any, monkeypatch: pytest.MonkeyPatch, mode: str, error: type, message: str
) -> None:
    monkeypatch.setattr(Hostile, "mode", mode)
    monkeypatch.setattr(exchange, "MAX_RESPONSE_BYTES", CAP)
    host, port = hostile_server.server_address[:2]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    started = time.monotonic()
    with (
        CometAPIClient(
            KEY,
            base_url=f"http://{host}:{port}/v1",
            connect_timeout=1,
            read_timeout=2,
            max_retries=0,
        ) as client,
        pytest.raises(error, match=message) as info,
    ):
        client.generate("a cat", size="1024x1024")
    elapsed = time.monotonic() - started
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    assert KEY not in str(info.value)
    # The attempt's total deadline is connect + read timeout (3 s); allow a loaded machine.
    assert elapsed < 3 + 10, f"{mode}: {elapsed:.1f} s"
    # The cap, the joined copy, and at most one decoded chunk beyond it (a gzip chunk of the
    # bomb inflates to 64 MB at once inside httpx's decoder).
    assert grown < 2 * CAP + 64 * 1024 * 1024, f"{mode}: peak RSS grew {grown / 1e6:.0f} MB"


def test_async_image_tasks_have_an_attempt_timeout_and_sync_ones_do_not_warn() -> None:
    from prefect_cometapi.tasks import aedit_image, agenerate_image, edit_image, generate_image
    from prefect_cometapi.tasks.image_core import TASK_TIMEOUT_SECONDS

    assert agenerate_image.timeout_seconds == aedit_image.timeout_seconds == TASK_TIMEOUT_SECONDS
    # A sync task with a timeout makes Prefect warn on every run in a worker thread.
    assert generate_image.timeout_seconds is None and edit_image.timeout_seconds is None
