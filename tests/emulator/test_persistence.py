"""Persistence: restart on the same data_dir, shared data_dir, permissions."""

from __future__ import annotations

import io
import os
import stat
import time
from pathlib import Path
from typing import Any

import orjson
from google.genai import types

from gemini_batch_magic.emulator import Emulator

from .conftest import ANY_MODEL, gen_line, jsonl, make_client, wait_done


def _slow_echo(request: dict[str, Any], model: str) -> dict[str, Any]:
    time.sleep(0.004)
    text = request["contents"][-1]["parts"][0]["text"]
    return {
        "candidates": [
            {
                "content": {"role": "model", "parts": [{"text": text}]},
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "modelVersion": model,
    }


def _results(client: Any, name: str) -> bytes:
    done = wait_done(client, name, timeout=60)
    assert done.state is not None and done.state.name == "JOB_STATE_SUCCEEDED"
    assert done.dest is not None and done.dest.file_name is not None
    return bytes(client.files.download(file=done.dest.file_name))


def test_restart_mid_batch_resumes_and_completes(tmp_path: Path) -> None:
    data = jsonl([gen_line(f"r{i}", f"text {i}") for i in range(160)])
    d = tmp_path / "state"
    emu1 = Emulator(**ANY_MODEL, data_dir=d, responder=_slow_echo, seed=4).start()
    c1 = make_client(emu1)
    src = c1.files.upload(file=io.BytesIO(data), config={"mime_type": "jsonl"})
    job = c1.batches.create(model="gemini-2.5-flash", src=src.name or "")
    time.sleep(0.25)
    first = c1.batches.get(name=job.name or "")
    emu1.close()
    assert first.state is not None and first.state.name == "JOB_STATE_RUNNING"  # mid-batch

    emu2 = Emulator(**ANY_MODEL, data_dir=d, responder=_slow_echo, seed=99).start()  # other config
    try:
        c2 = make_client(emu2)
        again = c2.batches.get(name=job.name or "")
        assert again.name == job.name and again.create_time == first.create_time
        out = _results(c2, job.name or "")
    finally:
        emu2.close()
    lines = [orjson.loads(x) for x in out.splitlines()]
    assert sorted(x["key"] for x in lines) == sorted(f"r{i}" for i in range(160))

    # Byte-identical to an uninterrupted run with the same seed.
    with Emulator(**ANY_MODEL, responder=_slow_echo, seed=4) as ref:
        cr = make_client(ref)
        rsrc = cr.files.upload(file=io.BytesIO(data), config={"mime_type": "jsonl"})
        ref_out = _results(
            cr, cr.batches.create(model="gemini-2.5-flash", src=rsrc.name or "").name or ""
        )
    assert out == ref_out


def test_two_emulators_share_one_data_dir(tmp_path: Path) -> None:
    d = tmp_path / "shared"
    with Emulator(**ANY_MODEL, data_dir=d) as a, Emulator(**ANY_MODEL, data_dir=d) as b:
        ca, cb = make_client(a), make_client(b)
        names = []
        for i in range(6):
            c = ca if i % 2 else cb
            src = c.files.upload(
                file=io.BytesIO(jsonl([gen_line("k", f"v{i}")])), config={"mime_type": "jsonl"}
            )
            names.append(c.batches.create(model="m", src=src.name or "").name or "")
        for i, n in enumerate(names):
            out = _results(ca if i % 2 == 0 else cb, n)  # read through the other server
            assert (
                orjson.loads(out)["response"]["candidates"][0]["content"]["parts"][0]["text"]
                == f"v{i}"
            )
        assert [j.name for j in ca.batches.list()] == [j.name for j in cb.batches.list()]
        assert len(a.batches()) == 6


def test_restart_keeps_files_and_finished_batches(tmp_path: Path) -> None:
    d = tmp_path / "keep"
    with Emulator(**ANY_MODEL, data_dir=d) as e1:
        c1 = make_client(e1)
        f = c1.files.upload(file=io.BytesIO(b"persist me"), config={"mime_type": "text/plain"})
        job = c1.batches.create(model="m", src=[{"contents": "x", "metadata": {"key": "z"}}])
        done1 = wait_done(c1, job.name or "")
    with Emulator(**ANY_MODEL, data_dir=d) as e2:
        c2 = make_client(e2)
        assert c2.files.download(file=f.name or "") == b"persist me"
        done2 = c2.batches.get(name=job.name or "")
        assert done2.state == types.JobState.JOB_STATE_SUCCEEDED
        assert done2.end_time == done1.end_time
        assert done2.dest is not None and done2.dest.inlined_responses is not None
        assert done2.dest.inlined_responses[0].metadata == {"key": "z"}
    assert d.exists()  # an explicit data_dir is never deleted


def test_private_temp_dir_is_removed_and_permissions(tmp_path: Path) -> None:
    with Emulator(**ANY_MODEL) as emu:
        tmp = emu.data_dir
        c = make_client(emu)
        c.files.upload(file=io.BytesIO(b"x"), config={"mime_type": "text/plain"})
        wait_done(c, c.batches.create(model="m", src=[{"contents": "y"}]).name or "")
        for root, _dirs, files in os.walk(tmp):
            assert stat.S_IMODE(os.stat(root).st_mode) == 0o700, root
            for name in files:
                mode = stat.S_IMODE(os.stat(os.path.join(root, name)).st_mode)
                assert mode == 0o600, (name, oct(mode))
    assert not tmp.exists()


def test_close_is_idempotent_and_restart_is_refused() -> None:
    emu = Emulator(**ANY_MODEL)
    emu.start()
    assert emu.start() is emu  # idempotent
    emu.close()
    emu.close()
    import pytest

    with pytest.raises(RuntimeError):
        emu.start()


def test_batch_whose_input_vanished_fails_with_an_operation_error(tmp_path: Path) -> None:
    d = tmp_path / "vanish"
    emu1 = Emulator(**ANY_MODEL, data_dir=d, responder=_slow_echo).start()
    c1 = make_client(emu1)
    src = c1.files.upload(
        file=io.BytesIO(jsonl([gen_line(f"r{i}", "x") for i in range(400)])),
        config={"mime_type": "jsonl"},
    )
    job = c1.batches.create(model="m", src=src.name or "")
    time.sleep(0.1)
    emu1.close()
    (d / "files" / f"{(src.name or '').split('/')[1]}.bin").unlink()
    with Emulator(**ANY_MODEL, data_dir=d, responder=_slow_echo) as emu2:
        c2 = make_client(emu2)
        done = wait_done(c2, job.name or "")
        assert done.state is not None and done.state.name == "JOB_STATE_FAILED"
        from .conftest import raw

        error = raw(emu2, "GET", f"/v1/{job.name}").json()["error"]
        assert "no longer exists" in error["message"]


def test_temp_dirs_of_killed_emulators_are_swept() -> None:
    import subprocess
    import sys
    import tempfile

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    stale = Path(tempfile.mkdtemp(prefix="gemini-batch-emulator-"))
    (stale / "owner.pid").write_text(dead.stdout.strip())
    alive = Path(tempfile.mkdtemp(prefix="gemini-batch-emulator-"))
    (alive / "owner.pid").write_text("1")  # pid 1 is always alive
    try:
        with Emulator(**ANY_MODEL) as emu:
            assert (emu.data_dir / "owner.pid").read_text() == str(os.getpid())
        assert not stale.exists()
        assert alive.exists()
    finally:
        import shutil

        shutil.rmtree(alive, ignore_errors=True)
        shutil.rmtree(stale, ignore_errors=True)
