"""Answering blocks of requests, in worker processes or in the calling thread.

Answering with the built-in model is pure Python: in a thread it holds the GIL and the
HTTP side of the emulator crawls (a ``batches.get`` waits for the GIL, a download moves one
chunk per GIL switch). :func:`._answer.answer_block` is a pure function whose output is
byte-identical in any process, so :class:`AnswerPool` sends blocks to a few worker
processes instead and the emulator's own process only reads, writes and serves HTTP.
This module is the emulator's side of those processes; the loop that runs in them is
:func:`._answer.serve`.

The workers are plain ``python -c`` subprocesses talking over their stdin/stdout pipes,
not :mod:`multiprocessing`: its ``spawn`` and ``forkserver`` start methods re-import the
parent's ``__main__`` in every worker, which re-runs a user's script that has no
``if __name__ == "__main__":`` guard, and ``fork`` is unsafe in a threaded server. A worker
imports only :mod:`._answer` and :mod:`._model` (not the scheduler or the store, and not
``gemini_batch_magic`` itself, which would import pandas), runs niced (answering is
background work: the API and the clients on the same machine come first), ignores SIGINT
(Ctrl+C reaches the emulator, which stops it), and exits when its stdin closes, so it
never outlives the emulator even after a ``kill -9``.

Whatever goes wrong with the workers (no Python executable, a worker that cannot start or
dies), the pool marks itself broken and every block is answered in the calling thread
instead: the bytes are the same, only the HTTP side is slower.

Frames on the pipes are an 8-byte little-endian length followed by a pickle, written with
one ``writev`` into pipes widened to 1 MiB, so a block crosses in one go (the frames are
described in :mod:`._answer`).
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import threading
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ._answer import (
    HELLO,
    BlockResult,
    BlockSpec,
    answer_block,
    recv_frame,
    send_frame,
    split_block,
)

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from ._model import Responder

#: Seconds a new worker may take to say hello before it is killed (and the pool broken).
START_TIMEOUT = 60.0
#: Seconds :meth:`AnswerPool.close` waits for a worker to exit before killing it.
EXIT_TIMEOUT = 5.0
#: Blocks sent to one worker process and not yet answered.
IN_FLIGHT = 2
#: Default number of workers at most: beyond it the emulator's own process, which reads
#: and writes every block, keeps no more of them busy.
MAX_DEFAULT_PROCESSES = 4
#: Bytes a pipe to or from a worker may hold (Linux lets anyone ask for up to 1 MiB).
PIPE_SIZE = 1 << 20


def default_processes() -> int:
    """One per CPU this process may use, at most :data:`MAX_DEFAULT_PROCESSES`.

    Not one fewer than the CPUs: the workers run niced, so the emulator's API and its
    clients still come first, and on two CPUs a single worker answers slower than the old
    in-thread answering did (moving blocks between processes costs ~15%).
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, MAX_DEFAULT_PROCESSES))


class PoolBroken(RuntimeError):
    """The worker processes are unavailable; the block must be answered in-thread."""


# -- starting a worker process -----------------------------------------------------------


def _bootstrap_code() -> str:
    """``python -c`` code that runs :func:`._answer.serve`, importing ``_answer`` (and the
    ``_model`` it needs) without running ``gemini_batch_magic/__init__`` or
    ``emulator/__init__``."""
    here = Path(__file__).resolve().parent
    pkg = __name__.rsplit(".", 1)[0]  # gemini_batch_magic.emulator
    top = pkg.split(".", 1)[0]
    packages = [(top, str(here.parent)), (pkg, str(here))]
    return (
        "import sys, types\n"
        f"for name, path in {packages!r}:\n"
        "    module = types.ModuleType(name)\n"
        "    module.__path__ = [path]\n"
        "    sys.modules[name] = module\n"
        f"from {pkg}._answer import serve\n"
        "serve()\n"
    )


def _child_env() -> dict[str, str]:
    """The worker's environment: ours, plus glibc malloc settings that keep the heap (not
    fresh pages for every block: page faults would cost the worker ~10%)."""
    env = dict(os.environ)
    tunables = "glibc.malloc.mmap_threshold=16777216:glibc.malloc.trim_threshold=16777216"
    if env.get("GLIBC_TUNABLES"):
        tunables += ":" + env["GLIBC_TUNABLES"]  # the user's settings win
    env["GLIBC_TUNABLES"] = tunables
    return env


def _widen_pipe(pipe: IO[bytes] | None) -> None:
    """Lets a pipe hold a whole block (Linux; best effort), so a frame moves in one go."""
    setsize = getattr(fcntl, "F_SETPIPE_SZ", None)  # fcntl is None on Windows
    if pipe is None or setsize is None:
        return
    try:
        fcntl.fcntl(pipe.fileno(), setsize, PIPE_SIZE)
    except OSError:
        pass


class _Job:
    __slots__ = ("future", "payload")

    def __init__(self, payload: tuple[Any, ...]) -> None:
        self.future: Future[BlockResult] = Future()
        self.payload = payload


class _Child:
    """One child process, a thread that sends it jobs and one that receives the answers.

    Up to ``IN_FLIGHT`` jobs are outstanding per child, so the next block is already in
    the child when it finishes one.
    """

    def __init__(self, pool: AnswerPool, proc: subprocess.Popen[bytes]) -> None:
        self.pool = pool
        self.proc = proc
        self.pid: int | None = None
        self._sent: collections.deque[_Job] = collections.deque()
        self._room = threading.Semaphore(IN_FLIGHT)
        self.threads = [
            threading.Thread(target=self._send_jobs, name=f"gemini-emulator-send-{proc.pid}"),
            threading.Thread(target=self._receive, name=f"gemini-emulator-receive-{proc.pid}"),
        ]
        for t in self.threads:
            t.daemon = True

    def _send_jobs(self) -> None:
        stdin = self.proc.stdin
        assert stdin is not None
        pool = self.pool
        try:
            while True:
                while not self._room.acquire(timeout=0.5):
                    if not pool.usable:
                        return
                job = pool._next_job()
                if job is None:
                    return
                if not job.future.set_running_or_notify_cancel():
                    self._room.release()
                    continue
                with pool._lock:
                    self._sent.append(job)
                send_frame(stdin.fileno(), job.payload)
        except Exception as exc:
            self._fail(f"worker process {self.proc.pid} failed: {exc}")
        finally:
            try:
                stdin.close()  # the worker exits once it has answered what it has
            except OSError:
                pass

    def _receive(self) -> None:
        proc = self.proc
        assert proc.stdout is not None
        watchdog = threading.Timer(START_TIMEOUT, proc.kill)
        watchdog.daemon = True
        watchdog.start()
        try:
            hello = recv_frame(proc.stdout, limit=4096)
            if not (isinstance(hello, tuple) and len(hello) == 2 and hello[0] == HELLO):
                raise EOFError(f"unexpected greeting {hello!r:.80}")
            self.pid = int(hello[1])
        except Exception as exc:
            self._fail(f"worker process {proc.pid} did not start: {exc}")
            return
        finally:
            watchdog.cancel()
        while True:
            try:
                kind, value = recv_frame(proc.stdout)
            except Exception as exc:
                with self.pool._lock:
                    clean = self.pool._closed and not self._sent
                if not clean:
                    self._fail(f"worker process {proc.pid} failed: {exc}")
                return
            with self.pool._lock:
                job = self._sent.popleft()
            self._room.release()
            if kind == "ok":
                self.pool._count(in_process=True)
                job.future.set_result(value)
            else:
                job.future.set_exception(RuntimeError(value))

    def _fail(self, reason: str) -> None:
        """Breaks the pool and hands this worker's outstanding blocks back."""
        with self.pool._lock:
            self.pool._break_locked(reason)
            sent, self._sent = list(self._sent), collections.deque()
        for job in sent:
            if not job.future.done():
                job.future.set_exception(PoolBroken(reason))


class Ticket:
    """A block handed to :meth:`AnswerPool.submit`; :meth:`result` answers or awaits it."""

    __slots__ = ("_args", "_future", "_pool")

    def __init__(
        self,
        pool: AnswerPool,
        args: tuple[BlockSpec, bytes, int, int, int, Responder | None],
        future: Future[BlockResult] | None,
    ) -> None:
        self._pool = pool
        self._args = args
        self._future = future

    def result(self, stop: threading.Event) -> BlockResult | None:
        """The block's answer, or ``None`` once ``stop`` is set."""
        fut = self._future
        if fut is not None:
            while not stop.is_set():
                try:
                    return fut.result(timeout=0.1)
                except FutureTimeout:
                    continue
                except CancelledError:
                    return None  # the pool was closed
                except PoolBroken:
                    break  # answer it here instead: same bytes
            else:
                fut.cancel()
                return None
        spec, segment, nlines, first_index, block, responder = self._args
        lines = split_block(segment, nlines)
        result = answer_block(spec, lines, first_index, block, responder, stop)
        if result is not None:
            self._pool._count(in_process=False)
        return result

    def cancel(self) -> None:
        if self._future is not None:
            self._future.cancel()


class AnswerPool:
    """Up to ``processes`` worker processes answering blocks, started on first use.

    ``processes=0`` never starts any: every block is answered in the calling thread.
    """

    def __init__(self, processes: int) -> None:
        self.processes = processes
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._jobs: collections.deque[_Job] = collections.deque()
        self._children: list[_Child] = []
        self._started = False
        self._closed = False
        self.broken: str | None = None if processes > 0 else "processes=0"
        self.blocks_in_processes = 0
        self.blocks_in_threads = 0

    @property
    def usable(self) -> bool:
        """False when blocks can only be answered in-thread (0 processes, broken, closed)."""
        return self.broken is None and not self._closed

    def pids(self) -> list[int]:
        """Process ids of the worker processes that are up and answering."""
        with self._lock:
            if self.broken is not None:
                return []
            return [w.pid for w in self._children if w.pid is not None]

    def submit(
        self,
        spec: BlockSpec,
        segment: bytes,
        nlines: int,
        first_index: int,
        block: int,
        responder: Responder | None = None,
        *,
        in_process: bool = True,
    ) -> Ticket:
        """Queues a block (``nlines`` non-blank lines in ``segment``) for a worker process
        (when ``in_process`` and the pool is usable) or prepares it to be answered in-thread
        by :meth:`Ticket.result`."""
        args = (spec, segment, nlines, first_index, block, responder)
        if not in_process or responder is not None or not nlines:
            return Ticket(self, args, None)
        with self._lock:
            if self.broken is not None or self._closed or not self._start_locked():
                return Ticket(self, args, None)
            job = _Job((spec, segment, nlines, first_index, block))
            self._jobs.append(job)
            self._cond.notify()
        return Ticket(self, args, job.future)

    def close(self) -> None:
        """Stops the workers (each finishes its current block first). Idempotent."""
        with self._lock:
            self._closed = True
            jobs, self._jobs = list(self._jobs), collections.deque()
            self._cond.notify_all()
            children = list(self._children)
        for job in jobs:
            job.future.cancel()
        for w in children:
            for t in w.threads:
                if t.ident is not None:
                    t.join(timeout=EXIT_TIMEOUT)
            try:
                w.proc.wait(timeout=EXIT_TIMEOUT)
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait()
            for pipe in (w.proc.stdin, w.proc.stdout):
                if pipe is not None:
                    try:
                        pipe.close()
                    except OSError:
                        pass

    # -- internals -----------------------------------------------------------------------

    def _start_locked(self) -> bool:
        if self._started:
            return True
        self._started = True
        code = _bootstrap_code()
        try:
            if not sys.executable:
                raise OSError("sys.executable is not set")
            for _ in range(self.processes):
                proc = subprocess.Popen(
                    [sys.executable, "-c", code],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    close_fds=True,
                    env=_child_env(),
                )
                for pipe in (proc.stdin, proc.stdout):
                    _widen_pipe(pipe)
                self._children.append(_Child(self, proc))
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            self._break_locked(f"cannot start worker processes: {exc}")
            return False
        for w in self._children:
            for t in w.threads:
                t.start()
        return True

    def _next_job(self) -> _Job | None:
        with self._lock:
            while not self._jobs:
                if self._closed or self.broken is not None:
                    return None
                self._cond.wait()
            return self._jobs.popleft()

    def _count(self, *, in_process: bool) -> None:
        with self._lock:
            if in_process:
                self.blocks_in_processes += 1
            else:
                self.blocks_in_threads += 1

    def _break_locked(self, reason: str) -> None:
        """Marks the pool broken and hands every queued block back to its batch thread."""
        if self.broken is None:
            self.broken = reason
        jobs, self._jobs = list(self._jobs), collections.deque()
        self._cond.notify_all()
        for job in jobs:
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(PoolBroken(reason))
        for w in self._children:
            if w.proc.poll() is None:
                w.proc.kill()  # a worker busy with a block hands it back on EOF
