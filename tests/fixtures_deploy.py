"""A real ``prefect server start`` and a process worker on 127.0.0.1, for the deployment tests.

Everything runs as subprocesses with explicit environments: the server and the worker each get
their own ``PREFECT_HOME`` under one temporary directory, and every ``prefect`` command gets the
real server's ``PREFECT_API_URL`` (never the in-process test harness's). Every subprocess is
started in its own session and killed with its whole process group at the end, even on failure.

Fixtures:
    real_prefect: the server (session); :func:`running_prefect` starts another one.
    deployed_project: ``deployments/prefect.yaml`` applied to it, the CometAPI Credentials block
        saved there (pointing at the session emulator), the fleet's shared result storage (an
        S3Bucket block on moto) and a process worker polling each pool.
    second_fleet_worker: another process worker of the fleet pool with a PREFECT_HOME of its
        own, sharing only what prefect.yaml and docs/fleet.md say workers share (module).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
PREFECT_FILE = REPO_ROOT / "deployments" / "prefect.yaml"
PROCESS_POOL = "cometapi-process"
FLEET_POOL = "cometapi-fleet"
FLEET_POOL_CONCURRENCY = 8
FLEET_WORKER_LIMIT = 3
"""Flow runs each fleet worker runs at once (``--limit``): a fan-out of more runs than this
must use both workers."""
FLEET_WORKER_QUEUE = "default"
SECOND_WORKER_QUEUE = "fleet-b"
"""A work queue only the second fleet worker polls (to send a run to that worker)."""
RESULTS_BLOCK = "cometapi-results"
"""The S3Bucket block the fleet keeps its results in (``PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK``
in prefect.yaml)."""
GLOBAL_LIMITS = {"cometapi-requests": ("8", "0"), "cometapi-rpm": ("10", "1")}
"""The fleet deployment's global concurrency limits: name -> (slots, slot decay per second)."""
CREDENTIALS_BLOCK = "cometapi"
"""The block name the deployments in prefect.yaml pass as ``credentials_block``."""
SERVER_START_TIMEOUT = 180.0
CLI_TIMEOUT = 180.0
_UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# Variables that must not leak from the developer's (or the test session's) environment into
# the subprocesses: Prefect settings, keys, AWS accounts and endpoints.
_DROPPED_PREFIXES = ("PREFECT_", "COMETAPI_", "AWS_")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now.

    Returns:
        The port number.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def base_env(**extra: str) -> dict[str, str]:
    """A clean environment for a ``prefect`` subprocess.

    The interpreter's ``bin`` directory comes first on ``PATH`` (the deployment's build step
    runs ``python``), loopback bypasses any proxy, and analytics are off.

    Args:
        **extra: Variables to add.

    Returns:
        The environment.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(_DROPPED_PREFIXES)}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    env["PREFECT_CLI_PROMPT"] = "false"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def prefect_cli() -> list[str]:
    """The ``prefect`` command of this interpreter.

    Returns:
        ``[<bin>/prefect]`` when it exists, else ``[python, -m, prefect]``.
    """
    script = Path(sys.executable).parent / "prefect"
    return [str(script)] if script.exists() else [sys.executable, "-m", "prefect"]


@dataclass
class ManagedProcess:
    """A background subprocess in its own session, its output in a log file.

    Attributes:
        name: For messages.
        popen: The process.
        log_path: Where its stdout and stderr go.
        tree: Its descendants when :meth:`terminate` was called.
    """

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    tree: list[int] = field(default_factory=list)

    @classmethod
    def start(
        cls, name: str, args: Sequence[str], env: Mapping[str, str], cwd: Path, log_path: Path
    ) -> ManagedProcess:
        """Start ``args`` in a new session.

        Args:
            name: For messages.
            args: The command.
            env: Its environment.
            cwd: Its working directory.
            log_path: Where its output goes.

        Returns:
            The running process.
        """
        log = log_path.open("wb")
        try:
            popen = subprocess.Popen(
                list(args),
                env=dict(env),
                cwd=str(cwd),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            log.close()
        return cls(name=name, popen=popen, log_path=log_path)

    def alive(self) -> bool:
        """Whether it is still running."""
        return self.popen.poll() is None

    def log_tail(self, chars: int = 6000) -> str:
        """The end of its output.

        Args:
            chars: How many characters.

        Returns:
            The text.
        """
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return text[-chars:]

    def terminate(self) -> None:
        """SIGTERM its process group, remembering its descendants first (see :meth:`finish`)."""
        self.tree = _descendants(self.popen.pid)
        try:
            os.killpg(self.popen.pid, signal.SIGTERM)  # new session: group id == leader pid
        except ProcessLookupError:
            pass

    def finish(self, grace: float) -> None:
        """Wait up to ``grace`` seconds after :meth:`terminate`, then SIGKILL what is left.

        Flow runs started by a worker live in process groups of their own, so every
        descendant seen before the SIGTERM is killed too.
        """
        try:
            self.popen.wait(timeout=max(grace, 0.1))
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for pid in self.tree:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            self.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM it, then SIGKILL it and its descendants after ``grace`` seconds."""
        self.terminate()
        self.finish(grace)


def stop_all(processes: Sequence[ManagedProcess], grace: float = 10.0) -> None:
    """Stop several processes at once: SIGTERM all, then wait for all within ``grace``.

    Args:
        processes: The processes.
        grace: Seconds they get together before SIGKILL.
    """
    for process in processes:
        process.terminate()
    deadline = time.monotonic() + grace
    for process in processes:
        process.finish(deadline - time.monotonic())


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux ``/proc``; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found: list[int] = []
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


@dataclass
class RealPrefect:
    """A real Prefect server on 127.0.0.1 and helpers to talk to it.

    Attributes:
        api_url: ``http://127.0.0.1:<port>/api``.
        root: The temporary directory holding every home and log.
        server: The server process.
        processes: Every background process started against it (stopped at the end).
    """

    api_url: str
    root: Path
    server: ManagedProcess
    processes: list[ManagedProcess] = field(default_factory=list)

    def env(self, home: str = "client", **extra: str) -> dict[str, str]:
        """The environment of a process that talks to this server.

        Args:
            home: Name of its own ``PREFECT_HOME`` under :attr:`root`.
            **extra: More variables.

        Returns:
            The environment.
        """
        prefect_home = self.root / home
        prefect_home.mkdir(exist_ok=True)
        return base_env(
            PREFECT_API_URL=self.api_url,
            PREFECT_HOME=str(prefect_home),
            PREFECT_LOCAL_STORAGE_PATH=str(prefect_home / "storage"),
            **extra,
        )

    def cli(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        cwd: Path = REPO_ROOT,
        timeout: float = CLI_TIMEOUT,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``prefect <args>`` against this server and wait for it.

        Args:
            *args: The command line after ``prefect``.
            env: The environment (default: :meth:`env`).
            cwd: The working directory (default: the repository root).
            timeout: Seconds to wait.
            check: Fail the test on a non-zero exit code.

        Returns:
            The finished process (text output).
        """
        return self.run([*prefect_cli(), *args], env=env, cwd=cwd, timeout=timeout, check=check)

    def python(
        self, code: str, env: Mapping[str, str] | None = None, timeout: float = CLI_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        """Run ``python -c code`` against this server.

        Args:
            code: The program.
            env: The environment (default: :meth:`env`).
            timeout: Seconds to wait.

        Returns:
            The finished process.
        """
        return self.run([sys.executable, "-c", code], env=env, timeout=timeout)

    def run(
        self,
        args: Sequence[str],
        env: Mapping[str, str] | None = None,
        cwd: Path = REPO_ROOT,
        timeout: float = CLI_TIMEOUT,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command in its own session; kill its group if it outlives ``timeout``.

        Args:
            args: The command.
            env: The environment (default: :meth:`env`).
            cwd: The working directory.
            timeout: Seconds to wait.
            check: Fail the test on a non-zero exit code.

        Returns:
            The finished process (text output).
        """
        popen = subprocess.Popen(
            list(args),
            env=dict(env if env is not None else self.env()),
            cwd=str(cwd),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        try:
            stdout, stderr = popen.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(popen.pid, signal.SIGKILL)
            stdout, stderr = popen.communicate()
            pytest.fail(
                f"{' '.join(args)} did not finish in {timeout:.0f} s\n{stdout}\n{stderr}\n"
                f"{self.diagnostics()}"
            )
        done = subprocess.CompletedProcess(list(args), popen.returncode, stdout, stderr)
        if check and done.returncode != 0:
            pytest.fail(
                f"{' '.join(args)} exited with {done.returncode}\nstdout:\n{stdout}\n"
                f"stderr:\n{stderr}\n{self.diagnostics()}"
            )
        return done

    def start(
        self, name: str, args: Sequence[str], env: Mapping[str, str], cwd: Path
    ) -> ManagedProcess:
        """Start a background process that is stopped with the server.

        Args:
            name: For messages and the log file name.
            args: The command.
            env: Its environment.
            cwd: Its working directory.

        Returns:
            The process.
        """
        process = ManagedProcess.start(name, args, env, cwd, self.root / f"{name}.log")
        self.processes.append(process)
        return process

    def diagnostics(self) -> str:
        """The tail of the server's and every background process's log, for failure messages.

        Returns:
            The text.
        """
        parts = []
        for process in [self.server, *self.processes]:
            state = "running" if process.alive() else f"exited {process.popen.returncode}"
            parts.append(f"----- {process.name} ({state}) -----\n{process.log_tail()}")
        return "\n".join(parts)

    def stop(self) -> None:
        """Stop every background process, then the server."""
        stop_all(self.processes)
        self.server.stop()


def wait_for_health(url: str, process: ManagedProcess, timeout: float) -> None:
    """Wait until ``GET url`` answers 200.

    Args:
        url: The health endpoint.
        process: The server (its exit ends the wait early).
        timeout: Seconds.

    Raises:
        RuntimeError: With the server's log, if it exits or does not answer in time.
    """
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.alive():
            raise RuntimeError(f"{process.name} exited:\n{process.log_tail()}")
        try:
            with opener.open(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer in {timeout:.0f} s:\n{process.log_tail()}")


@contextmanager
def running_prefect(prefix: str = "prefect-cometapi-deploy-") -> Iterator[RealPrefect]:
    """``prefect server start`` on a free 127.0.0.1 port with its own PREFECT_HOME (SQLite).

    Args:
        prefix: Of the temporary directory holding its home and every log.

    Yields:
        The server; it and every process started against it stop when the block ends.
    """
    root = Path(tempfile.mkdtemp(prefix=prefix))
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    home = root / "server"
    home.mkdir()
    env = base_env(PREFECT_HOME=str(home), PREFECT_UI_ENABLED="false")
    server = ManagedProcess.start(
        "server",
        [*prefect_cli(), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env,
        root,
        root / "server.log",
    )
    prefect = RealPrefect(api_url=api_url, root=root, server=server)
    try:
        wait_for_health(f"{api_url}/health", server, SERVER_START_TIMEOUT)
        yield prefect
    finally:
        prefect.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def real_prefect() -> Iterator[RealPrefect]:
    """The session's real server (shared by the deployment and fleet tests)."""
    with running_prefect() as prefect:
        yield prefect


@dataclass
class DeployedProject:
    """``deployments/prefect.yaml`` applied to a real server, with a worker polling the pool.

    Attributes:
        prefect: The server.
        bucket: The bucket the deployments were given at deploy time (``COMETAPI_S3_BUCKET``).
        worker: The process worker of the ``cometapi-process`` pool.
        fleet_worker: A process worker of the ``cometapi-fleet`` pool (queue ``default``).
        deploy_output: What ``prefect deploy`` printed.
        results_bucket: The bucket of the fleet's result storage block.
        worker_env: The environment the workers were started with.
    """

    prefect: RealPrefect
    bucket: str
    worker: ManagedProcess
    fleet_worker: ManagedProcess
    deploy_output: str
    results_bucket: str = ""
    worker_env: dict[str, str] = field(default_factory=dict)

    def client(self) -> Any:
        """A synchronous Prefect client of the real server (use it as a context manager).

        Returns:
            ``SyncPrefectClient`` for :attr:`prefect`'s API URL.
        """
        from prefect.client.orchestration import SyncPrefectClient

        return SyncPrefectClient(self.prefect.api_url)

    def wait_for_flow_run(self, flow_run_id: str | uuid.UUID, timeout: float = 240.0) -> Any:
        """Wait until a flow run is final; fail with every log if it is not COMPLETED.

        Args:
            flow_run_id: The run.
            timeout: Seconds.

        Returns:
            The completed flow run.
        """
        from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

        run_id = uuid.UUID(str(flow_run_id))
        deadline = time.monotonic() + timeout
        with self.client() as client:
            run = client.read_flow_run(run_id)
            while time.monotonic() < deadline and not (run.state and run.state.is_final()):
                if not (self.worker.alive() and self.fleet_worker.alive()):
                    break
                time.sleep(1.0)
                run = client.read_flow_run(run_id)
            if run.state is not None and run.state.is_completed():
                return run
            logs = client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id]))
            )
        lines = "\n".join(f"{log.timestamp} {log.level} {log.message}" for log in logs)
        state = run.state.type.value if run.state else None
        pytest.fail(
            f"flow run {run_id} is {state} ({run.state.message if run.state else ''}) after "
            f"waiting up to {timeout:.0f} s\nflow run logs:\n{lines}\n"
            f"{self.prefect.diagnostics()}"
        )


def _save_credentials_code(base_url: str, api_key: str) -> str:
    return (
        "from prefect_cometapi.blocks import CometAPICredentials\n"
        f"CometAPICredentials(api_key={api_key!r}, base_url={base_url!r})"
        f".save({CREDENTIALS_BLOCK!r}, overwrite=True)\n"
    )


@pytest.fixture(scope="session")
def deployed_project(
    real_prefect: RealPrefect, s3_server: Any, emulator_server: Any, api_key: str
) -> Iterator[DeployedProject]:
    """The work pools, the block type and block, the deployments and a running worker.

    Done exactly as the deployment README tells a user (CLI commands from the repository root),
    except that the credentials block is saved from Python instead of the UI.
    """
    prefect = real_prefect
    bucket = f"deploy-{uuid.uuid4().hex[:16]}"
    s3 = s3_server.client()
    s3.create_bucket(Bucket=bucket)

    prefect.cli("work-pool", "create", PROCESS_POOL, "--type", "process")
    prefect.cli("work-pool", "create", FLEET_POOL, "--type", "process")
    prefect.cli("work-pool", "set-concurrency-limit", FLEET_POOL, str(FLEET_POOL_CONCURRENCY))
    for name, (limit, decay) in GLOBAL_LIMITS.items():
        args = ["gcl", "create", name, "--limit", limit]
        prefect.cli(*args, *(["--slot-decay-per-second", decay] if decay != "0" else []))
    prefect.cli("block", "register", "-m", "prefect_cometapi")
    prefect.python(_save_credentials_code(emulator_server.base_url, api_key))
    # The fleet's shared result storage, as docs/fleet.md creates it (prefect-aws on moto).
    results_bucket = f"results-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=results_bucket)
    prefect.cli("block", "register", "-m", "prefect_aws")
    prefect.python(_save_results_block_code(results_bucket, s3_server.endpoint_url))
    deployed = prefect.cli(
        "deploy",
        "--prefect-file",
        str(PREFECT_FILE.relative_to(REPO_ROOT)),
        "--all",
        "--no-prompt",
        env=prefect.env(COMETAPI_S3_BUCKET=bucket),
    )

    # The worker runs somewhere else than the repository: the deployment's pull step must
    # bring each flow run back to it. No COMETAPI_KEY: the key comes from the block.
    worker_dir = prefect.root / "worker-cwd"
    worker_dir.mkdir()
    worker_env = prefect.env(
        "worker",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL_S3=s3_server.endpoint_url,
        AWS_EC2_METADATA_DISABLED="true",
        PREFECT_WORKER_QUERY_SECONDS="1",
        PREFECT_WORKER_PREFETCH_SECONDS="5",
    )
    workers = [
        prefect.start(
            name,
            [
                *prefect_cli(),
                "worker",
                "start",
                "--pool",
                pool,
                "--type",
                "process",
                "--name",
                f"cometapi-test-{name}",
                "--install-policy",
                "never",
                *extra,
            ],
            worker_env,
            worker_dir,
        )
        for name, pool, extra in (
            ("worker", PROCESS_POOL, []),
            # The fleet worker polls only the default queue, at most FLEET_WORKER_LIMIT runs.
            (
                "fleet-worker",
                FLEET_POOL,
                ["--work-queue", FLEET_WORKER_QUEUE, "--limit", str(FLEET_WORKER_LIMIT)],
            ),
        )
    ]
    try:
        yield DeployedProject(
            prefect=prefect,
            bucket=bucket,
            worker=workers[0],
            fleet_worker=workers[1],
            deploy_output=deployed.stdout + deployed.stderr,
            results_bucket=results_bucket,
            worker_env=worker_env,
        )
    finally:
        stop_all(workers)
        _empty_and_delete(s3, bucket)
        _empty_and_delete(s3, results_bucket)


def _save_results_block_code(bucket: str, endpoint_url: str) -> str:
    return (
        "from prefect_aws import AwsCredentials, S3Bucket\n"
        "credentials = AwsCredentials(aws_access_key_id='testing', "
        "aws_secret_access_key='testing', region_name='us-east-1', "
        f"aws_client_parameters={{'endpoint_url': {endpoint_url!r}}})\n"
        f"S3Bucket(bucket_name={bucket!r}, bucket_folder='prefect-results', "
        f"credentials=credentials).save({RESULTS_BLOCK!r}, overwrite=True)\n"
    )


@dataclass
class FleetWorkers:
    """Two process workers of the fleet pool, each with its own PREFECT_HOME.

    Attributes:
        first: The session's fleet worker (polls the ``default`` queue).
        second: Another one, polling ``default`` and :data:`SECOND_WORKER_QUEUE`.
        first_name: The first worker's name (``prefect.worker.name`` label of its runs).
        second_name: The second worker's name.
    """

    first: ManagedProcess
    second: ManagedProcess
    first_name: str
    second_name: str


@pytest.fixture(scope="module")
def second_fleet_worker(deployed_project: DeployedProject) -> Iterator[FleetWorkers]:
    """A second fleet worker, started as the README starts one on another machine.

    It has its own PREFECT_HOME (so its own local result storage): an image it finds in the
    cache can only come from the shared S3Bucket block. The lock files of the image cache are
    the only thing shared through the file system (``PREFECT_COMETAPI_LOCK_DIR`` pointing at the
    first worker's lock directory), as workers of one machine share them.
    """
    prefect = deployed_project.prefect
    prefect.cli("work-queue", "create", SECOND_WORKER_QUEUE, "--pool", FLEET_POOL)
    home = prefect.root / "worker-b"
    home.mkdir(exist_ok=True)
    env = {
        **deployed_project.worker_env,
        "PREFECT_HOME": str(home),
        "PREFECT_LOCAL_STORAGE_PATH": str(home / "storage"),
        "PREFECT_COMETAPI_LOCK_DIR": str(prefect.root / "worker" / "locks"),
    }
    worker_dir = prefect.root / "worker-b-cwd"
    worker_dir.mkdir(exist_ok=True)
    name = "cometapi-test-fleet-worker-b"
    second = prefect.start(
        "fleet-worker-b",
        [
            *prefect_cli(),
            "worker",
            "start",
            "--pool",
            FLEET_POOL,
            "--type",
            "process",
            "--name",
            name,
            "--work-queue",
            FLEET_WORKER_QUEUE,
            "--work-queue",
            SECOND_WORKER_QUEUE,
            "--limit",
            str(FLEET_WORKER_LIMIT),
            "--install-policy",
            "never",
        ],
        env,
        worker_dir,
    )
    try:
        yield FleetWorkers(
            first=deployed_project.fleet_worker,
            second=second,
            first_name="cometapi-test-fleet-worker",
            second_name=name,
        )
    finally:
        second.stop()


def _empty_and_delete(s3: Any, bucket: str) -> None:
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                s3.delete_object(Bucket=bucket, Key=obj["Key"])
        s3.delete_bucket(Bucket=bucket)
    except Exception:  # noqa: BLE001 - best-effort cleanup of a throwaway bucket
        pass


def flow_run_id_from_cli(output: str) -> str:
    """The flow run id that ``prefect deployment run`` printed.

    Args:
        output: Its output.

    Returns:
        The UUID.

    Raises:
        AssertionError: No UUID in the output.
    """
    match = _UUID_RE.search(output.split("UUID", 1)[-1]) or _UUID_RE.search(output)
    assert match, f"no flow run id in:\n{output}"
    return match.group(0)


def as_param(value: Any) -> str:
    """A JSON value for ``prefect deployment run --param name=<value>``.

    Args:
        value: Anything JSON can encode.

    Returns:
        The JSON text.
    """
    return json.dumps(value)
