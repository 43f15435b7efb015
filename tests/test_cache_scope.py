"""The image cache across API keys (issue 23, item 5): PREFECT_COMETAPI_CACHE_SCOPE.

``shared`` keeps every key exactly as before the setting (pinned in
``tests/test_image_params.py``); ``per-key`` (the default) folds an HMAC of the API key into
the cache key, so a key the API refuses is never served another key's cached image.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from prefect_cometapi import CometAPICredentials
from prefect_cometapi.caching.keys import CACHE_SCOPE_ENV, cache_scope, image_cache_key
from prefect_cometapi.errors import AuthenticationError, ValidationError
from prefect_cometapi.tasks import generate_image

KEY_A = "sk-team-a-0123456789abcdef"
KEY_B = "sk-team-b-fedcba9876543210"
PINNED = "cometapi-generations-cf2c324e59cea554f79b881f7022db342ecf5300ff833dab62aef69de95c968f"
PARAMS = {
    "model": "gpt-image-2", "prompt": "a fox", "n": 2, "size": "1024x1024", "quality": "low",
    "output_format": "png", "background": "auto", "moderation": "auto", "variant": 3,
    "user": "u1",
}  # fmt: skip


def _key(api_key: str | None) -> str:
    credentials = None if api_key is None else CometAPICredentials(api_key=api_key)
    return image_cache_key("generations", {**PARAMS, "credentials": credentials})


def test_per_key_is_the_default_and_other_values_are_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(CACHE_SCOPE_ENV, raising=False)
    assert cache_scope() == "per-key"
    monkeypatch.setenv(CACHE_SCOPE_ENV, " Shared ")
    assert cache_scope() == "shared"
    monkeypatch.setenv(CACHE_SCOPE_ENV, "team")
    with pytest.raises(ValidationError) as info:
        cache_scope()
    assert info.value.param == CACHE_SCOPE_ENV


def test_shared_scope_keys_are_todays_keys_for_every_api_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(CACHE_SCOPE_ENV, "shared")
    monkeypatch.setenv("COMETAPI_KEY", KEY_B)
    assert _key(None) == _key(KEY_A) == _key(KEY_B) == PINNED


def test_per_key_scope_separates_keys_and_never_holds_the_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(CACHE_SCOPE_ENV, "per-key")
    monkeypatch.setenv("COMETAPI_KEY", KEY_B)
    a, b = _key(KEY_A), _key(KEY_B)
    assert a != b and PINNED not in (a, b)
    assert _key(None) == b  # the worker's COMETAPI_KEY is the key in use
    assert _key(KEY_A) == a  # stable
    for key in (KEY_A, KEY_B):
        for form in (key, hashlib.sha256(key.encode()).hexdigest(), key.encode().hex()):
            assert form not in a and form not in b


@pytest.mark.parametrize(("scope", "served"), [("per-key", False), ("shared", True)])
def test_a_key_the_api_refuses_is_served_from_the_cache_only_when_shared(
    emulator: Any, api_key: str, monkeypatch: pytest.MonkeyPatch, scope: str, served: bool
) -> None:
    import uuid

    monkeypatch.setenv(CACHE_SCOPE_ENV, scope)
    prompt = f"a cached lighthouse {uuid.uuid4().hex[:10]}"
    good = CometAPICredentials(api_key=api_key, base_url=emulator.base_url, max_retries=0)
    revoked = CometAPICredentials(
        api_key="sk-revoked-0123456789abcdef", base_url=emulator.base_url, max_retries=0
    )
    first = generate_image(prompt, good, size="1024x1024", quality="low")
    assert len(emulator.requests) == 1
    if served:
        again = generate_image(prompt, revoked, size="1024x1024", quality="low")
        assert again.images[0].sha256 == first.images[0].sha256
        assert len(emulator.requests) == 1  # a cache hit: nothing sent
    else:
        with pytest.raises(AuthenticationError):
            generate_image(prompt, revoked, size="1024x1024", quality="low")
        assert len(emulator.requests) == 2  # asked the API, which refused the key
