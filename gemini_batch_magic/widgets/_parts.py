"""Small pieces the progress widget and the jobs panel share: state colours and the bundle.

Plain HTML strings and dicts: nothing here imports ipywidgets or the engine.
"""

from __future__ import annotations

import html
from typing import Any

__all__ = ["BAR_STYLE", "bar_style", "box_mimebundle", "state_badge"]

#: Badge colours per state (background); the bar uses ipywidgets' bar styles.
_BADGE = {
    "SUBMITTING": "#6c757d", "PENDING": "#6c757d", "RUNNING": "#0d6efd",
    "SUCCEEDED": "#198754", "FAILED": "#dc3545", "EXPIRED": "#dc3545", "CANCELLED": "#fd7e14",
}
#: ipywidgets' ``bar_style`` per finished state; a live run is ``info``.
BAR_STYLE = {"SUCCEEDED": "success", "FAILED": "danger", "EXPIRED": "danger",
             "CANCELLED": "warning"}


def state_badge(state: str) -> str:
    """HTML of a small coloured badge for ``state``."""
    colour = _BADGE.get(state, "#6c757d")
    return (f"<span class='gembatch-badge' style='background:{colour};color:white;"
            f"border-radius:4px;padding:1px 6px;font-size:0.85em;font-weight:600'>"
            f"{html.escape(state)}</span>")


def bar_style(state: str) -> str:
    """The ``bar_style`` of a bar showing a run in ``state``."""
    return BAR_STYLE.get(state, "info")


def box_mimebundle(box: Any, text: str, include: Any = None,
                   exclude: Any = None) -> dict[str, Any]:
    """``box``'s widget bundle with ``text`` as its ``text/plain`` (what a frontend without
    widgets shows)."""
    bundle: Any = box._repr_mimebundle_(include=include, exclude=exclude)
    if isinstance(bundle, tuple):
        bundle = bundle[0]
    data = dict(bundle or {})
    data["text/plain"] = text
    return data
