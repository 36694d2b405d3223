"""The jobs panel (an adapter, ``gemini_batch_magic._panel``) without a frontend: clicks on
its buttons do what their labels say."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd

import gemini_batch_magic as gbm
from gemini_batch_magic._panel import JobsPanel


def _html(panel: JobsPanel) -> str:
    return panel.status.value


def test_panel_lists_runs_and_acts_on_them(emu: Any, eventually: Callable[..., None]) -> None:
    df = pd.DataFrame({"q": ["fine", "broken [[fail]]"]})
    run = gbm.submit(df, "q", name="panel-test").wait(progress=False)
    ns: dict[str, Any] = {"df": df}
    panel = JobsPanel(ns)
    assert len(panel.rows) == 1
    row = panel.rows[0]
    assert run.run_id in row.label.value and "panel-test" in row.label.value
    assert "SUCCEEDED" in row.badge.value
    assert "2 rows" in row.facts.value and "1 failed" in row.facts.value
    assert row.bar.value == row.bar.max == 2
    assert "gembatch-panel-row" in row.box._dom_classes
    assert run.run_id in panel._repr_mimebundle_()["text/plain"]
    # load results into a variable of the namespace
    row.var.value = "answers"
    row.load_button.click()
    assert ns["answers"]["response"].iloc[0] == "fine" and pd.isna(ns["answers"]["response"].iloc[1])
    assert "results in answers" in _html(panel)
    row.var.value = "not a name"
    row.load_button.click()
    assert "not a valid variable name" in _html(panel)
    # retry the failed row: a child run appears in the list
    row.retry_button.click()
    assert len(panel.rows) == 2
    child = next(r.run for r in panel.rows if r.run.parent_id == run.run_id)
    assert "retry run" in _html(panel)
    eventually(lambda: child.done, "the retry run never finished")
    panel.rows[0].refresh_button.click()


def test_cancel_from_the_panel(emulator_factory: Any) -> None:
    emu = emulator_factory(pending_seconds=60)
    run = gbm.submit(pd.DataFrame({"q": ["a"]}), "q")
    panel = JobsPanel({})
    panel.rows[0].cancel_button.click()
    assert run.state == "CANCELLED"
    assert emu.batches()[0]["state"] == "BATCH_STATE_CANCELLED"
    assert panel.rows[0].cancel_button.disabled


def test_submit_form_estimates_then_submits(emu: Any, eventually: Callable[..., None]) -> None:
    ns: dict[str, Any] = {"reviews": pd.DataFrame({"text": ["good", "bad"]}), "n": 3}
    panel = JobsPanel(ns)
    assert panel.df_choice.options == ("reviews",)
    assert panel.column.options == ("text",)
    panel.estimate_button.click()
    assert "2 requests" in panel.form_result.children[0].value
    assert emu.calls == []  # estimating sends nothing
    panel.mode.value = "template"
    panel.template.value = "Sentiment of: {text}"
    panel.submit_button.click()
    assert len(panel.rows) == 1
    progress_box = panel.form_result.children[0]
    assert "gembatch-progress" in progress_box._dom_classes
    run = panel.rows[0].run
    eventually(lambda: run.done, "the submitted run never finished")
    assert run.wait(progress=False).result()["response"].tolist() == [
        "Sentiment of: good", "Sentiment of: bad"]
    panel.template.value = "Sentiment of: {missing}"
    panel.submit_button.click()
    assert "missing" in panel.form_result.children[0].value
