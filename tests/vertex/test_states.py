"""Vertex AI job states, cancel, retry, permission errors and reattaching by label."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import gemini_batch_magic as gbm
from gemini_batch_magic import _config


def _frame(n: int) -> pd.DataFrame:
    return pd.DataFrame({"text": [f"row {i}" for i in range(n)]},
                        index=pd.Index([f"k{i}" for i in range(n)], name="id"))


def test_partially_succeeded_keeps_answers_and_retries_the_rest(vertex) -> None:
    df = _frame(6)
    vertex.vertex.inject("PARTIALLY_SUCCEEDED")
    run = df.gembatch.submit("text").wait(timeout=60, progress=False)
    assert run.state == "PARTIALLY_SUCCEEDED"
    assert "PARTIALLY_SUCCEEDED" in (run.error or "")
    out = run.result()
    ok = out["error"].isna()
    assert ok.sum() == 3 and (~ok).sum() == 3
    assert (out.loc[ok, "response"] == df.loc[ok, "text"]).all()
    assert out.loc[~ok, "error"].str.contains("PARTIALLY_SUCCEEDED").all()
    assert run.stats.succeeded == 3 and run.stats.failed == 3
    child = run.retry_failed()
    assert child is not None and child.n_rows == 3
    child.wait(timeout=60, progress=False)
    merged = run.result()
    assert merged["error"].isna().all()
    assert list(merged["response"]) == list(df["text"])


@pytest.mark.parametrize("outcome", ["FAILED", "EXPIRED"])
def test_failed_and_expired_jobs_name_their_state(vertex, outcome: str) -> None:
    vertex.vertex.inject(outcome)
    run = _frame(2).gembatch.submit("text").wait(timeout=60, progress=False)
    assert run.state == outcome
    assert outcome in (run.error or "") and "Injected" in (run.error or "")
    out = run.result()
    assert out["error"].str.contains(outcome).all()


def test_paused_and_updating_are_followed_until_they_end(vertex) -> None:
    vertex.vertex.inject("PAUSED")
    run = _frame(2).gembatch.submit("text")
    deadline = time.monotonic() + 30
    while run.refresh().state != "PAUSED" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert run.state == "PAUSED" and not run.done
    vertex.vertex.release()
    assert run.wait(timeout=60, progress=False).state == "SUCCEEDED"


def test_cancel(vertex) -> None:
    vertex.vertex.inject("HOLD")
    run = _frame(3).gembatch.submit("text")
    run.cancel()
    run.wait(timeout=60, progress=False)
    assert run.state == "CANCELLED"
    assert run.result()["error"].str.contains("cancelled").all()


def test_permission_error_says_which_project_and_how_to_fix(vertex) -> None:
    _config.configure(project="someone-elses-project")
    with pytest.raises(gbm.BackendError) as info:
        _frame(2).gembatch.submit("text")
    text = str(info.value)
    assert info.value.code == 403
    assert "someone-elses-project" in text and "roles/aiplatform.user" in text


def test_missing_bucket_says_which_and_how_to_create_it(vertex) -> None:
    _config.configure(staging="gs://no-such-bucket/gembatch")
    with pytest.raises(gbm.ConfigError, match=r"no-such-bucket.*gcloud storage buckets create"):
        _frame(2).gembatch.submit("text")


def test_missing_project_says_how_to_set_it(vertex) -> None:
    _config.configure(project="")
    with pytest.raises(gbm.ConfigError, match="GOOGLE_CLOUD_PROJECT"):
        _frame(2).gembatch.submit("text")


def test_reattach_from_a_second_process_by_label(vertex, tmp_path: Path) -> None:
    _config.configure(max_requests_per_shard=2)
    df = _frame(5)
    run = df.gembatch.submit("text").wait(timeout=60, progress=False)
    script = (
        "import json, sys, gemini_batch_magic as gbm\n"
        "run = gbm.attach(sys.argv[1]).wait(timeout=60, progress=False)\n"
        "out = run.result()\n"
        "print(json.dumps({'state': run.state, 'shards': len(run.shards),"
        " 'response': out['response'].tolist()}))\n"
    )
    env = {**os.environ, **vertex.env(), "GEMBATCH_HOME": str(tmp_path / "other-machine"),
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    done = subprocess.run([sys.executable, "-c", script, run.run_id], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["state"] == "SUCCEEDED" and seen["shards"] == 3
    assert seen["response"] == list(df["text"])  # by row position: no DataFrame was given
