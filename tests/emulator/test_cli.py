"""The command line: URL first, clean SIGTERM/SIGINT, loopback-only by default."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import orjson
import pytest

from gemini_batch_magic.emulator import Emulator, main

from .conftest import API_KEY, make_client


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "gemini_batch_magic.emulator", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_first_line_is_url_and_signal_stops_cleanly(tmp_path: Path, sig: int) -> None:
    quiet = ["--quiet"] if sig == signal.SIGINT else []
    proc = _spawn(
        "--pending-seconds",
        "0",
        "--data-dir",
        str(tmp_path / "d"),
        "--api-key",
        "test-key",
        *quiet,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        # the socket already accepts connections when the URL is printed
        with urllib.request.urlopen(url + "/_emulator/health", timeout=10) as r:
            assert orjson.loads(r.read()) == {"ok": True}
        req = urllib.request.Request(url + "/v1/batches", headers={"x-goog-api-key": "test-key"})
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 200
    finally:
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert "Traceback" not in err
    assert "test-key" not in out + err  # the key is never printed
    assert out == ""  # nothing after the URL line on stdout
    if quiet:
        assert err == ""  # --quiet: the URL is the only output
    else:
        assert "listening on http://127.0.0.1:" in err


def test_non_loopback_host_needs_an_explicit_host() -> None:
    # Python callers must opt in; the CLI's explicit --host is that opt-in
    with pytest.raises(ValueError, match="allow_remote"):
        Emulator(host="192.0.2.1")
    # 192.0.2.1 (TEST-NET-1) is not on this machine: the CLI tries to bind it (exit 1,
    # "cannot start") instead of refusing (exit 2); nothing is sent anywhere
    proc = subprocess.run(
        [sys.executable, "-m", "gemini_batch_magic.emulator", "--host", "192.0.2.1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1, proc.stderr
    assert "cannot start on 192.0.2.1" in proc.stderr
    assert proc.stdout == ""
    with pytest.raises(SystemExit) as e:
        main(["--rate", "not-a-number"])
    assert e.value.code == 2


def test_environment_cannot_change_the_bind_address(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HOST", "GEMBATCH_EMULATOR_HOST", "BIND", "HOSTNAME"):
        monkeypatch.setenv(var, "0.0.0.0")
    with Emulator() as emu:
        assert emu.url.startswith("http://127.0.0.1:")


def test_localhost_and_ipv6_loopback_are_accepted() -> None:
    with Emulator(host="localhost") as emu:
        assert emu.url.startswith("http://localhost:")
        assert list(make_client(emu).batches.list()) == []
    if os.path.exists("/proc/net/if_inet6"):
        try:
            e6 = Emulator(host="::1").start()
        except OSError:
            return
        with e6:
            assert e6.url.startswith("http://[::1]:")
            assert list(make_client(e6).batches.list()) == []


def test_cli_process_and_python_emulator_share_a_data_dir(tmp_path: Path) -> None:
    import io

    from .conftest import gen_line, jsonl, wait_done

    d = tmp_path / "shared"
    proc = _spawn("--quiet", "--pending-seconds", "0", "--data-dir", str(d), "--models", "any")
    try:
        assert proc.stdout is not None
        cli_url = proc.stdout.readline().strip()
        with Emulator(data_dir=d, models=None) as local:
            c_local = make_client(local)
            src = c_local.files.upload(
                file=io.BytesIO(jsonl([gen_line("x", "shared dir")])),
                config={"mime_type": "jsonl"},
            )
            job = c_local.batches.create(model="m", src=src.name or "")
            from google import genai
            from google.genai import types

            # the same key: a batch is visible only to the key that created it
            c_cli = genai.Client(api_key=API_KEY, http_options=types.HttpOptions(base_url=cli_url))
            done = wait_done(c_cli, job.name or "")
            assert done.state is not None and done.state.name == "JOB_STATE_SUCCEEDED"
            assert done.dest is not None and done.dest.file_name is not None
            body = c_cli.files.download(file=done.dest.file_name)
            assert orjson.loads(body)["key"] == "x"
            assert c_local.files.download(file=done.dest.file_name) == body
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    assert proc.returncode == 0
