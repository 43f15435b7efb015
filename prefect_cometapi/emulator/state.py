"""The emulator's configuration, request log and billing counters (shared by all threads)."""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from prefect_cometapi.emulator.faults import normalize_fault


@dataclass
class EmulatorConfig:
    """How the emulator behaves; change it live with ``Emulator.configure(**changes)``.

    Attributes:
        api_keys: Accepted bearer tokens; ``None`` accepts any non-empty token.
        latency_s: Added latency per image request (an ``asyncio.sleep``, so requests overlap).
        rate_429: Probability that a request gets a 429 rate-limit error.
        rate_500: Probability of a 500 server error.
        rate_503: Probability of a 503 overload error.
        rate_drop: Probability that the connection is dropped mid-response.
        rate_slow: Probability that the response is delayed by ``slow_s`` (and still billed).
        slow_s: How long a "slow" response sleeps before answering.
        retry_after_s: Value of ``retry-after`` (and ``retry-after-ms``) on 429 and 503.
        seed: Seed of the random generator that draws the faults.
        light_images: Answer flat drawings (about 0.1 MB at 1024x1024) instead of images with
            photographic weight (about 2 MB, like the real API's); for tests that want speed.
        image_pool: Answer generations (PNG, opaque) from this many pre-drawn realistic images,
            each answer made distinct by a text chunk holding its prompt, instead of drawing
            every one; for benchmarks, where the real API's drawing happens on its servers and
            the stand-in's should not take the cores of the machine under test. 0 draws each.
    """

    api_keys: frozenset[str] | None = None
    latency_s: float = 0.0
    rate_429: float = 0.0
    rate_500: float = 0.0
    rate_503: float = 0.0
    rate_drop: float = 0.0
    rate_slow: float = 0.0
    slow_s: float = 30.0
    retry_after_s: float = 1.0
    seed: int | None = None
    light_images: bool = False
    image_pool: int = 0

    def to_json(self) -> dict[str, Any]:
        """The config as JSON-ready data, without the keys themselves.

        ``api_keys`` becomes the number of accepted keys (``None``: any key is accepted), so the
        control endpoints never hand a configured key to whoever asks.

        Returns:
            A dict of every field.
        """
        data = dataclasses.asdict(self)
        data["api_keys"] = None if self.api_keys is None else len(self.api_keys)
        return data


_RATE_FAULTS = (
    ("rate_429", "429"),
    ("rate_500", "500"),
    ("rate_503", "503"),
    ("rate_drop", "drop"),
    ("rate_slow", "slow"),
)


@dataclass
class RequestRecord:
    """One request received on an image endpoint (including rejected ones).

    Attributes:
        endpoint: ``"generations"`` or ``"edits"``.
        started_at: ``time.monotonic()`` when the request arrived.
        finished_at: ``time.monotonic()`` when it was answered (or dropped).
        status: The HTTP status answered; ``None`` for a dropped connection.
        fault: The injected fault, if any.
        params: The JSON body, or the multipart non-file fields (strings as received).
        files: Multipart files: field name -> ``[{"filename", "content_type", "size", "sha256"}]``.
        billed_images: Images the real API would have charged for.
        headers: Request headers without ``authorization``.
    """

    endpoint: str
    started_at: float
    finished_at: float | None = None
    status: int | None = None
    fault: str | None = None
    params: dict = field(default_factory=dict)
    files: dict[str, list[dict]] = field(default_factory=dict)
    billed_images: int = 0
    headers: dict[str, str] = field(default_factory=dict)

    def to_json(self, with_headers: bool = False) -> dict[str, Any]:
        """The record as JSON-ready data.

        Args:
            with_headers: Include the (already redacted) request headers.

        Returns:
            A dict of the fields.
        """
        data = dataclasses.asdict(self)
        if not with_headers:
            data.pop("headers")
        return data


def _coerce_config_value(name: str, value: Any) -> Any:
    if name == "api_keys":
        if value is None:
            return None
        if isinstance(value, str):
            return frozenset({value})
        return frozenset(str(v) for v in value)
    if name == "seed":
        return None if value is None else int(value)
    if name == "light_images":
        if isinstance(value, str):
            return value.strip().lower() in ("1", "true", "yes", "on")
        return bool(value)
    return float(value)


class EmulatorState:
    """Everything the request handlers and the test-facing API share, behind one lock.

    Args:
        config: The configuration; a copy is kept as the default that :meth:`reset` restores.
    """

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self.config = config if config is not None else EmulatorConfig()
        self._default = dataclasses.replace(self.config)
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._records: list[RequestRecord] = []
        self._script: deque[str] = deque()
        self._rng = random.Random(self.config.seed)
        self.billed_images = 0
        self.billed_requests = 0
        self.in_flight = 0
        self.peak_in_flight = 0

    # configuration -------------------------------------------------------------------------
    def configure(self, **changes: Any) -> None:
        """Update config fields in place.

        Args:
            **changes: Field names of :class:`EmulatorConfig` and their new values.

        Raises:
            TypeError: For an unknown field name.
        """
        names = {f.name for f in dataclasses.fields(EmulatorConfig)}
        unknown = set(changes) - names
        if unknown:
            raise TypeError(f"unknown EmulatorConfig field(s): {', '.join(sorted(unknown))}")
        coerced = {k: _coerce_config_value(k, v) for k, v in changes.items()}
        with self._lock:
            for key, value in coerced.items():
                setattr(self.config, key, value)
            if "seed" in coerced:
                self._rng = random.Random(self.config.seed)

    def script(self, faults: Iterable[str]) -> None:
        """Queue faults for the next image requests, in order (``""``/``"ok"`` = none).

        Args:
            faults: Fault names.

        Raises:
            ValueError: For an unknown fault name.
        """
        names = [normalize_fault(f) or "" for f in faults]
        with self._lock:
            self._script.extend(names)

    def reset(self) -> None:
        """Clear the log, the counters and the script; restore the default config."""
        with self._lock:
            self._records.clear()
            self._script.clear()
            self.billed_images = 0
            self.billed_requests = 0
            self.peak_in_flight = self.in_flight
            for f in dataclasses.fields(EmulatorConfig):
                setattr(self.config, f.name, getattr(self._default, f.name))
            self._rng = random.Random(self.config.seed)

    # per request ---------------------------------------------------------------------------
    def begin(self, endpoint: str, headers: dict[str, str]) -> RequestRecord:
        """Log a new request and count it in flight.

        Args:
            endpoint: ``generations`` or ``edits``.
            headers: Request headers, already without ``authorization``.

        Returns:
            The live record (finish it with :meth:`finish`).
        """
        record = RequestRecord(endpoint=endpoint, started_at=time.monotonic(), headers=headers)
        with self._lock:
            self._records.append(record)
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        return record

    def draw_fault(self) -> str | None:
        """The fault for the next accepted request: the script first, then the random rates.

        Returns:
            A fault name or ``None``.
        """
        with self._lock:
            if self._script:
                return self._script.popleft() or None
            cfg = self.config
            if not any(getattr(cfg, name) > 0 for name, _ in _RATE_FAULTS):
                return None
            u = self._rng.random()
            edge = 0.0
            for name, fault in _RATE_FAULTS:
                edge += getattr(cfg, name)
                if u < edge:
                    return fault
            return None

    def finish(self, record: RequestRecord, status: int | None, billed_images: int = 0) -> None:
        """Close a request: status, time, billing; leaves the in-flight count.

        Args:
            record: The record from :meth:`begin`.
            status: The HTTP status sent (``None`` when dropped).
            billed_images: Images billed for it (0 for errors).
        """
        with self._lock:
            record.status = status
            record.finished_at = time.monotonic()
            record.billed_images = billed_images
            if billed_images:
                self.billed_images += billed_images
                self.billed_requests += 1
            self.in_flight -= 1
            self._idle.notify_all()

    # views ---------------------------------------------------------------------------------
    def records(self) -> list[RequestRecord]:
        """A snapshot (copies) of every record.

        Returns:
            The records, oldest first.
        """
        with self._lock:
            return [
                dataclasses.replace(r, params=dict(r.params), files=dict(r.files))
                for r in self._records
            ]

    def wait_idle(self, timeout: float = 10) -> None:
        """Block until no image request is in flight.

        Args:
            timeout: Seconds to wait at most.

        Raises:
            TimeoutError: If requests are still in flight after ``timeout``.
        """
        with self._idle:
            if not self._idle.wait_for(lambda: self.in_flight == 0, timeout=timeout):
                raise TimeoutError(f"{self.in_flight} emulator request(s) still in flight")

    def snapshot(self) -> dict[str, Any]:
        """The state as served by ``GET /_emulator/state`` (records without headers).

        Returns:
            Counters, the config and the records.
        """
        records = self.records()
        with self._lock:
            return {
                "requests": len(records),
                "billed_images": self.billed_images,
                "billed_requests": self.billed_requests,
                "peak_in_flight": self.peak_in_flight,
                "in_flight": self.in_flight,
                "script": list(self._script),
                "config": self.config.to_json(),
                "records": [r.to_json() for r in records],
            }


__all__ = ["EmulatorConfig", "EmulatorState", "RequestRecord"]
