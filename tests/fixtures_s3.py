"""S3 fixtures: one moto server on 127.0.0.1 for the whole session, a fresh bucket per test.

Loaded through ``pytest_plugins`` in ``tests/conftest.py``. boto3 reaches the server over a real
socket via ``endpoint_url``; no request ever leaves the loopback interface.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from botocore.config import Config

from prefect_cometapi.allowlist import ALLOWED_S3_ENDPOINTS_ENV

# Fake credentials, forced: the tests must never sign anything with a developer's real keys.
os.environ["AWS_ACCESS_KEY_ID"] = "testing"
os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
os.environ.pop("AWS_PROFILE", None)
os.environ.pop("AWS_ENDPOINT_URL", None)
os.environ.pop("AWS_ENDPOINT_URL_S3", None)
os.environ.pop("AWS_SESSION_TOKEN", None)
os.environ.pop("AWS_SECURITY_TOKEN", None)


@dataclass(frozen=True)
class S3Server:
    """A running moto S3 server.

    Attributes:
        endpoint_url: ``http://127.0.0.1:<port>``.
        server: The ``ThreadedMotoServer`` itself.
    """

    endpoint_url: str
    server: Any

    def client(self, **kwargs: Any) -> Any:
        """A boto3 S3 client pointed at this server.

        Args:
            **kwargs: Extra ``boto3.client`` arguments (e.g. ``config``).

        Returns:
            A boto3 S3 client.
        """
        kwargs.setdefault("config", Config(retries={"max_attempts": 1, "mode": "standard"}))
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            **kwargs,
        )


def allow_endpoint(endpoint_url: str) -> None:
    """Add a test S3 server to this process's S3 endpoint allow-list (as a worker would).

    Args:
        endpoint_url: The server's ``http://127.0.0.1:<port>``.
    """
    entries = os.environ.get(ALLOWED_S3_ENDPOINTS_ENV, "").split(",")
    if endpoint_url not in entries:
        os.environ[ALLOWED_S3_ENDPOINTS_ENV] = ",".join([*filter(None, entries), endpoint_url])


def start_moto_server() -> tuple[Any, str]:
    """Start a ``ThreadedMotoServer`` on a free loopback port.

    Returns:
        The server (call ``.stop()`` when done) and its endpoint URL.
    """
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    allow_endpoint(f"http://{host}:{port}")
    return server, f"http://{host}:{port}"


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """One moto S3 server for the whole test session."""
    server, endpoint = start_moto_server()
    try:
        yield S3Server(endpoint_url=endpoint, server=server)
    finally:
        server.stop()


@pytest.fixture
def s3_client(s3_server: S3Server) -> Any:
    """A boto3 S3 client for the session's moto server (no client-side retries)."""
    return s3_server.client()


@pytest.fixture
def s3_bucket(s3_client: Any) -> Iterator[str]:
    """A fresh, uniquely named, empty bucket; emptied and deleted after the test."""
    name = f"test-{uuid.uuid4().hex[:20]}"
    s3_client.create_bucket(Bucket=name)
    yield name
    _delete_bucket(s3_client, name)


@pytest.fixture
def make_s3_bucket(s3_client: Any) -> Iterator[Callable[[], str]]:
    """A factory for extra fresh buckets, all deleted after the test."""
    made: list[str] = []

    def make() -> str:
        name = f"test-{uuid.uuid4().hex[:20]}"
        s3_client.create_bucket(Bucket=name)
        made.append(name)
        return name

    yield make
    for name in made:
        _delete_bucket(s3_client, name)


def _delete_bucket(client: Any, bucket: str) -> None:
    try:
        for upload in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
            client.abort_multipart_upload(
                Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
            )
        for obj in client.list_objects_v2(Bucket=bucket).get("Contents", []):
            client.delete_object(Bucket=bucket, Key=obj["Key"])
        client.delete_bucket(Bucket=bucket)
    except Exception:  # noqa: BLE001 - best-effort cleanup of a throwaway bucket
        pass


class HTTPFileServer:
    """A tiny HTTP server on 127.0.0.1 serving whatever a test registers.

    ``add(path, body, status=200, headers=None)`` registers an answer; ``url(path)`` gives its
    URL. With ``headers={"Connection": "close"}`` the answer has no ``Content-Length``. Each
    request is recorded in ``requests`` (method, path).
    """

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        routes: dict[str, tuple[int, bytes, dict[str, str]]] = {}
        requests: list[tuple[str, str]] = []
        self.routes = routes
        self.requests = requests

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                requests.append(("GET", self.path))
                path = self.path.split("?", 1)[0]
                status, body, headers = routes.get(path, (404, b"not found", {}))
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                # "Connection: close" means: no Content-Length, the body ends when we close.
                if "Content-Length" not in headers and headers.get("Connection") != "close":
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        host, port = self._server.server_address[:2]
        self.base_url = f"http://{host}:{port}"

    def add(
        self, path: str, body: bytes, status: int = 200, headers: dict[str, str] | None = None
    ) -> str:
        """Register an answer for ``GET path`` and return its URL."""
        self.routes[path] = (status, body, dict(headers or {}))
        return self.url(path)

    def url(self, path: str) -> str:
        """The URL of ``path`` on this server."""
        return self.base_url + path

    def stop(self) -> None:
        """Shut the server down."""
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="session")
def http_file_server() -> Iterator[HTTPFileServer]:
    """One tiny loopback HTTP server for the session, serving files tests register."""
    server = HTTPFileServer()
    try:
        yield server
    finally:
        server.stop()
