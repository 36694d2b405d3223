"""Tables in, tables out: prompts built in BigQuery, the job reads and writes BigQuery."""

from __future__ import annotations

import json
import random

import pytest

import gemini_batch_magic as gbm

from .conftest import bigquery_client, storage_client


@pytest.fixture
def raw_table(vertex, request: pytest.FixtureRequest) -> str:
    from google.cloud import bigquery

    client = bigquery_client()
    dataset = f"ds_{request.node.name[-20:].strip('_').lower()}".replace("[", "_").replace(
        "]", "_").replace("-", "_")
    client.create_dataset(dataset, exists_ok=True)
    table = f"{vertex.project}.{dataset}.raw"
    client.create_table(bigquery.Table(table, schema=[
        bigquery.SchemaField("id", "INT64"), bigquery.SchemaField("text", "STRING"),
        bigquery.SchemaField("lang", "STRING")]), exists_ok=True)
    ids = list(range(1, 9))
    random.Random(3).shuffle(ids)  # the key column is not in row order
    rows = [{"id": i, "text": f'review "{i}"\nline two', "lang": "en" if i % 2 else "fr"}
            for i in ids]
    rows[2]["text"] = "[[fail]] this one fails"
    assert client.insert_rows_json(table, rows) == []  # streaming inserts (no load jobs)
    return table


def test_table_to_table(vertex, raw_table: str) -> None:
    project, dataset, _ = raw_table.split(".")
    dest = f"bq://{project}.{dataset}.summaries"
    est_calls = len(vertex.vertex.calls)
    t = gbm.submit_table(f"bq://{raw_table}", template="Summarise in {lang}: {text}",
                         key="id", dest=dest)
    assert isinstance(t, gbm.TableRun)
    assert t.table == f"{project}.{dataset}.summaries"
    assert t.estimated_cost is not None and t.record.n_requests == 8
    t.wait(timeout=60)
    assert t.state == "SUCCEEDED"
    job = next(j for j in vertex.vertex.jobs.values()
               if (j.body.get("labels") or {}).get("gembatch_run") == t.run_id)
    assert job.body["inputConfig"]["bigquerySource"]["inputUri"].endswith(
        "summaries_gembatch_requests")
    assert job.body["outputConfig"]["bigqueryDestination"]["outputUri"] == dest
    assert len(vertex.vertex.calls) > est_calls
    out = t.result(limit=100)
    assert len(out) == 8 and out.index.name == "id"
    src = {r["id"]: r for r in bigquery_client().list_rows(raw_table)}
    for key, row in out.iterrows():
        original = src[int(key)]
        if original["text"].startswith("[[fail]]"):
            assert "Bad Request" in row["error"]
        else:
            assert row["response"] == f"Summarise in {original['lang']}: {original['text']}"
    assert len(t.result(limit=3)) == 3
    # the same again is the same run; attach() gives it back
    assert gbm.submit_table(f"bq://{raw_table}", template="Summarise in {lang}: {text}",
                            key="id", dest=dest).run_id == t.run_id
    assert isinstance(gbm.attach(t.run_id), gbm.TableRun)
    assert t.run_id in set(gbm.runs()["run_id"])


def test_query_source_and_column_errors(vertex, raw_table: str) -> None:
    project, dataset, _ = raw_table.split(".")
    with pytest.raises(gbm.ColumnError, match=r"'body'.*id, text, lang"):
        gbm.submit_table(f"bq://{raw_table}", template="{body}", key="id",
                         dest=f"bq://{project}.{dataset}.x")
    t = gbm.submit_table(f"SELECT id, text FROM `{raw_table}` WHERE id > 4",
                         template="Q: {text}", key="id", dest=f"bq://{project}.{dataset}.q")
    t.wait(timeout=60)
    out = t.to_dataframe()
    assert sorted(int(k) for k in out.index) == [5, 6, 7, 8]


def test_cost_cap_refuses_before_the_job(vertex, raw_table: str) -> None:
    project, dataset, _ = raw_table.split(".")
    before = len(vertex.vertex.jobs)
    with pytest.raises(gbm.CostLimitError):
        gbm.submit_table(f"bq://{raw_table}", template="{text}", key="id",
                         dest=f"bq://{project}.{dataset}.capped", max_cost=1e-12)
    assert len(vertex.vertex.jobs) == before


def test_cloud_storage_jsonl(vertex) -> None:
    bucket = storage_client().bucket(vertex.bucket)
    for part in range(2):
        lines = "".join(json.dumps({"request": {
            "contents": [{"role": "user", "parts": [{"text": f"p{part}-{i}"}]}],
            "labels": {"gembatch_key": f"k{part}-{i}"}}}) + "\n" for i in range(3))
        bucket.blob(f"inputs/part-{part}.jsonl").upload_from_string(lines)
    source = f"gs://{vertex.bucket}/inputs/*.jsonl"
    before = len(vertex.vertex.jobs)
    with pytest.raises(gbm.CostLimitError):  # counted and sized before any job
        gbm.submit_table(source, max_cost=1e-12)
    assert len(vertex.vertex.jobs) == before
    t = gbm.submit_table(source)
    assert t.dest.startswith(vertex.staging) and t.table is None
    assert t.n_rows == 6 and t.estimated_cost is not None
    t.wait(timeout=60)
    assert t.stats == (6, 6, 0, 0)
    out = t.to_dataframe()
    assert len(out) == 6
    assert out.loc["k1-2", "response"] == "p1-2"
