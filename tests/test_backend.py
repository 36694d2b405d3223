"""The client factory: which backend, the embedded emulator notice, batchStats, no key leaks."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

import gemini_batch_magic as gbm
from gemini_batch_magic import _backend


def test_no_key_means_embedded_emulator_with_one_notice(
    capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the engine's state was reset for this test, as in a new process
    info = gbm.backend_info()
    assert info.kind == "local" and info.synthetic and info.key_source is None
    assert info.base_url and info.base_url.startswith("http://127.0.0.1:")
    err = capsys.readouterr().err
    assert "SYNTHETIC" in err and "GEMINI_API_KEY" in err
    gbm.backend_info()
    assert capsys.readouterr().err == ""  # told once
    out = pd.DataFrame({"p": ["hello", "world"]}).gembatch.run("p")
    assert out["response"].tolist() == ["hello", "world"]


def test_embedded_emulator_state_survives_a_new_client(gembatch_home: Any) -> None:
    gbm.configure(emulator_pending_seconds=0.0, emulator_rate=0.0)
    run = pd.DataFrame({"p": ["a", "b"]}).gembatch.submit("p")
    _backend.reset()  # like a kernel restart: a new embedded emulator on the same data dir
    again = gbm.attach(run.run_id)
    assert again.wait(progress=False).result()["response"].tolist() == ["a", "b"]
    assert (gembatch_home / "emulator").is_dir()


def test_embedded_emulator_ends_a_run_too_big_for_its_pace(gembatch_home: Any) -> None:
    """The embedded emulator answers 20 requests a second, but no batch runs longer than
    emulator_max_running_seconds: 3,000 rows at 1 a second end in a second, not an hour."""
    gbm.configure(poll_interval=0.2, emulator_pending_seconds=0.0, emulator_rate=1.0,
                  emulator_max_running_seconds=1.0)
    df = pd.DataFrame({"p": [f"row {i}" for i in range(3000)]})
    run = df.gembatch.submit("p")
    out = run.wait(timeout=120, progress=False).result()  # WaitTimeout if it kept the pace
    assert out["response"].tolist() == df["p"].tolist()
    assert gbm.settings.emulator_max_running_seconds == 1.0


def test_key_selects_gemini_and_is_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", "  canary-key-123  ")
    info = gbm.backend_info()
    assert (info.kind, info.key_source, info.synthetic) == ("gemini", "GEMINI_API_KEY", False)
    text = f"{info} {info!r} {info.describe()}"
    assert "canary-key-123" not in text
    assert "$GEMINI_API_KEY" in info.describe()


def test_base_url_selects_an_external_emulator(emu: Any) -> None:
    info = gbm.backend_info()
    assert info.kind == "external" and info.base_url == emu.url
    assert emu.url in info.describe()


def test_backend_gemini_without_key_explains_the_fix() -> None:
    gbm.configure(backend="gemini")
    with pytest.raises(gbm.ConfigError, match="set GEMINI_API_KEY"):
        gbm.backend_info()


def test_batch_stats_are_read_from_the_wire(emulator_factory: Any) -> None:
    emulator_factory(rate=0.0)
    run = pd.DataFrame({"p": ["x", "y", "z"]}).gembatch.submit("p")
    run.wait(progress=False)
    stats = _backend.batch_stats(run.batch_names[0])
    assert stats == {"total": 3, "succeeded": 3, "failed": 0, "pending": 0}
