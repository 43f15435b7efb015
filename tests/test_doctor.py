"""``prefect-cometapi doctor`` against the session's emulator, moto S3 server and Prefect server.

One test per misconfiguration the doctor must name, plus the JSON form, the exit codes, the
absence of any secret in what it prints, and ``--live`` (exactly one billed request).
"""

from __future__ import annotations

import json
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakeredis import TcpFakeServer
from fixtures_emulator import TEST_API_KEY
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.settings import PREFECT_API_URL, temporary_settings

from prefect_cometapi import CometAPICredentials
from prefect_cometapi.billing.spend import create_spend_limit
from prefect_cometapi.caching.locks import LOCK_DIR_ENV, LOCK_MANAGER_ENV
from prefect_cometapi.cli import main
from prefect_cometapi.doctor.live import cheapest_generation
from prefect_cometapi.emulator import Emulator

BLOCK = f"doctor-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def saved_block(emulator_server: Emulator) -> str:
    """A saved credentials block with its own key and the emulator as its base URL."""
    CometAPICredentials(api_key=TEST_API_KEY, base_url=emulator_server.base_url).save(
        BLOCK, overwrite=True
    )
    return BLOCK


@pytest.fixture(scope="module")
def limits() -> dict[str, str]:
    """A concurrency limit, a rate limit and a spend limit on the Prefect server."""
    names = {kind: f"doctor-{kind}-{uuid.uuid4().hex[:6]}" for kind in ("c", "r", "s", "nodecay")}
    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(
            GlobalConcurrencyLimitCreate(name=names["c"], limit=4)
        )
        client.create_global_concurrency_limit(
            GlobalConcurrencyLimitCreate(name=names["r"], limit=10, slot_decay_per_second=1)
        )
        client.create_global_concurrency_limit(
            GlobalConcurrencyLimitCreate(name=names["nodecay"], limit=3)
        )
    create_spend_limit(names["s"], dollars=5.0, window_s=3600)
    return names


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """A Redis server on 127.0.0.1 for this module."""
    server = TcpFakeServer(("127.0.0.1", 0), server_type="redis")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    try:
        yield f"redis://{host}:{port}/0"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(autouse=True)
def _worker_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each test starts with no key, lock files in its own directory and no Redis."""
    monkeypatch.delenv("COMETAPI_KEY", raising=False)
    monkeypatch.delenv(LOCK_MANAGER_ENV, raising=False)
    monkeypatch.setenv(LOCK_DIR_ENV, str(tmp_path / "locks"))


def doctor(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the command in this process; return its exit code, stdout and stderr."""
    code = main(["doctor", "--timeout", "3", *args])
    out, err = capsys.readouterr()
    return code, out, err


def doctor_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    code, out, _ = doctor(capsys, "--json", *args)
    return code, json.loads(out)


def checks(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in document["checks"]}


def line(out: str, name: str) -> str:
    """The report's line of one check."""
    found = [text for text in out.splitlines() if text.split()[1:2] == [name]]
    assert len(found) == 1, out
    return found[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- a good setup -----------------------------------------------------------------------------


def test_a_good_worker_passes_every_check(
    capsys: pytest.CaptureFixture[str],
    emulator: Emulator,
    saved_block: str,
    limits: dict[str, str],
    s3_server: Any,
    s3_bucket: str,
    s3_client: Any,
) -> None:
    code, out, _ = doctor(
        capsys,
        "--credentials", saved_block,
        "--bucket", s3_bucket, "--s3-endpoint-url", s3_server.endpoint_url, "--write-probe",
        "--concurrency-limit", limits["c"], "--rate-limit", limits["r"],
        "--spend-limit", limits["s"],
    )  # fmt: skip
    assert code == 0, out
    for name in ("prefect-api", "credentials", "base-url", "api", "s3-bucket", "lock-manager"):
        assert line(out, name).startswith("ok "), out
    for name in ("concurrency-limit", "rate-limit", "spend-limit", "result-storage"):
        assert line(out, name).startswith("ok "), out
    assert "is writable (a probe object was written and removed)" in out
    assert "bursts of up to $0.50" in line(out, "spend-limit")
    assert s3_client.list_objects_v2(Bucket=s3_bucket).get("KeyCount", 0) == 0
    assert emulator.billed_requests == 0 and emulator.requests == []
    assert out.rstrip().endswith("All checks passed.")


def test_a_good_fleet_worker_passes_with_redis_and_shared_results(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    redis_url: str,
    s3_server: Any,
    s3_bucket: str,
) -> None:
    from prefect_aws import AwsCredentials, S3Bucket

    slug_name = f"doctor-results-{uuid.uuid4().hex[:6]}"
    S3Bucket(
        bucket_name=s3_bucket,
        credentials=AwsCredentials(aws_client_parameters={"endpoint_url": s3_server.endpoint_url}),
    ).save(slug_name, overwrite=True)
    monkeypatch.setenv(LOCK_MANAGER_ENV, redis_url)
    code, document = doctor_json(capsys, "--fleet", "--result-storage", f"s3-bucket/{slug_name}")
    found = checks(document)
    assert found["lock-manager"]["status"] == "ok", found["lock-manager"]
    assert found["lock-manager"]["message"].startswith("Redis at redis://127.0.0.1:")
    assert found["result-storage"]["status"] == "ok", found["result-storage"]
    assert "S3Bucket" in found["result-storage"]["message"]
    assert code == 1  # no key in this environment: the credentials line alone is a problem
    assert [c["name"] for c in document["checks"] if c["status"] == "problem"] == ["credentials"]


# --- one message per misconfiguration ---------------------------------------------------------


def test_no_key(capsys: pytest.CaptureFixture[str], emulator: Emulator) -> None:
    code, out, _ = doctor(capsys, "--base-url", emulator.base_url)
    assert code == 1
    assert line(out, "credentials").startswith("problem ")
    assert "no API key: no --credentials block was given and COMETAPI_KEY is not set" in out
    assert "export COMETAPI_KEY=" in line(out, "credentials")
    assert line(out, "api").startswith("skipped ")
    assert emulator.requests == []


def test_malformed_key(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, emulator: Emulator
) -> None:
    monkeypatch.setenv("COMETAPI_KEY", "sk-abc\u200bdefghijklmnop")
    code, out, _ = doctor(capsys, "--base-url", emulator.base_url)
    assert code == 1
    assert "the API key from COMETAPI_KEY is malformed" in line(out, "credentials")
    assert "U+200B at position 7" in out
    assert "defghijklmnop" not in out


def test_missing_credentials_block(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = doctor(capsys, "--credentials", "no-such-block-here")
    assert code == 1
    assert "no CometAPI Credentials block is named 'no-such-block-here'" in out


def test_key_the_api_refuses(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, emulator: Emulator
) -> None:
    monkeypatch.setenv("COMETAPI_KEY", "sk-revoked-0000000000000000")
    code, out, _ = doctor(capsys, "--base-url", emulator.base_url)
    assert code == 1
    assert line(out, "credentials").startswith("ok ")
    assert "answered 401: the API refuses this key" in line(out, "api")


def test_base_url_the_allow_list_refuses(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COMETAPI_KEY", TEST_API_KEY)
    refused = f"http://127.0.0.1:{free_port()}/v1"
    code, out, _ = doctor(capsys, "--base-url", refused)
    assert code == 1
    assert "the allow-list refuses the base URL" in line(out, "base-url")
    assert "export PREFECT_COMETAPI_ALLOWED_BASE_URLS=http://127.0.0.1:" in line(out, "base-url")
    assert line(out, "api").startswith("skipped ")  # the key was not sent there


def test_saved_blocks_own_base_url_is_for_its_own_key_only(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    closed = f"http://127.0.0.1:{free_port()}/v1"  # not on the allow-list, nothing listens
    name = f"doctor-own-{uuid.uuid4().hex[:6]}"
    CometAPICredentials(api_key=TEST_API_KEY, base_url=closed).save(name, overwrite=True)
    code, out, _ = doctor(capsys, "--credentials", name)
    assert "(the saved block's own, for its own key)" in line(out, "base-url")
    assert "got no answer (ConnectError" in line(out, "api")
    assert code == 1
    keyless = f"doctor-keyless-{uuid.uuid4().hex[:6]}"
    CometAPICredentials(base_url=closed).save(keyless, overwrite=True)
    monkeypatch.setenv("COMETAPI_KEY", TEST_API_KEY)
    code, out, _ = doctor(capsys, "--credentials", keyless)
    assert "loads (no key of its own); COMETAPI_KEY is well-formed" in line(out, "credentials")
    assert "the allow-list refuses the base URL" in line(out, "base-url")
    assert line(out, "api").startswith("skipped ")


def test_missing_bucket(capsys: pytest.CaptureFixture[str], s3_server: Any) -> None:
    code, out, _ = doctor(
        capsys, "--bucket", "no-such-bucket-doctor", "--s3-endpoint-url", s3_server.endpoint_url
    )
    assert code == 1
    assert "s3://no-such-bucket-doctor at http://127.0.0.1:" in line(out, "s3-bucket")
    assert "does not exist" in line(out, "s3-bucket")


def test_bucket_it_cannot_write(
    capsys: pytest.CaptureFixture[str], s3_server: Any, s3_bucket: str, s3_client: Any
) -> None:
    deny = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:PutObject",
                "Resource": f"arn:aws:s3:::{s3_bucket}/*",
            }
        ],
    }
    s3_client.put_bucket_policy(Bucket=s3_bucket, Policy=json.dumps(deny))
    args = ("--bucket", s3_bucket, "--s3-endpoint-url", s3_server.endpoint_url)
    code, out, _ = doctor(capsys, *args)
    assert line(out, "s3-bucket").startswith("ok ")  # reachable; writing is checked on request
    code, out, _ = doctor(capsys, *args, "--write-probe")
    assert code == 1
    assert "answers but this worker cannot write to it" in line(out, "s3-bucket")
    assert "s3:PutObject" in line(out, "s3-bucket")


def test_s3_endpoint_the_allow_list_refuses(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = doctor(
        capsys, "--bucket", "some-bucket", "--s3-endpoint-url", f"http://127.0.0.1:{free_port()}"
    )
    assert code == 1
    assert "is not an allowed S3 endpoint" in line(out, "s3-bucket")
    assert "export PREFECT_COMETAPI_ALLOWED_S3_ENDPOINTS=" in line(out, "s3-bucket")


@pytest.mark.parametrize(
    ("option", "kind", "fix"),
    [
        ("--concurrency-limit", "concurrency limit", "prefect gcl create {} --limit 8"),
        ("--rate-limit", "rate limit", "prefect gcl create {} --limit 10 --slot-decay"),
        ("--spend-limit", "spend limit", "create_spend_limit('{}', dollars="),
    ],
)
def test_missing_limit(
    capsys: pytest.CaptureFixture[str], option: str, kind: str, fix: str
) -> None:
    name = f"missing-{uuid.uuid4().hex[:6]}"
    code, out, _ = doctor(capsys, option, name)
    assert code == 1
    text = line(out, option.lstrip("-"))
    assert f"the {kind} '{name}' does not exist on the Prefect server" in text
    assert fix.format(name) in text


def test_spend_limit_without_slot_decay(
    capsys: pytest.CaptureFixture[str], limits: dict[str, str]
) -> None:
    code, out, _ = doctor(capsys, "--spend-limit", limits["nodecay"])
    assert code == 1
    assert "has no slot decay, so it cannot be a spend limit" in line(out, "spend-limit")


def test_unwritable_lock_directory(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv(LOCK_DIR_ENV, str(blocker / "locks"))
    code, out, _ = doctor(capsys)
    assert code == 1
    text = line(out, "lock-manager")
    assert f"the lock directory {blocker / 'locks'} is not writable" in text
    assert LOCK_DIR_ENV in text


def test_unreachable_redis(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    monkeypatch.setenv(LOCK_MANAGER_ENV, f"redis://:hunter2-secret@127.0.0.1:{port}/0")
    code, out, err = doctor(capsys)
    assert code == 1
    assert f"Redis at redis://127.0.0.1:{port}/0" in line(out, "lock-manager")
    assert "is unreachable" in line(out, "lock-manager")
    assert "hunter2" not in out + err


def test_fleet_without_shared_result_storage(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = doctor(capsys, "--fleet")
    assert "results are local-only" in line(out, "result-storage")
    assert "PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK=s3-bucket/" in line(out, "result-storage")
    assert line(out, "result-storage").startswith("warning ")
    assert "cover the workers of this machine only" in line(out, "lock-manager")


def test_unreachable_prefect_api(capsys: pytest.CaptureFixture[str]) -> None:
    with temporary_settings({PREFECT_API_URL: f"http://127.0.0.1:{free_port()}/api"}):
        code, out, _ = doctor(capsys, "--credentials", "anything", "--concurrency-limit", "x")
    assert code == 1
    assert "does not answer" in line(out, "prefect-api")
    assert line(out, "credentials").startswith("skipped ")
    assert line(out, "concurrency-limit").startswith("skipped ")


# --- output, exit codes, secrets, --live ------------------------------------------------------


def test_json_output(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, emulator: Emulator
) -> None:
    monkeypatch.setenv("COMETAPI_KEY", TEST_API_KEY)
    code, document = doctor_json(capsys, "--base-url", emulator.base_url)
    assert code == 0 and document["ok"] is True and document["exit_code"] == 0
    assert document["version"] == "0.1.0" and document["problems"] == 0
    names = [c["name"] for c in document["checks"]]
    assert names[:4] == ["prefect-api", "credentials", "base-url", "api"]
    for check in document["checks"]:
        assert set(check) == {"name", "status", "message", "fix", "details"}
        assert check["status"] in {"ok", "warning", "problem", "skipped"}
    api = checks(document)["api"]
    assert api["details"]["status"] == 200 and api["details"]["models"] >= 1


def test_exit_codes(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, emulator: Emulator
) -> None:
    monkeypatch.setenv("COMETAPI_KEY", TEST_API_KEY)
    code, out, _ = doctor(capsys, "--base-url", emulator.base_url)
    assert code == 0, out
    code, out, _ = doctor(capsys, "--base-url", emulator.base_url, "--fleet")
    assert code == 0, out  # warnings only
    assert "2 warnings: no problem" in out
    code, out, _ = doctor(capsys, "--base-url", emulator.base_url, "--rate-limit", "nope-doctor")
    assert code == 1
    assert "1 problem: fix the problems before the first run." in out


def test_no_secret_in_any_output(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    emulator: Emulator,
    saved_block: str,
) -> None:
    env_key = "sk-envonly-9f8e7d6c5b4a39281706"
    monkeypatch.setenv("COMETAPI_KEY", env_key)
    runs = [
        doctor(capsys, "--credentials", saved_block, "--live"),
        doctor(capsys, "--credentials", saved_block, "--json", "--live"),
        doctor(capsys, "--base-url", emulator.base_url),  # env key, refused by the emulator
        doctor(capsys, "--base-url", emulator.base_url, "--json"),
    ]
    monkeypatch.setenv("COMETAPI_KEY", env_key[:9] + "\u00a0" + env_key[9:])
    runs.append(doctor(capsys, "--base-url", emulator.base_url, "--json"))
    printed = "\n".join(out + err for _, out, err in runs)
    assert "answered 401" in printed and "malformed" in printed and "--live: sending" in printed
    for key in (TEST_API_KEY, env_key):
        secret = key[3:]
        for start in range(len(secret) - 5):
            assert secret[start : start + 6] not in printed, "part of a key was printed"


def test_live_spends_exactly_one_cheapest_generation(
    capsys: pytest.CaptureFixture[str], emulator: Emulator, saved_block: str
) -> None:
    code, out, _ = doctor(capsys, "--credentials", saved_block, "--live")
    assert code == 0, out
    model, size, quality, estimate = cheapest_generation(["gpt-image-1-mini", "gpt-image-2"])
    announced = f"--live: sending one generation ({model}, {size}, quality {quality}), estimated"
    lines = out.splitlines()
    assert announced in lines[0]  # said before the report, before anything was sent
    assert line(out, "live").startswith("ok ")
    assert f"one {model} {size} low image" in line(out, "live")
    assert f"billed ${estimate:.4f} (estimated ${estimate:.4f})" in line(out, "live")
    assert emulator.billed_requests == 1
    [record] = emulator.requests
    assert record.params["model"] == model and record.params["size"] == size


def test_cheapest_generation_follows_the_price_table_and_the_models_listed() -> None:
    assert cheapest_generation()[:3] == ("gpt-image-1-mini", "1024x1024", "low")
    model, size, quality, usd = cheapest_generation(["gpt-image-2", "dall-e-3"])
    assert (model, size, quality) == ("gpt-image-2", "1024x640", "low")
    assert 0 < usd < 0.01


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == "prefect-cometapi 0.1.0"
