"""Several processes share one registry (same ``GEMBATCH_HOME``) and one service.

* Two processes submit the *same* DataFrame at the same moment: one run id, one batch.
* Two processes submit different runs and poll them all at once, while this process polls
  too: every run finishes with its own answers, the registry stays consistent.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import gemini_batch_magic as gbm
from gemini_batch_magic import _backend, _runs

from ._kernels import FAST, cell, engine_env

pytestmark = pytest.mark.slow


def _spawn(code: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", code], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _finish(procs: list[subprocess.Popen[str]]) -> list[str]:
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        outs.append(out)
    return outs


def _start_together(go: Path) -> str:
    """Code that reports ready (imports done), then waits for the common start signal."""
    return f"""
    import os, pathlib, time
    pathlib.Path({str(go)!r} + f".ready-{{os.getpid()}}").touch()
    while not pathlib.Path({str(go)!r}).exists():
        time.sleep(0.001)
    """


def _release(go: Path, n: int) -> None:
    """Start every process at the same instant, once all of them are ready."""
    deadline = time.monotonic() + 60
    while len(list(go.parent.glob(go.name + ".ready-*"))) < n:
        assert time.monotonic() < deadline, "the processes never got ready"
        time.sleep(0.02)
    go.touch()


def test_same_frame_submitted_by_two_processes_at_once_is_one_batch(
    emulator_factory: Any, gembatch_home: Path, tmp_path: Path
) -> None:
    emu = emulator_factory(pending_seconds=0.5)
    env = engine_env(gembatch_home, emu.url)
    go = tmp_path / "go"
    code = cell(FAST, """
    df = pd.DataFrame({"p": [f"same {i}" for i in range(30)]}, index=list(range(30))[::-1])
    """, _start_together(go), """
    run = df.gembatch.submit("p")
    out = run.wait(progress=False).result()
    assert out["response"].tolist() == df["p"].tolist(), out
    print(run.run_id)
    """)
    procs = [_spawn(code, env) for _ in range(2)]
    _release(go, 2)
    ids = [o.split()[-1] for o in _finish(procs)]
    assert len(set(ids)) == 1, ids
    assert len(emu.batches()) == 1  # paid once
    assert gbm.runs()["run_id"].tolist() == [ids[0]]


def test_concurrent_submits_and_polls_keep_every_update(
    emulator_factory: Any, gembatch_home: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    emu = emulator_factory(pending_seconds=0.2, rate=100)
    env = engine_env(gembatch_home, emu.url)
    # the same key as the kernels: the service shows a batch only to the key that made it
    monkeypatch.setenv("GEMINI_API_KEY", env["GEMINI_API_KEY"])
    _backend.reset()
    go = tmp_path / "go"
    procs = []
    for who in ("a", "b"):
        procs.append(_spawn(cell(FAST, _start_together(go), f"""
        runs = []
        for j in range(4):
            df = pd.DataFrame({{"p": [f"{who}{{j}}-{{i}}" for i in range(25)]}})
            runs.append((df, df.gembatch.submit("p", name="{who}" + str(j))))
        for df, run in runs:
            out = run.wait(progress=False).result()
            assert out["response"].tolist() == df["p"].tolist()
        print(" ".join(r.run_id for _, r in runs))
        """), env))
    _release(go, 2)
    # meanwhile this process polls every run it can see, as a jobs panel would
    deadline = time.monotonic() + 60
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
        for run_id in gbm.runs()["run_id"]:
            _runs.BatchRun(run_id).refresh()
        time.sleep(0.2)
    ids = [i for out in _finish(procs) for i in out.split()]
    assert len(ids) == 8 and len(set(ids)) == 8
    table = gbm.runs()
    assert sorted(table["run_id"]) == sorted(ids)
    assert (table["state"] == "SUCCEEDED").all()
    assert (table["succeeded"] == 25).all() and (table["failed"] == 0).all()
    assert len(emu.batches()) == 8
    for run_id in ids:
        run = gbm.attach(run_id)
        out = run.result()
        prefix = run.display_name
        assert out["response"].tolist() == [f"{prefix}-{i}" for i in range(25)]
    con = sqlite3.connect(gembatch_home / "registry.sqlite3")
    try:
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert con.execute("SELECT count(*) FROM shards WHERE batch_name IS NULL").fetchone() == (0,)
    finally:
        con.close()


def test_orphaned_submission_is_resumed_by_one_process_only(
    emulator_factory: Any, gembatch_home: Path, tmp_path: Path
) -> None:
    """The submitting process dies before its creates; two processes then attach and wait
    at the same instant. One of them takes the submission over; the service gets each shard
    once."""
    emu = emulator_factory()
    env = engine_env(gembatch_home, emu.url)
    died = _spawn(cell(FAST, """
    import os, signal
    from gemini_batch_magic import _backend
    gbm.configure(inline_limit_bytes=100, max_requests_per_shard=10)
    def die(**kw):
        os.kill(os.getpid(), signal.SIGKILL)
    _backend.get_client().batches.create = die
    df = pd.DataFrame({"p": [f"orphan {i}" for i in range(20)]})
    df.gembatch.submit("p", background=False)
    """), env)
    died.communicate(timeout=120)
    assert died.returncode == -9
    table = gbm.runs()
    assert table["state"].tolist() == ["SUBMITTING"] and emu.batches() == []
    run_id = table["run_id"][0]
    go = tmp_path / "go"
    procs = [_spawn(cell(FAST, _start_together(go), f"""
    out = gbm.attach({run_id!r}).wait(progress=False).result()
    assert out["response"].tolist() == [f"orphan {{i}}" for i in range(20)], out
    print("OK")
    """), env) for _ in range(2)]
    _release(go, 2)
    assert [o.strip() for o in _finish(procs)] == ["OK"] * 2
    assert len(emu.batches()) == 2, [b["displayName"] for b in emu.batches()]
