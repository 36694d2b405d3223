"""Transient API faults and the ambiguous create: every row answered, never a second batch.

The emulator injects 429/503 on every endpoint (create, get, list, upload start and chunks,
download) with a seeded RNG, and can accept a create then drop the connection before
answering. The engine must retry what is safe to retry and reconcile creates by listing.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

import gemini_batch_magic as gbm
from gemini_batch_magic import _backend
from gemini_batch_magic._config import settings

from ._util import assert_echoed, prompts, shards_per_batch

SIZES = {
    # name: (rows, inline_limit_bytes, max_requests_per_shard, expected shards, source)
    "inline": (12, None, None, 1, "inline"),
    "file": (20, 100, None, 1, "file"),
    "sharded": (30, 100, 8, 4, "file"),
}


def _configure(size: str) -> tuple[pd.DataFrame, int, str]:
    rows, inline_limit, per_shard, shards, source = SIZES[size]
    if inline_limit is not None:
        settings.inline_limit_bytes = inline_limit
    if per_shard is not None:
        settings.max_requests_per_shard = per_shard
    settings.retry_attempts = 10  # 0.3**10: a run of faults this long never happens
    df = pd.DataFrame({"p": prompts(rows, size)}, index=[f"{size}-{i}" for i in range(rows)])
    return df, shards, source


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("size", list(SIZES))
def test_transient_faults_on_every_endpoint_lose_nothing(
    emulator_factory: Any, size: str, seed: int
) -> None:
    emu = emulator_factory(http_fault_rate=0.3, seed=seed)
    df, shards, source = _configure(size)
    run = df.gembatch.submit("p")
    assert run.record.source == source and len(run.shards) == shards
    out = run.wait(progress=False).result()
    assert run.state == "SUCCEEDED"
    assert_echoed(out, df, "p")
    # exactly one batch per shard on the service: nothing was created twice
    assert len(emu.batches()) == shards
    assert set(shards_per_batch(emu).values()) == {1}
    assert sorted(run.batch_names) == sorted(b["name"] for b in emu.batches())


@pytest.mark.parametrize("size", list(SIZES))
def test_ambiguous_create_is_reconciled_not_repeated(emulator_factory: Any, size: str) -> None:
    # every create is accepted and persisted, then the connection drops with no answer
    emu = emulator_factory(drop_after_create_rate=1.0, seed=3)
    df, shards, _ = _configure(size)
    run = df.gembatch.submit("p")
    assert len(run.batch_names) == shards
    out = run.wait(progress=False).result()
    assert_echoed(out, df, "p")
    assert len(emu.batches()) == shards
    creates = [c for c in emu.calls if c[0] == "POST" and ":batchGenerateContent" in c[1]]
    assert len(creates) == shards  # reconciled by listing, never re-sent


def test_ambiguous_creates_mixed_with_faults(emulator_factory: Any) -> None:
    emu = emulator_factory(drop_after_create_rate=0.5, http_fault_rate=0.3, seed=11)
    df, shards, _ = _configure("sharded")
    out = df.gembatch.submit("p").wait(progress=False).result()
    assert_echoed(out, df, "p")
    assert len(emu.batches()) == shards
    assert set(shards_per_batch(emu).values()) == {1}


def test_create_that_cannot_be_confirmed_is_not_sent_again(
    emulator_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service took the create, and listing fails too: the engine gives up for now,
    and the next attempt (same kernel or another) finds the batch instead of paying twice."""
    emu = emulator_factory(drop_after_create_rate=1.0, seed=5)
    settings.retry_attempts = 2
    original_list = _backend.find_batch

    def failing_list(display: str, **kwargs: Any) -> str | None:
        emu.configure(http_fault_rate=1.0)  # every list (and anything else) now fails
        try:
            return original_list(display, **kwargs)
        finally:
            emu.configure(http_fault_rate=0.0)

    monkeypatch.setattr(_backend, "find_batch", failing_list)
    df = pd.DataFrame({"p": prompts(5)})
    with pytest.raises(gbm.BackendError, match="could not confirm"):
        df.gembatch.submit("p")
    monkeypatch.setattr(_backend, "find_batch", original_list)
    assert len(emu.batches()) == 1
    run = gbm.attach(gbm.runs()["run_id"][0])
    emu.configure(drop_after_create_rate=0.0)
    out = run.wait(progress=False).result()
    assert_echoed(out, df, "p")
    assert len(emu.batches()) == 1, "the create was sent again: the user pays twice"
    assert run.batch_names == [emu.batches()[0]["name"]]


@pytest.mark.parametrize("cuts", [2, 100])
def test_download_cut_short_is_never_taken_as_results(
    emulator_factory: Any, monkeypatch: pytest.MonkeyPatch, gembatch_home: Any, cuts: int
) -> None:
    """The connection drops halfway through the results download: retried, never stored
    half. When it keeps failing, the run stays live (no results) until a later wait()."""
    from gemini_batch_magic import _backend

    from ._proxy import CuttingProxy

    emu = emulator_factory(seed=9)
    proxy = CuttingProxy(emu.url, cuts=cuts)
    try:
        monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", proxy.url)
        _backend.reset()
        settings.inline_limit_bytes = 100
        settings.retry_attempts = 3
        df = pd.DataFrame({"p": prompts(300, "long")})
        run = df.gembatch.submit("p")
        if cuts > settings.retry_attempts:
            with pytest.raises(gbm.BackendError, match="download"):
                run.wait(progress=False)
            assert not run.done
            stored = [p for p in gembatch_home.rglob("results-*") if not p.name.endswith(".part")]
            assert stored == []  # the half files were not taken as results
            proxy.cuts = 0
        out = run.wait(progress=False).result()
        assert_echoed(out, df, "p")
        assert proxy.cut == min(cuts, settings.retry_attempts)
        assert not list(gembatch_home.rglob("*.part"))
        assert len(emu.batches()) == 1
    finally:
        proxy.close()


def test_cancel_and_retry_under_faults(emulator_factory: Any) -> None:
    emu = emulator_factory(http_fault_rate=0.3, seed=21, pending_seconds=60)
    settings.retry_attempts = 10
    df = pd.DataFrame({"p": prompts(6)})
    run = df.gembatch.submit("p")
    run.cancel()
    assert run.state == "CANCELLED"
    assert [b["state"] for b in emu.batches()] == ["BATCH_STATE_CANCELLED"]
    assert run.result()["error"].str.contains("CANCELLED").all()
    emu.configure(pending_seconds=0.0)  # the retry run is answered at once
    child = run.retry_failed()
    assert child is not None
    child.wait(progress=False)
    assert_echoed(run.result(), df, "p")
    assert len(emu.batches()) == 2
