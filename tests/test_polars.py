"""Polars and pyarrow inputs end to end: real SDK, real local emulator, real registry.

The emulator answers each request with its own prompt (and shuffles file results), so a
row's answer tells which prompt it belongs to: every test below checks answers row by row.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import gemini_batch_magic as gbm
from gemini_batch_magic._config import settings
from gemini_batch_magic._state import state

pl = pytest.importorskip("polars")

#: text no codec may mangle: emoji (outside the BMP), CJK, right-to-left, combining marks
ODD = ["😀 emoji 🎉", "漢字と日本語", "שלום עולם", "مرحبا", "e\u0301 combining", "tab\tquote\"\\"]


def _sent(emu: Any) -> list[tuple[str, str]]:
    """The calls that would send or store something: all but looking up models."""
    return [(m, p) for m, p in emu.calls if not (m == "GET" and "/models" in p)]


def _reviews(n: int, seed: int = 7) -> pl.DataFrame:
    """``n`` rows with a shuffled integer key ``id`` and non-ASCII text."""
    ids = np.random.default_rng(seed).permutation(np.arange(n) * 7 + 1000)
    return pl.DataFrame({
        "id": ids,
        "text": [f"{ODD[i % len(ODD)]} #{i}" for i in range(n)],
        "lang": [["French", "Thai", "Hebrew"][i % 3] for i in range(n)],
    })


def test_a_polars_frame_comes_back_polars_aligned_to_its_shuffled_key(emu: Any) -> None:
    pdf = _reviews(300)  # more than 100 rows: a JSONL file, answered in shuffled order
    run = pdf.gembatch.submit("text", key="id")
    assert run.record.source == "file" and run.record.config["input_kind"] == "polars"
    out = run.wait(progress=False).result()
    assert isinstance(out, pl.DataFrame)
    assert out.columns[:3] == ["id", "response", "error"]
    assert out["id"].to_list() == pdf["id"].to_list()  # the input's order
    assert out["response"].to_list() == pdf["text"].to_list()  # each row its own answer
    assert out.schema["response"] == pl.String and out.schema["input_tokens"] == pl.Int64
    assert out.schema["error"] == pl.String and out["error"].null_count() == len(pdf)
    # joinable on the key, whatever order either side is in
    joined = pdf.sample(fraction=1.0, shuffle=True, seed=3).join(out, on="id")
    assert (joined["response"] == joined["text"]).all()


def test_a_template_over_several_columns_and_join_true(emu: Any) -> None:
    pdf = _reviews(12).with_columns(
        pl.Series("tone", ["calm", "angry"] * 6).cast(pl.Enum(["calm", "angry"])),
        day=pl.date_range(pl.date(2024, 1, 1), pl.date(2024, 1, 12), eager=True))
    run = pdf.gembatch.submit(template="Translate {text} into {lang} ({tone}, {day})", key="id")
    out = run.wait(progress=False).result(join=True)
    assert out.columns[: len(pdf.columns)] == pdf.columns  # the input's columns first
    assert out.schema["tone"] == pdf.schema["tone"] and out.schema["day"] == pl.Date
    expected = [f"Translate {t} into {lang} ({tone}, {day})" for t, lang, tone, day in
                pdf.select("text", "lang", "tone", "day").iter_rows()]
    assert out["response"].to_list() == expected
    # the same through the namespace's run(): polars, no second collect
    again = pdf.gembatch.run(template="Translate {text} into {lang} ({tone}, {day})", key="id",
                             join=True)
    assert again.equals(out)


def test_null_prompts_raise_by_default_and_are_skipped_on_request(emu: Any) -> None:
    pdf = pl.DataFrame({"id": [9, 4, 7, 1], "text": ["a 😀", None, "", "שלום"]})
    with pytest.raises(gbm.EmptyPromptError, match="on_empty") as err:
        pdf.gembatch.submit("text", key="id")
    assert err.value.rows == [4, 7]  # named by key
    assert _sent(emu) == [] and gbm.runs().empty
    out = pdf.gembatch.run("text", key="id", on_empty="skip")
    assert out["id"].to_list() == [9, 4, 7, 1]
    assert out["response"].to_list() == ["a 😀", None, None, "שלום"]
    assert out["error"].str.starts_with("skipped").to_list() == [None, True, True, None]


def test_a_lazyframe_is_collected_and_its_results_are_polars(emu: Any) -> None:
    lf = _reviews(40).lazy().filter(pl.col("lang") != "Thai").with_columns(
        prompt=pl.concat_str(pl.lit("Say: "), pl.col("text")))
    collected = lf.collect()
    run = lf.gembatch.submit("prompt", key="id")
    out = run.wait(progress=False).result()
    assert isinstance(out, pl.DataFrame) and len(out) == len(collected)
    assert dict(zip(out["id"], out["response"], strict=True)) == dict(
        zip(collected["id"], collected["prompt"], strict=True))
    frame = lf.gembatch.run("prompt", key="id", join=True)
    assert isinstance(frame, pl.DataFrame) and frame.columns[: len(collected.columns)] == \
        collected.columns
    assert (frame["response"] == frame["prompt"]).all()
    est = lf.gembatch.estimate("prompt")
    assert est.requests == len(collected)


def test_other_kinds_on_request_and_a_bad_format_is_refused(emu: Any) -> None:
    pdf = _reviews(6)
    run = pdf.gembatch.submit("text", key="id").wait(progress=False)
    as_pandas = run.result(format="pandas")
    assert isinstance(as_pandas, pd.DataFrame)
    assert as_pandas.index.name == "id" and as_pandas.index.tolist() == pdf["id"].to_list()
    assert as_pandas["response"].tolist() == pdf["text"].to_list()
    as_arrow = run.result(format="arrow")
    assert isinstance(as_arrow, pa.Table) and as_arrow.column_names[0] == "id"
    assert as_arrow.schema.field("response").type == pa.large_string()
    assert as_arrow.column("response").to_pylist() == pdf["text"].to_list()
    with pytest.raises(gbm.ConfigError, match="'pandas', 'polars', 'arrow'"):
        run.result(format="dataframe")
    with pytest.raises(ValueError, match="format='Polars'"):
        run.result(format="Polars")


def test_a_pyarrow_table_gives_a_pyarrow_table(emu: Any) -> None:
    texts = [f"{ODD[i % len(ODD)]} {i}" for i in range(150)]
    chunks = [pa.array(texts[:70]), pa.array(texts[70:])]  # two chunks, plain `string`
    table = pa.table({"text": pa.chunked_array(chunks), "n": pa.array(range(150))})
    run = gbm.submit(table, "text")
    out = run.wait(progress=False).result()
    assert isinstance(out, pa.Table)
    assert out.column_names == ["response", "error", "finish_reason", "input_tokens",
                                "output_tokens"]  # no key: rows in input order, no extra column
    assert out.column("response").to_pylist() == texts
    joined = run.result(join=True)
    assert joined.column_names[:2] == ["text", "n"]
    assert joined.column("n").to_pylist() == list(range(150))
    batch = pa.RecordBatch.from_pydict({"text": ["one", "two"]})
    assert gbm.submit(batch, "text").wait(progress=False).result().column(
        "response").to_pylist() == ["one", "two"]
    as_polars = run.result(format="polars")
    assert pl.concat([pl.from_arrow(table), as_polars], how="horizontal")["response"].to_list() \
        == texts


def test_estimate_of_a_polars_frame_sends_nothing(emu: Any) -> None:
    pdf = _reviews(30)
    est = pdf.gembatch.estimate(template="Summarise: {text}", key="id")
    assert isinstance(est, gbm.Estimate) and est.requests == 30 and est.cost_usd
    assert est.preview[0]["row"] == pdf["id"][0]  # rows named by their key
    assert est.preview[0]["prompt"] == f"Summarise: {pdf['text'][0]}"
    assert gbm.estimate(pdf.to_arrow(), "text").requests == 30
    assert _sent(emu) == [] and gbm.runs().empty


def test_embeddings_of_a_polars_frame_are_in_order(emu: Any) -> None:
    from gemini_batch_magic.emulator import _model

    pdf = _reviews(20).with_columns(pl.Series("text", [*ODD, *[f"doc {i}" for i in range(14)]]))
    run = pdf.gembatch.embed("text", key="id", output_dimensionality=16)
    out = run.wait(progress=False).result()
    assert isinstance(out, pl.DataFrame) and out.columns == ["id", "embedding", "error"]
    assert out.schema["embedding"] == pl.Array(pl.Float32, 16)
    assert out["id"].to_list() == pdf["id"].to_list()
    X = run.vectors()
    assert X.shape == (20, 16) and X.dtype == np.float32
    for i, text in enumerate(pdf["text"]):
        expected = np.asarray(_model.embedding_values(text, 16), dtype=np.float32)
        np.testing.assert_array_equal(X[i], expected)
        np.testing.assert_array_equal(np.asarray(out["embedding"][i]), expected)


def test_a_fresh_process_state_still_gives_polars(emu: Any) -> None:
    pdf = _reviews(8)
    run = pdf.gembatch.submit("text", key="id")
    run.wait(progress=False)
    run_id = run.run_id
    del run
    state.reset()  # as after a kernel restart: no run object, nothing cached
    again = gbm.attach(run_id)
    out = again.result()
    assert isinstance(out, pl.DataFrame)
    assert out["id"].to_list() == pdf["id"].to_list()
    assert out["response"].to_list() == pdf["text"].to_list()
    with pytest.raises(gbm.InputError, match="join=df"):
        again.result(join=True)  # this process never saw the input ...
    joined = again.result(join=pdf)  # ... until it is given
    assert joined.columns[:3] == ["id", "text", "lang"]
    state.reset()
    attached = gbm.attach(run_id, df=pdf)  # or given to attach
    assert attached.result(join=True)["response"].to_list() == pdf["text"].to_list()
    with pytest.raises(gbm.InputError, match="rows"):
        gbm.attach(run_id, df=pdf.head(3))


def test_a_kernel_restart_gives_polars_back(emu: Any, gembatch_home: Path) -> None:
    env = {**os.environ, "GEMBATCH_HOME": str(gembatch_home), "GOOGLE_GEMINI_BASE_URL": emu.url}
    submit = textwrap.dedent("""
        import polars as pl, gemini_batch_magic as gbm
        pdf = pl.DataFrame({"id": [30, 10, 20], "p": ["alpha", "βeta", "😀"]})
        print(pdf.gembatch.submit("p", key="id").run_id)
    """)
    proc = subprocess.run([sys.executable, "-c", submit], env=env, capture_output=True,
                          text=True, check=True)
    run_id = proc.stdout.strip().splitlines()[-1]
    fetch = textwrap.dedent(f"""
        import gemini_batch_magic as gbm
        out = gbm.attach({run_id!r}).wait(progress=False).result()
        print(type(out).__module__.split(".")[0], out["id"].to_list(), out["response"].to_list())
    """)
    proc = subprocess.run([sys.executable, "-c", fetch], env=env, capture_output=True,
                          text=True, check=True)
    assert proc.stdout.strip() == "polars [30, 10, 20] ['alpha', 'βeta', '😀']"


def test_a_retry_of_a_polars_run_is_merged_into_polars_results(emulator_factory: Any) -> None:
    seen: set[str] = set()

    def flaky(request: dict[str, Any], model: str) -> dict[str, Any]:
        text = request["contents"][-1]["parts"][0]["text"]
        if "flaky" in text and text not in seen:
            seen.add(text)
            raise RuntimeError("simulated transient model failure")
        return {"candidates": [{"content": {"role": "model", "parts": [{"text": text.upper()}]},
                                "finishReason": "STOP", "index": 0}]}

    emulator_factory(responder=flaky)
    pdf = pl.DataFrame({"id": ["w", "x", "y", "z"], "p": ["ok 1", "flaky 2", "ok 3", "flaky 4"]})
    run = pdf.gembatch.submit("p", key="id")
    out = run.wait(progress=False).result()
    assert out.filter(pl.col("error").is_not_null())["id"].to_list() == ["x", "z"]
    child = run.retry_failed()
    assert child is not None
    child.wait(progress=False)
    assert child.result()["id"].to_list() == ["x", "z"]  # the child's own rows, by key
    merged = run.result()
    assert isinstance(merged, pl.DataFrame) and merged["error"].null_count() == 4
    assert merged["response"].to_list() == ["OK 1", "FLAKY 2", "OK 3", "FLAKY 4"]


def test_structured_output_survives_as_a_struct(emu: Any) -> None:
    from pydantic import BaseModel

    class Review(BaseModel):
        sentiment: str
        score: int

    pdf = pl.DataFrame({"id": [2, 1], "p": ["great film", "awful film"]})
    out = pdf.gembatch.run("p", key="id", response_schema=Review)
    assert out["error"].null_count() == 2
    assert out.schema["parsed"] == pl.Struct({"sentiment": pl.String, "score": pl.Int64})
    assert out["parsed"].struct.field("score").to_list() == out["score"].to_list()
    assert all(isinstance(s, int) for s in out["score"])


def test_a_misspelt_keyword_names_the_one_meant_and_sends_nothing(emu: Any) -> None:
    pdf = _reviews(3)
    with pytest.raises(TypeError, match=r"generation_config=\{'temperature': 0\.2\}"):
        pdf.gembatch.submit("text", temprature=0.2)
    with pytest.raises(TypeError, match=r"'keys' .* did you mean key\?"):
        pdf.lazy().gembatch.run("text", keys="id")
    with pytest.raises(TypeError, match=r"'dimensions' .*output_dimensionality"):
        pdf.gembatch.embed("text", dimensions=8)
    with pytest.raises(TypeError, match=r"'modle' .* did you mean model\?"):
        pdf.gembatch.estimate("text", modle="gemini-2.5-pro")
    assert _sent(emu) == [] and gbm.runs().empty


def test_missing_columns_name_close_matches(emu: Any) -> None:
    pdf = _reviews(3)
    with pytest.raises(gbm.ColumnError, match=r"key column 'ids' .* Did you mean 'id'\?"):
        pdf.gembatch.submit("text", key="ids")
    with pytest.raises(gbm.ColumnError, match=r"'txt' .* Did you mean 'text'\?"):
        pdf.lazy().gembatch.submit("txt")
    dup = pl.DataFrame({"id": [1, 1, 2], "text": ["a", "b", "c"]})
    with pytest.raises(gbm.DuplicateKeyError, match="1 \\(2 times\\)"):
        dup.gembatch.submit("text", key="id")
    assert _sent(emu) == [] and gbm.runs().empty


def test_the_progress_preview_shows_a_polars_run_by_key(emu: Any) -> None:
    from gemini_batch_magic.widgets._progress_widget import preview_table

    pdf = _reviews(8)
    run = pdf.gembatch.submit("text", key="id").wait(progress=False)
    table = preview_table(run, rows=3)
    assert table["columns"] == ["id", "response"]
    assert [r[0] for r in table["rows"]] == [str(i) for i in pdf["id"][:3]]
    assert [r[1] for r in table["rows"]] == pdf["text"][:3].to_list()
    assert table["more"] == 5


def test_the_preview_shows_errors_of_rows_it_does_not_show(emu: Any) -> None:
    """Only the last of 8 rows fails: the preview of its first 3 still has an error column
    (as a pandas run's has), for a polars and for an Arrow input."""
    from gemini_batch_magic.widgets._progress_widget import preview_table

    texts = [f"fine {i}" for i in range(7)] + ["[[fail]] last"]
    for frame in (pl.DataFrame({"text": texts}), pa.table({"text": texts})):
        run = gbm.submit(frame, "text").wait(progress=False)
        table = preview_table(run, rows=3)
        assert table["columns"] == ["row", "response", "error"], type(frame)
        assert [r[1] for r in table["rows"]] == texts[:3] and table["more"] == 5
    ok = gbm.submit(pl.DataFrame({"text": texts[:7]}), "text").wait(progress=False)
    assert preview_table(ok, rows=3)["columns"] == ["row", "response"]  # none failed


def test_gembatch_results_writes_a_polars_run_to_csv(emu: Any, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from gemini_batch_magic import cli

    pdf = _reviews(4)
    run = pdf.gembatch.submit("text", key="id").wait(progress=False)
    path = tmp_path / "a.csv"
    assert cli.main(["results", run.run_id, "--out", str(path)]) == 0
    back = pd.read_csv(path, index_col="id")
    assert back.index.tolist() == pdf["id"].to_list()
    assert back["response"].tolist() == pdf["text"].to_list()


@pytest.fixture
def ip() -> Iterator[Any]:
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.testing.globalipapp import start_ipython

    shell = start_ipython() or InteractiveShell.instance()
    shell.run_line_magic("load_ext", "gemini_batch_magic")
    yield shell
    shell.run_line_magic("unload_ext", "gemini_batch_magic")
    for name in ("pdf", "out"):
        shell.user_ns.pop(name, None)


def test_the_cell_magic_takes_a_polars_variable(emu: Any, ip: Any) -> None:
    pdf = _reviews(5)
    ip.user_ns["pdf"] = pdf
    ip.run_cell_magic("gembatch", "out --df pdf --key id --wait", "Translate {text} into {lang}")
    out = ip.user_ns["out"]
    assert isinstance(out, pl.DataFrame) and out["id"].to_list() == pdf["id"].to_list()
    assert out["response"].to_list() == [f"Translate {t} into {lang}" for t, lang in
                                         pdf.select("text", "lang").iter_rows()]


def test_inline_and_file_runs_give_the_same_polars_frame(emu: Any) -> None:
    pdf = _reviews(60)
    inline = pdf.gembatch.submit("text", key="id")
    assert inline.record.source == "inline"
    settings.inline_limit_bytes = 100  # the same rows through a file
    filed = pdf.gembatch.submit("text", key="id", force=True)
    assert filed.record.source == "file"
    a = inline.wait(progress=False).result()
    b = filed.wait(progress=False).result()
    assert a.equals(b) and a["response"].to_list() == pdf["text"].to_list()
