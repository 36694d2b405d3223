"""The engine end to end: real SDK, real local emulator, real registry in a temp folder."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import gemini_batch_magic as gbm
from gemini_batch_magic import _results, _runs
from gemini_batch_magic._config import settings
from gemini_batch_magic._state import state


def _prompts(n: int, prefix: str = "prompt") -> list[str]:
    return [f"{prefix} {i}: ünïcödé ✓ {'x' * (i % 7)}" for i in range(n)]


def _api_calls(emu: Any) -> list[tuple[str, str]]:
    return list(emu.calls)


# ------------------------------------------------------------------ inline, file, sharded
def test_inline_run_results_are_aligned_to_a_string_index(emu: Any) -> None:
    df = pd.DataFrame({"prompt": _prompts(12)}, index=[f"doc-{i}" for i in range(12)][::-1])
    run = df.gembatch.submit("prompt")
    assert run.state in {"PENDING", "RUNNING", "SUCCEEDED"}
    assert len(run.run_id) == 8 and run.record.source == "inline"
    out = run.wait().result()
    assert run.state == "SUCCEEDED"
    assert out.index.equals(df.index)
    # the emulator echoes each prompt: row i's answer is row i's prompt, whatever the order
    assert out["response"].tolist() == df["prompt"].tolist()
    assert out["error"].isna().all()
    assert list(out.columns[:5]) == [
        "response",
        "error",
        "finish_reason",
        "input_tokens",
        "output_tokens",
    ]
    assert (out["finish_reason"] == "STOP").all()
    assert (out["input_tokens"] > 0).all() and (out["output_tokens"] > 0).all()
    assert run.stats == gbm.RunStats(12, 12, 0, 0)


def test_file_run_uploads_jsonl_and_aligns_shuffled_results(emu: Any) -> None:
    settings.inline_limit_bytes = 100  # force a file batch
    df = pd.DataFrame({"text": _prompts(40)})
    run = df.gembatch.submit("text")
    assert run.record.source == "file"
    assert [m for m, p in emu.calls if p.startswith("/upload/")], "no upload happened"
    out = run.wait().result()
    assert out["response"].tolist() == df["text"].tolist()
    batches = emu.batches()
    assert len(batches) == 1


def test_results_parsed_while_downloading_equal_the_stored_files_parse(emu: Any) -> None:
    """A file run's answers are parsed as they download; a kernel that reads the stored
    files later (here a fresh run object) gets the same frame, text dtype included."""
    settings.inline_limit_bytes = 100
    settings.max_requests_per_shard = 40
    df = pd.DataFrame({"text": [*_prompts(90), "[[fail]] x", 'émoji 😀 \\ " \n']})
    run = df.gembatch.submit("text")
    out = run.wait(progress=False).result()
    fresh = _runs.BatchRun(run.run_id).result()
    pd.testing.assert_frame_equal(out, fresh)
    assert out["response"].tolist()[:90] == df["text"].tolist()[:90]
    assert out["response"].iloc[-1] == df["text"].iloc[-1]
    assert pd.isna(out["response"].iloc[90]) and out["error"].notna().sum() == 1
    assert out["response"].dtype == ("str" if _results.PANDAS_3 else object)


def test_sharded_run_submits_several_batches_and_merges(emu: Any) -> None:
    settings.inline_limit_bytes = 100
    settings.max_requests_per_shard = 7
    df = pd.DataFrame({"text": _prompts(30)}, index=pd.RangeIndex(100, 130))
    run = df.gembatch.submit("text")
    assert len(run.shards) == 5
    assert len(set(run.batch_names)) == 5
    out = run.wait().result()
    assert out.index.equals(df.index)
    assert out["response"].tolist() == df["text"].tolist()
    assert len(emu.batches()) == 5


@pytest.mark.parametrize(
    "index",
    [
        pd.date_range("2024-01-01", periods=9, freq="D", tz="UTC"),
        pd.MultiIndex.from_tuples(
            [(c, i) for c in "ab" for i in range(5)][:9], names=["group", "n"]
        ),
        pd.Index(np.random.default_rng(3).permutation(np.arange(9) * 10)),
        pd.Index([1, "two", 3.5, ("t", 4), None.__class__.__name__, 6, 7, 8, 9], dtype=object),
    ],
    ids=["dates", "multiindex", "shuffled-ints", "mixed-objects"],
)
def test_any_hashable_index_comes_back_exactly(emu: Any, index: pd.Index) -> None:
    df = pd.DataFrame({"p": _prompts(len(index))}, index=index)
    out = df.gembatch.run("p")
    assert out.index.equals(df.index)
    assert out["response"].tolist() == df["p"].tolist()


def test_template_key_column_and_join(emu: Any) -> None:
    df = pd.DataFrame(
        {
            "id": ["a", "b", "c"],
            "text": ["hi", "ciao", "hola"],
            "lang": ["French", "German", "Thai"],
        }
    )
    run = df.gembatch.submit(
        template="Translate {text} into {lang}.",
        key="id",
        system_instruction="Be brief.",
        generation_config={"temperature": 0.2},
    )
    out = run.wait().result(join=True)
    assert list(out.columns[:3]) == ["id", "text", "lang"]
    assert out["response"].tolist() == [
        "Translate hi into French.",
        "Translate ciao into German.",
        "Translate hola into Thai.",
    ]


# ------------------------------------------------------------------ failures and retry
def test_failed_rows_carry_errors_and_retry_failed_fills_them(emulator_factory: Any) -> None:
    seen: set[str] = set()

    def flaky(request: dict[str, Any], model: str) -> dict[str, Any]:
        text = request["contents"][-1]["parts"][0]["text"]
        if "flaky" in text and text not in seen:
            seen.add(text)
            raise RuntimeError("simulated transient model failure")
        return {
            "candidates": [
                {
                    "content": {"role": "model", "parts": [{"text": text.upper()}]},
                    "finishReason": "STOP",
                    "index": 0,
                }
            ],
            "usageMetadata": {
                "promptTokenCount": 3,
                "candidatesTokenCount": 3,
                "totalTokenCount": 6,
            },
        }

    emulator_factory(responder=flaky)
    df = pd.DataFrame({"p": ["ok 1", "flaky 2", "ok 3", "flaky 4"]}, index=list("wxyz"))
    run = df.gembatch.submit("p")
    out = run.wait().result()
    assert out.loc[["x", "z"], "error"].notna().all()
    assert out.loc[["w", "y"], "response"].tolist() == ["OK 1", "OK 3"]
    child = run.retry_failed()
    assert child is not None and child.parent_id == run.run_id
    assert child.n_rows == 2
    child.wait()
    merged = run.result()
    assert merged["error"].isna().all()
    assert merged["response"].tolist() == ["OK 1", "FLAKY 2", "OK 3", "FLAKY 4"]
    assert run.retry_failed() is None  # nothing left to retry


def test_fail_marker_rows_error_without_failing_the_run(emu: Any) -> None:
    df = pd.DataFrame({"p": ["fine", "this one [[fail]]s", "also fine"]})
    out = df.gembatch.run("p")
    assert out["error"].isna().tolist() == [True, False, True]
    assert out.loc[1, "error"].split(" ")[0].isdigit()  # "500 INTERNAL: ..."
    assert pd.isna(out.loc[1, "response"])


def test_cancel_moves_a_live_run_to_cancelled(emulator_factory: Any) -> None:
    emu = emulator_factory(pending_seconds=60)
    df = pd.DataFrame({"p": _prompts(5)})
    run = df.gembatch.submit("p")
    run.cancel()
    assert run.state == "CANCELLED"
    assert [b["state"] for b in emu.batches()] == ["BATCH_STATE_CANCELLED"]
    out = run.result()
    assert out["error"].str.contains("CANCELLED").all()


def test_expired_batch_shows_why_and_retry_recovers(emulator_factory: Any) -> None:
    emu = emulator_factory(pending_seconds=60)
    df = pd.DataFrame({"p": _prompts(4)})
    run = df.gembatch.submit("p")
    emu.set_state(run.batch_names[0], "EXPIRED")
    run.wait()
    assert run.state == "EXPIRED"
    assert "EXPIRED" in (run.error or "")
    assert run.result()["error"].str.contains("EXPIRED").all()


# ------------------------------------------------------------------ never pay twice
def test_identical_submit_returns_the_existing_run(emu: Any, capsys: Any) -> None:
    df = pd.DataFrame({"p": _prompts(6)})
    first = df.gembatch.submit("p")
    second = df.gembatch.submit("p")
    assert second.run_id == first.run_id
    assert "identical run already exists" in capsys.readouterr().err
    assert len(emu.batches()) == 1
    # anything that changes the answers makes a new run
    df.gembatch.submit("p", generation_config={"temperature": 0.9})
    assert len(emu.batches()) == 2
    forced = df.gembatch.submit("p", force=True)
    assert forced.run_id != first.run_id
    assert len(emu.batches()) == 3


def test_max_cost_refuses_before_sending(emu: Any) -> None:
    df = pd.DataFrame({"p": _prompts(50)})
    with pytest.raises(gbm.CostLimitError, match="exceeds max_cost"):
        df.gembatch.submit("p", max_cost=1e-9)
    assert _api_calls(emu) == []
    assert gbm.runs().empty


def test_estimate_sends_nothing_and_describes_the_run(emu: Any) -> None:
    settings.inline_limit_bytes = 1_000
    settings.max_requests_per_shard = 10
    df = pd.DataFrame({"p": _prompts(25)})
    est = df.gembatch.estimate("p", model="gemini-2.5-flash")
    assert est.requests == 25 and est.mode == "file" and est.shards == 3
    assert est.cost_usd is not None and est.cost_usd > 0
    assert est.preview[0]["request"]["contents"][0]["parts"][0]["text"] == df["p"][0]
    assert "estimated cost $" in str(est)
    assert _api_calls(emu) == []
    assert gbm.runs().empty


# ------------------------------------------------------------------ persistence
def test_results_survive_the_service_going_away(emulator_factory: Any) -> None:
    emu = emulator_factory()
    df = pd.DataFrame({"p": _prompts(5)}, index=list("abcde"))
    run = df.gembatch.submit("p")
    run.wait()
    run_id = run.run_id
    emu.close()
    del run
    state.runs.clear()
    again = gbm.attach(run_id)
    out = again.result()  # from the registry: no service call possible
    assert out["response"].tolist() == df["p"].tolist()
    assert out.index.tolist() == list("abcde")


def test_attach_by_batch_name_and_prefix_and_runs_listing(emu: Any) -> None:
    df = pd.DataFrame({"p": _prompts(3)})
    run = df.gembatch.submit("p", name="my-run")
    other = pd.DataFrame({"p": _prompts(2, "other")}).gembatch.submit("p")
    assert gbm.attach(run.batch_names[0]) is run
    assert gbm.attach(run.run_id[:6]).run_id == run.run_id
    table = gbm.runs()
    assert table["run_id"].tolist() == [other.run_id, run.run_id]  # newest first
    assert table.loc[1, "name"] == "my-run"
    with pytest.raises(gbm.RunNotFoundError, match="no run 'zzzz'"):
        gbm.attach("zzzz")
    with pytest.raises(gbm.RunNotFoundError, match="batches/nope"):
        gbm.attach("batches/nope")


def test_registry_is_private(emu: Any, gembatch_home: Path) -> None:
    pd.DataFrame({"p": _prompts(2)}).gembatch.run("p")
    assert stat.S_IMODE(gembatch_home.stat().st_mode) == 0o700
    for path in gembatch_home.rglob("*"):
        mode = stat.S_IMODE(path.stat().st_mode)
        if path.is_dir():
            assert mode == 0o700, path
        else:
            assert mode & 0o077 == 0, (path, oct(mode))


def test_restart_submit_in_one_process_fetch_in_another(emu: Any, gembatch_home: Path) -> None:
    env = {**os.environ, "GEMBATCH_HOME": str(gembatch_home), "GOOGLE_GEMINI_BASE_URL": emu.url}
    submit = textwrap.dedent("""
        import pandas as pd, gemini_batch_magic as gbm
        df = pd.DataFrame({"p": ["alpha", "beta", "gamma"]}, index=[30, 10, 20])
        print(df.gembatch.submit("p").run_id)
    """)
    proc = subprocess.run(
        [sys.executable, "-c", submit], env=env, capture_output=True, text=True, check=True
    )
    run_id = proc.stdout.strip().splitlines()[-1]
    fetch = textwrap.dedent(f"""
        import gemini_batch_magic as gbm
        run = gbm.attach({run_id!r})
        out = run.wait(progress=False).result()
        print(out.index.tolist(), out["response"].tolist())
    """)
    proc = subprocess.run(
        [sys.executable, "-c", fetch], env=env, capture_output=True, text=True, check=True
    )
    assert proc.stdout.strip() == "[30, 10, 20] ['alpha', 'beta', 'gamma']"


# ------------------------------------------------------------------ structured output
def test_response_schema_gives_parsed_objects_and_field_columns(emu: Any) -> None:
    from pydantic import BaseModel

    class Review(BaseModel):
        sentiment: str
        score: int

    df = pd.DataFrame({"p": ["great film", "awful film"]}, index=["r1", "r2"])
    out = df.gembatch.run("p", response_schema=Review)
    assert out["error"].isna().all()
    assert all(isinstance(p, Review) for p in out["parsed"])
    assert {"sentiment", "score"} <= set(out.columns)
    assert out["score"].map(type).eq(int).all()


# ------------------------------------------------------------------ bad input
BAD_INPUTS = [
    ("not a frame", lambda: gbm.submit([1, 2, 3], "p"), gbm.InputError, "DataFrame"),
    ("empty frame", lambda: gbm.submit(pd.DataFrame({"p": []}), "p"), gbm.InputError, "no rows"),
    (
        "unknown column",
        lambda: gbm.submit(pd.DataFrame({"prompt": ["a"]}), "promt"),
        gbm.ColumnError,
        "prompt",
    ),
    (
        "nan prompt",
        lambda: gbm.submit(pd.DataFrame({"p": ["a", None, float("nan")]}), "p"),
        gbm.EmptyPromptError,
        "on_empty",
    ),
    (
        "empty prompt",
        lambda: gbm.submit(pd.DataFrame({"p": ["a", "  "]}), "p"),
        gbm.EmptyPromptError,
        "1",
    ),
    (
        "duplicate keys",
        lambda: gbm.submit(pd.DataFrame({"p": ["a", "b"]}, index=[7, 7]), "p"),
        gbm.DuplicateKeyError,
        "7",
    ),
    (
        "duplicate key column",
        lambda: gbm.submit(pd.DataFrame({"p": ["a", "b"], "id": ["x", "x"]}), "p", key="id"),
        gbm.DuplicateKeyError,
        "x",
    ),
    (
        "non-text prompts",
        lambda: gbm.submit(pd.DataFrame({"p": [1, 2]}), "p"),
        gbm.PromptTypeError,
        "astype",
    ),
    (
        "unknown placeholder",
        lambda: gbm.submit(pd.DataFrame({"text": ["a"]}), template="Say {txt}"),
        gbm.ColumnError,
        "text",
    ),
    (
        "positional placeholder",
        lambda: gbm.submit(pd.DataFrame({"text": ["a"]}), template="Say {0}"),
        gbm.TemplateError,
        "0",
    ),
    (
        "invalid model",
        lambda: gbm.submit(pd.DataFrame({"p": ["a"]}), "p", model="GPT 4!"),
        gbm.ConfigError,
        "GPT 4!",
    ),
    (
        "bad generation config",
        lambda: gbm.submit(pd.DataFrame({"p": ["a"]}), "p", generation_config={"temprature": 1}),
        gbm.ConfigError,
        "temperature",
    ),
]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_fails_before_anything_is_sent_or_written(emu: Any, case: Any) -> None:
    _, call, error, text = case
    with pytest.raises(error) as info:
        call()
    assert text in str(info.value)
    assert _api_calls(emu) == []
    assert gbm.runs().empty


def test_request_larger_than_the_limits_fails_before_sending(emu: Any) -> None:
    settings.max_file_bytes = 500
    df = pd.DataFrame({"p": ["short", "x" * 1000]}, index=["ok", "huge"])
    with pytest.raises(gbm.RequestTooLargeError, match="huge"):
        df.gembatch.submit("p")
    assert _api_calls(emu) == []
    assert gbm.runs().empty


def test_on_empty_skip_leaves_rows_out_and_marks_them(emu: Any) -> None:
    df = pd.DataFrame({"p": ["a", None, "c", ""]})
    out = df.gembatch.run("p", on_empty="skip")
    assert out["response"].tolist()[0::2] == ["a", "c"]
    assert out["error"].tolist()[1].startswith("skipped")
    assert out["error"].tolist()[3].startswith("skipped")


def test_background_submission_returns_before_upload_and_wait_finishes_it(emu: Any) -> None:
    settings.inline_limit_bytes = 100  # a file run: upload + create happen in a thread
    df = pd.DataFrame({"p": _prompts(20)})
    run = df.gembatch.submit("p", background=True)
    assert run.state in {"SUBMITTING", "PENDING", "RUNNING", "SUCCEEDED"}
    out = run.wait(progress=False).result()
    assert out["response"].tolist() == df["p"].tolist()
    assert len(emu.batches()) == 1


def test_background_submission_error_surfaces_in_wait(emulator_factory: Any) -> None:
    emu = emulator_factory()
    settings.inline_limit_bytes = 100
    settings.retry_attempts = 1
    df = pd.DataFrame({"p": _prompts(5)})
    emu.close()  # the service is gone: the upload cannot happen
    run = df.gembatch.submit("p", background=True)
    with pytest.raises(gbm.BackendError, match="uploading"):
        run.wait(progress=False)
    assert run.state == "SUBMITTING"
    assert "not submitted yet" in (run.error or "")


def test_a_shard_whose_counts_were_final_before_it_succeeded_is_still_recorded(
    emulator_factory: Any,
) -> None:
    """Regression: counts already final at the last RUNNING poll must not hide the SUCCEEDED one."""
    emu = emulator_factory()
    settings.inline_limit_bytes = 100
    settings.max_requests_per_shard = 3
    df = pd.DataFrame({"p": _prompts(6)})
    run = df.gembatch.submit("p")
    for shard in run.shards:  # as if batchStats had already reported every answer
        run._book.set_shard(shard, succeeded=shard.n_requests, failed=0, pending=0)
    deadline = time.monotonic() + 60
    while any(b["state"] != "BATCH_STATE_SUCCEEDED" for b in emu.batches()):
        assert time.monotonic() < deadline, emu.batches()
        time.sleep(0.05)  # the next poll is the first to see SUCCEEDED
    out = run.wait(progress=False).result()
    assert out["error"].isna().all(), out["error"].tolist()
    assert out["response"].tolist() == df["p"].tolist()
    again = _runs.BatchRun(run.run_id)  # what another kernel reads from the registry
    assert [s.state for s in again.shards] == ["SUCCEEDED", "SUCCEEDED"]
    assert all(s.results_file for s in again.shards)
