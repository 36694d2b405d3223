"""The :class:`Emulator` object: configuration, lifecycle and test helpers."""

from __future__ import annotations

import contextlib
import ipaddress
import math
import os
import shutil
import socket
import tempfile
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

from . import _processes
from ._model import Responder
from ._scheduler import BatchScheduler
from ._server import Core, _Server
from ._store import Store


def is_loopback_host(host: str) -> bool:
    """True when every address ``host`` resolves to is a loopback address."""
    candidate = host.strip("[]")
    try:
        return ipaddress.ip_address(candidate).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(candidate, None)
    except socket.gaierror:
        return False
    addrs = {info[4][0] for info in infos}
    return bool(addrs) and all(
        ipaddress.ip_address(str(a).split("%")[0]).is_loopback for a in addrs
    )


_TMP_PREFIX = "gemini-batch-emulator-"
_OWNER_FILE = "owner.pid"


def _sweep_stale_temp_dirs() -> None:
    """Removes private temp dirs left behind by emulator processes that were killed."""
    try:
        candidates = list(Path(tempfile.gettempdir()).glob(_TMP_PREFIX + "*"))
    except OSError:
        return
    for d in candidates:
        try:
            pid = int((d / _OWNER_FILE).read_text().strip())
        except (OSError, ValueError):
            continue  # not ours, or still being created
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except OSError:
            pass


def _check_fraction(name: str, value: float) -> float:
    value = float(value)
    if not (0.0 <= value <= 1.0) or math.isnan(value):
        raise ValueError(f"{name} must be between 0 and 1, got {value!r}.")
    return value


def _check_non_negative(name: str, value: float) -> float:
    value = float(value)
    if value < 0 or math.isnan(value) or math.isinf(value):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}.")
    return value


class Emulator:
    """A local Gemini Batch API + File API server for the unmodified ``google-genai`` SDK.

    Use it as a context manager (or call :meth:`start` / :meth:`close`)::

        with Emulator() as emu:
            client = genai.Client(
                api_key="test-key", http_options=types.HttpOptions(base_url=emu.url)
            )

    Args:
        pending_seconds: how long a new batch stays ``PENDING`` before it runs.
        rate: requests answered per second while ``RUNNING`` (0 = all at once).
        fail_rate: fraction of requests answered with a per-request error.
        seed: seed for every random choice (faults, failures, result order).
        http_fault_rate: fraction of API calls answered 429/503 before doing anything.
        drop_after_create_rate: fraction of batch creates that are persisted but whose
            connection is then closed without a response.
        data_dir: where metadata and bytes live; ``None`` = a private temporary directory
            deleted on :meth:`close`. Reusing a directory resumes its batches.
        host, port: where to listen (port 0 = a free port). Only loopback hosts unless
            ``allow_remote=True``.
        responder: optional ``responder(request, model) -> GenerateContentResponse dict``
            replacing the echo model for generate-content batches.
        shuffle: return results in a deterministic shuffled order (default) rather than
            submission order.
        api_key: when set, only this key is accepted.
        expire_after: seconds after creation at which an unfinished batch becomes
            ``EXPIRED`` (``None`` = never).
        allow_remote: allow a non-loopback ``host`` (it exposes the emulator to the network).
        processes: worker processes that answer requests with the built-in model, so the
            HTTP side stays responsive while big batches are answered (``None`` = one per
            CPU, at most 4; 0 = answer in the emulator's own threads). They start
            with the first batch of more than 1024 requests; batches of a ``responder`` are
            always answered in-thread. Results are byte-identical either way.
    """

    def __init__(
        self,
        pending_seconds: float = 0.0,
        rate: float = 0.0,
        fail_rate: float = 0.0,
        seed: int = 0,
        http_fault_rate: float = 0.0,
        drop_after_create_rate: float = 0.0,
        data_dir: str | Path | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        responder: Responder | None = None,
        shuffle: bool = True,
        api_key: str | None = None,
        *,
        expire_after: float | None = None,
        allow_remote: bool = False,
        processes: int | None = None,
    ) -> None:
        self.pending_seconds = _check_non_negative("pending_seconds", pending_seconds)
        self.rate = _check_non_negative("rate", rate)
        self.fail_rate = _check_fraction("fail_rate", fail_rate)
        self.http_fault_rate = _check_fraction("http_fault_rate", http_fault_rate)
        self.drop_after_create_rate = _check_fraction(
            "drop_after_create_rate", drop_after_create_rate
        )
        if expire_after is not None:
            expire_after = _check_non_negative("expire_after", expire_after)
        self.expire_after = expire_after
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an integer, got {seed!r}.")
        self.seed = seed
        if not isinstance(port, int) or not (0 <= port <= 65535):
            raise ValueError(f"port must be between 0 and 65535, got {port!r}.")
        if not host:
            raise ValueError("host must not be empty.")
        if not allow_remote and not is_loopback_host(host):
            raise ValueError(
                f"Refusing to listen on non-loopback host {host!r}: the emulator has no real "
                "authentication. Pass allow_remote=True (on the CLI, naming --host does) if you "
                "really want to expose it."
            )
        if processes is None:
            processes = _processes.default_processes()
        if isinstance(processes, bool) or not isinstance(processes, int) or processes < 0:
            raise ValueError(
                f"processes must be an integer >= 0 (0 = answer in-thread), got {processes!r}."
            )
        self.processes = processes
        if responder is not None and not callable(responder):
            raise ValueError("responder must be callable: responder(request, model) -> dict.")
        if api_key is not None and not api_key.strip():
            raise ValueError("api_key must not be blank.")
        self.host = host
        self.port = port
        self.responder = responder
        self.shuffle = bool(shuffle)
        self._api_key = api_key.strip() if api_key is not None else None
        self._data_dir_arg = Path(data_dir) if data_dir is not None else None
        self._lock = threading.Lock()
        self._started = False
        self._closed = False
        self._tmp: str | None = None
        self._store: Store | None = None
        self._core: Core | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._pool: BatchScheduler | None = None
        self._url: str | None = None

    def __repr__(self) -> str:
        state = "running" if self._started and not self._closed else "stopped"
        return f"<Emulator {self._url or self.host} {state}>"

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> Emulator:
        """Binds the socket and serves on a background thread. Idempotent."""
        with self._lock:
            if self._closed:
                raise RuntimeError("This Emulator was closed; create a new one.")
            if self._started:
                return self
            if self._data_dir_arg is None:
                _sweep_stale_temp_dirs()
                self._tmp = tempfile.mkdtemp(prefix=_TMP_PREFIX)
                data_dir = Path(self._tmp)
                fd = os.open(data_dir / _OWNER_FILE, os.O_WRONLY | os.O_CREAT, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(str(os.getpid()))
            else:
                data_dir = self._data_dir_arg
            try:
                self._store = Store(data_dir)
                self._pool = BatchScheduler(
                    self._store, self.responder, processes=self.processes
                )
                self._core = Core(
                    self._store,
                    pending_seconds=self.pending_seconds,
                    rate=self.rate,
                    fail_rate=self.fail_rate,
                    seed=self.seed,
                    http_fault_rate=self.http_fault_rate,
                    drop_after_create_rate=self.drop_after_create_rate,
                    shuffle=self.shuffle,
                    expire_after=self.expire_after,
                    api_key=self._api_key,
                    poke=self._pool.poke,
                    workers=self._pool.stats,
                )
                ipv6 = ":" in self.host.strip("[]")
                self._server = _Server((self.host.strip("[]"), self.port), self._core, ipv6)
            except BaseException:
                self._cleanup()
                raise
            _bound_host, bound_port = self._server.server_address[:2]
            shown = self.host.strip("[]")
            shown = f"[{shown}]" if ipv6 else shown
            self._url = f"http://{shown}:{bound_port}"
            self.port = int(bound_port)
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="gemini-batch-emulator-http",
                daemon=True,
            )
            self._thread.start()
            self._pool.start()
            self._started = True
            return self

    def close(self) -> None:
        """Stops serving, finishes checkpoints, releases batches. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._cleanup()

    def _cleanup(self) -> None:
        if self._server is not None:
            if self._thread is not None:
                self._server.shutdown()
            self._server.close_all_connections()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._pool is not None:
            self._pool.close()
        if self._store is not None:
            self._store.close()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            if self._started and not self._closed:
                self.close()

    # -- accessors -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:43123`` (for ``HttpOptions(base_url=...)``)."""
        if self._url is None:
            raise RuntimeError("The emulator is not started; use start() or a with-block.")
        return self._url

    @property
    def data_dir(self) -> Path:
        """The directory holding the emulator's metadata and file bytes."""
        if self._store is None:
            raise RuntimeError("The emulator is not started.")
        return self._store.data_dir

    def _need_core(self) -> Core:
        if self._core is None or self._closed:
            raise RuntimeError("The emulator is not running.")
        return self._core

    @property
    def calls(self) -> list[tuple[str, str]]:
        """A snapshot of ``(method, path)`` for every API call received (admin excluded)."""
        if self._core is None:
            return []
        return self._core.calls()

    def reset_calls(self) -> None:
        """Forgets the recorded calls."""
        self._need_core().reset_calls()

    def batches(self) -> list[dict[str, Any]]:
        """Every batch, newest first: ``name``, ``state`` (``BATCH_STATE_*``), ``model``,
        ``displayName``, ``requestCount``, ``createTime`` and the request counters."""
        core = self._need_core()
        return [core.batch_summary(r) for r in core.store.all_batches()]

    def files(self) -> list[dict[str, Any]]:
        """Every file (uploaded and generated), newest first."""
        core = self._need_core()
        core.settle_all()
        with core.store.conn() as c:
            rows = c.execute("SELECT * FROM files ORDER BY create_time DESC, id DESC").fetchall()
        return [core.file_summary(r) for r in rows]

    def workers(self) -> dict[str, Any]:
        """Where blocks of requests were answered: ``processes`` (ids of the worker processes
        running now), ``blocksAnsweredInProcesses`` and ``blocksAnsweredInThreads``."""
        self._need_core()
        assert self._pool is not None
        return self._pool.stats()

    def set_state(self, batch_name: str, state: str) -> None:
        """Forces a batch into ``"FAILED"``, ``"EXPIRED"`` or ``"CANCELLED"``.

        ``batch_name`` is ``batches/<id>`` or ``<id>``. Raises ``KeyError`` for an unknown
        batch and ``ValueError`` for another state.
        """
        self._need_core().set_state(batch_name.removeprefix("batches/"), state)
