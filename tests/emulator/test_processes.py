"""Worker processes: same bytes as in-thread answering, cancel, resume, fallback, CLI.

No wall-clock assertions: that the HTTP side stays responsive is shown structurally (the
blocks were answered by other processes, reported by ``emu.workers()``).
"""

from __future__ import annotations

import io
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import urllib.request
import warnings
from pathlib import Path
from typing import Any

import orjson
import pytest
from google import genai
from google.genai import types

from gemini_batch_magic.emulator import Emulator
from gemini_batch_magic.emulator._answer import _BlockReader, split_block
from gemini_batch_magic.emulator._scheduler import BLOCK_SIZE

from .conftest import gen_line, jsonl, make_client, raw, wait_done


def _mixed_input(n: int) -> bytes:
    """``n`` generate lines with [[fail]] prompts, blank lines and (after the first 1000
    lines, which are checked at create time) malformed ones."""
    out = []
    for i in range(n):
        text = f"prompt {i} " + "x" * (i % 37)
        if i % 97 == 5:
            text += " [[fail]]"
        out.append(orjson.dumps(gen_line(f"k{i}", text)) + b"\n")
        if i > 1000 and i % 501 == 0:
            out.append(b"  \n\n")  # blank lines are skipped
        if i > 1000 and i % 733 == 0:
            out.append(b'{"key": "bad", "request": \n')  # malformed JSON
        if i > 1000 and i % 911 == 0:
            out.append(b'["not an object"]\n')
    return b"".join(out)


def _run_file_batch(emu: Emulator, data: bytes, **create: Any) -> tuple[bytes, bytes, Any]:
    client = make_client(emu)
    src = client.files.upload(file=io.BytesIO(data), config={"mime_type": "jsonl"})
    job = client.batches.create(model="gemini-2.5-flash", src=src.name or "", **create)
    done = wait_done(client, job.name or "", timeout=120)
    assert done.state is not None and done.state.name == "JOB_STATE_SUCCEEDED"
    assert done.dest is not None and done.dest.file_name is not None
    out = bytes(client.files.download(file=done.dest.file_name))
    bid = (job.name or "").removeprefix("batches/")
    fails = (emu.data_dir / "batches" / bid / "fails.bin").read_bytes()
    return out, fails, raw(emu, "GET", f"/v1/{job.name}").json()["metadata"]["batchStats"]


def _run_inline_batch(emu: Emulator, n: int) -> list[Any]:
    client = make_client(emu)
    src = [
        {"contents": f"inline {i} [[fail]]" if i % 50 == 3 else f"inline {i}",
         "metadata": {"key": f"m{i}"}}
        for i in range(n)
    ]
    job = client.batches.create(model="gemini-2.5-flash", src=src)  # type: ignore[arg-type]
    wait_done(client, job.name or "", timeout=120)
    body = raw(emu, "GET", f"/v1/{job.name}").json()
    return list(body["response"]["inlinedResponses"]["inlinedResponses"])


def _run_embed_batch(emu: Emulator, n: int) -> bytes:
    lines = [
        {"key": f"e{i}", "request": {"content": {"parts": [{"text": f"emb {i}"}]},
                                     "output_dimensionality": 4}}
        for i in range(n)
    ]
    client = make_client(emu)
    src = client.files.upload(file=io.BytesIO(jsonl(lines)), config={"mime_type": "jsonl"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the SDK marks batch embeddings experimental
        job = client.batches.create_embeddings(
            model="gemini-embedding-001", src={"file_name": src.name}
        )
    done = wait_done(client, job.name or "", timeout=120)
    assert done.dest is not None and done.dest.file_name is not None
    return bytes(client.files.download(file=done.dest.file_name))


def test_worker_processes_give_the_same_bytes_as_in_thread(make_emu) -> None:  # type: ignore[no-untyped-def]
    data = _mixed_input(5 * BLOCK_SIZE + 77)
    options = {"fail_rate": 0.07, "seed": 11}
    in_thread = make_emu(processes=0, **options)
    one = make_emu(processes=1, **options)
    two = make_emu(processes=2, **options)
    ref = _run_file_batch(in_thread, data)
    ref_inline = _run_inline_batch(in_thread, 2 * BLOCK_SIZE + 1)
    ref_embed = _run_embed_batch(in_thread, 2 * BLOCK_SIZE + 5)
    for emu in (one, two):
        assert _run_file_batch(emu, data) == ref
        assert _run_inline_batch(emu, 2 * BLOCK_SIZE + 1) == ref_inline
        assert _run_embed_batch(emu, 2 * BLOCK_SIZE + 5) == ref_embed
    out, fails, stats = ref
    # the comparison covered failures, shuffling and malformed lines
    assert int(stats["failedRequestCount"]) > 100 and any(fails)
    keys = [orjson.loads(x).get("key") for x in out.splitlines()]
    assert keys[:5] != ["k0", "k1", "k2", "k3", "k4"]
    assert b"is not valid JSON" in out and b"is not a JSON object" in out

    # where the blocks were answered
    assert in_thread.workers()["processes"] == []
    assert in_thread.workers()["blocksAnsweredInProcesses"] == 0
    for emu, count in ((one, 1), (two, 2)):
        w = emu.workers()
        assert len(w["processes"]) == count and os.getpid() not in w["processes"]
        assert w["blocksAnsweredInProcesses"] >= 10
    r = raw(one, "GET", "/_emulator/workers", key=None)
    assert r.status == 200 and r.json() == one.workers()


def test_small_and_responder_batches_start_no_process(make_emu) -> None:  # type: ignore[no-untyped-def]
    def responder(request: dict[str, Any], model: str) -> dict[str, Any]:
        return {"candidates": [{"content": {"parts": [{"text": "r"}], "role": "model"}}]}

    small = make_emu(processes=1)
    _run_file_batch(small, jsonl([gen_line(f"k{i}", "hi") for i in range(BLOCK_SIZE)]))
    assert small.workers() == {
        "processes": [],
        "blocksAnsweredInProcesses": 0,
        "blocksAnsweredInThreads": 1,
    }
    with_responder = make_emu(processes=1, responder=responder)
    out, _, _ = _run_file_batch(
        with_responder, jsonl([gen_line(f"k{i}", "hi") for i in range(3 * BLOCK_SIZE)])
    )
    assert out.count(b'"text":"r"') == 3 * BLOCK_SIZE
    w = with_responder.workers()
    assert w["processes"] == [] and w["blocksAnsweredInProcesses"] == 0


def test_unstartable_worker_processes_fall_back_to_threads(make_emu, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    data = _mixed_input(3 * BLOCK_SIZE)
    ref = _run_file_batch(make_emu(processes=0, fail_rate=0.1), data)
    monkeypatch.setattr(sys, "executable", str(Path("/nonexistent/python")))
    emu = make_emu(processes=1, fail_rate=0.1)
    assert _run_file_batch(emu, data) == ref
    w = emu.workers()
    assert w["processes"] == [] and w["blocksAnsweredInProcesses"] == 0
    assert w["blocksAnsweredInThreads"] >= 3


def test_a_killed_worker_process_does_not_change_the_results(make_emu) -> None:  # type: ignore[no-untyped-def]
    data = jsonl([gen_line(f"k{i}", f"t{i} " + "y" * 200) for i in range(60 * BLOCK_SIZE)])
    ref = _run_file_batch(make_emu(processes=0, seed=3), data)
    emu = make_emu(processes=1, seed=3)
    client = make_client(emu)
    src = client.files.upload(file=io.BytesIO(data), config={"mime_type": "jsonl"})
    job = client.batches.create(model="gemini-2.5-flash", src=src.name or "")
    deadline = time.monotonic() + 60
    while not emu.workers()["processes"] and time.monotonic() < deadline:
        time.sleep(0.005)
    for pid in emu.workers()["processes"]:
        os.kill(pid, signal.SIGKILL)
    done = wait_done(client, job.name or "", timeout=120)
    assert done.dest is not None and done.dest.file_name is not None
    assert bytes(client.files.download(file=done.dest.file_name)) == ref[0]
    w = emu.workers()  # the pool gave up and the batch's thread answered the rest
    assert w["processes"] == [] and w["blocksAnsweredInThreads"] > 0


def _big_input(n: int) -> bytes:
    return jsonl([gen_line(f"k{i}", f"text {i}") for i in range(n)])


def test_cancel_stops_a_batch_answered_in_processes(make_emu) -> None:  # type: ignore[no-untyped-def]
    n = 400 * BLOCK_SIZE
    emu = make_emu(processes=1, progress="live")
    client = make_client(emu)
    src = client.files.upload(file=io.BytesIO(_big_input(n)), config={"mime_type": "jsonl"})
    job = client.batches.create(model="gemini-2.5-flash", src=src.name or "")
    name = job.name or ""
    while True:  # until the first blocks are written
        (row,) = [b for b in emu.batches() if b["name"] == name]
        if row["successfulRequestCount"] > 0:
            break
        time.sleep(0.005)
    client.batches.cancel(name=name)
    # the batch's thread lets go at its next block (a safety net, not a timing assertion)
    deadline = time.monotonic() + 60
    while emu.answering_batches():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    got = client.batches.get(name=name)
    assert got.state is not None and got.state.name == "JOB_STATE_CANCELLED"
    # a cancelled batch keeps the answers it had produced, in its results file
    assert got.dest is not None and got.dest.file_name == f"files/batch-{name[8:]}"
    with sqlite3.connect(emu.data_dir / "emulator.sqlite3") as c:
        (processed,) = c.execute(
            "SELECT processed FROM batches WHERE id = ?", (name.removeprefix("batches/"),)
        ).fetchone()
    assert 0 < processed < n
    # Answering stopped too, not just publishing: beyond the blocks written before the
    # cancel, at most the one being written and the one read ahead were answered.
    answered = emu.workers()["blocksAnsweredInProcesses"]
    assert processed // BLOCK_SIZE <= answered <= processed // BLOCK_SIZE + 2


def test_restart_resumes_a_batch_answered_in_processes_identically(tmp_path: Path) -> None:
    n = 200 * BLOCK_SIZE
    data = _big_input(n)
    d = tmp_path / "state"
    emu1 = Emulator(data_dir=d, seed=5, fail_rate=0.05, processes=1, progress="live").start()
    c1 = make_client(emu1)
    src = c1.files.upload(file=io.BytesIO(data), config={"mime_type": "jsonl"})
    job = c1.batches.create(model="gemini-2.5-flash", src=src.name or "")
    name = job.name or ""
    while True:
        (row,) = [b for b in emu1.batches() if b["name"] == name]
        if row["successfulRequestCount"] + row["failedRequestCount"] > 0:
            break
        time.sleep(0.005)
    emu1.close()
    with sqlite3.connect(d / "emulator.sqlite3") as c:
        (processed,) = c.execute(
            "SELECT processed FROM batches WHERE id = ?", (name.removeprefix("batches/"),)
        ).fetchone()
    with Emulator(data_dir=d, processes=1) as emu2:
        out = _results(emu2, name)
        assert emu2.workers()["blocksAnsweredInProcesses"] > 0 or processed == n
    with Emulator(seed=5, fail_rate=0.05, processes=0) as ref:
        cr = make_client(ref)
        rsrc = cr.files.upload(file=io.BytesIO(data), config={"mime_type": "jsonl"})
        ref_name = cr.batches.create(model="gemini-2.5-flash", src=rsrc.name or "").name or ""
        assert _results(ref, ref_name) == out
    assert 0 < processed < n  # the first emulator was closed mid-batch


def _results(emu: Emulator, name: str) -> bytes:
    client = make_client(emu)
    done = wait_done(client, name, timeout=120)
    assert done.state is not None and done.state.name == "JOB_STATE_SUCCEEDED"
    assert done.dest is not None and done.dest.file_name is not None
    return bytes(client.files.download(file=done.dest.file_name))


def test_a_script_without_a_main_guard_runs_once(tmp_path: Path) -> None:
    """Worker processes never re-import ``__main__`` (multiprocessing's spawn would)."""
    script = tmp_path / "user_script.py"
    script.write_text(
        textwrap.dedent(
            """\
            import io
            import sys

            from google import genai
            from google.genai import types

            from gemini_batch_magic.emulator import Emulator

            print("top-level ran", flush=True)
            line = b'{"key":"%d","request":{"contents":[{"parts":[{"text":"t"}]}]}}\\n'
            data = b"".join(line % i for i in range(int(sys.argv[1])))
            with Emulator(processes=1, models=None) as emu:
                client = genai.Client(
                    api_key="k", http_options=types.HttpOptions(base_url=emu.url)
                )
                src = client.files.upload(file=io.BytesIO(data), config={"mime_type": "jsonl"})
                job = client.batches.create(model="m", src=src.name)
                while not (job := client.batches.get(name=job.name)).done:
                    pass
                print(job.state.name, emu.workers()["blocksAnsweredInProcesses"])
            """
        )
    )
    proc = subprocess.run(
        [sys.executable, str(script), str(3 * BLOCK_SIZE)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "top-level ran" and lines.count("top-level ran") == 1
    state, blocks = lines[1].split()
    assert state == "JOB_STATE_SUCCEEDED" and int(blocks) == 3


def test_cli_processes_flag_and_workers_exit_with_the_emulator(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "gemini_batch_magic.emulator", "--pending-seconds", "0",
         "--processes", "2", "--quiet", "--models", "any"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        client = genai.Client(api_key="k", http_options=types.HttpOptions(base_url=url))
        src = client.files.upload(
            file=io.BytesIO(_big_input(4 * BLOCK_SIZE)), config={"mime_type": "jsonl"}
        )
        job = client.batches.create(model="m", src=src.name or "")
        while not (job := client.batches.get(name=job.name or "")).done:
            time.sleep(0.01)
        with urllib.request.urlopen(url + "/_emulator/workers", timeout=10) as r:
            workers = orjson.loads(r.read())
        assert len(workers["processes"]) == 2 and workers["blocksAnsweredInProcesses"] == 4
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and err == ""
    for pid in workers["processes"]:
        assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    return "State:\tZ" in status


def test_processes_option_is_validated() -> None:
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="processes must be an integer >= 0"):
            Emulator(processes=bad)  # type: ignore[arg-type]
    assert Emulator(processes=None).processes >= 1
    proc = subprocess.run(
        [sys.executable, "-m", "gemini_batch_magic.emulator", "--processes", "-1"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2 and "processes must be an integer >= 0" in proc.stderr


def _reference_blocks(data: bytes, size: int) -> list[tuple[list[bytes], int]]:
    """Blocks as the emulator cut them before (``readline``, skipping blank lines)."""
    src = io.BytesIO(data)
    out = []
    while True:
        lines: list[bytes] = []
        consumed = 0
        while len(lines) < size:
            line = src.readline()
            if not line:
                break
            consumed += len(line)
            if line.strip():
                lines.append(line)
        if not lines and consumed == 0:
            return out
        out.append((lines, consumed))


def test_block_reader_cuts_like_readline(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(1)
    pieces = [b'{"a":1}', b"", b" ", b"\t", b"\r", b" x ", b'{"b":\r2}', b"\x0b", b"\x0c{}",
              b'  {"c":3}', b"[]", b"\xff"]
    for _ in range(2000):
        data = b"\n".join(rng.choice(pieces) for _ in range(rng.randint(0, 40)))
        if rng.random() < 0.5:
            data += b"\n"
        size = rng.randint(1, 6)
        monkeypatch.setattr(_BlockReader, "CHUNK", rng.choice([1, 2, 3, 7, 64, 1 << 20]))
        reader = _BlockReader(io.BytesIO(data))
        got = []
        while True:
            segment, nlines = reader.next(size)
            if not segment:
                break
            got.append((split_block(segment, nlines), len(segment)))
        assert got == _reference_blocks(data, size), (data, size)


def test_a_worker_process_imports_only_the_answering_code() -> None:
    """A worker runs ``_answer.serve``: no scheduler, store, server, sqlite3 or pandas."""
    from gemini_batch_magic.emulator import _processes

    report = (
        "import json, sys\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('gemini_batch_magic')"
        " or m in ('pandas', 'sqlite3', 'http.server'))))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", _processes._bootstrap_code() + report],
        stdin=subprocess.DEVNULL,  # no jobs: serve() returns at once
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    # serve() keeps stdout for its frames and sends stray prints to stderr
    assert orjson.loads(proc.stderr.splitlines()[-1]) == [
        "gemini_batch_magic",  # empty stand-ins: neither __init__ runs
        "gemini_batch_magic.emulator",
        "gemini_batch_magic.emulator._answer",
        "gemini_batch_magic.emulator._model",
    ]
