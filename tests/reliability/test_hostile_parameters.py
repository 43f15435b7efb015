"""Issue 11: run parameters are untrusted input, tried the way an attacker would.

Each row is one hostile value given to a flow (``generate_and_upload``, ``edit_and_upload``,
``batch_generate``) or a task (``generate_image``, ``edit_image``, ``render_prompt``,
``upscale_image``, ``upload_to_s3``): a foreign base URL or S3 endpoint, a path escaping the
allowed root, a symlink or ``file://`` trick, a loopback, private or redirecting URL, a key with
an invisible character, a template built to exhaust the worker, a key template under which items
overwrite each other. Every row must be refused with a typed error, with zero requests at the
emulator, nothing written to S3, and none of the secrets around (the API key, a fake
``~/.aws/credentials``, a fake metadata server's token), in any form (:mod:`secret_scan`), in
the error, the log records, what the Prefect test server keeps of the run (flow and task runs
with their names, states and parameters, artifacts, logs), the results persisted meanwhile or
the bucket's keys and metadata.
"""

from __future__ import annotations

import io
import logging
import os
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pydantic
import pytest
from flow_checks import read_artifacts
from PIL import Image
from prefect.exceptions import ParameterTypeError
from prefect.logging.handlers import APILogHandler
from reliability_support import FailingRuns, assert_artifacts_inert, read_bucket
from secret_scan import (
    assert_no_secret,
    file_sources,
    recent_server_sources,
    record_sources,
    s3_sources,
)

from prefect_cometapi import CometAPICredentials
from prefect_cometapi.batching.chunks import ChunkItem
from prefect_cometapi.errors import BudgetExceededError, ValidationError
from prefect_cometapi.flows import (
    ImageOptions,
    S3Options,
    batch_generate,
    edit_and_upload,
    generate_and_upload,
)
from prefect_cometapi.flows.fanout import batch_generate_chunk
from prefect_cometapi.tasks import (
    edit_image,
    generate_image,
    render_prompt,
    upload_to_s3,
    upscale_image,
)

pytestmark = pytest.mark.filterwarnings(
    "ignore:Logger 'prefect.task_runs' attempted to send logs:UserWarning"
)

AWS_SECRET = "hostile-aws-secret-7f3a9c0d1e2b"
METADATA_TOKEN = "hostile-metadata-token-5e6f7a8b"
FOREIGN = "https://api.cometapi.com.attacker.example/v1"
ZWSP = "\u200b"


def png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (1024, 1024), (20, 120, 200)).save(buf, "PNG")
    return buf.getvalue()


@dataclass
class Ctx(FailingRuns):
    """The servers, the flows with good defaults (:class:`FailingRuns`) and the planted secrets.

    Attributes:
        api_key: The key the emulator accepts (a secret too).
        base_url: The emulator (allowed by the session, as a worker's owner would).
        bucket: The test's bucket on moto.
        root: The working directory, the only allowed input root.
        aws_file: A fake ``~/.aws/credentials`` outside the root.
        metadata_url: A fake instance-metadata endpoint on loopback (not allowed).
        redirect_url: A URL on an allowed host that redirects to ``metadata_url``.
    """

    api_key: str
    base_url: str
    bucket: str
    root: Path
    aws_file: Path
    metadata_url: str
    redirect_url: str

    def good_image(self) -> str:
        return str(self.root / "good.png")

    def s3_json(self, **changes: Any) -> dict[str, Any]:
        return {"bucket": self.bucket, "endpoint_url": self.s3.endpoint_url, **changes}

    def chunk_flow(self, **params: Any) -> Any:
        """``batch_generate_chunk`` run by hand (as from the UI), with a saved block's name."""
        self.credentials.save(CHUNK_BLOCK, overwrite=True)
        params.setdefault("credentials_block", CHUNK_BLOCK)
        params.setdefault("items", [chunk_item(self, "a", 0), chunk_item(self, "b", 1)])
        params.setdefault("image", ImageOptions(size="1024x1024", quality="low"))
        return self.flow(batch_generate_chunk, **params)


CHUNK_BLOCK = "hostile-chunk-credentials"


def chunk_item(ctx: Ctx, item_id: str, index: int, prompt: str | None = None) -> ChunkItem:
    """A chunk item with a fresh prompt."""
    return ChunkItem(item_id=item_id, index=index, prompt=prompt or ctx.prompt(f"item {index}"))


@dataclass(frozen=True)
class Case:
    """One hostile value: where it goes, the typed error and the rule it must meet."""

    id: str
    run: Callable[[Ctx], Any]
    error: type[BaseException]
    param: str | None
    rule: str


V = ValidationError
PT = ParameterTypeError
PV = pydantic.ValidationError
DOUBLING = "{% set x = 'abcdefgh' %}" + "{% set x = x ~ x %}" * 40 + "{{ x }}"
UNPRICED = {"model": "gpt-image-9", "size": "1024x1024", "quality": "low"}


def worker_env(env: dict[str, str], run: Callable[[Ctx], Any]) -> Callable[[Ctx], Any]:
    """``run`` on a worker whose environment also holds ``env`` (the worker's own settings)."""

    def with_env(ctx: Ctx) -> Any:
        saved = {name: os.environ.get(name) for name in env}
        os.environ.update(env)
        try:
            return run(ctx)
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value

    return with_env


NESTED_LOOPS = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}x"

CASES: list[Case] = [
    # ------------------------------------------------ where the key goes (point 1)
    Case("generate_and_upload-foreign-base-url", lambda c: c.generate_flow(base_url=FOREIGN),
         V, "base_url", "not an allowed API host"),
    Case("generate_and_upload-metadata-base-url",
         lambda c: c.generate_flow(base_url="http://169.254.169.254/latest"), V, "base_url",
         "not an allowed API host"),
    Case("generate_and_upload-base-url-with-userinfo",
         lambda c: c.generate_flow(base_url="https://user:pw@api.cometapi.com/v1"), V,
         "base_url", "user name or password"),
    Case("edit_and_upload-foreign-base-url", lambda c: c.edit_flow(base_url=FOREIGN), V,
         "base_url", "not an allowed API host"),
    Case("batch_generate-foreign-base-url", lambda c: c.batch_flow(base_url=FOREIGN), V,
         "base_url", "not an allowed API host"),
    Case("batch_generate-env-key-to-foreign-host",
         lambda c: c.batch_flow(credentials_block=None, base_url="http://127.0.0.1:9/v1"), V,
         "base_url", "not an allowed API host"),
    Case("generate_and_upload-inline-block-foreign-host",
         lambda c: c.generate_flow(credentials_block=CometAPICredentials(base_url=FOREIGN)), V,
         "credentials_block.base_url", "not an allowed API host"),
    Case("generate_image-env-key-to-foreign-host",
         lambda c: generate_image(c.prompt(), CometAPICredentials(base_url=FOREIGN)), V,
         "credentials_block.base_url", "not an allowed API host"),
    Case("generate_and_upload-json-foreign-s3-endpoint",
         lambda c: c.generate_flow(s3=c.s3_json(endpoint_url="https://s3.attacker.example")),
         PT, "s3.endpoint_url", "not an allowed S3 endpoint"),
    Case("batch_generate-json-metadata-s3-endpoint",
         lambda c: c.batch_flow(s3=c.s3_json(endpoint_url="http://169.254.169.254")), PT,
         "s3.endpoint_url", "not an allowed S3 endpoint"),
    Case("edit_and_upload-json-foreign-s3-endpoint",
         lambda c: c.edit_flow(s3=c.s3_json(endpoint_url="http://10.0.0.5:9000")), PT,
         "s3.endpoint_url", "not an allowed S3 endpoint"),
    # ------------------------------------------------ keys that cannot be sent (point 4)
    Case("generate_image-key-with-zero-width-space",
         lambda c: generate_image(c.prompt(), CometAPICredentials(
             api_key=c.api_key + ZWSP, base_url=c.base_url)), PV, "api_key", "U\\+200B"),
    Case("generate_and_upload-env-key-with-crlf",
         lambda c: c.generate_flow(credentials_block=None), V, "COMETAPI_KEY", "a line break"),
    # ------------------------------------------------ local files (point 3)
    Case("generate_and_upload-template-outside-root",
         lambda c: c.generate_flow(prompt=str(c.aws_file.with_suffix(".j2"))), V, "template",
         "outside the folders"),
    Case("generate_and_upload-template-dotdot",
         lambda c: c.generate_flow(prompt="../credentials.j2"), V, "template",
         "'\\.\\.' is not allowed"),
    Case("generate_and_upload-template-symlink-out",
         lambda c: c.generate_flow(prompt="link.j2"), V, "template", "outside the folders"),
    Case("render_prompt-template-symlink-out",
         lambda c: render_prompt("link.j2", {}), V, "template", "outside the folders"),
    Case("batch_generate-items-file-aws-credentials",
         lambda c: c.batch_flow(items=None, items_file="~/.aws/credentials"), V, "items_file",
         "outside the folders"),
    Case("batch_generate-items-file-url",
         lambda c: c.batch_flow(items=None, items_file=f"file://{c.aws_file}"), V,
         "items_file", "file:// URLs are not accepted"),
    Case("batch_generate-items-file-proc-environ",
         lambda c: c.batch_flow(items=None, items_file="/proc/self/environ"), V, "items_file",
         "outside the folders"),
    Case("edit_and_upload-image-outside-root",
         lambda c: c.edit_flow(images=[str(c.aws_file)]), V, "images", "outside the folders"),
    Case("edit_image-mask-dotdot",
         lambda c: edit_image(c.prompt(), png(), mask="../credentials",
                              credentials=c.credentials), V, "mask", "'\\.\\.' is not allowed"),
    Case("edit_image-file-url-with-image-suffix",
         lambda c: edit_image(c.prompt(), f"file://{c.aws_file}#.png",
                              credentials=c.credentials), V, "images", "file:// URLs"),
    # ------------------------------------------------ internal addresses (point 3)
    Case("edit_and_upload-metadata-url",
         lambda c: c.edit_flow(images=[c.metadata_url]), V, "images", "loopback, link-local"),
    Case("edit_image-link-local-url",
         lambda c: edit_image(c.prompt(), "http://169.254.169.254/latest/x.png",
                              credentials=c.credentials), V, "images", "loopback, link-local"),
    Case("edit_and_upload-redirect-to-metadata",
         lambda c: c.edit_flow(images=[c.redirect_url]), V, "images", "loopback, link-local"),
    Case("batch_generate-items-file-private-url",
         lambda c: c.batch_flow(items=None, items_file="http://10.1.2.3/items.csv"), V,
         "items_file", "loopback, link-local, private"),
    Case("generate_and_upload-template-metadata-url",
         lambda c: c.generate_flow(prompt=c.metadata_url), V, "template", "loopback"),
    # ------------------------------------------------ templates that exhaust a worker (point 6)
    Case("generate_and_upload-template-doubling",
         lambda c: c.generate_flow(prompt=DOUBLING), V, "template", "'~' concatenation"),
    Case("batch_generate-template-nested-loops",
         lambda c: c.batch_flow(template=NESTED_LOOPS + "{{ name }}"), V, "template",
         "loop iterations"),
    Case("render_prompt-center-a-gigabyte",
         lambda c: render_prompt("{{ 'x' | center(10**9) }}", {}), V, "template",
         "'center' filter"),
    Case("render_prompt-100-kb-prompt",
         lambda c: render_prompt("{{ 'x' * 50000 }}{{ 'y' * 50000 }}", {}), V, "prompt",
         "32,000"),
    Case("generate_and_upload-percent-width",
         lambda c: c.generate_flow(prompt="{{ '%0999999999d' % 1 }}"), V, "template",
         "% format width"),
    # ------------------------------------------------ keys that overwrite each other (point 7)
    Case("batch_generate-colliding-key-template",
         lambda c: c.batch_flow(s3=c.s3.model_copy(update={"key_template": "{slug}.{ext}"}),
                                template=f"same prompt {c.salt}"),
         V, "key_template", "would overwrite each other under the same key: a, b ->"),
    Case("generate_and_upload-json-format-spec-in-key",
         lambda c: c.generate_flow(s3=c.s3_json(key_template="{item:.1}-{sha8:.1}.{ext}")),
         PT, "key_template", "format specs and conversions"),
    Case("upscale_image-image-outside-root",
         lambda c: upscale_image(str(c.aws_file), size="2048x2048"), V, "image",
         "outside the folders"),
    Case("upscale_image-metadata-url",
         lambda c: upscale_image(c.metadata_url, size="2048x2048"), V, "image",
         "loopback, link-local"),
    Case("upload_to_s3-conversion-in-key",
         lambda c: upload_to_s3(_generated(), c.bucket, key_template="{slug!r}.{ext}",
                                endpoint_url=c.s3.endpoint_url), V, "key_template",
         "format specs and conversions"),
    # ------------------------------------------------ budgets a run cannot lift (issue 23, 2)
    Case("generate_and_upload-unpriced-model-under-worker-budget",
         worker_env({"PREFECT_COMETAPI_MAX_COST_USD": "5"},
                    lambda c: c.generate_flow(image=ImageOptions(**UNPRICED))),
         V, "max_cost_usd", "no price is known for model 'gpt-image-9'"),
    Case("batch_generate-unpriced-model-under-own-budget",
         lambda c: c.batch_flow(image=ImageOptions(**UNPRICED), max_cost_usd=5),
         V, "max_cost_usd", "no price is known"),
    Case("generate_image-unpriced-model-under-worker-spend-limit",
         worker_env({"PREFECT_COMETAPI_SPEND_LIMIT": "fleet-spend"},
                    lambda c: generate_image(c.prompt(), c.credentials, **UNPRICED)),
         V, "model", "spend limit 'fleet-spend' cannot count it"),
    Case("batch_generate-no-budget-under-worker-budget",
         worker_env({"PREFECT_COMETAPI_MAX_COST_USD": "0.0001"},
                    lambda c: c.batch_flow(max_cost_usd=None)),
         BudgetExceededError, "max_cost_usd", "over the budget of \\$0.0001"),
    Case("generate_and_upload-budget-over-worker-budget",
         worker_env({"PREFECT_COMETAPI_MAX_COST_USD": "0.0001"},
                    lambda c: c.generate_flow(max_cost_usd=100)),
         BudgetExceededError, "max_cost_usd", "over the budget of \\$0.0001"),
    Case("edit_and_upload-own-budget",
         lambda c: c.edit_flow(max_cost_usd=0.00001), BudgetExceededError, "max_cost_usd",
         "over the budget"),
    # ------------------------------------------------ keys that read as another (issue 23, 6)
    Case("generate_and_upload-item-id-right-to-left-override",
         lambda c: c.generate_flow(item_id="photo\u202egnp.exe"), V, "key_template",
         "look-alike characters \\(U\\+202E\\)"),
    Case("edit_and_upload-item-id-next-line-and-zero-width",
         lambda c: c.edit_flow(item_id="a\u0085b\u200bc"), V, "key_template",
         "U\\+0085, U\\+200B"),
    Case("batch_generate-json-prefix-fullwidth-dots",
         lambda c: c.batch_flow(s3=c.s3_json(prefix="\uff0e\uff0e/other-team")), PT, "prefix",
         "U\\+FF0E"),
    # ------------------------------------------------ no worker path in errors (issue 23, 6)
    Case("edit_and_upload-missing-file-shows-no-worker-path",
         lambda c: c.edit_flow(images=[str(c.root / "sub" / "missing.png")]), V, "images",
         "^Invalid 'images': file not found: sub/missing\\.png; .*working directory\\)"),
    Case("generate_and_upload-missing-template-shows-no-worker-path",
         lambda c: c.generate_flow(prompt=str(c.root / "prompts" / "missing.j2")), V,
         "template", "template file 'prompts/missing\\.j2' does not exist"),
    # ------------------------------------------------ the chunk run by hand (issue 23, 4)
    Case("batch_generate_chunk-two-items-one-id",
         lambda c: c.chunk_flow(items=[chunk_item(c, "a", 0), chunk_item(c, "a", 1)]), V,
         "items", "share an id or a position"),
    Case("batch_generate_chunk-item-id-escaping-the-prefix",
         lambda c: c.chunk_flow(items=[chunk_item(c, "../../other-team/x", 0)]), V, "items",
         "item ids are 1-80 letters"),
    Case("batch_generate_chunk-over-the-item-cap",
         lambda c: c.chunk_flow(items=[chunk_item(c, f"i{n}", n, "p") for n in range(10_001)]),
         V, "items", "at most 10,000 items"),
    Case("batch_generate_chunk-prompt-over-32000-chars",
         lambda c: c.chunk_flow(items=[chunk_item(c, "a", 0, "x" * 40_000)]), V, "prompt",
         "32,000"),
    Case("batch_generate_chunk-no-budget-under-worker-budget",
         worker_env({"PREFECT_COMETAPI_MAX_COST_USD": "0.0001"}, lambda c: c.chunk_flow()),
         BudgetExceededError, "max_cost_usd", "over the budget of \\$0.0001"),
    Case("batch_generate_chunk-unpriced-model-under-worker-budget",
         worker_env({"PREFECT_COMETAPI_MAX_COST_USD": "5"},
                    lambda c: c.chunk_flow(image=ImageOptions(**UNPRICED))),
         V, "max_cost_usd", "no price is known"),
    Case("batch_generate_chunk-missing-concurrency-limit",
         lambda c: c.chunk_flow(concurrency_limit=f"no-such-limit-{c.salt}"), V,
         "concurrency_limit", "no Prefect global concurrency limit is named"),
]  # fmt: skip


def _generated() -> Any:
    import hashlib

    from prefect_cometapi.models import GeneratedImage

    data = png()
    return GeneratedImage(
        data=data, format="png", width=1024, height=1024,
        sha256=hashlib.sha256(data).hexdigest(), model="gpt-image-2", prompt="a test image",
    )  # fmt: skip


def test_the_matrix_covers_the_flows_and_tasks() -> None:
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 30
    for name in (
        "generate_and_upload", "edit_and_upload", "batch_generate", "generate_image",
        "edit_image", "render_prompt", "upscale_image", "upload_to_s3",
    ):  # fmt: skip
        assert any(i.startswith(name + "-") for i in ids), f"no row for {name}"


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_hostile_parameter_is_refused_with_nothing_sent_and_no_secret_shown(
    case: Case,
    emulator: Any,
    api_key: str,
    s3_server: Any,
    s3_bucket: str,
    s3_client: Any,
    http_file_server: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The worker: its working directory is the only input root, no internal host is allowed
    # but "localhost" (so that a redirect from it to 127.0.0.1 is what gets refused), and its
    # home holds AWS credentials.
    root = tmp_path / "project"
    root.mkdir()
    home = tmp_path / "home"
    (home / ".aws").mkdir(parents=True)
    aws_file = home / ".aws" / "credentials"
    aws_file.write_text(f"[default]\naws_secret_access_key = {AWS_SECRET}\n", encoding="utf-8")
    aws_file.with_suffix(".j2").write_text(f"{{{{ '{AWS_SECRET}' }}}}", encoding="utf-8")
    (tmp_path / "credentials.j2").write_text(AWS_SECRET, encoding="utf-8")
    (tmp_path / "credentials").write_text(AWS_SECRET, encoding="utf-8")
    (root / "link.j2").symlink_to(aws_file)
    (root / "good.png").write_bytes(png())
    monkeypatch.chdir(root)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("PREFECT_COMETAPI_INPUT_ROOTS", "")
    monkeypatch.setenv("PREFECT_COMETAPI_ALLOWED_INPUT_HOSTS", "localhost")
    monkeypatch.setenv("COMETAPI_KEY", api_key + "\r\nX-Injected: 1")
    port = http_file_server.base_url.rsplit(":", 1)[1]
    metadata = http_file_server.add(f"/meta-{uuid.uuid4().hex[:6]}/token", METADATA_TOKEN.encode())
    hop = http_file_server.add(
        f"/hop-{uuid.uuid4().hex[:6]}", b"", status=302, headers={"Location": metadata}
    )
    ctx = Ctx(
        api_key=api_key,
        base_url=emulator.base_url,
        credentials=CometAPICredentials(api_key=api_key, base_url=emulator.base_url, max_retries=0),
        s3=S3Options(bucket=s3_bucket, endpoint_url=s3_server.endpoint_url, presign_expires=None),
        bucket=s3_bucket,
        root=root,
        aws_file=aws_file,
        metadata_url=metadata,
        redirect_url=f"http://localhost:{port}{hop.removeprefix(http_file_server.base_url)}",
        salt=uuid.uuid4().hex[:10],
    )
    caplog.set_level(logging.DEBUG)
    started = datetime.now(timezone.utc) - timedelta(seconds=1)

    with pytest.raises(BaseException) as info:  # noqa: PT011 - the type is checked below
        case.run(ctx)

    error = info.value
    text = str(error)
    assert type(error) is case.error, f"{type(error).__name__}: {text}"
    if isinstance(error, ValidationError):
        assert error.param == case.param, text
        assert "No request was sent" in text
    elif case.param is not None:
        assert case.param in text, text
    assert re.search(case.rule, text, re.DOTALL), f"{case.rule!r} not in {text!r}"

    APILogHandler().flush()
    sources: dict[str, bytes | str] = {"the error": f"{text}\n{error!r}"}
    sources.update(record_sources(caplog.records))
    server, runs = recent_server_sources(started)
    sources.update(server)
    sources.update(s3_sources(s3_client, s3_bucket))
    storage = Path(os.environ["PREFECT_LOCAL_STORAGE_PATH"])
    since = started.timestamp()
    persisted = [p for p in storage.rglob("*") if p.is_file() and p.stat().st_mtime >= since]
    sources.update(file_sources(*persisted))
    assert_no_secret(sources, (api_key, AWS_SECRET, METADATA_TOKEN))
    assert not emulator.requests, "a refused run sent a request"
    # Every row but those refused while building their arguments left a run to read back.
    assert runs or case.error is PV, "nothing of the run was read back from the server"
    assert emulator.requests == [], f"{len(emulator.requests)} request(s) reached the API"
    assert not [p for _, p in http_file_server.requests if "/meta-" in p], "metadata was read"
    listing = s3_client.list_objects_v2(Bucket=s3_bucket)
    assert listing.get("KeyCount", 0) == 0, listing.get("Contents")


# ---------------------------------------------------------------------------------------------
# Issue 23: hostile values a run may carry that must reach the UI as inert text. The run
# succeeds; every artifact it published is rendered and searched (reliability_support.
# assert_artifacts_inert), and the emulator and the bucket saw exactly the images asked for.

TRACKER = "![t](http://attacker.example/track.png)"
NO_ITEM = "{prefix}{date}/{sha8}.{ext}"


@dataclass(frozen=True)
class Rendered:
    """One hostile value that is accepted: the flow to run and the images it must make."""

    id: str
    run: Callable[[InertRuns], Any]
    images: int = 1


@dataclass
class InertRuns:
    """Runs the flows with good defaults that must complete; returns the run's state."""

    credentials: CometAPICredentials
    s3: S3Options
    salt: str
    root: Path

    def _flow(self, flow: Any, **params: Any) -> Any:
        params.setdefault("credentials_block", self.credentials)
        params.setdefault("s3", self.s3)
        params.setdefault("image", ImageOptions(size="1024x1024", quality="low"))
        state = flow(**params, return_state=True)
        assert state.is_completed(), f"the run ended {state.type}: {state.message}"
        return state

    def generate(self, s3: dict[str, Any] | None = None, **params: Any) -> Any:
        params.setdefault("prompt", f"a lighthouse at dawn {self.salt}")
        if s3:
            params["s3"] = self.s3.model_copy(update=s3)
        return self._flow(generate_and_upload, **params)

    def edit(self, **params: Any) -> Any:
        params.setdefault("prompt", f"make it blue {self.salt}")
        params.setdefault("images", [str(self.root / "good.png")])
        return self._flow(edit_and_upload, **params)

    def batch(self, *names: str, **params: Any) -> Any:
        params.setdefault("template", f"A banner for {{{{ name }}}} {self.salt}")
        params.setdefault("items", [{"id": f"i{n}", "name": name} for n, name in enumerate(names)])
        return self._flow(batch_generate, **params)


RENDERED: list[Rendered] = [
    Rendered("generate_and_upload-item-id-image-no-item-placeholder",
             lambda c: c.generate(item_id=TRACKER, s3={"key_template": NO_ITEM})),
    Rendered("generate_and_upload-prefix-single-slash-url",
             lambda c: c.generate(s3={"prefix": "![t](https:/attacker.example/x.png)"})),
    Rendered("generate_and_upload-item-id-javascript-link",
             lambda c: c.generate(item_id="[click](javascript:alert(1))")),
    Rendered("generate_and_upload-item-id-html-and-autolink",
             lambda c: c.generate(item_id="<img src=x onerror=alert(1)> <http:x>",
                                  s3={"key_template": NO_ITEM})),
    Rendered("edit_and_upload-item-id-reference-link",
             lambda c: c.edit(item_id="[a][r] [r]: http:attacker.example",
                              s3=c.s3.model_copy(update={"key_template": NO_ITEM}))),
    Rendered("batch_generate-variables-html-and-image",
             lambda c: c.batch(f"<img src=http://attacker.example/x.png> {TRACKER}"), 1),
    Rendered("batch_generate-variables-bare-urls-and-email",
             lambda c: c.batch("https://attacker.example/x www.attacker.example a@attacker.example",
                               "[a][r]\n\n[r]: http://attacker.example/ref\n# heading"), 2),
    Rendered("batch_generate-item-ids-bidi-and-zero-width",
             lambda c: c.batch("x", items=[{"id": "a\u202egnp.exe\u200b", "name": "x"}])),
]  # fmt: skip


@pytest.mark.parametrize("case", RENDERED, ids=[case.id for case in RENDERED])
def test_hostile_value_reaches_the_ui_as_inert_text(
    case: Rendered,
    emulator: Any,
    api_key: str,
    s3_server: Any,
    s3_bucket: str,
    s3_client: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "good.png").write_bytes(png())
    monkeypatch.chdir(tmp_path)
    runs = InertRuns(
        credentials=CometAPICredentials(api_key=api_key, base_url=emulator.base_url, max_retries=0),
        s3=S3Options(bucket=s3_bucket, endpoint_url=s3_server.endpoint_url, presign_expires=None),
        salt=uuid.uuid4().hex[:10],
        root=tmp_path,
    )

    state = case.run(runs)

    assert len(emulator.requests) == case.images
    summary = state.result()
    assert len(read_bucket(s3_client, s3_bucket)) == case.images == summary.images
    assert_artifacts_inert(read_artifacts(state.state_details.flow_run_id))
