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
from dataclasses import dataclass
from typing import IO, Any, Protocol

__all__ = [
    "NO_COUNTS",
    "TONES",
    "Eta",
    "Facts",
    "ProgressView",
    "RunStatsView",
    "RunView",
    "TextProgress",
    "facts",
    "format_duration",
    "format_rate",
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
    """The answer rate and time left of one run, from what one view has seen.

    A view calls :meth:`observe` each time it draws; the first observation with answers is
    the start of the rate, so :meth:`rate` and :meth:`left` know nothing before a second
    observation with more answers. ``clock`` (seconds, monotonic by default) is for tests.
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

    def rate(self, run: RunView) -> float | None:
        """Answers per second since the first answers were seen; None while unknown."""
        if self._start is None:
            return None
        st = run.stats
        started, first = self._start
        since = st.succeeded + st.failed - first
        if since <= 0:
            return None  # needs two observations with answers in between
        return since / max(self._clock() - started, 1e-3)

    def left(self, run: RunView) -> float | None:
        """Seconds until every request is answered; 0 when done; None while unknown."""
        if run.done:
            return 0.0
        st = run.stats
        answered = st.succeeded + st.failed
        rate = self.rate(run)
        if rate is None or st.total <= answered:
            return None
        return (st.total - answered) / rate


#: The colour family of each state; a state this package does not know is ``neutral``.
TONES = {"SUBMITTING": "neutral", "PENDING": "neutral", "RUNNING": "info",
         "SUCCEEDED": "success", "FAILED": "danger", "EXPIRED": "danger",
         "CANCELLED": "warning"}

#: What a live run without counts says: the service reports them only when a batch ends.
NO_COUNTS = "counts arrive when the batch ends"


def format_rate(per_second: float) -> str:
    """``290.4`` -> ``290/s``; ``0.5`` -> ``30/min``; ``2.25`` -> ``2.2/s``."""
    if per_second >= 10:
        return f"{per_second:,.0f}/s"
    if per_second >= 1:
        return f"{per_second:.1f}/s"
    return f"{per_second * 60:,.0f}/min"


@dataclass(frozen=True)
class Facts:
    """What every view of a run says, as text (the widget lays it out, the meter prints it).

    ``percent`` is None when there is nothing honest to show: a live run whose service has
    reported no counts yet (the real service reports them only when the batch ends).
    """

    state: str
    tone: str  #: neutral, info, success, danger or warning
    counts_known: bool
    percent: float | None
    counts: str  #: ``12,340 / 20,000 · 12,301 ok · 39 failed`` or ``20,000 requests``
    timing: str  #: ``0:42 elapsed · 290/s · ~0:27 left``
    note: str  #: e.g. :data:`NO_COUNTS`; empty when there is nothing to add


def facts(run: RunView, eta: Eta | None = None) -> Facts:
    """The :class:`Facts` of ``run`` now (``eta``: the viewer's rate, for rate and time left)."""
    st = run.stats
    answered = st.succeeded + st.failed
    state = run.state
    known = run.done or answered > 0
    if known:
        pct = 100.0 * answered / st.total if st.total else 100.0
        if state == "SUCCEEDED":
            pct = 100.0
        counts = f"{answered:,} / {st.total:,} · {st.succeeded:,} ok · {st.failed:,} failed"
    else:
        pct = None
        counts = f"{st.total:,} request{'s' if st.total != 1 else ''}"
    timing = [f"{format_duration(run.elapsed)} elapsed"]
    if not run.done and eta is not None:
        rate = eta.rate(run)
        left = eta.left(run)
        if rate is not None:
            timing.append(format_rate(rate))
        if left is not None:
            timing.append(f"~{format_duration(max(left, 1.0))} left")
    note = ""
    if not known:
        note = "creating the batch jobs" if state == "SUBMITTING" else NO_COUNTS
    return Facts(state=state, tone=TONES.get(state, "neutral"), counts_known=known,
                 percent=pct, counts=counts, timing=" · ".join(timing), note=note)


def summary_line(run: RunView, eta: Eta | None = None) -> str:
    """One line, e.g. ``3f9a2c1b RUNNING   30 / 50 answered (60%): 29 ok, 1 failed | 0:12
    elapsed, 2.5/s, ~0:08 left``; rate and time left only once an ``eta`` has seen answers
    come in. A live run without counts says so instead of guessing: ``3f9a2c1b RUNNING
    20,000 requests, counts arrive when the batch ends | 0:12 elapsed``."""
    f = facts(run, eta)
    st = run.stats
    answered = st.succeeded + st.failed
    if f.counts_known:
        what = (f"{answered:,}/{st.total:,} answered ({f.percent:.0f}%): "
                f"{st.succeeded:,} ok, {st.failed:,} failed")
    else:
        what = f"{f.counts}, {f.note}"
    return f"{run.run_id} {run.state:<9} {what} | {f.timing.replace(' · ', ', ')}"


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
