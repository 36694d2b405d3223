"""Polars and Arrow frames in and out of the engine (``_frames``), without a service."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import gemini_batch_magic as gbm
from gemini_batch_magic import _frames, _requests


@pytest.fixture
def pl() -> Any:
    """polars, for the tests that need it (the others run without it)."""
    return pytest.importorskip("polars")


def test_arrow_text_reaches_the_engine_without_a_copy() -> None:
    text = pa.array(["første", None, "😀 emoji", "漢字"], type=pa.large_string())
    table = pa.table({"text": text, "n": [1, 2, None, 4]})
    given = _frames.take(table)
    assert given.kind == "arrow" and given.native is table
    frame = given.frame
    assert isinstance(frame.index, pd.RangeIndex)  # rows keyed by position: no index
    back = _requests._arrow_text(frame["text"])
    assert back is not None  # the engine's Arrow fast path takes it
    # the same bytes: the prompt text was not copied on the way in
    assert back.chunk(0).buffers()[2].address == text.buffers()[2].address
    assert frame["n"].isna().tolist() == [False, False, True, False]  # nulls stay nulls
    assert frame["n"].tolist()[:2] == [1, 2]  # and ints stay ints (no 1.0)


def test_polars_string_views_and_record_batches_are_taken(pl: Any) -> None:
    views = pa.table({"text": pa.array(["a", "b"], type=pa.string_view())})
    frame = _frames.take(views).frame
    assert frame["text"].dtype == pd.ArrowDtype(pa.large_string())
    batch = pa.RecordBatch.from_pydict({"text": ["x", "y"]})
    assert _frames.take(batch).frame["text"].tolist() == ["x", "y"]
    lazy = pl.LazyFrame({"text": ["p", "q", "r"]}).filter(pl.col("text") != "q")
    given = _frames.take(lazy)
    assert given.kind == "polars" and isinstance(given.native, pl.DataFrame)
    assert given.frame["text"].tolist() == ["p", "r"]
    assert _frames.column_names(lazy) == ["text"] and _frames.column_names(batch) == ["text"]


def test_a_good_key_column_labels_the_rows_and_a_bad_one_is_left_to_the_key_check(pl: Any) -> None:
    pdf = pl.DataFrame({"id": [30, 10, 20], "text": ["a", "b", "c"]})
    frame = _frames.take(pdf, key="id").frame
    assert frame.index.tolist() == [30, 10, 20] and frame.index.name == "id"
    assert "id" in frame.columns  # the column stays: templates may use it
    with_null = pl.DataFrame({"id": [1, None, 3], "text": ["a", "b", "c"]})
    frame = _frames.take(with_null, key="id").frame
    with pytest.raises(gbm.InputError, match=r"missing key at index 1;"):  # a row position
        _requests.check_keys(frame, "id")


def test_unknown_objects_pass_through_for_the_engine_to_refuse() -> None:
    assert _frames.take([1, 2]).frame == [1, 2]
    with pytest.raises(gbm.InputError, match="polars DataFrames"):
        gbm.submit([1, 2], "p")


def _result(index: pd.Index) -> pd.DataFrame:
    from gemini_batch_magic._results import text_series

    n = len(index)
    frame = pd.DataFrame({
        "response": text_series(["r"] * (n - 1) + [None]),
        "error": text_series([None] * (n - 1) + ["500 INTERNAL: boom"]),
        "input_tokens": pd.array([3] * (n - 1) + [None], dtype="Int64"),
    })
    frame.index = index
    return frame


def test_results_get_the_key_as_first_column_or_nothing_without_one(pl: Any) -> None:
    keyed = _frames.convert(_result(pd.Index([30, 10, 20], name="id")), "polars", "id")
    assert keyed.columns == ["id", "response", "error", "input_tokens"]
    assert keyed["id"].to_list() == [30, 10, 20]
    assert keyed.schema["response"] == pl.String and keyed.schema["input_tokens"] == pl.Int64
    assert keyed["response"].to_list() == ["r", "r", None]  # missing is null, not "nan"
    plain = _frames.convert(_result(pd.RangeIndex(3)), "arrow")
    assert plain.column_names == ["response", "error", "input_tokens"]  # rows in input order
    assert plain.schema.field("error").type == pa.large_string()
    labelled = _frames.convert(_result(pd.Index(["a", "b", "c"])), "polars")
    assert labelled.columns[0] == "index" and labelled["index"].to_list() == ["a", "b", "c"]
    clash = _frames.convert(_result(pd.Index([1, 2, 3], name="error")), "polars", "error")
    assert clash.columns == ["error", "response", "error_result", "input_tokens"]
    frame = _result(pd.RangeIndex(3))
    assert _frames.convert(frame, "pandas") is frame


def test_embeddings_become_fixed_size_arrays_and_parsed_becomes_a_struct(pl: Any) -> None:
    from pydantic import BaseModel

    class Review(BaseModel):
        sentiment: str
        score: int

    vectors = pa.array([[0.5, 0.25], None, [1.0, 0.0]], type=pa.list_(pa.float32(), 2))
    frame = pd.DataFrame({
        "embedding": pd.Series(pd.array(vectors, dtype=pd.ArrowDtype(vectors.type))),
        "parsed": pd.Series([Review(sentiment="good", score=4), None, {"sentiment": "bad",
                                                                        "score": 1}],
                            dtype=object),
    })
    out = _frames.convert(frame, "polars")
    assert out.schema["embedding"] == pl.Array(pl.Float32, 2)
    assert out["embedding"].to_list()[0] == [0.5, 0.25] and out["embedding"][1] is None
    assert out.schema["parsed"] == pl.Struct({"sentiment": pl.String, "score": pl.Int64})
    assert out["parsed"].struct.field("score").to_list() == [4, None, 1]
    mixed = pd.DataFrame({"parsed": pd.Series([{"a": 1}, {"a": "one"}], dtype=object)})
    table = _frames.convert(mixed, "arrow")  # no one struct type fits: the JSON text
    assert table.column("parsed").to_pylist() == ['{"a":1}', '{"a":"one"}']


def test_a_bad_format_names_the_good_ones() -> None:
    with pytest.raises(gbm.ConfigError) as err:
        _frames.check_format("pyarrow")
    assert isinstance(err.value, ValueError)
    assert "'pandas', 'polars', 'arrow'" in str(err.value) and "'pyarrow'" in str(err.value)


def test_polars_results_without_polars_name_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "polars", None)  # import polars now raises ImportError
    with pytest.raises(gbm.ConfigError, match=r"pip install 'gemini_batch_magic\[polars\]'"):
        _frames.convert(_result(pd.RangeIndex(2)), "polars")
    assert _frames.input_kind(np.zeros(2)) is None  # nothing imported to ask


def test_the_package_imports_and_takes_arrow_without_polars(emu: Any,
                                                            gembatch_home: Path) -> None:
    env = {**os.environ, "GEMBATCH_HOME": str(gembatch_home), "GOOGLE_GEMINI_BASE_URL": emu.url}
    script = textwrap.dedent("""
        import sys
        sys.modules["polars"] = None  # polars is not installed, as far as imports can tell
        import pyarrow as pa
        import gemini_batch_magic as gbm
        assert "gemini_batch_magic._polars" not in sys.modules  # no namespace registered
        run = gbm.submit(pa.table({"text": ["alpha", "漢字"]}), "text")
        out = run.wait(progress=False).result()
        print(type(out).__name__, out.column("response").to_pylist())
        try:
            run.result(format="polars")
        except gbm.ConfigError as exc:
            print(exc)
    """)
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, check=True)
    lines = proc.stdout.strip().splitlines()
    assert lines[0] == "Table ['alpha', '漢字']"
    assert lines[1].endswith("pip install 'gemini_batch_magic[polars]'")
