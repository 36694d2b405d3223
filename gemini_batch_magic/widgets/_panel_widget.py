"""The jobs panel's view: an anywidget that draws runs handed to it as rows of text.

``static/panel.js`` and ``static/panel.css`` draw a table of runs (Run, Name, State,
Progress, OK, Failed, Rows, Model, Created, Cost; sortable by Created), the details and
actions of the selected run, and a form that submits a DataFrame after showing its
estimate. This class only holds that state (traitlets) and turns the front end's messages
into calls of the ``on_*`` methods, which the adapter (``gemini_batch_magic._panel``
``JobsPanel``) implements with the engine; it imports no engine module.

Messages from the front end: ``{"type": "pull"}`` (its timer, while a run is live),
``{"type": "reload"}``, ``{"type": "action", "action": refresh|cancel|retry|load,
"run_id": ..., "variable": ...}``, ``{"type": "estimate", "form": {...}}`` and
``{"type": "submit", "form": {...}}``; ``form`` holds ``frame``, ``mode`` (``column`` or
``template``), ``column``, ``template`` and ``model``. Copying a run id happens in the
browser alone.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from ._progress_widget import STATIC, anywidget

if anywidget is not None:
    import traitlets as t

    _Base: Any = anywidget.AnyWidget
else:  # pragma: no cover
    _Base = object

__all__ = ["PanelWidget"]

#: The front end asks for fresh rows every this many ms while a run is live.
PANEL_PULL_MS = 2000


class PanelWidget(_Base):  # type: ignore[misc]
    """State and message plumbing of the jobs panel (see the module docstring).

    Traits: ``rows`` (one dict per run: ``id``, ``name``, ``parent``, ``state``, ``tone``,
    ``progress``, ``percent``, ``ok``, ``failed``, ``rows``, ``model``, ``created``
    (epoch seconds), ``cost``), ``now`` (the kernel's clock, for relative times),
    ``selected`` (a run id, set by a click), ``details`` (``facts`` as label/value pairs,
    ``error``, ``actions``, ``variable``), ``frames`` (the input DataFrames: ``name``,
    ``rows``, ``columns``), ``default_model``, ``estimate`` (``html``, ``form``,
    ``submit_label``, ``error``), ``status`` (``kind``, ``text``), ``live``.
    """

    if anywidget is not None:
        _esm = STATIC / "panel.js"
        _css = STATIC / "panel.css"

        rows: t.List[Any] = t.List([]).tag(sync=True)
        now = t.Float(0.0).tag(sync=True)
        selected = t.Unicode("").tag(sync=True)
        details = t.Dict({}).tag(sync=True)
        frames: t.List[Any] = t.List([]).tag(sync=True)
        default_model = t.Unicode("").tag(sync=True)
        estimate = t.Dict({}).tag(sync=True)
        status = t.Dict({}).tag(sync=True)
        live = t.Bool(False).tag(sync=True)
        pull_ms = t.Int(PANEL_PULL_MS).tag(sync=True)

    def __init__(self, **kwargs: Any) -> None:
        if anywidget is None:
            raise ImportError(
                "the jobs panel needs anywidget (a dependency of gemini_batch_magic) which is "
                "not importable here: reinstall gemini_batch_magic (or install "
                "'anywidget>=0.9') and restart the kernel; gbm.runs() lists the same runs "
                "as a DataFrame")
        super().__init__(**kwargs)
        self._lock = threading.RLock()
        self.on_msg(self._on_msg)
        self.observe(self._on_selected, names="selected")

    # -- what the adapter implements ------------------------------------------------------
    def on_pull(self) -> None:
        """The front end's timer: bring the rows up to date."""

    def on_reload(self) -> None:
        """Re-read every run and the namespace's DataFrames."""

    def on_select(self, run_id: str) -> None:
        """A row was clicked: fill ``details``."""

    def on_action(self, action: str, run_id: str, variable: str) -> None:
        """A detail button: ``refresh``, ``cancel``, ``retry`` or ``load`` (into ``variable``)."""

    def on_estimate(self, form: dict[str, Any]) -> None:
        """The form changed: fill ``estimate``."""

    def on_submit(self, form: dict[str, Any]) -> None:
        """Submit was clicked (after its estimate was shown)."""

    # -- plumbing -----------------------------------------------------------------------
    def say(self, kind: str, text: str) -> None:
        """Show a status line: ``kind`` is ``ok``, ``error`` or ``info``."""
        self.status = {"kind": kind, "text": text, "at": time.time()}

    def _on_selected(self, change: Any) -> None:
        with self._lock:
            self.on_select(str(change["new"] or ""))

    def _on_msg(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if not isinstance(content, dict):
            return
        kind = content.get("type")
        with self._lock:
            try:
                if kind == "pull":
                    self.on_pull()
                    self.send_state()  # whole: a front end that missed a push catches up
                elif kind == "reload":
                    self.on_reload()
                elif kind == "action":
                    self.on_action(str(content.get("action", "")),
                                   str(content.get("run_id", "")),
                                   str(content.get("variable", "")))
                elif kind == "estimate":
                    self.on_estimate(dict(content.get("form") or {}))
                elif kind == "submit":
                    self.on_submit(dict(content.get("form") or {}))
            except Exception as exc:  # never let a click raise in the kernel's comm handler
                self.say("error", f"{kind}: {exc}")
