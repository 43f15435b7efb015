"""patched_environ: variables set and removed for a block, then put back as they were."""

from __future__ import annotations

import os

import pytest

from prefect_cometapi.demo.environ import patched_environ


def test_variables_are_set_and_dropped_then_restored_even_after_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COMETAPI_T_KEPT", "before")
    monkeypatch.setenv("COMETAPI_T_DROPPED", "there")
    monkeypatch.delenv("COMETAPI_T_NEW", raising=False)
    with pytest.raises(RuntimeError):
        with patched_environ(
            set={"COMETAPI_T_KEPT": "during", "COMETAPI_T_NEW": "new"},
            drop=["COMETAPI_T_DROPPED", "COMETAPI_T_NEW"],
        ):
            assert os.environ["COMETAPI_T_KEPT"] == "during"
            assert os.environ["COMETAPI_T_NEW"] == "new"  # set wins over drop
            assert "COMETAPI_T_DROPPED" not in os.environ
            raise RuntimeError("the block failed")
    assert os.environ["COMETAPI_T_KEPT"] == "before"
    assert os.environ["COMETAPI_T_DROPPED"] == "there"
    assert "COMETAPI_T_NEW" not in os.environ
