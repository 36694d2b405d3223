"""Views of one run: the live progress widget and the text meter.

Like ``tqdm.notebook``, ipywidgets is imported in one guarded place (``_progress_widget``),
and only when :class:`ProgressWidget` is first asked for; so this package imports fine
where ipywidgets is missing, building a widget then raises :class:`ImportError`, and
:func:`auto_progress` falls back to text.

* :class:`ProgressWidget` -- state badge, answered/total bar, counts, elapsed and time left,
  shards and batch names, a Cancel button; green with a preview of the answers on success,
  red with the error on failure. Kept live by the run's background monitor (``run.watch``).
* :class:`TextProgress` -- the same progress as lines of text (terminals, scripts, CI).
* :func:`auto_progress` and :func:`run_mimebundle` -- the door the engine uses
  (``BatchRun.wait(progress=True)``, ``BatchRun._repr_mimebundle_``): the widget in a
  Jupyter kernel, text anywhere else.

The engine/view contract. A view is handed a run and reads only its public attributes
``run_id``, ``state``, ``done``, ``stats`` (``total``, ``succeeded``, ``failed``,
``pending``), ``error``, ``notice``, ``elapsed``, ``model``, ``display_name``,
``batch_names``, ``shards`` and ``n_rows``, and uses only its actions ``refresh()``,
``cancel()``, ``result()``, ``watch(callback)`` and ``unwatch(callback)``
(``callback(run, error)`` is called after each background poll). :class:`RunView` writes
that surface down. A view imports no engine module and keeps its own display state (such as
the :class:`Eta` time-left estimator). A view object has ``update()`` (redraw from the run)
and ``close()`` (draw the final state, stop following); ``BatchRun.wait(progress=view)``
accepts any such object.

The jobs panel is not a view but an adapter (``gemini_batch_magic._panel``,
``gbm.panel()``); it shares :func:`state_badge`, :data:`BAR_STYLE` and
:func:`box_mimebundle` from here.

Stable CSS classes for tests and styling: ``gembatch-progress``, ``gembatch-state-<state>``
(lowercase), ``gembatch-cancel``, ``gembatch-preview``, ``gembatch-badge``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._auto import auto_progress, run_mimebundle
from ._parts import BAR_STYLE, bar_style, box_mimebundle, state_badge
from ._text import Eta, ProgressView, RunView, TextProgress, format_duration, summary_line

if TYPE_CHECKING:
    from ._progress_widget import ProgressWidget

__all__ = [
    "BAR_STYLE",
    "Eta",
    "ProgressView",
    "ProgressWidget",
    "RunView",
    "TextProgress",
    "auto_progress",
    "bar_style",
    "box_mimebundle",
    "format_duration",
    "run_mimebundle",
    "state_badge",
    "summary_line",
]


def __getattr__(name: str) -> Any:
    # ProgressWidget imports ipywidgets: only when asked for (PEP 562), so text views,
    # terminals and the CLI never load it
    if name == "ProgressWidget":
        from ._progress_widget import ProgressWidget

        return ProgressWidget
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
