"""generate_image and edit_image as users call them: inside flows, against the emulator."""

import io
import threading
import uuid
from pathlib import Path

import pytest
from PIL import Image
from prefect import flow, task

from prefect_cometapi import CometAPICredentials, ContentPolicyError
from prefect_cometapi.errors import AuthenticationError
from prefect_cometapi.tasks import edit_image, generate_image, persist_when_paid


def _creds(emulator, api_key: str, **kw) -> CometAPICredentials:
    return CometAPICredentials(api_key=api_key, base_url=emulator.base_url, **kw)


def _png(size=(1024, 1024), color="navy", mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, "PNG")
    return buf.getvalue()


def _prompt(label: str) -> str:
    """A prompt no other test uses (the result store lives for the whole session)."""
    return f"{label} {uuid.uuid4().hex[:8]}"


@flow
def gen_flow(prompt: str, credentials: CometAPICredentials, **kw):
    return generate_image(prompt, credentials, **kw)


def test_generate_in_a_flow(emulator, api_key) -> None:
    result = gen_flow(_prompt("a red kite"), _creds(emulator, api_key), size="1536x1024", n=2)
    assert [(i.width, i.height) for i in result.images] == [(1536, 1024)] * 2
    assert result.images[0].sha256 != result.images[1].sha256
    assert result.cost_usd and result.cost_usd > 0
    assert emulator.billed_images == 2


def test_edit_with_three_sources_and_a_mask(
    emulator, api_key, s3_bucket, s3_client, s3_server, tmp_path: Path
) -> None:
    path = tmp_path / "b.png"
    path.write_bytes(_png(color="green"))
    s3_client.put_object(Bucket=s3_bucket, Key="in/c.png", Body=_png(color="yellow"))
    mask = _png(mode="RGBA", color=(0, 0, 0, 0))

    @flow
    def edit_flow():
        return edit_image(
            _prompt("put them together"),
            [_png(), str(path), f"s3://{s3_bucket}/in/c.png"],
            mask=mask,
            credentials=_creds(emulator, api_key),
            s3_endpoint_url=s3_server.endpoint_url,
            size="1024x1024",
        )

    result = edit_flow()
    assert result.images[0].width == 1024
    (record,) = emulator.requests
    assert len(record.files["image[]"]) == 3 and len(record.files["mask"]) == 1


def test_cache_hits_and_misses(emulator, api_key) -> None:
    prompt = _prompt("a lighthouse")
    creds = _creds(emulator, api_key)
    base = {"size": "1024x1024", "quality": "low"}
    first = gen_flow(prompt, creds, **base)
    again = gen_flow(prompt, creds, **base)
    assert len(emulator.requests) == 1
    assert again.images[0].data == first.images[0].data

    # Not part of the key: the credentials block, timeouts, retries, user.
    other_creds = _creds(emulator, api_key, read_timeout=123, connect_timeout=7, max_retries=5)
    gen_flow(prompt, other_creds, **base)
    assert len(emulator.requests) == 1

    # Each of these is a new image.
    changes = [
        {"size": "1536x1024"},
        {"quality": "medium"},
        {"variant": 1},
        {"output_format": "webp"},
    ]
    for n, change in enumerate(changes, start=2):
        gen_flow(prompt, creds, **{**base, **change})
        assert len(emulator.requests) == n, change
    gen_flow(prompt + "!", creds, **base)
    assert len(emulator.requests) == len(changes) + 2


def test_edit_cache_follows_input_bytes(emulator, api_key, tmp_path: Path) -> None:
    prompt = _prompt("make it night")
    creds = _creds(emulator, api_key)
    path = tmp_path / "in.png"
    path.write_bytes(_png(color="blue"))

    @flow
    def edit_flow(source):
        return edit_image(prompt, source, credentials=creds)

    edit_flow(str(path))
    edit_flow(_png(color="blue"))  # same bytes from another source: a hit
    assert len(emulator.requests) == 1
    path.write_bytes(_png(color="red"))
    edit_flow(str(path))
    assert len(emulator.requests) == 2


class ChangingBody:
    """An HTTPFileServer answer whose body changes after the first download."""

    def __init__(self, first: bytes, then: bytes) -> None:
        self.bodies = [first, then]
        self.served = 0

    def __iter__(self):
        body = self.bodies[min(self.served, 1)]
        self.served += 1
        return iter((200, body, {}))


def test_edit_inputs_are_fetched_once_and_the_hashed_bytes_are_sent(
    emulator, api_key, http_file_server
) -> None:
    import hashlib

    first, then = _png(color="green"), _png(color="orange")
    answer = ChangingBody(first, then)
    path = f"/changing-{uuid.uuid4().hex[:8]}.png"
    http_file_server.routes[path] = answer
    prompt = _prompt("make it autumn")
    creds = _creds(emulator, api_key)

    @flow
    def edit_flow(source):
        return edit_image(prompt, source, credentials=creds, size="1024x1024", quality="low")

    result = edit_flow(http_file_server.url(path))
    assert answer.served == 1, "the input was downloaded for the key and again for the request"
    sent = emulator.requests[-1].files["image"][0]["sha256"]
    assert sent == hashlib.sha256(first).hexdigest() != hashlib.sha256(then).hexdigest()
    assert result.params["image_sha256"] == [sent]


def test_refresh_cache_pays_again(emulator, api_key) -> None:
    prompt = _prompt("a barn")
    creds = _creds(emulator, api_key)
    gen_flow(prompt, creds, size="1024x1024")

    @flow
    def refresh():
        return generate_image.with_options(refresh_cache=True)(prompt, creds, size="1024x1024")

    refresh()
    assert len(emulator.requests) == 2


def test_two_concurrent_identical_runs_pay_once(emulator, api_key) -> None:
    emulator.configure(latency_s=1.0)
    prompt = _prompt("two at once")
    creds = _creds(emulator, api_key)
    results: list = []
    threads = [
        threading.Thread(target=lambda: results.append(gen_flow(prompt, creds, size="1024x1024")))
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 2
    assert emulator.billed_images == 1
    assert results[0].images[0].data == results[1].images[0].data


@pytest.mark.parametrize("eager", [True, False])
def test_inside_a_failing_task_the_paid_image_is_kept(emulator, api_key, eager: bool) -> None:
    """Prefect defers a nested task's commit to the outer task; the image tasks commit at once,
    so a later failure of the user's task does not lose the image, with or without the old
    ``persist_when_paid()`` wrapper."""
    credentials = _creds(emulator, api_key)

    @task(retries=0)
    def make_then_fail(prompt: str, fail: bool) -> str:
        if eager:
            with persist_when_paid():
                result = generate_image(prompt, credentials, size="1024x640", quality="low")
        else:
            result = generate_image(prompt, credentials, size="1024x640", quality="low")
        if fail:
            raise RuntimeError("the upload failed")
        return result.images[0].sha256

    @flow
    def user_flow(prompt: str, fail: bool) -> str | None:
        state = make_then_fail(prompt, fail, return_state=True)
        return state.result() if state.is_completed() else None

    prompt = _prompt("a lighthouse")
    before = emulator.billed_requests
    assert user_flow(prompt, fail=True) is None
    assert emulator.billed_requests == before + 1
    assert user_flow(prompt, fail=False)
    assert emulator.billed_requests == before + 1


def test_persisted_results_hold_no_key(emulator, api_key, result_storage_dir: Path) -> None:
    gen_flow(_prompt("secret check"), _creds(emulator, api_key), size="1024x1024")
    files = [p for p in result_storage_dir.rglob("*") if p.is_file()]
    assert files, "results were not persisted"
    needle = api_key.encode()
    assert not [p for p in files if needle in p.read_bytes()]


def test_task_retries_an_outage_the_client_did_not_outlast(emulator, api_key) -> None:
    # The client makes 2 attempts (max_retries=1); the outage lasts 3 answers.
    emulator.script("503", "503", "503")
    creds = _creds(emulator, api_key, max_retries=1)

    @flow
    def retrying():
        task = generate_image.with_options(retry_delay_seconds=0, retry_jitter_factor=None)
        return task(_prompt("after the outage"), creds, size="1024x1024")

    result = retrying()
    assert result.images
    assert [r.status for r in emulator.requests] == [503, 503, 503, 200]


@pytest.mark.parametrize(
    ("fault", "error", "message"),
    [
        ("moderation", ContentPolicyError, "safety system"),
        ("401", AuthenticationError, "API key"),
    ],
)
def test_non_retryable_errors_fail_after_one_request(
    emulator, api_key, fault, error, message
) -> None:
    emulator.script(fault)
    creds = _creds(emulator, api_key)

    @flow
    def failing():
        task = generate_image.with_options(retry_delay_seconds=0)
        return task(_prompt("refused"), creds, size="1024x1024")

    state = failing(return_state=True)
    assert state.is_failed()
    with pytest.raises(error, match=message):
        state.result()
    assert len(emulator.requests) == 1
