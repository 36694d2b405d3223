"""Counting and formatting a run's progress; the text meter used outside notebooks.

Like tqdm, the arithmetic lives here in plain Python and the notebook widget only overrides
display, so scripts, terminals and CI print concise text while notebooks show a widget.

This module imports no engine module: :class:`RunView` writes down the part of a run a view
may read, and every function here takes a run by that duck type.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from typing import IO, Any, Protocol

__all__ = [
    "Eta",
    "ProgressView",
    "RunStatsView",
    "RunView",
    "TextProgress",
    "format_duration",
    "summary_line",
]


class RunStatsView(Protocol):
    """The request counts of a run (``BatchRun.stats``, a NamedTuple)."""

    @property
    def total(self) -> int: ...
    @property
    def succeeded(self) -> int: ...
    @property
    def failed(self) -> int: ...
    @property
    def pending(self) -> int: ...


class RunView(Protocol):
    """Everything a view may use of a run (``BatchRun`` is one); views use nothing else."""

    @property
    def run_id(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def done(self) -> bool: ...
    @property
    def stats(self) -> RunStatsView: ...
    @property
    def error(self) -> str | None: ...
    @property
    def notice(self) -> str | None: ...
    @property
    def elapsed(self) -> float: ...
    @property
    def model(self) -> str: ...
    @property
    def display_name(self) -> str: ...
    @property
    def batch_names(self) -> list[str]: ...
    @property
    def shards(self) -> Sequence[Any]: ...
    @property
    def n_rows(self) -> int: ...

    def refresh(self) -> Any: ...
    def cancel(self) -> Any: ...
    def result(self) -> Any: ...
    def watch(self, callback: Callable[[Any, BaseException | None], Any] | None = None) -> None:
        ...
    def unwatch(self, callback: Callable[[Any, BaseException | None], Any] | None = None) -> None:
        ...


class ProgressView(Protocol):
    """What ``BatchRun.wait(progress=...)`` drives: redraw after each poll, and a last time."""

    def update(self) -> Any: ...
    def close(self) -> Any: ...


def format_duration(seconds: float | None) -> str:
    """``75`` -> ``1:15``; ``3725`` -> ``1:02:05``; None -> ``?``."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "?"
    s = round(seconds)
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Eta:
    """The time left of one run, from the answer rate one view has seen.

    A view calls :meth:`observe` each time it draws; the first observation with answers is
    the start of the rate, so :meth:`left` knows nothing before a second observation with
    more answers. ``clock`` (seconds, monotonic by default) is for tests.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._start: tuple[float, int] | None = None  #: (time, answered) of the first answers

    def observe(self, run: RunView) -> None:
        """Note the run's counts now (only the first observation with answers is kept)."""
        if self._start is None:
            st = run.stats
            answered = st.succeeded + st.failed
            if answered:
                self._start = (self._clock(), answered)

    def left(self, run: RunView) -> float | None:
        """Seconds until every request is answered; 0 when done; None while unknown."""
        if run.done:
            return 0.0
        st = run.stats
        answered = st.succeeded + st.failed
        if self._start is None:
            return None
        started, first = self._start
        since = answered - first
        if since <= 0 or st.total <= answered:
            return None  # needs two observations with answers in between
        rate = since / max(self._clock() - started, 1e-3)
        return (st.total - answered) / rate


def summary_line(run: RunView, eta: Eta | None = None) -> str:
    """One line, e.g. ``3f9a2c1b RUNNING 30/50 answered (60%): 29 ok, 1 failed | 0:12 elapsed,
    ~0:08 left``; the time left is ``?`` without an ``eta`` that has seen answers come in."""
    st = run.stats
    answered = st.succeeded + st.failed
    pct = 100.0 * answered / st.total if st.total else 100.0
    parts = [
        f"{run.run_id} {run.state:<9} {answered}/{st.total} answered ({pct:.0f}%):",
        f"{st.succeeded} ok, {st.failed} failed",
        f"| {format_duration(run.elapsed)} elapsed",
    ]
    if not run.done:
        left = eta.left(run) if eta is not None else None
        parts.append(f", ~{format_duration(left)} left")
    return " ".join(parts).replace(" ,", ",")


class TextProgress:
    """Prints a line whenever the counts or the state change (and at most every few seconds)."""

    def __init__(self, run: RunView, file: IO[str] | None = None, min_interval: float = 5.0):
        self.run = run
        self.file = file if file is not None else sys.stderr
        self.min_interval = min_interval
        self.eta = Eta()
        self._last_line = ""
        self._last_time = 0.0

    def update(self) -> None:
        self.eta.observe(self.run)
        line = summary_line(self.run, self.eta)
        key = line.split("|")[0]
        now = time.monotonic()
        changed = key != self._last_line.split("|")[0]
        if changed and (now - self._last_time >= self.min_interval or self.run.done
                        or not self._last_line):
            print(line, file=self.file, flush=True)
            self._last_line, self._last_time = line, now

    def close(self) -> None:
        self.update()
