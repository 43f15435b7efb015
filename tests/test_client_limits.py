"""Hostile answers end in a typed error within the attempt's deadline, with memory bounded.

A real HTTP server on 127.0.0.1 answers the client's POST with a body that trickles, never ends,
decompresses to far more than it sends, or holds a 300 MB image; the client must stop reading at
its caps (lowered to 32 MB here) and its deadline, in a child process whose peak RSS is measured.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from prefect_cometapi.client.body import BodyTooLarge, BoundedDecoder, UnsupportedEncoding
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
            elif self.mode == "b64_json":  # a 300 MB image in the JSON answer
                self.send_header("Content-Length", str(300 * 1024 * 1024 + 30))
                self.end_headers()
                self.wfile.write(b'{"data": [{"b64_json": "')
                piece = b"A" * 1024 * 1024
                for _ in range(300):
                    self.wfile.write(piece)
                self.wfile.write(b'"}]}')
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


#: Runs one request in a fresh interpreter and reports the error and how far its resident memory
#: rose above where it stood before the request (the kernel's high-water mark, reset first
#: through /proc/self/clear_refs, so the interpreter's own start-up peak does not hide it).
CHILD = """
import json, re, sys, time
from pathlib import Path
from prefect_cometapi.client import core as exchange
from prefect_cometapi.client import CometAPIClient

def status(field):
    text = Path("/proc/self/status").read_text()
    return int(re.search(field + r":\\s+(\\d+) kB", text).group(1)) * 1024

exchange.MAX_RESPONSE_BYTES = int(sys.argv[2])
client = CometAPIClient(sys.argv[3], base_url=sys.argv[1], connect_timeout=1, read_timeout=2,
                        max_retries=0)
Path("/proc/self/clear_refs").write_text("5")
before = status("VmRSS")
assert status("VmHWM") < before + 8 * 1024 * 1024, "the high-water mark was not reset"
started = time.monotonic()
try:
    client.generate("a cat", size="1024x1024")
    error = None
except Exception as exc:
    error = [type(exc).__name__, str(exc)]
print(json.dumps({"error": error, "elapsed": time.monotonic() - started,
                  "grown": status("VmHWM") - before}))
"""


@pytest.mark.parametrize(
    ("mode", "error", "message"),
    [
        ("trickle", APITimeoutError, "No answer"),
        ("endless", UnexpectedResponseError, "a body over 32 MB"),
        ("bomb", UnexpectedResponseError, "a body over 32 MB"),
        ("b64_json", UnexpectedResponseError, "a body over 32 MB"),
    ],
)
def test_hostile_answers_stop_at_the_caps_and_the_deadline(
    hostile_server: Any, monkeypatch: pytest.MonkeyPatch, mode: str, error: type, message: str
) -> None:
    monkeypatch.setattr(Hostile, "mode", mode)
    host, port = hostile_server.server_address[:2]
    child = subprocess.run(
        [sys.executable, "-c", CHILD, f"http://{host}:{port}/v1", str(CAP), KEY],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    report = json.loads(child.stdout.strip().splitlines()[-1])
    assert report["error"] is not None, f"{mode}: the request succeeded"
    name, text = report["error"]
    assert name == error.__name__ and message in text, report["error"]
    assert KEY not in text
    # The attempt's total deadline is connect + read timeout (3 s); allow a loaded machine.
    assert report["elapsed"] < 3 + 10, f"{mode}: {report['elapsed']:.1f} s"
    # At most the cap is held (decoding never inflates past it), far below twice the cap.
    grown = report["grown"]
    assert grown < 2 * CAP, f"{mode}: peak RSS grew {grown / 1e6:.0f} MB"


def test_the_decoder_never_inflates_past_its_limit() -> None:
    limit = 1_000_000
    decoder = BoundedDecoder("gzip", limit)
    produced = 0
    with pytest.raises(BodyTooLarge):
        for start in range(0, len(BOMB), 65536):
            produced += sum(len(p) for p in decoder.decode(BOMB[start : start + 65536]))
            assert produced <= limit
    body = json.dumps({"data": [{"b64_json": "QUJD" * 1000}]}).encode()
    for encoding, blob in [
        ("gzip", gzip.compress(body[:100]) + gzip.compress(body[100:])),  # two members
        ("deflate", zlib.compress(body)),
        ("deflate", zlib.compress(body)[2:-4]),  # raw deflate, as some servers send it
        ("identity", body),
        (None, body),
        ("gzip, deflate", zlib.compress(gzip.compress(body))),
    ]:
        decoder = BoundedDecoder(encoding, limit)
        pieces = [p for i in range(0, len(blob), 7) for p in decoder.decode(blob[i : i + 7])]
        assert b"".join(pieces) == body, encoding
    with pytest.raises(UnsupportedEncoding):
        BoundedDecoder("br", limit)


def test_async_image_tasks_have_an_attempt_timeout_and_sync_ones_do_not_warn() -> None:
    from prefect_cometapi.orchestration.options import TASK_TIMEOUT_SECONDS
    from prefect_cometapi.tasks import aedit_image, agenerate_image, edit_image, generate_image

    assert agenerate_image.timeout_seconds == aedit_image.timeout_seconds == TASK_TIMEOUT_SECONDS
    # A sync task with a timeout makes Prefect warn on every run in a worker thread.
    assert generate_image.timeout_seconds is None and edit_image.timeout_seconds is None
