"""Shared setup of the benchmarks: every server on 127.0.0.1, a throwaway Prefect home.

``with BenchEnv(latency_s=2.0) as env: ...`` gives, each in its own process:

- the CometAPI emulator (``python -m prefect_cometapi.emulator --port 0``; its first stdout
  line is the base URL), so its CPU and memory are never the measured process's;
- a moto S3 server (``ThreadedMotoServer``) with one fresh bucket;
- a temporary Prefect server (``prefect_test_harness``: SQLite in a temporary directory) with
  ``PREFECT_HOME`` (result store, cache locks) in a temporary directory too;
- a saved ``CometAPICredentials`` block pointing at the emulator.

Importing this module sets the environment (``PREFECT_HOME``, fake AWS keys, no proxies) before
anything imports Prefect, so scripts import it first and Prefect-touching modules lazily.
Everything a benchmark needs from the flows goes through :meth:`BenchEnv.run_batch`.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from _measure import (  # noqa: F401 - the benches use them as _harness.<name>
    _children,
    add_image_pool_argument,
    busy_core,
    ideal_wall,
    image_pool_line,
    load,
    machine,
    new_run_id,
    process_cpu,
    verdict,
)

from prefect_cometapi.allowlist import ALLOWED_BASE_URLS_ENV, ALLOWED_S3_ENDPOINTS_ENV

_HOME = tempfile.mkdtemp(prefix="cometapi-bench-")
atexit.register(shutil.rmtree, _HOME, ignore_errors=True)
os.environ["PREFECT_HOME"] = _HOME
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
# The temporary server is stopped right after the last batch, while its task-run recorder may
# still be flushing that batch's events; it then logs the cancellation as an error with long
# tracebacks. That is teardown noise, not a figure: keep only the server's critical logs.
os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "CRITICAL")
os.environ["DO_NOT_TRACK"] = "1"
# Fake AWS credentials, forced: nothing is ever signed with real keys; and no proxies, so every
# request goes straight to the loopback servers.
os.environ.update(
    AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1"
)
for _name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
    os.environ.pop(_name, None)
for _name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
    os.environ.pop(_name, None)
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"

API_KEY = "sk-bench-not-a-secret"
CREDENTIALS_BLOCK = "bench-cometapi"
TEMPLATE = "A studio product banner of {{ name }}, soft light, clean background (run {{ run }})"

_MOTO = r"""
import sys
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
host, port = server.get_host_and_port()
print(f"http://{host}:{port}", flush=True)
sys.stdin.read()
server.stop()
"""


def _spawn_with_url(args: list[str], what: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("http://127.0.0.1:"):
        proc.kill()
        raise RuntimeError(f"the {what} did not start (first line: {line!r})")
    return proc, line


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        try:
            assert proc.stdin is not None
            proc.stdin.close()
        except OSError:
            pass
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@dataclass
class BatchRun:
    """What one ``batch_generate`` call did.

    Attributes:
        n: Items.
        wall_s: Wall seconds of the flow call, as the caller sees it.
        delivered: Items delivered.
        failed: Items failed.
        cached: Items whose image came from the cache.
        already_delivered: Items whose objects were already in S3 (nothing done for them).
        requests: Image requests the emulator received during the call.
        billed: Images the emulator billed during the call.
        peak_in_flight: The emulator's peak of requests in flight during the call.
        cpu_s: CPU seconds of this process during the call (``time.process_time``).
        children_cpu_s: CPU seconds of each helper process during the call (by label).
    """

    n: int
    wall_s: float
    delivered: int
    failed: int
    cached: int
    already_delivered: int
    requests: int
    billed: int
    peak_in_flight: int
    cpu_s: float
    children_cpu_s: dict[str, float]


class BenchEnv:
    """The emulator, moto and a Prefect server, each in its own process, plus a bucket.

    Args:
        latency_s: The emulator's fixed latency per image request.
        prefect: Start the Prefect server (a child that only runs a flow needs none).
        image_pool: The emulator answers generations from this many pre-drawn realistic PNGs
            (``--image-pool``: as heavy as its drawings, each answer distinct), so its drawing,
            which the real API does on its own servers, does not take the cores of the machine
            under test; 0 draws every image.

    Attributes:
        emulator_url: The emulator's OpenAI ``base_url`` (``.../v1``).
        s3_endpoint: moto's endpoint URL.
        bucket: The bucket the batches upload to.
        api_url: The Prefect API URL (``None`` without ``prefect``).
    """

    def __init__(self, latency_s: float = 0.0, prefect: bool = True, image_pool: int = 8) -> None:
        self.latency_s = latency_s
        self.image_pool = image_pool
        self._with_prefect = prefect
        self._stack = ExitStack()
        self._procs: dict[str, subprocess.Popen[str]] = {}
        self.emulator_url = ""
        self.s3_endpoint = ""
        self.bucket = f"bench-{uuid.uuid4().hex[:12]}"
        self.api_url: str | None = None

    # lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> BenchEnv:
        try:
            self._start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _start(self) -> None:
        emulator, self.emulator_url = _spawn_with_url(
            [
                sys.executable,
                "-m",
                "prefect_cometapi.emulator",
                "--port",
                "0",
                "--control",
                "--latency",
                str(self.latency_s),
                "--image-pool",
                str(self.image_pool),
            ],
            "emulator",
        )
        self._procs["emulator"] = emulator
        self._stack.callback(_stop, emulator)
        moto, self.s3_endpoint = _spawn_with_url([sys.executable, "-c", _MOTO], "moto server")
        self._procs["moto"] = moto
        self._stack.callback(_stop, moto)
        self.s3_client().create_bucket(Bucket=self.bucket)
        # This process owns both servers: allow them (children inherit the variables).
        os.environ[ALLOWED_BASE_URLS_ENV] = self.emulator_url
        os.environ[ALLOWED_S3_ENDPOINTS_ENV] = self.s3_endpoint
        if self._with_prefect:
            self._start_prefect()

    def _start_prefect(self) -> None:
        from prefect.settings import PREFECT_API_URL
        from prefect.testing.utilities import prefect_test_harness

        before = set(_children(os.getpid()))
        self._stack.enter_context(prefect_test_harness(server_startup_timeout=120))
        self.api_url = PREFECT_API_URL.value()
        self._prefect_pids = sorted(set(_children(os.getpid())) - before)
        from prefect_cometapi.blocks import CometAPICredentials

        CometAPICredentials(
            api_key=API_KEY, base_url=self.emulator_url, read_timeout=120, max_retries=0
        ).save(CREDENTIALS_BLOCK, overwrite=True)

    # the servers ---------------------------------------------------------------------------
    def s3_client(self) -> Any:
        """A boto3 client for the moto server.

        Returns:
            The client.
        """
        import boto3

        return boto3.client("s3", endpoint_url=self.s3_endpoint, region_name="us-east-1")

    def objects(self) -> int:
        """Objects in the bucket.

        Returns:
            The count.
        """
        paginator = self.s3_client().get_paginator("list_objects_v2")
        return sum(page.get("KeyCount", 0) for page in paginator.paginate(Bucket=self.bucket))

    def emulator_state(self) -> dict[str, Any]:
        """The emulator's ``/_emulator/state`` (counters and request records).

        Returns:
            The JSON document.
        """
        url = self.emulator_url.removesuffix("/v1") + "/_emulator/state"
        with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 - loopback only
            return json.load(response)

    def reset_emulator(self) -> None:
        """Clear the emulator's log and counters (its peak in flight too)."""
        url = self.emulator_url.removesuffix("/v1") + "/_emulator/reset"
        request = urllib.request.Request(
            url, data=b"{}", method="POST", headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30):  # noqa: S310 - loopback only
            pass

    def helper_cpu(self) -> dict[str, float]:
        """CPU seconds used so far by each helper process (emulator, moto, Prefect server).

        Returns:
            Label -> seconds.
        """
        cpu = {name: process_cpu(proc.pid) for name, proc in self._procs.items()}
        if self._with_prefect:
            cpu["prefect-server"] = sum(
                process_cpu(pid) + sum(process_cpu(c) for c in _children(pid))
                for pid in self._prefect_pids
            )
        return cpu

    def child_env(self) -> dict[str, str]:
        """Environment for a child process that runs a flow against these servers.

        Returns:
            A copy of the environment with ``PREFECT_API_URL`` and the server URLs.
        """
        env = dict(os.environ)
        if self.api_url:
            env["PREFECT_API_URL"] = self.api_url
        env["BENCH_EMULATOR_URL"] = self.emulator_url
        env["BENCH_S3_ENDPOINT"] = self.s3_endpoint
        env["BENCH_BUCKET"] = self.bucket
        return env

    # running batches -----------------------------------------------------------------------
    def run_batch(
        self,
        n: int,
        run_id: str,
        concurrency: int,
        size: str = "1024x1024",
        quality: str = "low",
        upscale: str = "none",
    ) -> BatchRun:
        """Run ``batch_generate`` over ``n`` items in this process and measure it.

        Args:
            n: Items.
            run_id: Goes into every prompt: a new id gives new prompts (no cache hits), the
                same id the same batch.
            concurrency: ``batch_generate(concurrency=...)``.
            size: The generated size.
            quality: The quality.
            upscale: An ``UpscaleOptions.target`` (``none`` for no upscale).

        Returns:
            The measurements (the emulator's counters are reset first, so they are this run's).
        """
        self.reset_emulator()
        before_cpu = self.helper_cpu()
        summary, wall, cpu = run_batch_here(
            n,
            run_id,
            concurrency,
            s3_endpoint=self.s3_endpoint,
            bucket=self.bucket,
            size=size,
            quality=quality,
            upscale=upscale,
        )
        after_cpu = self.helper_cpu()
        state = self.emulator_state()
        return BatchRun(
            n=n,
            wall_s=wall,
            delivered=summary.delivered,
            failed=summary.failed,
            cached=summary.cached,
            already_delivered=getattr(summary, "already_delivered", 0),
            requests=state["requests"],
            billed=state["billed_images"],
            peak_in_flight=state["peak_in_flight"],
            cpu_s=cpu,
            children_cpu_s={k: after_cpu[k] - before_cpu.get(k, 0.0) for k in after_cpu},
        )


def batch_items(n: int, run_id: str) -> list[dict[str, str]]:
    """``n`` distinct items whose prompts carry ``run_id``.

    Args:
        n: Items.
        run_id: The run id.

    Returns:
        The variable sets.
    """
    return [{"id": f"p{i:04d}", "name": f"product {i}", "run": run_id} for i in range(n)]


def run_batch_here(
    n: int,
    run_id: str,
    concurrency: int,
    s3_endpoint: str,
    bucket: str,
    size: str = "1024x1024",
    quality: str = "low",
    upscale: str = "none",
) -> tuple[Any, float, float]:
    """Call ``batch_generate`` in this process (against the current Prefect API).

    Args:
        n: Items.
        run_id: The run id in every prompt.
        concurrency: Requests at once.
        s3_endpoint: moto's endpoint.
        bucket: The bucket.
        size: The generated size.
        quality: The quality.
        upscale: An ``UpscaleOptions.target``.

    Returns:
        ``(summary, wall seconds, CPU seconds of this process)``.

    Raises:
        RuntimeError: If any item failed (a benchmark of failures measures nothing).
    """
    from prefect_cometapi.flows import ImageOptions, S3Options, UpscaleOptions, batch_generate

    s3 = S3Options(bucket=bucket, prefix=f"bench/{run_id}/", endpoint_url=s3_endpoint)
    image = ImageOptions(size=size, quality=quality)  # type: ignore[arg-type]
    up = UpscaleOptions(target=upscale, mode="stretch")  # type: ignore[arg-type]
    items = batch_items(n, run_id)
    wall, cpu = time.perf_counter(), time.process_time()
    summary = batch_generate(
        s3=s3,
        template=TEMPLATE,
        items=items,
        image=image,
        upscale=up,
        concurrency=concurrency,
        credentials_block=CREDENTIALS_BLOCK,
    )
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if summary.failed:
        reasons = "; ".join(f"{k}: {v}" for k, v in list(summary.failures.items())[:5])
        raise RuntimeError(f"{summary.failed} of {n} item(s) failed: {reasons}")
    return summary, wall, cpu
