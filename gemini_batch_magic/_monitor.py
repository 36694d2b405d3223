"""One background poller for every live run of this process.

Views do not poll by themselves: they ask their run to ``watch`` them
(``run.watch(callback)``), which hands the run to the one :class:`Monitor` of the process,
``monitor``. A single daemon thread then calls ``run.refresh()`` for each watched, unfinished
run and hands the run to the registered callbacks (``callback(run, error)``), which update
the views from the run's attributes. The thread

* polls every ``settings.poll_interval`` seconds while something changes, and backs off
  (x1.5 per quiet poll) up to ``settings.max_poll_interval`` when nothing does;
* records a failed ``refresh()`` by passing the exception to the callbacks (``error``) and
  simply tries again at the next poll -- nothing is raised in the thread;
* when several runs are due at once, asks for all their live batches with one
  ``batches.list`` page instead of a ``batches.get`` each (batches it does not find, and
  finished ones, are fetched one by one);
* stops by itself when every watched run is done; the next :meth:`Monitor.watch` starts a
  new one.

The kernel is never blocked: the thread sleeps on a condition variable, and ``refresh()``
is thread-safe (it holds the run's own lock).

Where the callbacks run. In a Jupyter kernel the thread sets its own parent header before
it calls any callback (``shell.set_thread_parent`` and the kernel's shell parent of this
thread, which ipykernel >= 7 sends a thread's output and widget messages with): the
request the kernel serves now, or, before the kernel has served any, the request (cell)
that registered the callback (noted by :meth:`Monitor.watch`). Widget messages are routed
by comm id, not by cell, so any live request renders them in JupyterLab and Notebook; the
request being served now is the one whose messages nbclient and papermill record, so a
saved notebook keeps each widget's final state. A thread without a parent header is what
older kernels dropped. With
``settings.push_updates`` False the thread calls no callback at all: it only polls (runs
stay current, results are downloaded as soon as a shard ends), and views are kept live by
their front end asking the kernel for fresh state (see ``gemini_batch_magic.widgets``).

Like tqdm's ``TMonitor``, the monitor never imports its users: it knows runs by duck type
(:class:`Watchable`) and lists batches through the backend. The module-level functions
(:func:`watch`, :func:`unwatch`, :func:`poll_now`, :func:`wait_idle`, :func:`watched_runs`,
:func:`monitor_running`, :func:`reset`) are the methods of ``monitor``.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from . import _backend
from ._config import settings

__all__ = [
    "Callback",
    "Monitor",
    "Watchable",
    "Watched",
    "monitor",
    "monitor_running",
    "poll_now",
    "reset",
    "unwatch",
    "wait_idle",
    "watch",
    "watched_runs",
]

#: ``callback(run, error)``: ``error`` is None after a good poll, else the exception raised.
Callback = Callable[[Any, "BaseException | None"], Any]

_log = logging.getLogger(__name__)

_BACKOFF = 1.5
#: With this many runs due at once, one ``batches.list`` answers for all their live shards.
_LIST_AT = 3
#: A run due within this many seconds (at most a quarter of its interval) joins the round.
_JOIN_SLACK = 1.0


class Watchable(Protocol):
    """What the monitor uses of a run (``BatchRun`` is one)."""

    @property
    def run_id(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def done(self) -> bool: ...
    @property
    def stats(self) -> Sequence[int]: ...
    @property
    def batch_names(self) -> list[str]: ...
    @property
    def error(self) -> str | None: ...
    @property
    def live_batch_names(self) -> set[str]: ...

    def refresh(self, known: Mapping[str, Any] | None = None) -> Any: ...


class Watched(NamedTuple):
    """A read-only snapshot of one watched run (:meth:`Monitor.entries`)."""

    run_id: str
    interval: float  #: seconds until the next poll after the one due
    due: float  #: ``time.monotonic()`` of the next poll (0: right away)
    callbacks: int  #: how many callbacks it tells


@dataclass
class _Entry:
    run: Watchable
    callbacks: list[Callback] = field(default_factory=list)
    interval: float = 0.0
    due: float = 0.0
    fingerprint: tuple[Any, ...] = ()
    polled: bool = False  #: polled (and callbacks told) since the last watch()
    told_done: bool = False  #: the callbacks have seen the run done (it may be dropped)
    generation: int = 0  #: bumped by watch(), so a poll racing with it does not count
    #: the kernel request (cell) that registered each callback: its parent header, or None
    #: (the thread's parent before the kernel has served a request of its own)
    parents: dict[Callback, Any] = field(default_factory=dict)


def _kernel_parent() -> Any:
    """The parent header of the kernel request running now (None outside a Jupyter kernel).

    Read through ``sys.modules``, like ``_env.in_notebook``: the engine imports no notebook
    library, it only talks to one that is already running.
    """
    ip: Any = sys.modules.get("IPython")
    shell = ip.get_ipython() if ip is not None else None
    kernel = getattr(shell, "kernel", None)
    if kernel is None or not hasattr(kernel, "get_parent"):
        return None
    with contextlib.suppress(Exception):
        return kernel.get_parent("shell") or None
    return None


def _served_parent(kernel: Any) -> Any:
    """The parent header of the request the kernel serves now (its last ``set_parent``),
    read from the kernel's main context: a new thread has no value of its own."""
    context, var = getattr(kernel, "_shell_context", None), getattr(kernel, "_shell_parent", None)
    if context is not None and var is not None:
        with contextlib.suppress(Exception):
            return context[var] or None
    return None


@contextlib.contextmanager
def _as_parent(fallback: Any) -> Any:
    """Run the block with the kernel's current request (else ``fallback``) as this thread's
    parent header (ipykernel >= 7: the thread's output, display and comm messages then
    belong to that request)."""
    ip: Any = sys.modules.get("IPython")
    shell = ip.get_ipython() if ip is not None else None
    kernel = getattr(shell, "kernel", None)
    parent = _served_parent(kernel) or fallback
    if shell is None or kernel is None or not parent:
        yield
        return
    undo: list[Callable[[], Any]] = []
    try:
        tokens = shell.set_thread_parent(parent) if hasattr(shell, "set_thread_parent") else None
        if tokens is not None:
            undo.append(lambda: shell.reset_thread_parent(tokens))
        var = getattr(kernel, "_shell_parent", None)  # what kernel.get_parent() reads
        if var is not None and hasattr(var, "set"):
            token = var.set(parent)
            undo.append(lambda: var.reset(token))
    except Exception:  # an older or unusual kernel: the messages keep ipykernel's default
        _log.debug("could not set the thread's parent header", exc_info=True)
    try:
        yield
    finally:
        for step in reversed(undo):
            with contextlib.suppress(Exception):
                step()


def _fingerprint(run: Watchable) -> tuple[Any, ...]:
    return (run.state, tuple(run.stats), tuple(run.batch_names), run.error)


class Monitor:
    """The watched runs and the one thread that polls them (see the module docstring)."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.RLock())
        self._entries: dict[str, _Entry] = {}
        self._thread: threading.Thread | None = None

    def watch(self, run: Watchable, callback: Callback | None = None) -> None:
        """Poll ``run`` in the background until it is done, calling ``callback(run, error)``.

        Watching a run twice adds the callback (if new) and polls soon. A run that is already
        done is still polled once (its results may not be downloaded yet), then dropped.
        """
        with self._cond:
            entry = self._entries.get(run.run_id)
            if entry is None:
                entry = self._entries[run.run_id] = _Entry(
                    run=run, interval=settings.poll_interval, fingerprint=_fingerprint(run))
            if callback is not None and callback not in entry.callbacks:
                entry.callbacks.append(callback)
                entry.parents[callback] = _kernel_parent()
            entry.polled = False  # poll (again) and tell every callback, new ones included
            entry.generation += 1
            entry.due = 0.0
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="gembatch-monitor",
                                                daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def unwatch(self, run: Watchable, callback: Callback | None = None) -> None:
        """Stop calling ``callback`` for ``run`` (all callbacks, and stop polling, if None).

        A run whose last callback is removed stays watched only if it was watched without one.
        """
        with self._cond:
            entry = self._entries.get(run.run_id)
            if entry is None:
                return
            if callback is None:
                del self._entries[run.run_id]
            else:
                with contextlib.suppress(ValueError):
                    entry.callbacks.remove(callback)
                entry.parents.pop(callback, None)
            self._cond.notify_all()

    def reset(self) -> None:
        """Forget every watched run; the thread then ends by itself (tests, extension unload)."""
        with self._cond:
            self._entries.clear()
            self._cond.notify_all()

    def poll_now(self, run: Watchable | None = None) -> None:
        """Ask the thread to poll ``run`` (or every watched run) right away, at the fast rate."""
        with self._cond:
            for entry in self._entries.values():
                if run is None or entry.run.run_id == run.run_id:
                    entry.due = 0.0
                    entry.interval = settings.poll_interval
            self._cond.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Poll every watched run now, then wait until the thread has ended (all runs done).

        Every callback has then seen the final state of its run, e.g. before a notebook is
        saved. Returns False if ``timeout`` (seconds) ran out first; runs that are still live
        keep the thread alive, so call this after waiting for the runs themselves.
        """
        self.poll_now()
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.running():
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    def watched_runs(self) -> list[str]:
        """Run ids being polled right now."""
        with self._cond:
            return list(self._entries)

    def entries(self) -> dict[str, Watched]:
        """A snapshot of every watched run by run id: its poll interval, when it is due next
        and how many callbacks it has (read-only: changing it changes nothing)."""
        with self._cond:
            return {k: Watched(k, e.interval, e.due, len(e.callbacks))
                    for k, e in self._entries.items()}

    def running(self) -> bool:
        """True while the background thread is alive."""
        t = self._thread
        return t is not None and t.is_alive()

    # -- the thread ---------------------------------------------------------------------
    @staticmethod
    def _notify(entry: _Entry, error: BaseException | None) -> None:
        if not settings.push_updates:  # the views pull from their front end instead
            return
        for cb in list(entry.callbacks):
            try:
                with _as_parent(entry.parents.get(cb)):
                    cb(entry.run, error)
            except Exception:  # a broken view must not stop the others
                _log.exception("gemini_batch_magic monitor callback failed")

    def _poll(self, entry: _Entry, known: Mapping[str, Any] | None = None,
              start: float | None = None) -> None:
        """Refresh one run (``known``: batch jobs just listed) and tell its callbacks; never
        raises."""
        error: BaseException | None = None
        try:
            entry.run.refresh(known)
        except Exception as exc:  # transient or not: shown on the widget, tried again later
            error = exc
        done = entry.run.done  # what the callbacks are about to see
        fp = _fingerprint(entry.run)
        if error is None and fp != entry.fingerprint:
            entry.interval = settings.poll_interval
        else:
            entry.interval = min(max(entry.interval, settings.poll_interval) * _BACKOFF,
                                 max(settings.max_poll_interval, settings.poll_interval))
        entry.fingerprint = fp
        # timed from the round's start, so runs polled together stay due together
        entry.due = (time.monotonic() if start is None else start) + entry.interval
        self._notify(entry, error)
        entry.told_done = done

    def _loop(self) -> None:
        while True:
            with self._cond:
                # drop runs whose callbacks have seen them finished
                # (done by the monitor's own poll: a run finished by wait() elsewhere is
                # polled once more, so its views draw the final state)
                for run_id in [k for k, e in self._entries.items() if e.polled and e.told_done]:
                    del self._entries[run_id]
                if not self._entries:
                    if self._thread is threading.current_thread():
                        self._thread = None
                    return
                now = time.monotonic()
                if not any(e.due <= now for e in self._entries.values()):
                    self._cond.wait(timeout=min(e.due for e in self._entries.values()) - now)
                    continue
                # a run due a little later joins this round (and its listing)
                due = [(e, e.generation) for e in self._entries.values()
                       if e.due <= now + min(_JOIN_SLACK, 0.25 * e.interval)]
            known = None
            if len(due) >= _LIST_AT:  # one listing instead of a get per run
                names: set[str] = set()
                for e, _ in due:
                    names |= e.run.live_batch_names
                known = _backend.list_batches(names)
            for entry, generation in due:
                self._poll(entry, known, now)
                with self._cond:
                    if entry.generation == generation:
                        entry.polled = True
                    else:  # watched again meanwhile: a new callback may have missed this poll
                        entry.due = 0.0


#: The monitor of this process; the functions below are its methods.
monitor = Monitor()

watch = monitor.watch
unwatch = monitor.unwatch
poll_now = monitor.poll_now
wait_idle = monitor.wait_idle
watched_runs = monitor.watched_runs
monitor_running = monitor.running
reset = monitor.reset
