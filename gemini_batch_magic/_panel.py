"""The jobs panel: every run in the registry, with actions, and a form to submit new ones.

An adapter, beside the magics, the accessor and the CLI: it uses only the engine's public
functions (:func:`runs`, :func:`attach`, :func:`estimate`, :func:`submit`, ``settings``)
and the run's public API, and draws through the view
:class:`~gemini_batch_magic.widgets.PanelWidget` (an anywidget: a table with a header
row, the selected run's details and actions, the submit form). ``gbm.panel()`` and
``%gembatch panel`` build it.

It stays live as the progress widget does: the monitor pushes after each poll of a live
run it lists (unless ``push_updates`` is off), and the front end pulls every two seconds
while a listed run is live. Stable CSS classes: ``gembatch-panel``, ``gembatch-run-<run
id>`` on each row, ``gembatch-<action>`` on each button.
"""

from __future__ import annotations

import inspect
import re
import time
from typing import TYPE_CHECKING, Any

import pandas as pd

import gemini_batch_magic._runs as _runs

from ._config import settings
from ._secrets import redact
from .widgets import estimate_headline, estimate_html, format_money, relative_time
from .widgets._panel_widget import PanelWidget
from .widgets._tables import progress_text

if TYPE_CHECKING:
    from ._runs import BatchRun

__all__ = ["JobsPanel", "input_frames"]

_MAX_ROWS = 50
_TONE = {"SUCCEEDED": "success", "FAILED": "danger", "EXPIRED": "danger",
         "CANCELLED": "warning", "RUNNING": "info"}
#: Columns every results DataFrame has: such a frame is not offered as an input.
_RESULT_COLUMNS = {"response", "error"}
_SELF_REFRESH = (2.0, 30.0)


def _user_ns() -> dict[str, Any]:
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython is a dependency
        return {}
    shell = get_ipython()
    return shell.user_ns if shell is not None else {}


def input_frames(namespace: dict[str, Any]) -> list[str]:
    """Names of the namespace's DataFrames that can be submitted: not private (``_x``) and
    not a run's results (those have ``response`` and ``error`` columns)."""
    return sorted(k for k, v in namespace.items()
                  if isinstance(v, pd.DataFrame) and not k.startswith("_")
                  and not _RESULT_COLUMNS <= {str(c) for c in v.columns})


def _variable_for(run: BatchRun) -> str:
    """A variable name to suggest for a run's results: ``<name>_results``."""
    base = re.sub(r"\W+", "_", run.display_name).strip("_").lower()
    if not base or base[0].isdigit() or base == "gembatch":
        base = f"run_{run.run_id[:6]}"
    return f"{base}_results"


class JobsPanel(PanelWidget):
    """Every run in the registry (newest first) with per-run actions, plus a submit form.

    Click a row for its details and actions: refresh, cancel, retry the failed rows, load
    the results into a variable of the notebook's namespace, copy the run id. The form
    submits a DataFrame of the namespace (input frames only, not results), with prompts
    from a column or a ``{column}`` template; it shows the estimate before its Submit
    button. The same actions are methods: :meth:`act`, :meth:`estimate_form`,
    :meth:`submit_form`.
    """

    def __init__(self, namespace: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.namespace = namespace if namespace is not None else _user_ns()
        self.runs: dict[str, BatchRun] = {}  #: the live runs listed, by run id
        self._seen_poll = time.monotonic()
        self._quiet = _SELF_REFRESH[0]
        self.default_model = settings.model
        self.reload()

    # -- the run list ---------------------------------------------------------------------
    def reload(self) -> None:
        """Re-read the registry and the namespace's DataFrames."""
        self._rows()
        self.frames = [{"name": name, "rows": len(self.namespace[name]),
                        "columns": [str(c) for c in self.namespace[name].columns]}
                       for name in input_frames(self.namespace)]
        if self.selected:
            self.on_select(self.selected)

    def _rows(self) -> None:
        frame = _runs.runs().head(_MAX_ROWS)
        rows = []
        for r in frame.to_dict("records"):
            state, total = str(r["state"]), int(r["rows"])
            answered = int(r["succeeded"]) + int(r["failed"])
            done = state in ("SUCCEEDED", "FAILED", "CANCELLED", "EXPIRED")
            known = done or answered > 0
            cost = None if pd.isna(r["est_cost_usd"]) else float(r["est_cost_usd"])
            rows.append({
                "id": r["run_id"], "name": r["name"], "parent": r["parent_id"] or "",
                "state": state, "tone": _TONE.get(state, "neutral"),
                "progress": (f"{answered:,} / {total:,}" if known
                             else progress_text(state, total, 0, 0)),
                "percent": (100.0 if state == "SUCCEEDED" else
                            100.0 * answered / total if total else 100.0) if known else None,
                "ok": f"{int(r['succeeded']):,}" if known else "–",
                "failed": int(r["failed"]) if known else None,
                "rows": f"{total:,}", "model": r["model"],
                "created": pd.Timestamp(r["created"]).timestamp(), "cost": format_money(cost),
                "live": not done,
            })
        live = {row["id"] for row in rows if row["live"]}
        for run_id in list(self.runs):
            if run_id not in live:
                self.runs.pop(run_id).unwatch(self._on_poll)
        for run_id in live - set(self.runs):
            run = self.runs[run_id] = _runs.attach(run_id)
            run.watch(self._on_poll)
        with self.hold_sync():
            self.rows = rows
            self.now = time.time()
            self.live = bool(live)

    def _on_poll(self, run: BatchRun, error: BaseException | None) -> None:
        """The monitor's callback (its thread): redraw the rows."""
        self._seen_poll = time.monotonic()
        with self._lock:
            self._rows()
            if run.run_id == self.selected:
                self.on_select(run.run_id)
            if error is not None:
                self.say("error", f"{run.run_id}: could not check the status "
                                  f"({redact(error)}); retrying")

    def on_pull(self) -> None:
        if self.runs and time.monotonic() - self._seen_poll >= self._quiet:
            before = [(r.state, tuple(r.stats)) for r in self.runs.values()]
            for run in list(self.runs.values()):
                try:
                    run.refresh()
                except Exception as exc:
                    self.say("error", f"{run.run_id}: could not check the status "
                                      f"({redact(exc)}); retrying")
            after = [(r.state, tuple(r.stats)) for r in self.runs.values()]
            self._quiet = (_SELF_REFRESH[0] if before != after
                           else min(self._quiet * 1.5, _SELF_REFRESH[1]))
            self._seen_poll = time.monotonic()
        self._rows()
        if self.selected:
            self.on_select(self.selected)

    def on_reload(self) -> None:
        self.reload()
        self.say("info", f"{len(self.rows)} run{'s' if len(self.rows) != 1 else ''} listed")

    # -- one run ----------------------------------------------------------------------------
    def on_select(self, run_id: str) -> None:
        if not run_id:
            self.details = {}
            return
        run = self.runs.get(run_id) or _runs.attach(run_id)
        st = run.stats
        answered = st.succeeded + st.failed
        created = run.created
        facts = [
            ("Run", run.run_id), ("Name", run.display_name), ("State", run.state),
            ("Model", run.model),
            ("Answers", f"{answered:,} / {st.total:,} · {st.succeeded:,} ok · "
                        f"{st.failed:,} failed" if run.done or answered
                        else f"{st.total:,} requests · counts arrive when the batch ends"),
            ("Created", f"{created.strftime('%Y-%m-%d %H:%M:%S')} UTC "
                        f"({relative_time(created.timestamp())})"),
            ("Batch jobs", ", ".join(run.batch_names) or "not submitted yet"),
            ("Estimated cost", format_money(run.estimated_cost)),
        ]
        if run.parent_id:
            facts.append(("Retry of", run.parent_id))
        actions = ["refresh"]
        if not run.done:
            actions.append("cancel")
        if run.done and (st.failed or run.state != "SUCCEEDED"):
            actions.append("retry")
        if run.done:
            actions.append("load")
        previous = self.details.get("variable") if self.details.get("run_id") == run_id else None
        self.details = {"run_id": run.run_id, "facts": [list(f) for f in facts],
                        "error": redact(run.error or ""), "actions": actions,
                        "variable": previous or _variable_for(run)}

    def on_action(self, action: str, run_id: str, variable: str) -> None:
        self.act(action, run_id, variable)

    def act(self, action: str, run_id: str, variable: str = "") -> None:
        """Do a detail action on ``run_id``: ``refresh``, ``cancel``, ``retry`` or ``load``
        (the results into the namespace's ``variable``); the outcome is in ``status``."""
        run = self.runs.get(run_id) or _runs.attach(run_id)
        try:
            if action == "refresh":
                run.refresh()
                self.say("ok", f"{run.run_id}: {run.state}")
            elif action == "cancel":
                run.cancel()
                self.say("ok", f"{run.run_id}: cancel requested ({run.state})")
            elif action == "retry":
                child = run.retry_failed()
                if child is None:
                    self.say("ok", f"{run.run_id}: no failed rows to retry")
                else:
                    self.say("ok", f"{run.run_id}: retry run {child.run_id} submitted")
            elif action == "load":
                name = variable.strip()
                if not name.isidentifier():
                    raise ValueError(f"{name!r} is not a valid variable name; type one such "
                                     f"as {_variable_for(run)}")
                frame = run.result()
                self.namespace[name] = frame
                self.say("ok", f"{run.run_id}: results in {name} ({len(frame):,} rows)")
            else:
                raise ValueError(f"unknown action {action!r}; valid actions: refresh, "
                                 "cancel, retry, load")
        except Exception as exc:
            self.say("error", f"{run.run_id}: {redact(exc)}")
        self.reload()

    # -- the form -----------------------------------------------------------------------
    def _form_args(self, form: dict[str, Any]) -> tuple[pd.DataFrame, str | None,
                                                       dict[str, Any]]:
        name = str(form.get("frame") or "")
        df = self.namespace.get(name)
        if not isinstance(df, pd.DataFrame):
            raise ValueError("choose a DataFrame (define one in the notebook, then Reload)"
                             if not name else f"{name} is no longer a DataFrame in the "
                             "notebook: Reload the panel")
        options: dict[str, Any] = {"model": str(form.get("model") or "").strip() or None}
        if form.get("mode") == "template":
            template = str(form.get("template") or "")
            if not template.strip():
                raise ValueError(f"write a template over the columns of {name}, e.g. "
                                 f"Summarise: {{{df.columns[0]}}}" if len(df.columns)
                                 else f"{name} has no columns")
            return df, None, {**options, "template": template}
        column = str(form.get("column") or "")
        if column not in {str(c) for c in df.columns}:
            raise ValueError(f"choose the column of {name} that holds the prompts")
        return df, column, options

    def on_estimate(self, form: dict[str, Any]) -> None:
        self.estimate_form(form)

    def estimate_form(self, form: dict[str, Any]) -> None:
        """Fill ``estimate`` for ``form`` (nothing is sent)."""
        try:
            df, prompt, options = self._form_args(form)
            est = _runs.estimate(df, prompt, **options)
        except Exception as exc:
            self.estimate = {"form": form, "error": redact(exc)}
            return
        label = (f"Submit {est.requests:,} requests (~{format_money(est.cost_usd)})"
                 if est.cost_usd is not None else f"Submit {est.requests:,} requests")
        self.estimate = {"form": form, "html": estimate_html(est), "submit_label": label,
                         "headline": estimate_headline(est)}

    def on_submit(self, form: dict[str, Any]) -> None:
        self.submit_form(form)

    def submit_form(self, form: dict[str, Any]) -> BatchRun | None:
        """Submit ``form`` (the user saw its estimate: this is the confirmation)."""
        try:
            df, prompt, options = self._form_args(form)
            if "confirm" in inspect.signature(_runs.submit).parameters:
                options["confirm"] = True  # the estimate was on screen above the button
            run = _runs.submit(df, prompt, **options)
        except Exception as exc:
            self.say("error", f"not submitted: {redact(exc)}")
            return None
        self.say("ok", f"run {run.run_id} submitted ({run.stats.total:,} requests to "
                       f"{run.model}); it is the selected row")
        self.estimate = {}
        self.reload()
        self.selected = run.run_id
        return run

    # -- display ------------------------------------------------------------------------
    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = super()._repr_mimebundle_(**kwargs)
        data = dict((bundle[0] if isinstance(bundle, tuple) else bundle) or {})
        data["text/plain"] = self._text()
        return data

    def _text(self) -> str:
        if not self.rows:
            return "gemini_batch_magic: no runs yet"
        lines = [f"{r['id']}  {r['state']:<10} {r['progress']:<18} {r['model']}  {r['name']}"
                 for r in self.rows]
        return "\n".join(["gemini_batch_magic runs (newest first):", *lines])

    def __repr__(self) -> str:
        return self._text()
