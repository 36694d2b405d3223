"""FAILED, CANCELLED and EXPIRED runs say why, keep the answers that exist, and
``retry_failed()`` recovers the rest."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

import gemini_batch_magic as gbm
from gemini_batch_magic._config import settings

from ._util import prompts


@pytest.mark.parametrize("state", ["FAILED", "CANCELLED", "EXPIRED"])
def test_terminal_shard_keeps_other_answers_and_retry_recovers(
    emulator_factory: Any, state: str
) -> None:
    emu = emulator_factory(pending_seconds=0.0, rate=20)
    settings.inline_limit_bytes = 100
    settings.max_requests_per_shard = 6
    df = pd.DataFrame({"p": prompts(12, state)}, index=[f"{state}-{i}" for i in range(12)])
    run = df.gembatch.submit("p")
    assert len(run.shards) == 2
    emu.set_state(run.batch_names[0], state)  # shard 0 ends badly, shard 1 finishes
    run.wait(progress=False)
    assert run.state == state
    assert state in (run.error or "") and run.batch_names[0] in (run.error or "")
    out = run.result()
    lost, kept = out.iloc[:6], out.iloc[6:]
    answered = lost["response"].notna()  # a cancelled batch keeps what it had answered
    assert state == "CANCELLED" or not answered.any()
    assert (lost.loc[answered, "response"] == df["p"].iloc[:6][answered.to_numpy()]).all()
    assert lost.loc[~answered, "error"].str.contains(state).all()
    assert kept["error"].isna().all() and kept["response"].tolist() == df["p"].tolist()[6:]
    table = gbm.runs()
    assert table.loc[0, "state"] == state and table.loc[0, "failed"] == (~answered).sum()

    child = run.retry_failed()
    assert child is not None and child.n_rows == (~answered).sum()
    child.wait(progress=False)
    merged = run.result()
    assert merged["error"].isna().all()
    assert merged["response"].tolist() == df["p"].tolist()
    assert len(emu.batches()) == 3


def test_cancel_keeps_finished_shards(emulator_factory: Any) -> None:
    emu = emulator_factory(pending_seconds=0.0, rate=0)
    settings.inline_limit_bytes = 100
    settings.max_requests_per_shard = 5
    df = pd.DataFrame({"p": prompts(10)})
    run = df.gembatch.submit("p").wait(progress=False)
    run.cancel()  # nothing live to cancel: every answer stays
    assert run.state == "SUCCEEDED"
    assert run.result()["error"].isna().all()
    assert all(b["state"] == "BATCH_STATE_SUCCEEDED" for b in emu.batches())
