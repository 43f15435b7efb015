"""The service that makes an image is part of the cache key and of the delivery ledger's key.

A saved credentials block is re-pointed from the emulator at ``127.0.0.1`` to the same emulator
reached as ``localhost`` (another service as far as a key can tell): what was cached or
delivered for the first must not count for the second, also when the block is given by name.
"""

from __future__ import annotations

import uuid
from typing import Any

from flow_checks import tag
from prefect import flow

from prefect_cometapi import CometAPICredentials
from prefect_cometapi.flows import ImageOptions, S3Options, batch_generate
from prefect_cometapi.tasks import generate_image


def _repoint(name: str, api_key: str, emulator: Any) -> None:
    """Save the block ``name`` again, now naming the emulator by another host name."""
    other = emulator.base_url.replace("127.0.0.1", "localhost")
    assert other != emulator.base_url
    CometAPICredentials(api_key=api_key, base_url=other, max_retries=0).save(name, overwrite=True)


def _saved(emulator: Any, api_key: str) -> str:
    name = f"service-{uuid.uuid4().hex[:8]}"
    CometAPICredentials(api_key=api_key, base_url=emulator.base_url, max_retries=0).save(name)
    return name


def test_a_block_name_keys_the_cache_on_the_service_it_names(emulator: Any, api_key: str) -> None:
    name = _saved(emulator, api_key)
    prompt = f"service of a named block {uuid.uuid4().hex[:8]}"

    @flow
    def once() -> Any:
        return generate_image(prompt, name, size="1024x1024", quality="low")

    once()
    once()
    assert len(emulator.requests) == 1, "the named block's request was not cached"
    _repoint(name, api_key, emulator)
    once()
    assert len(emulator.requests) == 2, "an image made by another service was served"


def test_a_delivery_counts_only_for_the_service_that_made_it(
    emulator: Any, api_key: str, s3_options: S3Options
) -> None:
    name = _saved(emulator, api_key)
    salt = tag()
    params: dict[str, Any] = {
        "s3": s3_options,
        "template": "A service badge {{ n }} " + salt,
        "items": [{"id": f"i{n}", "n": n} for n in range(2)],
        "image": ImageOptions(custom_size="1024x640", quality="low"),
        "credentials_block": name,
    }
    first = batch_generate(**params)
    assert (first.delivered, first.already_delivered) == (2, 0)
    again = batch_generate(**params)
    assert again.already_delivered == 2 and len(emulator.requests) == 2

    _repoint(name, api_key, emulator)
    other = batch_generate(**params)
    assert other.already_delivered == 0, "a delivery from another service was trusted"
    assert other.delivered == 2 and len(emulator.requests) == 4
