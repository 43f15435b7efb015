"""generate_and_upload and edit_and_upload end to end: emulator, moto's S3 server, Prefect server.

Every test uses its own prompt (a fresh tag), because generate_image's cache lives for the whole
session.
"""

from __future__ import annotations

import hashlib
import io
import json
from typing import Any

import httpx
import pytest
from flow_checks import (
    assert_gallery_shape,
    asset_events,
    billed_cost,
    read_artifacts,
    s3_image,
    table_rows,
    tag,
)
from PIL import Image

from prefect_cometapi import CometAPICredentials
from prefect_cometapi.billing.prices import estimate_output_tokens
from prefect_cometapi.flows import (
    ImageOptions,
    RunSummary,
    S3Options,
    UpscaleOptions,
    batch_generate,
    edit_and_upload,
    generate_and_upload,
)
from prefect_cometapi.flows.fanout import batch_generate_chunk
from prefect_cometapi.reports.artifacts import artifact_key
from prefect_cometapi.text import usd


def test_generate_and_upload_renders_generates_upscales_uploads_and_publishes(
    emulator: Any, credentials: CometAPICredentials, s3_options: S3Options, s3_client: Any
) -> None:
    word = tag()
    state = generate_and_upload(
        prompt="A banner for {{ name }} ({{ word }}), {{ mood }} light",
        variables={"name": "Lumen", "word": word, "mood": "soft"},
        s3=s3_options,
        image=ImageOptions(size="1536x864", quality="low", n=2),
        upscale=UpscaleOptions(target="3840x2160"),
        credentials_block=credentials,
        return_state=True,
    )
    assert state.is_completed(), state.message
    summary = state.result()
    assert isinstance(summary, RunSummary)

    generations = [r for r in emulator.requests if r.endpoint == "generations"]
    assert len(generations) == 1
    assert generations[0].params["prompt"] == f"A banner for Lumen ({word}), soft light"
    assert generations[0].params["size"] == "1536x864"
    assert generations[0].params["n"] == 2

    assert summary.items == 1 and summary.delivered == 1 and summary.images == 2
    assert len(summary.uris) == 2 and len(set(summary.uris)) == 2
    for outcome_image, uri in zip(summary.outcomes[0].images, summary.uris, strict=True):
        assert uri.startswith(f"s3://{s3_options.bucket}/out/")
        data, size, fmt = s3_image(s3_client, uri)
        assert size == (3840, 2160) and fmt == "png"
        assert hashlib.sha256(data).hexdigest() == outcome_image.sha256
        assert outcome_image.url is not None
        linked = httpx.get(outcome_image.url, timeout=30)
        assert linked.status_code == 200 and linked.content == data

    assert summary.total_cost_usd > 0
    assert summary.total_cost_usd == pytest.approx(billed_cost(emulator), abs=1e-6)
    assert summary.output_tokens == 2 * estimate_output_tokens("gpt-image-2", "1536x864", "low")

    artifacts = read_artifacts(state.state_details.flow_run_id)
    gallery = artifacts[artifact_key("generate-and-upload", "gallery")]
    table = artifacts[artifact_key("generate-and-upload", "results")]
    progress = artifacts[artifact_key("generate-and-upload", "progress")]
    assert gallery.type == "markdown" and table.type == "table" and progress.type == "progress"
    assert usd(summary.total_cost_usd) in gallery.data
    for uri in summary.uris:
        assert uri in gallery.data
    assert float(progress.data) == pytest.approx(100.0)
    rows = table_rows(table)
    assert [row["object"] for row in rows] == [uri.rsplit("/", 1)[-1] for uri in summary.uris]
    assert {row["status"] for row in rows} == {"delivered"}
    objects = table_rows(artifacts[artifact_key("generate-and-upload", "objects")])
    assert [row["s3_uri"] for row in objects] == summary.uris
    details = table_rows(artifacts[artifact_key("generate-and-upload", "details")])
    assert details[0]["quality"] == "low" and details[0]["output_size"] == "3840x2160"
    # Both images shown as previews kept in the artifact (1536x864 -> 320x180).
    assert assert_gallery_shape(gallery.data, previews=2) == [(320, 180), (320, 180)]

    for uri in summary.uris:
        events = asset_events(uri)
        assert [e.event for e in events] == ["prefect.asset.materialization.succeeded"]
        assert events[0].payload["size"] == "3840x2160"


def test_generate_and_upload_with_a_plain_prompt_and_custom_size(
    emulator: Any, credentials: CometAPICredentials, s3_options: S3Options, s3_client: Any
) -> None:
    summary = generate_and_upload(
        prompt=f"a lighthouse at dawn {tag()}",
        s3=s3_options,
        image=ImageOptions(custom_size="1280x720", quality="low", output_format="jpeg"),
        credentials_block=credentials,
        item_id="lighthouse",
    )
    assert emulator.requests[0].params["size"] == "1280x720"
    (uri,) = summary.uris
    assert "/lighthouse-" in uri and uri.endswith(".jpg")
    _, size, fmt = s3_image(s3_client, uri)
    assert size == (1280, 720) and fmt == "jpeg"


def test_a_second_run_is_served_from_the_cache_and_costs_nothing(
    emulator: Any, credentials: CometAPICredentials, s3_options: S3Options
) -> None:
    kwargs = {
        "prompt": f"a paper boat {tag()}",
        "s3": s3_options,
        "image": ImageOptions(size="1024x1024", quality="low"),
        "credentials_block": credentials,
    }
    first = generate_and_upload(**kwargs)
    second = generate_and_upload(**kwargs)
    assert len(emulator.requests) == 1
    assert first.total_cost_usd > 0 and second.total_cost_usd == 0
    assert second.cached == 1 and second.uris == first.uris
    assert second.outcomes[0].images[0].existed


def test_edit_and_upload_from_s3_source_and_local_mask(
    emulator: Any,
    credentials: CometAPICredentials,
    s3_options: S3Options,
    s3_client: Any,
    tmp_path: Any,
) -> None:
    source = io.BytesIO()
    Image.new("RGB", (1024, 1024), (30, 120, 200)).save(source, "PNG")
    s3_client.put_object(Bucket=s3_options.bucket, Key="in/source.png", Body=source.getvalue())
    mask = Image.new("RGBA", (1024, 1024), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, 512, 512))
    mask_path = tmp_path / "mask.png"
    mask.save(mask_path)

    state = edit_and_upload(
        prompt="Add a {{ thing }} in the corner {{ word }}",
        variables={"thing": "red kite", "word": tag()},
        images=[f"s3://{s3_options.bucket}/in/source.png"],
        mask=str(mask_path),
        s3=s3_options,
        image=ImageOptions(size="1024x1024", quality="low"),
        upscale=UpscaleOptions(long_edge=2048),
        credentials_block=credentials,
        return_state=True,
    )
    assert state.is_completed(), state.message
    summary = state.result()
    (record,) = emulator.requests
    assert record.endpoint == "edits"
    assert record.files["image"][0]["sha256"] == hashlib.sha256(source.getvalue()).hexdigest()
    assert record.files["mask"][0]["sha256"] == hashlib.sha256(mask_path.read_bytes()).hexdigest()
    (uri,) = summary.uris
    _, size, _ = s3_image(s3_client, uri)
    assert size == (2048, 2048)
    assert summary.total_cost_usd == pytest.approx(billed_cost(emulator), abs=1e-6)
    keys = set(read_artifacts(state.state_details.flow_run_id))
    assert {artifact_key("edit-and-upload", k) for k in ("gallery", "results", "progress")} <= keys


def test_content_policy_failure_fails_the_run_and_is_published(
    emulator: Any, credentials: CometAPICredentials, s3_options: S3Options, s3_client: Any
) -> None:
    state = generate_and_upload(
        prompt=f"something refused {tag()} [[fault:moderation]]",
        s3=s3_options,
        image=ImageOptions(size="1024x1024", quality="low"),
        credentials_block=credentials,
        return_state=True,
    )
    assert state.is_failed()
    assert "safety system" in state.message
    assert len(emulator.requests) == 1  # content policy errors are not retried
    assert s3_client.list_objects_v2(Bucket=s3_options.bucket).get("KeyCount", 0) == 0
    gallery = read_artifacts(state.state_details.flow_run_id)[
        artifact_key("generate-and-upload", "gallery")
    ]
    assert "moderation_blocked" in gallery.data and "safety system" in gallery.data


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prompt": "A {{ product }} on {{ table }}", "variables": {"product": "x"}}, "table"),
        ({"prompt": "x {{ y"}, "syntax error"),
        ({"image": {"custom_size": "1000x1000"}}, "divisible by 16"),
        ({"image": {"output_format": "png", "output_compression": 50}}, "output_compression"),
        ({"s3": {"bucket": "Bad_Bucket"}}, "bucket"),
        ({"s3": {"bucket": "fine-bucket", "key_template": "../{sha256}.{ext}"}}, "key_template"),
        ({"image": {"n": 2}, "s3": {"bucket": "b-ok", "key_template": "{item}.{ext}"}}, "{index}"),
        ({"upscale": {"custom_size": "big"}}, "custom_size"),
    ],
)
def test_bad_inputs_fail_before_any_request(
    emulator: Any,
    credentials: CometAPICredentials,
    s3_options: S3Options,
    kwargs: dict[str, Any],
    message: str,
) -> None:
    params: dict[str, Any] = {
        "prompt": f"a valid prompt {tag()}",
        "s3": s3_options,
        "credentials_block": credentials,
    }
    params.update(kwargs)
    state = generate_and_upload(**params, return_state=True)
    assert state.is_failed()
    with pytest.raises(Exception, match=message.replace("{", r"\{").replace("}", r"\}")):
        state.result()
    assert emulator.requests == []


def test_missing_api_key_fails_before_any_request(
    emulator: Any, s3_options: S3Options, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COMETAPI_KEY", raising=False)
    state = generate_and_upload(
        prompt=f"no key {tag()}", s3=s3_options, base_url=emulator.base_url, return_state=True
    )
    assert state.is_failed() and "COMETAPI_KEY" in state.message
    assert emulator.requests == []


def test_credentials_by_block_name_and_base_url_override(
    emulator: Any, api_key: str, s3_options: S3Options
) -> None:
    name = f"emu-{tag()}"
    CometAPICredentials(api_key=api_key, base_url="http://127.0.0.1:9/v1").save(name)
    summary = generate_and_upload(
        prompt=f"a saved block {tag()}",
        s3=s3_options,
        image=ImageOptions(size="1024x1024", quality="low"),
        credentials_block=name,
        base_url=emulator.base_url,
    )
    assert summary.delivered == 1 and len(emulator.requests) == 1
    state = generate_and_upload(
        prompt="x", s3=s3_options, credentials_block=f"missing-{tag()}", return_state=True
    )
    assert state.is_failed() and "no CometAPI Credentials block named" in state.message


def test_parameter_schema_has_typed_fields() -> None:
    schema = generate_and_upload.parameters.model_dump()
    image = schema["definitions"]["ImageOptions"]["properties"]
    assert "3840x2160" in image["size"]["enum"] and "1536x864" in image["size"]["enum"]
    assert image["quality"]["enum"] == ["low", "medium", "high", "auto"]
    assert image["output_format"]["enum"] == ["png", "jpeg", "webp"]
    assert image["size"]["description"]
    upscale = schema["definitions"]["UpscaleOptions"]["properties"]
    assert "3840x2160" in upscale["target"]["enum"]
    assert schema["properties"]["prompt"]["description"]
    s3_form = schema["definitions"]["S3Options"]["properties"]
    # A bucket name or a saved S3Bucket block's name (one of them, checked when the run starts).
    assert s3_form["bucket"]["description"] and s3_form["bucket_block"]["description"]


@pytest.mark.parametrize(
    "flow_fn", [generate_and_upload, edit_and_upload, batch_generate, batch_generate_chunk]
)
def test_forms_have_no_none_switches(flow_fn: Any) -> None:
    # `T | None` becomes anyOf [T, null], which the UI shows as a switch to 'type "None"';
    # optional fields are plain fields whose empty value means None.
    schema = flow_fn.parameters.model_dump()
    text = json.dumps(schema)
    assert "anyOf" not in text and '"type": "null"' not in text
    assert schema["properties"]["credentials_block"]["type"] == "string"


def test_optional_fields_left_empty_in_a_form_mean_none() -> None:
    upscale = UpscaleOptions(custom_size="", long_edge="")
    assert upscale.custom_size is None and upscale.long_edge is None and not upscale.enabled
    s3 = S3Options(bucket="forms-bucket", endpoint_url=" ", presign_expires="")
    assert s3.endpoint_url is None and s3.presign_expires is None
    assert (
        ImageOptions(custom_size="", output_compression="").request_kwargs()["output_compression"]
        is None
    )


def test_the_credentials_block_form_has_a_password_field_for_the_key() -> None:
    field = CometAPICredentials.model_json_schema()["properties"]["api_key"]
    assert field["type"] == "string" and field["format"] == "password" and field["writeOnly"]
    assert "anyOf" not in field
    assert CometAPICredentials(api_key="").api_key is None
