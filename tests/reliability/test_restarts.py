"""The emulator process is killed while a batch is RUNNING and restarted on the same port
and ``--data-dir``: the run picks up where it was and completes with every row."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from gemini_batch_magic import _backend
from gemini_batch_magic._config import settings

from ._kernels import EmulatorProcess
from ._util import assert_echoed, eventually, prompts


@pytest.mark.slow
@pytest.mark.parametrize("source", ["inline", "file"])
def test_service_restart_mid_run_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    data = tmp_path / "emulator-data"
    first = EmulatorProcess(data, "--pending-seconds", "0", "--rate", "40", "--seed", "7",
                           "--progress", "live")
    second: EmulatorProcess | None = None
    try:
        monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", first.url)
        _backend.reset()
        settings.retry_attempts = 3  # the service is down for a while: poll on, don't stall
        if source == "file":
            settings.inline_limit_bytes = 100
        df = pd.DataFrame({"p": prompts(80, source)}, index=pd.RangeIndex(500, 580))
        run = df.gembatch.submit("p")

        def some_answered() -> bool:
            run.refresh()
            return run.state == "RUNNING" and run.stats.succeeded > 0

        eventually(some_answered, what="the batch to be RUNNING with some answers")
        first.kill()  # SIGKILL: no clean shutdown of the service
        # the engine keeps polling a dead service: it waits, it does not give up or fail rows
        run.refresh()
        assert run.state == "RUNNING" and not run.done
        second = EmulatorProcess(data, "--pending-seconds", "0", "--rate", "40", "--seed", "7",
                                 "--progress", "live", port=first.port)
        out = run.wait(progress=False).result()
        assert run.state == "SUCCEEDED"
        assert_echoed(out, df, "p")
        assert len(second.batches()) == 1
    finally:
        first.close()
        if second is not None:
            second.close()
