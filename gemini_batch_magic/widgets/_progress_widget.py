"""The live progress widget of one run (what ``run`` and ``run.widget()`` show in a notebook).

An anywidget: the state is the traitlets below, drawn by one small ES module
(``static/progress.js``) with one stylesheet (``static/progress.css``), shipped with the
package, no build step, nothing fetched from the network. It renders in JupyterLab,
Notebook 7, VS Code, Colab and marimo.

A view: it is handed a run and reads the attributes :class:`~._text.RunView` lists, and
imports no engine module. Two ways keep it live:

* **push** -- it asks its run to ``watch`` it; the background monitor calls it after each
  poll and it redraws from that thread (JupyterLab, Notebook 7 and VS Code render that);
* **pull** -- while the run is live, the ES module sends ``{"type": "pull"}`` every
  ``pull_ms`` milliseconds; the kernel answers (while idle) by refreshing the run if no
  poll has been seen for a while, then sending the whole drawn state. Colab and marimo do
  not render messages sent from a thread; they render these replies.

Both can run at once; ``%config GemBatch.push_updates = False`` leaves only the pull.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from .._secrets import redact
from ._text import Eta, RunView, facts, summary_line

try:  # the one guarded import, as in tqdm.notebook: fail when a widget is built, not here
    import anywidget
    import traitlets as t
except ImportError:  # pragma: no cover - anywidget is a dependency of the package
    anywidget = None  # type: ignore[assignment]

__all__ = ["ProgressWidget", "WidgetProgress", "preview_table"]

STATIC = Path(__file__).parent / "static"
_PREVIEW_ROWS = 5
_PREVIEW_CHARS = 120
#: The front end asks every this many ms; the kernel refreshes the run itself when it has
#: seen no poll for ``_SELF_REFRESH`` seconds (backing off while nothing changes).
PULL_MS = 1000
_SELF_REFRESH = (1.0, 30.0)

_MISSING = (
    "ProgressWidget needs anywidget (a dependency of gemini_batch_magic) which is not "
    "importable here: reinstall gemini_batch_magic (or install 'anywidget>=0.9') and restart "
    "the kernel; outside a notebook, gemini_batch_magic.widgets.TextProgress shows the same "
    "progress as text")


def _short(value: Any, limit: int = _PREVIEW_CHARS) -> str:
    if value is None or value != value:  # None or NaN: an empty cell
        return ""
    text = str(value)
    return text[: limit - 1] + "…" if len(text) > limit else text


def _any_error(frame: Any) -> bool:
    """Whether any row of a result (pandas, polars or Arrow) has an ``error``."""
    names = getattr(frame, "column_names", None) or list(frame.columns)  # Arrow: column_names
    if "error" not in names:
        return False
    if hasattr(frame, "index"):
        return bool(frame["error"].notna().any())
    nulls = frame["error"].null_count  # polars: a method; Arrow: a number
    return int(nulls() if callable(nulls) else nulls) < len(frame)


def preview_table(run: RunView, rows: int = _PREVIEW_ROWS) -> dict[str, Any]:
    """The first ``rows`` answers of a finished run: ``columns``, ``rows`` (lists of short
    strings, the row label first) and ``more`` (how many rows are not shown)."""
    frame = run.result()
    total = len(frame)
    failed = _any_error(frame)  # over every row, not only those shown
    if not hasattr(frame, "index"):  # a polars DataFrame or an Arrow Table: its first rows
        frame = frame.slice(0, rows).to_pandas()
        if len(frame.columns) and frame.columns[0] not in ("response", "embedding"):
            frame = frame.set_index(frame.columns[0])  # the key column
    cols = [c for c in ("response", "error") if c in frame.columns]
    if "error" in cols and not failed:
        cols.remove("error")  # all answered: no empty column
    head = frame[cols].head(rows)
    label = str(frame.index.name) if frame.index.name is not None else "row"
    return {
        "columns": [label, *cols],
        "rows": [[redact(_short(i)), *(redact(_short(v)) for v in values)]
                 for i, values in zip(head.index, head.itertuples(index=False), strict=True)],
        "more": max(0, total - rows),
    }


if anywidget is not None:
    _Base: Any = anywidget.AnyWidget
else:  # pragma: no cover
    _Base = object


class ProgressWidget(_Base):  # type: ignore[misc]
    """Live progress of a :class:`~gemini_batch_magic.BatchRun`.

    ``ProgressWidget(run)`` displays itself (``display_now=False`` only builds it; this is
    what ``run.widget()`` returns). It follows the run until it is done (see the module
    docstring), so it stays live while the kernel runs other cells. ``update()`` redraws
    from the run, ``close()`` draws the final state and stops following (the widget stays
    on screen). The drawn state is in the synced traits (``state``, ``tone``, ``percent``,
    ``counts``, ``timing``, ``note``, ``message``, ``preview``, ...), which is also what
    tests read; ``eta`` is its rate and time-left estimator.

    Stable CSS classes: ``gembatch-progress`` (with ``gembatch-state-<state>``, lowercase),
    ``gembatch-state`` (the badge), ``gembatch-bar``, ``gembatch-counts``,
    ``gembatch-cancel``, ``gembatch-preview``.

    ``update()`` and ``finish()`` are what ``run.wait`` drives, through :meth:`view` (whose
    ``close()`` is ``finish()``; the widget's own ``close()`` is ipywidgets', which removes it).
    """

    if anywidget is not None:
        _esm = STATIC / "progress.js"
        _css = STATIC / "progress.css"

        run_id = t.Unicode("").tag(sync=True)
        title = t.Unicode("").tag(sync=True)
        model_name = t.Unicode("").tag(sync=True)
        state = t.Unicode("").tag(sync=True)
        tone = t.Unicode("neutral").tag(sync=True)
        live = t.Bool(True).tag(sync=True)
        counts_known = t.Bool(False).tag(sync=True)
        percent = t.Float(None, allow_none=True).tag(sync=True)
        counts = t.Unicode("").tag(sync=True)
        failed = t.Int(0).tag(sync=True)
        timing = t.Unicode("").tag(sync=True)
        note = t.Unicode("").tag(sync=True)
        message = t.Unicode("").tag(sync=True)
        message_tone = t.Unicode("neutral").tag(sync=True)
        details = t.Unicode("").tag(sync=True)
        preview = t.Dict({}).tag(sync=True)
        pull_ms = t.Int(PULL_MS).tag(sync=True)

    def __init__(self, run: RunView, display_now: bool = True) -> None:
        if anywidget is None:
            raise ImportError(_MISSING)
        super().__init__()
        self.run = run
        self.eta = Eta()
        self.last_error: str | None = None
        self._preview_state: str | None = None
        self._lock = threading.RLock()  # the monitor thread and the kernel both redraw
        self._seen_poll = time.monotonic()
        self._quiet = _SELF_REFRESH[0]
        self.on_msg(self._on_msg)
        self.update()
        run.watch(self._on_poll)
        if display_now:
            from IPython.display import display

            display(self)

    # -- drawing ------------------------------------------------------------------------
    def update(self, error: BaseException | str | None = None) -> None:
        """Redraw from the run's current attributes (one message for every change).

        ``error`` (a failed status check) is shown until a poll succeeds again.
        """
        with self._lock:
            self._update(error)

    def _update(self, error: BaseException | str | None) -> None:
        run = self.run
        if error is not None:
            self.last_error = redact(error)
        self.eta.observe(run)
        f = facts(run, self.eta)
        preview = self.preview
        if run.done and run.state != self._preview_state:
            self._preview_state = run.state  # the answers first, then the colour
            preview = self._preview()
        names = run.batch_names
        shards = len(run.shards)
        listed = ", ".join(names[:3]) or "not submitted yet"
        if len(names) > 3:
            listed += f", … ({len(names) - 3} more)"
        message, message_tone = self._message()
        with self.hold_sync():
            self.run_id = run.run_id
            self.title = run.display_name
            self.model_name = run.model
            self.preview = preview
            self.state = f.state
            self.tone = f.tone
            self.live = not run.done
            self.counts_known = f.counts_known
            self.percent = f.percent
            self.counts = f.counts
            self.failed = run.stats.failed
            self.timing = f.timing
            self.note = f.note
            self.message = message
            self.message_tone = message_tone
            self.details = f"{shards} shard{'s' if shards != 1 else ''}: {listed}"

    def _message(self) -> tuple[str, str]:
        run = self.run
        if self.last_error:
            return f"could not check the status ({self.last_error}); retrying", "warning"
        if run.state in ("FAILED", "EXPIRED", "CANCELLED") and run.error:
            return redact(run.error), "danger" if run.state != "CANCELLED" else "warning"
        if run.state == "SUCCEEDED" and run.stats.failed:
            n = run.stats.failed
            return (f"{n:,} row{'s' if n != 1 else ''} failed: see the error column, or "
                    "retry them with run.retry_failed()", "neutral")
        if run.notice:
            return redact(run.notice), "neutral"
        return "", "neutral"

    def _preview(self) -> dict[str, Any]:
        st = self.run.stats
        if self.run.state != "SUCCEEDED" and not (st.succeeded or st.failed):
            return {}
        try:
            return preview_table(self.run)
        except Exception as exc:  # results not readable (yet): say so, never raise here
            return {"columns": [], "rows": [], "more": 0, "error": f"no preview: {redact(exc)}"}

    # -- events -------------------------------------------------------------------------
    def _on_poll(self, run: Any, error: BaseException | None) -> None:
        """The monitor's callback (its thread): redraw, and note that a poll happened."""
        self._seen_poll = time.monotonic()
        if error is None:
            self.last_error = None
        self.update(error)

    def _on_msg(self, _widget: Any, content: Any, _buffers: Any) -> None:
        """Custom messages from the ES module: ``pull`` and ``cancel``."""
        kind = content.get("type") if isinstance(content, dict) else None
        if kind == "pull":
            self.pull()
        elif kind == "cancel":
            self._cancel()

    def pull(self) -> None:
        """What the front end's timer asks for: fresh state, sent whole.

        The run is refreshed here when no poll has been seen for a while (the monitor's
        thread may be idle or its pushes switched off), backing off while nothing changes.
        The whole drawn state is sent even if unchanged, so a front end that missed
        messages sent from the monitor's thread (Colab) catches up.
        """
        if self.live and time.monotonic() - self._seen_poll >= self._quiet:
            before = self._fingerprint()
            try:
                self.run.refresh()
                self.last_error = None
            except Exception as exc:  # shown on the widget; the next pull tries again
                self.last_error = redact(exc)
            changed = before != self._fingerprint()
            self._quiet = _SELF_REFRESH[0] if changed else min(self._quiet * 1.5,
                                                               _SELF_REFRESH[1])
            self._seen_poll = time.monotonic()
        with self._lock:
            self.update()
            self.send_state()

    def _fingerprint(self) -> tuple[Any, ...]:
        st = self.run.stats
        return (self.run.state, st.total, st.succeeded, st.failed)

    def _cancel(self) -> None:
        try:
            self.run.cancel()
        except Exception as exc:
            self.last_error = redact(exc)
        self.update()
        self.run.watch(self._on_poll)  # already watched: the monitor polls it right away

    def finish(self) -> None:
        """Draw the final state and stop following the run once it is done; the widget stays
        displayed (``close()`` is ipywidgets' own: it removes the widget)."""
        self.update()
        if self.run.done:
            self.run.unwatch(self._on_poll)

    def view(self) -> WidgetProgress:
        """This widget as a progress view for ``run.wait(progress=...)``."""
        return WidgetProgress(self)

    # -- display ------------------------------------------------------------------------
    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = super()._repr_mimebundle_(**kwargs)
        data = bundle[0] if isinstance(bundle, tuple) else bundle
        data = dict(data or {})
        data["text/plain"] = redact(summary_line(self.run, self.eta))
        return data

    def __repr__(self) -> str:
        return f"<ProgressWidget {summary_line(self.run, self.eta)}>"


class WidgetProgress:
    """A :class:`ProgressWidget` as a progress view (``update()``, ``close()``): what
    ``auto_progress`` hands ``BatchRun.wait``; ``close()`` draws the final state and leaves
    the widget on screen."""

    def __init__(self, widget: ProgressWidget) -> None:
        self.widget = widget

    def update(self) -> None:
        self.widget.update()

    def close(self) -> None:
        self.widget.finish()
