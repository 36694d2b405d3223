"""One background poller for every live run of this process.

Widgets do not poll by themselves: they ask the monitor to :func:`watch` their run. A single
daemon thread then calls ``run.refresh()`` for each watched, unfinished run and hands the
run to the registered callbacks (``callback(run, error)``), which update the widgets from
the run's attributes. The thread

* polls every ``settings.poll_interval`` seconds while something changes, and backs off
  (x1.5 per quiet poll) up to ``settings.max_poll_interval`` when nothing does;
* records a failed ``refresh()`` by passing the exception to the callbacks (``error``) and
  simply tries again at the next poll -- nothing is raised in the thread;
* when several runs are due at once, asks for all their live batches with one
  ``batches.list`` page instead of a ``batches.get`` each (batches it does not find, and
  finished ones, are fetched one by one);
* stops by itself when every watched run is done; the next :func:`watch` starts a new one.

The kernel is never blocked: the thread sleeps on a condition variable, and ``refresh()``
is thread-safe (it holds the run's own lock).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._config import settings

if TYPE_CHECKING:
    from ._runs import BatchRun

__all__ = [
    "Callback",
    "monitor_running",
    "poll_now",
    "redact",
    "reset",
    "unwatch",
    "wait_idle",
    "watch",
    "watched_runs",
]

#: ``callback(run, error)``: ``error`` is None after a good poll, else the exception raised.
Callback = Callable[["BatchRun", "BaseException | None"], Any]

_log = logging.getLogger(__name__)

_BACKOFF = 1.5
#: With this many runs due at once, one ``batches.list`` answers for all their live shards.
_LIST_AT = 3
#: A run due within this many seconds (at most a quarter of its interval) joins the round.
_JOIN_SLACK = 1.0


@dataclass
class _Entry:
    run: BatchRun
    callbacks: list[Callback] = field(default_factory=list)
    interval: float = 0.0
    due: float = 0.0
    fingerprint: tuple[Any, ...] = ()
    polled: bool = False  #: polled (and callbacks told) since the last watch()
    told_done: bool = False  #: the callbacks have seen the run done (it may be dropped)
    generation: int = 0  #: bumped by watch(), so a poll racing with it does not count


_cond = threading.Condition(threading.RLock())
_entries: dict[str, _Entry] = {}
_thread: threading.Thread | None = None


def _fingerprint(run: BatchRun) -> tuple[Any, ...]:
    return (run.state, tuple(run.stats), tuple(run.batch_names), run.error)


def watch(run: BatchRun, callback: Callback | None = None) -> None:
    """Poll ``run`` in the background until it is done, calling ``callback(run, error)``.

    Watching a run twice adds the callback (if new) and polls soon. A run that is already
    done is still polled once (its results may not be downloaded yet), then dropped.
    """
    global _thread
    with _cond:
        entry = _entries.get(run.run_id)
        if entry is None:
            entry = _entries[run.run_id] = _Entry(run=run, interval=settings.poll_interval,
                                                  fingerprint=_fingerprint(run))
        if callback is not None and callback not in entry.callbacks:
            entry.callbacks.append(callback)
        entry.polled = False  # poll (again) and tell every callback, new ones included
        entry.generation += 1
        entry.due = 0.0
        if _thread is None or not _thread.is_alive():
            _thread = threading.Thread(target=_loop, name="gembatch-monitor", daemon=True)
            _thread.start()
        _cond.notify_all()


def unwatch(run: BatchRun, callback: Callback | None = None) -> None:
    """Stop calling ``callback`` for ``run`` (all callbacks, and stop polling, if None).

    A run whose last callback is removed stays watched only if it was watched without one.
    """
    with _cond:
        entry = _entries.get(run.run_id)
        if entry is None:
            return
        if callback is None:
            del _entries[run.run_id]
        else:
            with contextlib.suppress(ValueError):
                entry.callbacks.remove(callback)
        _cond.notify_all()


def reset() -> None:
    """Forget every watched run; the thread then ends by itself (tests, extension unload)."""
    with _cond:
        _entries.clear()
        _cond.notify_all()


def poll_now(run: BatchRun | None = None) -> None:
    """Ask the thread to poll ``run`` (or every watched run) right away, at the fast rate."""
    with _cond:
        for entry in _entries.values():
            if run is None or entry.run.run_id == run.run_id:
                entry.due = 0.0
                entry.interval = settings.poll_interval
        _cond.notify_all()


def wait_idle(timeout: float | None = None) -> bool:
    """Poll every watched run now, then wait until the thread has ended (all runs done).

    Every callback has then seen the final state of its run, e.g. before a notebook is
    saved. Returns False if ``timeout`` (seconds) ran out first; runs that are still live
    keep the thread alive, so call this after waiting for the runs themselves.
    """
    poll_now()
    deadline = None if timeout is None else time.monotonic() + timeout
    while monitor_running():
        if deadline is not None and time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def watched_runs() -> list[str]:
    """Run ids being polled right now."""
    with _cond:
        return list(_entries)


def monitor_running() -> bool:
    """True while the background thread is alive."""
    t = _thread
    return t is not None and t.is_alive()


def redact(text: object) -> str:
    """``str(text)`` with any API key from the environment replaced by ``***``.

    Used for every message a widget or magic shows, so a key echoed back in an error
    message from a proxy or the SDK never reaches a notebook.
    """
    out = str(text)
    for var in ("GEMINI_API_KEY", "GOOGLE_API_KEY"):
        key = os.environ.get(var, "").strip()
        if len(key) >= 4:
            out = out.replace(key, "***")
    return out


def _notify(entry: _Entry, error: BaseException | None) -> None:
    for cb in list(entry.callbacks):
        try:
            cb(entry.run, error)
        except Exception:  # a broken widget must not stop the others
            _log.exception("gemini_batch_magic monitor callback failed")


def _poll(entry: _Entry, known: Mapping[str, Any] | None = None,
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
    _notify(entry, error)
    entry.told_done = done


def _loop() -> None:
    global _thread
    while True:
        with _cond:
            # drop runs whose callbacks have seen them finished
            # (done by the monitor's own poll: a run finished by wait() elsewhere is polled
            # once more, so its widgets draw the final state)
            for run_id in [k for k, e in _entries.items() if e.polled and e.told_done]:
                del _entries[run_id]
            if not _entries:
                if _thread is threading.current_thread():
                    _thread = None
                return
            now = time.monotonic()
            if not any(e.due <= now for e in _entries.values()):
                _cond.wait(timeout=min(e.due for e in _entries.values()) - now)
                continue
            # a run due a little later joins this round (and its listing)
            due = [(e, e.generation) for e in _entries.values()
                   if e.due <= now + min(_JOIN_SLACK, 0.25 * e.interval)]
        known = None
        if len(due) >= _LIST_AT:  # one listing instead of a get per run (fig. 5)
            from ._backend import list_batches

            known = list_batches(set().union(*(e.run.live_batch_names for e, _ in due)))
        for entry, generation in due:
            _poll(entry, known, now)
            with _cond:
                if entry.generation == generation:
                    entry.polled = True
                else:  # watched again meanwhile: a new callback may have missed this poll
                    entry.due = 0.0
