"""The command blocks of README.md, docs/*.md and deployments/README.md, run as written, in order.

Each document runs against a real ``prefect server start`` on 127.0.0.1 of its own (no other
test's workers poll it; a worker recreates a deleted pool and takes any run of it), emptied
before each document and before deployments/README.md's ``serve.py`` section, which is the
alternative to a work pool. Every line of every ``bash`` block is run verbatim from the
repository root, except the lines :data:`SKIPPED` names with the reason: a ``prefect`` command
(with its leading ``NAME=value`` assignments) runs in this process through Prefect's own
in-process CLI runner, which parses and runs exactly what the ``prefect`` executable would,
without paying a Python start-up per line; any other line runs under ``bash``; lines that serve
until stopped (workers, ``serve.py``, lines ending in ``&``) are started in the background and
stopped at the end of their document; ``export`` lines set the variables of the following
commands. The documents write the virtual environment's programs as ``.venv/bin/NAME`` (they
run in a fresh shell, no environment active): that is this interpreter's ``bin`` directory
here, and a line naming one of them bare fails. The ``python`` blocks that save blocks are run
too (in this process). The environment plays the user's machine: ``PREFECT_API_URL`` of the
test server, moto's S3 server as AWS (the buckets and input files the commands name exist), and
the CometAPI emulator: the one change to what the documents say is that the saved ``cometapi``
block is pointed at the emulator instead of api.cometapi.com. The README's offline deployment
starts its own emulator and S3 server (on free ports standing for the documents' 8000 and
5000) and uses this test's Prefect server as the one it starts. A line that fails, or a line
this test does not know how to treat, fails the test: the documents cannot drift from what
works.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from fixtures_deploy import (
    REPO_ROOT,
    ManagedProcess,
    RealPrefect,
    free_port,
    running_prefect,
    stop_all,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

VENV_BIN = re.compile(r"(?<![\w./-])\.venv/bin/")
"""How the documents name the virtual environment's programs."""
VENV_PROGRAMS = re.compile(
    r"(?:^|&&|\|\||;|\|)\s*(?:[A-Za-z_][A-Za-z0-9_]*=\S+\s+)*"
    r"(prefect|prefect-cometapi|python|pip|pytest|ruff|moto_server)(?=\s|$)"
)
"""A program of the virtual environment named bare: not found in a fresh shell."""
SKIPPED = {
    r"^python3 -m venv \.venv && pip install": "installs and runs the demo or the "
    "test suite: tests/test_demo.py and .ci/run run these",
    r"^pip install ": "an install",
    r"^ruff ": "lint: .ci/run runs it",
    r"^prefect-cometapi emulator [^&]*$": "serves until stopped; the test's own emulator plays it",
    r"^prefect server start ": "the test's own Prefect server plays it",
    r"^prefect-cometapi doctor .*--fleet": "checks a fleet worker's every block and limit; "
    "tests/test_doctor.py runs each check, configured and misconfigured",
}
"""Lines not run (matched without their ``.venv/bin/``), by pattern, with the reason."""
BACKGROUND = (r"^prefect worker start ", r"^(COMETAPI_S3_BUCKET=\S+ )?python deployments/serve\.py")
"""Lines that serve until stopped: started in the background (and any line ending in ``&``)."""
_TRAILING_AMPERSAND = re.compile(r"^(.*[^&\s])\s*(?<!&)&\s*(#[^'\"]*)?$")
RESET_BEFORE = ("Without a work pool: `serve.py`",)
"""Headings whose section starts again from an empty server (an alternative setup)."""
BUCKETS = ("my-bucket", "my-images", "my-inputs", "my-prefect-results", "my-banners")
SUBSTITUTE = {
    "http://prefect.internal:4200/api": "{api_url}",
    "http://127.0.0.1:4200/api": "{api_url}",
    "/var/lib/prefect-cometapi/locks": "{root}/locks",
    "127.0.0.1:8000": "127.0.0.1:{emulator_port}",
    "--port 8000": "--port {emulator_port}",
    "127.0.0.1:5000": "127.0.0.1:{s3_port}",
    "-p 5000": "-p {s3_port}",
}
"""Placeholders of the documents that stand for the user's own servers and ports."""
EXAMPLE_PRODUCTS = REPO_ROOT / "flows" / "examples" / "products.jsonl"


def command_blocks(document: Path) -> list[tuple[str, str, str]]:
    """``(heading, language, text)`` of every fenced block of a markdown file, in order."""
    found: list[tuple[str, str, str]] = []
    heading = ""
    lines = document.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        fence = re.match(r"^```(\w+)\s*$", line)
        if fence:
            end = lines.index("```", index + 1)
            found.append((heading, fence.group(1), "\n".join(lines[index + 1 : end])))
            index = end
        index += 1
    return found


def _has_commands(document: Path) -> bool:
    return any(
        language == "bash" or (language == "python" and ".save(" in text)
        for _, language, text in command_blocks(document)
    )


DOCUMENTS = tuple(
    document
    for document in (
        REPO_ROOT / "README.md",
        *sorted((REPO_ROOT / "docs").glob("*.md")),
        REPO_ROOT / "deployments" / "README.md",
    )
    if _has_commands(document)
)
"""Every document with a command block (or a block that saves a block), in reading order."""


def shell_lines(block: str) -> list[str]:
    """The commands of a bash block: continuations joined, comments and blank lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", block)
    commands = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            commands.append(line)
    return commands


_ASSIGNMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
_SHELL_SYNTAX = re.compile(r"[|&;<>$`()]")
"""Characters that make a line more than one plain command: such a line runs under bash."""


def in_process_command(line: str) -> tuple[dict[str, str], list[str]] | None:
    """``(assignments, prefect arguments)`` of a plain ``[NAME=value ...] prefect ...`` line.

    Args:
        line: A command line of a document (a trailing ``# comment`` is allowed).

    Returns:
        ``None`` for anything else (a pipe, a redirection, a variable expansion, another
        program), which then runs under ``bash``.
    """
    try:
        words = shlex.split(line, comments=True)
    except ValueError:
        return None
    assignments: dict[str, str] = {}
    while words and (match := _ASSIGNMENT.match(words[0])):
        assignments[match.group(1)] = match.group(2)
        words.pop(0)
    if not words or words[0] != "prefect":
        return None
    if any(_SHELL_SYNTAX.search(word) for word in re.split(r"'[^']*'", line.split("#", 1)[0])):
        return None
    return assignments, words[1:]


class Session:
    """One document's commands against the server, with the processes they started."""

    def __init__(self, prefect: RealPrefect, s3_endpoint: str, emulator_url: str) -> None:
        self.prefect = prefect
        self.home = "readme-user"
        self.env = prefect.env(
            self.home,
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_DEFAULT_REGION="us-east-1",
            AWS_ENDPOINT_URL_S3=s3_endpoint,
            AWS_EC2_METADATA_DISABLED="true",
            PREFECT_WORKER_QUERY_SECONDS="1",
            PREFECT_COMETAPI_ALLOWED_S3_ENDPOINTS=s3_endpoint,
        )
        self.emulator_url = emulator_url
        self.placeholders = {
            "api_url": prefect.api_url,
            "root": prefect.root,
            "emulator_port": free_port(),
            "s3_port": free_port(),
        }
        """What the documents' placeholders stand for here (their own servers' ports free)."""
        self.background: list[ManagedProcess] = []
        self.starting: list[tuple[ManagedProcess, str, datetime]] = []
        """Background processes not yet seen serving, with their line and start time."""
        self.log: list[str] = []

    def run_line(self, line: str) -> None:
        bare = VENV_PROGRAMS.search(VENV_BIN.sub("/venv-bin/", line))
        assert bare is None, (
            f"{bare.group(1)!r} is not found in a fresh shell: write .venv/bin/{bare.group(1)}"
            f" in: {line}"
        )
        for placeholder, value in SUBSTITUTE.items():
            line = line.replace(placeholder, value.format(**self.placeholders))
        plain = VENV_BIN.sub("", line)  # as typed in an activated environment: for the patterns
        for pattern, reason in SKIPPED.items():
            if re.search(pattern, plain):
                self.log.append(f"skipped ({reason}): {line}")
                return
        export = re.match(r"^export (\w+)=(\S+)(\s+#.*)?$", line)
        if export:
            self.env[export.group(1)] = export.group(2)
            self.log.append(f"export: {line}")
            return
        runnable = VENV_BIN.sub(f"{Path(sys.executable).parent}/", line)
        ampersand = _TRAILING_AMPERSAND.match(runnable)
        if ampersand or any(re.search(pattern, plain) for pattern in BACKGROUND):
            if ampersand:
                runnable = ampersand.group(1)
            name = f"bg-{len(self.prefect.processes)}"
            process = self.prefect.start(name, ["bash", "-c", runnable], self.env, REPO_ROOT)
            self.background.append(process)
            self.starting.append((process, plain, datetime.now(timezone.utc)))
            self.log.append(f"background: {line}")
            return
        started = time.monotonic()
        self.wait_until_serving()
        command = in_process_command(plain)
        if command is not None:
            code, output = self.run_prefect(*command)
            how = "in process"
        else:
            done = self.prefect.run(
                ["bash", "-c", runnable], env=self.env, timeout=600, check=False
            )
            code, output = done.returncode, f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
            how = "bash"
        self.log.append(f"ran ({how}, {time.monotonic() - started:.1f} s): {line}")
        assert code == 0, (
            f"README line failed ({code}): {line}\n{output}\n{self.prefect.diagnostics()}"
        )

    def _in_process_env(self, extra: dict[str, str]) -> Any:
        """This process as the documents' shell: its variables, the repository as cwd."""
        from prefect.settings import PREFECT_API_URL, temporary_settings

        patch = pytest.MonkeyPatch()
        patch.chdir(REPO_ROOT)
        for name in list(os.environ):
            if name.startswith(("PREFECT_", "AWS_", "COMETAPI_")) and name not in self.env:
                patch.delenv(name)
        for name, value in {**self.env, **extra}.items():
            patch.setenv(name, value)
        settings = temporary_settings(updates={PREFECT_API_URL: self.env["PREFECT_API_URL"]})
        return patch, settings

    def run_prefect(self, assignments: dict[str, str], args: list[str]) -> tuple[int, str]:
        """Run ``prefect ARGS`` with Prefect's in-process CLI runner.

        Args:
            assignments: The line's leading ``NAME=value`` variables.
            args: The arguments after ``prefect``.

        Returns:
            The exit code and the output.
        """
        from prefect.testing.cli import CycloptsCliRunner

        patch, settings = self._in_process_env(assignments)
        try:
            with settings:
                result = CycloptsCliRunner().invoke(args)
        finally:
            patch.undo()
        output = result.output[-6000:]
        if result.exception is not None:
            output += f"\n{result.exception!r}"
        return result.exit_code, output

    def wait_until_serving(self, timeout: float = 240) -> None:
        """Wait until every background process started since the last command serves.

        A worker serves once it has sent the server a heartbeat for its pool; ``serve.py`` once
        ``generate-and-upload/on-demand`` exists without a work pool. Processes started one
        after the other start up together; one that exits fails the test at once.
        """
        from prefect.client.orchestration import SyncPrefectClient

        deadline = time.monotonic() + timeout
        with SyncPrefectClient(self.prefect.api_url) as client:
            for process, line, since in self.starting:
                while not self._serving(client, line, since):
                    assert process.alive(), f"{line} exited:\n{process.log_tail()}"
                    assert time.monotonic() < deadline, f"{line} not serving:\n{process.log_tail()}"
                    time.sleep(0.5)
                assert process.alive(), f"{line} exited:\n{process.log_tail()}"
        self.starting = []

    @staticmethod
    def _serving(client: Any, line: str, since: datetime) -> bool:
        """Whether a background line serves: ``serve.py``, a worker or a server on a port."""
        port = re.search(r"(?:--port|-p) (\d+)", line)
        if "serve.py" not in line and "worker start" not in line:
            assert port, f"no way to tell that this line serves: {line}"
            try:
                socket.create_connection(("127.0.0.1", int(port.group(1))), timeout=1).close()
            except OSError:
                return False
            return True
        try:
            if "serve.py" in line:
                deployment = client.read_deployment_by_name("generate-and-upload/on-demand")
                return deployment.work_pool_name is None
            pool = re.search(r"--pool (\S+)", line)
            assert pool, line
            workers = client.read_workers_for_work_pool(pool.group(1))
        except Exception:  # noqa: BLE001 - not there yet
            return False
        return any(w.last_heartbeat_time and w.last_heartbeat_time >= since for w in workers)

    def run_python(self, code: str) -> None:
        """Run a ``python`` block in this process, as ``python -c`` would from the root."""
        started = time.monotonic()
        patch, settings = self._in_process_env({})
        try:
            with settings:
                exec(compile(code, "<README python block>", "exec"), {"__name__": "__main__"})
                if ".save(" in code and "CometAPICredentials" in code:
                    # The one change to what the documents say: the block talks to the emulator.
                    from prefect_cometapi.blocks import CometAPICredentials

                    block = CometAPICredentials.load("cometapi")
                    block.base_url = self.emulator_url
                    block.save("cometapi", overwrite=True)
        finally:
            patch.undo()
        self.log.append(
            f"python block ({time.monotonic() - started:.1f} s): {code.splitlines()[-1]}"
        )

    def stop(self) -> None:
        stop_all(self.background)
        self.background = []


def _reset(prefect: RealPrefect) -> None:
    """Empty the server: flow runs, deployments, work pools, limits and blocks."""
    from prefect.client.orchestration import SyncPrefectClient

    with SyncPrefectClient(prefect.api_url) as client:
        for deployment in client.read_deployments():
            client.delete_deployment(deployment.id)
        for run in client.read_flow_runs():
            client.delete_flow_run(run.id)
        for pool in client.read_work_pools():
            if not pool.name.startswith("default"):
                client.delete_work_pool(pool.name)
        for limit in client.read_global_concurrency_limits():
            client.delete_global_concurrency_limit_by_name(limit.name)
        for document in client.read_block_documents():
            client.delete_block_document(document.id)


def _wait_for_runs(prefect: RealPrefect, timeout: float = 600.0) -> list[Any]:
    """Wait until every flow run due now is final (not the schedule's future runs); return them."""
    from prefect.client.orchestration import SyncPrefectClient

    deadline = time.monotonic() + timeout
    with SyncPrefectClient(prefect.api_url) as client:
        while True:
            due = datetime.now(timezone.utc) + timedelta(minutes=5)
            runs = [
                run
                for run in client.read_flow_runs()
                if run.expected_start_time is None or run.expected_start_time <= due
            ]
            if all(run.state and run.state.is_final() for run in runs):
                return runs
            if time.monotonic() > deadline:
                return runs
            time.sleep(1)


@pytest.fixture(scope="module")
def readme_prefect() -> Iterator[RealPrefect]:
    """A server of the documents' own: no other test's worker polls its pools."""
    with running_prefect("prefect-cometapi-readme-") as prefect:
        yield prefect


@pytest.fixture(scope="module")
def readme_world(readme_prefect: RealPrefect, s3_server: Any) -> Iterator[dict[str, Any]]:
    """The buckets and input files the documents name, and an emulator that takes any key."""
    from PIL import Image

    from prefect_cometapi.emulator import Emulator, EmulatorConfig

    s3 = s3_server.client()
    for bucket in BUCKETS:
        try:
            s3.create_bucket(Bucket=bucket)
        except s3.exceptions.BucketAlreadyOwnedByYou:
            pass
    s3.put_object(Bucket="my-inputs", Key="products.jsonl", Body=EXAMPLE_PRODUCTS.read_bytes())
    dog = Path(readme_prefect.root / "dog.png")
    Image.new("RGB", (1024, 1024), (120, 90, 60)).save(dog)
    s3.put_object(Bucket="my-bucket", Key="in/dog.png", Body=dog.read_bytes())
    with Emulator(EmulatorConfig(light_images=True)) as emulator:
        yield {"s3_endpoint": s3_server.endpoint_url, "emulator_url": emulator.base_url}


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_command_block_runs_as_written(
    document: Path, readme_prefect: RealPrefect, readme_world: dict[str, Any]
) -> None:
    blocks = command_blocks(document)
    real_prefect = readme_prefect
    _reset(real_prefect)
    session = Session(real_prefect, readme_world["s3_endpoint"], readme_world["emulator_url"])
    ran = 0
    try:
        for heading, language, text in blocks:
            if heading in RESET_BEFORE:
                session.wait_until_serving()
                for run in _wait_for_runs(real_prefect):
                    assert run.state.is_completed(), (heading, run.name, run.state)
                session.stop()
                _reset(real_prefect)
            if language == "bash":
                for line in shell_lines(text):
                    session.run_line(line)
                    ran += 1
            elif language == "python" and ".save(" in text:
                session.run_python(text)
                ran += 1
        session.wait_until_serving()
        runs = _wait_for_runs(real_prefect)
        failed = [(run.name, run.state.type.value if run.state else None) for run in runs]
        assert all(run.state and run.state.is_completed() for run in runs), (
            f"flow runs not completed: {failed}\n{real_prefect.diagnostics()}"
        )
    finally:
        session.stop()
        print(json.dumps(session.log, indent=1))
    assert ran > 0, session.log
