"""The CometAPI emulator, started once per test session on 127.0.0.1.

Fixtures:
    emulator_server: the session's :class:`Emulator` (accepts only :data:`TEST_API_KEY`). It
        answers the light drawings (about 0.1 MB) by default, to keep the suite fast; the
        reliability suite and tests of image weight ``configure(light_images=False)``.
    emulator: the same server, reset (log, counters, script, config) before each test.
    api_key: :data:`TEST_API_KEY`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from prefect_cometapi.allowlist import ALLOWED_BASE_URLS_ENV
from prefect_cometapi.emulator import Emulator, EmulatorConfig

#: The only bearer token the session's emulator accepts.
TEST_API_KEY = "sk-test-emulator-0123456789abcdef"


@pytest.fixture(scope="session")
def emulator_server() -> Iterator[Emulator]:
    """The emulator for the whole session (use ``emulator`` in tests to get it reset)."""
    config = EmulatorConfig(api_keys=frozenset({TEST_API_KEY}), light_images=True)
    with Emulator(config, control=True) as emu:
        # The session owns this emulator: allow it as a worker would (subprocesses inherit it).
        os.environ[ALLOWED_BASE_URLS_ENV] = emu.base_url
        yield emu


@pytest.fixture
def emulator(emulator_server: Emulator) -> Iterator[Emulator]:
    """The session's emulator with a clean log, zero counters, no script and its default config."""
    try:
        emulator_server.wait_idle(timeout=5)
    except TimeoutError:
        pass  # a previous test left a slow request behind; reset anyway
    emulator_server.reset()
    yield emulator_server


@pytest.fixture(scope="session")
def api_key() -> str:
    """The API key the session's emulator accepts."""
    return TEST_API_KEY
