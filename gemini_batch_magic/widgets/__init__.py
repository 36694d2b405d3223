"""Views of one run: the live progress widget, the text meter, the estimate, the manual.

Like ``tqdm.notebook``, the widget library (anywidget) is imported in one guarded place
(``_progress_widget``), and only when :class:`ProgressWidget` is first asked for; so this
package imports fine where it is missing, building a widget then raises
:class:`ImportError`, and :func:`auto_progress` falls back to text.

* :class:`ProgressWidget` -- an anywidget (one ES module and one stylesheet in
  ``static/``): state badge, title, a bar with a percentage, counts with thousands
  separators, rate and time left once answers arrive, elapsed always, an honest
  indeterminate look while the service reports no counts, a Cancel button, the service's
  reason when a run fails, and a preview of the first answers when done. Kept live by the
  monitor's push and by its front end's pull (see ``_progress_widget``).
* :class:`TextProgress` -- the same progress as lines of text (terminals, scripts, CI);
  :func:`summary_line` and :func:`facts` are the words both use.
* :func:`estimate_html` / :func:`estimate_text` -- how an ``Estimate`` shows itself.
* :func:`manual_html` / :func:`manual_text` -- the ``%gembatch help`` manual, formatted
  for a notebook or a terminal; :func:`runs_table` -- ``%gembatch list``.
* :func:`notice` -- an informational message through ``logging``, shown in a notebook as
  a quiet line (never the red stderr box) and on stderr elsewhere.
* :func:`auto_progress`, :func:`run_mimebundle`, :func:`progress_widget` -- the door the
  engine uses (``BatchRun.wait(progress=True)``, ``BatchRun._repr_mimebundle_``,
  ``BatchRun.widget()``): the widget in a Jupyter kernel, text anywhere else.

The engine/view contract. A view is handed a run and reads only its public attributes
``run_id``, ``state``, ``done``, ``stats`` (``total``, ``succeeded``, ``failed``,
``pending``), ``error``, ``notice``, ``elapsed``, ``model``, ``display_name``,
``batch_names``, ``shards`` and ``n_rows``, and uses only its actions ``refresh()``,
``cancel()``, ``result()``, ``watch(callback)`` and ``unwatch(callback)``
(``callback(run, error)`` is called after each background poll, unless
``push_updates`` is off). :class:`RunView` writes that surface down. A view imports no
engine module and keeps its own display state (such as the :class:`Eta` rate estimator).
A progress view has ``update()`` (redraw from the run) and ``close()`` (draw the final
state, stop following); ``BatchRun.wait(progress=view)`` accepts any such object
(``ProgressWidget.view()`` is the widget's).

The jobs panel is not a view but an adapter (``gemini_batch_magic._panel``,
``gbm.panel()``) built on the view :class:`PanelWidget` (``_panel_widget``).

Stable CSS classes for tests and styling: ``gembatch-progress`` (with
``gembatch-state-<state>``, lowercase), ``gembatch-state`` (the badge), ``gembatch-bar``,
``gembatch-counts``, ``gembatch-cancel``, ``gembatch-preview``, ``gembatch-panel``,
``gembatch-estimate``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._auto import auto_progress, progress_widget, run_mimebundle
from ._estimate import estimate_headline, estimate_html, estimate_text, format_bytes, format_money
from ._manual import manual_html, manual_text
from ._notices import notice
from ._tables import relative_time, runs_table
from ._text import (
    NO_COUNTS,
    Eta,
    Facts,
    ProgressView,
    RunView,
    TextProgress,
    facts,
    format_duration,
    format_rate,
    summary_line,
)

if TYPE_CHECKING:
    from ._panel_widget import PanelWidget
    from ._progress_widget import ProgressWidget

__all__ = [
    "NO_COUNTS",
    "Eta",
    "Facts",
    "PanelWidget",
    "ProgressView",
    "ProgressWidget",
    "RunView",
    "TextProgress",
    "auto_progress",
    "estimate_headline",
    "estimate_html",
    "estimate_text",
    "facts",
    "format_bytes",
    "format_duration",
    "format_money",
    "format_rate",
    "manual_html",
    "manual_text",
    "notice",
    "progress_widget",
    "relative_time",
    "run_mimebundle",
    "runs_table",
    "summary_line",
]


def __getattr__(name: str) -> Any:
    # the widgets import anywidget/ipywidgets: only when asked for (PEP 562), so text
    # views, terminals and the CLI never load them
    if name == "ProgressWidget":
        from ._progress_widget import ProgressWidget

        return ProgressWidget
    if name == "PanelWidget":
        from ._panel_widget import PanelWidget

        return PanelWidget
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
