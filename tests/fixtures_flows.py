"""Fixtures of the flow tests: credentials for the session's emulator and a fresh S3 target."""

from __future__ import annotations

from typing import Any

import pytest

from prefect_cometapi import CometAPICredentials
from prefect_cometapi.flows import S3Options


@pytest.fixture
def credentials(emulator: Any, api_key: str) -> CometAPICredentials:
    """Credentials for the session's emulator, without client retries."""
    return CometAPICredentials(api_key=api_key, base_url=emulator.base_url, max_retries=0)


@pytest.fixture
def s3_options(s3_server: Any, s3_bucket: str) -> S3Options:
    """A fresh bucket on moto's server, keys under out/."""
    return S3Options(bucket=s3_bucket, endpoint_url=s3_server.endpoint_url, prefix="out/")
