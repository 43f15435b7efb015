"""The quick start's main job: ``prefect-cometapi demo`` as a user runs it, in a subprocess.

The demo starts its own emulator and moto server on 127.0.0.1 and a temporary Prefect server,
so the subprocess gets a fresh ``PREFECT_HOME`` (the server's first start: database
migrations) and none of the test session's Prefect or AWS settings, while another process keeps
one core busy, as a first run on a loaded 2-core machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flow_checks import assert_gallery_shape
from PIL import Image

pytestmark = pytest.mark.timeout(600)


def _cli() -> list[str]:
    script = Path(sys.executable).with_name("prefect-cometapi")
    found = str(script) if script.exists() else shutil.which("prefect-cometapi")
    assert found, "the prefect-cometapi console script is not installed"
    return [found]


def _run_demo(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    clean = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("PREFECT_", "AWS_", "COMETAPI_"))
    }
    clean.update(PREFECT_HOME=str(tmp_path / "prefect-home"), **(env or {}))
    return subprocess.run(
        [*_cli(), "demo", *args],
        cwd=tmp_path,
        env=clean,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )


def _stored_artifact(prefect_home: Path, key: str) -> str:
    with contextlib.closing(sqlite3.connect(prefect_home / "prefect.db")) as db:
        (data,) = db.execute("SELECT data FROM artifact WHERE key = ?", (key,)).fetchone()
    return str(json.loads(data))


@pytest.fixture
def busy_core() -> Iterator[None]:
    """Another process spinning on one core while the test runs."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        spinner.kill()
        spinner.wait()


def test_demo_runs_offline_end_to_end(tmp_path: Path, busy_core: None) -> None:
    done = _run_demo(tmp_path, "--limit", "2", "--concurrency", "2")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    # The first start of the temporary server (migrations on an empty home) is waited for and
    # said; nothing else from Prefect reaches the console: no run logs, no telemetry, no traces.
    assert "first run: it creates its database" in out, out
    assert re.search(r"Prefect: +ready after \d+ s", out), out
    assert done.stderr == "", done.stderr[-3000:]
    for noise in ("Traceback", "telemetry", "database is locked", "| INFO "):
        assert noise not in out, out
    assert "Results: 2/2 items delivered, 0 failed, 2 images" in out, out
    uris = re.findall(r"s3://prefect-cometapi-demo/\S+\.png", out)
    assert len(uris) == 2, out
    files = sorted((tmp_path / "demo-output").glob("*.png"))
    assert len(files) == 2, out
    for path in files:
        with Image.open(path) as image:
            assert image.format == "PNG"
            assert image.size == (3840, 2160)
    total = re.search(r"Total: 2 images, (\d+) input \+ (\d+) output tokens, \$([0-9.]+)", out)
    assert total, out
    assert int(total.group(1)) > 0 and int(total.group(2)) > 0 and float(total.group(3)) > 0
    # The way to the UI works in a fresh shell: this environment's prefect, by its path.
    prefect = Path(sys.executable).absolute().with_name("prefect")
    assert prefect.exists()
    assert f"PREFECT_HOME={tmp_path / 'prefect-home'} {prefect} server start" in out
    # The run stays in the home's database for `prefect server start`: its gallery shows the
    # previews it carries, each image's S3 URI and its local copy (the S3 server is gone).
    gallery = _stored_artifact(tmp_path / "prefect-home", "cometapi-batch-generate-gallery")
    assert_gallery_shape(gallery, previews=2)
    for uri in uris:
        item = uri.rsplit("/", 1)[1].rsplit("-", 1)[0]
        path = (tmp_path / "demo-output" / f"{item}.png").resolve()
        assert f"{uri} · local copy {path}" in gallery
    assert "sk-demo" not in out + done.stderr

    # Again in the same home: the bucket kept between runs holds every item with its recorded
    # SHA-256, so nothing is requested, upscaled or uploaded, and each item says so.
    again = _run_demo(tmp_path, "--limit", "2", "--concurrency", "2")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "(2 objects kept from earlier demo runs)" in again.stdout, again.stdout
    assert (
        "Results: 2/2 items delivered, 0 failed, 2 images, $0.0000 (2 from cache)" in again.stdout
    )
    skipped = "already in S3 from an earlier run: nothing requested, upscaled or uploaded"
    assert again.stdout.count(skipped) == 2, again.stdout
    assert sorted(re.findall(r"s3://prefect-cometapi-demo/\S+\.png", again.stdout)) == sorted(uris)
    assert sorted((tmp_path / "demo-output").glob("*.png")) == files


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--live"], {"COMETAPI_KEY": "sk-not-used"}, "--live needs --bucket"),
        (["--live", "--bucket", "b"], {}, "COMETAPI_KEY"),
        (["--limit", "9"], {}, "--limit must be between 1 and 5"),
    ],
)
def test_demo_refuses_bad_options_at_once(
    tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    done = _run_demo(tmp_path, *args, env=env)
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stderr
    assert not (tmp_path / "demo-output").exists()


def test_temporary_server_that_does_not_answer_in_time_is_stopped_and_reported(
    tmp_path: Path,
) -> None:
    from prefect.settings import PREFECT_HOME, temporary_settings

    from prefect_cometapi.demo.server import (
        SERVER_LOG_NAME,
        ServerStartError,
        temporary_prefect_server,
    )

    said: list[str] = []
    with temporary_settings(updates={PREFECT_HOME: tmp_path}):
        with pytest.raises(ServerStartError, match="did not answer within 0 s"):
            with temporary_prefect_server(say=said.append, timeout_s=0.1):
                pytest.fail("the block must not run")
    assert "first run: it creates its database" in said[0]
    assert (tmp_path / SERVER_LOG_NAME).exists()
