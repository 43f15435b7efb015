"""A temporary Prefect server on 127.0.0.1, started in the open and waited for as long as it needs.

Prefect's own ephemeral server gives up after ``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS``
(20 s by default), which a first start on a slow or busy machine can exceed: the server creates its
SQLite database under ``PREFECT_HOME``, runs every migration and registers the block types before
it answers. :func:`temporary_prefect_server` starts the same server (Prefect's ``create_app``
under uvicorn, no UI, analytics off), says what it is waiting for, waits up to
:data:`STARTUP_TIMEOUT_S`, keeps the server's own output in a log file (shown only when it fails)
and points this process's Prefect client at it until the ``with`` block ends.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

from prefect_cometapi.demo.environ import patched_environ

__all__ = [
    "prefect_for_demo",
    "ServerStartError",
    "server_start_command",
    "temporary_prefect_server",
]

STARTUP_TIMEOUT_S = 600.0
"""How long to wait for the server's health check (a first start on 2 busy cores needs minutes)."""
SERVER_LOG_NAME = "cometapi-temporary-server.log"
"""The server's output, kept under ``PREFECT_HOME``."""
_SERVER_ENV = {
    "PREFECT_UI_ENABLED": "false",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
    "PREFECT__SERVER_EPHEMERAL": "1",
    "PREFECT__SERVER_FINAL": "1",
}


def server_start_command(home: str | None = None) -> str:
    """The command that serves a Prefect home's runs in the UI, as typed in a fresh shell.

    It names this environment's own ``prefect`` by its absolute path, so it works with no virtual
    environment active (a bare ``prefect`` is "command not found" there).

    Args:
        home: The ``PREFECT_HOME`` to serve, or ``None`` for the default one.

    Returns:
        E.g. ``PREFECT_HOME=/tmp/home /repo/.venv/bin/prefect server start``.
    """
    script = Path(sys.executable).absolute().with_name("prefect")
    prefect = shlex.quote(str(script)) if script.exists() else "prefect"
    return f"{f'PREFECT_HOME={shlex.quote(home)} ' if home else ''}{prefect} server start"


class ServerStartError(RuntimeError):
    """The temporary server exited or did not answer in time (the message holds its log's end)."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _log_tail(path: Path, chars: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def _drain_to_server() -> None:
    """Send the logs and events still queued in this process before the server goes away."""
    import inspect

    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.utilities.asyncutils import run_coro_as_sync

    async def drain() -> None:
        with contextlib.suppress(RuntimeError):  # a worker that never started
            done = APILogWorker.instance().drain()
            if inspect.isawaitable(done):
                await done
        done = EventsWorker.drain_all()
        if inspect.isawaitable(done):
            await done

    run_coro_as_sync(drain())


class LaunchedServer:
    """A temporary Prefect server process that was started and may not answer yet.

    Attributes:
        api_url: Its API URL, e.g. ``http://127.0.0.1:43123/api``.
        log_path: Where its output goes.
    """

    def __init__(self, api_url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
        self.api_url = api_url
        self.log_path = log_path
        self._process = process
        self._started = time.monotonic()

    def wait(self, timeout_s: float = STARTUP_TIMEOUT_S) -> float:
        """Wait until it answers its health check.

        Args:
            timeout_s: How long after the launch to wait at most.

        Returns:
            Seconds from the launch until it answered.

        Raises:
            ServerStartError: It exited or did not answer within ``timeout_s``.
        """
        while not _healthy(self.api_url):
            if self._process.poll() is not None:
                raise ServerStartError(
                    f"the temporary Prefect server exited with status {self._process.returncode}; "
                    f"its log ({self.log_path}) ends with:\n{_log_tail(self.log_path)}"
                )
            if time.monotonic() - self._started > timeout_s:
                raise ServerStartError(
                    f"the temporary Prefect server did not answer within {timeout_s:.0f} s; "
                    f"its log ({self.log_path}) ends with:\n{_log_tail(self.log_path)}"
                )
            time.sleep(0.25)
        return time.monotonic() - self._started

    @contextlib.contextmanager
    def connected(self) -> Iterator[str]:
        """Point this process's Prefect client at the server for the block's duration.

        On exit, the logs and events still queued in this process are sent first.

        Yields:
            The API URL.
        """
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: self.api_url}):
            try:
                yield self.api_url
            finally:
                _drain_to_server()

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL after 10 s)."""
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


@contextlib.contextmanager
def launching_prefect_server(say: Callable[[str], None] = print) -> Iterator[LaunchedServer]:
    """Start a Prefect server process on 127.0.0.1 without waiting for it; stop it at the end.

    The caller can do other work while the server starts (it needs seconds, and on a first
    start on ``PREFECT_HOME`` a minute or more for its migrations), then call
    :meth:`LaunchedServer.wait` and :meth:`LaunchedServer.connected`.

    Args:
        say: Where the one-line status message goes.

    Yields:
        The launched server.
    """
    from prefect.settings import PREFECT_HOME, get_current_settings

    home = Path(PREFECT_HOME.value())
    home.mkdir(parents=True, exist_ok=True)
    log_path = home / SERVER_LOG_NAME
    port = _free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        **get_current_settings().to_environment_variables(exclude_unset=True),
        **_SERVER_ENV,
    }
    env.pop("PREFECT_API_URL", None)
    command = [sys.executable, "-m", "uvicorn", "--factory", "prefect.server.api.server:create_app"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "error"]
    command += ["--lifespan", "on"]
    first = not any(home.glob("*.db"))
    say(
        f"Prefect:           starting a temporary server on 127.0.0.1:{port}; "
        + (
            "first run: it creates its database under "
            f"{home} (migrations, block types), which can take a minute or two"
            if first
            else f"it opens its database under {home}"
        )
    )
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    server = LaunchedServer(api_url, process, log_path)
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def temporary_prefect_server(
    say: Callable[[str], None] = print, timeout_s: float = STARTUP_TIMEOUT_S
) -> Iterator[str]:
    """Start a Prefect server on 127.0.0.1 for this process; stop it when the block ends.

    Inside the block, ``PREFECT_API_URL`` points at it (flows, tasks and artifacts go there, and
    its database under ``PREFECT_HOME`` keeps them for ``prefect server start`` later).

    Args:
        say: Where the one-line status messages go.
        timeout_s: How long to wait for the first health check.

    Yields:
        The server's API URL, e.g. ``http://127.0.0.1:43123/api``.

    Raises:
        ServerStartError: The server exited or did not answer within ``timeout_s``.
    """
    with launching_prefect_server(say) as server:
        waited = server.wait(timeout_s)
        say(f"Prefect:           ready after {waited:.0f} s ({server.api_url})")
        with server.connected() as api_url:
            yield api_url


@contextlib.contextmanager
def console_warnings_only() -> Iterator[None]:
    """Prefect's console handlers show warnings and errors only; the run's logs still go to the
    server (the UI shows them), and the demo prints its own per-item report."""
    from prefect.logging.handlers import PrefectConsoleHandler

    handlers = [
        handler
        for name in (None, "uvicorn", "fastapi")
        for handler in logging.getLogger(name).handlers
        if isinstance(handler, PrefectConsoleHandler)
    ]
    levels = [handler.level for handler in handlers]
    for handler in handlers:
        handler.setLevel(max(handler.level, logging.WARNING))
    try:
        yield
        send_queued_events_and_logs()
    finally:
        for handler, level in zip(handlers, levels, strict=True):
            handler.setLevel(level)


def send_queued_events_and_logs() -> None:
    """Send the run's queued events and logs now, while the server is still up.

    Left for the interpreter's exit, they would go to a temporary server that is already gone,
    and Prefect's queue services print ``Still processing items: N items remaining...`` to the
    console while they drain.
    """
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    quiet = [logging.getLogger(type_.__name__) for type_ in (EventsWorker, APILogWorker)]
    levels = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(logging.ERROR)
    try:
        EventsWorker.drain_all(timeout=30, at_exit=False)
        APILogWorker.drain_all(timeout=30, at_exit=False)
    finally:
        for logger, level in zip(quiet, levels, strict=True):
            logger.setLevel(level)


@contextlib.contextmanager
def prefect_for_demo() -> Iterator[Callable[[], AbstractContextManager[str | None]]]:
    """The Prefect server the demo reports to, with telemetry off and a quiet console.

    The configured ``PREFECT_API_URL`` when there is one; otherwise a temporary local server
    (:func:`prefect_cometapi.demo.server.launching_prefect_server`), started at once, whose
    database under ``PREFECT_HOME`` keeps the run for ``prefect server start``.

    Yields:
        ``connect``: a context manager that waits until the server answers, points this
        process's Prefect client at it for the block's duration and yields the configured
        server's UI URL, or ``None`` for the temporary server (it has no UI).
    """
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL

    from prefect_cometapi.demo.server import ServerStartError, launching_prefect_server

    def say(line: str) -> None:
        print(line, flush=True)

    # DO_NOT_TRACK: Prefect's client-side usage events.
    with patched_environ(set={"DO_NOT_TRACK": "1"}):
        if PREFECT_API_URL.value():
            say(f"Prefect:           {PREFECT_API_URL.value()} (PREFECT_API_URL)")

            @contextlib.contextmanager
            def configured() -> Iterator[str | None]:
                with console_warnings_only():
                    yield PREFECT_UI_URL.value()

            yield configured
            return
        with launching_prefect_server(say=say) as server:

            @contextlib.contextmanager
            def temporary() -> Iterator[str | None]:
                try:
                    waited = server.wait()
                except ServerStartError as exc:
                    raise SystemExit(f"error: {exc}") from None
                say(f"Prefect:           ready after {waited:.0f} s ({server.api_url})")
                with console_warnings_only(), server.connected():
                    yield None

            yield temporary
