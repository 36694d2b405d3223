"""The registry: private files, WAL, safe when several kernels open it at the same moment."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from gemini_batch_magic._registry import Registry, RunRecord, ShardRecord

_OPEN = """
import sys, time
from pathlib import Path
import numpy as np

from gemini_batch_magic._registry import Registry, RunRecord, ShardRecord
start = float(sys.argv[2])
while time.time() < start:
    pass
reg = Registry(Path(sys.argv[1]))
with reg._connect() as con:
    print(con.execute("PRAGMA journal_mode").fetchone()[0])
"""


def test_kernels_opening_a_new_registry_at_once_all_succeed(tmp_path: Path) -> None:
    home = tmp_path / "home"
    start = time.time() + 1.5  # every process has imported by then, then they race
    procs = [
        subprocess.Popen([sys.executable, "-c", _OPEN, str(home), str(start)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    results = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err  # was: sqlite3.OperationalError: database is locked
        assert out.strip() == "wal"


def test_registry_files_are_private(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "home")
    assert stat.S_IMODE(os.stat(reg.home).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(reg.path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(reg.run_dir("abcd1234")).st_mode) == 0o700


def _run(n: int) -> RunRecord:
    shard = ShardRecord(run_id="r1", shard=0, start=0, stop=n, n_bytes=1, request_file="x",
                        upload_name=None, batch_name="batches/1", state="RUNNING", succeeded=0,
                        failed=0, pending=n, results_file=None, error=None, updated=0.0,
                        results_lost=None)
    return RunRecord(run_id="r1", created=0.0, updated=0.0, model="m", display_name="d",
                     backend="b", content_hash="h", n_rows=n, n_requests=n, source="file",
                     state="RUNNING", parent_id=None, est_cost=None, config={}, owner=None,
                     error=None, key_fp=None, positions_blob=np.arange(n).tobytes(),
                     index_blob=b"index", shards=[shard])


def test_run_blobs_live_apart_from_the_run_row(tmp_path: Path) -> None:
    """Every state change rewrites a run's row: its positions (80 MB at 10M rows) are not in
    it, so an update costs the same at any size."""
    reg = Registry(tmp_path / "home")
    with reg.transaction() as con:
        reg.insert_run(con, _run(1000))
    reg.update_shard("r1", 0, succeeded=10)
    with reg._connect() as con:
        row = con.execute("SELECT length(positions), index_blob FROM runs").fetchone()
    assert row == (0, None)
    assert np.array_equal(np.frombuffer(reg.positions("r1"), np.int64), np.arange(1000))
    assert reg.index_blob("r1") == b"index"
    assert reg.positions("nope") == b"" and reg.index_blob("nope") is None


def test_blobs_of_an_older_registry_are_read_from_the_run_row(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "home")
    with reg.transaction() as con:
        reg.insert_run(con, _run(10))
        con.execute("UPDATE runs SET positions = ?, index_blob = ?",
                    (np.arange(10).tobytes(), b"old"))
        con.execute("DELETE FROM run_blobs")
    assert np.array_equal(np.frombuffer(reg.positions("r1"), np.int64), np.arange(10))
    assert reg.index_blob("r1") == b"old"
