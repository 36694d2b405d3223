"""The registry: private files, WAL, safe when several kernels open it at the same moment."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

from gemini_batch_magic._registry import Registry

_OPEN = """
import sys, time
from pathlib import Path
from gemini_batch_magic._registry import Registry
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
