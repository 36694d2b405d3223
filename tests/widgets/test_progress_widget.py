"""The progress widget without a frontend: its synced traits are what a user would see."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import anywidget
import pandas as pd
import pytest
from ipywidgets.widgets.widget import _instances

import gemini_batch_magic as gbm
from gemini_batch_magic import _backend, _monitor, _secrets
from gemini_batch_magic._config import settings
from gemini_batch_magic.widgets import NO_COUNTS, ProgressWidget, summary_line

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def _df(n: int, fail: tuple[int, ...] = ()) -> pd.DataFrame:
    prompts = [f"question {i}" + (" [[fail]]" if i in fail else "") for i in range(n)]
    return pd.DataFrame({"prompt": prompts}, index=pd.Index([f"r{i}" for i in range(n)],
                                                              name="review"))


def live_counts() -> dict[str, Any]:
    """Emulator options for counts that advance while a batch runs (``progress="live"``
    once the emulator has that option; until then it always reports them live)."""
    from gemini_batch_magic.emulator import EmulatorConfig

    return {"progress": "live"} if "progress" in EmulatorConfig.__dataclass_fields__ else {}


class FakeRun:
    """A run by duck type (what ``RunView`` lists), for looks the emulator cannot make."""

    def __init__(self, total: int = 20_000, state: str = "RUNNING") -> None:
        self.run_id, self.model, self.display_name = "f00dcafe", "gemini-2.5-flash", "reviews"
        self.state, self.error, self.notice = state, None, None
        self.elapsed, self.batch_names, self.shards = 75.0, ["batches/abc"], [object()]
        self.n_rows, self.ok, self.bad = total, 0, 0
        self.refreshed = 0

    @property
    def stats(self) -> gbm.RunStats:
        return gbm.RunStats(self.n_rows, self.ok, self.bad, self.n_rows - self.ok - self.bad)

    @property
    def done(self) -> bool:
        return self.state in ("SUCCEEDED", "FAILED", "CANCELLED", "EXPIRED")

    def refresh(self) -> FakeRun:
        self.refreshed += 1
        return self

    def cancel(self) -> FakeRun:
        self.state = "CANCELLED"
        return self

    def result(self) -> pd.DataFrame:
        return pd.DataFrame({"response": ["fine"], "error": [None]})

    def watch(self, callback: Any = None) -> None:
        pass

    def unwatch(self, callback: Any = None) -> None:
        pass


def test_run_widget_is_an_anywidget_that_goes_live_and_ends_green_with_a_preview(
    emulator_factory: Any, eventually: Callable[..., None]
) -> None:
    emulator_factory(pending_seconds=0.3, rate=15, **live_counts())
    run = gbm.submit(_df(12), "prompt")
    pw = run.widget()
    assert isinstance(pw, anywidget.AnyWidget) and isinstance(pw, ProgressWidget)
    assert pw._esm.strip() and "gembatch-progress" in pw._esm and "model.send" in pw._esm
    assert pw.live and pw.tone in ("neutral", "info") and pw.run_id == run.run_id
    assert _monitor.monitor_running(), "the widget did not register with the monitor"
    seen: set[float | None] = set()

    def finished() -> bool:
        seen.add(pw.percent)
        return pw.tone == "success"

    # nobody calls refresh() or wait(): the monitor keeps the widget live
    eventually(finished, "the widget never turned green")
    assert pw.percent == 100.0 and pw.state == "SUCCEEDED" and not pw.live
    assert len(seen - {None, 100.0}) >= 1, f"no intermediate percentage: {seen}"
    assert pw.counts == "12 / 12 · 12 ok · 0 failed" and pw.failed == 0
    assert "elapsed" in pw.timing and "left" not in pw.timing
    assert run.batch_names[0] in pw.details and "1 shard:" in pw.details
    # the preview: headers over their columns, the row labels first, no empty error column
    assert pw.preview["columns"] == ["review", "response"]
    assert pw.preview["rows"][0] == ["r0", "question 0"] and pw.preview["more"] == 7
    eventually(lambda: not _monitor.monitor_running(), "monitor still running after the run")


def test_counts_have_thousands_separators_rate_and_time_left() -> None:
    run = FakeRun(total=20_000)
    now = [0.0]
    pw = ProgressWidget(run, display_now=False)
    pw.eta._clock = lambda: now[0]
    run.ok, run.bad = 1_000, 0
    pw.update()
    now[0], run.ok, run.bad = 10.0, 12_301, 39
    pw.update()
    assert pw.counts == "12,340 / 20,000 · 12,301 ok · 39 failed"
    assert pw.percent == pytest.approx(61.7)
    assert pw.timing == "1:15 elapsed · 1,134/s · ~0:07 left"
    assert pw.failed == 39 and pw.counts_known


def test_no_counts_from_the_service_is_shown_honestly() -> None:
    """The real service keeps pending == total and no success counts while RUNNING."""
    run = FakeRun(total=20_000)
    pw = ProgressWidget(run, display_now=False)
    assert pw.state == "RUNNING" and not pw.counts_known and pw.percent is None
    assert pw.counts == "20,000 requests" and pw.note == NO_COUNTS
    assert pw.timing == "1:15 elapsed"  # no rate, no "~? left"
    line = summary_line(run, pw.eta)
    assert "%" not in line and "?" not in line and NO_COUNTS in line
    run.state, run.ok = "SUCCEEDED", 20_000  # the counts arrive with the end
    pw.update()
    assert pw.percent == 100.0 and pw.counts_known and pw.note == ""


def test_unknown_state_is_shown_by_its_name_and_failed_shows_the_reason() -> None:
    run = FakeRun(total=10, state="PAUSED")
    pw = ProgressWidget(run, display_now=False)
    assert pw.state == "PAUSED" and pw.tone == "neutral" and pw.live
    run.state, run.error = "FAILED", "batch batches/abc ended FAILED: quota exceeded"
    pw.update()
    assert pw.tone == "danger" and not pw.live
    assert pw.message == run.error and pw.message_tone == "danger"


def test_pull_alone_keeps_the_widget_live_with_push_off(
    emulator_factory: Any, eventually: Callable[..., None]
) -> None:
    """With push_updates off the monitor never calls the widget; the front end's pull
    (``{"type": "pull"}`` to ``on_msg``) refreshes and redraws it, and sends it whole."""
    emulator_factory(pending_seconds=0.2, rate=20, **live_counts())
    settings.push_updates = False
    run = gbm.submit(_df(20), "prompt")
    pw = ProgressWidget(run, display_now=False)
    pushed: list[Any] = []
    pw._on_poll = lambda *a: pushed.append(a)  # type: ignore[method-assign]
    sent: list[Any] = []
    pw.send_state = lambda key=None: sent.append(key)  # type: ignore[method-assign]
    pw._quiet = 0.0  # refresh on every pull (the front end pulls every second)
    seen: set[float | None] = set()

    def pulled_to_the_end() -> bool:
        pw._on_msg(pw, {"type": "pull"}, [])
        seen.add(pw.percent)
        return pw.tone == "success"

    eventually(pulled_to_the_end, "pulling never brought the widget to the end")
    assert pw.percent == 100.0 and not pw.live and sent, sent
    assert len(seen) >= 2, seen
    assert pushed == []


def test_push_off_means_the_monitor_calls_no_callback(
    emulator_factory: Any, eventually: Callable[..., None]
) -> None:
    emulator_factory(pending_seconds=0.2, rate=50)
    settings.push_updates = False
    run = gbm.submit(_df(5), "prompt")
    calls: list[Any] = []
    run.watch(lambda r, e: calls.append(r.state))
    eventually(lambda: not _monitor.monitor_running(), "the monitor never finished the run")
    assert run.state == "SUCCEEDED" and calls == []  # it polled to the end, told nobody
    settings.push_updates = True
    run2 = gbm.submit(_df(3), "prompt", force=True)
    run2.watch(lambda r, e: calls.append(r.state))
    eventually(lambda: "SUCCEEDED" in calls, "with push on the callback is called")


def test_mimebundle_has_the_widget_and_a_text_summary(
    emu: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # in a Jupyter kernel (outside one, the bundle is text only: see test_seam.py)
    monkeypatch.setattr("gemini_batch_magic.widgets._auto.in_notebook", lambda: True)
    run = gbm.submit(_df(3), "prompt").wait(progress=False)
    bundle = run._repr_mimebundle_()
    assert "SUCCEEDED" in bundle["text/plain"] and "3/3 answered" in bundle["text/plain"]
    widget = _instances[bundle[WIDGET_VIEW]["model_id"]]
    assert isinstance(widget, ProgressWidget) and widget.tone == "success"
    # after a "restart": a fresh object from the registry shows the same finished widget
    again = ProgressWidget(gbm.attach(run.run_id), display_now=False)
    assert again.percent == 100.0 and again.tone == "success"


def test_failed_run_turns_red_with_the_error(
    emulator_factory: Any, eventually: Callable[..., None]
) -> None:
    emu = emulator_factory(pending_seconds=60)
    run = gbm.submit(_df(4), "prompt")
    pw = ProgressWidget(run, display_now=False)
    emu.set_state(run.batch_names[0], "FAILED")
    eventually(lambda: pw.tone == "danger", "the widget never turned red")
    assert pw.state == "FAILED" and "ended FAILED" in pw.message


def test_expired_run_is_red_too(emulator_factory: Any, eventually: Callable[..., None]) -> None:
    emulator_factory(pending_seconds=60, expire_after=0.3)
    run = gbm.submit(_df(2), "prompt")
    pw = ProgressWidget(run, display_now=False)
    eventually(lambda: pw.tone == "danger", "the widget never turned red")
    assert pw.state == "EXPIRED"


def test_cancel_message_cancels_the_batch(
    emulator_factory: Any, eventually: Callable[..., None]
) -> None:
    emu = emulator_factory(pending_seconds=60)
    run = gbm.submit(_df(5), "prompt")
    pw = ProgressWidget(run, display_now=False)
    pw._on_msg(pw, {"type": "cancel"}, [])  # what the Cancel button sends
    states = {b["name"]: b["state"] for b in emu.batches()}
    assert states[run.batch_names[0]] == "BATCH_STATE_CANCELLED"
    eventually(lambda: pw.tone == "warning", "the widget never showed CANCELLED")
    assert pw.state == "CANCELLED" and not pw.live and run.state == "CANCELLED"


def test_failed_rows_are_counted_and_pointed_at(
    emu: Any, eventually: Callable[..., None]
) -> None:
    run = gbm.submit(_df(4, fail=(1, 2)), "prompt")
    pw = ProgressWidget(run, display_now=False)
    eventually(lambda: pw.tone == "success", "never finished")
    assert pw.counts.endswith("2 ok · 2 failed") and pw.failed == 2
    assert "retry_failed" in pw.message
    assert pw.preview["columns"] == ["review", "response", "error"]


def test_status_errors_show_on_the_widget_and_never_the_key(
    emulator_factory: Any, monkeypatch: pytest.MonkeyPatch, eventually: Callable[..., None]
) -> None:
    secret = "fake-very-secret-key-0123456789"
    monkeypatch.setenv("GEMINI_API_KEY", secret)
    emu = emulator_factory(pending_seconds=0.5, rate=50, api_key=secret)
    run = gbm.submit(_df(6), "prompt")
    # the key is rotated: every status poll is refused (400), the thread keeps going
    monkeypatch.setenv("GEMINI_API_KEY", "fake-wrong-key-9876543210")
    _backend.reset()
    pw = ProgressWidget(run, display_now=False)
    eventually(lambda: "could not check the status" in pw.message,
               "the poll error never reached the widget")
    assert _monitor.monitor_running() and pw.live
    # the right key is back: the widget recovers by itself
    monkeypatch.setenv("GEMINI_API_KEY", secret)
    _backend.reset()
    eventually(lambda: pw.tone == "success", "the widget did not recover")
    assert "could not check" not in pw.message
    assert emu.batches()[0]["state"] == "BATCH_STATE_SUCCEEDED"
    states = json.dumps([x.get_state() for x in list(_instances.values())], default=str)
    assert secret not in states and "fake-wrong" not in states
    assert secret not in run._repr_mimebundle_()["text/plain"]


def test_redact_hides_keys_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOOGLE_API_KEY", "k-123456")
    assert _secrets.redact("bad key k-123456 given") == "bad key *** given"


def test_importing_the_package_builds_no_widgets_and_no_magics() -> None:
    code = ("import sys, gemini_batch_magic\n"
            "bad = [m for m in ('ipywidgets', 'anywidget', 'gemini_batch_magic._magics',\n"
            "                   'gemini_batch_magic._monitor') if m in sys.modules]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_static_files_ship_with_the_package() -> None:
    from gemini_batch_magic.widgets import _progress_widget

    names = {p.name for p in _progress_widget.STATIC.iterdir()}
    assert {"progress.js", "progress.css", "panel.js", "panel.css"} <= names
    for name in ("progress.js", "panel.js"):
        text = (_progress_widget.STATIC / name).read_text()
        assert "export default" in text and "http" not in text  # no CDN, no network


def test_another_process_shows_the_same_finished_widget(emu: Any) -> None:
    """What a notebook shows after a kernel restart: attach() by id, same widget, green."""
    run = gbm.submit(_df(3), "prompt").wait(progress=False)
    code = (
        "import gemini_batch_magic as gbm\n"
        f"pw = gbm.attach({run.run_id[:6]!r}).widget()\n"
        "print(pw.percent, pw.tone, pw._repr_mimebundle_()['text/plain'])\n"
    )
    env = {**os.environ, "GEMBATCH_HOME": str(settings.home)}
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True, env=env).stdout
    assert out.startswith("100.0 success ") and f"{run.run_id} SUCCEEDED" in out
