"""The magic, the CLI and the test bed's own command on the vertex backend."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from gemini_batch_magic import _config, cli

ROOT = Path(__file__).resolve().parents[2]


def test_cell_magic_with_backend_vertex(vertex) -> None:
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.testing.globalipapp import start_ipython

    ip = start_ipython() or InteractiveShell.instance()
    ip.run_line_magic("load_ext", "gemini_batch_magic")
    try:
        _config.configure(backend="auto")
        ip.user_ns["df"] = pd.DataFrame({"text": ["a", "b"]}, index=["x", "y"])
        ip.run_cell_magic("gembatch", "answers --df df --backend vertex --wait", "Say {text}")
        out = ip.user_ns.pop("answers")
        assert _config.settings.backend == "vertex"
        assert list(out["response"]) == ["Say a", "Say b"] and list(out.index) == ["x", "y"]
    finally:
        ip.user_ns.pop("df", None)
        ip.run_line_magic("unload_ext", "gemini_batch_magic")


def test_cli_submit_on_vertex(vertex, tmp_path: Path, capsys) -> None:
    src = tmp_path / "in.csv"
    pd.DataFrame({"id": [1, 2], "text": ["p", "q"]}).to_csv(src, index=False)
    assert cli.main(["submit", str(src), "--prompt", "text", "--backend", "vertex",
                     "--wait", "--out", str(tmp_path / "out.csv")]) == 0
    assert list(pd.read_csv(tmp_path / "out.csv")["response"]) == ["p", "q"]


def test_gembatch_emulator_vertex_prints_exports_and_stops(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "gemini_batch_magic.cli", "emulator",
                             "--vertex", "--no-bigquery"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline().strip() for _ in range(6)]
        names = {line.split("=", 1)[0].removeprefix("export ") for line in lines}
        assert all(line.startswith("export ") for line in lines)
        assert names == {"STORAGE_EMULATOR_HOST", "GOOGLE_VERTEX_BASE_URL", "GOOGLE_CLOUD_PROJECT",
                         "GOOGLE_GENAI_USE_VERTEXAI", "GOOGLE_CLOUD_LOCATION", "GEMBATCH_STAGING"}
        assert all("127.0.0.1" in line for line in lines if "HOST" in line or "URL" in line)
    finally:
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        if proc.poll() is None:
            proc.kill()
        if proc.stdout is not None:
            proc.stdout.close()
    assert proc.returncode == 0
