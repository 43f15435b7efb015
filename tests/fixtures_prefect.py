"""A Prefect test server (SQLite), started once per session for every test."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect.testing.utilities import prefect_test_harness


@pytest.fixture(scope="session", autouse=True)
def prefect_server() -> Iterator[None]:
    """Run every test against one temporary Prefect server on 127.0.0.1."""
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def result_storage_dir() -> Path:
    """Where Prefect persists task results in this test session."""
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH

    return Path(PREFECT_LOCAL_STORAGE_PATH.value())
