"""Embedding runs: one ``embedContent`` request per row, and their vectors aligned by key.

An embedding run is a run like any other (registry, dedupe, shards, retries), with three
differences, all here:

* its requests (:class:`EmbedLines`, built by :func:`prepare`) are
  ``{"key", "request": {"content", "taskType"?, "title"?, "outputDimensionality"?}}`` lines
  of a JSONL file, always: inline embedding batches carry no per-row key, so only the file
  route keeps rows matched by key;
* its batch is created with ``batches.create_embeddings`` (config ``kind: "embed"``);
* its results (this module's ``parse_results_file``, ``align_with_missing``, ... used by
  :mod:`._answers` in place of :mod:`._results`) have an ``embedding`` column, an Arrow
  fixed-size list of float32 in the finished result (pandas ``ArrowDtype``), missing (NA)
  where the row failed, with the reason in ``error``. :func:`vectors` gives the matrix.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from . import _requests, _results
from ._config import validate_model
from ._media import write_lines
from ._plan import Plan, rows_hash
from ._requests import RequestFile
from .exceptions import ConfigError, InputError

__all__ = ["EMBED_MODEL", "TASK_TYPES", "EmbedLines", "EmbeddingViews", "align_with_missing",
           "fill_from", "finish", "load_stored", "missing_frame", "parse_results_file",
           "prepare", "set_errors", "take_rows", "vectors"]

#: The model ``embed()`` uses when none is named.
EMBED_MODEL = "gemini-embedding-001"
#: The task types the embedding models take.
TASK_TYPES = ("RETRIEVAL_QUERY", "RETRIEVAL_DOCUMENT", "SEMANTIC_SIMILARITY", "CLASSIFICATION",
              "CLUSTERING", "QUESTION_ANSWERING", "FACT_VERIFICATION", "CODE_RETRIEVAL_QUERY")
COLUMNS = ("embedding", "error")
_LIST = pa.list_(pa.float32())
set_errors = _results.set_errors


@dataclass
class EmbedLines:
    """The request lines of an embedding run (one text, and maybe a title, per row)."""

    titles: Sequence[str | None] | None = None
    inline_ok: bool = False  #: inline embedding batches carry no key: always a file
    output_tokens: int = 0  #: an embedding has no output tokens

    def request(self, i: int, text: str, shared: Mapping[str, Any], data: bool = True
                ) -> dict[str, Any]:
        req: dict[str, Any] = {"content": {"parts": [{"text": text}], "role": "user"},
                               **shared}
        if self.titles is not None and self.titles[i] is not None:
            req["title"] = self.titles[i]
        return req

    def lines(self, prompts: Sequence[str], keys: Sequence[str], shared: Mapping[str, Any]
              ) -> Iterator[tuple[bytes, int]]:
        dumps = orjson.dumps
        for i, (text, key) in enumerate(zip(prompts, keys, strict=True)):
            yield (dumps({"key": key, "request": self.request(i, text, shared)}) + b"\n",
                   len(dumps(text)) - 2)

    def measure(self, prompts: Sequence[str], keys: Sequence[str], shared: Mapping[str, Any]
                ) -> tuple[np.ndarray, int]:
        got = [(len(b), t) for b, t in self.lines(prompts, keys, shared)]
        return np.array([b for b, _ in got], dtype=np.int64), sum(t for _, t in got)

    def write(self, folder: Path, prompts: Sequence[str], keys: Sequence[str],
              shared: Mapping[str, Any], *, max_file_bytes: int, max_requests: int
              ) -> list[RequestFile]:
        return write_lines(folder, self.lines(prompts, keys, shared), max_file_bytes,
                           max_requests)

    def tokens(self) -> int:
        return 0

    def summary(self) -> dict[str, int]:
        return {}


def prepare(df: Any, column: str, *, model: str | None, key: str | None,
            task_type: str | None, title: str | None, output_dimensionality: int | None,
            on_empty: str, display_name: str | None, keep_inputs: bool = False) -> Plan:
    """Check ``df`` and the options; the :class:`~._plan.Plan` of an embedding run."""
    model = validate_model(model or EMBED_MODEL)
    if not isinstance(column, str):
        raise InputError(f"embed() takes the name of the text column, got {column!r}")
    texts = _requests.prompt_texts(df, prompt=column)
    mask = _requests.check_prompts(texts, on_empty=on_empty)
    _requests.check_keys(df, key)
    shared: dict[str, Any] = {}
    if task_type is not None:
        if not isinstance(task_type, str) or task_type.upper() not in TASK_TYPES:
            raise ConfigError(f"task_type={task_type!r} is not one of {', '.join(TASK_TYPES)}")
        shared["taskType"] = task_type.upper()
    if output_dimensionality is not None:
        if (isinstance(output_dimensionality, bool)
                or not isinstance(output_dimensionality, (int, np.integer))
                or not 1 <= int(output_dimensionality) <= 65536):
            raise ConfigError(f"output_dimensionality must be a whole number of dimensions "
                              f"(e.g. 768, 1536 or 3072), got {output_dimensionality!r}")
        shared["outputDimensionality"] = int(output_dimensionality)
    positions = np.flatnonzero(mask).astype(np.int64)
    titles = None
    if title is not None:
        if task_type is None or task_type.upper() != "RETRIEVAL_DOCUMENT":
            raise ConfigError("title= is for task_type='RETRIEVAL_DOCUMENT' only (the title of "
                              "each document); pass that task type or drop title=")
        col = _requests.render_prompts(df, prompt=title)  # text or missing, checked
        titles = col.to_numpy(dtype=object)[positions].tolist()
    if display_name is not None and (not isinstance(display_name, str) or not display_name):
        raise ConfigError("name (display_name) must be a non-empty string")
    config: dict[str, Any] = {"kind": "embed", "prompt": column, "template": None, "key": key,
              "title": title, "task_type": shared.get("taskType"),
              "output_dimensionality": shared.get("outputDimensionality"),
              "on_empty": on_empty, "keep_inputs": bool(keep_inputs),
              "rows_hash": rows_hash(df.index), "generation_config": {}}
    return Plan(model=model, prompts=_requests.take_prompts(texts, positions),
                positions=positions, index=df.index, n_rows=len(df), shared=shared,
                config=config, schema=None, display_name=display_name or "gembatch-embed",
                skipped=np.flatnonzero(~mask).astype(np.int64), lines=EmbedLines(titles))


# ------------------------------------------------------------------------------ results
def _frame(keys: Any, embedding: pa.Array, error: Any) -> pd.DataFrame:
    return pd.DataFrame({
        "key": _results.text_series(keys),
        "embedding": pd.Series(pd.array(embedding, dtype=pd.ArrowDtype(_LIST))),
        "error": _results.text_series(error),
    })


_SCHEMA = pa.schema([
    ("key", pa.string()),
    ("response", pa.struct([("embedding", pa.struct([("values", _LIST)]))])),
    ("error", pa.struct([("code", pa.int64()), ("message", pa.string()),
                         ("status", pa.string())])),
])


def parse_results_file(path: Path) -> pd.DataFrame:
    """``key``, ``embedding`` (list of float32, NA where none), ``error`` of each result line."""
    try:
        table = pa_json.read_json(
            path, parse_options=pa_json.ParseOptions(explicit_schema=_SCHEMA,
                                                     unexpected_field_behavior="ignore"))
    except (pa.ArrowException, OSError, UnicodeDecodeError):
        return _parse_lines(Path(path).read_bytes())
    if table.num_rows == 0:
        return missing_frame(0, "").assign(key=_results.text_series([]))[["key", *COLUMNS]]
    keys = table.column("key").combine_chunks()
    values = pc.struct_field(pc.struct_field(table.column("response").combine_chunks(),
                                             "embedding"), "values")
    err = table.column("error").combine_chunks()
    errors = np.full(len(keys), None, dtype=object)
    bad = np.flatnonzero(np.asarray(err.is_valid()))
    if len(bad):
        idx = pa.array(bad, type=pa.int64())
        errors[bad] = [_results._error_message({"code": c, "message": m, "status": s})
                       for c, m, s in zip(err.field("code").take(idx).to_pylist(),
                                          err.field("message").take(idx).to_pylist(),
                                          err.field("status").take(idx).to_pylist(),
                                          strict=True)]
    none = np.flatnonzero(~np.asarray(values.is_valid()) & pd.isna(errors))
    errors[none] = "no embedding in the result"
    keep = np.asarray(keys.is_valid())
    frame = _frame(keys, values, errors)
    return frame[keep].reset_index(drop=True) if not keep.all() else frame


def _parse_lines(data: bytes) -> pd.DataFrame:
    """The per-line parser (for a file the vectorised reader cannot read exactly)."""
    keys: list[str] = []
    vals: list[Any] = []
    errs: list[Any] = []
    for n, line in enumerate(data.split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            got = _results._broken_row(line, n)
            if got is not None:
                keys.append(str(got[0]))
                vals.append(None)
                errs.append(got[2])
            continue
        if not isinstance(obj, dict) or obj.get("key") is None:
            continue
        keys.append(str(obj["key"]))
        emb = ((obj.get("response") or {}).get("embedding") or {}).get("values")
        if isinstance(emb, list) and emb:
            vals.append(emb)
            errs.append(None)
        else:
            vals.append(None)
            errs.append(_results._error_message(obj["error"]) if obj.get("error")
                        else "no embedding in the result")
    return _frame(keys, pa.array(vals, type=_LIST), errs)


def missing_frame(n: int, reason: str) -> pd.DataFrame:
    """``n`` rows without an embedding, each with ``reason`` in ``error`` (empty: none)."""
    return pd.DataFrame({
        "embedding": pd.Series(pd.array(pa.nulls(n, _LIST), dtype=pd.ArrowDtype(_LIST))),
        "error": _results.text_series([reason or None] * n),
    })


def load_stored(frame: pd.DataFrame) -> pd.DataFrame:
    """A stored frame read back from parquet (the standard empty frame of lost results)."""
    n = len(frame)
    emb = (frame["embedding"].array if "embedding" in frame
           else pd.array(pa.nulls(n, _LIST), dtype=pd.ArrowDtype(_LIST)))
    return pd.DataFrame({"key": _results.text_series(_results.arrow_text(frame["key"])),
                         "embedding": pd.Series(emb),
                         "error": _results.text_series(_results.arrow_text(frame["error"]))})


def take_rows(frame: pd.DataFrame, pos: np.ndarray) -> pd.DataFrame:
    """Rows ``pos`` of ``frame`` (RangeIndex); -1 gives a row with nothing."""
    return pd.DataFrame({
        "embedding": pd.Series(frame["embedding"].array.take(pos, allow_fill=True)),
        "error": _results.text_series(
            _results.arrow_text(frame["error"]).take(pa.array(pos, mask=pos < 0))),
    })


def align_with_missing(parsed: pd.DataFrame, keys: np.ndarray) -> tuple[pd.DataFrame,
                                                                        np.ndarray]:
    """One row per expected key (positions, as the engine keys rows), in that order; a key
    without a result says so, a key answered twice keeps the first and says so."""
    expected = np.asarray(keys, dtype=np.int64)
    got = pd.to_numeric(pd.Series(parsed["key"], dtype=object), errors="coerce")
    got_np = got.fillna(-1).to_numpy(dtype=np.int64)
    size = int(max(expected.max(initial=-1), got_np.max(initial=-1))) + 2
    first = np.full(size, -1, dtype=np.int64)
    ok = got_np >= 0
    idx = np.flatnonzero(ok)[::-1]
    first[got_np[idx]] = idx  # the first result of each key wins
    counts = np.bincount(got_np[ok], minlength=size)
    pos = first[expected]
    out = take_rows(parsed, pos)
    missing = np.flatnonzero(pos < 0)
    if len(missing):
        set_errors(out, missing, [f"no result returned for this row (key '{k}')"
                                  for k in expected[missing].tolist()])
    dup = np.flatnonzero(counts[expected] > 1)
    if len(dup):
        set_errors(out, dup, [f"the service returned {c} results for key '{k}'"
                              for c, k in zip(counts[expected[dup]].tolist(),
                                              expected[dup].tolist(), strict=True)])
    return out, missing


def fill_from(own: pd.DataFrame, retried: pd.DataFrame) -> None:
    """Fill rows of ``own`` (by position) with the embeddings a retry run got."""
    sub = retried[retried["error"].isna()]
    sub = sub[sub.index.isin(own.index)]
    if len(sub):
        own.loc[sub.index, list(COLUMNS)] = sub[list(COLUMNS)]


def finish(frame: pd.DataFrame, dim: int | None) -> pd.DataFrame:
    """The result columns: ``embedding`` as a fixed-size list of float32 of one length
    (``dim``, or the length most rows have), ``error``; a row of another length fails."""
    arr = pa.array(frame["embedding"].array)
    lengths = np.asarray(pc.fill_null(pc.list_value_length(arr), 0))
    if dim is None:
        common = Counter(lengths[lengths > 0].tolist()).most_common(1)
        dim = common[0][0] if common else 1
    wrong = np.flatnonzero((lengths != dim) & np.asarray(arr.is_valid()))
    errors = frame["error"].to_numpy(dtype=object, copy=True)
    if len(wrong):
        errors[wrong] = [f"the service returned {n} values, not {dim}"
                         for n in lengths[wrong].tolist()]
    valid = np.asarray(arr.is_valid()) & (lengths == dim)
    flat = pc.list_flatten(arr.filter(pa.array(valid))).to_numpy(zero_copy_only=False)
    data = np.zeros((len(arr), dim), dtype=np.float32)
    data[valid] = flat.reshape(-1, dim)
    fixed = pa.FixedSizeListArray.from_arrays(pa.array(data.reshape(-1)), dim,
                                              mask=pa.array(~valid))
    return pd.DataFrame({
        "embedding": pd.Series(pd.array(fixed, dtype=pd.ArrowDtype(fixed.type)),
                               index=frame.index),
        "error": _results.text_series(errors, index=frame.index),
    }, index=frame.index)


def vectors(frame: pd.DataFrame) -> np.ndarray:
    """The ``embedding`` column as a float32 matrix (rows, dim); NaN rows where it failed."""
    arr = pa.array(frame["embedding"].array)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    dim = arr.type.list_size
    out = np.full((len(arr), dim), np.nan, dtype=np.float32)
    valid = np.asarray(arr.is_valid())
    if valid.any():
        out[valid] = arr.filter(pa.array(valid)).flatten().to_numpy(
            zero_copy_only=False).reshape(-1, dim)
    return out


class EmbeddingViews:
    """What a run offers for embeddings (mixed into :class:`~gemini_batch_magic.BatchRun`)."""

    def vectors(self) -> np.ndarray:
        """The embeddings as a numpy float32 matrix ``(n_rows, dim)``, in input order; rows
        that failed (see ``result()["error"]``) are NaN. Waits for nothing: the run must be
        done (:class:`~gemini_batch_magic.RunNotDoneError` otherwise)."""
        result = self.result(format="pandas")  # type: ignore[attr-defined]
        if "embedding" not in result:
            raise InputError("vectors() is for embedding runs (made with embed()); this run "
                             "answered text: use result()")
        return vectors(result)
