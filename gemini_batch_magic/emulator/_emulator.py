"""The :class:`Emulator` object: configuration, lifecycle and test helpers."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, TypeVar, overload

from ._config import FIXED_OPTIONS, LIVE_OPTIONS, EmulatorConfig, check_option_names
from ._http import HttpServer
from ._model import Responder
from ._scheduler import BatchScheduler
from ._server import make_server
from ._state import ApiState
from ._store import Store

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


_T = TypeVar("_T")


class _Option(Generic[_T]):
    """A read-only attribute of :class:`Emulator` that shows one option of its config."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> _Option[_T]: ...
    @overload
    def __get__(self, obj: Emulator, owner: type | None = None) -> _T: ...
    def __get__(self, obj: Emulator | None, owner: type | None = None) -> _Option[_T] | _T:
        if obj is None:
            return self
        value: _T = getattr(obj.config, self.name)
        return value

    def __set__(self, obj: Emulator, value: object) -> None:
        raise AttributeError(
            f"Emulator.{self.name} is read-only: use emu.configure({self.name}=...) to change "
            "it (on a running emulator too, where that makes sense)."
        )


class Emulator:
    """A local Gemini Batch API + File API server for the unmodified ``google-genai`` SDK.

    Use it as a context manager (or call :meth:`start` / :meth:`close`)::

        with Emulator(pending_seconds=1, fail_rate=0.1) as emu:
            client = genai.Client(
                api_key="test-key", http_options=types.HttpOptions(base_url=emu.url)
            )
            emu.configure(http_fault_rate=0.2)  # takes effect at once

    Args:
        config: an :class:`EmulatorConfig` holding every option (default: all defaults).
        **options: options by name, applied over ``config``: ``pending_seconds``,
            ``rate``, ``fail_rate``, ``seed``, ``http_fault_rate``,
            ``drop_after_create_rate``, ``data_dir``, ``host``, ``port``, ``responder``,
            ``shuffle``, ``api_key``, ``expire_after``, ``allow_remote``, ``processes``,
            ``progress``, ``zero_counts``, ``scope_by_key``, ``batch_id_length``,
            ``models``, ``mime_types``, ``file_ttl``, ``results_ttl``,
            ``file_quota_bytes``, ``fail_batch_rate``, ``fail_batch_message`` (each
            documented on :class:`EmulatorConfig` and in the package manual).

    Raises:
        TypeError: ``config`` is not an :class:`EmulatorConfig`, or an option name is
            unknown (the message suggests the closest ones).
        ValueError: an option has a bad value (the message names it and the fix).

    Every option can be read back as a read-only attribute (``emu.fail_rate``) or as
    ``emu.config``; :meth:`configure` changes them.
    """

    pending_seconds = _Option[float]()
    rate = _Option[float]()
    max_running_seconds = _Option["float | None"]()
    fail_rate = _Option[float]()
    seed = _Option[int]()
    http_fault_rate = _Option[float]()
    drop_after_create_rate = _Option[float]()
    host = _Option[str]()
    responder = _Option[Responder | None]()
    shuffle = _Option[bool]()
    expire_after = _Option[float | None]()
    allow_remote = _Option[bool]()
    processes = _Option[int]()
    progress = _Option[str]()
    zero_counts = _Option[bool]()
    scope_by_key = _Option[bool]()
    batch_id_length = _Option[int]()
    models = _Option["tuple[str, ...] | None"]()
    mime_types = _Option["tuple[str, ...] | None"]()
    file_ttl = _Option["float | None"]()
    results_ttl = _Option["float | None"]()
    file_quota_bytes = _Option["int | None"]()
    fail_batch_rate = _Option[float]()
    fail_batch_message = _Option[str]()

    def __init__(self, config: EmulatorConfig | None = None, **options: Any) -> None:
        if config is not None and not isinstance(config, EmulatorConfig):
            raise TypeError(
                f"config must be an EmulatorConfig, got {type(config).__name__} {config!r}; "
                "pass options by name, e.g. Emulator(pending_seconds=2)."
            )
        check_option_names(options, "Emulator()")
        if config is None:
            config = EmulatorConfig(**options)
        elif options:
            config = config.replace(**options)
        self._config = config
        self._lock = threading.Lock()
        self._started = False
        self._closed = False
        self._bound_port: int | None = None
        self._tmp: str | None = None
        self._store: Store | None = None
        self._state: ApiState | None = None
        self._server: HttpServer | None = None
        self._thread: threading.Thread | None = None
        self._scheduler: BatchScheduler | None = None
        self._url: str | None = None

    def __repr__(self) -> str:
        state = "running" if self._started and not self._closed else "stopped"
        return f"<Emulator {self._url or self.host} {state}>"

    # -- configuration -------------------------------------------------------------------

    @property
    def config(self) -> EmulatorConfig:
        """Every option, as now in force (frozen: change it with :meth:`configure`)."""
        return self._config

    @property
    def port(self) -> int:
        """The port listened on once started (the bound one when ``port=0``), else the option."""
        return self._bound_port if self._bound_port is not None else self._config.port

    def configure(self, **changes: Any) -> None:
        """Changes options, on a running emulator too: ``emu.configure(fail_rate=1.0)``.

        The new values are validated like the constructor's (``ValueError``; an unknown
        name is a ``TypeError`` naming the closest ones) and take effect at once:

        * ``http_fault_rate``, ``drop_after_create_rate``, ``api_key``, ``scope_by_key``,
          ``zero_counts``, ``models``, ``mime_types``, ``file_quota_bytes`` and
          ``file_ttl`` (for files uploaded from then on) from the next API call;
        * ``pending_seconds``, ``rate``, ``expire_after``, ``fail_rate``, ``seed``,
          ``shuffle``, ``progress``, ``results_ttl``, ``batch_id_length``,
          ``fail_batch_rate`` and ``fail_batch_message`` for the batches created from now
          on (each batch keeps the options it was created with, so its state and results
          never change under it). A new ``seed`` also restarts the random streams of HTTP
          faults, dropped creates and failed batches.

        Before :meth:`start` every option can change. Once started, ``host``, ``port``,
        ``allow_remote``, ``data_dir``, ``processes`` and ``responder`` cannot (a
        ``ValueError`` says why); passing their current value is allowed. Nothing is
        changed when any of ``changes`` is refused.
        """
        check_option_names(changes, "Emulator.configure()")
        with self._lock:
            if self._closed:
                raise RuntimeError("This Emulator was closed; create a new one.")
            new = self._config.replace(**changes)
            if self._started:
                for name in changes:
                    if name in LIVE_OPTIONS or getattr(new, name) == getattr(self._config, name):
                        continue
                    why = FIXED_OPTIONS.get(name, "it is not one of the live options")
                    raise ValueError(
                        f"{name} cannot change on a running emulator ({why}). Set it before "
                        f"start(), or close this emulator and start a new one with "
                        f"Emulator({name}=...)."
                    )
                assert self._state is not None
                self._state.reconfigure(new)
            self._config = new

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> Emulator:
        """Binds the socket and serves on a background thread. Idempotent."""
        with self._lock:
            if self._closed:
                raise RuntimeError("This Emulator was closed; create a new one.")
            if self._started:
                return self
            config = self._config
            if config.data_dir is None:
                _sweep_stale_temp_dirs()
                self._tmp = tempfile.mkdtemp(prefix=_TMP_PREFIX)
                data_dir = Path(self._tmp)
                fd = os.open(data_dir / _OWNER_FILE, os.O_WRONLY | os.O_CREAT, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(str(os.getpid()))
            else:
                data_dir = config.data_dir
            try:
                self._store = Store(data_dir)
                self._scheduler = BatchScheduler(
                    self._store, config.responder, processes=config.processes or 0
                )
                self._state = ApiState(
                    self._store,
                    config,
                    poke=self._scheduler.poke,
                    workers=self._scheduler.stats,
                )
                ipv6 = ":" in config.host.strip("[]")
                self._server = make_server(
                    (config.host.strip("[]"), config.port), self._state, ipv6
                )
            except BaseException:
                self._cleanup()
                raise
            _bound_host, bound_port = self._server.server_address[:2]
            shown = config.host.strip("[]")
            shown = f"[{shown}]" if ipv6 else shown
            self._url = f"http://{shown}:{bound_port}"
            self._bound_port = int(bound_port)
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="gemini-batch-emulator-http",
                daemon=True,
            )
            self._thread.start()
            self._scheduler.start()
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
        if self._scheduler is not None:
            self._scheduler.close()
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

    def _need_state(self) -> ApiState:
        if self._state is None or self._closed:
            raise RuntimeError("The emulator is not running.")
        return self._state

    @property
    def calls(self) -> list[tuple[str, str]]:
        """A snapshot of ``(method, path)`` for every API call received (admin excluded)."""
        if self._state is None:
            return []
        return self._state.calls()

    def reset_calls(self) -> None:
        """Forgets the recorded calls."""
        self._need_state().reset_calls()

    def batches(self) -> list[dict[str, Any]]:
        """Every batch, newest first: ``name``, ``state`` (``BATCH_STATE_*``), ``model``,
        ``displayName``, ``requestCount``, ``createTime`` and the request counters."""
        state = self._need_state()
        return [state.batch_summary(r) for r in state.store.all_batches()]

    def files(self) -> list[dict[str, Any]]:
        """Every file (uploaded and generated), newest first."""
        return self._need_state().file_summaries()

    def workers(self) -> dict[str, Any]:
        """Where blocks of requests were answered: ``processes`` (ids of the worker processes
        running now), ``blocksAnsweredInProcesses`` and ``blocksAnsweredInThreads``."""
        self._need_state()
        assert self._scheduler is not None
        return self._scheduler.stats()

    def answering_batches(self) -> list[str]:
        """Names (``batches/<id>``) of the batches a thread of this emulator is answering
        right now: claimed, and not let go yet (done, cancelled, expired or closing)."""
        self._need_state()
        assert self._scheduler is not None
        return [f"batches/{b}" for b in self._scheduler.answering()]

    def set_state(
        self, batch_name: str, state: str, message: str | None = None, code: int = 13
    ) -> None:
        """Forces a batch into ``"FAILED"``, ``"EXPIRED"`` or ``"CANCELLED"``.

        ``batch_name`` is ``batches/<id>`` or ``<id>``. A FAILED batch carries the
        operation ``error`` ``{"code": code, "message": message}`` (a google.rpc.Status;
        default code 13 ``INTERNAL``) when ``message`` is given. Raises ``KeyError`` for an
        unknown batch and ``ValueError`` for another state.
        """
        self._need_state().set_state(batch_name.removeprefix("batches/"), state, message, code)
