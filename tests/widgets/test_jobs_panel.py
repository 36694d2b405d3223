"""The jobs panel (an adapter, ``gemini_batch_magic._panel``) without a frontend: the
messages its buttons send do what their labels say, and its rows say what a user sees."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anywidget
import pandas as pd

import gemini_batch_magic as gbm
from gemini_batch_magic._config import settings
from gemini_batch_magic._panel import JobsPanel, input_frames

COLUMNS = ["Run", "Name", "State", "Progress", "OK", "Failed", "Rows", "Model", "Created",
           "Cost"]


def _send(panel: JobsPanel, **content: Any) -> None:
    """What the ES module sends (``model.send``)."""
    panel._on_msg(panel, content, [])


def test_panel_is_an_anywidget_with_the_header_row_in_its_module() -> None:
    panel = JobsPanel({})
    assert isinstance(panel, anywidget.AnyWidget)
    for name in COLUMNS:
        assert f'["{name}", ' in panel._esm
    assert panel.rows == [] and not panel.live
    assert "no runs yet" in panel._repr_mimebundle_()["text/plain"]


def test_rows_details_and_actions(emu: Any, eventually: Callable[..., None]) -> None:
    df = pd.DataFrame({"q": ["fine", "broken [[fail]]"]})
    run = gbm.submit(df, "q", name="panel-test").wait(progress=False)
    ns: dict[str, Any] = {"df": df}
    panel = JobsPanel(ns)
    [row] = panel.rows
    assert row["id"] == run.run_id and row["name"] == "panel-test"
    assert row["state"] == "SUCCEEDED" and row["tone"] == "success"
    assert row["progress"] == "2 / 2" and row["percent"] == 100.0
    assert row["ok"] == "1" and row["failed"] == 1 and row["rows"] == "2"
    assert row["model"] == settings.model and row["cost"].startswith("$")
    assert abs(row["created"] - run.created.timestamp()) < 1
    assert run.run_id in panel._repr_mimebundle_()["text/plain"]
    # a click on the row: details and the actions that make sense for it
    panel.selected = run.run_id
    details = dict(panel.details["facts"])
    assert details["Answers"] == "2 / 2 · 1 ok · 1 failed" and details["Name"] == "panel-test"
    assert panel.details["actions"] == ["refresh", "retry", "load"]
    assert panel.details["variable"] == "panel_test_results"
    # load results into a named variable
    _send(panel, type="action", action="load", run_id=run.run_id, variable="answers")
    assert ns["answers"]["response"].iloc[0] == "fine" and pd.isna(ns["answers"]["response"].iloc[1])
    assert panel.status["kind"] == "ok" and "results in answers" in panel.status["text"]
    _send(panel, type="action", action="load", run_id=run.run_id, variable="not a name")
    assert panel.status["kind"] == "error" and "not a valid variable name" in panel.status["text"]
    # retry the failed row: a child run appears in the list
    _send(panel, type="action", action="retry", run_id=run.run_id)
    assert len(panel.rows) == 2 and "retry run" in panel.status["text"]
    child = next(r for r in panel.rows if r["parent"] == run.run_id)
    eventually(lambda: gbm.attach(child["id"]).wait(progress=False).done, "retry never ended")
    _send(panel, type="action", action="refresh", run_id=run.run_id)
    assert panel.status["kind"] == "ok"
    # results frames are not offered as inputs
    assert input_frames(ns) == ["df"] and [f["name"] for f in panel.frames] == ["df"]


def test_cancel_from_the_panel(emulator_factory: Any) -> None:
    emu = emulator_factory(pending_seconds=60)
    run = gbm.submit(pd.DataFrame({"q": ["a"]}), "q")
    panel = JobsPanel({})
    assert panel.live and panel.rows[0]["percent"] is None  # no counts: no fake percentage
    assert panel.rows[0]["progress"] == "counts at end"
    panel.selected = run.run_id
    assert "cancel" in panel.details["actions"] and "load" not in panel.details["actions"]
    _send(panel, type="action", action="cancel", run_id=run.run_id)
    assert run.state == "CANCELLED"
    assert emu.batches()[0]["state"] == "BATCH_STATE_CANCELLED"
    assert panel.rows[0]["state"] == "CANCELLED" and not panel.live


def test_pull_refreshes_live_rows_with_push_off(
    emulator_factory: Any, eventually: Callable[..., None]
) -> None:
    emulator_factory(pending_seconds=0.2, rate=50)
    settings.push_updates = False
    gbm.submit(pd.DataFrame({"q": ["a", "b", "c"]}), "q")
    panel = JobsPanel({})
    assert panel.live
    panel._quiet = 0.0

    def pulled() -> bool:
        _send(panel, type="pull")
        return panel.rows[0]["state"] == "SUCCEEDED"

    eventually(pulled, "pulling never brought the row to SUCCEEDED")
    assert not panel.live


def test_submit_form_estimates_then_submits(emu: Any, eventually: Callable[..., None]) -> None:
    reviews = pd.DataFrame({"text": ["good", "bad"]})
    ns: dict[str, Any] = {"reviews": reviews, "n": 3,
                          "old_results": pd.DataFrame({"response": ["x"], "error": [None]})}
    panel = JobsPanel(ns)
    assert panel.frames == [{"name": "reviews", "rows": 2, "columns": ["text"]}]
    form = {"frame": "reviews", "mode": "column", "column": "text", "template": "", "model": ""}
    _send(panel, type="estimate", form=form)
    assert panel.estimate["form"] == form
    assert panel.estimate["headline"].startswith("2 requests · ")
    assert "&#36;" in panel.estimate["html"] and "$" not in panel.estimate["html"]
    assert panel.estimate["submit_label"].startswith("Submit 2 requests (~$")
    assert emu.calls == []  # estimating sends nothing
    template = {**form, "mode": "template", "template": "Sentiment of: {text}"}
    _send(panel, type="submit", form=template)
    assert len(panel.rows) == 1 and panel.status["kind"] == "ok"
    run = gbm.attach(panel.rows[0]["id"])
    assert panel.selected == run.run_id
    assert run.wait(progress=False).result()["response"].tolist() == [
        "Sentiment of: good", "Sentiment of: bad"]
    _send(panel, type="estimate", form={**template, "template": "Sentiment of: {missing}"})
    assert "missing" in panel.estimate["error"]
    _send(panel, type="submit", form={**form, "frame": "nope"})
    assert panel.status["kind"] == "error" and "choose a DataFrame" not in panel.status["text"]
    assert "nope is no longer a DataFrame" in panel.status["text"]
