"""Counting and formatting a run's progress; the text meter used outside notebooks.

Like tqdm, the arithmetic lives here in plain Python and the notebook widget only overrides
display, so scripts, terminals and CI print concise text while notebooks show a widget.
"""

from __future__ import annotations

import sys
import time
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._runs import BatchRun

__all__ = ["TextProgress", "format_duration", "in_notebook", "make_progress", "summary_line"]


def format_duration(seconds: float | None) -> str:
    """``75`` -> ``1:15``; ``3725`` -> ``1:02:05``; None -> ``?``."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "?"
    s = round(seconds)
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def time_left(run: BatchRun) -> float | None:
    """Seconds until every request is answered, from the answer rate so far; None if unknown."""
    st = run.stats
    done = st.succeeded + st.failed
    if run.done:
        return 0.0
    started = getattr(run, "first_answer_time", None)
    since = done - getattr(run, "first_answer_count", 0)
    if started is None or since <= 0 or st.total <= done:
        return None  # needs two observations with answers in between
    rate = since / max(time.time() - started, 1e-3)
    return (st.total - done) / rate


def summary_line(run: BatchRun) -> str:
    """One line, e.g. ``3f9a2c1b RUNNING 30/50 answered (29 ok, 1 failed) 0:12 elapsed, ~0:08 left``."""
    st = run.stats
    answered = st.succeeded + st.failed
    pct = 100.0 * answered / st.total if st.total else 100.0
    parts = [
        f"{run.run_id} {run.state:<9} {answered}/{st.total} answered ({pct:.0f}%):",
        f"{st.succeeded} ok, {st.failed} failed",
        f"| {format_duration(run.elapsed)} elapsed",
    ]
    if not run.done:
        parts.append(f", ~{format_duration(time_left(run))} left")
    return " ".join(parts).replace(" ,", ",")


def in_notebook() -> bool:
    """True inside a Jupyter kernel (where widgets can render)."""
    ip: Any = sys.modules.get("IPython")
    if ip is None:
        return False
    shell = ip.get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


class TextProgress:
    """Prints a line whenever the counts or the state change (and at most every few seconds)."""

    def __init__(self, run: BatchRun, file: IO[str] | None = None, min_interval: float = 5.0):
        self.run = run
        self.file = file if file is not None else sys.stderr
        self.min_interval = min_interval
        self._last_line = ""
        self._last_time = 0.0

    def update(self) -> None:
        line = summary_line(self.run)
        key = line.split("|")[0]
        now = time.monotonic()
        changed = key != self._last_line.split("|")[0]
        if changed and (now - self._last_time >= self.min_interval or self.run.done
                        or not self._last_line):
            print(line, file=self.file, flush=True)
            self._last_line, self._last_time = line, now

    def close(self) -> None:
        self.update()


def make_progress(run: BatchRun, *, widget: bool | None = None) -> Any:
    """A progress display for ``run``: the widget in a notebook, else :class:`TextProgress`."""
    if widget is None:
        widget = in_notebook()
    if widget:
        try:
            from .widgets import ProgressWidget
        except ImportError:
            pass
        else:
            return ProgressWidget(run, display_now=True)
    return TextProgress(run)
