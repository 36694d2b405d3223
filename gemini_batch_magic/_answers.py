"""A run's answers: each shard's results aligned to its requests, then labelled like the input.

The steps, each a function of what the one before gave:

1. :meth:`RunAnswers.shard` -- a shard's stored results (parsed as they downloaded, or read
   back from the run folder) aligned by key to the shard's requests; rows the service did
   not answer say why. A file run (bigger than memory, read a shard at a time) also keeps
   each shard's aligned answers as parquet next to its results (``answers-0000.parquet``),
   so writing them out reads columns instead of parsing the results again.
2. :meth:`RunAnswers.own` -- the run's shards together, indexed by row position.
3. :func:`fill_from` -- failed rows filled from the run's retry runs (recursively).
4. :func:`label` -- one row per input row, in the input's order, with the input's labels;
   rows that were skipped (``on_empty='skip'``) say so.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa

from . import _embed, _results
from ._fetch import release_memory
from ._registry import TERMINAL, RunBook, ShardRecord

__all__ = ["SKIPPED", "RunAnswers", "fill_from", "label"]

SKIPPED = "skipped: the prompt was empty (on_empty='skip')"
#: A file run's aligned answers of one shard, kept in its run folder.
ALIGNED_FILE = "answers-{:04d}.parquet"
#: Where in that file's schema metadata the stamp of what it was aligned from is kept.
_STAMP = b"gembatch.aligned"


class RunAnswers:
    """The answers of one run's shards, aligned and cached per process."""

    def __init__(self, book: RunBook) -> None:
        self.book = book
        self._cache: dict[int, tuple[tuple[object, ...], pd.DataFrame]] = {}
        self._positions: np.ndarray | None = None
        #: an adopted run's keys per shard: the keys each shard's results came back with
        self._adopted_keys: dict[int, np.ndarray] = {}
        #: how results are parsed and aligned: text answers, or embeddings (_embed)
        self.codec: ModuleType = (_embed if book.record.config.get("kind") == "embed"
                                  else _results)
        #: a file run keeps each shard's aligned answers on disk (see the module docstring)
        self.stores = (book.record.config.get("input") == "files" and self.codec is _results
                       and not book.record.config.get("adopted"))

    def positions(self) -> np.ndarray:
        """Positions (in the root input) of the rows this run sent; read once, immutable.

        A run rebuilt from the service alone (``attach(batch, df=...)``) has none recorded:
        its positions are the keys its results came back with.
        """
        if self._positions is None:
            rec = self.book.record
            blob = rec.positions_blob or self.book.registry.positions(rec.run_id)
            if not blob and rec.config.get("adopted"):
                return self._keys_returned()
            self._positions = np.frombuffer(blob, dtype=np.int64)
        return self._positions

    def _keys_returned(self) -> np.ndarray:
        found = [self._returned(self._read(s)) for s in self.book.record.shards if s.results_file]
        return np.unique(np.concatenate(found)) if found else np.empty(0, np.int64)

    def _returned(self, parsed: pd.DataFrame) -> np.ndarray:
        """The row positions a results file answers (its keys), sorted, within the input."""
        n = self.book.record.n_rows
        keys = {int(k) for k in parsed["key"].dropna().astype(str) if k.isdigit()}
        return np.asarray(sorted(k for k in keys if k < n), dtype=np.int64)

    def _read(self, shard: ShardRecord) -> pd.DataFrame:
        path = self.book.run_dir() / str(shard.results_file)
        return (self.codec.parse_results_file(path) if path.suffix == ".jsonl"
                else self.codec.load_stored(pd.read_parquet(path)))

    def shard(self, shard: ShardRecord, parsed: pd.DataFrame | None = None, *,
              keep: bool = True) -> pd.DataFrame:
        """One shard's answers aligned to its requests (RangeIndex).

        ``parsed``: the answers just parsed while they downloaded, if any (else the stored
        file is read). ``keep=False`` leaves them out of this process's cache (a run bigger
        than memory is read one shard at a time).
        """
        cache_key = (shard.results_file, shard.state, shard.results_lost)
        cached = self._cache.get(shard.shard)
        if cached is not None and cached[0] == cache_key and parsed is None:
            return cached[1]
        n = shard.stop - shard.start
        if not shard.results_file:
            msg = (_no_answer(shard.state) if shard.state in TERMINAL
                   else f"not answered yet (shard {shard.shard} is {shard.state})")
            return self.codec.missing_frame(n, msg)
        if parsed is None and self.stores:
            table = self.stored(shard)
            if table is not None:
                aligned = frame_of(table)
                if keep:
                    self._cache[shard.shard] = (cache_key, aligned)
                return aligned
        if parsed is None or self.codec is not _results:  # not parsed as it downloaded
            parsed = self._read(shard)  # (another kernel fetched it, a restart; embeddings)
        if self.book.record.config.get("adopted"):  # the keys it came back with
            keys = self._adopted_keys[shard.shard] = self._returned(parsed)
        else:
            keys = self.positions()[shard.start:shard.stop]  # the keys are these, in decimal
        aligned, missing = self.codec.align_with_missing(parsed, keys)
        if len(keys) >= 100_000:  # the answers in file order are garbage now
            del parsed
            release_memory()
        if len(missing) and (shard.results_lost or shard.state != "SUCCEEDED"):
            self.codec.set_errors(aligned, missing,
                                  shard.results_lost or _no_answer(shard.state))
        if self.stores:
            self._store(shard, aligned)
        if keep:
            self._cache[shard.shard] = (cache_key, aligned)
        return aligned

    def _stamp(self, shard: ShardRecord) -> bytes | None:
        """What a shard's aligned answers depend on: its results file (name, size, time),
        its state and why its results were lost; None when it has no results file."""
        path = self.book.run_dir() / str(shard.results_file or "")
        try:
            st = path.stat() if shard.results_file else None
        except OSError:
            return None
        if st is None:
            return None
        return orjson.dumps([1, shard.results_file, st.st_size, st.st_mtime_ns, shard.state,
                             shard.results_lost, shard.stop - shard.start])

    def stored(self, shard: ShardRecord) -> pa.Table | None:
        """A file run's aligned answers of ``shard`` as stored at download (Arrow columns
        :data:`~._results.RESULT_COLUMNS`), or None when absent or stale."""
        import pyarrow.parquet as pq

        stamp = self._stamp(shard) if self.stores else None
        path = self.book.run_dir() / ALIGNED_FILE.format(shard.shard)
        if stamp is None or not path.exists():
            return None
        try:
            pf = pq.ParquetFile(path)
            if (pf.schema_arrow.metadata or {}).get(_STAMP) != stamp:
                return None
            table = pf.read()
        except (OSError, pa.ArrowException):
            return None
        return table.replace_schema_metadata(None)

    def _store(self, shard: ShardRecord, aligned: pd.DataFrame) -> None:
        """Keep ``aligned`` (one shard's answers) in the run folder, stamped; replaced whole."""
        import pyarrow.parquet as pq

        stamp = self._stamp(shard)
        if stamp is None:
            return
        path = self.book.run_dir() / ALIGNED_FILE.format(shard.shard)
        tmp = path.with_name(f".{path.name}.{os.getpid()}-{os.urandom(3).hex()}.part")
        table = pa.Table.from_pandas(aligned, preserve_index=False)
        table = table.replace_schema_metadata({_STAMP: stamp})
        try:
            # uncompressed, answers without a dictionary: written and read back at disk
            # speed (about the size of the answers in memory; compressing them took longer
            # than parsing saved)
            # (row groups of 65,536 rows: the writer holds one encoded row group at a time)
            pq.write_table(table, tmp, compression="none", row_group_size=1 << 16,
                           use_dictionary=["error", "finish_reason"])
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
        except OSError:  # only a cache: the results file stays the reference
            tmp.unlink(missing_ok=True)

    def own(self) -> pd.DataFrame:
        """This run's answers (not its children's), one row per request, by position."""
        frames = []
        positions = self.positions()
        for shard in self.book.record.shards:
            frame = self.shard(shard).copy(deep=False)
            if self.book.record.config.get("adopted"):
                if not shard.results_file:
                    continue  # nothing known of its rows yet
                keys = self._adopted_keys.get(shard.shard, positions[: len(frame)])
                frame.index = pd.Index(keys, name="position")
            else:
                frame.index = pd.Index(positions[shard.start:shard.stop], name="position")
            frames.append(frame)
        if not frames:
            return self.codec.missing_frame(0, "")
        return pd.concat(frames)


def frame_of(table: pa.Table) -> pd.DataFrame:
    """Aligned answers read back from Arrow: text columns kept in Arrow, tokens Int64."""
    data: dict[str, Any] = {}
    for name in table.column_names:
        col = table.column(name)
        if name in ("input_tokens", "output_tokens"):
            arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
            values = np.asarray(arr.fill_null(0)).astype(np.int64)
            data[name] = pd.arrays.IntegerArray(values, np.asarray(arr.is_null()))
        else:
            data[name] = _results.text_series(col)
    return pd.DataFrame(data)


def _no_answer(state: str) -> str:
    """The error of a row a batch ended without answering."""
    if state == "CANCELLED":
        return "no result: the batch was cancelled (CANCELLED) before this row was answered"
    return f"no result: the batch ended {state}"


def fill_from(own: pd.DataFrame, retried: pd.DataFrame) -> None:
    """Fill rows of ``own`` (by position) with the answers a retry run got right."""
    if "embedding" in own:
        return _embed.fill_from(own, retried)
    sub = retried[retried["error"].isna()]
    sub = sub[sub.index.isin(own.index)]
    if len(sub):
        own.loc[sub.index, list(sub.columns)] = sub.to_numpy()


def label(merged: pd.DataFrame, index: pd.Index, keep: np.ndarray | None,
          absent: str = SKIPPED) -> pd.DataFrame:
    """One row per input row (``index``), in order; ``keep``: only these positions (a retry
    run shows only its own rows); ``absent``: the error of rows the run did not send."""
    codec: ModuleType = _embed if "embedding" in merged else _results
    n = len(index)
    src = np.full(n, -1, dtype=np.int64)  # row of `merged` answering each input row
    src[merged.index.to_numpy()] = np.arange(len(merged))
    if n and (src == np.arange(n)).all():  # every row sent, in order: nothing to move
        frame = merged.reset_index(drop=True)
    else:
        frame = codec.take_rows(merged, src)
        skipped = np.flatnonzero(src < 0)
        if len(skipped):
            codec.set_errors(frame, skipped, absent)
    if keep is not None:
        frame = frame.iloc[keep]
        frame.index = index[keep]
    else:
        frame.index = index
    return frame
