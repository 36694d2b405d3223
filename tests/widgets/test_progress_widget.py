"""The progress widget without a frontend: its synced model state is what a user would see."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pandas as pd
import pytest
from ipywidgets.widgets.widget import _instances

import gemini_batch_magic as gbm
from gemini_batch_magic import _backend, _monitor, _secrets
from gemini_batch_magic._config import settings
from gemini_batch_magic.widgets import ProgressWidget

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def _df(n: int, fail: tuple[int, ...] = ()) -> pd.DataFrame:
    prompts = [f"question {i}" + (" [[fail]]" if i in fail else "") for i in range(n)]
    return pd.DataFrame({"prompt": prompts}, index=[f"r{i}" for i in range(n)])


def _classes(pw: ProgressWidget) -> list[str]:
    return list(pw.box._dom_classes)


def test_widget_goes_live_and_ends_green_with_a_preview(
    emulator_factory: Any, eventually: Callable[..., None]
) -> None:
    emulator_factory(pending_seconds=0.3, rate=15)
    run = gbm.submit(_df(12), "prompt")
    pw = ProgressWidget(run, display_now=False)
    assert pw.bar.max == 12 and pw.bar.value < 12
    assert pw.bar.bar_style == "info"
    assert "gembatch-progress" in _classes(pw)
    assert _monitor.monitor_running(), "the widget did not register with the monitor"
    assert not pw.cancel_button.disabled
    seen: set[int] = set()

    def finished() -> bool:
        seen.add(pw.bar.value)
        return pw.bar.bar_style == "success"

    # nobody calls refresh() or wait(): the monitor keeps the widget live
    eventually(finished, "the widget never turned green")
    assert pw.bar.value == pw.bar.max == 12
    assert len(seen) >= 2, f"the bar did not move through intermediate values: {seen}"
    assert "gembatch-state-succeeded" in _classes(pw)
    assert "gembatch-state-running" not in _classes(pw)
    assert "SUCCEEDED" in pw.badge.value
    assert "12/12 answered" in pw.counts.value and "12 ok" in pw.counts.value
    assert "left" not in pw.counts.value
    assert run.batch_names[0] in pw.details.value and "1 shard:" in pw.details.value
    assert "<table" in pw.preview.value and "question 0" in pw.preview.value
    assert "7 more rows" in pw.preview.value
    assert pw.cancel_button.disabled
    eventually(lambda: not _monitor.monitor_running(), "monitor still running after the run")


def test_mimebundle_has_the_widget_and_a_text_summary(
    emu: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # in a Jupyter kernel (outside one, the bundle is text only: see test_seam.py)
    monkeypatch.setattr("gemini_batch_magic.widgets._auto.in_notebook", lambda: True)
    run = gbm.submit(_df(3), "prompt").wait(progress=False)
    bundle = run._repr_mimebundle_()
    assert "SUCCEEDED" in bundle["text/plain"] and "3/3 answered" in bundle["text/plain"]
    model_id = bundle[WIDGET_VIEW]["model_id"]
    box = _instances[model_id]
    assert "gembatch-state-succeeded" in box._dom_classes
    # after a "restart": a fresh object from the registry shows the same finished widget
    again = ProgressWidget(gbm.attach(run.run_id), display_now=False)
    assert again.bar.value == again.bar.max == 3 and again.bar.bar_style == "success"


def test_failed_run_turns_red_with_the_error(
    emulator_factory: Any, eventually: Callable[..., None]
) -> None:
    emu = emulator_factory(pending_seconds=60)
    run = gbm.submit(_df(4), "prompt")
    pw = ProgressWidget(run, display_now=False)
    emu.set_state(run.batch_names[0], "FAILED")
    eventually(lambda: pw.bar.bar_style == "danger", "the widget never turned red")
    assert "FAILED" in pw.badge.value
    assert "gembatch-state-failed" in _classes(pw)
    assert "ended FAILED" in pw.message.value


def test_expired_run_is_red_too(emulator_factory: Any, eventually: Callable[..., None]) -> None:
    emulator_factory(pending_seconds=60, expire_after=0.3)
    run = gbm.submit(_df(2), "prompt")
    pw = ProgressWidget(run, display_now=False)
    eventually(lambda: pw.bar.bar_style == "danger", "the widget never turned red")
    assert "EXPIRED" in pw.badge.value


def test_cancel_button_cancels_the_batch(
    emulator_factory: Any, eventually: Callable[..., None]
) -> None:
    emu = emulator_factory(pending_seconds=60)
    run = gbm.submit(_df(5), "prompt")
    pw = ProgressWidget(run, display_now=False)
    pw.cancel_button.click()
    states = {b["name"]: b["state"] for b in emu.batches()}
    assert states[run.batch_names[0]] == "BATCH_STATE_CANCELLED"
    eventually(lambda: pw.bar.bar_style == "warning", "the widget never showed CANCELLED")
    assert "CANCELLED" in pw.badge.value and pw.cancel_button.disabled
    assert run.state == "CANCELLED"


def test_failed_rows_are_counted_and_pointed_at(
    emu: Any, eventually: Callable[..., None]
) -> None:
    run = gbm.submit(_df(4, fail=(1, 2)), "prompt")
    pw = ProgressWidget(run, display_now=False)
    eventually(lambda: pw.bar.bar_style == "success", "never finished")
    assert "2 failed" in pw.counts.value
    assert "retry_failed" in pw.message.value


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
    eventually(lambda: "could not check the status" in pw.message.value,
               "the poll error never reached the widget")
    assert _monitor.monitor_running()
    assert pw.bar.bar_style == "info"
    # the right key is back: the widget recovers by itself
    monkeypatch.setenv("GEMINI_API_KEY", secret)
    _backend.reset()
    eventually(lambda: pw.bar.bar_style == "success", "the widget did not recover")
    assert "could not check" not in pw.message.value
    assert emu.batches()[0]["state"] == "BATCH_STATE_SUCCEEDED"
    states = json.dumps([x.get_state() for x in list(_instances.values())],
                        default=str)
    assert secret not in states and "fake-wrong" not in states
    assert secret not in run._repr_mimebundle_()["text/plain"]


def test_redact_hides_keys_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOOGLE_API_KEY", "k-123456")
    assert _secrets.redact("bad key k-123456 given") == "bad key *** given"


def test_importing_the_package_builds_no_widgets_and_no_magics() -> None:
    code = ("import sys, gemini_batch_magic\n"
            "assert 'ipywidgets' not in sys.modules, 'ipywidgets imported'\n"
            "assert 'gemini_batch_magic._magics' not in sys.modules\n"
            "assert 'gemini_batch_magic._monitor' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_another_process_shows_the_same_finished_widget(emu: Any) -> None:
    """What a notebook shows after a kernel restart: attach() by id, same widget, green."""
    run = gbm.submit(_df(3), "prompt").wait(progress=False)
    code = (
        "import gemini_batch_magic as gbm\n"
        "from gemini_batch_magic.widgets import ProgressWidget\n"
        f"pw = ProgressWidget(gbm.attach({run.run_id[:6]!r}), display_now=False)\n"
        "print(pw.bar.value, pw.bar.max, pw.bar.bar_style, pw._repr_mimebundle_()['text/plain'])\n"
    )
    env = {**os.environ, "GEMBATCH_HOME": str(settings.home)}
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True, env=env).stdout
    assert out.startswith("3 3 success ") and f"{run.run_id} SUCCEEDED" in out
