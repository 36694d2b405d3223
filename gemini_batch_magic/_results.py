"""Batch results -> a DataFrame aligned to the sent rows by key (pure functions).

* :func:`parse_results_file` reads a responses JSONL file (wire spec §5.2), one row per line,
  in the file's (arbitrary) order. Broken lines never raise: they become error rows when their
  key can be recovered, and are skipped otherwise.
* :func:`parse_inlined_responses` builds the same frame from the SDK's inline responses.
* :func:`align_results` puts one row per expected key in the order the rows were sent. Rows are
  matched by key, never by position.

Columns (:data:`RESULT_COLUMNS`): ``response`` (the text of the first candidate, all non-thought
text parts joined, like the SDK's ``.text``), ``error`` (missing on success, else a short message
such as ``"500 INTERNAL: ..."``), ``finish_reason`` (e.g. ``"STOP"``), ``input_tokens`` and
``output_tokens`` (nullable Int64). Text columns have pandas' own text dtype: with pandas 3 that is
the Arrow-backed ``str`` dtype (missing values are NaN, test them with ``isna()``), so a million
answers are held as one UTF-8 buffer rather than a million Python objects; with pandas 2 they
are object dtype with None for missing.

Large files are parsed with a vectorised pyarrow reader and an explicit schema; any file it
cannot read exactly (a broken line, an unexpected type) goes through the plain per-line orjson
parser, which is the reference behaviour the fast path is tested against.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
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
    "StreamParser",
    "align_results",
    "align_with_missing",
    "empty_frame",
    "load_stored",
    "missing_frame",
    "parse_inlined_responses",
    "parse_results_file",
    "set_errors",
    "take_rows",
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

#: pandas 3 made its Arrow-backed ``str`` dtype the default for text; before, text was object.
PANDAS_3 = int(pd.__version__.split(".", 1)[0]) >= 3
#: The dtype of the text columns (see the module docstring).
TEXT_DTYPE: Any = pd.StringDtype("pyarrow", na_value=np.nan) if PANDAS_3 else np.dtype(object)


def text_series(values: Any, index: pd.Index | None = None) -> pd.Series:
    """A text column from an Arrow array or a sequence of str / None, as :data:`TEXT_DTYPE`.

    Arrow input is not copied (with pandas 3); strings are never turned into Python objects.
    """
    if not isinstance(values, (pa.Array, pa.ChunkedArray)):
        arr = np.empty(len(values), dtype=object)
        arr[:] = values
        values = pa.array(arr, type=pa.large_string(), from_pandas=True)
    elif values.type != pa.large_string():
        values = values.cast(pa.large_string())
    if PANDAS_3:
        return pd.Series(values, dtype=TEXT_DTYPE, index=index, copy=False)
    return pd.Series(values.to_numpy(zero_copy_only=False), dtype=object, index=index,
                     copy=False)


def arrow_text(values: Any) -> pa.Array | pa.ChunkedArray:
    """A text column (any dtype, str / None / NaN values) as an Arrow large_string array."""
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        arr = values
    elif isinstance(getattr(values, "array", None), pd.arrays.ArrowStringArray) or isinstance(
        getattr(values, "dtype", None), pd.ArrowDtype
    ):
        arr = values.array.__arrow_array__()  # the column's own chunks: no copy
    else:
        obj = np.asarray(values, dtype=object)
        arr = pa.array(obj, type=pa.large_string(), from_pandas=True)
    return arr if arr.type == pa.large_string() else arr.cast(pa.large_string())


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
            data[name] = text_series(list(values))
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


#: The file is parsed this many bytes at a time (cut at a line end, straight from a memory map),
#: so no whole-file Arrow table is ever built: only the extracted columns accumulate.
_READ_CHUNK = 64 << 20


def _line_cuts(view: np.ndarray, size: int) -> Iterator[tuple[int, int]]:
    """(start, stop) of consecutive pieces of ``view`` (bytes as uint8) of about ``size`` bytes,
    each ending at a line end (the last one at the end of the data)."""
    n = len(view)
    start = 0
    while start < n:
        stop = min(start + size, n)
        while stop < n and view[stop - 1] != 10:
            ends = np.flatnonzero(view[stop : stop + (1 << 20)] == 10)
            stop = stop + int(ends[0]) + 1 if len(ends) else min(stop + (1 << 20), n)
        yield start, stop
        start = stop


def _blank_bytes(view: np.ndarray) -> bool:
    """True when ``view`` (bytes as uint8) holds only whitespace; a block with text says so
    in its first bytes, so a big block is never copied."""
    return not bytes(view[:4096]).strip() and not bytes(view).strip()


def _parse_arrow_blocks(path: Path) -> pd.DataFrame | None:
    """:func:`_parse_arrow` over consecutive line-aligned blocks of a memory map of the file."""
    batches: list[dict[str, Any]] = []
    with pa.memory_map(str(path)) as mapped:
        whole = mapped.read_buffer()
        view = np.frombuffer(whole, dtype=np.uint8)
        for start, stop in _line_cuts(view, _READ_CHUNK):
            if _blank_bytes(view[start:stop]):
                continue
            got = _parse_arrow_batches(pa.BufferReader(whole.slice(start, stop - start)))
            if got is None:
                return None
            batches.extend(got)
    return _assemble(batches)


def _parse_block(block: pa.Buffer) -> list[dict[str, Any]] | None:
    """Parse one block on the parser thread, then hand back the reader's scratch memory: Arrow's
    allocator keeps freed memory per thread, and only this thread can return this thread's."""
    try:
        return _parse_arrow_batches(pa.BufferReader(block))
    finally:
        pa.default_memory_pool().release_unused()


class StreamParser:
    """Parses a responses file while it downloads, so parsing overlaps the transfer.

    Hand it the bytes in order with :meth:`write` (it is a file-like sink), then call
    :meth:`finish`. Every :data:`_READ_CHUNK` bytes the complete lines so far are parsed by the
    vectorised reader on a worker thread (Arrow releases the GIL), at most two blocks waiting.
    :meth:`finish` returns the same frame :func:`parse_results_file` would give for the same
    bytes, or None when some block needs the per-line parser (a broken line, a truncated
    download): the caller then parses the file it wrote, which is always the reference.
    """

    def __init__(self, block_size: int | None = None) -> None:
        self._block = block_size or _READ_CHUNK
        self._chunks: list[bytes] = []
        self._size = 0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gembatch-parse")
        self._jobs: deque[Future[list[dict[str, Any]] | None]] = deque()
        self._batches: list[dict[str, Any]] = []
        self._failed = False

    def write(self, data: bytes) -> int:
        if not self._failed:
            self._chunks.append(bytes(data))
            self._size += len(data)
            if self._size >= self._block:
                self._cut(final=False)
        return len(data)

    def _cut(self, final: bool) -> None:
        data = b"".join(self._chunks)
        end = len(data) if final else data.rfind(b"\n") + 1
        self._chunks = [data[end:]] if end < len(data) else []
        self._size = len(data) - end
        if end and not _blank_bytes(np.frombuffer(data, dtype=np.uint8, count=end)):
            block = pa.py_buffer(data).slice(0, end)
            while len(self._jobs) >= 2:
                self._collect(self._jobs.popleft())
            self._jobs.append(self._pool.submit(_parse_block, block))

    def _collect(self, job: Future[list[dict[str, Any]] | None]) -> None:
        got = job.result()
        if got is None:
            self._failed = True
            self._chunks, self._size = [], 0
        elif not self._failed:
            self._batches.extend(got)

    def finish(self) -> pd.DataFrame | None:
        """The parsed frame of everything written, or None (parse the file instead)."""
        try:
            if not self._failed and self._size:
                self._cut(final=True)
            while self._jobs:
                self._collect(self._jobs.popleft())
            batches, self._batches = self._batches, []
            return None if self._failed else _assemble(batches)
        finally:
            self.close()

    def close(self) -> None:
        """Stop: drop what was parsed (an abandoned download is never taken for results)."""
        for job in self._jobs:
            job.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._jobs.clear()
        self._chunks = []


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
    batches = _parse_arrow_batches(source)
    return None if batches is None else _assemble(batches)


def _parse_arrow_batches(source: Path | pa.NativeFile) -> list[dict[str, Any]] | None:
    """The result columns of each record batch :func:`_parse_arrow` reads, or None."""
    try:
        table = pa_json.read_json(
            source,
            read_options=pa_json.ReadOptions(block_size=_BLOCK_SIZE, use_threads=True),
            parse_options=pa_json.ParseOptions(
                explicit_schema=_SCHEMA, unexpected_field_behavior="ignore"
            ),
        )
        return [_batch_columns(batch) for batch in table.to_batches()]
    except (pa.ArrowException, _NeedsFallback, UnicodeDecodeError):
        return None


def _assemble(batches: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """The parsed frame (``key`` + RESULT_COLUMNS) from per-batch columns, text kept in Arrow.

    Consumes ``batches``: their text pieces are dropped as they are copied into one array.
    """
    if not batches:
        return empty_frame()
    data: dict[str, Any] = {}
    for name in ("key", *RESULT_COLUMNS):
        parts = [b[name] for b in batches]
        if name in _TOKEN_COLUMNS:
            values = np.concatenate([v for v, _ in parts])
            missing = np.concatenate([m for _, m in parts])
            data[name] = pd.arrays.IntegerArray(values, missing)
        else:
            # one contiguous array: Arrow's take over many chunks would first concatenate
            # them anyway, holding the column three times over instead of twice (fig. 4)
            whole = pa.concat_arrays(parts) if len(parts) > 1 else parts[0]
            parts.clear()
            for b in batches:
                b[name] = None  # each block's piece is freed as soon as it is copied
            data[name] = text_series(whole)
    return pd.DataFrame(data)


def _scatter(values: pa.Array, rows: np.ndarray, n: int) -> pa.Array:
    """An ``n``-long array holding ``values[i]`` at ``rows[i]`` and null elsewhere."""
    if len(rows) == n:
        return values
    idx = np.full(n, -1, dtype=np.int64)
    idx[rows] = np.arange(len(rows))
    return values.take(pa.array(idx, mask=idx < 0))


def _batch_columns(batch: pa.RecordBatch) -> dict[str, Any]:
    """The result columns of one record batch: text as Arrow large_string arrays (answers are
    never turned into Python objects); tokens as (int64, missing)."""
    keys = batch.column("key")
    resp = batch.column("response")
    err = batch.column("error")
    keep = np.asarray(keys.is_valid())
    has_resp = np.asarray(resp.is_valid()) & keep
    has_err = np.asarray(err.is_valid()) & ~has_resp & keep
    if (keep & ~has_resp & ~has_err).any():
        raise _NeedsFallback("a line with neither a response nor an error")
    n = len(batch)
    error = np.full(n, None, dtype=object)

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
    finish_c = pc.struct_field(c0, "finishReason")
    finish = _scatter(finish_c, rows_c, n)

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
    response = _scatter(joined, with_text, n)

    # Errors: no text, no candidates, or an error result.
    no_text = counts == 0
    if no_text.any():
        reasons = finish_c.filter(pa.array(no_text)).to_pylist()
        error[rows_c[no_text]] = [
            f"no text (finish_reason {f})" if f else "no text" for f in reasons
        ]
    no_cands = np.flatnonzero(has_resp & (n_cands == 0))
    if len(no_cands):
        feedback = pc.struct_field(pc.struct_field(resp, "promptFeedback"), "blockReason")
        blocked = feedback.take(pa.array(no_cands, type=pa.int64())).to_pylist()
        error[no_cands] = [
            f"no candidates (prompt blocked: {b})" if b else "no candidates" for b in blocked
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
    error_arr = pa.array(error, type=pa.large_string(), from_pandas=True)

    in_np = _masked_ints(prompt_tok, has_resp)
    out_np = _masked_ints(out_tok, has_resp)
    rows: Any = slice(None) if keep.all() else np.flatnonzero(keep)
    sel = None if isinstance(rows, slice) else pa.array(rows, type=pa.int64())

    def text_col(arr: pa.Array) -> pa.Array:
        arr = arr if sel is None else arr.take(sel)
        return arr if arr.type == pa.large_string() else arr.cast(pa.large_string())

    return {
        "key": text_col(keys),
        "response": text_col(response),
        "error": text_col(error_arr),
        "finish_reason": text_col(finish),
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


def _decimal_keys(keys: pa.Array) -> np.ndarray | None:
    """The keys as int64 when every one is a canonical non-negative decimal ("0", "17", never
    "017" or "+1") below 2**62; else None."""
    if keys.null_count or not len(keys):
        return None
    try:
        ints = pc.cast(keys, pa.int64())
    except pa.ArrowInvalid:
        return None
    values = np.asarray(ints)
    if values.min() < 0 or values.max() >= 1 << 62:
        return None
    if not pc.all(pc.equal(pc.cast(ints, pa.large_string()), keys)).as_py():
        return None
    return values


def _first_positions(
    expected: pa.Array, got: pa.Array, expected_ints: np.ndarray | None
) -> tuple[np.ndarray, bool]:
    """(position in ``got`` of each expected key's first result or -1, any key repeated)."""
    got_ints = _decimal_keys(got) if expected_ints is not None else None
    if expected_ints is not None and got_ints is not None:
        size = int(max(expected_ints.max(initial=-1), got_ints.max(initial=-1))) + 1
        if size <= 4 * (len(expected_ints) + len(got_ints)) + 1024:  # dense: a lookup table
            first = np.full(size, -1, dtype=np.int64)
            first[got_ints[::-1]] = np.arange(len(got_ints) - 1, -1, -1)  # first one wins
            has_dups = bool((np.bincount(got_ints, minlength=size) > 1).any())
            return first[expected_ints], has_dups
    found = pc.index_in(expected, value_set=got)  # the first result of each key, null if none
    has_dups = (pc.count_distinct(got).as_py() if len(got) else 0) < len(got)
    return np.asarray(pc.fill_null(found, -1)).astype(np.int64), has_dups


def take_rows(frame: pd.DataFrame, pos: np.ndarray) -> pd.DataFrame:
    """Rows ``pos`` of the :data:`RESULT_COLUMNS` of ``frame`` (RangeIndex); a position of -1
    gives a row with every value missing. Text is taken in Arrow, never as Python objects."""
    take = pa.array(pos, mask=pos < 0)
    return pd.DataFrame({
        name: frame[name].array.take(pos, allow_fill=True) if name in _TOKEN_COLUMNS
        else text_series(arrow_text(frame[name]).take(take))
        for name in RESULT_COLUMNS
    })


def set_errors(frame: pd.DataFrame, rows: np.ndarray, messages: Any) -> None:
    """Write ``messages`` (one message, or one per row) into ``frame["error"]`` at the
    positions (or boolean mask) ``rows``."""
    errors = frame["error"].to_numpy(dtype=object, copy=True)
    errors[rows] = messages
    frame["error"] = text_series(errors, index=frame.index)


def align_results(
    parsed: pd.DataFrame, keys: Sequence[str] | pa.Array | np.ndarray
) -> pd.DataFrame:
    """One row per key of ``keys``, in that order: :func:`align_with_missing`'s frame."""
    return align_with_missing(parsed, keys)[0]


def align_with_missing(
    parsed: pd.DataFrame, keys: Sequence[str] | pa.Array | np.ndarray
) -> tuple[pd.DataFrame, np.ndarray]:
    """One row per key of ``keys``, in that order (RangeIndex, :data:`RESULT_COLUMNS` only).

    ``keys`` are the expected keys (str), or an integer array standing for their decimal
    strings (how the engine keys rows: by position). A key with no result gets the error
    ``"no result returned for this row (key '17')"``; a key returned more than once keeps the
    first answer, with the error ``"the service returned 2 results for key '17'"``. Results
    for unknown keys are ignored. Also returns the positions (in ``keys``) that got no result,
    so callers never read them back out of the error text. Vectorised: decimal keys are matched through a lookup table,
    other keys with one Arrow hash lookup (``index_in``); the answers stay in Arrow.
    """
    expected_ints: np.ndarray | None = None
    if isinstance(keys, np.ndarray) and keys.dtype.kind in "iu":
        expected_ints = keys.astype(np.int64, copy=False)
        if len(expected_ints) and expected_ints.min() < 0:
            raise ValueError("integer keys must be non-negative positions")
        expected = pa.array(expected_ints).cast(pa.large_string())
    else:
        expected = arrow_text(keys)
        if isinstance(expected, pa.ChunkedArray):
            expected = expected.combine_chunks()
        expected_ints = _decimal_keys(expected)
    got = arrow_text(parsed["key"])
    if isinstance(got, pa.ChunkedArray):
        got = got.combine_chunks()
    pos, has_dups = _first_positions(expected, got, expected_ints)
    out = take_rows(parsed, pos)
    missing = np.flatnonzero(pos < 0)
    if len(missing):
        set_errors(out, missing, [
            f"no result returned for this row (key {k!r})"
            for k in expected.take(pa.array(missing)).to_pylist()
        ])
    if has_dups:
        counts = pc.value_counts(got)
        many = counts.filter(pc.greater(counts.field("counts"), 1))
        where = pc.index_in(expected, value_set=many.field("values"))
        hit = np.flatnonzero(np.asarray(where.is_valid()))
        if hit.size:
            n = np.asarray(many.field("counts"))[np.asarray(where.drop_null())]
            labels = expected.take(pa.array(hit)).to_pylist()
            set_errors(out, hit, [
                f"the service returned {c} results for key {k!r}"
                for c, k in zip(n.tolist(), labels, strict=True)
            ])
    return out, missing


def missing_frame(n: int, reason: str) -> pd.DataFrame:
    """``n`` rows with no answer, each with ``reason`` in ``error`` (empty: no error)."""
    none = pa.nulls(n, pa.large_string())
    return pd.DataFrame(
        {
            "response": text_series(none),
            "error": text_series(pa.array([reason] * n, pa.large_string()) if reason else none),
            "finish_reason": text_series(none),
            "input_tokens": pd.arrays.IntegerArray(np.zeros(n, np.int64), np.ones(n, bool)),
            "output_tokens": pd.arrays.IntegerArray(np.zeros(n, np.int64), np.ones(n, bool)),
        }
    )


def load_stored(frame: pd.DataFrame) -> pd.DataFrame:
    """A parsed frame read back from parquet: text columns as :data:`TEXT_DTYPE`, tokens Int64."""
    for col in ("key", *_TEXT_COLUMNS):
        frame[col] = text_series(arrow_text(frame[col]))
    for col in _TOKEN_COLUMNS:
        frame[col] = frame[col].astype("Int64")
    return frame
