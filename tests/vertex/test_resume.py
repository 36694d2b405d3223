"""Never two jobs: the ambiguous create (the emulator drops the answer to a create it has
persisted) and a half-submitted table run finished from another process, by label."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

import gemini_batch_magic as gbm
from gemini_batch_magic import _config

from .conftest import bigquery_client


def _jobs_of(vertex, run_id: str) -> list:
    return [j for j in vertex.vertex.jobs.values()
            if (j.body.get("labels") or {}).get("gembatch_run") == run_id]


def _raw(vertex, dataset: str) -> str:
    from google.cloud import bigquery

    client = bigquery_client()
    client.create_dataset(dataset, exists_ok=True)
    table = f"{vertex.project}.{dataset}.raw"
    client.create_table(bigquery.Table(table, schema=[
        bigquery.SchemaField("id", "INT64"), bigquery.SchemaField("text", "STRING")]),
        exists_ok=True)
    assert client.insert_rows_json(table, [{"id": i, "text": f"t{i}"} for i in (2, 3, 1)]) == []
    return table


def test_dropped_create_of_a_table_run_is_reconciled(vertex) -> None:
    raw = _raw(vertex, "rs_drop")
    ds = raw.rsplit(".", 1)[0]
    _config.configure(retry_initial_delay=0.01)
    vertex.vertex.set_drop_rate(1.0)  # every create is persisted, its answer lost
    t = gbm.submit_table(f"bq://{raw}", template="{text}", key="id", dest=f"bq://{ds}.out")
    vertex.vertex.set_drop_rate(0.0)
    assert len(_jobs_of(vertex, t.run_id)) == 1
    assert t.batch_names == [_jobs_of(vertex, t.run_id)[0].name]
    assert t.wait(timeout=60).state == "SUCCEEDED" and len(t.result()) == 3


def test_dropped_creates_of_a_dataframe_run_one_job_per_shard(vertex) -> None:
    _config.configure(max_requests_per_shard=2, retry_initial_delay=0.01)
    df = pd.DataFrame({"text": [f"p{i}" for i in range(5)]})
    vertex.vertex.set_drop_rate(1.0)
    run = df.gembatch.submit("text")
    run.wait(timeout=60, progress=False)
    vertex.vertex.set_drop_rate(0.0)
    jobs = _jobs_of(vertex, run.run_id)
    assert len(run.shards) == 3 and len(jobs) == 3
    assert sorted(j.name for j in jobs) == sorted(run.batch_names)
    assert list(run.result()["response"]) == list(df["text"])


def test_drop_rate_is_checked(vertex) -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        vertex.vertex.set_drop_rate(2.0)


_CRASH = """
import os, gemini_batch_magic as gbm
from gemini_batch_magic import _backend
gbm.configure(home={home!r}, backend="vertex", project={project!r}, location={location!r},
              staging={staging!r})
real = _backend.create_batch
def crash(*args, **kwargs):
    if {after!r}:
        real(*args, **kwargs)      # the job exists, the registry never hears of it
    os._exit(17)                   # the process dies here (a kill, an OOM, a closed laptop)
_backend.create_batch = crash
gbm.submit_table("bq://{raw}", template="{{text}}", key="id", dest="bq://{ds}.{out}")
"""


@pytest.mark.parametrize("after", [False, True], ids=["before-create", "after-create"])
def test_half_submitted_table_run_is_finished_by_attach(vertex, after: bool) -> None:
    raw = _raw(vertex, f"rs_half_{int(after)}")
    ds = raw.rsplit(".", 1)[0]
    script = textwrap.dedent(_CRASH.format(
        home=str(_config.settings.home), project=vertex.project, location=vertex.location,
        staging=vertex.staging, after=after, raw=raw, ds=ds, out="out"))
    env = {**os.environ, **vertex.env(), "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-c", script], env=env, timeout=120,
                          capture_output=True, text=True)
    assert proc.returncode == 17, proc.stderr
    runs = gbm.runs()
    run_id = str(runs["run_id"].iloc[0])
    assert len(_jobs_of(vertex, run_id)) == (1 if after else 0)  # the staging table is made
    t = gbm.attach(run_id)
    assert isinstance(t, gbm.TableRun) and t.state == "SUBMITTING" and not t.batch_names
    t.wait(timeout=60)
    assert t.state == "SUCCEEDED" and len(_jobs_of(vertex, run_id)) == 1
    assert t.batch_names == [_jobs_of(vertex, run_id)[0].name]
    assert sorted(t.result().index) == ["1", "2", "3"]
    assert gbm.attach(run_id).refresh().batch_names == t.batch_names  # nothing more made
