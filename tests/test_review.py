"""The review gate: the decision logic (unit tests), then batches with review end to end."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from flow_checks import billed_cost, read_artifacts, table_rows, tag
from pydantic import ValidationError as PydanticValidationError

from prefect_cometapi.batching.review import (
    interpret,
    pause_key,
    render_new_prompt,
    timeout_verdicts,
)
from prefect_cometapi.errors import ValidationError
from prefect_cometapi.flows import ImageOptions
from prefect_cometapi.forms.review import ReviewDecision, ReviewOptions, decision_form
from prefect_cometapi.reports.artifacts import artifact_key

PENDING = ["lamp", "chair", "desk"]
VARIABLES = {item: {"name": item.title(), "colour": "teal"} for item in PENDING}
COSTS = {"lamp": 0.011, "chair": 0.012, "desk": 0.013}


def read(answer: dict[str, Any], approved_before: dict[str, int] | None = None) -> Any:
    """Interpret ``answer`` (validated by the round's form) in round 2 of PENDING."""
    form = decision_form(PENDING)
    return interpret(form.model_validate(answer), 2, PENDING, approved_before or {}, VARIABLES,
                     COSTS)  # fmt: skip


def test_mixed_answer_approves_and_rejects_per_item() -> None:
    result = read(
        {
            "reviewer": "Ana",
            "decisions": [
                {"item": "lamp", "decision": "approve"},
                {"item": "chair", "decision": "reject", "note": "too dark"},
                {"item": "desk", "decision": "reject", "new_prompt": "A {{ colour }} desk"},
            ],
        }
    )
    assert result.problems == []
    assert {i: e.decision for i, e in result.entries.items()} == {
        "lamp": "approved",
        "chair": "rejected",
        "desk": "rejected",
    }
    assert result.entries["chair"].note == "too dark"
    assert result.entries["chair"].reviewer == "Ana" and result.entries["chair"].round == 2
    assert result.entries["lamp"].cost_usd == 0.011
    assert result.new_prompts == {"desk": "A teal desk"}
    assert "chair" not in result.new_prompts  # same prompt, a new variant


def test_per_item_verdicts_win_over_approve_all() -> None:
    result = read({"approve_all": True, "decisions": [{"item": "desk", "decision": "reject"}]})
    assert {i: e.decision for i, e in result.entries.items()} == {
        "lamp": "approved",
        "chair": "approved",
        "desk": "rejected",
    }
    assert result.entries["lamp"].by == "approve_all"
    assert result.entries["desk"].by == "reviewer"


def test_reject_all() -> None:
    result = read({"reject_all": True})
    assert {e.decision for e in result.entries.values()} == {"rejected"}
    assert len(result.entries) == 3 and result.problems == []


def test_empty_form_decides_nothing() -> None:
    result = read({})
    assert result.entries == {}
    assert "decided nothing" in result.problems[0]


def test_both_bulk_boxes_decide_nothing_in_bulk() -> None:
    result = read({"approve_all": True, "reject_all": True})
    assert result.entries == {}
    assert "both" in result.problems[0]


def test_unknown_item_is_refused_by_the_form_and_by_the_run() -> None:
    with pytest.raises(PydanticValidationError):
        decision_form(PENDING).model_validate(
            {"decisions": [{"item": "sofa", "decision": "approve"}]}
        )
    schema = decision_form(PENDING).model_json_schema()
    assert schema["$defs"]["ItemDecision"]["properties"]["item"]["enum"] == PENDING
    # A plain ReviewDecision (no enum) reaching the run: the run says so and decides nothing.
    answer = ReviewDecision(decisions=[{"item": "sofa", "decision": "approve"}])
    result = interpret(answer, 1, PENDING, {}, VARIABLES)
    assert result.entries == {}
    assert "unknown item id 'sofa'" in result.problems[0]


def test_item_already_approved_keeps_its_decision() -> None:
    answer = ReviewDecision(decisions=[{"item": "sofa", "decision": "reject"}])
    result = interpret(answer, 2, PENDING, {"sofa": 1}, VARIABLES)
    assert result.entries == {}
    assert "already approved in round 1" in result.problems[0]


def test_item_listed_twice_is_undecided() -> None:
    result = read(
        {
            "approve_all": True,
            "decisions": [
                {"item": "lamp", "decision": "approve"},
                {"item": "lamp", "decision": "reject"},
            ],
        }
    )
    assert "lamp" not in result.entries
    assert set(result.entries) == {"chair", "desk"}
    assert "listed 2 times" in result.problems[0]


@pytest.mark.parametrize(
    ("new_prompt", "rule"),
    [
        ("{{ ''.__class__.__mro__ }}", "template"),
        ("A {{ missing }} desk", "missing"),
        ("{{ '' }}", "non-empty"),
        ("{% for x in %}", "syntax"),
    ],
)
def test_refused_new_prompt_leaves_the_item_under_review(new_prompt: str, rule: str) -> None:
    result = read(
        {
            "approve_all": True,
            "decisions": [{"item": "desk", "decision": "reject", "new_prompt": new_prompt}],
        }
    )
    assert "desk" not in result.entries  # not approved by approve_all either
    assert "desk" not in result.new_prompts
    assert "new prompt is refused" in result.problems[0]
    assert set(result.entries) == {"lamp", "chair"}


def test_new_prompt_over_the_limit_is_refused_by_the_form() -> None:
    schema = decision_form(PENDING).model_json_schema()
    assert schema["$defs"]["ItemDecision"]["properties"]["new_prompt"]["maxLength"] == 32_000


def test_new_prompt_is_never_a_file_name(tmp_path: Any) -> None:
    (tmp_path / "secret.txt").write_text("the file's text")
    assert render_new_prompt(str(tmp_path / "secret.txt"), {}) == str(tmp_path / "secret.txt")
    with pytest.raises(ValidationError):
        render_new_prompt("   ", {})


def test_approve_with_a_new_prompt_ignores_the_prompt() -> None:
    result = read({"decisions": [{"item": "lamp", "decision": "approve", "new_prompt": "x"}]})
    assert result.entries["lamp"].decision == "approved"
    assert result.new_prompts == {}
    assert "ignored" in result.problems[0]


def test_timeout_verdicts() -> None:
    approved = timeout_verdicts(PENDING, 1, "approve_all", COSTS)
    assert {e.decision for e in approved.values()} == {"approved"}
    assert {e.by for e in approved.values()} == {"timeout"}
    rejected = timeout_verdicts(PENDING, 3, "reject_all", COSTS)
    assert {e.decision for e in rejected.values()} == {"rejected"}


def test_pause_keys_are_stable_and_valid() -> None:
    key = pause_key(1, 1, ["b", "a"])
    assert key == pause_key(1, 1, ["a", "b"])
    assert key != pause_key(1, 2, ["a", "b"]) != pause_key(2, 1, ["a", "b"])
    assert all(c.isalnum() or c == "-" for c in key) and key == key.lower()


def test_review_options_defaults_and_limits() -> None:
    options = ReviewOptions()
    assert (options.on_timeout, options.max_rounds) == ("fail", 3)
    with pytest.raises(PydanticValidationError):
        ReviewOptions(on_timeout="maybe")
    with pytest.raises(PydanticValidationError):
        ReviewOptions(max_rounds=0)


# --- End to end, paused in place (no deployment): the session's emulator, moto and Prefect ---

TEMPLATE = "A banner for {{ name }} in {{ colour }} ({{ salt }})"
SMALL = ImageOptions(custom_size="1024x640", quality="low")


def review_items_of(salt: str) -> list[dict[str, Any]]:
    """Three items: lamp, chair, desk."""
    return [{"id": item, "name": item.title(), "colour": "teal", "salt": salt} for item in PENDING]


def wait_paused(flow_name: str, after_key: str | None = None, timeout: float = 90) -> Any:
    """The flow run of ``flow_name`` paused with a pause key other than ``after_key``."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
                ),
            )
            for run in runs:
                if run.state.state_details.pause_key != after_key:
                    return run
            time.sleep(0.5)
    pytest.fail(f"no paused run of {flow_name} in {timeout} s")


def run_in_thread(fn: Any, **kwargs: Any) -> tuple[threading.Thread, dict[str, Any]]:
    """Run ``fn(**kwargs, return_state=True)`` in a thread; its state lands in the dict."""
    out: dict[str, Any] = {}

    def target() -> None:
        out["state"] = fn(**kwargs, return_state=True)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, out


def test_paused_batch_review_mixed_answer_then_approve_all(
    emulator: Any, credentials: Any, s3_options: Any, s3_client: Any
) -> None:
    from prefect.flow_runs import resume_flow_run

    from prefect_cometapi.flows import batch_generate

    salt = tag()
    params: dict[str, Any] = {
        "s3": s3_options,
        "template": TEMPLATE,
        "items": review_items_of(salt),
        "image": SMALL,
        "credentials_block": credentials,
        "review": ReviewOptions(timeout_s=120, max_rounds=2),
    }
    thread, out = run_in_thread(batch_generate, **params)
    first = wait_paused("batch-generate")
    assert emulator.billed_requests == 3
    assert not s3_client.list_objects_v2(Bucket=s3_options.bucket).get("Contents")
    gallery = read_artifacts(first.id)[artifact_key("batch-generate", "review")]
    assert gallery.data.count("data:image/jpeg;base64,") == 3
    assert all(f"## {item}" in gallery.data for item in PENDING)
    resume_flow_run(
        first.id,
        run_input={
            "reviewer": "Ana <script>",
            "decisions": [
                {"item": "lamp", "decision": "approve"},
                {"item": "chair", "decision": "reject", "note": "too *dark* | [x](y)"},
                {"item": "desk", "decision": "reject", "new_prompt": "A {{ colour }} desk, "
                 + salt},
            ],
        },
    )  # fmt: skip
    second = wait_paused("batch-generate", after_key=first.state.state_details.pause_key)
    assert second.id == first.id
    assert emulator.billed_requests == 5  # chair (new variant) and desk (new prompt), once each
    resume_flow_run(second.id, run_input={"approve_all": True, "reviewer": "Ben"})
    thread.join(120)
    assert not thread.is_alive()
    state = out["state"]
    assert state.is_completed(), state.message
    summary = state.result()
    assert (summary.items, summary.delivered, summary.rejected, summary.failed) == (3, 3, 0, 0)
    assert emulator.billed_requests == 5
    assert [(e.item_id, e.round, e.decision) for e in summary.review] == [
        ("lamp", 1, "approved"),
        ("chair", 1, "rejected"),
        ("desk", 1, "rejected"),
        ("chair", 2, "approved"),
        ("desk", 2, "approved"),
    ]
    prompts = [r.params["prompt"] for r in emulator.requests if r.billed_images]
    assert f"A teal desk, {salt}" in prompts
    stored = s3_client.list_objects_v2(Bucket=s3_options.bucket)["Contents"]
    assert len(stored) == 3
    table = read_artifacts(first.id)[artifact_key("batch-generate", "review-decisions")]
    rows = table_rows(table)
    assert len(rows) == 5 and rows[1]["note"] == r"too \*dark\* \| \[x\](y)"
    assert rows[0]["reviewer"] == r"Ana \<script\>"
    assert summary.total_cost_usd == pytest.approx(billed_cost(emulator), abs=1e-6)

    # The same batch again: every verdict is remembered, nothing is paid or asked again.
    again = batch_generate(**params, return_state=True)
    assert again.is_completed(), again.message
    assert emulator.billed_requests == 5
    summary = again.result()
    assert summary.delivered == 3 and summary.total_cost_usd == 0
    assert {e.by for e in summary.review} == {"earlier_run"}


# --- A deployment run on a real Prefect server and a process worker: suspended, then resumed ---


def _engine_processes(worker: Any) -> list[int]:
    """The worker's child processes running a flow run (``python -m prefect.engine``)."""
    from fixtures_deploy import _descendants

    found = []
    for pid in _descendants(worker.popen.pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"prefect.engine" in cmdline or b"prefect/engine" in cmdline:
            found.append(pid)
    return found


def _wait_suspended(project: Any, run_id: Any, after_key: str | None, timeout: float = 120) -> Any:
    """The run once it is Suspended with a pause key other than ``after_key``."""
    deadline = time.monotonic() + timeout
    with project.client() as client:
        while time.monotonic() < deadline:
            run = client.read_flow_run(run_id)
            state = run.state
            if state is not None and state.is_final():
                pytest.fail(f"run ended {state.type.value}: {state.message}")
            if (
                state is not None
                and state.name == "Suspended"
                and state.state_details.pause_key != after_key
            ):
                return run
            time.sleep(1.0)
    pytest.fail(f"run {run_id} was not suspended in {timeout} s\n{project.prefect.diagnostics()}")


def _wait_no_engine(worker: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while _engine_processes(worker):
        assert time.monotonic() < deadline, "the suspended run's process did not exit"
        time.sleep(0.5)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_deployment_run_is_suspended_and_resumed_with_a_mixed_decision(
    deployed_project: Any, emulator: Any, s3_client: Any, s3_bucket: str
) -> None:
    from prefect.flow_runs import resume_flow_run
    from prefect.settings import PREFECT_API_URL, temporary_settings

    salt = tag()
    with deployed_project.client() as client:
        deployment = client.read_deployment_by_name("batch-generate/weekly-banners")
        created = client.create_flow_run_from_deployment(
            deployment.id,
            parameters={
                "template": TEMPLATE,
                "items": review_items_of(salt),
                "items_file": "",
                "image": {"custom_size": "1024x640", "quality": "low"},
                "upscale": {"target": "none"},
                "s3": {"bucket": s3_bucket, "prefix": "reviewed/"},
                "review": {"enabled": True, "timeout_s": 600, "max_rounds": 2},
            },
        )
    first = _wait_suspended(deployed_project, created.id, None)
    _wait_no_engine(deployed_project.worker)  # the worker holds no process for the run
    assert deployed_project.worker.alive()
    assert emulator.billed_requests == 3
    assert not _objects(s3_client, s3_bucket)
    with temporary_settings({PREFECT_API_URL: deployed_project.prefect.api_url}):
        resume_flow_run(
            created.id,
            run_input={
                "reviewer": "Ana",
                "decisions": [
                    {"item": "lamp", "decision": "approve"},
                    {"item": "chair", "decision": "reject", "note": "too dark"},
                    {"item": "desk", "decision": "reject",
                     "new_prompt": "A {{ colour }} desk, " + salt},
                ],
            },
        )  # fmt: skip
        second = _wait_suspended(deployed_project, created.id, first.state.state_details.pause_key)
        _wait_no_engine(deployed_project.worker)
        # The restarted run regenerated the two rejected items once each, paid nothing else.
        assert emulator.billed_requests == 5
        assert len(_objects(s3_client, s3_bucket)) == 0
        resume_flow_run(second.id, run_input={"approve_all": True, "reviewer": "Ben"})
    run = deployed_project.wait_for_flow_run(created.id)
    assert "3/3 items delivered" in (run.state.message or "")
    objects = _objects(s3_client, s3_bucket, "reviewed/")
    assert len(objects) == 3, list(objects)
    assert {key.rsplit("/", 1)[-1].split("-")[0] for key in objects} == set(PENDING)
    billed = [r.params["prompt"] for r in emulator.requests if r.billed_images]
    assert len(billed) == 5
    assert sorted(billed) == sorted(
        [f"A banner for {i.title()} in teal ({salt})" for i in PENDING]
        + [f"A banner for Chair in teal ({salt})", f"A teal desk, {salt}"]
    )
    assert emulator.billed_requests == 5


def _objects(s3_client: Any, bucket: str, prefix: str = "") -> dict[str, bytes]:
    listing = s3_client.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return {
        obj["Key"]: s3_client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
        for obj in listing.get("Contents", [])
    }


def test_paused_round_nobody_answers_approve_all_delivers(
    emulator: Any, credentials: Any, s3_options: Any, s3_client: Any, monkeypatch: Any
) -> None:
    from prefect_cometapi.flows import batch_generate

    monkeypatch.setenv("PREFECT_COMETAPI_PRIVATE_PROMPTS", "1")
    salt = tag()
    state = batch_generate(
        s3=s3_options,
        template=TEMPLATE,
        items=review_items_of(salt)[:2],
        image=SMALL,
        credentials_block=credentials,
        review=ReviewOptions(timeout_s=3, on_timeout="approve_all"),
        return_state=True,
    )
    assert state.is_completed(), state.message
    summary = state.result()
    assert summary.delivered == 2 and emulator.billed_requests == 2
    assert {(e.decision, e.by) for e in summary.review} == {("approved", "timeout")}
    gallery = read_artifacts(state.state_details.flow_run_id)[
        artifact_key("batch-generate", "review")
    ]
    assert "## lamp" in gallery.data and salt not in gallery.data  # prompts kept private
    assert len(s3_client.list_objects_v2(Bucket=s3_options.bucket)["Contents"]) == 2


def test_paused_round_nobody_answers_fail_fails_the_run(
    emulator: Any, credentials: Any, s3_options: Any, s3_client: Any
) -> None:
    from prefect_cometapi.flows import batch_generate

    state = batch_generate(
        s3=s3_options,
        template=TEMPLATE,
        items=review_items_of(tag())[:1],
        image=SMALL,
        credentials_block=credentials,
        review=ReviewOptions(timeout_s=3, on_timeout="fail"),
        return_state=True,
    )
    assert state.is_failed()
    assert "nobody answered within 3 s" in (state.message or "")
    assert not s3_client.list_objects_v2(Bucket=s3_options.bucket).get("Contents")


def test_single_image_pipeline_review_reject_then_approve(
    emulator: Any, credentials: Any, s3_options: Any, s3_client: Any
) -> None:
    from prefect.flow_runs import resume_flow_run

    from prefect_cometapi.flows import generate_and_upload

    thread, out = run_in_thread(
        generate_and_upload,
        prompt=f"A lighthouse at dawn ({tag()})",
        s3=s3_options,
        image=SMALL,
        item_id="lighthouse",
        credentials_block=credentials,
        review=ReviewOptions(timeout_s=120),
    )
    first = wait_paused("generate-and-upload")
    hostile = {"item": "lighthouse", "decision": "reject", "new_prompt": "{{ ''.__class__ }}"}
    resume_flow_run(first.id, run_input={"decisions": [hostile]})
    again = wait_paused("generate-and-upload", after_key=first.state.state_details.pause_key)
    assert emulator.billed_requests == 1  # the refused prompt cost nothing: asked again
    gallery = read_artifacts(first.id)[artifact_key("generate-and-upload", "review")]
    assert "Not accepted from the last answer" in gallery.data
    resume_flow_run(again.id, run_input={"decisions": [
        {"item": "lighthouse", "decision": "reject", "note": "too grey"}]})  # fmt: skip
    third = wait_paused("generate-and-upload", after_key=again.state.state_details.pause_key)
    assert emulator.billed_requests == 2  # the next variant, paid once
    resume_flow_run(third.id, run_input={"approve_all": True})
    thread.join(120)
    state = out["state"]
    assert state.is_completed(), state.message
    summary = state.result()
    assert summary.delivered == 1 and emulator.billed_requests == 2
    assert [(e.round, e.decision) for e in summary.review] == [(1, "rejected"), (2, "approved")]
    assert len(s3_client.list_objects_v2(Bucket=s3_options.bucket)["Contents"]) == 1


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_suspended_round_nobody_answers_an_automation_resumes_it_approve_all(
    deployed_project: Any, emulator: Any, s3_client: Any, s3_bucket: str
) -> None:
    salt = tag()
    with deployed_project.client() as client:
        deployment = client.read_deployment_by_name("batch-generate/weekly-banners")
        created = client.create_flow_run_from_deployment(
            deployment.id,
            parameters={
                "template": TEMPLATE,
                "items": review_items_of(salt)[:2],
                "items_file": "",
                "image": {"custom_size": "1024x640", "quality": "low"},
                "upscale": {"target": "none"},
                "s3": {"bucket": s3_bucket, "prefix": "timeout/"},
                "review": {"enabled": True, "timeout_s": 10, "on_timeout": "approve_all"},
            },
        )
    _wait_suspended(deployed_project, created.id, None)
    run = deployed_project.wait_for_flow_run(created.id, timeout=180)
    assert "2/2 items delivered" in (run.state.message or "")
    assert len(_objects(s3_client, s3_bucket, "timeout/")) == 2
    assert emulator.billed_requests == 2
    with deployed_project.client() as client:
        left = [a for a in client.read_automations() if str(created.id) in a.name]
    assert left == []  # the round's automation is deleted once the round is over
