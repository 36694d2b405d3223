"""Fetching a finished shard's results: downloaded once, kept on disk, parsed as they arrive.

:func:`download_shard` stores the answers of a finished batch job in the run's folder and
returns what it stored. A file batch's responses file is streamed to a temporary name of
this writer's own and renamed only once complete, so a download cut short (a killed kernel)
is never taken for results; it is kept as downloaded (the cheapest faithful copy), and
parsed while it downloads (a tee on the SDK's own download destination), so a million
answers are not read twice. Inline answers are stored as parquet. Either way they never
need a second download.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from . import _backend, _results, _vertex
from ._registry import ShardRecord, owner_alive
from .exceptions import BackendError

__all__ = ["RESULTS_EXPIRED", "FetchedShard", "download_shard", "release_memory"]

#: The error of each row whose results the service deleted before they were downloaded
#: (``retry_failed()`` sends them again).
RESULTS_EXPIRED = "results expired on the service"


@dataclass
class FetchedShard:
    """What :func:`download_shard` stored."""

    results_file: str  #: file name inside the run folder
    #: the answers parsed while they downloaded (in file order), or None: read the file
    parsed: pd.DataFrame | None
    #: why there are no answers although the batch had some (None: nothing was lost)
    lost: str | None = None


class _Tee:
    """A download destination that writes to a file and hands the same bytes to a parser."""

    def __init__(self, fh: Any, parser: _results.StreamParser) -> None:
        self._fh = fh
        self._parser = parser

    def write(self, data: bytes) -> int:
        self._fh.write(data)
        self._parser.write(data)
        return len(data)

    def flush(self) -> None:
        self._fh.flush()


def download_shard(run_dir: Path, shard: ShardRecord, job: Any) -> FetchedShard:
    """Fetch and store the results of the finished batch ``job`` of ``shard``."""
    dest = getattr(job, "dest", None)
    stem = f"results-{shard.shard:04d}"
    # the temporary name is this writer's own: two kernels may fetch the same shard at once
    own = f"{os.getpid()}-{secrets.token_hex(4)}.part"
    parsed: pd.DataFrame | None = None
    lost: str | None = None
    if dest is not None and dest.inlined_responses:
        out = run_dir / f"{stem}.parquet"
        tmp = run_dir / f"{stem}.parquet.{own}"
        _results.parse_inlined_responses(dest.inlined_responses).to_parquet(tmp, index=False)
    elif dest is not None and dest.file_name:
        out = run_dir / f"{stem}.jsonl"
        tmp = run_dir / f"{stem}.jsonl.{own}"
        try:
            parsed = _download_file(dest.file_name, tmp)
        except BackendError as exc:
            if exc.code not in (403, 404):  # a gone file reads as either (File API)
                raise
            # the service deleted the results before anyone downloaded them
            out = run_dir / f"{stem}.parquet"
            tmp = run_dir / f"{stem}.parquet.{own}"
            _results.empty_frame().to_parquet(tmp, index=False)
            lost = RESULTS_EXPIRED
    elif dest is not None and getattr(dest, "gcs_uri", None):  # Vertex AI prediction files
        out = run_dir / f"{stem}.jsonl"
        tmp = run_dir / f"{stem}.jsonl.{own}"
        parsed = _read_predictions(getattr(dest, "gcs_output_directory", None) or dest.gcs_uri,
                                   tmp)
    else:  # the batch ended without output
        out = run_dir / f"{stem}.parquet"
        tmp = run_dir / f"{stem}.parquet.{own}"
        _results.empty_frame().to_parquet(tmp, index=False)
    os.chmod(tmp, 0o600)
    os.replace(tmp, out)
    _sweep(run_dir, stem)
    return FetchedShard(results_file=out.name, parsed=parsed, lost=lost)


def _download_file(file_name: str, tmp: Path) -> pd.DataFrame | None:
    """Stream ``file_name`` to ``tmp``, parsing it on the way; None: parse the file instead."""
    parsers: list[_results.StreamParser] = []

    @contextlib.contextmanager
    def destination() -> Iterator[_Tee]:
        for old in parsers:  # an attempt cut short: its bytes are written anew
            old.close()
        parsers[:] = [_results.StreamParser()]
        with open(tmp, "wb") as fh:
            os.chmod(tmp, 0o600)
            yield _Tee(fh, parsers[0])

    try:
        _backend.download_file(file_name, destination)
        parsed = parsers[0].finish()  # parsed while it downloaded (None: read the file)
    except BaseException:
        for old in parsers:
            old.close()
        tmp.unlink(missing_ok=True)  # a half download is never kept, never read
        raise
    if parsed is not None and len(parsed) >= 100_000:
        release_memory()  # the download's and the parser's scratch: ~100 MB at 1M rows
    return parsed


def _read_predictions(directory: str, tmp: Path) -> pd.DataFrame | None:
    """Stream a Vertex AI job's prediction files to ``tmp`` as results lines, parsing them
    on the way (as :func:`_download_file` does for a File API download)."""
    parser = _results.StreamParser()
    try:
        with open(tmp, "wb") as fh:
            os.chmod(tmp, 0o600)
            _vertex.read_predictions(directory, _Tee(fh, parser).write)
        return parser.finish()
    except BaseException:
        parser.close()
        tmp.unlink(missing_ok=True)
        raise


def _sweep(run_dir: Path, stem: str) -> None:
    """Remove temporary files of ``stem`` left by a writer that died."""
    for leftover in run_dir.glob(f"{stem}.*.part"):
        pid = leftover.name.rsplit(".", 2)[-2].split("-")[0]
        if not owner_alive(f"{socket.gethostname()}:{pid}"):
            leftover.unlink(missing_ok=True)


def release_memory() -> None:
    """Hand freed heap memory back to the OS (glibc keeps what a million freed prompt
    strings occupied, which otherwise stays in the process's RSS for good)."""
    pa.default_memory_pool().release_unused()  # Arrow's own pool keeps freed buffers too
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            import ctypes

            ctypes.CDLL("libc.so.6").malloc_trim(0)
