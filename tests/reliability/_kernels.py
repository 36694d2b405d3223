"""Real Jupyter kernels and an emulator in its own process, for the kernel-death tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from jupyter_client.manager import KernelManager


class KernelDied(Exception):
    """The kernel stopped answering (it was killed, as the test intended)."""


class Kernel:
    """One ipykernel process; ``run(code)`` returns its stdout, raising on any error."""

    def __init__(self, env: dict[str, str]) -> None:
        self.km = KernelManager(kernel_name="python3")
        self.km.start_kernel(env=env, extra_arguments=["--HistoryManager.enabled=False"])
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)
        self.pid = int(self.run("import os; print(os.getpid())").strip())

    def run(self, code: str, timeout: float = 90.0) -> str:
        out: list[str] = []
        errors: list[str] = []

        def hook(msg: dict[str, Any]) -> None:
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                (out if content["name"] == "stdout" else errors).append(content["text"])
            elif kind == "error":
                errors.append("\n".join(content["traceback"]))

        try:
            reply = self.kc.execute_interactive(
                textwrap.dedent(code), timeout=timeout, output_hook=hook, allow_stdin=False
            )
        except TimeoutError as exc:
            if not self.km.is_alive():
                raise KernelDied(code) from exc
            raise
        if reply["content"]["status"] != "ok":
            raise AssertionError("kernel error:\n" + "".join(errors))
        self.stderr = "".join(errors)
        return "".join(out)

    def run_until_death(self, code: str, timeout: float = 60.0) -> None:
        """Run code that kills its own kernel; return once the process is gone (and reaped)."""
        import queue

        msg_id = self.kc.execute(textwrap.dedent(code))
        deadline = time.monotonic() + timeout
        while self.km.is_alive():
            if time.monotonic() > deadline:
                raise AssertionError(f"the kernel survived: {msg_id}")
            try:
                reply = self.kc.get_shell_msg(timeout=0.05)
            except queue.Empty:
                continue
            if reply["parent_header"].get("msg_id") == msg_id:
                content = reply["content"]
                raise AssertionError(
                    "the kernel survived the code meant to kill it: "
                    + "\n".join(content.get("traceback", [content.get("status", "")]))
                )
        self.close()

    def kill(self) -> None:
        """SIGKILL, as the OOM killer or a crashed laptop would; the process is reaped."""
        os.kill(self.pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while self.km.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.close()

    def close(self) -> None:
        self.kc.stop_channels()
        if self.km.has_kernel:
            self.km.shutdown_kernel(now=True)  # reaps the process (no zombie pid left)


@contextmanager
def kernel(env: dict[str, str]) -> Iterator[Kernel]:
    k = Kernel(env)
    try:
        yield k
    finally:
        k.close()


class EmulatorProcess:
    """``python -m gemini_batch_magic.emulator`` in a separate process."""

    def __init__(self, data_dir: Path, *args: str, port: int = 0) -> None:
        self.data_dir = data_dir
        self.args = args
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gemini_batch_magic.emulator", "--data-dir", str(data_dir),
             "--port", str(port), "--quiet", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith("http://"):
            self.proc.kill()
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise AssertionError(f"emulator did not start: {line!r} {err}")
        self.url = line
        self.port = int(line.rsplit(":", 1)[1])

    def batches(self) -> list[dict[str, Any]]:
        import httpx

        return list(httpx.get(f"{self.url}/_emulator/batches", timeout=10).json()["batches"])

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=30)
        self._drain()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        self._drain()

    def _drain(self) -> None:
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def engine_env(home: Path, url: str, **extra: str) -> dict[str, str]:
    """The environment of a kernel or process using registry ``home`` and emulator ``url``."""
    env = {k: v for k, v in os.environ.items()
           if k not in {"GEMINI_API_KEY", "GOOGLE_API_KEY", "GEMBATCH_BACKEND"}}
    env.update(GEMBATCH_HOME=str(home), GOOGLE_GEMINI_BASE_URL=url, **extra)
    env.setdefault("GEMINI_API_KEY", "test-key-not-secret")
    return env


def cell(*parts: str) -> str:
    """One cell from fragments, each dedented on its own."""
    return "\n".join(textwrap.dedent(p) for p in parts)


#: Code run first in every kernel/process: fast polling and retries.
FAST = """
import gemini_batch_magic as gbm, pandas as pd
gbm.configure(poll_interval=0.05, max_poll_interval=0.2, retry_initial_delay=0.05)
"""
