"""Embedding runs through the unmodified SDK and the emulator: aligned by key, vectors()."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pytest

import gemini_batch_magic as gbm
from gemini_batch_magic.emulator import _model


def test_ten_thousand_rows_come_back_aligned_by_key(emu: Any) -> None:
    n = 10_000
    rng = np.random.default_rng(11)
    texts = [f"document number {i % 6_000}" for i in range(n)]  # repeats: equal texts
    for i in (17, 4_321, 9_999):
        texts[i] = f"[[fail]] broken {i}"
    df = pd.DataFrame({"text": texts},
                      index=pd.Index([f"id-{j}" for j in rng.permutation(n)], name="id"))
    run = df.gembatch.embed("text", output_dimensionality=32, task_type="RETRIEVAL_DOCUMENT")
    assert run.record.source == "file"  # inline embedding batches carry no key
    out = run.wait(progress=False).result()
    assert out.index.equals(df.index)
    assert isinstance(out["embedding"].dtype, pd.ArrowDtype)
    assert out["embedding"].dtype.pyarrow_dtype == pa.list_(pa.float32(), 32)
    failed = out["error"].notna()
    assert failed.sum() == 3 and out["embedding"].isna().sum() == 3
    assert set(out.index[failed]) == {df.index[i] for i in (17, 4_321, 9_999)}
    assert out["error"][failed].str.contains("Simulated failure").all()
    X = run.vectors()
    assert X.shape == (n, 32) and X.dtype == np.float32
    assert np.isnan(X[failed.to_numpy()]).all() and not np.isnan(X[~failed.to_numpy()]).any()
    # each row's own vector (the emulator's is a pure function of the text) ...
    for i in rng.choice(n, 200, replace=False).tolist():
        if i in (17, 4_321, 9_999):
            continue
        expected = np.asarray(_model.embedding_values(texts[i], 32), dtype=np.float32)
        np.testing.assert_array_equal(X[i], expected)
    # ... so equal texts give equal vectors, and different texts different ones
    np.testing.assert_array_equal(X[5], X[6_005])
    assert not np.allclose(X[5], X[6])
    assert np.allclose(np.linalg.norm(X[~failed.to_numpy()], axis=1), 1.0, atol=1e-4)


def test_options_are_passed_through_and_priced_at_the_embedding_rate(emu: Any) -> None:
    df = pd.DataFrame({"text": ["alpha", "beta"], "head": ["Title A", None]},
                      index=["a", "b"])
    est = gbm.embed(df, "text", task_type="retrieval_document", title="head",
                    output_dimensionality=8, dry_run=True)
    assert est.model == "gemini-embedding-001" and est.output_tokens == 0
    assert est.mode == "file" and est.cost_usd is not None
    run = gbm.embed(df, "text", task_type="RETRIEVAL_DOCUMENT", title="head",
                    output_dimensionality=8)
    folder = gbm._runs.registry().run_dir(run.run_id)
    lines = [orjson.loads(x) for x in (folder / "requests-0000.jsonl").read_bytes().split(b"\n")
             if x]
    assert lines[0]["request"] == {"content": {"parts": [{"text": "alpha"}], "role": "user"},
                                   "taskType": "RETRIEVAL_DOCUMENT",
                                   "outputDimensionality": 8, "title": "Title A"}
    assert "title" not in lines[1]["request"]
    assert run.wait(progress=False).vectors().shape == (2, 8)
    assert any(":asyncBatchEmbedContent" in path for _, path in emu.calls)
    # dedupe: the same embedding run again is the same run
    again = gbm.embed(df, "text", task_type="RETRIEVAL_DOCUMENT", title="head",
                      output_dimensionality=8)
    assert again.run_id == run.run_id


def test_bad_embedding_options_are_refused(emu: Any) -> None:
    df = pd.DataFrame({"text": ["a"], "t": ["x"]})
    with pytest.raises(gbm.ConfigError, match="task_type"):
        gbm.embed(df, "text", task_type="SORTING")
    with pytest.raises(gbm.ConfigError, match="output_dimensionality"):
        gbm.embed(df, "text", output_dimensionality=0)
    with pytest.raises(gbm.ConfigError, match="RETRIEVAL_DOCUMENT"):
        gbm.embed(df, "text", title="t")
    with pytest.raises(gbm.ColumnError):
        gbm.embed(df, "nope")
    assert len(gbm.runs()) == 0


def test_failed_embeddings_are_retried_and_merged(emulator_factory: Any) -> None:
    emu = emulator_factory(fail_rate=0.3, seed=4)
    df = pd.DataFrame({"text": [f"t{i}" for i in range(200)]},
                      index=np.random.default_rng(1).permutation(200))
    run = gbm.embed(df, "text", output_dimensionality=16)
    first = run.wait(progress=False).result()
    assert first["error"].notna().sum() > 20
    emu.configure(fail_rate=0.0)
    child = run.retry_failed()
    assert child is not None
    child.wait(progress=False)
    merged = run.result()
    assert merged["error"].isna().all() and merged.index.equals(df.index)
    X = run.vectors()
    for i in (0, 57, 199):
        np.testing.assert_array_equal(X[i], np.asarray(_model.embedding_values(f"t{i}", 16),
                                                       dtype=np.float32))


def test_vectors_is_for_embedding_runs(emu: Any) -> None:
    run = pd.DataFrame({"p": ["x"]}).gembatch.submit("p")
    run.wait(progress=False)
    with pytest.raises(gbm.InputError, match="embedding runs"):
        run.vectors()


def test_magic_and_cli_embed(emu: Any, tmp_path: Path) -> None:
    from IPython.testing.globalipapp import get_ipython

    from gemini_batch_magic import cli

    df = pd.DataFrame({"text": ["one", "two", "three"]}, index=["x", "y", "z"])
    ip = get_ipython()
    ip.run_line_magic("load_ext", "gemini_batch_magic")
    ip.user_ns["docs"] = df
    ip.run_cell_magic("gembatch", "emb --df docs --embed --output-dimensionality 4 --wait",
                      "text")
    out = ip.user_ns["emb"]
    assert list(out.index) == ["x", "y", "z"] and out["embedding"].notna().all()
    table = tmp_path / "docs.csv"
    df.to_csv(table, index=False)
    dest = tmp_path / "vectors.parquet"
    assert cli.main(["embed", str(table), "--col", "text", "--output-dimensionality", "4",
                     "--out", str(dest)]) == 0
    got = pd.read_parquet(dest)
    assert len(got) == 3 and len(got["embedding"].iloc[0]) == 4
    npy = tmp_path / "v.npy"
    assert cli.main(["embed", str(table), "--col", "text", "--output-dimensionality", "4",
                     "--out", str(npy)]) == 0
    assert np.load(npy).shape == (3, 4)
