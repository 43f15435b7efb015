"""Prompts kept private on request (issue 20.6): with PREFECT_COMETAPI_PRIVATE_PROMPTS=1 no
prompt text reaches task-run names, logs, events or artifacts, read back from the Prefect server;
batch task runs are named by item id either way."""

from __future__ import annotations

import json
import time
from uuid import UUID

import pytest
from flow_checks import EVENTS_PAGE, read_artifacts, tag
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.events.filters import EventFilter, EventRelatedFilter
from prefect.runtime import flow_run

from prefect_cometapi import CometAPICredentials
from prefect_cometapi.flows import (
    ImageOptions,
    S3Options,
    batch_generate,
    cost_summary,
    generate_and_upload,
)
from prefect_cometapi.tasks import generate_image
from prefect_cometapi.text import PRIVATE_PROMPTS_ENV

SMALL = ImageOptions(custom_size="1024x640", quality="low")
TEMPLATE = "A poster of {{ thing }} for {{ secret }}"


def _task_run_names(flow_run_id: UUID) -> list[str]:
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    return [run.name for run in runs]


def _left_behind(flow_run_id: UUID, settle_s: float = 3.0) -> dict[str, str]:
    """Everything a run left on the server, as text: task-run names, logs, events, artifacts."""
    time.sleep(settle_s)  # logs and events are sent in the background
    with get_client(sync_client=True) as client:
        logs = client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
        )
        events = client.read_events(
            filter=EventFilter(related=EventRelatedFilter(id=[f"prefect.flow-run.{flow_run_id}"])),
            limit=EVENTS_PAGE,
        )
        pages = [events]
        while pages[-1].next_page and len(pages) < 20:
            pages.append(client.read_events_page(pages[-1].next_page))
    artifacts = read_artifacts(flow_run_id)
    return {
        "names": "\n".join(_task_run_names(flow_run_id)),
        "logs": "\n".join(log.message for log in logs),
        "events": "\n".join(e.model_dump_json() for page in pages for e in page.events),
        "artifacts": "\n".join(
            json.dumps([a.key, a.description, a.data], default=str) for a in artifacts.values()
        ),
    }


def _assert_absent(word: str, left: dict[str, str]) -> None:
    for where, text in left.items():
        assert text, where  # something was read back
        assert word.lower() not in text.lower(), f"the prompt text is in the {where}"


@pytest.fixture
def private(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PRIVATE_PROMPTS_ENV, "1")


def test_private_prompts_stay_out_of_a_users_flow(
    private: None, credentials: CometAPICredentials, emulator
) -> None:
    word = f"zebra{tag()}"

    @flow(name=f"private-{word[-6:]}")
    def mine() -> str:
        with cost_summary("private"):
            generate_image(f"a lamp shaped like a {word}", credentials, quality="low")
            generate_image(f"a lamp shaped like a {word}", credentials, quality="low")  # cached
        return str(flow_run.id)

    run_id = UUID(mine())
    assert len(emulator.requests) == 1 and word in emulator.requests[0].params["prompt"]
    left = _left_behind(run_id)
    deadline = time.monotonic() + 30  # events reach the server in the background
    while "prefect-cometapi.image.cached" not in left["events"] and time.monotonic() < deadline:
        left = _left_behind(run_id, settle_s=1.0)
    _assert_absent(word, left)
    assert "generate-image-auto" in left["names"].split("\n")
    assert "prefect-cometapi.image.cached" in left["events"]


def test_private_prompts_stay_out_of_the_packaged_flows(
    private: None, credentials: CometAPICredentials, s3_options: S3Options, emulator
) -> None:
    word = f"okapi{tag()}"
    items = [{"id": f"it{i}", "thing": f"kite {i}", "secret": word} for i in range(3)]
    state = batch_generate(
        s3=s3_options,
        template=TEMPLATE,
        items=items,
        image=SMALL,
        concurrency=2,
        credentials_block=credentials,
        return_state=True,
    )
    assert state.is_completed(), state.message
    assert state.result().delivered == 3
    batch_run = state.state_details.flow_run_id
    names = _task_run_names(batch_run)
    assert sorted(n for n in names if n.startswith("generate-image")) == [
        "generate-image-it0",
        "generate-image-it1",
        "generate-image-it2",
    ]
    _assert_absent(word, _left_behind(batch_run))

    single = generate_and_upload(
        prompt=f"a single poster for {word}",
        s3=s3_options,
        image=SMALL,
        credentials_block=credentials,
        return_state=True,
    )
    assert single.is_completed(), single.message
    assert not any(word in uri for uri in single.result().uris)
    _assert_absent(word, _left_behind(single.state_details.flow_run_id))


def test_batch_task_runs_are_named_by_item_id(
    credentials: CometAPICredentials, s3_options: S3Options, emulator
) -> None:
    word = tag()
    items = [{"id": f"{name}-{word}", "thing": name, "secret": "x"} for name in ("a", "b")]
    state = batch_generate(
        s3=s3_options,
        template=TEMPLATE,
        items=items,
        image=SMALL,
        credentials_block=credentials,
        return_state=True,
    )
    assert state.is_completed(), state.message
    names = _task_run_names(state.state_details.flow_run_id)
    generate = sorted(n for n in names if n.startswith("generate-image"))
    assert generate == [f"generate-image-a-{word}", f"generate-image-b-{word}"]
