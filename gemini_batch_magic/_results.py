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
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

__all__ = [
    "RESULT_COLUMNS",
    "align_results",
    "empty_frame",
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
    try:
        if obj.get("response") is not None:
            return (key, *_response_fields(obj["response"]))
        if obj.get("error") is not None:
            return key, None, _error_message(obj["error"]), None, None, None
    except (AttributeError, TypeError, KeyError, IndexError):
        return key, None, f"result line {line_no} has an unexpected shape", None, None, None
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


def empty_frame() -> pd.DataFrame:
    """The parsed frame of a file with no result lines: ``key`` + RESULT_COLUMNS, no rows."""
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
    path = Path(path)
    if _is_blank(path):
        return empty_frame()
    fast = _parse_with_broken_last_line(path)
    if fast is None:
        fast = _parse_arrow_blocks(path)
    return fast if fast is not None else _parse_lines(path.read_bytes())


#: The file is read and parsed this many bytes at a time (cut at a line end), so the whole
#: file and its whole Arrow table are never in memory at once: only the answers, as Python
#: strings, accumulate.
_READ_CHUNK = 64 << 20


def _parse_arrow_blocks(path: Path) -> pd.DataFrame | None:
    """:func:`_parse_arrow` over consecutive line-aligned chunks of the file."""
    frames: list[pd.DataFrame] = []
    with open(path, "rb") as f:
        carry = b""
        while True:
            block = f.read(_READ_CHUNK)
            if block:
                data = carry + block if carry else block
                cut = data.rfind(b"\n")
                if cut < 0:
                    carry = data
                    continue
                carry, data = data[cut + 1 :], data[: cut + 1]
            else:
                data, carry = carry, b""
            if data.strip():
                frame = _parse_arrow(pa.BufferReader(data))
                if frame is None:
                    return None
                frames.append(frame)
            del data
            if not block:
                break
    if not frames:
        return empty_frame()
    if len(frames) == 1:
        return frames[0]
    out: dict[str, Any] = {}
    for name in ("key", *RESULT_COLUMNS):
        if name in _TOKEN_COLUMNS:
            out[name] = pd.array(
                np.concatenate([f[name].to_numpy(dtype="int64", na_value=0) for f in frames]),
                dtype="Int64",
            )
            missing = np.concatenate([f[name].isna().to_numpy() for f in frames])
            out[name][missing] = pd.NA
        else:
            out[name] = pd.Series(
                np.concatenate([f[name].to_numpy(dtype=object) for f in frames]),
                dtype=object, copy=False,
            )
    return pd.DataFrame(out)


def _is_blank(path: Path) -> bool:
    """True for an empty (or whitespace-only) file, read in blocks."""
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            if block.strip():
                return False
    return True


def _last_line(path: Path) -> tuple[int, bytes]:
    """(offset, bytes) of the last non-blank line, reading the file backwards in blocks."""
    with open(path, "rb") as f:
        end = f.seek(0, 2)
        tail = b""
        pos = end
        while pos > 0:
            step = min(pos, 1 << 16)
            pos -= step
            f.seek(pos)
            tail = f.read(step) + tail
            body = tail.rstrip()
            cut = body.rfind(b"\n")
            if cut >= 0 or pos == 0:
                return pos + cut + 1, body[cut + 1 :]
    return 0, b""


def _parse_with_broken_last_line(path: Path) -> pd.DataFrame | None:
    """A download cut short breaks only the last line: read the others vectorised.

    Returns None unless the last line is broken and every other line suits the vectorised
    reader (which then reads them straight from a memory map of the file).
    """
    cut, line = _last_line(path)
    try:
        orjson.loads(line)
        return None  # the last line is fine: nothing special here
    except orjson.JSONDecodeError:
        pass
    if cut <= 0:
        return None
    with pa.memory_map(str(path)) as mapped:
        head_buf = mapped.read_buffer(cut)
        head = _parse_arrow(pa.BufferReader(head_buf))
        if head is None:
            return None
        view = np.frombuffer(head_buf, dtype=np.uint8)
        n_lines = sum(
            int(np.count_nonzero(view[i : i + (1 << 26)] == 10))
            for i in range(0, len(view), 1 << 26)
        )
    tail = _parse_lines(line, first_line=n_lines + 1)
    if len(tail) == 0:
        return head
    return pd.concat([head, tail], ignore_index=True)


def _parse_lines(data: bytes, first_line: int = 1) -> pd.DataFrame:
    """The plain parser: orjson per line, one Python tuple per result (the reference
    behaviour; ``first_line`` is the line number of ``data``'s first line)."""
    lines = data.split(b"\n")
    loads = orjson.loads
    rows: list[_Row] = []
    append = rows.append
    for i, line in enumerate(lines, first_line):
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


#: The fields the vectorised reader extracts; everything else in a line is skipped unparsed.
_PART = pa.struct([("text", pa.string()), ("thought", pa.bool_())])
_CANDIDATE = pa.struct(
    [("content", pa.struct([("parts", pa.list_(_PART))])), ("finishReason", pa.string())]
)
_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        (
            "response",
            pa.struct(
                [
                    ("candidates", pa.list_(_CANDIDATE)),
                    (
                        "usageMetadata",
                        pa.struct(
                            [
                                ("promptTokenCount", pa.int64()),
                                ("candidatesTokenCount", pa.int64()),
                                ("thoughtsTokenCount", pa.int64()),
                            ]
                        ),
                    ),
                    ("promptFeedback", pa.struct([("blockReason", pa.string())])),
                ]
            ),
        ),
        (
            "error",
            pa.struct([("code", pa.int64()), ("message", pa.string()), ("status", pa.string())]),
        ),
    ]
)
#: Arrow reads the file in blocks of this size on its thread pool; a line longer than a block
#: makes it fail, and the per-line parser takes over.
_BLOCK_SIZE = 16 << 20


class _NeedsFallback(Exception):
    """The vectorised reader met something only the per-line parser reports exactly."""


def _parse_arrow(source: Path | pa.NativeFile) -> pd.DataFrame | None:
    """Vectorised parse with pyarrow's JSON reader and an explicit schema.

    Returns None when the file needs the per-line parser: a line that is not valid JSON, a
    value of an unexpected type, a line longer than the block size, or a line with neither a
    response nor an error (whose message names the line number).
    """
    try:
        table = pa_json.read_json(
            source,
            read_options=pa_json.ReadOptions(block_size=_BLOCK_SIZE, use_threads=True),
            parse_options=pa_json.ParseOptions(
                explicit_schema=_SCHEMA, unexpected_field_behavior="ignore"
            ),
        )
        frames = [_batch_columns(batch) for batch in table.to_batches()]
    except (pa.ArrowException, _NeedsFallback, UnicodeDecodeError):
        return None
    if not frames:
        return empty_frame()
    data: dict[str, Any] = {}
    for name in ("key", *RESULT_COLUMNS):
        parts = [f[name] for f in frames]
        if name in _TOKEN_COLUMNS:
            values = np.concatenate([v for v, _ in parts])
            missing = np.concatenate([m for _, m in parts])
            data[name] = pd.arrays.IntegerArray(values, missing)
        else:
            data[name] = pd.Series(np.concatenate(parts), dtype=object, copy=False)
    return pd.DataFrame(data)


def _objects(arr: pa.Array) -> np.ndarray:
    """An Arrow string array as an object array of str, None for null."""
    out = arr.to_numpy(zero_copy_only=False)
    return out if out.dtype == object else out.astype(object)


def _batch_columns(batch: pa.RecordBatch) -> dict[str, Any]:
    """The result columns of one record batch: object arrays; tokens as (int64, missing)."""
    keys = batch.column("key")
    resp = batch.column("response")
    err = batch.column("error")
    keep = np.asarray(keys.is_valid())
    has_resp = np.asarray(resp.is_valid()) & keep
    has_err = np.asarray(err.is_valid()) & ~has_resp & keep
    if (keep & ~has_resp & ~has_err).any():
        raise _NeedsFallback("a line with neither a response nor an error")
    n = len(batch)
    response = np.full(n, None, dtype=object)
    error = np.full(n, None, dtype=object)
    finish = np.full(n, None, dtype=object)

    # Usage counts: input = promptTokenCount; output = candidates + thoughts when either is set.
    usage = pc.struct_field(resp, "usageMetadata")
    prompt_tok = pc.struct_field(usage, "promptTokenCount")
    cand_tok = pc.struct_field(usage, "candidatesTokenCount")
    thought_tok = pc.struct_field(usage, "thoughtsTokenCount")
    out_tok = pc.if_else(
        pc.or_(cand_tok.is_valid(), thought_tok.is_valid()),
        pc.add(pc.fill_null(cand_tok, 0), pc.fill_null(thought_tok, 0)),
        pa.nulls(n, pa.int64()),
    )

    # First candidate of each response (rows without candidates get no first candidate).
    cands = pc.struct_field(resp, "candidates")
    n_cands = np.asarray(pc.fill_null(pc.list_value_length(cands), 0))
    rows_c = np.flatnonzero(n_cands > 0)
    first = np.asarray(cands.offsets)[rows_c] if len(rows_c) else np.zeros(0, np.int64)
    c0 = cands.values.take(pa.array(first, type=pa.int64()))
    finish[rows_c] = _objects(pc.struct_field(c0, "finishReason"))

    # Text: every non-thought text part of the first candidate, joined.
    parts = pc.struct_field(pc.struct_field(c0, "content"), "parts")
    flat = pc.list_flatten(parts)
    parent = np.asarray(pc.list_parent_indices(parts))
    text = pc.struct_field(flat, "text")
    kept = pc.and_(
        text.is_valid(), pc.invert(pc.fill_null(pc.struct_field(flat, "thought"), False))
    )
    kept_np = np.asarray(kept)
    kept_parent = parent[kept_np]
    counts = np.bincount(kept_parent, minlength=len(rows_c))
    texts = text.filter(kept)
    if len(texts) == np.count_nonzero(counts):  # one text part each: no joining needed
        joined = texts
    else:
        offsets = np.concatenate(([0], np.cumsum(counts))).astype(np.int32)
        joined = pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), texts), "")
        joined = joined.filter(pa.array(counts > 0))
    with_text = rows_c[counts > 0]
    response[with_text] = _objects(joined)

    # Errors: no text, no candidates, or an error result.
    no_text = rows_c[counts == 0]
    error[no_text] = [
        f"no text (finish_reason {f})" if f else "no text" for f in finish[no_text].tolist()
    ]
    no_cands = np.flatnonzero(has_resp & (n_cands == 0))
    if len(no_cands):
        block = _objects(pc.struct_field(pc.struct_field(resp, "promptFeedback"), "blockReason"))
        error[no_cands] = [
            f"no candidates (prompt blocked: {b})" if b else "no candidates"
            for b in block[no_cands].tolist()
        ]
    err_rows = np.flatnonzero(has_err)
    if len(err_rows):
        idx = pa.array(err_rows, type=pa.int64())
        codes = err.field("code").take(idx).to_pylist()
        messages = err.field("message").take(idx).to_pylist()
        statuses = err.field("status").take(idx).to_pylist()
        error[err_rows] = [
            _error_message({"code": c, "message": m, "status": st})
            for c, m, st in zip(codes, messages, statuses, strict=True)
        ]

    in_np = _masked_ints(prompt_tok, has_resp)
    out_np = _masked_ints(out_tok, has_resp)
    rows = np.flatnonzero(keep)
    return {
        "key": _objects(keys)[rows],
        "response": response[rows],
        "error": error[rows],
        "finish_reason": finish[rows],
        "input_tokens": (in_np[0][rows], in_np[1][rows]),
        "output_tokens": (out_np[0][rows], out_np[1][rows]),
    }


def _masked_ints(arr: pa.Array, valid_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An int64 Arrow array as (values, missing), missing also outside ``valid_rows``."""
    values = np.asarray(pc.fill_null(arr, 0)).astype(np.int64)
    return values, ~(np.asarray(arr.is_valid()) & valid_rows)


# --------------------------------------------------------------------------------------------
# parse_inlined_responses


def parse_inlined_responses(items: Sequence[Any]) -> pd.DataFrame:
    """The result frame of the SDK's inline responses (``batch.dest.inlined_responses``).

    ``item.metadata["key"]`` gives the key (None when the item has none), ``item.response`` a
    ``GenerateContentResponse`` and ``item.error`` a ``JobError``. Same columns and messages as
    :func:`parse_results_file`.
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
    Vectorised: one hash lookup of all keys (``Index.get_indexer``) and numpy takes.
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
        counts = pd.Series(dup_keys, dtype=object).value_counts()
        where = _object_index(counts.index).get_indexer(expected)
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
