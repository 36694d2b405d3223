"""Batch results -> a DataFrame aligned to the sent rows by key (pure functions).

* :func:`parse_results_file` reads a responses JSONL file (wire spec §5.2), one row per line,
  in the file's (arbitrary) order. Broken lines never raise: they become error rows when their
  key can be recovered, and are skipped otherwise.
* :func:`parse_inlined_responses` builds the same frame from the SDK's inline responses.
* :func:`align_results` puts one row per expected key in the order the rows were sent. Rows are
  matched by key, never by position.

Columns (:data:`RESULT_COLUMNS`): ``response`` (the text of the first candidate, all non-thought
text parts joined, like the SDK's ``.text``), ``error`` (None on success, else a short message
such as ``"500 INTERNAL: ..."``), ``finish_reason`` (e.g. ``"STOP"``), ``input_tokens`` and
``output_tokens`` (nullable Int64). Text columns are object dtype with None for missing.

Large files are parsed with a vectorised pyarrow reader and an explicit schema; any file it
cannot read exactly (a broken line, an unexpected type) goes through the plain per-line orjson
parser, which is the reference behaviour the fast path is tested against.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd

__all__ = [
    "RESULT_COLUMNS",
    "align_results",
    "parse_inlined_responses",
    "parse_results_file",
]

RESULT_COLUMNS = ("response", "error", "finish_reason", "input_tokens", "output_tokens")
_TEXT_COLUMNS = ("response", "error", "finish_reason")
_TOKEN_COLUMNS = ("input_tokens", "output_tokens")

#: google.rpc status names, for errors that carry a code but no status. Both the gRPC codes
#: (google.rpc.Code) and the HTTP codes the REST API uses appear in practice.
_STATUS_NAMES = {
    1: "CANCELLED",
    2: "UNKNOWN",
    3: "INVALID_ARGUMENT",
    4: "DEADLINE_EXCEEDED",
    5: "NOT_FOUND",
    6: "ALREADY_EXISTS",
    7: "PERMISSION_DENIED",
    8: "RESOURCE_EXHAUSTED",
    9: "FAILED_PRECONDITION",
    10: "ABORTED",
    11: "OUT_OF_RANGE",
    12: "UNIMPLEMENTED",
    13: "INTERNAL",
    14: "UNAVAILABLE",
    15: "DATA_LOSS",
    16: "UNAUTHENTICATED",
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

_KEY_RE = re.compile(rb'"key"\s*:\s*("(?:[^"\\]|\\.)*")')

# One parsed result: key, response, error, finish_reason, input_tokens, output_tokens.
_Row = tuple[Any, Any, Any, Any, Any, Any]


# --------------------------------------------------------------------------------------------
# per-result extraction (the reference behaviour)


def _error_message(error: Any) -> str:
    """``"500 INTERNAL: message"`` from a google.rpc.Status dict."""
    if not isinstance(error, dict):
        return f"error: {error!r}"
    code = error.get("code")
    status = error.get("status") or (_STATUS_NAMES.get(code) if isinstance(code, int) else None)
    head = " ".join(str(x) for x in (code, status) if x is not None) or "error"
    message = error.get("message")
    return f"{head}: {message}" if message else head


def _response_fields(resp: Any) -> tuple[Any, Any, Any, Any, Any]:
    """(response, error, finish_reason, input_tokens, output_tokens) of a camelCase response dict."""
    if not isinstance(resp, dict):
        return None, f"unexpected response: {type(resp).__name__}", None, None, None
    usage = resp.get("usageMetadata")
    in_tok = out_tok = None
    if usage:
        in_tok = usage.get("promptTokenCount")
        cand_tok = usage.get("candidatesTokenCount")
        thought_tok = usage.get("thoughtsTokenCount")
        if cand_tok is not None or thought_tok is not None:
            out_tok = (cand_tok or 0) + (thought_tok or 0)
    cands = resp.get("candidates")
    if not cands:
        feedback = resp.get("promptFeedback")
        block = feedback.get("blockReason") if isinstance(feedback, dict) else None
        error = f"no candidates (prompt blocked: {block})" if block else "no candidates"
        return None, error, None, in_tok, out_tok
    cand = cands[0]
    finish = cand.get("finishReason")
    content = cand.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    text = None
    if parts:
        texts = [
            p["text"] for p in parts if isinstance(p.get("text"), str) and not p.get("thought")
        ]
        if texts:
            text = texts[0] if len(texts) == 1 else "".join(texts)
    if text is None:
        error = f"no text (finish_reason {finish})" if finish else "no text"
        return None, error, finish, in_tok, out_tok
    return text, None, finish, in_tok, out_tok


def _result_row(obj: Any, line_no: int) -> _Row | None:
    """The row of one decoded result line, or None when it has no usable key."""
    if not isinstance(obj, dict):
        return None
    key = obj.get("key")
    if key is None:
        return None
    if not isinstance(key, str):
        key = str(key)
    if "response" in obj and obj["response"] is not None:
        return (key, *_response_fields(obj["response"]))
    if "error" in obj and obj["error"] is not None:
        return key, None, _error_message(obj["error"]), None, None, None
    return key, None, f"result line {line_no} has neither a response nor an error", None, None, None


def _broken_row(line: bytes, line_no: int) -> _Row | None:
    """The error row of a line that is not valid JSON, if its key can be recovered."""
    match = _KEY_RE.search(line)
    if match is None:
        return None
    try:
        key = orjson.loads(match.group(1))
    except orjson.JSONDecodeError:
        return None
    return key, None, f"result line {line_no} is not valid JSON", None, None, None


def _frame(rows: Sequence[_Row] | Iterable[_Row]) -> pd.DataFrame:
    """The result frame (key + RESULT_COLUMNS) from row tuples, built column by column."""
    rows = list(rows)
    cols = list(zip(*rows, strict=True)) if rows else [()] * 6
    data: dict[str, Any] = {}
    for name, values in zip(("key", *RESULT_COLUMNS), cols, strict=True):
        if name in _TOKEN_COLUMNS:
            data[name] = pd.array(list(values), dtype="Int64")
        else:
            arr = np.empty(len(values), dtype=object)
            arr[:] = values
            data[name] = pd.Series(arr, dtype=object, copy=False)
    return pd.DataFrame(data)


def _empty_frame() -> pd.DataFrame:
    return _frame([])


# --------------------------------------------------------------------------------------------
# parse_results_file


def parse_results_file(path: Path) -> pd.DataFrame:
    """Parse a responses JSONL file into a frame with columns ``key`` + :data:`RESULT_COLUMNS`.

    One row per result line, in file order. A line that is not valid JSON (for example a
    truncated last line) never raises: if its key can be recovered its row gets the error
    ``"result line N is not valid JSON"`` (N counts from 1), otherwise it is skipped and the row
    shows as missing after :func:`align_results`.
    """
    data = Path(path).read_bytes()
    if not data.strip():
        return _empty_frame()
    fast = _parse_arrow(data)
    if fast is not None:
        return fast
    return _parse_lines(data)


def _parse_lines(data: bytes) -> pd.DataFrame:
    """The plain parser: orjson per line, one Python tuple per result."""
    lines = data.split(b"\n")
    loads = orjson.loads
    rows: list[_Row] = []
    append = rows.append
    for i, line in enumerate(lines, 1):
        if not line or line.isspace():
            continue
        try:
            obj = loads(line)
        except orjson.JSONDecodeError:
            row = _broken_row(line, i)
        else:
            row = _result_row(obj, i)
        if row is not None:
            append(row)
    return _frame(rows)


def _parse_arrow(data: bytes) -> pd.DataFrame | None:
    """Vectorised parse with pyarrow; None when the file needs the per-line parser."""
    return None


# --------------------------------------------------------------------------------------------
# parse_inlined_responses


def parse_inlined_responses(items: Sequence[Any]) -> pd.DataFrame:
    """The result frame of the SDK's inline responses (``batch.dest.inlined_responses``).

    ``item.metadata["key"]`` gives the key (None when the item has none), ``item.response`` a
    ``GenerateContentResponse`` and ``item.error`` a ``JobError``.
    """
    rows: list[_Row] = []
    for item in items:
        metadata = getattr(item, "metadata", None) or {}
        key = metadata.get("key")
        response = getattr(item, "response", None)
        error = getattr(item, "error", None)
        if response is not None:
            resp = response.model_dump(mode="json", by_alias=True, exclude_none=True)
            rows.append((key, *_response_fields(resp)))
        elif error is not None:
            err = {"code": getattr(error, "code", None), "message": getattr(error, "message", None)}
            rows.append((key, None, _error_message(err), None, None, None))
        else:
            rows.append(
                (key, None, "the result has neither a response nor an error", None, None, None)
            )
    return _frame(rows)


# --------------------------------------------------------------------------------------------
# align_results


def _object_index(values: Any) -> pd.Index:
    """An object-dtype Index (pandas would otherwise infer its "str" dtype for text)."""
    return pd.Index(values, dtype=object, copy=False)


def align_results(parsed: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """One row per key of ``keys``, in that order (RangeIndex, :data:`RESULT_COLUMNS` only).

    A key with no result gets the error ``"no result returned for this row (key '17')"``; a key
    returned more than once keeps the first answer, with the error
    ``"the service returned 2 results for key '17'"``. Results for unknown keys are ignored.
    """
    expected = _object_index(keys)
    got = _object_index(parsed["key"].to_numpy(dtype=object))
    is_first = ~got.duplicated(keep="first")
    has_dups = not bool(is_first.all())
    unique = got[is_first] if has_dups else got
    rows = np.flatnonzero(is_first) if has_dups else np.arange(len(got))
    found = unique.get_indexer(expected)
    pos = np.where(found >= 0, rows[np.maximum(found, 0)] if len(rows) else 0, -1)
    missing = pos < 0
    out: dict[str, Any] = {}
    for name in RESULT_COLUMNS:
        col = parsed[name]
        if name in _TOKEN_COLUMNS:
            out[name] = col.array.take(pos, allow_fill=True)
        else:
            src = col.to_numpy(dtype=object)
            arr = src.take(np.maximum(pos, 0)) if len(src) else np.empty(len(pos), dtype=object)
            arr[missing] = None
            out[name] = arr
    errors = out["error"]
    if missing.any():
        miss_idx = np.flatnonzero(missing)
        errors[miss_idx] = [
            f"no result returned for this row (key {k!r})" for k in expected[miss_idx].tolist()
        ]
    if has_dups:
        dup_keys = got[got.duplicated(keep=False)]
        counts = pd.Series(dup_keys).value_counts()
        where = counts.index.get_indexer(expected)
        hit = np.flatnonzero(where >= 0)
        if hit.size:
            n = counts.to_numpy()[where[hit]]
            errors[hit] = [
                f"the service returned {c} results for key {k!r}"
                for c, k in zip(n.tolist(), expected[hit].tolist(), strict=True)
            ]
    return pd.DataFrame(
        {
            name: values if name in _TOKEN_COLUMNS else pd.Series(values, dtype=object, copy=False)
            for name, values in out.items()
        }
    )
