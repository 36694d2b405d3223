"""Runs over files (gemini_batch_magic._files): real SDK, real local emulator, real registry.

The emulator echoes each prompt, so a row's answer names its prompt: every check of
alignment below compares answers with the prompts the rows were built from.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import gemini_batch_magic as gbm
from gemini_batch_magic import _files
from gemini_batch_magic._config import settings
from gemini_batch_magic._state import state

TEMPLATE = "Classify: {body}"


def _tickets(n: int, start: int = 0, seed: int = 0) -> pd.DataFrame:
    """Rows with unsorted string keys and a body that names its row."""
    ids = np.random.default_rng(seed).permutation(np.arange(start, start + n))
    return pd.DataFrame({"ticket_id": [f"T{i:06d}" for i in ids],
                         "body": [f"body of T{i:06d} ✓ \"q\" \\ é" for i in ids],
                         "n": np.arange(n)})


def _expected(df: pd.DataFrame) -> list[str]:
    return [TEMPLATE.format(body=b) for b in df["body"]]


def _sent(emu: Any) -> list[tuple[str, str]]:
    return [(m, p) for m, p in emu.calls if not (m == "GET" and "/models" in p)]


def _small_shards(requests: int = 7) -> None:
    settings.inline_limit_bytes = 100  # file batches
    settings.max_requests_per_shard = requests


# ------------------------------------------------------------------ formats
def test_parquet_with_shuffled_row_groups_comes_back_aligned(emu: Any, tmp_path: Path) -> None:
    _small_shards()
    df = _tickets(50)
    table = pa.Table.from_pandas(df, preserve_index=False)
    path = tmp_path / "tickets.parquet"
    with pq.ParquetWriter(path, table.schema) as w:  # row groups written out of order
        for start in (30, 0, 40, 10, 20):
            w.write_table(table.slice(start, 10))
    order = pd.concat([df.iloc[s:s + 10] for s in (30, 0, 40, 10, 20)], ignore_index=True)
    run = gbm.submit_file(path, template=TEMPLATE, key="ticket_id", batch_rows=8)
    assert len(run.shards) == 8 and run.n_rows == 50
    run.wait(progress=False)
    out = tmp_path / "answers.parquet"
    assert run.write_results(out) == 50
    got = pd.read_parquet(out)
    assert got["ticket_id"].tolist() == order["ticket_id"].tolist()
    assert got["response"].tolist() == _expected(order)
    assert got["error"].isna().all()
    assert list(got.columns[:3]) == ["ticket_id", "response", "error"]


def test_csv_file(emu: Any, tmp_path: Path) -> None:
    df = _tickets(12)
    df.to_csv(tmp_path / "t.csv", index=False)
    run = gbm.submit_file(tmp_path / "t.csv", template=TEMPLATE, key="ticket_id").wait(
        progress=False)
    out = run.result()
    assert out.index.tolist() == df["ticket_id"].tolist() and out.index.name == "ticket_id"
    assert out["response"].tolist() == _expected(df)


def test_jsonl_file_with_a_prompt_column_and_no_key(emu: Any, tmp_path: Path) -> None:
    df = _tickets(9)
    df.to_json(tmp_path / "t.jsonl", orient="records", lines=True, force_ascii=False)
    run = gbm.submit_file(str(tmp_path / "t.jsonl"), "body").wait(progress=False)
    run.write_results(tmp_path / "a.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert [r["row"] for r in rows] == list(range(9))
    assert [r["response"] for r in rows] == df["body"].tolist()
    assert run.result().index.equals(pd.RangeIndex(9))


def test_a_glob_of_several_files_in_sorted_order(emu: Any, tmp_path: Path) -> None:
    _small_shards(5)
    parts = [_tickets(6, start=100 * i, seed=i) for i in range(3)]
    for i, part in enumerate(parts):  # written in another order than their names sort
        part.to_parquet(tmp_path / f"part-{2 - i}.parquet")
    run = gbm.submit_file(str(tmp_path / "part-*.parquet"), template=TEMPLATE,
                          key="ticket_id", batch_rows=4)
    run.wait(progress=False)
    whole = pd.concat(parts[::-1], ignore_index=True)
    out = run.result()
    assert out.index.tolist() == whole["ticket_id"].tolist()
    assert out["response"].tolist() == _expected(whole)
    assert run.record.config["files"] == [str(tmp_path / f"part-{i}.parquet") for i in range(3)]
    # a directory reads the same files, in the same order
    assert gbm.estimate_file(tmp_path, template=TEMPLATE, key="ticket_id").requests == 18


def test_files_must_share_the_columns_used(emu: Any, tmp_path: Path) -> None:
    _tickets(3).to_parquet(tmp_path / "a.parquet")
    _tickets(3, start=10).rename(columns={"body": "text"}).to_parquet(tmp_path / "b.parquet")
    with pytest.raises(gbm.ColumnError) as err:
        gbm.submit_file(tmp_path / "*.parquet", template=TEMPLATE, key="ticket_id")
    assert "b.parquet" in str(err.value) and "'body'" in str(err.value)
    assert _sent(emu) == [] and len(gbm.runs()) == 0


# ------------------------------------------------------------------ bad input
def test_duplicate_keys_across_files_are_refused_before_sending(emu: Any, tmp_path: Path
                                                                  ) -> None:
    a, b = _tickets(20), _tickets(20, start=1000)
    b.loc[13, "ticket_id"] = a.loc[4, "ticket_id"]
    a.to_parquet(tmp_path / "a.parquet")
    b.to_csv(tmp_path / "b.csv", index=False)
    with pytest.raises(gbm.DuplicateKeyError) as err:
        gbm.submit_file([tmp_path / "a.parquet", tmp_path / "b.csv"], template=TEMPLATE,
                        key="ticket_id", batch_rows=6)
    exc = err.value
    assert exc.key == a.loc[4, "ticket_id"]
    assert exc.rows == [(str(tmp_path / "a.parquet"), 4), (str(tmp_path / "b.csv"), 13)]
    assert "row 4 of" in str(exc) and "row 13 of" in str(exc) and repr(exc.key) in str(exc)
    assert _sent(emu) == [] and emu.batches() == []
    assert len(gbm.runs()) == 0
    assert not any((settings.home / "tmp").iterdir())  # the scratch files are gone


def test_a_hash_collision_never_refuses_good_keys(emu: Any, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    df = _tickets(10)
    df.to_parquet(tmp_path / "t.parquet")
    monkeypatch.setattr(_files, "_key_hashes",
                        lambda values: np.full(len(values), 7, dtype=np.uint64))
    est = gbm.estimate_file(tmp_path / "t.parquet", template=TEMPLATE, key="ticket_id")
    assert est.requests == 10  # every key hashes alike, yet no two are equal


def test_a_missing_key_names_its_row(emu: Any, tmp_path: Path) -> None:
    df = _tickets(10)
    df.loc[7, "ticket_id"] = None
    df.to_parquet(tmp_path / "t.parquet")
    with pytest.raises(gbm.InputError) as err:
        gbm.submit_file(tmp_path / "t.parquet", template=TEMPLATE, key="ticket_id")
    assert err.value.rows == [(str(tmp_path / "t.parquet"), 7)]
    assert "row 7 of" in str(err.value) and "key=None" in str(err.value)
    assert _sent(emu) == [] and len(gbm.runs()) == 0


def test_an_empty_prompt_names_its_row_or_is_skipped(emu: Any, tmp_path: Path) -> None:
    df = _tickets(10)
    df.loc[[2, 8], "body"] = ["   ", None]
    df.to_parquet(tmp_path / "t.parquet")
    with pytest.raises(gbm.EmptyPromptError) as err:
        gbm.submit_file(tmp_path / "t.parquet", "body", key="ticket_id", batch_rows=5)
    assert err.value.rows == [(str(tmp_path / "t.parquet"), 2)]
    assert "row 2" in str(err.value) and "on_empty='skip'" in str(err.value)
    assert _sent(emu) == [] and len(gbm.runs()) == 0

    _small_shards(3)
    run = gbm.submit_file(tmp_path / "t.parquet", "body", key="ticket_id", batch_rows=5,
                          on_empty="skip").wait(progress=False)
    assert run.n_rows == 8 and run.record.n_rows == 10
    run.write_results(tmp_path / "a.csv")
    got = pd.read_csv(tmp_path / "a.csv")
    assert got["ticket_id"].tolist() == df["ticket_id"].tolist()
    assert got["error"].notna().tolist() == [i in (2, 8) for i in range(10)]
    assert got.loc[[2, 8], "error"].str.contains("skipped").all()
    ok = [i for i in range(10) if i not in (2, 8)]
    assert got.loc[ok, "response"].tolist() == df.loc[ok, "body"].tolist()
    assert run.result().loc[df.loc[8, "ticket_id"], "error"].startswith("skipped")


def test_a_missing_column_names_close_matches(emu: Any, tmp_path: Path) -> None:
    _tickets(3).to_parquet(tmp_path / "t.parquet")
    with pytest.raises(gbm.ColumnError) as err:
        gbm.submit_file(tmp_path / "t.parquet", template="Classify: {bdy}")
    assert "'body'" in str(err.value) and "t.parquet" in str(err.value)
    with pytest.raises(gbm.ColumnError, match="ticket_id"):
        gbm.submit_file(tmp_path / "t.parquet", "body", key="ticket")
    with pytest.raises(gbm.InputError, match="no file matches"):
        gbm.submit_file(tmp_path / "nothing-*.parquet", "body")
    with pytest.raises(gbm.InputError, match="does not exist"):
        gbm.submit_file(tmp_path / "gone.parquet", "body")
    with pytest.raises(TypeError, match="temperature"):
        gbm.submit_file(tmp_path / "t.parquet", "body", temperature=0.2)  # type: ignore[call-arg]
    assert _sent(emu) == []


# ------------------------------------------------------------------ results
@pytest.mark.parametrize("ext", ["parquet", "csv", "jsonl"])
def test_write_results_reads_back_like_result(emu: Any, tmp_path: Path, ext: str) -> None:
    _small_shards(4)
    df = _tickets(11)
    df.loc[5, "body"] = "this one [[fail]]s"
    df.to_parquet(tmp_path / "t.parquet")
    run = gbm.submit_file(tmp_path / "t.parquet", template=TEMPLATE, key="ticket_id")
    run.wait(progress=False)
    path = tmp_path / f"answers.{ext}"
    run.write_results(path)
    got = (pd.read_parquet(path) if ext == "parquet" else pd.read_csv(path) if ext == "csv"
           else pd.read_json(path, lines=True))
    want = run.result().reset_index()
    assert got.columns.tolist() == want.columns.tolist()
    assert got["ticket_id"].tolist() == want["ticket_id"].tolist()
    assert got["response"].fillna("-").tolist() == want["response"].fillna("-").tolist()
    assert got["error"].notna().tolist() == [i == 5 for i in range(11)]
    assert got["input_tokens"].fillna(-1).astype(int).tolist() == \
        want["input_tokens"].fillna(-1).astype(int).tolist()


@pytest.mark.parametrize("skip", [False, True])
def test_write_results_reads_the_answers_aligned_at_download(emu: Any, tmp_path: Path,
                                                             skip: bool) -> None:
    """Each shard's aligned answers are kept as parquet when they download; writing them
    out from those files gives what parsing the results files anew gives, byte for byte,
    and a file that no longer matches its results file is never read."""
    _small_shards(4)
    df = _tickets(11)
    df.loc[5, "body"] = "this one [[fail]]s"
    if skip:
        df.loc[6, "body"] = None  # a missing value: no prompt
    df.to_parquet(tmp_path / "t.parquet")
    run = gbm.submit_file(tmp_path / "t.parquet", template=TEMPLATE, key="ticket_id",
                          on_empty="skip" if skip else "raise").wait(progress=False)
    folder = run._book.run_dir()
    stored = sorted(folder.glob("answers-*.parquet"))
    assert [p.name for p in stored] == [f"answers-{s.shard:04d}.parquet" for s in run.shards]
    run.write_results(tmp_path / "a.parquet")
    for path in stored:
        path.unlink()
    state.reset()  # a fresh kernel: nothing cached in memory either
    again = gbm.attach(run.run_id)
    again.write_results(tmp_path / "b.parquet")  # parses the results files, stores anew
    assert pq.read_table(tmp_path / "a.parquet").equals(pq.read_table(tmp_path / "b.parquet"))
    assert sorted(folder.glob("answers-*.parquet")) == stored
    shard = again.record.shards[0]
    assert again._answers.stored(shard) is not None
    results = folder / str(shard.results_file)
    results.write_bytes(results.read_bytes() + b"\n")  # the results file changed
    assert again._answers.stored(shard) is None
    got = pd.read_parquet(tmp_path / "a.parquet")
    assert got["error"].notna().tolist() == [i in (5, 6) if skip else i == 5
                                             for i in range(11)]


def test_write_results_of_a_dataframe_run_and_before_the_end(emulator_factory: Any,
                                                             tmp_path: Path) -> None:
    emulator_factory(pending_seconds=60)
    df = pd.DataFrame({"p": ["a", "b", "c"]}, index=pd.Index(["x", "y", "z"], name="id"))
    run = df.gembatch.submit("p")
    with pytest.raises(gbm.RunNotDoneError):
        run.write_results(tmp_path / "a.parquet")
    assert not (tmp_path / "a.parquet").exists()
    with pytest.raises(gbm.ConfigError, match="format"):
        run.write_results(tmp_path / "a.xlsx")


def test_write_results_of_a_dataframe_run(emu: Any, tmp_path: Path) -> None:
    _small_shards(2)
    df = pd.DataFrame({"p": ["a", "b", "c", "d", "e"]},
                      index=pd.Index(["x", "y", "z", "w", "v"], name="id"))
    run = df.gembatch.submit("p").wait(progress=False)
    run.write_results(tmp_path / "a.parquet")
    got = pd.read_parquet(tmp_path / "a.parquet")
    assert got["id"].tolist() == list("xyzwv") and got["response"].tolist() == list("abcde")


def test_resubmitting_the_same_files_returns_the_run(emu: Any, tmp_path: Path) -> None:
    _tickets(5).to_parquet(tmp_path / "t.parquet")
    first = gbm.submit_file(tmp_path / "t.parquet", template=TEMPLATE, key="ticket_id")
    again = gbm.submit_file(tmp_path / "t.parquet", template=TEMPLATE, key="ticket_id")
    assert again.run_id == first.run_id and again.notice and len(emu.batches()) == 1
    other = gbm.submit_file(tmp_path / "t.parquet", template="Other: {body}", key="ticket_id")
    assert other.run_id != first.run_id
    forced = gbm.submit_file(tmp_path / "t.parquet", template=TEMPLATE, key="ticket_id",
                             force=True)
    assert forced.run_id not in (first.run_id, other.run_id)


def test_a_new_kernel_attaches_and_writes_the_results(emu: Any, tmp_path: Path) -> None:
    _small_shards(3)
    df = _tickets(10)
    df.to_parquet(tmp_path / "t.parquet")
    run_id = gbm.submit_file(tmp_path / "t.parquet", template=TEMPLATE,
                             key="ticket_id").run_id
    state.reset()  # what a restarted kernel has: the registry only
    run = gbm.attach(run_id).wait(progress=False)
    run.write_results(tmp_path / "a.parquet")
    got = pd.read_parquet(tmp_path / "a.parquet")
    assert got["ticket_id"].tolist() == df["ticket_id"].tolist()
    assert got["response"].tolist() == _expected(df)
    assert run.result().index.tolist() == df["ticket_id"].tolist()


def test_registry_keeps_keys_per_shard_not_a_pickled_index(emu: Any, tmp_path: Path) -> None:
    _small_shards(4)
    _tickets(10).to_parquet(tmp_path / "t.parquet")
    run = gbm.submit_file(tmp_path / "t.parquet", template=TEMPLATE, key="ticket_id")
    assert gbm._runs.registry().index_blob(run.run_id) is None
    folder = run._book.run_dir()
    keys = [pq.read_table(folder / f"keys-{s.shard:04d}.parquet") for s in run.shards]
    assert [len(k) for k in keys] == [4, 4, 2]


def test_retried_rows_are_merged_into_the_written_results(emulator_factory: Any,
                                                          tmp_path: Path) -> None:
    seen: set[str] = set()

    def flaky(request: dict[str, Any], model: str) -> dict[str, Any]:
        text = request["contents"][-1]["parts"][0]["text"]
        if "flaky" in text and text not in seen:
            seen.add(text)
            raise RuntimeError("simulated transient failure")
        return {"candidates": [{"content": {"role": "model", "parts": [{"text": text}]},
                                "finishReason": "STOP", "index": 0}],
                "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 1}}

    emulator_factory(responder=flaky)
    df = pd.DataFrame({"id": [5, 3, 9], "body": ["ok", "flaky one", "ok too"]})
    df.to_parquet(tmp_path / "t.parquet")
    run = gbm.submit_file(tmp_path / "t.parquet", "body", key="id").wait(progress=False)
    child = run.retry_failed()
    assert child is not None
    child.wait(progress=False)
    run.write_results(tmp_path / "a.parquet")
    got = pd.read_parquet(tmp_path / "a.parquet")
    assert got["id"].tolist() == [5, 3, 9] and got["error"].isna().all()
    assert got["response"].tolist() == ["ok", "flaky one", "ok too"]
    with pytest.raises(gbm.InputError, match="retry"):
        child.write_results(tmp_path / "b.parquet")


# ------------------------------------------------------------------ memory
@pytest.fixture
def emulator_process(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An emulator in a process of its own, so this process's memory is the client's."""
    from gemini_batch_magic import _backend

    proc = subprocess.Popen(
        [sys.executable, "-m", "gemini_batch_magic.emulator", "--pending-seconds", "0",
         "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", url)
        _backend.reset()
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()


def test_memory_is_bounded_by_a_shard_not_the_file(emulator_process: str, tmp_path: Path
                                                   ) -> None:
    """200,000 rows in 16 shards: neither the submit nor the write holds the whole input or
    the whole result (loosely: well under what 200,000 rows take; no timing)."""
    n = 200_000
    settings.max_requests_per_shard = 12_500
    settings.max_concurrent_shards = 1
    ids = np.random.default_rng(1).permutation(n)
    table = pa.table({"ticket_id": ids.astype(np.int64),
                      "body": pa.array([f"ticket {i} " + "x" * 180 for i in ids.tolist()])})
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=20_000)
    input_bytes = table.nbytes  # ~40 MB of prompts
    del table, ids
    warm = tmp_path / "warm.parquet"  # imports (the SDK's models) are not the run's memory
    pq.write_table(pa.table({"ticket_id": [1, 2], "body": ["a", "b"]}), warm)
    gbm.submit_file(warm, template="Classify: {body}", key="ticket_id").wait(progress=False)
    tracemalloc.start()
    try:
        run = gbm.submit_file(tmp_path / "t.parquet", template="Classify: {body}",
                              key="ticket_id", batch_rows=10_000, confirm=True)
        _, submit_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        run.wait(progress=False)
        tracemalloc.reset_peak()
        written = run.write_results(tmp_path / "a.parquet")
        _, write_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(run.shards) == 16 and written == n
    assert submit_peak < input_bytes / 2, (submit_peak, input_bytes)
    assert write_peak < input_bytes / 2, (write_peak, input_bytes)
    got = pq.read_table(tmp_path / "a.parquet", columns=["ticket_id", "response"])
    first = got.slice(0, 1).to_pylist()[0]
    assert first["response"] == f"Classify: ticket {first['ticket_id']} " + "x" * 180


def test_a_request_too_large_names_its_row(emu: Any, tmp_path: Path) -> None:
    settings.max_file_bytes = 2_000
    df = _tickets(30)
    df.loc[23, "body"] = "y" * 5_000
    df.to_parquet(tmp_path / "t.parquet")
    with pytest.raises(gbm.RequestTooLargeError) as err:
        gbm.submit_file(tmp_path / "t.parquet", template=TEMPLATE, key="ticket_id",
                        batch_rows=8)
    assert err.value.rows == [(str(tmp_path / "t.parquet"), 23)]
    assert "row 23 of" in str(err.value) and _sent(emu) == []
