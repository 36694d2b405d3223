"""``%%gembatch --table`` and ``gembatch submit-table``: the same submit_table() through a
real IPython shell and the CLI's own main(), against the test bed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.testing.globalipapp import start_ipython

import gemini_batch_magic as gbm
from gemini_batch_magic import _runs, cli

from .conftest import bigquery_client


@pytest.fixture
def ip(vertex) -> Iterator[InteractiveShell]:
    shell = start_ipython() or InteractiveShell.instance()
    shell.run_line_magic("load_ext", "gemini_batch_magic")
    yield shell
    shell.run_line_magic("unload_ext", "gemini_batch_magic")
    shell.config.pop("GemBatch", None)
    for name in ("t", "res"):
        shell.user_ns.pop(name, None)


def _raw(vertex, dataset: str) -> str:
    from google.cloud import bigquery

    client = bigquery_client()
    client.create_dataset(dataset, exists_ok=True)
    table = f"{vertex.project}.{dataset}.raw"
    client.create_table(bigquery.Table(table, schema=[
        bigquery.SchemaField("id", "INT64"), bigquery.SchemaField("text", "STRING")]),
        exists_ok=True)
    assert client.insert_rows_json(table, [{"id": i, "text": f"t{i}"} for i in (3, 1, 2)]) == []
    return table


def test_cell_magic_table_run(ip, vertex) -> None:
    raw = _raw(vertex, "mg_cell")
    ds = raw.rsplit(".", 1)[0]
    ip.run_cell_magic("gembatch", f"t --table bq://{raw} --key id --dest bq://{ds}.out "
                      "--backend vertex", "Say {text}")
    t = ip.user_ns["t"]
    assert isinstance(t, gbm.TableRun) and t.record.n_requests == 3
    ip.run_cell_magic("gembatch", f"res --table bq://{raw} --key id --dest bq://{ds}.out2 "
                      "--wait", "Say {text}")
    res = ip.user_ns["res"]
    assert sorted(res.index) == ["1", "2", "3"] and res.loc["2", "response"] == "Say t2"
    ip.run_line_magic("gembatch", "wait t")
    assert t.refresh().state == "SUCCEEDED"


def test_wait_all_follows_a_live_table_run_as_a_table_run(ip, vertex,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    raw = _raw(vertex, "mg_waitall")
    ds = raw.rsplit(".", 1)[0]
    vertex.vertex.inject("HOLD")
    t = gbm.submit_table(f"bq://{raw}", template="{text}", key="id", dest=f"bq://{ds}.out")
    live = _runs.live_runs()
    assert [type(r) for r in live if r.run_id == t.run_id] == [gbm.TableRun]
    vertex.vertex.release()
    capsys.readouterr()
    ip.run_line_magic("gembatch", "wait --all --timeout 60")
    line = next(x for x in capsys.readouterr().out.splitlines() if t.run_id in x)
    assert "SUCCEEDED" in line and "3/3 answered" in line and "3 ok" in line


def test_cell_magic_table_refusals(ip, vertex) -> None:
    raw = _raw(vertex, "mg_refuse")
    ds = raw.rsplit(".", 1)[0]
    before = len(vertex.vertex.jobs)
    with pytest.raises(UsageError, match="--yes"):
        gbm.configure(confirm_above=1e-12)
        ip.run_cell_magic("gembatch", f"t --table bq://{raw} --key id --dest bq://{ds}.o",
                          "{text}")
    with pytest.raises(UsageError, match=r"max_cost|exceeds|limit"):
        ip.run_cell_magic("gembatch", f"t --table bq://{raw} --key id --dest bq://{ds}.o "
                          "--yes --max-cost 0.0000000001", "{text}")
    with pytest.raises(UsageError, match=r"--dest .*--table"):
        ip.run_cell_magic("gembatch", f"t --dest bq://{ds}.o", "{text}")
    assert len(vertex.vertex.jobs) == before
    gbm.configure(confirm_above=5.0)


def test_cli_submit_table(vertex, capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    raw = _raw(vertex, "cli_tab")
    ds = raw.rsplit(".", 1)[0]
    gbm.configure(confirm_above=1e-12)
    args = ["submit-table", f"bq://{raw}", "--template", "Hi {text}", "--key", "id",
            "--dest", f"bq://{ds}.out", "--backend", "vertex"]
    assert cli.main(args) == 2
    assert "--yes" in capsys.readouterr().err
    out = tmp_path / "out.csv"
    assert cli.main([*args, "--yes", "--wait", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    run_id = lines[0].split("\t")[0]
    assert lines[1].split("\t")[1] == "SUCCEEDED" and "wrote 3 rows" in lines[-1]
    assert "Hi t3" in out.read_text()
    assert cli.main(["status", run_id]) == 0
    assert "SUCCEEDED" in capsys.readouterr().out
    gbm.configure(confirm_above=5.0)
