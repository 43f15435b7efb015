"""The image request parameters are declared once and everything else follows from them."""

from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap

import pytest

from prefect_cometapi import AsyncCometAPIClient, CometAPIClient
from prefect_cometapi.caching import image_cache_key
from prefect_cometapi.client.params import IMAGE_PARAMS, cache_key_names, params_for
from prefect_cometapi.flows import ImageOptions
from prefect_cometapi.tasks import edit_image, generate_image

#: A parameter the API does not have, added to the schema before anything else is imported.
FAKE_PARAMETER_SCRIPT = textwrap.dedent(
    """
    import importlib.util
    import inspect
    import sys

    # Load the schema module alone and extend it, then import the package, which derives from it.
    package = importlib.util.find_spec("prefect_cometapi").submodule_search_locations[0]
    spec = importlib.util.spec_from_file_location(
        "prefect_cometapi.client.params", f"{package}/client/params.py"
    )
    schema = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = schema
    spec.loader.exec_module(schema)
    schema.IMAGE_PARAMS = (
        *schema.IMAGE_PARAMS,
        schema.ImageParam("seed", int | None, None, "A fake parameter.", validated=False),
    )

    from prefect_cometapi import AsyncCometAPIClient, CometAPIClient
    from prefect_cometapi.caching import image_cache_key
    from prefect_cometapi.flows import ImageOptions
    from prefect_cometapi.tasks import edit_image, generate_image

    for method in (
        CometAPIClient.generate, CometAPIClient.edit,
        AsyncCometAPIClient.generate, AsyncCometAPIClient.edit,
    ):
        parameter = inspect.signature(method).parameters["seed"]
        assert parameter.kind is inspect.Parameter.KEYWORD_ONLY, method
        assert parameter.default is None and "seed: A fake parameter." in method.__doc__
    for task in (generate_image, edit_image):
        assert "seed" in inspect.signature(task.fn).parameters, task
        assert "seed: A fake parameter." in task.fn.__doc__

    client = CometAPIClient(api_key="sk-test-not-used", base_url="http://127.0.0.1:9/v1")
    prepared = client._core.prepare_generate("a fox", **{"seed": 7, "size": "1024x1024"})
    assert prepared.json["seed"] == 7, prepared.json
    client.close()

    base = {"prompt": "a fox", "model": "gpt-image-2"}
    assert image_cache_key("generations", {**base, "seed": 1}) != image_cache_key(
        "generations", {**base, "seed": 2}
    )

    options = ImageOptions(seed=5)
    assert "seed" in ImageOptions.model_fields
    assert options.request_kwargs()["seed"] == 5
    print("seen everywhere")
    """
)


def test_a_parameter_added_to_the_schema_is_in_every_signature_the_key_and_the_form() -> None:
    done = subprocess.run(
        [sys.executable, "-c", FAKE_PARAMETER_SCRIPT],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("seen everywhere")


@pytest.mark.parametrize("name", ["generate", "edit"])
def test_sync_and_async_clients_have_one_signature(name: str) -> None:
    sync = inspect.signature(getattr(CometAPIClient, name))
    async_ = inspect.signature(getattr(AsyncCometAPIClient, name))
    assert sync == async_
    endpoint = "generations" if name == "generate" else "edits"
    for p in params_for(endpoint, sent_only=True):
        assert sync.parameters[p.name].default == p.default
        assert sync.parameters[p.name].kind is inspect.Parameter.KEYWORD_ONLY
    assert "variant" not in sync.parameters  # not sent to the API
    assert inspect.iscoroutinefunction(getattr(AsyncCometAPIClient, name))


def test_tasks_take_every_parameter_of_their_endpoint_in_schema_order() -> None:
    generate = list(inspect.signature(generate_image.fn).parameters)
    edit = list(inspect.signature(edit_image.fn).parameters)
    assert generate[:2] == ["prompt", "credentials"]
    limits = ["concurrency_limit", "rate_limit", "spend_limit", "spend_limit_wait"]
    assert generate[2:-4] == [p.name for p in params_for("generations")]
    assert generate[-4:] == limits
    assert edit[:4] == ["prompt", "images", "mask", "credentials"]
    assert edit[4:-5] == [p.name for p in params_for("edits")]
    assert edit[-5:] == ["s3_endpoint_url", *limits]


def test_form_offers_the_schema_parameters_it_should() -> None:
    fields = set(ImageOptions.model_fields)
    assert {p.name for p in IMAGE_PARAMS if p.in_form} <= fields
    assert not {"user", "input_fidelity"} & fields
    assert set(ImageOptions().request_kwargs()) == {p.name for p in IMAGE_PARAMS if p.in_form}


def test_cache_key_is_unchanged_by_the_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    # Keys computed before the schema existed: cached images stay cache hits. Pinned for the
    # shared cache scope, whose keys are the keys of every release before the scope existed
    # (the per-key scope adds the key's HMAC: tests/test_cache_scope.py).
    monkeypatch.setenv("PREFECT_COMETAPI_CACHE_SCOPE", "shared")
    params = {
        "model": "gpt-image-2", "prompt": "a fox", "n": 2, "size": "1024x1024",
        "quality": "low", "output_format": "png", "background": "auto", "moderation": "auto",
        "variant": 3, "user": "u1", "credentials": None,
    }  # fmt: skip
    assert image_cache_key("generations", params) == (
        "cometapi-generations-cf2c324e59cea554f79b881f7022db342ecf5300ff833dab62aef69de95c968f"
    )
    assert image_cache_key("edits", params, ["ab" * 32], "cd" * 32) == (
        "cometapi-edits-d70fb39a5888e6c5118051ccc816b5a999680e373c41fd65f58d3761d3c9b4ae"
    )
    assert "user" not in cache_key_names() and "variant" in cache_key_names()


def test_cache_key_includes_the_service_that_makes_the_image(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from prefect_cometapi import CometAPICredentials

    monkeypatch.setenv("PREFECT_COMETAPI_CACHE_SCOPE", "shared")  # the service alone decides

    def key(base_url: str | None) -> str:
        credentials = (
            None
            if base_url is None
            else CometAPICredentials(api_key="sk-test-not-used", base_url=base_url)
        )
        return image_cache_key("generations", {"prompt": "a fox", "credentials": credentials})

    real = key(None)
    assert real == key("https://api.cometapi.com/v1") == key("HTTPS://API.cometapi.com:443/v1/")
    emulator = key("http://127.0.0.1:8000/v1")
    assert emulator == key("http://127.0.0.1:8000/other/v1")  # scheme, host and port decide
    others = {
        key("http://127.0.0.1:8001/v1"),
        key("http://localhost:8000/v1"),
        key("https://127.0.0.1:8000/v1"),
        key("https://gateway.example/v1"),
    }
    assert len(others | {real, emulator}) == 6
