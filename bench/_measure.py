"""Measuring helpers of the benchmarks: the machine, load, CPU of processes, verdicts.

No Prefect import here (``_harness`` sets the environment before anything imports Prefect).
"""

from __future__ import annotations

import math
import os
import platform
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def machine() -> str:
    """One line describing the machine (cores, Python, load).

    Returns:
        E.g. ``2 cores, Python 3.11.7 (x86_64), load 1.80 2.80 2.63``.
    """
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{os.cpu_count()} cores, Python {platform.python_version()} ({platform.machine()}), "
        f"load avg {load}"
    )


def load() -> str:
    """The load average now.

    Returns:
        E.g. ``1.80 2.80 2.63`` (1, 5 and 15 minutes).
    """
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


_SPIN = (
    "import sys, time\n"
    "end = time.monotonic() + float(sys.argv[1])\n"
    "while time.monotonic() < end: pass\n"
)


@contextmanager
def busy_core(enabled: bool = True, limit_s: float = 3600.0) -> Iterator[None]:
    """Keep one core busy with a spinning process while the block runs.

    Args:
        enabled: ``False`` does nothing (so callers can pass a flag).
        limit_s: The spinner stops by itself after this long, whatever happens here.

    Yields:
        While the core is busy.
    """
    if not enabled:
        yield
        return
    spinner = subprocess.Popen([sys.executable, "-c", _SPIN, str(limit_s)])
    try:
        yield
    finally:
        spinner.terminate()
        spinner.wait(timeout=10)


def ideal_wall(n: int, concurrency: int, latency_s: float) -> float:
    """The API-bound lower bound of a batch: ``ceil(n / concurrency) x latency``.

    Args:
        n: Items.
        concurrency: Requests at once.
        latency_s: Seconds per request.

    Returns:
        Seconds.
    """
    return math.ceil(n / concurrency) * latency_s


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by a process, from ``/proc``.

    Args:
        pid: The process id.

    Returns:
        Seconds (0 if the process is gone).
    """
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            found.append(int(entry))
    return found


def add_image_pool_argument(parser: Any) -> None:
    """Add ``--image-pool N`` (default 8; 0 draws every image) to a bench's arguments.

    Args:
        parser: The bench's ``argparse.ArgumentParser``.
    """
    parser.add_argument(
        "--image-pool",
        type=int,
        default=8,
        help="the emulator answers from N pre-drawn realistic PNGs (0: it draws each one)",
    )


def image_pool_line(image_pool: int) -> str:
    """Say how the emulator makes its images, for a bench's header.

    Args:
        image_pool: The ``--image-pool`` value.

    Returns:
        One line.
    """
    if image_pool > 0:
        return f"emulator images: {image_pool} pre-drawn realistic PNGs (--image-pool 0 draws each)"
    return "emulator images: each one drawn (realistic), on this machine's cores"


def new_run_id() -> str:
    """A random run id, so a benchmark's prompts are new (the cache makes nothing free).

    Returns:
        12 hex digits.
    """
    return uuid.uuid4().hex[:12]


def verdict(ok: bool) -> str:
    """``met`` / ``NOT met``.

    Args:
        ok: Whether the goal is met.

    Returns:
        The word.
    """
    return "met" if ok else "NOT met"
