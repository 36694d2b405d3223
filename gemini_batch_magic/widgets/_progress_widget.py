"""The live progress widget of one run (what ``run`` shows in a notebook).

A view: it is handed a run and reads the attributes :class:`~._text.RunView` lists; it
follows the run through ``run.watch(callback)`` and imports no engine module.
"""

from __future__ import annotations

import contextlib
import html
import threading
from typing import Any

from .._secrets import redact
from ._parts import bar_style, box_mimebundle, state_badge
from ._text import Eta, RunView, format_duration, summary_line

try:  # the one guarded import, as in tqdm.notebook: fail when a widget is built, not here
    import ipywidgets as w
except ImportError:  # pragma: no cover - ipywidgets is a dependency of the package
    w = None  # type: ignore[assignment]

__all__ = ["ProgressWidget", "preview_html"]

_PREVIEW_ROWS = 5
_PREVIEW_CHARS = 80


def _short(value: Any, limit: int = _PREVIEW_CHARS) -> Any:
    if isinstance(value, str) and len(value) > limit:
        return value[: limit - 1] + "…"
    return value


def preview_html(run: RunView, rows: int = _PREVIEW_ROWS) -> str:
    """The first ``rows`` answers of a finished run as a small HTML table."""
    frame = run.result()
    cols = [c for c in ("response", "error") if c in frame.columns]
    head = frame[cols].head(rows).map(_short)
    more = f"<div>… {len(frame) - rows} more rows: run.result()</div>" if len(frame) > rows else ""
    table = head.to_html(classes="gembatch-preview", border=0, na_rep="")
    return ("<div style='font-size:0.85em;line-height:1.25;max-height:14em;overflow:auto'>"
            f"{redact(table)}{more}</div>")


class ProgressWidget:
    """Live progress of a :class:`~gemini_batch_magic.BatchRun`.

    ``ProgressWidget(run)`` displays itself (``display_now=False`` to only build it); the
    background monitor keeps it current until the run is done (``run.watch``), so it stays
    live while the kernel runs other cells. ``update()`` redraws from the run, ``close()``
    draws the final state and stops following (the widget stays on screen). Parts, for tests
    and layouts: ``box`` (the VBox), ``badge``, ``bar`` (IntProgress of answered/total),
    ``counts``, ``details`` (shards and batch names), ``cancel_button``, ``message``,
    ``preview``; ``eta`` is its time-left estimator.
    """

    def __init__(self, run: RunView, display_now: bool = True) -> None:
        if w is None:
            raise ImportError(
                "ProgressWidget needs ipywidgets>=8.1, a dependency of gemini_batch_magic that "
                "is not importable here: reinstall gemini_batch_magic (or install "
                "'ipywidgets>=8.1') and restart the kernel; outside a notebook, "
                "gemini_batch_magic.widgets.TextProgress shows the same progress as text")
        self.run = run
        self.eta = Eta()
        self.last_error: str | None = None
        self._state_class: str | None = None
        self._preview_state: str | None = None
        self._lock = threading.RLock()  # the monitor thread and wait() both redraw
        self.badge = w.HTML()
        self.title = w.HTML()
        self.bar = w.IntProgress(value=0, min=0, max=1, description="answered",
                                 layout=w.Layout(width="45%"))
        self.counts = w.HTML()
        self.cancel_button = w.Button(description="Cancel", icon="stop", button_style="warning",
                                      tooltip="Cancel every live batch job of this run",
                                      layout=w.Layout(width="auto"))
        self.cancel_button.add_class("gembatch-cancel")
        self.cancel_button.on_click(self._on_cancel)
        self.details = w.HTML()
        self.message = w.HTML()
        self.preview = w.HTML()
        self.box = w.VBox([
            w.HBox([self.badge, self.title]),
            w.HBox([self.bar, self.counts, self.cancel_button]),
            self.details, self.message, self.preview,
        ])
        self.box.add_class("gembatch-progress")
        self.update()
        run.watch(self._on_poll)
        if display_now:
            from IPython.display import display

            display(self)

    # -- drawing ------------------------------------------------------------------------
    def update(self, error: BaseException | str | None = None) -> None:
        """Redraw every part from the run's current attributes (one message per part).

        ``error`` (a failed status check) is shown until a poll succeeds again.
        """
        with self._lock:
            self._update(error)

    def _update(self, error: BaseException | str | None) -> None:
        run = self.run
        if error is not None:
            self.last_error = redact(error)
        self.eta.observe(run)
        st = run.stats
        answered = st.succeeded + st.failed
        state = run.state
        left = "" if run.done else f", ~{format_duration(self.eta.left(run))} left"
        names = run.batch_names
        shards = len(run.shards)
        if state != self._preview_state and run.done:
            # first the answers, then the colour: a green widget always has its preview
            self._preview_state = state
            self.preview.value = self._preview()
        with contextlib.ExitStack() as stack:
            for part in (self.badge, self.title, self.bar, self.counts, self.details,
                         self.message, self.cancel_button):
                stack.enter_context(part.hold_sync())
            self.badge.value = state_badge(state)
            self.title.value = (
                f"<b>{html.escape(run.display_name)}</b> <code>{html.escape(run.run_id)}</code>"
                f" · {html.escape(run.model)}")
            self.bar.max = max(st.total, 1)
            self.bar.value = min(answered, self.bar.max) if st.total else int(run.done)
            self.bar.bar_style = bar_style(state)
            self.counts.value = (
                f"<span class='gembatch-counts'>{answered}/{st.total} answered · "
                f"<span style='color:#198754'>{st.succeeded} ok</span> · "
                f"<span style='color:#dc3545'>{st.failed} failed</span> · "
                f"{format_duration(run.elapsed)} elapsed{left}</span>")
            listed = ", ".join(html.escape(n) for n in names[:3]) or "not submitted yet"
            if len(names) > 3:
                listed += f", … ({len(names) - 3} more)"
            self.details.value = (f"<small>{shards} shard{'s' if shards != 1 else ''}: "
                                  f"{listed}</small>")
            self.message.value = self._message_html()
            self.cancel_button.disabled = run.done
            self.cancel_button.layout.display = "none" if run.done else None
        self._set_state_class(state)

    def _message_html(self) -> str:
        run = self.run
        parts = []
        if run.state in ("FAILED", "EXPIRED", "CANCELLED") and run.error:
            parts.append(f"<span style='color:#dc3545'>{html.escape(redact(run.error))}"
                         "</span>")
        elif run.state == "SUCCEEDED" and run.stats.failed:
            parts.append(f"{run.stats.failed} row(s) failed: see the <code>error</code> column, "
                         "or retry them with <code>run.retry_failed()</code>")
        if self.last_error:
            parts.append(f"<span style='color:#b35900'>could not check the status "
                         f"({html.escape(self.last_error)}); retrying</span>")
        if run.notice:
            parts.append(html.escape(redact(run.notice)))
        return "<br>".join(f"<small>{p}</small>" for p in parts)

    def _preview(self) -> str:
        if self.run.state != "SUCCEEDED" and not (self.run.stats.succeeded
                                                  or self.run.stats.failed):
            return ""
        try:
            return preview_html(self.run)
        except Exception as exc:  # results not readable (yet): say so, never raise here
            return f"<small>no preview: {html.escape(redact(exc))}</small>"

    def _set_state_class(self, state: str) -> None:
        cls = f"gembatch-state-{state.lower()}"
        if cls == self._state_class:
            return
        if self._state_class:
            self.box.remove_class(self._state_class)
        self.box.add_class(cls)
        self._state_class = cls

    # -- events -------------------------------------------------------------------------
    def _on_poll(self, run: Any, error: BaseException | None) -> None:
        if error is None:
            self.last_error = None  # the poll worked again
        self.update(error)

    def _on_cancel(self, _button: Any = None) -> None:
        self.cancel_button.disabled = True
        try:
            self.run.cancel()
        except Exception as exc:
            self.update(exc)
            self.cancel_button.disabled = self.run.done
            return
        self.update()
        self.run.watch(self._on_poll)  # already watched: the monitor polls it right away

    def close(self) -> None:
        """Draw the final state and stop following the run; the widget stays displayed."""
        self.update()
        if self.run.done:
            self.run.unwatch(self._on_poll)

    # -- display ------------------------------------------------------------------------
    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return box_mimebundle(self.box, redact(summary_line(self.run, self.eta)),
                              include, exclude)

    def __repr__(self) -> str:
        return f"<ProgressWidget {summary_line(self.run, self.eta)}>"
