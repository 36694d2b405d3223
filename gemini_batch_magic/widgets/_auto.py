"""The one door from the engine to the views: pick the view that fits where we run.

Like ``tqdm.autonotebook``: in a Jupyter kernel a run is shown by the
:class:`~._progress_widget.ProgressWidget`, anywhere else by the text meter, so callers
never branch. Both functions take a run by duck type (:class:`~._text.RunView`).
"""

from __future__ import annotations

from typing import Any

from .._env import in_notebook
from ._text import ProgressView, RunView, TextProgress

__all__ = ["auto_progress", "progress_widget", "run_mimebundle"]


def auto_progress(run: RunView) -> ProgressView:
    """A progress view of ``run`` (``update()``, ``close()``), already on screen: the widget
    in a Jupyter kernel, else a :class:`~._text.TextProgress` on stderr (also when anywidget
    cannot be imported)."""
    if in_notebook():
        try:
            from ._progress_widget import ProgressWidget

            return ProgressWidget(run, display_now=True).view()
        except ImportError:
            pass
    return TextProgress(run)


def run_mimebundle(run: RunView, include: Any = None, exclude: Any = None) -> dict[str, Any]:
    """The mime bundle of ``run`` (what ``BatchRun._repr_mimebundle_`` returns).

    ``text/plain`` (``repr(run)``) always; in a Jupyter kernel also a live
    :class:`~._progress_widget.ProgressWidget`'s view, whose summary line then is the
    ``text/plain``. Outside a kernel no widget is built, so a terminal repr starts no poller.
    """
    data: dict[str, Any] = {"text/plain": repr(run)}
    if not in_notebook():
        return data
    try:
        from ._progress_widget import ProgressWidget

        widget = ProgressWidget(run, display_now=False)
    except ImportError:
        return data
    return {**data, **widget._repr_mimebundle_(include=include, exclude=exclude)}


def progress_widget(run: RunView) -> Any:
    """A new :class:`~._progress_widget.ProgressWidget` of ``run``, not displayed: what
    ``BatchRun.widget()`` returns (an anywidget, so every front end renders it, marimo too)."""
    from ._progress_widget import ProgressWidget

    return ProgressWidget(run, display_now=False)
