"""Run the emulator with uvicorn in a background thread: ``with Emulator() as emu: ...``."""

from __future__ import annotations

import threading
import time
from types import TracebackType
from typing import Any

import uvicorn

from prefect_cometapi.emulator.app import create_app
from prefect_cometapi.emulator.state import EmulatorConfig, EmulatorState, RequestRecord

__all__ = ["Emulator"]


class Emulator:
    """A CometAPI (OpenAI Images API) emulator served on a local port.

    Args:
        config: Its configuration (kept as the default that :meth:`reset` restores).
        host: Interface to bind; keep the loopback default unless you know why.
        port: Port to bind; 0 picks a free one (see :attr:`base_url`).
        control: Serve the ``/_emulator/*`` control endpoints over HTTP (off by default; the
            Python methods below work either way).

    Example:
        >>> with Emulator(EmulatorConfig(latency_s=0.1)) as emu:  # doctest: +SKIP
        ...     client = openai.OpenAI(api_key="sk-any", base_url=emu.base_url)
    """

    def __init__(
        self,
        config: EmulatorConfig | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        control: bool = False,
    ) -> None:
        self._state = EmulatorState(config)
        self.host = host
        self.port = port
        self.control = control
        self.app = create_app(self._state, control=control)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # lifecycle -----------------------------------------------------------------------------
    def start(self, timeout: float = 15.0) -> Emulator:
        """Start serving in a background thread and wait until it accepts connections.

        Args:
            timeout: Seconds to wait for the server to start.

        Returns:
            ``self``.

        Raises:
            RuntimeError: If it is already running or does not start in time.
        """
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("the emulator is already running")
        config = uvicorn.Config(
            self.app,
            host=self.host,
            port=self.port,
            log_level="warning",
            lifespan="off",
            access_log=False,
            timeout_graceful_shutdown=2,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, name="cometapi-emulator", daemon=True)
        self._server, self._thread = server, thread
        thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the emulator did not start on {self.host}:{self.port}")
            time.sleep(0.01)
        self.port = server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        """Stop serving and wait for the thread to end (in-flight requests get ~2 s)."""
        server, thread = self._server, self._thread
        if server is not None:
            server.should_exit = True
        if thread is not None:
            thread.join(timeout=10)
        self._thread = None

    def serve_forever(self) -> None:
        """Block until :meth:`stop` is called from another thread (or the process ends)."""
        while self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout=0.5)

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # addresses and configuration -----------------------------------------------------------
    @property
    def base_url(self) -> str:
        """The OpenAI ``base_url``: ``http://127.0.0.1:<port>/v1``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    @property
    def url(self) -> str:
        """The server root, e.g. for ``/_emulator/state``."""
        return self.base_url.removesuffix("/v1")

    @property
    def config(self) -> EmulatorConfig:
        """The live configuration (change it with :meth:`configure`)."""
        return self._state.config

    def configure(self, **changes: Any) -> None:
        """Change config fields now, e.g. ``configure(latency_s=0.5, rate_429=0.2)``.

        Args:
            **changes: :class:`EmulatorConfig` field names and values.
        """
        self._state.configure(**changes)

    def script(self, *faults: str) -> None:
        """Queue faults for the next image requests, in order (``""``/``"ok"``: no fault).

        Args:
            *faults: Fault names, e.g. ``script("429", "ok", "drop")``.
        """
        self._state.script(faults)

    def reset(self) -> None:
        """Clear the log, counters and script; restore the config given at construction."""
        self._state.reset()

    # what happened -------------------------------------------------------------------------
    @property
    def requests(self) -> list[RequestRecord]:
        """A snapshot of every request received on the image endpoints, oldest first."""
        return self._state.records()

    @property
    def billed_images(self) -> int:
        """Images the real API would have charged for (successful and "slow" responses)."""
        return self._state.billed_images

    @property
    def billed_requests(self) -> int:
        """Requests that would have been billed."""
        return self._state.billed_requests

    @property
    def peak_in_flight(self) -> int:
        """The most image requests seen in flight at once since the last reset."""
        return self._state.peak_in_flight

    @property
    def in_flight(self) -> int:
        """Image requests in flight now."""
        return self._state.in_flight

    def wait_idle(self, timeout: float = 10) -> None:
        """Wait until no image request is in flight.

        Args:
            timeout: Seconds to wait at most.

        Raises:
            TimeoutError: If requests are still in flight.
        """
        self._state.wait_idle(timeout)
