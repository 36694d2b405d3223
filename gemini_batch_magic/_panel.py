"""The jobs panel: every run in the registry, with actions, and a form to submit new ones.

An adapter, beside the magics, the accessor and the CLI: it uses only the engine's public
functions (:func:`runs`, :func:`attach`, :func:`estimate`, :func:`submit`, ``settings``)
and the run's public API, and shows each run with the views' pieces. ``gbm.panel()`` and
``%gembatch panel`` build it. Stable CSS classes: ``gembatch-panel``, ``gembatch-panel-row``,
``gembatch-run-<run id>``, ``gembatch-<action>`` on each button.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

import pandas as pd

try:
    import ipywidgets as w
except ImportError as exc:  # pragma: no cover - ipywidgets is a dependency
    raise ImportError(
        "the jobs panel needs ipywidgets>=8.1 (a dependency of gemini_batch_magic), which is "
        "not importable here: reinstall gemini_batch_magic, or install 'ipywidgets>=8.1', and "
        "restart the kernel; gbm.runs() lists the same runs as a DataFrame"
    ) from exc

from ._config import settings
from ._runs import attach, estimate, runs, submit
from ._secrets import redact
from .widgets import ProgressWidget, bar_style, box_mimebundle, state_badge

if TYPE_CHECKING:
    from ._runs import BatchRun

__all__ = ["JobsPanel"]

_MAX_ROWS = 25


def _user_ns() -> dict[str, Any]:
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython is a dependency
        return {}
    shell = get_ipython()
    return shell.user_ns if shell is not None else {}


def _message(kind: str, text: str) -> str:
    colour = {"error": "#dc3545", "ok": "#198754"}.get(kind, "inherit")
    return f"<small style='color:{colour}'>{html.escape(redact(text))}</small>"


class _RunRow:
    """One run of the panel: facts, a small bar and the per-run actions."""

    def __init__(self, panel: JobsPanel, run: BatchRun) -> None:
        self.panel = panel
        self.run = run
        self.label = w.HTML(layout=w.Layout(width="22%"))
        self.badge = w.HTML(layout=w.Layout(width="95px"))
        self.bar = w.IntProgress(min=0, max=1, layout=w.Layout(width="12%"))
        self.facts = w.HTML(layout=w.Layout(width="30%"))
        self.refresh_button = self._button("↻", "Ask the service for the current state", "refresh")
        self.cancel_button = self._button("Cancel", "Cancel the run's live batch jobs", "cancel")
        self.retry_button = self._button("Retry failed", "Submit the failed rows again",
                                         "retry")
        self.var = w.Text(placeholder="variable", layout=w.Layout(width="90px"))
        self.load_button = self._button("Load", "Put the results DataFrame in this variable",
                                        "load")
        self.box = w.HBox([self.label, self.badge, self.bar, self.facts, self.refresh_button,
                           self.cancel_button, self.retry_button, self.var, self.load_button])
        self.box.add_class("gembatch-panel-row")
        self.box.add_class(f"gembatch-run-{run.run_id}")
        self.update()
        if not run.done:
            run.watch(self._on_poll)

    def _button(self, text: str, tip: str, action: str) -> w.Button:
        b = w.Button(description=text, tooltip=tip, layout=w.Layout(width="auto"))
        b.add_class(f"gembatch-{action}")
        b.on_click(lambda _b: self.panel._act(self, action))
        return b

    def update(self) -> None:
        run = self.run
        st = run.stats
        cost = f"${run.estimated_cost:,.4f}" if run.estimated_cost is not None else "?"
        created = run.created.tz_convert(None).strftime("%Y-%m-%d %H:%M")
        parent = f" ← {html.escape(run.parent_id)}" if run.parent_id else ""
        with self.bar.hold_sync():
            self.bar.max = max(st.total, 1)
            self.bar.value = min(st.succeeded + st.failed, self.bar.max)
            self.bar.bar_style = bar_style(run.state)
        self.label.value = (f"<code>{html.escape(run.run_id)}</code> "
                            f"{html.escape(run.display_name)}{parent}")
        self.badge.value = state_badge(run.state)
        self.facts.value = (
            f"<small>{html.escape(run.model)} · {st.total} rows · {st.succeeded} ok, "
            f"{st.failed} failed · {created} UTC · est. {cost}</small>")
        self.cancel_button.disabled = run.done
        self.retry_button.disabled = not run.done or (not st.failed and run.state == "SUCCEEDED")
        self.load_button.disabled = not run.done

    def _on_poll(self, run: BatchRun, error: BaseException | None) -> None:
        self.update()
        if error is not None:
            self.panel.status.value = _message("error", f"{run.run_id}: {error}")


class JobsPanel:
    """Every run in the registry (newest first) with per-run actions, plus a submit form.

    Per run: refresh, cancel, retry the failed rows, and load the results into a variable of
    the notebook's namespace. The form submits a DataFrame of the namespace, with prompts
    from a column or a ``{column}`` template: *Estimate* shows what it would send and cost,
    *Submit* sends it and shows its live progress.
    """

    def __init__(self, namespace: dict[str, Any] | None = None) -> None:
        self.namespace = namespace if namespace is not None else _user_ns()
        self.rows: list[_RunRow] = []
        self.status = w.HTML()
        self.reload_button = w.Button(description="Reload list", icon="refresh",
                                      layout=w.Layout(width="auto"))
        self.reload_button.on_click(lambda _b: self.reload())
        self.table = w.VBox()
        # the submit form
        self.df_choice = w.Dropdown(description="DataFrame")
        self.mode = w.ToggleButtons(options=["column", "template"], value="column",
                                    description="prompts")
        self.column = w.Dropdown(description="column")
        self.template = w.Textarea(description="template", placeholder="Summarise: {text}",
                                   layout=w.Layout(width="60%", display="none"))
        self.model = w.Text(description="model", value=settings.model)
        self.estimate_button = w.Button(description="Estimate", icon="calculator")
        self.submit_button = w.Button(description="Submit", icon="paper-plane",
                                      button_style="primary")
        self.estimate_button.add_class("gembatch-estimate-button")
        self.submit_button.add_class("gembatch-submit-button")
        self.form_result = w.VBox()
        self.df_choice.observe(self._on_df, names="value")
        self.mode.observe(self._on_mode, names="value")
        self.estimate_button.on_click(lambda _b: self._estimate())
        self.submit_button.on_click(lambda _b: self._submit())
        form = w.VBox([
            w.HTML("<b>Submit a DataFrame</b>"),
            self.df_choice, self.mode, self.column, self.template, self.model,
            w.HBox([self.estimate_button, self.submit_button]), self.form_result,
        ])
        self.box = w.VBox([
            w.HBox([w.HTML("<b>Gemini batch runs</b>"), self.reload_button]),
            self.table, self.status, form,
        ])
        self.box.add_class("gembatch-panel")
        self.reload()

    # -- the run list -------------------------------------------------------------------
    def reload(self) -> None:
        """Re-read the registry and the namespace's DataFrames."""
        for row in self.rows:
            row.run.unwatch(row._on_poll)
        newest = runs()["run_id"].head(_MAX_ROWS)
        self.rows = [_RunRow(self, attach(run_id)) for run_id in newest]
        self.table.children = [row.box for row in self.rows] or [
            w.HTML("<small>No runs yet: submit one below, with <code>%%gembatch</code> or "
                   "<code>df.gembatch.submit(...)</code>.</small>")]
        frames = sorted(k for k, v in self.namespace.items()
                        if isinstance(v, pd.DataFrame) and not k.startswith("_"))
        current = self.df_choice.value
        self.df_choice.options = frames
        if frames:
            self.df_choice.value = current if current in frames else frames[0]
        self._on_df()

    def _act(self, row: _RunRow, action: str) -> None:
        run = row.run
        try:
            if action == "refresh":
                run.refresh()
                self.status.value = _message("ok", f"{run.run_id}: {run.state}")
            elif action == "cancel":
                run.cancel()
                self.status.value = _message("ok", f"{run.run_id}: cancel requested "
                                                   f"({run.state})")
            elif action == "retry":
                child = run.retry_failed()
                if child is None:
                    self.status.value = _message("ok", f"{run.run_id}: no failed rows to retry")
                else:
                    self.reload()
                    self.status.value = _message("ok", f"{run.run_id}: retry run "
                                                       f"{child.run_id} submitted")
                    return
            elif action == "load":
                name = row.var.value.strip()
                if not name.isidentifier():
                    raise ValueError(f"{name!r} is not a valid variable name; type one such "
                                     "as results")
                self.namespace[name] = run.result()
                self.status.value = _message("ok", f"{run.run_id}: results in {name} "
                                                   f"({len(self.namespace[name])} rows)")
        except Exception as exc:
            self.status.value = _message("error", f"{run.run_id}: {exc}")
        row.update()

    # -- the form -----------------------------------------------------------------------
    def _on_df(self, _change: Any = None) -> None:
        df = self.namespace.get(self.df_choice.value or "")
        cols = [str(c) for c in df.columns] if isinstance(df, pd.DataFrame) else []
        current = self.column.value
        self.column.options = cols
        if cols:  # keep the choice when the column still exists, else the first column
            self.column.value = current if current in cols else cols[0]

    def _on_mode(self, _change: Any = None) -> None:
        template = self.mode.value == "template"
        self.template.layout.display = None if template else "none"
        self.column.layout.display = "none" if template else None

    def _form_args(self) -> tuple[pd.DataFrame, dict[str, Any]]:
        name = self.df_choice.value
        df = self.namespace.get(name or "")
        if not isinstance(df, pd.DataFrame):
            raise ValueError("choose a DataFrame (define one in the notebook, then Reload list)")
        options: dict[str, Any] = {"model": self.model.value.strip() or None}
        if self.mode.value == "template":
            options["template"] = self.template.value
        else:
            if not self.column.value:
                raise ValueError(f"choose the column of {name} that holds the prompts")
            options["prompt"] = self.column.value
        return df, options

    def _estimate(self) -> None:
        try:
            df, options = self._form_args()
            est = estimate(df, options.pop("prompt", None), **options)
        except Exception as exc:
            self.form_result.children = [w.HTML(_message("error", str(exc)))]
            return
        self.form_result.children = [w.HTML(f"<small>{html.escape(str(est))}</small>"),
                                     w.HTML(est._repr_html_())]

    def _submit(self) -> None:
        try:
            df, options = self._form_args()
            run = submit(df, options.pop("prompt", None), **options)
        except Exception as exc:
            self.form_result.children = [w.HTML(_message("error", str(exc)))]
            return
        self.form_result.children = [ProgressWidget(run, display_now=False).box]
        self.reload()

    # -- display ------------------------------------------------------------------------
    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return box_mimebundle(self.box, self._text(), include, exclude)

    def _text(self) -> str:
        if not self.rows:
            return "gemini_batch_magic: no runs yet"
        lines = [f"{r.run.run_id}  {r.run.state:<10} {r.run.stats.succeeded + r.run.stats.failed}"
                 f"/{r.run.stats.total}  {r.run.model}  {r.run.display_name}" for r in self.rows]
        return "\n".join(["gemini_batch_magic runs (newest first):", *lines])

    def __repr__(self) -> str:
        return self._text()
