"""DataFrames on Vertex AI: staged in Cloud Storage, answered into it, aligned by key."""

from __future__ import annotations

import pandas as pd
import pytest

import gemini_batch_magic as gbm
from gemini_batch_magic import _config

from .conftest import storage_client


def _frame(n: int) -> pd.DataFrame:
    return pd.DataFrame({"text": [f"prompt {i}" for i in range(n)]},
                        index=[f"r{i}" for i in range(n)])


def test_dataframe_run_two_shards(vertex) -> None:
    _config.configure(max_requests_per_shard=3)
    df = _frame(5)
    run = df.gembatch.submit("text")
    assert len(run.shards) == 2
    out = run.wait(timeout=60, progress=False).result()
    assert run.state == "SUCCEEDED"
    assert list(out.index) == list(df.index)
    assert list(out["response"]) == list(df["text"])
    assert out["error"].isna().all()
    # two jobs, each labelled with the run, staged and answered under staging/<run>/
    jobs = [j for j in vertex.vertex.jobs.values()
            if (j.body.get("labels") or {}).get("gembatch_run") == run.run_id]
    assert len(jobs) == 2
    assert all(j.body["inputConfig"]["gcsSource"]["uris"][0].startswith(
        f"{vertex.staging}/{run.run_id}/requests-") for j in jobs)
    names = [b.name for b in storage_client().list_blobs(vertex.bucket,
                                                         prefix=f"gembatch/{run.run_id}/")]
    assert not [n for n in names if "/requests-" in n]  # staged inputs deleted once done
    assert len([n for n in names if n.endswith("predictions.jsonl")]) == 2


def test_failed_rows_and_retry(vertex) -> None:
    df = pd.DataFrame({"text": ["fine", "[[fail]] bad", "also fine"]})
    run = df.gembatch.submit("text").wait(timeout=60, progress=False)
    out = run.result()
    assert out["error"].notna().tolist() == [False, True, False]
    assert "Bad Request" in out["error"][1]


def test_missing_staging_is_refused_before_sending(vertex) -> None:
    _config.configure(staging="")
    with pytest.raises(gbm.ConfigError, match="GEMBATCH_STAGING"):
        _frame(2).gembatch.submit("text")
    assert gbm.runs().empty


def test_the_same_rows_again_are_the_same_run(vertex) -> None:
    df = _frame(3)
    first = df.gembatch.submit("text").wait(timeout=60, progress=False)
    n_jobs = len(vertex.vertex.jobs)
    again = df.gembatch.submit("text")
    assert again.run_id == first.run_id and again.notice
    assert len(vertex.vertex.jobs) == n_jobs
    assert gbm.backend_info().kind == "vertex"
