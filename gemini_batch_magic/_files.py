"""Runs over files bigger than memory: read in batches, written as request shards as they are
read, answered back into a file one shard at a time.

>>> big = gbm.submit_file("tickets.parquet", template="Classify: {body}", key="ticket_id")
>>> big.wait()
>>> big.write_results("answers.parquet")   # streamed: memory bounded by one shard

The input is one file, a glob (sorted), a directory (its files of known formats, sorted) or a
list of paths (in that order) of parquet (``.parquet``, ``.pq``), CSV (``.csv``) or JSON
lines (``.jsonl``, ``.ndjson``, ``.json`` holding one object per line), read with
``pyarrow.dataset`` in record batches of ``batch_rows`` rows. Rows are numbered by their
position in the files concatenated in that order, which is their wire key, as for a
DataFrame run; the files of one run must share the columns it uses (with the same types).

One pass over the input, before anything is sent or recorded:

* each batch is made a small Arrow-backed DataFrame and its prompts rendered and checked by
  the DataFrame path's own code (:mod:`._requests`); empty prompts raise naming the file and
  row (or are skipped, ``on_empty="skip"``);
* the request lines are written straight into shard files (:class:`~._requests.RequestWriter`,
  the one sharding rule), in the registry's scratch folder;
* the key column (``key=``) is checked: a missing key raises naming its row; every key is
  hashed (64 bits) into one of 256 bucket files on disk by its top bits, and the values of
  the rows of each shard are written next to the shard's requests (``keys-0000.parquet``).

After the pass, each bucket is read alone (memory: 16 bytes per row of one bucket) and
repeated hashes are confirmed on the key values themselves (those rows are read again), so
a hash collision never refuses good input; a repeated key raises
:class:`~gemini_batch_magic.DuplicateKeyError` naming the value and both rows. Only then is
the run priced, confirmed and recorded (the scratch folder becomes the run's folder, as for a
DataFrame run: same dedupe by content hash, same submission).

:meth:`FileResults.write_results` writes every input row, in input order, with its key and
its answer, to parquet, CSV or JSON lines, one shard at a time.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import hashlib
import math
import os
import shutil
import string
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from . import _plan, _requests
from ._answers import SKIPPED, fill_from, label
from ._config import settings, validate_model
from ._fetch import release_memory
from ._plan import Estimate, Plan
from ._registry import OWNER, RunBook, RunRecord, ShardRecord, open_registry
from ._schemas import class_path, schema_json
from .exceptions import (
    ColumnError,
    ConfigError,
    DuplicateKeyError,
    EmptyPromptError,
    GemBatchError,
    InputError,
    RequestTooLargeError,
    RunNotDoneError,
    TemplateError,
)

__all__ = ["BATCH_ROWS", "FORMATS", "FileResults", "WrittenFiles", "estimate_file", "read_keys",
           "sources", "write"]

#: Input formats by file name ending (``.json`` is read as JSON lines).
FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "json",
           ".ndjson": "json", ".json": "json"}
#: Output formats of :meth:`FileResults.write_results` by file name ending.
OUT_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "jsonl",
               ".ndjson": "jsonl", ".json": "jsonl"}
#: Rows read (and rendered, checked, written) at a time: about 10 MB of prompts of 500
#: characters (reading a parquet batch takes a few times its size while it decodes).
BATCH_ROWS = 16_384
#: Key hashes are spread over this many bucket files (by their top 8 bits).
_BUCKETS = 256
#: Rows of a JSON lines output serialised at a time.
_JSONL_ROWS = 16_384
_KEY_FILE = "keys-{:04d}.parquet"


# --------------------------------------------------------------------------- the input
@dataclass(frozen=True)
class Source:
    """One input file."""

    path: Path
    format: str  #: ``parquet``, ``csv`` or ``json``

    def dataset(self) -> ds.Dataset:
        try:
            return ds.dataset(str(self.path), format=self.format)
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(f"cannot read {self.path} as {self.format}: {exc}") from None

    def batches(self, columns: list[str], batch_rows: int) -> Iterator[pa.RecordBatch]:
        """The file's rows in order, ``columns`` only, ``batch_rows`` at most at a time."""
        try:
            if self.format == "parquet":  # read a batch at a time, not a row group at a time
                import pyarrow.parquet as pq

                with pq.ParquetFile(self.path, pre_buffer=False, buffer_size=1 << 20) as f:
                    yield from f.iter_batches(batch_size=batch_rows, columns=columns,
                                              use_threads=False)
                return
            # little read-ahead: a few batches in memory, not the default sixteen
            yield from self.dataset().to_batches(columns=columns, batch_size=batch_rows,
                                                 batch_readahead=2, fragment_readahead=1)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
            raise InputError(
                f"cannot read {self.path} as {self.format}: {exc}; check the file (a CSV "
                "column whose values change type part way needs the same type throughout)"
            ) from None


#: Batches decoded ahead of the one being rendered (by a reader thread).
_READ_AHEAD = 2


def _read_ahead(batches: Iterator[pa.RecordBatch], depth: int = _READ_AHEAD
                ) -> Iterator[pa.RecordBatch]:
    """``batches``, read by a thread up to ``depth`` batches ahead: Arrow decodes without
    the GIL, so the file is read while the batch before is rendered and written. An error
    of the reader is raised here, where the batch it could not read was wanted."""
    import queue
    import threading

    box: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def read() -> None:
        try:
            for batch in batches:
                while not stop.is_set():
                    try:
                        box.put(("batch", batch), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            box.put(("end", None))
        except BaseException as exc:  # handed to the consumer
            box.put(("error", exc))

    thread = threading.Thread(target=read, name="gembatch-read", daemon=True)
    thread.start()
    try:
        while True:
            kind, item = box.get()
            if kind == "end":
                return
            if kind == "error":
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a reader waiting to put
            with contextlib.suppress(queue.Empty):
                box.get(timeout=0.05)
        thread.join()


def sources(path_or_glob: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]
            ) -> list[Source]:
    """The input files: a file, a glob (sorted), a directory (sorted) or a list (in order)."""
    items: list[Path] = []
    if isinstance(path_or_glob, (str, os.PathLike)):
        items = _expand(path_or_glob)
    elif isinstance(path_or_glob, Sequence) and path_or_glob:
        for item in path_or_glob:
            if not isinstance(item, (str, os.PathLike)):
                raise InputError(f"expected paths, got {type(item).__name__} {item!r}")
            items.extend(_expand(item))
    else:
        raise InputError(
            f"expected a path, a glob, a directory or a list of paths, got {path_or_glob!r}")
    out = []
    for path in items:
        fmt = FORMATS.get(path.suffix.lower())
        if fmt is None:
            raise InputError(
                f"cannot read {path}: its format is not known from its name; use "
                + ", ".join(FORMATS) + " files")
        out.append(Source(path, fmt))
    return out


def _expand(item: str | os.PathLike[str]) -> list[Path]:
    path = Path(os.path.expanduser(os.fspath(item)))
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.is_file()
                       and p.suffix.lower() in FORMATS and not p.name.startswith("."))
        if not found:
            raise InputError(f"the folder {path} holds no {', '.join(FORMATS)} file")
        return found
    if path.is_file():
        return [path]
    text = str(path)
    if any(c in text for c in "*?["):
        found = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
        if not found:
            raise InputError(f"no file matches {text!r}; check the pattern and the folder")
        return found
    raise InputError(f"input file {text!r} does not exist")


def _where(src: Source, row: int) -> str:
    return f"row {row:,} of {src.path}"


def _columns(srcs: list[Source], prompt: str | None, template: str | None,
             key: str | None) -> tuple[list[str], dict[str, pa.DataType]]:
    """The columns the run uses (checked in every file) and their types (the first file's)."""
    if (prompt is None) == (template is None):
        got = "both" if prompt is not None else "neither"
        raise InputError(
            "pass exactly one of prompt= (a column name) or template= (e.g. "
            f"'Summarise: {{text}}'); got {got}.")
    first = srcs[0].dataset().schema
    if template is not None:
        if not isinstance(template, str):
            raise InputError(f"template= must be a str, got {type(template).__name__}.")
        empty = first.empty_table().to_pandas()
        try:
            pieces = _requests._parse_template(template, empty)
        except ColumnError as exc:
            raise ColumnError(f"{srcs[0].path}: {exc}") from None
        used = list(dict.fromkeys(f for _, f, _ in pieces if f is not None))
        if not used:
            raise TemplateError(
                f"the template has no {{column}} placeholder, so every row would send the "
                f"same prompt ({template[:60]!r}). Name a column in it, e.g. "
                "'Summarise: {text}'.")
    else:
        if not isinstance(prompt, str):
            raise InputError(f"prompt= must be a column name (str), got {type(prompt).__name__}.")
        used = [prompt]
    if key is not None:
        if not isinstance(key, str):
            raise InputError(f"key= must be a column name (str), got {type(key).__name__}.")
        used = [*used, key] if key not in used else used
    types: dict[str, pa.DataType] = {}
    for src in srcs:
        schema = first if src is srcs[0] else src.dataset().schema
        for name in used:
            what = ("key column" if name == key else
                    "prompt column" if name == prompt else "template placeholder")
            if name not in schema.names:
                others = f" (the first file, {srcs[0].path}, has it)" if src is not srcs[0] else ""
                raise ColumnError(
                    f"{what} {name!r} is not a column of {src.path}{others}."
                    + _requests._close_matches(name, pd.Index(schema.names)))
            typ = schema.field(name).type
            known = types.get(name)
            if known is None or pa.types.is_null(known):
                types[name] = typ
            elif not pa.types.is_null(typ) and typ != known and not _castable(typ, known):
                raise InputError(
                    f"column {name!r} is {typ} in {src.path} but {known} in the files before "
                    "it; the files of one run must hold the same types: convert that file")
    return used, types


def _castable(a: pa.DataType, b: pa.DataType) -> bool:
    """Types a file may differ in (text widths, integer widths, int into float)."""
    text = (pa.types.is_string, pa.types.is_large_string, pa.types.is_string_view)
    if any(f(a) for f in text) and any(f(b) for f in text):
        return True
    if pa.types.is_integer(a) and (pa.types.is_integer(b) or pa.types.is_floating(b)):
        return True
    return pa.types.is_floating(a) and pa.types.is_floating(b)


def _conform(batch: pa.RecordBatch, types: Mapping[str, pa.DataType], src: Source,
             row: int) -> pa.RecordBatch:
    """The batch with every used column of the run's type."""
    if all(batch.schema.field(n).type == t for n, t in types.items()):
        return batch
    arrays = []
    for name in batch.schema.names:
        col, want = batch.column(name), types[name]
        if col.type != want:
            try:
                col = col.cast(want)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise InputError(
                    f"column {name!r} of {src.path} (rows from {row:,}) cannot be read as "
                    f"{want}, its type in the first file: {exc}") from None
        arrays.append(col)
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)


# --------------------------------------------------------------------------- keys
class _KeyCheck:
    """Key uniqueness in bounded memory: 64-bit hashes in bucket files on disk."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(mode=0o700)
        self._files = [open(folder / f"{i:03d}.bin", "wb") for i in range(_BUCKETS)]
        self.digest = hashlib.sha256(b"gembatch-keys-v1\0")

    def add(self, hashes: np.ndarray, rows: np.ndarray) -> None:
        """Record the hashes of the keys of these (global) rows."""
        self.digest.update(hashes.tobytes())
        bucket = (hashes >> np.uint64(56)).astype(np.int64)
        order = np.argsort(bucket, kind="stable")
        rec = np.empty(len(hashes), dtype=[("h", "<u8"), ("r", "<i8")])
        rec["h"], rec["r"] = hashes[order], rows[order]
        bounds = np.searchsorted(bucket[order], np.arange(_BUCKETS + 1))
        for i in np.flatnonzero(np.diff(bounds)).tolist():
            self._files[i].write(rec[bounds[i]:bounds[i + 1]].tobytes())

    def close(self) -> None:
        for f in self._files:
            f.close()

    def repeated(self, limit: int = 10_000) -> Iterator[list[np.ndarray]]:
        """Groups of rows whose keys hash alike, bucket by bucket, ``limit`` groups at most
        at a time."""
        self.close()
        groups: list[np.ndarray] = []
        for i in range(_BUCKETS):
            path = self.folder / f"{i:03d}.bin"
            rec = np.fromfile(path, dtype=[("h", "<u8"), ("r", "<i8")])
            if len(rec) < 2:
                continue
            rec.sort(order=["h", "r"], kind="stable")
            same = rec["h"][1:] == rec["h"][:-1]
            if not same.any():
                continue
            starts = np.flatnonzero(np.r_[True, ~same])
            stops = np.r_[starts[1:], len(rec)]
            for a, b in zip(starts.tolist(), stops.tolist(), strict=True):
                if b - a > 1:
                    groups.append(rec["r"][a:b].copy())
                    if len(groups) >= limit:
                        yield groups
                        groups = []
        if groups:
            yield groups


def _key_hashes(values: pa.Array) -> np.ndarray:
    """A 64-bit hash of each key value (equal values hash alike)."""
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    arr = values.to_numpy(zero_copy_only=False)
    if arr.dtype == object:
        return pd.util.hash_array(arr, categorize=False)  # type: ignore[no-any-return]
    return pd.util.hash_array(arr)  # type: ignore[no-any-return]


@dataclass
class _Offsets:
    """Where each file's rows start among all rows."""

    srcs: list[Source]
    starts: list[int]

    def locate(self, row: int) -> tuple[Source, int]:
        i = int(np.searchsorted(np.asarray(self.starts), row, side="right")) - 1
        return self.srcs[i], row - self.starts[i]


def _values_at(offsets: _Offsets, key: str, rows: np.ndarray, batch_rows: int
               ) -> dict[int, Any]:
    """The key values of these global rows, read again from the files."""
    wanted = np.unique(rows)
    out: dict[int, Any] = {}
    for i, src in enumerate(offsets.srcs):
        lo = offsets.starts[i]
        hi = offsets.starts[i + 1] if i + 1 < len(offsets.starts) else math.inf
        mine = wanted[(wanted >= lo) & (wanted < hi)]
        if not len(mine):
            continue
        row = lo
        for batch in src.batches([key], batch_rows):
            n = batch.num_rows
            take = mine[(mine >= row) & (mine < row + n)]
            if len(take):
                values = batch.column(0).take(pa.array(take - row)).to_pylist()
                out.update(zip(take.tolist(), values, strict=True))
            row += n
            if row > mine[-1]:
                break
    return out


def _check_unique(check: _KeyCheck, offsets: _Offsets, key: str, batch_rows: int) -> None:
    """Raise DuplicateKeyError for the first key value two rows share (hash collisions are
    confirmed on the values, so they never refuse good input)."""
    for groups in check.repeated():
        values = _values_at(offsets, key, np.concatenate(groups), batch_rows)
        dups: list[tuple[Any, int, int]] = []
        for rows in groups:
            seen: dict[Any, int] = {}
            for r in rows.tolist():
                v = values[r]
                if v in seen:
                    dups.append((v, seen[v], r))
                    break
                seen[v] = r
        if dups:
            value, a, b = dups[0]
            (sa, ra), (sb, rb) = offsets.locate(a), offsets.locate(b)
            more = f" ({len(dups):,} repeated keys in all)" if len(dups) > 1 else ""
            raise DuplicateKeyError(
                f"key column {key!r} holds {value!r} twice: {_where(sa, ra)} and "
                f"{_where(sb, rb)} (rows count from 0 in each file){more}. Results are "
                "matched to rows by key, so keys must be unique: fix the data, or pass "
                "key=None to number the rows instead; nothing was sent",
                key=value, rows=[(str(sa.path), ra), (str(sb.path), rb)],
            )


def read_keys(book: RunBook) -> pd.Index:
    """A file run's keys, all of them (what ``result()`` labels its rows with)."""
    folder = book.run_dir()
    key = book.record.config["key"]
    parts = [pq_read(folder / _KEY_FILE.format(s.shard)) for s in book.record.shards]
    column = pa.chunked_array([p for p in parts], type=parts[0].type) if parts else pa.array([])
    return pd.Index(column.to_pandas(), name=key)


def pq_read(path: Path) -> pa.Array:
    import pyarrow.parquet as pq

    col = pq.read_table(path).column(0)
    return col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)


# --------------------------------------------------------------------------- the pass
class _Meter:
    """What :class:`~._requests.RequestWriter` measures, writing nothing (for estimates)."""

    def __init__(self, shared: Mapping[str, Any], max_file_bytes: int, max_requests: int
                 ) -> None:
        self._shared = shared
        self._planner = _requests.ShardPlanner(max_file_bytes, max_requests)
        self.n_lines = 0
        self.starts: list[int] = []
        self.sizes: list[tuple[int, int]] = []  # (bytes, prompt bytes) per shard

    def add(self, prompts: Any, keys: Any) -> None:
        sizes, _ = _requests.measure_requests(prompts, keys, self._shared)
        prompt_sizes = sizes - _requests._LineMaker(self._shared).fixed - _key_sizes(keys)
        try:
            pieces = list(self._planner.split(sizes))
        except RequestTooLargeError as exc:
            i = self.n_lines + (exc.rows or [0])[0]
            raise RequestTooLargeError(str(exc), rows=[i], size=exc.size,
                                       limit=exc.limit) from None
        for shard, a, b in pieces:
            if shard == len(self.starts):
                self.starts.append(self.n_lines + a)
                self.sizes.append((0, 0))
            n_bytes, n_prompt = self.sizes[shard]
            self.sizes[shard] = (n_bytes + int(sizes[a:b].sum()),
                                 n_prompt + int(prompt_sizes[a:b].sum()))
        self.n_lines += len(sizes)

    def close(self) -> list[_requests.RequestFile]:
        stops = [*self.starts[1:], self.n_lines]
        return [_requests.RequestFile(path=Path(f"requests-{i:04d}.jsonl"), start=a, stop=b,
                                      n_bytes=n, sha256="", prompt_bytes=p)
                for i, (a, b, (n, p)) in enumerate(zip(self.starts, stops, self.sizes,
                                                       strict=True))]

    def abort(self) -> None:
        pass


def _key_sizes(keys: Any) -> np.ndarray:
    arr = keys.arrow() if isinstance(keys, _requests.ArrowText) else pa.array(list(keys))
    return np.asarray(pc.binary_length(arr).to_numpy(zero_copy_only=False),
                      dtype=np.int64)


@dataclass
class _Pass:
    """What one pass over the input found and wrote."""

    files: list[_requests.RequestFile]
    positions: np.ndarray  #: int64 positions of the rows sent
    n_rows: int
    n_skipped: int
    preview: list[tuple[str, Any]]  #: (prompt, key) of the first rows sent
    key_digest: str
    offsets: _Offsets


def _read_pass(srcs: list[Source], folder: Path, *, prompt: str | None,
               template: str | None, key: str | None, shared: dict[str, Any],
               on_empty: str, batch_rows: int, write: bool) -> _Pass:
    """Read every file once: prompts rendered and checked, request lines written (or
    measured), keys checked; raise on any bad row (see the module docstring)."""
    if on_empty not in ("raise", "skip"):
        raise InputError(f"on_empty={on_empty!r} is not a valid choice; use one of 'raise', "
                         "'skip'.")
    if not isinstance(batch_rows, int) or isinstance(batch_rows, bool) or batch_rows < 1:
        raise InputError(f"batch_rows must be a positive int, got {batch_rows!r}")
    used, types = _columns(srcs, prompt, template, key)
    text_cols = [c for c in used if c != key or c == prompt or _in_template(template, c)]
    max_bytes, max_requests = settings.max_file_bytes, settings.max_requests_per_shard
    sink: Any = (_requests.RequestWriter(folder, shared, max_file_bytes=max_bytes,
                                         max_requests=max_requests) if write
                 else _Meter(shared, max_bytes, max_requests))
    check = _KeyCheck(folder / "keycheck") if key is not None else None
    keys_out = _KeyFiles(folder, key) if key is not None and write else None
    sent: list[np.ndarray] = []
    preview: list[tuple[str, Any]] = []
    starts: list[int] = []
    offset = n_skipped = 0
    try:
        for src in srcs:
            starts.append(offset)
            row = 0
            for batch in _read_ahead(src.batches(used, batch_rows)):
                n = batch.num_rows
                if not n:
                    continue
                batch = _conform(batch, types, src, row)
                frame = pa.Table.from_batches([batch]).select(text_cols).to_pandas()
                frame.index = pd.RangeIndex(row, row + n)
                mask, texts = _prompts(frame, prompt, template, on_empty, src)
                take = np.flatnonzero(mask)
                positions = (offset + take).astype(np.int64)
                n_skipped += n - len(take)
                if len(take):
                    prompts = _requests.take_prompts(texts, take)
                    if len(preview) < 3:
                        for i in range(min(3 - len(preview), len(take))):
                            label_ = (batch.column(key)[int(take[i])].as_py() if key
                                      else int(positions[i]))
                            preview.append((str(prompts[i]), label_))
                    before, first_line = len(sink.starts), sink.n_lines
                    try:
                        sink.add(prompts, _plan.key_text(positions))
                    except RequestTooLargeError as exc:
                        line = (exc.rows or [0])[0] - first_line
                        at = int(take[line]) + row if 0 <= line < len(take) else row
                        raise RequestTooLargeError(
                            f"the request for {_where(src, at)} is {exc.size:,} bytes, "
                            f"larger than the file limit of {exc.limit:,} bytes; shorten that "
                            "prompt or raise max_file_bytes", rows=[(str(src.path), at)],
                            size=exc.size, limit=exc.limit) from None
                    sent.append(positions)
                    new_starts = sink.starts[max(before, 1):]
                else:
                    new_starts = []
                if key is not None:
                    values = batch.column(key)
                    if values.null_count:
                        bad = np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))
                        raise InputError(
                            f"key column {key!r} is missing at {_where(src, row + int(bad[0]))}"
                            f" ({len(bad):,} missing in rows {row:,}-{row + n - 1:,}; rows "
                            "count from 0 in each file); every row needs a key: fill them, "
                            "or pass key=None to number the rows instead",
                            rows=[(str(src.path), row + int(b)) for b in bad[:10]])
                    assert check is not None
                    check.add(_key_hashes(values), np.arange(offset, offset + n,
                                                             dtype=np.int64))
                    if keys_out is not None:
                        # a shard starting in this batch closes the key file of the one before
                        cuts = [_position_of(sent, s) - offset for s in new_starts]
                        keys_out.add(values, cuts)
                offset += n
                row += n
                del frame, texts, batch
        if not sent:
            raise EmptyPromptError(
                f"all {offset:,} prompts of {', '.join(str(s.path) for s in srcs[:3])} are "
                "missing, empty or whitespace-only (or the files hold no rows); check the "
                "prompt column or template", rows=[])
        offsets = _Offsets(srcs, starts)
        if check is not None:
            assert key is not None
            _check_unique(check, offsets, key, batch_rows)
        files = sink.close()
        if keys_out is not None:
            keys_out.close()
    except BaseException:
        sink.abort()
        if check is not None:
            check.close()
        raise
    finally:
        if check is not None:
            shutil.rmtree(check.folder, ignore_errors=True)
    return _Pass(files=files, positions=np.concatenate(sent), n_rows=offset,
                 n_skipped=n_skipped, preview=preview,
                 key_digest=check.digest.hexdigest() if check is not None else "",
                 offsets=offsets)


def _in_template(template: str | None, column: str) -> bool:
    if template is None:
        return False
    with contextlib.suppress(ValueError):
        return any(f == column for _, f, _, _ in string.Formatter().parse(template))
    return False


def _position_of(sent: list[np.ndarray], line: int) -> int:
    """The input position of request line ``line`` (it is in one of the last arrays)."""
    total = sum(len(a) for a in sent)
    for arr in reversed(sent):
        total -= len(arr)
        if line >= total:
            return int(arr[line - total])
    raise AssertionError(line)


def _prompts(frame: pd.DataFrame, prompt: str | None, template: str | None, on_empty: str,
             src: Source) -> tuple[np.ndarray, pd.Series]:
    """(rows to send, prompts) of one batch, by the DataFrame path's own rules; errors name
    the file and the rows (the frame's index holds the rows' numbers in the file)."""
    try:
        texts = _requests.prompt_texts(frame, prompt=prompt, template=template)
    except InputError as exc:
        raise type(exc)(f"{src.path} (rows count from 0): {exc}", **exc.fields()) from None
    try:
        return _requests.check_prompts(texts, on_empty=on_empty), texts
    except EmptyPromptError:
        if on_empty == "skip":  # this whole batch is empty: the others may not be
            return np.zeros(len(texts), dtype=bool), texts
        rows = frame.index[~_sendable(texts)]
        shown = ", ".join(f"{r:,}" for r in rows[:10]) + (" ..." if len(rows) > 10 else "")
        raise EmptyPromptError(
            f"{len(rows):,} prompt{'s' if len(rows) != 1 else ''} of {src.path} "
            f"{'are' if len(rows) != 1 else 'is'} missing, empty or whitespace-only: row "
            f"{shown} (rows count from 0 in the file); fill or drop them, or pass "
            "on_empty='skip' to send only the others",
            rows=[(str(src.path), int(r)) for r in rows[:10]],
        ) from None
    except InputError as exc:
        raise type(exc)(f"{src.path} (rows count from 0): {exc}", **exc.fields()) from None


def _sendable(texts: pd.Series) -> np.ndarray:
    """Rows of one batch whose prompt is not blank (all blank: all False)."""
    try:
        return _requests.check_prompts(texts, on_empty="skip")
    except EmptyPromptError:
        return np.zeros(len(texts), dtype=bool)


class _KeyFiles:
    """The key values of each shard's rows, written next to its requests as they arrive:
    ``keys-0000.parquet`` holds the keys of the input rows from the shard's first row up
    to the next shard's first row (rows skipped on the way included)."""

    def __init__(self, folder: Path, key: str) -> None:
        self.folder = folder
        self.key = key
        self.shard = 0
        self._parts: list[pa.Array] = []

    def add(self, values: pa.Array, cuts: list[int]) -> None:
        """The keys of a batch; a new shard starts at each of ``cuts`` (rows of it)."""
        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks()
        at = 0
        for cut in cuts:
            self._parts.append(values.slice(at, cut - at))
            self._flush()
            at = cut
        self._parts.append(values.slice(at))

    def _flush(self) -> None:
        import pyarrow.parquet as pq

        parts = [p for p in self._parts if len(p)] or self._parts[:1]
        column = pa.chunked_array(parts, type=self._parts[0].type)
        path = self.folder / _KEY_FILE.format(self.shard)
        pq.write_table(pa.table({self.key: column}), path)
        os.chmod(path, 0o600)
        self._parts = []
        self.shard += 1

    def close(self) -> None:
        if self._parts:
            self._flush()


# --------------------------------------------------------------------------- runs
def _new_record(done: _Pass, config: dict[str, Any], run_id: str, *, model: str,
                display_name: str, backend: str, content_hash: str, mode: str,
                est: Estimate) -> RunRecord:
    """The registry record of a new file run, before anything is sent."""
    from . import _backend

    now = time.time()
    return RunRecord(
        run_id=run_id, created=now, updated=now, model=model, display_name=display_name,
        backend=backend, content_hash=content_hash, n_rows=done.n_rows,
        n_requests=len(done.positions), source=mode, state="SUBMITTING", parent_id=None,
        est_cost=est.cost_usd, config=config, owner=OWNER, error=None,
        positions_blob=done.positions.tobytes(), key_fp=_backend.key_fingerprint(),
        index_blob=None,  # the keys are in the run folder, a file per shard
        shards=[ShardRecord(run_id=run_id, shard=i, start=f.start, stop=f.stop,
                            n_bytes=f.n_bytes, request_file=f.path.name,
                            pending=f.stop - f.start)
                for i, f in enumerate(done.files)],
    )


def _config(srcs: list[Source], prompt: str | None, template: str | None, key: str | None,
            model: str, system_instruction: str | None,
            generation_config: Mapping[str, Any] | None,
            safety_settings: Sequence[Mapping[str, Any]] | None, response_schema: Any,
            on_empty: str, keep_inputs: bool, display_name: str | None
            ) -> tuple[dict[str, Any], dict[str, Any]]:
    if display_name is not None and (not isinstance(display_name, str) or not display_name):
        raise ConfigError("name (display_name) must be a non-empty string")
    shared, _ = _requests.request_config(system_instruction, generation_config,
                                         safety_settings, response_schema)
    config = {
        "prompt": prompt, "template": template, "key": key,
        "system_instruction": system_instruction,
        "generation_config": dict(generation_config or {}),
        "safety_settings": [dict(s) for s in safety_settings or []],
        "response_schema": schema_json(response_schema) if response_schema is not None else None,
        "schema_class": class_path(response_schema),
        "on_empty": on_empty, "keep_inputs": bool(keep_inputs), "rows_hash": None,
        "input": "files", "files": [str(s.path) for s in srcs],
        "key_files": key is not None,
    }
    return shared, config


def _estimate(done: _Pass, model: str, shared: dict[str, Any], config: dict[str, Any],
              response_schema: Any, mode: str) -> Estimate:
    plan = Plan(model=model, prompts=[p for p, _ in done.preview], positions=done.positions,
                index=pd.RangeIndex(done.n_rows), n_rows=done.n_rows, shared=shared,
                config=config, schema=response_schema, display_name="",
                skipped=np.zeros(done.n_skipped, dtype=np.int8))
    est = _plan._priced(plan, sum(f.n_bytes for f in done.files),
                        sum(f.prompt_bytes for f in done.files), mode,
                        1 if mode == "inline" else len(done.files))
    for item, (_, label_) in zip(est.preview, done.preview, strict=False):
        item["row"] = label_
    return est


def _content_hash(model: str, shared: dict[str, Any], done: _Pass) -> str:
    h = hashlib.sha256()
    h.update(b"gembatch-files-v1\0" + model.encode() + b"\0")
    h.update(orjson.dumps(shared, option=orjson.OPT_SORT_KEYS) + b"\0")
    for f in done.files:
        h.update(f.sha256.encode() + b"\0")
    h.update(f"{done.n_rows}\0{done.key_digest}".encode())
    return h.hexdigest()[:32]


@dataclass
class WrittenFiles:
    """The request files of a file run, written and checked, ready to be recorded."""

    estimate: Estimate
    content_hash: str
    mode: str  #: ``inline`` or ``file``
    model: str
    make: Callable[[str], RunRecord]  #: the run's record, given its run id


def write(
    path_or_glob: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    prompt: str | None, *, template: str | None, key: str | None, model: str | None,
    system_instruction: str | None, generation_config: Mapping[str, Any] | None,
    safety_settings: Sequence[Mapping[str, Any]] | None, response_schema: Any,
    on_empty: str, display_name: str | None, keep_inputs: bool, batch_rows: int,
    folder: Path, backend: str,
) -> WrittenFiles:
    """Read the files once, writing their request files (and key files) into ``folder``;
    raises on any bad row before anything is sent or recorded (see the module docstring)."""
    model = validate_model(model or settings.model)
    srcs = sources(path_or_glob)
    shared, config = _config(srcs, prompt, template, key, model, system_instruction,
                             generation_config, safety_settings, response_schema, on_empty,
                             keep_inputs, display_name)
    done = _read_pass(srcs, folder, prompt=prompt, template=template, key=key,
                      shared=shared, on_empty=on_empty, batch_rows=batch_rows, write=True)
    total = sum(f.n_bytes for f in done.files)
    mode = ("inline" if len(done.files) == 1 and _plan._inline(total, len(done.positions))
            else "file")
    est = _estimate(done, model, shared, config, response_schema, mode)
    content_hash = _content_hash(model, shared, done)
    make = functools.partial(_new_record, done, config, model=model,
                             display_name=display_name or "gembatch", backend=backend,
                             content_hash=content_hash, mode=mode, est=est)
    return WrittenFiles(estimate=est, content_hash=content_hash, mode=mode, model=model,
                        make=make)


def estimate_file(
    path_or_glob: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    prompt: str | None = None,
    *,
    template: str | None = None,
    key: str | None = None,
    model: str | None = None,
    system_instruction: str | None = None,
    generation_config: Mapping[str, Any] | None = None,
    safety_settings: Sequence[Mapping[str, Any]] | None = None,
    response_schema: Any = None,
    on_empty: str = "raise",
    batch_rows: int = BATCH_ROWS,
) -> Estimate:
    """What :func:`~gemini_batch_magic.submit_file` would send and cost (the same pass over the files: the same
    checks, the exact request sizes), with a preview of the first requests. Nothing is sent,
    and nothing is written but scratch files, removed before it returns."""
    model = validate_model(model or settings.model)
    srcs = sources(path_or_glob)
    shared, config = _config(srcs, prompt, template, key, model, system_instruction,
                             generation_config, safety_settings, response_schema, on_empty,
                             False, None)
    tmp = Path(open_registry(settings.home).tmp_dir()) / os.urandom(8).hex()
    tmp.mkdir(mode=0o700)
    try:
        done = _read_pass(srcs, tmp, prompt=prompt, template=template, key=key,
                          shared=shared, on_empty=on_empty, batch_rows=batch_rows,
                          write=False)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    total = sum(f.n_bytes for f in done.files)
    mode = ("inline" if len(done.files) == 1 and _plan._inline(total, len(done.positions))
            else "file")
    return _estimate(done, model, shared, config, response_schema, mode)


# --------------------------------------------------------------------------- results out
class FileResults:
    """Results written to a file one shard at a time (mixed into
    :class:`~gemini_batch_magic.BatchRun`)."""

    run_id: str
    _book: RunBook
    _answers: Any

    def write_results(self, path: str | os.PathLike[str], *, format: str | None = None
                      ) -> int:
        """Write every input row, in input order, with its key and its answer, to ``path``;
        returns the number of rows written.

        Columns: the key column (named as ``key=``; ``row``, the row's number across the
        files, for a file run without one; the index for a DataFrame run), then the columns
        of :meth:`result` (``response``, ``error``, ``finish_reason``, ``input_tokens``,
        ``output_tokens``, ...). ``format`` (``parquet``, ``csv`` or ``jsonl``; default: from
        the name's ending). Answers are read one shard at a time, so memory is bounded by a
        shard, not the run; the file appears complete or not at all. Rows answered by
        :meth:`retry_failed` runs are merged in. Raises :class:`RunNotDoneError` while the run
        is live.
        """
        run: Any = self
        out = Path(os.fspath(path))
        fmt = _out_format(out, format)
        run._book.reload()
        if not run.done:
            run.refresh()
        if not run.done:
            st = run.stats
            raise RunNotDoneError(
                f"run {run.run_id} is still {run.state} ({st.succeeded + st.failed}/"
                f"{st.total} answered): call run.wait() first", run_id=run.run_id)
        if run.parent_id:
            raise InputError(
                f"run {run.run_id} is a retry of {run._root().run_id}: write the results of "
                "that run, which merges its retries", run_id=run.run_id)
        record = run.record
        positions = run._answers.positions()
        retried = [child._merged() for child in run.children()]
        index = None if record.config.get("input") == "files" else run._index()
        key_name = record.config.get("key") if record.config.get("input") == "files" else None
        writer = _TableWriter(out, fmt)
        written = 0
        try:
            bounds = _segments(record.shards, positions, record.n_rows)
            # answers as stored at download need nothing added: every row of the segment
            # sent, no retry to merge, nothing to parse (a response_schema) -> Arrow only
            plain = not retried and not record.config.get("response_schema")
            for shard, (lo, hi) in zip(record.shards, bounds, strict=True):
                stored = (run._answers.stored(shard)
                          if plain and hi - lo == shard.stop - shard.start else None)
                if stored is not None:
                    table = stored
                else:
                    frame = _shard_answers(run, shard).copy(deep=False)
                    frame.index = pd.Index(positions[shard.start:shard.stop], name="position")
                    for child in retried:
                        fill_from(frame, child)
                    frame.index = frame.index - lo
                    frame = run._finish_segment(label(frame, pd.RangeIndex(hi - lo), None,
                                                      SKIPPED))
                    table = pa.Table.from_pandas(frame, preserve_index=False)
                    del frame
                if index is not None:
                    part = index[lo:hi]
                    names = _index_names(index)
                    keys = pa.Table.from_pandas(
                        part.to_frame(index=False, name=names if len(names) > 1 else names[0]),
                        preserve_index=False)
                elif key_name:
                    keys = pa.table({key_name: pq_read(run._book.run_dir()
                                                       / _KEY_FILE.format(shard.shard))})
                else:
                    keys = pa.table({"row": pa.array(np.arange(lo, hi, dtype=np.int64))})
                writer.write(_joined(keys, table))
                written += hi - lo
                del table, keys, stored
                release_memory()
            writer.close()
        except BaseException:
            writer.abort()
            raise
        return written

    def _finish_segment(self, frame: pd.DataFrame) -> pd.DataFrame:
        """What :meth:`result` adds to the labelled answers (vectors, parsed JSON)."""
        from . import _embed, _schemas
        from ._state import state

        run: Any = self
        if "embedding" in frame:
            return _embed.finish(frame, run.record.config.get("output_dimensionality"))
        schema = run.record.config.get("response_schema")
        if schema:
            cls = state.schema_classes.get(run._root().run_id)
            if cls is None and run.record.config.get("schema_class"):
                cls = _schemas.import_model_class(run.record.config["schema_class"])
            frame = _schemas.add_parsed(frame, schema, cls)
        return frame


def _shard_answers(run: Any, shard: ShardRecord) -> pd.DataFrame:
    """One shard's answers aligned to its requests, its results file read in blocks (not
    memory-mapped: a mapped file counts in the process's memory as it is read)."""
    from . import _results
    from ._answers import frame_of

    stored = run._answers.stored(shard)
    if stored is not None:  # aligned as they downloaded
        return frame_of(stored)
    path = run._book.run_dir() / str(shard.results_file or "")
    parsed = None
    if shard.results_file and path.suffix == ".jsonl" and run._answers.codec is _results:
        parser = _results.StreamParser()
        try:
            with open(path, "rb") as fh:
                while block := fh.read(8 << 20):
                    parser.write(block)
            parsed = parser.finish()  # None: a broken line; the file is parsed as usual
        except BaseException:
            parser.close()
            raise
    return run._answers.shard(shard, parsed=parsed, keep=False)  # type: ignore[no-any-return]


def _index_names(index: pd.Index) -> Any:
    if isinstance(index, pd.MultiIndex):
        return [n if n is not None else f"level_{i}" for i, n in enumerate(index.names)]
    return [index.name if index.name is not None else "row"]


def _segments(shards: Sequence[ShardRecord], positions: np.ndarray, n_rows: int
              ) -> list[tuple[int, int]]:
    """The input rows each shard's part of the output covers: from its first row to the
    next shard's first row (rows skipped on the way go with the shard before them)."""
    firsts = [0] + [int(positions[s.start]) for s in shards[1:]]
    return list(zip(firsts, [*firsts[1:], n_rows], strict=True))


def _joined(keys: pa.Table, answers: pa.Table) -> pa.Table:
    """Key columns first; an answer column named like a key column gets ``_result``."""
    names = set(keys.column_names)
    answers = answers.rename_columns(
        [f"{c}_result" if c in names else c for c in answers.column_names])
    for name, column in zip(answers.column_names, answers.columns, strict=True):
        keys = keys.append_column(name, column)
    return keys


def _out_format(path: Path, format: str | None) -> str:
    choices = sorted(set(OUT_FORMATS.values()))
    if format is not None:
        if format not in choices:
            raise ConfigError(f"format={format!r} is not one of {', '.join(choices)}")
        return format
    fmt = OUT_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ConfigError(
            f"cannot tell the format of {str(path)!r} from its name: end it in "
            f"{', '.join(OUT_FORMATS)}, or pass format= ({', '.join(choices)})")
    return fmt


class _TableWriter:
    """Arrow tables appended to one file, renamed into place when complete."""

    def __init__(self, path: Path, fmt: str) -> None:
        self.path = path
        self.fmt = fmt
        self.tmp = path.with_name(f".{path.name}.{os.getpid()}-{os.urandom(3).hex()}.part")
        self._writer: Any = None
        self._schema: pa.Schema | None = None
        self._fh: Any = None

    def write(self, table: pa.Table) -> None:
        if self._schema is None:
            # a column all missing in the first shard is text (its answers may come later)
            self._schema = pa.schema([pa.field(f.name, pa.large_string())
                                      if pa.types.is_null(f.type) else f
                                      for f in table.schema]).remove_metadata()
            self._open()
        try:
            table = table.replace_schema_metadata(None).cast(self._schema)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as exc:
            raise GemBatchError(f"cannot write the results to {self.path}: a later shard's "
                                f"columns differ from the first's ({exc})") from None
        if self.fmt == "jsonl":
            dumps = orjson.dumps
            opts = orjson.OPT_NAIVE_UTC | orjson.OPT_SERIALIZE_NUMPY
            for start in range(0, table.num_rows, _JSONL_ROWS):
                rows = table.slice(start, _JSONL_ROWS).to_pylist()
                self._fh.write(b"".join(dumps(r, option=opts, default=str) + b"\n"
                                        for r in rows))
        else:
            self._writer.write_table(table)

    def _open(self) -> None:
        assert self._schema is not None
        if self.fmt == "parquet":
            import pyarrow.parquet as pq

            self._writer = pq.ParquetWriter(self.tmp, self._schema)
        elif self.fmt == "csv":
            import pyarrow.csv as pacsv

            self._writer = pacsv.CSVWriter(self.tmp, self._schema)
        else:
            self._fh = open(self.tmp, "wb")

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._fh is not None:
            self._fh.close()
        if self._schema is None:  # nothing written: not a run with rows
            raise GemBatchError(f"no rows to write to {self.path}")
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            if self._writer is not None:
                self._writer.close()
            if self._fh is not None:
                self._fh.close()
        self.tmp.unlink(missing_ok=True)
