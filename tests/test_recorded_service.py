"""The engine against the service as recorded (the emulator's default mode), item by item.

The real Batch API reports counts only when a batch ends and leaves zero counts out, uses
36-character batch ids and 42-character output file ids the File API will not ``get``,
rejects a wrong key with ``API_KEY_INVALID``, shows a batch only to the key that made it,
answers 404 for an unknown model, deletes results some time after a batch ends, and keeps
a cancelled batch's answers. Each test drives the unmodified SDK through the engine.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pandas as pd
import pytest

import gemini_batch_magic as gbm
from gemini_batch_magic import _backend
from gemini_batch_magic._config import settings
from gemini_batch_magic._state import state

TEST_KEY = "test-key-alpha-0001"  # fake keys: nothing like a real one
OTHER_KEY = "test-key-bravo-0002"


def _frame(n: int, prefix: str = "q") -> pd.DataFrame:
    return pd.DataFrame({"p": [f"{prefix} {i}" for i in range(n)]},
                        index=[f"{prefix}-{i}" for i in range(n)][::-1])


def _use_key(monkeypatch: pytest.MonkeyPatch, key: str) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", key)
    _backend.reset()


# ------------------------------------------------------------------ 1. counts at the end
def test_counts_arrive_only_at_the_end_and_the_run_still_completes(emulator_factory: Any
                                                                   ) -> None:
    emu = emulator_factory(pending_seconds=0.0, rate=50)
    assert emu.config.progress == "end"
    df = _frame(30)
    run = df.gembatch.submit("p")
    run.refresh()
    if not run.done:  # while it runs the service says nothing about answers
        assert run.stats.succeeded + run.stats.failed == 0
    out = run.wait(progress=False).result()
    assert run.stats == gbm.RunStats(30, 30, 0, 0)
    assert out["response"].tolist() == df["p"].tolist()


# ------------------------------------------------------------------ 2. long output file ids
def test_file_batch_with_a_42_character_output_id_downloads_and_is_never_got(
    emulator_factory: Any,
) -> None:
    emu = emulator_factory()
    settings.inline_limit_bytes = 100  # a file batch
    df = _frame(12)
    run = df.gembatch.submit("p")
    out = run.wait(progress=False).result()
    assert out["response"].tolist() == df["p"].tolist()
    batch_id = run.batch_names[0].removeprefix("batches/")
    assert len(batch_id) == 36
    outputs = [f["name"] for f in emu.files() if f["name"].startswith("files/batch-")]
    assert outputs and all(len(n.removeprefix("files/")) == 42 for n in outputs)
    touched = [(m, p) for m, p in emu.calls if any(o.removeprefix("files/") in p for o in outputs)]
    assert touched and all(":download" in p or "alt=media" in p for _, p in touched), touched


# ------------------------------------------------------------------ 3. keys
def test_a_rejected_key_is_named_as_such_and_never_shown(
    emulator_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator_factory(api_key=TEST_KEY)
    _use_key(monkeypatch, OTHER_KEY)
    with pytest.raises(gbm.BackendError) as info:
        _frame(3).gembatch.submit("p")
    assert info.value.reason == "API_KEY_INVALID" and info.value.code == 400
    assert "API key was rejected" in str(info.value) and "$GEMINI_API_KEY" in str(info.value)
    assert OTHER_KEY not in str(info.value) and TEST_KEY not in repr(info.value)
    assert gbm.runs().empty


def test_a_run_made_with_another_key_says_so_instead_of_404s(
    emulator_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator_factory(api_key=(TEST_KEY, OTHER_KEY), pending_seconds=30.0)
    _use_key(monkeypatch, TEST_KEY)
    run = _frame(3).gembatch.submit("p")
    assert run.record.key_fp and TEST_KEY not in run.record.key_fp
    _use_key(monkeypatch, OTHER_KEY)
    with pytest.raises(gbm.BackendError) as info:
        gbm.attach(run.run_id).refresh()
    assert "created with another API key" in str(info.value)
    assert info.value.run_id == run.run_id
    _use_key(monkeypatch, TEST_KEY)  # the key it was made with: it follows again
    gbm.attach(run.run_id).refresh()


# ------------------------------------------------------------------ 3. a failed batch
def test_a_failed_batch_shows_the_services_reason(emulator_factory: Any) -> None:
    emulator_factory(fail_batch_rate=1.0, fail_batch_message="the quota of the batch ran out")
    run = _frame(4).gembatch.submit("p").wait(progress=False)
    assert run.state == "FAILED"
    assert "the quota of the batch ran out" in (run.error or "")
    out = run.result()
    assert out["response"].isna().all() and out["error"].str.contains("FAILED").all()


# ------------------------------------------------------------------ 4. models
def test_a_misspelt_model_is_refused_before_anything_is_uploaded(emulator_factory: Any) -> None:
    emu = emulator_factory()
    settings.inline_limit_bytes = 100
    with pytest.raises(gbm.ConfigError, match=r"did you mean gemini-2\.5-flash"):
        _frame(5).gembatch.submit("p", model="gemini-2.5-flsh")
    assert not any("upload" in p or ":batchGenerateContent" in p for _, p in emu.calls)
    assert gbm.runs().empty
    emu.reset_calls()
    _frame(5).gembatch.submit("p", model="gemini-2.5-flash").wait(progress=False)
    _frame(6).gembatch.submit("p", model="gemini-2.5-flash").wait(progress=False)
    lookups = [p for m, p in emu.calls if m == "GET" and p.endswith("/models/gemini-2.5-flash")]
    assert len(lookups) == 1  # checked once per model, then cached


# ------------------------------------------------------------------ 5. lifetimes
def test_results_deleted_by_the_service_are_marked_and_retried(emulator_factory: Any) -> None:
    emu = emulator_factory(results_ttl=0.2)
    settings.inline_limit_bytes = 100  # a file batch: its results are a file the service deletes
    df = _frame(8)
    run = df.gembatch.submit("p")
    deadline = time.monotonic() + 30
    while emu.batches()[0]["state"] != "BATCH_STATE_SUCCEEDED" and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.6)  # the service deletes the results before this kernel looks again
    run.wait(progress=False)
    out = run.result()
    assert (out["error"] == "results expired on the service").all(), out["error"].tolist()
    child = run.retry_failed()
    assert child is not None and child.n_rows == 8
    child.wait(progress=False)
    assert run.result()["response"].tolist() == df["p"].tolist()


def test_uploaded_inputs_are_deleted_once_their_batch_ends(emulator_factory: Any) -> None:
    emu = emulator_factory()
    settings.inline_limit_bytes = 100

    def uploads() -> list[str]:
        return [f["name"] for f in emu.files() if not f["name"].startswith("files/batch-")]

    run = _frame(6).gembatch.submit("p").wait(progress=False)
    assert run.shards[0].upload_name and uploads() == []
    kept = gbm.submit(_frame(7), "p", keep_inputs=True).wait(progress=False)
    assert uploads() == [kept.shards[0].upload_name]


# ------------------------------------------------------------------ 6. cancel
def test_cancel_keeps_every_answer_that_arrived(emulator_factory: Any) -> None:
    emu = emulator_factory(rate=20, progress="live")
    settings.inline_limit_bytes = 100
    df = _frame(200)
    run = df.gembatch.submit("p")
    deadline = time.monotonic() + 30
    while (emu.batches()[0].get("successfulRequestCount") or 0) < 10 and \
            time.monotonic() < deadline:
        time.sleep(0.05)
    run.cancel().wait(progress=False)
    assert run.state == "CANCELLED"
    out = run.result()
    answered = out["response"].notna()
    assert 10 <= answered.sum() < 200
    assert (out.loc[answered, "response"] == df.loc[answered, "p"]).all()
    assert out.loc[~answered, "error"].str.contains("cancelled").all()


# ------------------------------------------------------------------ new states
@pytest.mark.filterwarnings("ignore:BATCH_STATE_PAUSED is not a valid JobState")
def test_a_paused_batch_is_shown_and_polled_not_taken_as_over(
    emulator_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    emu = emulator_factory(pending_seconds=30.0)
    run = _frame(3).gembatch.submit("p")
    emu.set_state(run.batch_names[0], "PAUSED")
    with caplog.at_level(logging.WARNING, logger="gemini_batch_magic"):
        run.refresh()
        run.refresh()
    assert run.state == "PAUSED" and not run.done
    assert run.batch_names[0] in run.live_batch_names
    # PAUSED is a Vertex AI state this version knows (issue 13): followed, not warned about
    told = [r for r in caplog.records if "does not know" in r.getMessage()]
    assert told == []
    with pytest.raises(gbm.WaitTimeout):
        run.wait(timeout=0.3, progress=False)


# ------------------------------------------------------------------ a lost registry
def test_attach_rebuilds_a_run_from_the_service_alone(
    emulator_factory: Any, tmp_path: Any
) -> None:
    emulator_factory()
    settings.inline_limit_bytes = 100
    df = _frame(25).sample(frac=1.0, random_state=3)  # shuffled labels
    run = df.gembatch.submit("p").wait(progress=False)
    expected = run.result()
    name = run.batch_names[0]
    gbm.configure(home=tmp_path / "new-laptop")  # the registry is gone
    state.runs.clear()
    with pytest.raises(gbm.InputError, match="25 rows"):
        gbm.attach(name, df=df.iloc[:10])
    again = gbm.attach(name, df=df)
    assert again.run_id == run.run_id
    out = again.wait(progress=False).result()
    pd.testing.assert_frame_equal(out[["response", "error"]], expected[["response", "error"]])
    gbm.configure(home=tmp_path / "another")
    by_position = gbm.attach(name).wait(progress=False).result()
    assert by_position.index.tolist() == list(range(25))
    assert by_position["response"].tolist() == df["p"].tolist()


# ------------------------------------------------------------------ spend safety
def test_a_template_without_a_placeholder_is_refused(emu: Any) -> None:
    with pytest.raises(gbm.TemplateError, match=r"no \{column\} placeholder"):
        _frame(5).gembatch.submit(template="Summarise this.")
    assert gbm.runs().empty


def test_a_run_above_confirm_above_needs_a_confirmation(emu: Any) -> None:
    settings.confirm_above = 0.0001
    df = _frame(20)
    with pytest.raises(gbm.ConfirmationRequired) as info:
        gbm.submit(df, "p")
    assert "confirm=True" in str(info.value) and info.value.estimate.requests == 20
    assert gbm.runs().empty
    assert not any(":batchGenerateContent" in p for _, p in emu.calls)
    run = gbm.submit(df, "p", confirm=True)
    assert run.wait(progress=False).state == "SUCCEEDED"
    settings.confirm_above = None
    gbm.submit(_frame(21), "p").wait(progress=False)


def test_a_full_file_quota_says_what_to_delete(emulator_factory: Any) -> None:
    emulator_factory(file_quota_bytes=200)
    settings.inline_limit_bytes = 100
    settings.retry_attempts = 2
    with pytest.raises(gbm.BackendError) as info:
        _frame(20).gembatch.submit("p")
    assert info.value.code == 429 and info.value.status == "RESOURCE_EXHAUSTED"
    assert "client.files.delete" in str(info.value) and "keep_inputs" in str(info.value)


def test_an_identical_run_is_returned_without_asking_again(emu: Any) -> None:
    settings.confirm_above = 0.0001
    df = _frame(20)
    run = gbm.submit(df, "p", confirm=True)
    assert gbm.submit(df, "p").run_id == run.run_id  # nothing new would be paid for
    with pytest.raises(gbm.ConfirmationRequired) as info:
        gbm.submit(df, "p", force=True)  # a new run: asked again
    assert info.value.limit == pytest.approx(0.0001)
