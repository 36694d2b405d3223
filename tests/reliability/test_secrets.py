"""The API key never lands anywhere we write or show.

A random canary key is really used: the emulator is started with ``api_key=`` the canary,
so every call the engine makes must carry it (a wrong key gets 400). Then every file we wrote
(registry folder with SQLite and WAL, request and results files, the executed quickstart
notebook with its widget state), everything printed, logged or raised, and the CLI output are
searched for the key.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import gemini_batch_magic as gbm
from gemini_batch_magic import _backend
from gemini_batch_magic._config import settings
from gemini_batch_magic.emulator import Emulator

ROOT = Path(__file__).resolve().parents[2]


def _canary() -> str:
    return f"canary-{secrets.token_hex(16)}"


def _hits(key: str, *roots: Path) -> list[str]:
    needle = key.encode()
    found = []
    for root in roots:
        for path in [root, *root.rglob("*")] if root.is_dir() else [root]:
            if path.is_file() and needle in path.read_bytes():
                found.append(str(path))
    return found


def _use(monkeypatch: pytest.MonkeyPatch, key: str, url: str) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", key)
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", url)
    _backend.reset()


def test_canary_key_is_used_but_never_written_shown_or_raised(
    monkeypatch: pytest.MonkeyPatch, gembatch_home: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    key, wrong = _canary(), _canary()
    shown: list[str] = []
    with Emulator(api_key=key, seed=1) as emu, Emulator(api_key=key, pending_seconds=60) as slow:
        _use(monkeypatch, key, emu.url)
        info = gbm.backend_info()
        shown += [repr(info), info.describe()]
        settings.inline_limit_bytes = 300  # one inline run, one file run
        for n in (2, 12):
            df = pd.DataFrame({"p": [f"q{i}" for i in range(n - 1)] + ["x [[fail]]"]})
            run = df.gembatch.submit("p", system_instruction="be brief")
            out = run.wait().result()  # with the text progress display
            assert out["error"].notna().sum() == 1  # the [[fail]] row: a per-row error
            shown += [repr(run), str(run._repr_mimebundle_()), out.to_string()]
            child = run.retry_failed()
            assert child is not None
            child.wait()
            shown += [repr(child), repr(gbm.runs()), run.result().to_string()]
        assert emu.calls, "the key was not used"

        _use(monkeypatch, key, slow.url)
        live = pd.DataFrame({"p": ["to cancel"]}).gembatch.submit("p")
        live.cancel()
        assert live.state == "CANCELLED"
        shown += [repr(live), live.result().to_string()]

        _use(monkeypatch, wrong, emu.url)  # a wrong key: 400 INVALID_ARGUMENT
        with pytest.raises(gbm.GemBatchError) as info_wrong:
            pd.DataFrame({"p": ["never sent"]}).gembatch.submit("p")
        assert "API key not valid" in str(info_wrong.value)
        shown += [str(info_wrong.value), repr(info_wrong.value),
                  str(info_wrong.value.__cause__), repr(info_wrong.value.__cause__)]
        env = {**os.environ, "GEMBATCH_HOME": str(gembatch_home), "GEMINI_API_KEY": key,
               "GOOGLE_GEMINI_BASE_URL": emu.url}
        cli = subprocess.run([sys.executable, "-m", "gemini_batch_magic.cli", "backend"],
                             env=env, capture_output=True, text=True, timeout=60)
        assert cli.returncode == 0, cli.stderr
        assert "GEMINI_API_KEY" in cli.stdout  # says where the key came from ...
        shown += [cli.stdout, cli.stderr]
        cli_runs = subprocess.run([sys.executable, "-m", "gemini_batch_magic.cli", "list"],
                                  env=env, capture_output=True, text=True, timeout=60)
        assert cli_runs.returncode == 0 and "SUCCEEDED" in cli_runs.stdout, cli_runs.stderr
        shown += [cli_runs.stdout, cli_runs.stderr]
        # the emulator (ours too) keeps no copy of the key in its state either
        assert _hits(key, emu.data_dir, slow.data_dir) == []

    captured = capsys.readouterr()
    shown += [captured.out, captured.err, caplog.text]
    for secret in (key, wrong):
        assert not [s for s in shown if secret in s]  # ... never the key itself
        assert _hits(secret, gembatch_home) == []
    # the registry is private: folders 0700, files 0600
    assert stat.S_IMODE(gembatch_home.stat().st_mode) == 0o700
    for path in gembatch_home.rglob("*"):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))


@pytest.mark.slow
def test_quickstart_notebook_never_holds_the_key(
    monkeypatch: pytest.MonkeyPatch, gembatch_home: Path, tmp_path: Path
) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    source = ROOT / "notebooks" / "quickstart.ipynb"
    if not source.exists():
        pytest.skip("notebooks/quickstart.ipynb is not written yet")
    key = _canary()
    with Emulator(api_key=key) as emu:
        _use(monkeypatch, key, emu.url)
        nb = nbformat.read(source, as_version=4)
        # the tour pins the embedded emulator; point it at the keyed one so the key is used
        for c in nb.cells:
            c.source = c.source.replace("GemBatch.backend = 'local'", "GemBatch.backend = 'auto'")
        client = nbclient.NotebookClient(
            nb, timeout=120, kernel_name="python3", store_widget_state=True,
            resources={"metadata": {"path": str(tmp_path)}},
        )
        client.execute()
        assert emu.calls, "the notebook did not talk to the keyed emulator"
    executed = tmp_path / "quickstart.executed.ipynb"
    nbformat.write(nb, executed)
    assert _hits(key, executed, gembatch_home) == []


def _unreachable_elsewhere(port: int) -> None:
    """Nothing answers on this port at the machine's non-loopback addresses."""
    others = {str(a[4][0])
              for a in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)}
    for addr in others - {"127.0.0.1"}:
        with pytest.raises(OSError), socket.create_connection((addr, port), timeout=2):
            pass


def test_services_listen_on_loopback_only(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="non-loopback"):
        Emulator(host="0.0.0.0")  # Python: refused unless allow_remote=True
    with Emulator() as emu:
        assert emu.url.split("//")[1].rsplit(":", 1)[0] == "127.0.0.1"
        _unreachable_elsewhere(emu.port)
    from ._kernels import EmulatorProcess

    cli = EmulatorProcess(tmp_path / "emu")  # the command line, with no --host
    try:
        assert cli.url.startswith("http://127.0.0.1:")
        _unreachable_elsewhere(cli.port)
    finally:
        cli.close()


def test_embedded_emulator_listens_on_loopback(gembatch_home: Path) -> None:
    settings.backend = "local"
    _backend.reset()
    info: Any = gbm.backend_info()
    assert info.kind == "local" and info.base_url.startswith("http://127.0.0.1:")
