"""Kernel death: a real kernel is SIGKILLed mid-run; a new kernel finishes the job.

The emulator runs in its own process (``python -m gemini_batch_magic.emulator``), so only
the kernel dies. Whatever moment the kernel dies at (batch pending, create sent but not
recorded, results half downloaded, results downloaded but not stored), the next kernel lists
the run, attaches, gets every row, and the service holds exactly one batch per shard.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ._kernels import FAST, EmulatorProcess, cell, engine_env, kernel

pytestmark = pytest.mark.slow

N_ROWS = 40

SUBMIT = FAST + f"""
df = pd.DataFrame({{"p": [f"row {{i}} ✓" for i in range({N_ROWS})]}},
                  index=[f"k{{i}}" for i in range({N_ROWS})])
"""

#: In the new kernel: the run is listed, attach works, every row is answered and aligned.
FINISH = FAST + f"""
table = gbm.runs()
assert len(table) == 1, table
run = gbm.attach(table["run_id"][0])
out = run.wait(progress=False).result()
assert run.state == "SUCCEEDED", run
assert out.index.tolist() == [f"k{{i}}" for i in range({N_ROWS})]
assert out["error"].isna().all(), out["error"].dropna().tolist()[:3]
assert out["response"].tolist() == [f"row {{i}} ✓" for i in range({N_ROWS})]
print("FINISHED", table["state"][0], run.run_id)
"""


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[EmulatorProcess]:
    proc = EmulatorProcess(tmp_path / "emulator-data", "--pending-seconds", "1", "--rate", "200")
    yield proc
    proc.close()


def _stored_results(home: Path) -> list[Path]:
    """Results files the registry would read (temporary ``.part`` files excluded)."""
    return [p for p in home.rglob("results-*") if not p.name.endswith(".part")]


def _file_mode() -> str:
    return "gbm.configure(inline_limit_bytes=100, max_requests_per_shard=25)\n"


def test_killed_while_pending_new_kernel_attaches_widget_and_rows(
    emulator: EmulatorProcess, gembatch_home: Path
) -> None:
    env = engine_env(gembatch_home, emulator.url)
    with kernel(env) as k1:
        run_id = k1.run(SUBMIT + "run = df.gembatch.submit('p'); print(run.run_id, run.state)")
        assert run_id.split()[1] in {"PENDING", "RUNNING"}
        k1.kill()
    with kernel(env) as k2:
        shown = k2.run(cell(FAST, """
        import time
        from gemini_batch_magic.widgets import ProgressWidget
        run = gbm.attach(gbm.runs()["run_id"][0])
        widget = ProgressWidget(run, display_now=False)
        print("BEFORE", widget.tone, run.state)
        deadline = time.monotonic() + 60
        while widget.tone != "success" and time.monotonic() < deadline:
            time.sleep(0.05)    # no wait(), no update(): the background monitor drives it
        print("AFTER", widget.tone, run.state, widget.percent, widget.counts.split(" · ")[0])
        """))
        out = k2.run(FINISH)
    before, after = shown.splitlines()[-2:]
    assert before.split()[2] in {"PENDING", "RUNNING"}
    # the widget built in the new kernel follows the run to the end on its own
    assert after.split()[1:] == ["success", "SUCCEEDED", "100.0", f"{N_ROWS:,}", "/",
                                 f"{N_ROWS:,}"]
    assert out.split()[2] == run_id.split()[0]
    assert len(emulator.batches()) == 1


def test_killed_after_create_before_it_was_recorded_is_not_created_twice(
    emulator: EmulatorProcess, gembatch_home: Path
) -> None:
    env = engine_env(gembatch_home, emulator.url)
    with kernel(env) as k1:
        k1.run_until_death(cell(SUBMIT, _file_mode(), """
        import os, signal
        from gemini_batch_magic import _backend
        gbm.configure(max_concurrent_shards=1)   # shard 0 is created, shard 1 never
        batches = _backend.get_client().batches
        real_create = batches.create
        def create_then_die(**kw):
            job = real_create(**kw)       # the service has it (and bills it) ...
            os.kill(os.getpid(), signal.SIGKILL)   # ... the registry never hears of it
        batches.create = create_then_die
        df.gembatch.submit("p")   # in a kernel the files upload and create in the background
        import time
        time.sleep(120)           # so the cell is still running when the create kills it
        """))
    assert len(emulator.batches()) == 1
    with kernel(env) as k2:
        out = k2.run(FINISH)
    assert out.split()[1] == "SUBMITTING"
    assert len(emulator.batches()) == 2  # the second shard, created once by the new kernel
    assert len({b["displayName"] for b in emulator.batches()}) == 2


def test_killed_during_results_download_partial_file_is_never_taken(
    emulator: EmulatorProcess, gembatch_home: Path
) -> None:
    env = engine_env(gembatch_home, emulator.url)
    with kernel(env) as k1:
        k1.run_until_death(cell(SUBMIT, _file_mode(), """
        import io, os, signal
        from gemini_batch_magic import _backend
        files = _backend.get_client().files
        real_download = files.download
        def half_then_die(*, file, destination=None, **kw):
            data = real_download(file=file, **kw)
            destination.write(data[: len(data) // 2])   # half of the bytes reach the disk
            destination.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        files.download = half_then_die
        df.gembatch.submit("p").wait(progress=False)
        """))
    parts = list(gembatch_home.rglob("results-*.part"))
    assert parts and parts[0].stat().st_size > 0  # the half download is on disk ...
    assert _stored_results(gembatch_home) == []  # ... and not taken as results
    with kernel(env) as k2:
        out = k2.run(FINISH)
    assert out.split()[1] in {"PENDING", "RUNNING"}
    assert not list(gembatch_home.rglob("*.part"))  # the dead kernel's leftover is gone
    assert len(emulator.batches()) == 2


def test_killed_between_download_and_storing_results(
    emulator: EmulatorProcess, gembatch_home: Path
) -> None:
    env = engine_env(gembatch_home, emulator.url)
    with kernel(env) as k1:
        k1.run_until_death(cell(SUBMIT, _file_mode(), """
        import os, signal
        real_replace = os.replace
        def die_before_storing(src, dst, *a, **kw):
            if os.path.basename(dst).startswith("results-"):
                os.kill(os.getpid(), signal.SIGKILL)  # downloaded, never stored
            return real_replace(src, dst, *a, **kw)
        os.replace = die_before_storing
        df.gembatch.submit("p").wait(progress=False)
        """))
    assert list(gembatch_home.rglob("results-*.part"))  # complete, but never renamed
    assert _stored_results(gembatch_home) == []
    with kernel(env) as k2:
        out = k2.run(FINISH)
    assert out.split()[1] in {"PENDING", "RUNNING"}
    assert len(emulator.batches()) == 2
