"""Budgets a run cannot lift (issue 23, item 2): unknown models, the worker's own caps.

The flow-level rows (a run as the UI starts it, zero requests at the emulator) are in
``tests/reliability/test_hostile_parameters.py``.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from prefect_cometapi.billing.budget import _check_budget
from prefect_cometapi.billing.caps import (
    CONCURRENCY_LIMIT_ENV,
    MAX_COST_ENV,
    SPEND_LIMIT_ENV,
    limit_names,
    run_budget,
)
from prefect_cometapi.billing.prices import PRICES_ENV, ModelPrice, price_for
from prefect_cometapi.billing.spend import aacquire_spend, acquire_spend, estimate_request_usd
from prefect_cometapi.errors import BudgetExceededError, ValidationError
from prefect_cometapi.flows import ImageOptions

UNKNOWN = ImageOptions(model="gpt-image-9", size="1024x1024", quality="low")
KNOWN = ImageOptions(size="1024x1024", quality="low")
PARAMS = {"model": "gpt-image-9", "prompt": "x", "size": "1024x1024", "quality": "low", "n": 1}


@pytest.fixture(autouse=True)
def _no_worker_caps(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (MAX_COST_ENV, SPEND_LIMIT_ENV, CONCURRENCY_LIMIT_ENV, PRICES_ENV):
        monkeypatch.delenv(name, raising=False)


def test_an_unknown_model_has_no_estimate_instead_of_zero() -> None:
    assert estimate_request_usd(PARAMS) is None
    assert estimate_request_usd({**PARAMS, "model": "gpt-image-2"}) > 0


def test_a_spend_limit_refuses_an_unknown_model_before_asking_the_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ValidationError, match="no price is known") as info:
        with acquire_spend("team-budget", None):
            pass
    assert info.value.param == "model"
    monkeypatch.setenv(SPEND_LIMIT_ENV, "worker-budget")
    with pytest.raises(ValidationError, match="'worker-budget'"):  # no run spend limit given
        with acquire_spend(None, None):
            pass

    async def take() -> None:
        async with aacquire_spend(None, None):
            pass

    with pytest.raises(ValidationError, match="no price is known"):
        asyncio.run(take())


def test_without_any_spend_limit_an_unknown_model_is_not_guarded() -> None:
    with acquire_spend(None, None):
        pass


def test_the_worker_prices_an_unknown_model(monkeypatch: pytest.MonkeyPatch) -> None:
    price = {"text_input": 5, "image_input": 8, "image_output": 32}
    monkeypatch.setenv(PRICES_ENV, json.dumps({"gpt-image-9": price}))
    assert price_for("gpt-image-9") == ModelPrice(5.0, 8.0, 32.0)
    assert estimate_request_usd(PARAMS) > 0
    assert _check_budget(["x"], UNKNOWN, 1.0) > 0


@pytest.mark.parametrize(
    "bad",
    [
        "[1]",
        "{",
        '{"m": {"text_input": 1}}',
        '{"m": {"text_input": -1, "image_input": 1, "image_output": 1}}',
        '{"m": {"text_input": "nan", "image_input": 1, "image_output": 1}}',
    ],
)
def test_bad_worker_prices_are_refused(monkeypatch: pytest.MonkeyPatch, bad: str) -> None:
    monkeypatch.setenv(PRICES_ENV, bad)
    with pytest.raises(ValidationError) as info:
        price_for("gpt-image-2")
    assert info.value.param == PRICES_ENV


def test_the_worker_budget_is_the_ceiling_of_every_run(monkeypatch: pytest.MonkeyPatch) -> None:
    assert run_budget(None) is None and run_budget(2.0) == 2.0
    monkeypatch.setenv(MAX_COST_ENV, "1.5")
    assert run_budget(None) == 1.5 and run_budget(9.0) == 1.5 and run_budget(0.5) == 0.5
    for bad in ("-1", "inf", "nan", "lots"):
        monkeypatch.setenv(MAX_COST_ENV, bad)
        with pytest.raises(ValidationError):
            run_budget(None)


def test_the_worker_budget_refuses_runs_with_no_budget_and_unknown_models(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert _check_budget(["x"], UNKNOWN, None) is None  # nothing guards it: allowed
    monkeypatch.setenv(MAX_COST_ENV, "0.0001")
    with pytest.raises(BudgetExceededError):
        _check_budget(["a prompt"] * 3, KNOWN, None)
    with pytest.raises(BudgetExceededError):
        _check_budget(["a prompt"] * 3, KNOWN, 100.0)  # a run cannot lift it
    with pytest.raises(ValidationError, match="no price is known for model 'gpt-image-9'"):
        _check_budget(["x"], UNKNOWN, None)


def test_edits_count_their_input_images() -> None:
    plain = _check_budget(["x"], KNOWN, None)
    assert _check_budget(["x"], KNOWN, None, input_images=4) > plain


def test_the_worker_limits_are_taken_besides_the_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    assert limit_names(None, CONCURRENCY_LIMIT_ENV) == []
    assert limit_names("run", CONCURRENCY_LIMIT_ENV) == ["run"]
    monkeypatch.setenv(CONCURRENCY_LIMIT_ENV, " fleet ")
    assert limit_names("", CONCURRENCY_LIMIT_ENV) == ["fleet"]
    assert limit_names("run", CONCURRENCY_LIMIT_ENV) == ["fleet", "run"]
    assert limit_names("fleet", CONCURRENCY_LIMIT_ENV) == ["fleet"]
