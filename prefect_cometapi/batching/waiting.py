"""Waiting for the reviewer: suspended in a deployment, paused elsewhere, with a timeout.

Suspended (the run has a deployment): the flow run's process exits and the worker is free;
``resume_flow_run`` (or the UI's Resume) schedules the run again and it starts from the top.
Asking again with the same pause key makes Prefect return the stored answer, so a restarted
run replays every earlier round's answer without asking. Nobody answering within
``timeout_s``: with ``on_timeout="fail"`` Prefect's own suspend timeout fails the run; with
``approve_all``/``reject_all`` a Prefect automation made for the round (a proactive trigger:
no ``Resuming`` within ``timeout_s`` of ``Suspended``) resumes the run without an answer, and an
empty answer that late is the timeout (Prefect's own timeout stays as a backstop,
:data:`TIMEOUT_BACKSTOP_S` later).

Paused (no deployment, e.g. a flow called from a script): the process waits in place, polling;
Prefect's pause timeout ends the wait and the run carries on with ``on_timeout``.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from prefect import get_run_logger
from prefect.context import FlowRunContext

from prefect_cometapi.forms.review import ReviewDecision, ReviewOptions

__all__ = ["wait_for_answer"]

PAUSE_POLL_S = 2
"""Paused: how often the waiting process asks the server whether the run was resumed."""

TIMEOUT_BACKSTOP_S = 3600
"""Suspended with approve_all/reject_all: Prefect's own timeout this long after the automation's
(if the automation never fires, the run fails instead of waiting forever)."""


def _timeout_automation(flow_run_id: Any, key: str, timeout_s: int) -> Any:
    """A Prefect automation that resumes the suspended run once the round has waited long enough.

    Returns:
        The automation, or ``None`` if it could not be created (the run then waits for
        Prefect's backstop timeout).
    """
    from prefect.automations import Automation
    from prefect.events.actions import ResumeFlowRun
    from prefect.events.schemas.automations import EventTrigger, Posture

    resource = f"prefect.flow-run.{flow_run_id}"
    try:
        return Automation(
            name=f"{key}-{flow_run_id}",
            description="prefect-cometapi review gate: the round's timeout",
            trigger=EventTrigger(
                match={"prefect.resource.id": resource},
                after={"prefect.flow-run.Suspended"},
                expect={
                    "prefect.flow-run.Resuming",
                    "prefect.flow-run.Failed",
                    "prefect.flow-run.Cancelled",
                    "prefect.flow-run.Crashed",
                },
                for_each={"prefect.resource.id"},
                posture=Posture.Proactive,
                threshold=1,
                within=timedelta(seconds=max(10, timeout_s)),
            ),
            actions=[ResumeFlowRun()],
        ).create()
    except Exception as exc:  # noqa: BLE001 - the backstop timeout still ends the wait
        get_run_logger().warning("Could not create the review timeout automation: %s", exc)
        return None


def _drop_automations(flow_run_id: Any, key: str) -> None:
    """Delete the round's timeout automations (best effort: none, or already gone)."""
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            for automation in client.read_automations_by_name(name=f"{key}-{flow_run_id}"):
                client.delete_automation(automation.id)
    except Exception as exc:  # noqa: BLE001 - a leftover only resumes a run that is not paused
        get_run_logger().debug("Could not delete the review timeout automation: %s", exc)


def _asked_at(flow_run_id: Any, key: str) -> float | None:
    """When the round was first asked (its Suspended/Paused state), from the run's history."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        states = client.read_flow_run_states(flow_run_id)
    times = [
        s.timestamp.timestamp()
        for s in states
        if s.is_paused() and s.state_details.pause_key == key
    ]
    return min(times) if times else None


def wait_for_answer(
    form: type[ReviewDecision], key: str, options: ReviewOptions
) -> ReviewDecision | None:
    """Ask the reviewer and wait: suspended in a deployment, paused elsewhere.

    Args:
        form: The round's form (:func:`~prefect_cometapi.forms.review.decision_form`).
        key: The round's :func:`~.review.pause_key`.
        options: The review options.

    Returns:
        The answer, or ``None`` when nobody answered within ``timeout_s``.
    """
    from prefect.exceptions import FlowPauseTimeout
    from prefect.flow_runs import pause_flow_run, suspend_flow_run

    context = FlowRunContext.get()
    assert context is not None and context.flow_run is not None
    flow_run = context.flow_run
    if flow_run.deployment_id is None:
        try:
            return pause_flow_run(
                wait_for_input=form, timeout=options.timeout_s, poll_interval=PAUSE_POLL_S, key=key
            )
        except FlowPauseTimeout:
            _resume_self(flow_run.id)
            return None
    timeout: int | None = options.timeout_s
    if options.on_timeout != "fail":
        timeout = options.timeout_s + TIMEOUT_BACKSTOP_S
        if _asked_at(flow_run.id, key) is None:
            _timeout_automation(flow_run.id, key, options.timeout_s)
    answer = suspend_flow_run(wait_for_input=form, timeout=timeout, key=key)
    _drop_automations(flow_run.id, key)
    assert answer is not None
    if _is_empty(answer):
        asked = _asked_at(flow_run.id, key)
        if asked is not None and time.time() - asked >= options.timeout_s - 1:
            return None
    return answer


def _is_empty(answer: ReviewDecision) -> bool:
    return not (answer.decisions or answer.approve_all or answer.reject_all)


def _resume_self(flow_run_id: Any) -> None:
    """Back to Running after a local pause timed out (the server may have failed it already)."""
    from prefect.client.orchestration import get_client
    from prefect.states import Running

    with get_client(sync_client=True) as client:
        try:
            client.resume_flow_run(flow_run_id, run_input={})
        except Exception:  # noqa: BLE001 - not paused any more: set Running below
            pass
        run = client.read_flow_run(flow_run_id)
        if run.state is None or not run.state.is_running():
            client.set_flow_run_state(flow_run_id, Running(), force=True)
