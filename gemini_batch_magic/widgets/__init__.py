"""Notebook widgets: the live progress of one run, and the jobs panel.

Like ``tqdm.notebook``, ipywidgets is imported in one guarded block here, so importing
``gemini_batch_magic`` never imports it; callers (``BatchRun._repr_mimebundle_``,
``_progress.make_progress``) catch the :class:`ImportError` and fall back to text.

* :class:`ProgressWidget` -- state badge, answered/total bar, counts, elapsed and time left,
  shards and batch names, a Cancel button; green with a preview of the answers on success,
  red with the error on failure. Kept live by the one background monitor
  (:mod:`gemini_batch_magic._monitor`).
* :class:`JobsPanel` -- every run in the registry with actions, plus a submit form.

Stable CSS classes for tests and styling: ``gembatch-progress``, ``gembatch-state-<state>``
(lowercase), ``gembatch-cancel``, ``gembatch-preview``, ``gembatch-panel``,
``gembatch-panel-row``.
"""

from __future__ import annotations

try:
    import ipywidgets as _ipywidgets  # noqa: F401  (the one guarded import)
except ImportError as exc:  # pragma: no cover - ipywidgets is a dependency
    raise ImportError(
        "gemini_batch_magic's widgets need ipywidgets>=8.1 (a dependency of the package): "
        "reinstall gemini_batch_magic, or install ipywidgets, and restart the kernel"
    ) from exc

from ._panel import JobsPanel
from ._progress_widget import ProgressWidget

__all__ = ["JobsPanel", "ProgressWidget"]


def auto_progress(run):  # TEMPORARY until the views branch lands
    from .._progress import TextProgress
    return TextProgress(run)


def run_mimebundle(run, include=None, exclude=None):  # TEMPORARY until the views branch lands
    return {"text/plain": repr(run)}
