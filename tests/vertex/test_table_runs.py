"""Table runs as first-class runs: retry (BigQuery and Cloud Storage), merged counts,
widget and monitor, cancel, raw JSONL."""

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
    assert t.stats == (8, 4, 4, 0)  # never processed rows count as failed: a retry sends them
    child = t.retry_failed()
    assert child is not None and child.parent_id == t.run_id and child.n_rows == 4
    job = _jobs_of(vertex, child.run_id)[0]
    assert job.body["inputConfig"]["bigquerySource"]["inputUri"].endswith(
        "out_gembatch_requests_retry1")
    child.wait(timeout=60)
    assert child.state == "SUCCEEDED"
    # the child's end merged it: the parent counts the merged answers, no result() needed
    assert t.stats == (8, 8, 0, 0) and gbm.attach(t.run_id).stats == (8, 8, 0, 0)
    assert "8/8 answered (0 failed)" in repr(t)
    assert t.state == "PARTIALLY_SUCCEEDED"  # the state stays the job's own
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
    # without a template, every request must carry its key label (answers match by it)
    request = {"contents": [{"role": "user", "parts": [{"text": "a"}]}]}
    bucket.blob("bad/raw.jsonl").upload_from_string(
        json.dumps({"request": {**request, "labels": {"gembatch_key": "a"}}}) + "\n"
        + json.dumps({"request": request}) + "\n")
    with pytest.raises(gbm.InputError, match=r"line 2 of gs://.*bad/raw.jsonl has no "
                                             r"request.labels.gembatch_key"):
        gbm.submit_table(f"gs://{vertex.bucket}/bad/raw.jsonl")
    bucket.blob("bad/twice.jsonl").upload_from_string(
        2 * (json.dumps({"request": {**request, "labels": {"gembatch_key": "a"}}}) + "\n"))
    with pytest.raises(gbm.InputError, match="'a' appears twice"):
        gbm.submit_table(f"gs://{vertex.bucket}/bad/twice.jsonl")
    bucket.blob("bad/plain.jsonl").upload_from_string('{"text": "no request"}\n')
    with pytest.raises(gbm.InputError, match=r'no "request" object.*template='):
        gbm.submit_table(f"gs://{vertex.bucket}/bad/plain.jsonl")


def test_failed_table_run_reads_empty_and_retries_every_row(vertex) -> None:
    raw = _table(vertex, "failed", n=5)
    project, dataset, _ = raw.split(".")
    vertex.vertex.inject("FAILED")
    t = gbm.submit_table(f"bq://{raw}", template="Q: {text}", key="id",
                         dest=f"bq://{project}.{dataset}.out")
    t.wait(timeout=60)
    assert t.state == "FAILED" and "Injected failure" in (t.error or "")
    assert t.stats == (5, 0, 5, 0)
    assert t.result(limit=None).empty  # the job wrote no table: nothing answered, no 404
    child = t.retry_failed()
    assert child is not None and child.n_rows == 5
    child.wait(timeout=60)
    out = t.result(limit=None)
    assert sorted(int(k) for k in out.index) == [1, 2, 5, 7, 8]
    assert out["error"].isna().all() and t.stats == (5, 5, 0, 0)


def _jsonl(vertex, folder: str, fail: str | None = None) -> str:
    """Two objects of three JSON lines each, keys not in line order."""
    bucket = storage_client().bucket(vertex.bucket)
    keys = iter(["k5", "k2", "k6", "k1", "k4", "k3"])
    for part in range(2):
        lines = ""
        for _ in range(3):
            k = next(keys)
            lines += json.dumps({"sku": k, "title": "[[fail]] x" if k == fail else
                                 f"lamp {k}"}) + "\n"
        bucket.blob(f"{folder}/part-{part}.jsonl").upload_from_string(lines)
    return f"gs://{vertex.bucket}/{folder}/*.jsonl"


def _lines(uri: str) -> list[dict]:
    bucket, _, name = uri.removeprefix("gs://").partition("/")
    text = storage_client().bucket(bucket).blob(name).download_as_bytes().decode()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_cloud_storage_partial_then_retries_merge_the_answers(vertex) -> None:
    source = _jsonl(vertex, "gsretry", fail="k2")
    dest = f"gs://{vertex.bucket}/gsretry-out/"
    vertex.vertex.inject("PARTIALLY_SUCCEEDED")
    t = gbm.submit_table(source, template="Name {title}", key="sku", dest=dest)
    t.wait(timeout=60)
    assert t.state == "PARTIALLY_SUCCEEDED" and t.table is None
    first = t.result(limit=None)
    assert sorted(first.index) == ["k2", "k5", "k6"]  # the first half; k2's prompt fails
    assert first["error"].notna().sum() == 1
    assert t.stats == (6, 2, 4, 0)

    child = t.retry_failed()
    assert child is not None and child.parent_id == t.run_id and child.n_rows == 4
    job = _jobs_of(vertex, child.run_id)[0]
    staged = job.body["inputConfig"]["gcsSource"]["uris"][0]
    assert staged == f"gs://{vertex.bucket}/gsretry-out_gembatch_requests_retry1.jsonl"
    assert sorted(line["request"]["labels"]["gembatch_key"] for line in _lines(staged)) == [
        "k1", "k2", "k3", "k4"]  # the failed row and the three never processed
    assert child.dest == f"gs://{vertex.bucket}/gsretry-out_retry1/"
    child.wait(timeout=60)
    assert child.state == "SUCCEEDED"
    assert t.stats == (6, 5, 1, 0)  # merged when the child ended
    merged = f"gs://{vertex.bucket}/gsretry-out_merged/"
    assert t.results_uri == merged
    assert len(_lines(merged + "predictions.jsonl")) == 6
    out = t.result(limit=None)
    assert out.index.name == "sku" and sorted(out.index) == ["k1", "k2", "k3", "k4", "k5",
                                                              "k6"]
    ok = out["error"].isna()
    assert list(out.index[~ok]) == ["k2"] and "Bad Request" in out.loc["k2", "error"]
    assert all(out.loc[k, "response"] == f"Name lamp {k}" for k in out.index[ok])
    assert len(t.result(limit=4)) == 4
    assert gbm.attach(t.run_id).to_dataframe().equals(out)  # a fresh object reads the same

    # the row that still fails is sent again, alone, from the merged answers; no duplicates
    again = t.retry_failed()
    assert again is not None and again.n_rows == 1
    assert again.dest == f"gs://{vertex.bucket}/gsretry-out_retry2/"
    again.wait(timeout=60)
    assert t.stats == (6, 5, 1, 0) and len(_lines(merged + "predictions.jsonl")) == 6
    assert sorted(t.to_dataframe().index) == sorted(out.index)
    assert [c.run_id for c in t.children()] == [child.run_id, again.run_id]
    third = again.retry_failed()  # a retry's retry is the root's next one
    assert third is not None and third.parent_id == t.run_id and third.n_rows == 1
    third.wait(timeout=60)


def test_cloud_storage_raw_requests_retry(vertex) -> None:
    bucket = storage_client().bucket(vertex.bucket)
    lines = "".join(json.dumps({"request": {
        "contents": [{"role": "user", "parts": [{"text": f"raw {i}"}]}],
        "labels": {"gembatch_key": f"r{i}"}}}) + "\n" for i in (4, 1, 3, 2))
    bucket.blob("rawretry/in.jsonl").upload_from_string(lines)
    vertex.vertex.inject("PARTIALLY_SUCCEEDED")
    t = gbm.submit_table(f"gs://{vertex.bucket}/rawretry/*.jsonl")
    assert t.n_rows == 4  # counted at submission (the estimate and max_cost need it)
    t.wait(timeout=60)
    assert t.stats == (4, 2, 2, 0)
    child = t.retry_failed()
    assert child is not None and child.n_rows == 2
    child.wait(timeout=60)
    out = t.to_dataframe()
    assert sorted(out.index) == ["r1", "r2", "r3", "r4"] and out["error"].isna().all()
    assert all(out.loc[k, "response"] == f"raw {k[1:]}" for k in out.index)
    assert t.stats == (4, 4, 0, 0)


@pytest.mark.parametrize("created", [False, True], ids=["no-job", "job-not-recorded"])
def test_cancel_of_a_half_submitted_table_run(vertex, monkeypatch, created: bool) -> None:
    from gemini_batch_magic import _backend

    raw = _table(vertex, f"halfcancel{int(created)}", n=3)
    project, dataset, _ = raw.split(".")
    vertex.vertex.inject("HOLD")
    real = _backend.create_batch

    def lost(*args, **kwargs):
        if created:
            real(*args, **kwargs)  # the job exists; the answer to its create is lost
        err = gbm.BackendError("the connection broke", code=503)
        err.retryable = True  # transient: refresh()/wait() would finish it, by label
        raise err

    monkeypatch.setattr(_backend, "create_batch", lost)
    with pytest.raises(gbm.BackendError, match="connection broke"):
        gbm.submit_table(f"bq://{raw}", template="{text}", key="id",
                         dest=f"bq://{project}.{dataset}.out")
    monkeypatch.setattr(_backend, "create_batch", real)
    t = gbm.attach(str(gbm.runs()["run_id"].iloc[0]))
    assert isinstance(t, gbm.TableRun) and t.state == "SUBMITTING"
    t.cancel()
    jobs = _jobs_of(vertex, t.run_id)
    assert len(jobs) == (1 if created else 0)
    t.wait(timeout=60)
    assert t.state == "CANCELLED"
    assert t.refresh().batch_names == [j.name for j in jobs]  # nothing was created after
    assert len(_jobs_of(vertex, t.run_id)) == (1 if created else 0)
    if created:
        assert jobs[0].state == "CANCELLED"
    else:
        assert "before its job was created" in (t.error or "")
