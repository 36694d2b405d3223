"""The offline Vertex AI test bed: Cloud Storage, BigQuery and Vertex AI batch prediction.

:class:`TestBed` starts ``gcp-storage-emulator`` and ``bqemulator`` (each in a process of
its own, on free ports of 127.0.0.1, with a bounded start-up) and our Vertex AI emulator
(:mod:`._vertex`, in this process), and stops all three on :meth:`TestBed.close` (or
leaving the ``with`` block), whatever happened. :meth:`TestBed.env` is the environment a
client sets to use it; ``gembatch emulator --vertex`` prints it as ``export`` lines::

    with TestBed() as bed:
        os.environ.update(bed.env())          # STORAGE_EMULATOR_HOST, BIGQUERY_EMULATOR_HOST,
        ...                                   # GOOGLE_VERTEX_BASE_URL, project, location...

Workarounds for the two emulators' pitfalls: bqemulator's offline start (the ``spatial``
download) goes through :mod:`._bigquery`; its multipart load jobs are refused, so tables
are filled with streaming inserts (``insertAll``), here and in the tests.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

from ._vertex import VertexEmulator

__all__ = ["TestBed"]

#: Seconds each emulator process may take to accept connections.
START_TIMEOUT = 60.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TestBed:
    """The three emulators together (see the module docstring)."""

    __test__ = False  # not a pytest test class, whatever its name

    def __init__(self, *, project: str = "test-project", location: str = "us-central1",
                 bucket: str = "gembatch-staging", pending_seconds: float = 0.1,
                 bigquery: bool = True) -> None:
        self.project, self.location, self.bucket = project, location, bucket
        self.pending_seconds = pending_seconds
        self.with_bigquery = bigquery
        self.storage_url = ""
        self.bigquery_url = ""
        self.vertex: VertexEmulator | None = None
        self._procs: list[tuple[str, subprocess.Popen[bytes], Any]] = []

    @property
    def staging(self) -> str:
        return f"gs://{self.bucket}/gembatch"

    def start(self) -> TestBed:
        try:
            port = _free_port()
            self._spawn("gcp-storage-emulator", [
                sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1",
                "--port", str(port), "--in-memory", "--default-bucket", self.bucket, "--quiet",
            ], port)
            self.storage_url = f"http://127.0.0.1:{port}"
            if self.with_bigquery:
                port = _free_port()
                self._spawn("bqemulator", [
                    sys.executable, "-m", "gemini_batch_magic.emulator._bigquery",
                    "--port", str(port), "--project", self.project,
                ], port)
                self.bigquery_url = f"http://127.0.0.1:{port}"
            self.vertex = VertexEmulator(self.storage_url, self.bigquery_url or None,
                                         projects=(self.project,),
                                         pending_seconds=self.pending_seconds).start()
        except BaseException:
            self.close()
            raise
        return self

    def _spawn(self, label: str, cmd: list[str], port: int) -> None:
        log = tempfile.TemporaryFile()
        env = {**os.environ, "BQEMU_ENABLE_FORMAT_EXTENSIONS": "false",
               "BQEMU_LOG_LEVEL": "warning", "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, env=env)
        self._procs.append((label, proc, log))
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{label} exited with code {proc.returncode} while starting:"
                                   f" {self._tail(log)}")
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{label} did not accept connections on 127.0.0.1:{port} within "
                           f"{START_TIMEOUT:.0f} s: {self._tail(log)}")

    @staticmethod
    def _tail(log: Any) -> str:
        log.seek(0)
        return log.read()[-2000:].decode(errors="replace").strip() or "(no output)"

    def close(self) -> None:
        if self.vertex is not None:
            with contextlib.suppress(Exception):
                self.vertex.close()
            self.vertex = None
        for _label, proc, log in reversed(self._procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
            log.close()
        self._procs.clear()

    def __enter__(self) -> TestBed:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def env(self) -> dict[str, str]:
        """The environment a client sets to use the bed (one variable per line when
        printed)."""
        assert self.vertex is not None, "start() the bed first"
        env = {
            "STORAGE_EMULATOR_HOST": self.storage_url,
            "GOOGLE_VERTEX_BASE_URL": self.vertex.url,
            "GOOGLE_GENAI_USE_VERTEXAI": "true",
            "GOOGLE_CLOUD_PROJECT": self.project,
            "GOOGLE_CLOUD_LOCATION": self.location,
            "GEMBATCH_STAGING": self.staging,
        }
        if self.bigquery_url:
            env["BIGQUERY_EMULATOR_HOST"] = self.bigquery_url
        return env


def main(argv: list[str] | None = None, *, prog: str | None = None) -> int:
    """``gembatch emulator --vertex``: start the bed, print its environment as ``export``
    lines (one per variable), serve until SIGINT/SIGTERM, stop everything; exit code 0."""
    import argparse
    import shlex
    import signal
    import threading

    parser = argparse.ArgumentParser(prog=prog, description="The Vertex AI test bed: "
                                     "gcp-storage-emulator, bqemulator and a Vertex AI batch "
                                     "prediction emulator, on 127.0.0.1.")
    parser.add_argument("--project", default="test-project", help="the project it serves")
    parser.add_argument("--location", default="us-central1", help="the location it serves")
    parser.add_argument("--bucket", default="gembatch-staging",
                        help="the staging bucket it creates")
    parser.add_argument("--pending-seconds", type=float, default=2.0, dest="pending_seconds",
                        help="how long a new job stays PENDING (default 2)")
    parser.add_argument("--no-bigquery", action="store_true", dest="no_bigquery",
                        help="without bqemulator (Cloud Storage only)")
    args = parser.parse_args(argv)
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
    bed = TestBed(project=args.project, location=args.location, bucket=args.bucket,
                  pending_seconds=args.pending_seconds, bigquery=not args.no_bigquery)
    try:
        bed.start()
    except (OSError, RuntimeError) as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 1
    try:
        for name, value in bed.env().items():
            print(f"export {name}={shlex.quote(value)}", flush=True)
        print(f"# serving until stopped (Ctrl-C); staging bucket gs://{bed.bucket}",
              file=sys.stderr, flush=True)
        stop.wait()
    finally:
        bed.close()
    return 0
