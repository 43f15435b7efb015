"""Workers on several machines: one Redis lock manager, so the same image is paid for once.

docs/fleet.md's multi-machine configuration is ``PREFECT_COMETAPI_LOCK_MANAGER=redis://...`` with
``prefect-redis``. Here a Redis server (fakeredis's TCP server, a real socket on 127.0.0.1) takes
the locks; two processes play two machines: each has its own PREFECT_HOME, so their machine-local
lock directories differ, while the results (the image cache) live in one shared store, as the
fleet's S3 results bucket does. Both run the same batch against a slow emulator: machine A
starts, and machine B starts once A's requests are in flight, so B asks for every image while A
is paying for it (starting them "together" is not enough: the test server's SQLite makes one
flow run start seconds after the other at times).

The control run is the same without the Redis URL: each machine locks only on its own disk, so
both pay for every image. That is what makes the Redis run's "paid once" mean something.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakeredis import TcpFakeServer
from prefect.settings import PREFECT_API_URL
from prefect_redis.locking import RedisLockManager
from reliability_support import rendered_prompts

from prefect_cometapi.caching import (
    LOCK_MANAGER_ENV,
    image_cache_policy,
    lock_manager_from_url,
)
from prefect_cometapi.caching.locks import RetrySafeLockManager

SCRIPT = Path(__file__).with_name("crash_batch.py")
ITEMS = 4
LATENCY_S = 6.0
"""Long enough for machine B to start its batch while machine A's requests are in flight."""
RUN_TIMEOUT_S = 240.0


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """A Redis server on 127.0.0.1 for this module: ``redis://127.0.0.1:<port>/0``."""
    server = TcpFakeServer(("127.0.0.1", 0), server_type="redis")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    try:
        yield f"redis://{host}:{port}/0"
    finally:
        server.shutdown()
        server.server_close()


def _manager(url: str) -> RedisLockManager:
    """A bare prefect-redis lock manager for ``url``, built the way the environment variable is."""
    manager = lock_manager_from_url(url)
    assert isinstance(manager, RedisLockManager)
    return manager


def test_a_second_release_never_takes_or_breaks_another_holders_lock(redis_url: str) -> None:
    """Prefect releases a lock again when the parent transaction commits (task retries,
    eager commits); by then another machine may hold it."""
    key = f"image-{uuid.uuid4().hex}"
    first, second = _manager(redis_url), _manager(redis_url)
    assert first.acquire_lock(key, "run-a", hold_timeout=60)
    first.release_lock(key, "run-a")
    assert second.acquire_lock(key, "run-b", acquire_timeout=5, hold_timeout=60)

    # prefect-redis alone: the second release raises, which aborts a commit.
    with pytest.raises(ValueError, match="No lock held by run-a"):
        first.release_lock(key, "run-a")
    # Wrapped as our cache policy wraps it: nothing happens, the other holder keeps its lock.
    RetrySafeLockManager(first).release_lock(key, "run-a")
    assert second.is_lock_holder(key, "run-b") and second.is_locked(key)
    assert not _manager(redis_url).acquire_lock(key, "run-c", acquire_timeout=0.2)
    second.release_lock(key, "run-b")
    assert not second.is_locked(key)


def test_the_policy_takes_the_redis_url_from_the_environment(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(LOCK_MANAGER_ENV, redis_url)
    manager = image_cache_policy().lock_manager
    assert isinstance(manager, RetrySafeLockManager)
    assert isinstance(manager.inner, RedisLockManager)
    key = f"image-{uuid.uuid4().hex}"
    assert manager.acquire_lock(key, "here", hold_timeout=60)
    assert _manager(redis_url).is_locked(key), "the lock is not in the Redis server"
    manager.release_lock(key, "here")
    assert not manager.is_locked(key)


def _two_machines(
    emulator: Any,
    api_key: str,
    s3_server: Any,
    s3_bucket: str,
    tmp_path: Path,
    lock_manager_url: str | None,
) -> tuple[list[str], list[dict[str, Any]]]:
    """Run the same batch in two processes started together; return the prompts and summaries."""
    tmp_path.mkdir(parents=True)
    emulator.configure(latency_s=LATENCY_S)
    spec = {
        "base_url": emulator.base_url,
        "bucket": s3_bucket,
        "endpoint_url": s3_server.endpoint_url,
        "tag": f"shared-{uuid.uuid4().hex[:8]}",
        "count": ITEMS,
        "concurrency": ITEMS,
    }
    machines = ("machine-a", "machine-b")
    processes: list[tuple[subprocess.Popen[bytes], Path]] = []
    for machine in machines:
        home = tmp_path / machine
        home.mkdir()
        env = {
            **os.environ,
            "PREFECT_HOME": str(home),  # its own lock directory: home/locks
            "COMETAPI_KEY": api_key,
            "PREFECT_API_URL": PREFECT_API_URL.value(),
            "PYTHONPATH": os.pathsep.join([str(SCRIPT.parent), os.environ.get("PYTHONPATH", "")]),
        }
        env.pop(LOCK_MANAGER_ENV, None)
        if lock_manager_url:
            env[LOCK_MANAGER_ENV] = lock_manager_url
        files = {"ready_file": str(home / "ready"), "go_file": str(home / "go")}
        log = tmp_path / f"{machine}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, str(SCRIPT), json.dumps({**spec, **files})],
                env=env,
                stdout=out,
                stderr=out,
            )
        processes.append((process, log))

    def wait_until(condition: Any, what: str) -> None:
        while not condition():
            for process, log in processes:
                assert process.poll() is None, log.read_text(errors="replace")[-4000:]
            assert time.monotonic() < deadline, f"timed out waiting until {what}"
            time.sleep(0.01)

    try:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        wait_until(lambda: all((tmp_path / m / "ready").exists() for m in machines), "ready")
        (tmp_path / "machine-a" / "go").touch()
        wait_until(lambda: emulator.in_flight >= ITEMS, "machine A's requests are in flight")
        (tmp_path / "machine-b" / "go").touch()
        summaries = []
        for process, log in processes:
            code = process.wait(timeout=max(1.0, deadline - time.monotonic()))
            text = log.read_text(errors="replace")
            assert code == 0, text[-4000:]
            assert "error was encountered while committing" not in text, text[-4000:]
            summaries.append(json.loads(text.strip().splitlines()[-1]))
    finally:
        for process, _ in processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)
    emulator.wait_idle(timeout=10)
    return rendered_prompts(spec["tag"], ITEMS), summaries


def _billed(emulator: Any, prompts: list[str]) -> Counter[str]:
    wanted = set(prompts)
    return Counter(
        str(r.params.get("prompt"))
        for r in emulator.requests
        if r.billed_images and r.params.get("prompt") in wanted
    )


@pytest.mark.timeout(600)
def test_two_machines_with_redis_locks_pay_once_for_each_image(
    emulator: Any, api_key: str, s3_server: Any, s3_bucket: str, tmp_path: Path, redis_url: str
) -> None:
    prompts, summaries = _two_machines(
        emulator, api_key, s3_server, s3_bucket, tmp_path / "redis", redis_url
    )
    assert _billed(emulator, prompts) == Counter({p: 1 for p in prompts})
    assert [s["delivered"] for s in summaries] == [ITEMS, ITEMS]
    # Machine A paid for every image; machine B waited for A's locks and read A's results.
    assert [s["cached"] for s in summaries] == [0, ITEMS]

    # Control: the same without the shared lock manager, each machine locking on its own disk.
    prompts, summaries = _two_machines(
        emulator, api_key, s3_server, s3_bucket, tmp_path / "file", None
    )
    assert [s["delivered"] for s in summaries] == [ITEMS, ITEMS]
    assert [s["cached"] for s in summaries] == [0, 0]
    assert _billed(emulator, prompts) == Counter({p: 2 for p in prompts})
