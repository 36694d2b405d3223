"""Table runs as first-class runs: retry, widget and monitor, resume, raw JSONL."""

from __future__ import annotations

import json

import pytest

import gemini_batch_magic as gbm

from .conftest import bigquery_client, storage_client


def _table(vertex, name: str, n: int = 8, fail: int | None = None) -> str:
    from google.cloud import bigquery

    client = bigquery_client()
    dataset = f"tr_{name}"
    client.create_dataset(dataset, exists_ok=True)
    table = f"{vertex.project}.{dataset}.raw"
    client.create_table(bigquery.Table(table, schema=[
        bigquery.SchemaField("id", "INT64"), bigquery.SchemaField("text", "STRING")]),
        exists_ok=True)
    rows = [{"id": i, "text": "[[fail]] no" if i == fail else f"row {i}"}
            for i in (5, 2, 8, 1, 7, 3, 6, 4)[:n]]
    assert client.insert_rows_json(table, rows) == []
    return table


def _jobs_of(vertex, run_id: str) -> list:
    return [j for j in vertex.vertex.jobs.values()
            if (j.body.get("labels") or {}).get("gembatch_run") == run_id]


def test_partial_then_retry_answers_every_row(vertex) -> None:
    raw = _table(vertex, "retry")
    project, dataset, _ = raw.split(".")
    vertex.vertex.inject("PARTIALLY_SUCCEEDED")
    t = gbm.submit_table(f"bq://{raw}", template="Q: {text}", key="id",
                         dest=f"bq://{project}.{dataset}.out")
    t.wait(timeout=60)
    assert t.state == "PARTIALLY_SUCCEEDED"
    assert len(t.result(limit=None)) == 4  # the other half was never processed
    child = t.retry_failed()
    assert child is not None and child.parent_id == t.run_id and child.n_rows == 4
    job = _jobs_of(vertex, child.run_id)[0]
    assert job.body["inputConfig"]["bigquerySource"]["inputUri"].endswith(
        "out_gembatch_requests_retry1")
    child.wait(timeout=60)
    assert child.state == "SUCCEEDED"
    assert t.table == f"{project}.{dataset}.out_merged"
    out = t.result(limit=None)
    assert sorted(int(k) for k in out.index) == list(range(1, 9))
    assert out["error"].isna().all()
    assert all(out.loc[k, "response"] == f"Q: row {k}" for k in out.index)
    merged = list(bigquery_client().list_rows(t.table))
    assert len(merged) == 8 and all(r["response"] for r in merged)
    assert t.retry_failed() is None  # nothing left to retry
    assert [c.run_id for c in t.children()] == [child.run_id]


def test_table_run_is_a_run_view_and_monitored(vertex) -> None:
    from gemini_batch_magic import widgets
    from gemini_batch_magic._monitor import monitor

    raw = _table(vertex, "widget", n=3)
    project, dataset, _ = raw.split(".")
    t = gbm.submit_table(f"bq://{raw}", template="{text}", key="id",
                         dest=f"bq://{project}.{dataset}.out")
    view: widgets.RunView = t  # the views' surface, checked by mypy too
    for name in ("run_id", "state", "done", "stats", "error", "notice", "elapsed", "model",
                 "display_name", "batch_names", "shards", "n_rows"):
        getattr(view, name)
    seen: list[str] = []
    t.watch(lambda run, err: seen.append(run.state))
    t.wait(timeout=60)
    assert monitor.wait_idle(timeout=30)  # its callbacks have seen the final state
    assert seen and seen[-1] == "SUCCEEDED"  # the monitor followed it
    w = t.widget()
    assert w.run_id == t.run_id and w.state == "SUCCEEDED" and w.failed == 0
    assert w.preview["columns"][0] == "id" and len(w.preview["rows"]) == 3
    bundle = t._repr_mimebundle_()
    assert "text/plain" in bundle and t.run_id in bundle["text/plain"]
    assert "SUCCEEDED" in widgets.summary_line(t)
    t.unwatch()
    assert t.run_id not in monitor.watched_runs()


def test_raw_jsonl_with_a_template(vertex) -> None:
    bucket = storage_client().bucket(vertex.bucket)
    for part in range(2):
        lines = "".join(json.dumps({"sku": f"s{part}-{i}", "title": f"Lamp {part}.{i}",
                                    "n": i}) + "\n" for i in range(3))
        bucket.blob(f"raw/part-{part}.jsonl").upload_from_string(lines)
    bucket.blob("raw/notes.txt").upload_from_string("not matched")
    t = gbm.submit_table(f"gs://{vertex.bucket}/raw/*.jsonl", template="Name {title} #{n}",
                         key="sku")
    assert t.record.n_requests == 6 and t.estimated_cost is not None
    t.wait(timeout=60)
    out = t.to_dataframe()
    assert out.index.name == "sku" and len(out) == 6
    assert out.loc["s1-2", "response"] == "Name Lamp 1.2 #2"
    # without key=, rows are keyed by line number
    u = gbm.submit_table(f"gs://{vertex.bucket}/raw/part-0.jsonl", template="{title}")
    u.wait(timeout=60)
    assert u.to_dataframe().loc["2", "response"] == "Lamp 0.2"


def test_raw_jsonl_errors_name_the_line(vertex) -> None:
    bucket = storage_client().bucket(vertex.bucket)
    bucket.blob("bad/a.jsonl").upload_from_string('{"id": "x1", "t": "a"}\n{"id": "x2"}\n')
    with pytest.raises(gbm.ColumnError, match=r"field 't'.*line 2 of gs://.*bad/a.jsonl"):
        gbm.submit_table(f"gs://{vertex.bucket}/bad/*.jsonl", template="{t}", key="id")
    bucket.blob("bad/b.jsonl").upload_from_string('{"id": "Has Space", "t": "a"}\n')
    with pytest.raises(gbm.InputError, match=r"'Has Space'.*lowercase"):
        gbm.submit_table(f"gs://{vertex.bucket}/bad/b.jsonl", template="{t}", key="id")
    with pytest.raises(gbm.InputError, match="no object"):
        gbm.submit_table(f"gs://{vertex.bucket}/nothing/*.jsonl", template="{t}")
