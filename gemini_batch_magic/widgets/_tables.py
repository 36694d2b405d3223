"""``%gembatch list``: the runs of the registry as a table that fits 100 columns.

A view of the DataFrame ``gbm.runs()`` returns (columns ``run_id``, ``created``,
``state``, ``model``, ``rows``, ``succeeded``, ``failed``, ``est_cost_usd``, ``name``,
...); it imports nothing of the engine.
"""

from __future__ import annotations

import html
import time
from typing import Any

import pandas as pd

from ._estimate import format_money

__all__ = ["RunsTable", "relative_time", "runs_table"]

WIDTH = 100
_DONE = {"SUCCEEDED", "FAILED", "CANCELLED", "EXPIRED"}
_COLUMNS = ("id", "name", "state", "progress", "rows", "model", "age", "cost")
_RIGHT = {"rows", "cost", "age"}


def relative_time(when: float, now: float | None = None, *, suffix: str = " ago") -> str:
    """``when`` (epoch seconds) relative to ``now``: ``just now``, ``42 s ago``, ``5 min
    ago``, ``3 h ago``, ``2 days ago``; a date beyond 30 days."""
    delta = (time.time() if now is None else now) - when
    if delta < 5:
        return "just now"
    if delta < 60:
        return f"{delta:.0f} s{suffix}"
    if delta < 3600:
        return f"{delta // 60:.0f} min{suffix}"
    if delta < 86400:
        return f"{delta // 3600:.0f} h{suffix}"
    if delta < 30 * 86400:
        days = int(delta // 86400)
        return f"{days} day{'s' if days != 1 else ''}{suffix}"
    return time.strftime("%Y-%m-%d", time.gmtime(when))


def progress_text(state: str, rows: int, succeeded: int, failed: int) -> str:
    """``62%``, ``100% · 3 failed``; ``counts at end`` for a live run without counts."""
    answered = succeeded + failed
    if not answered and state not in _DONE:
        return "counts at end"
    pct = 100 if state == "SUCCEEDED" else int(100 * answered / rows) if rows else 100
    return f"{pct}%" + (f" · {failed:,} failed" if failed else "")


def _epoch(value: Any) -> float:
    return float(pd.Timestamp(value).timestamp())


class RunsTable:
    """The run list: ``repr`` is text at most 100 columns wide, ``_repr_html_`` a table;
    ``frame`` is the full DataFrame (``gbm.runs()``)."""

    def __init__(self, frame: pd.DataFrame, all_columns: bool = False) -> None:
        self.frame = frame
        self.all_columns = all_columns

    def __len__(self) -> int:
        return len(self.frame)

    def rows(self, now: float | None = None) -> list[dict[str, str]]:
        """One dict of short texts per run (the compact columns)."""
        out = []
        for r in self.frame.to_dict("records"):
            cost = r["est_cost_usd"]
            out.append({
                "id": str(r["run_id"]), "name": str(r["name"]), "state": str(r["state"]),
                "progress": progress_text(str(r["state"]), int(r["rows"]), int(r["succeeded"]),
                                          int(r["failed"])),
                "rows": f"{int(r['rows']):,}", "model": str(r["model"]),
                "age": relative_time(_epoch(r["created"]), now, suffix=""),
                "cost": format_money(None if pd.isna(cost) else float(cost)),
            })
        return out

    def text(self, now: float | None = None) -> str:
        if self.frame.empty:
            return "no runs yet: submit one with %%gembatch or df.gembatch.submit(...)"
        if self.all_columns:
            return self.frame.to_string(index=False)
        rows = self.rows(now)
        width = {c: max(len(c), *(len(r[c]) for r in rows)) for c in _COLUMNS}
        caps = {"name": 24, "model": 18, "progress": 20}
        width.update({c: min(width[c], cap) for c, cap in caps.items()})
        while sum(width.values()) + 2 * (len(_COLUMNS) - 1) > WIDTH and width["name"] > 8:
            width["name"] -= 1  # the name gives way first: the rest is short already

        def cell(c: str, v: str) -> str:
            v = v if len(v) <= width[c] else v[: width[c] - 1] + "…"
            return v.rjust(width[c]) if c in _RIGHT else v.ljust(width[c])

        lines = ["  ".join(cell(c, c) for c in _COLUMNS).rstrip()]
        lines += ["  ".join(cell(c, r[c]) for c in _COLUMNS).rstrip() for r in rows]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.text()

    def _repr_html_(self) -> str:
        if self.frame.empty:
            return f"<p>{html.escape(self.text())}</p>"
        if self.all_columns:
            table = self.frame.to_html(index=False, border=0, na_rep="")
            return f"<div class='mathjax_ignore'>{table.replace('$', '&#36;')}</div>"
        rows = self.rows()
        style = "text-align:left;padding:2px 12px 2px 0;white-space:nowrap"
        head = "".join(f"<th style='{style}'>{c}</th>" for c in _COLUMNS)
        body = "".join(
            "<tr>" + "".join(f"<td style='{style}'>{html.escape(r[c]).replace('$', '&#36;')}"
                             "</td>" for c in _COLUMNS) + "</tr>" for r in rows)
        return (f"<table class='gembatch-runs mathjax_ignore' style='font-size:12px'>"
                f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


def runs_table(frame: pd.DataFrame, all_columns: bool = False) -> RunsTable:
    """The :class:`RunsTable` of ``frame`` (``gbm.runs()``); ``all_columns``: every column."""
    return RunsTable(frame, all_columns)
