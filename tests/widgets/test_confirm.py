"""The confirmation view: the estimate, a "Submit ($6.55)" button, and the run once sent."""

from __future__ import annotations

from typing import Any

import pandas as pd

import gemini_batch_magic as gbm
from gemini_batch_magic.widgets._confirm import ConfirmSubmit, usd

COSTLY = {"template": "Say {text}", "model": "gemini-2.5-pro",
          "generation_config": {"max_output_tokens": 65536}}  # 20 rows: $6.55


def _df() -> pd.DataFrame:
    return pd.DataFrame({"text": [f"t{i}" for i in range(20)]})


def test_it_shows_the_estimate_and_sends_only_when_clicked(emu: Any) -> None:
    df = _df()
    est = gbm.estimate(df, **COSTLY)
    sent: list[gbm.BatchRun] = []

    def send() -> gbm.BatchRun:
        run = gbm.submit(df, **COSTLY, confirm=True)
        sent.append(run)
        return run

    view = ConfirmSubmit(est, send, limit=5.0, note="After Submit, run holds the run.",
                         display_now=False)
    assert view.submit_button.description == "Submit ($6.55)"
    assert "Estimated $6.55" in view.summary.value and "$5.00" in view.summary.value
    assert "20 requests" in view.summary.value and "run holds the run" in view.summary.value
    text = view._repr_mimebundle_()["text/plain"]
    assert "not sent" in text and "--yes" in text and "confirm=True" in text
    assert emu.batches() == [] and gbm.runs().empty  # built, shown: nothing sent

    run = view.click()
    assert isinstance(run, gbm.BatchRun) and run.n_rows == 20 and len(emu.batches()) == 1
    assert view.submit_button.disabled and view.submit_button.description == "Submitted"
    assert view.progress is not None and view.progress in view.box.children
    view.click()  # a second click never sends twice
    assert len(sent) == 1 and len(emu.batches()) == 1


def test_an_error_is_shown_and_submit_can_be_clicked_again(emu: Any) -> None:
    df = _df()
    est = gbm.estimate(df, **COSTLY)
    attempts = iter([lambda: gbm.submit(df, **COSTLY, confirm=True, max_cost=1.0),
                     lambda: gbm.submit(df, **COSTLY, confirm=True)])
    view = ConfirmSubmit(est, lambda: next(attempts)(), limit=5.0, display_now=False)
    assert view.click() is None
    assert "not sent" in view.message.value and "max_cost" in view.message.value
    assert not view.submit_button.disabled and emu.batches() == []
    assert isinstance(view.click(), gbm.BatchRun) and len(emu.batches()) == 1


def test_dont_send_sends_nothing(emu: Any) -> None:
    view = ConfirmSubmit(gbm.estimate(_df(), **COSTLY), lambda: gbm.submit(_df(), **COSTLY),
                         limit=5.0, display_now=False)
    view.dismiss_button.click()
    assert view.submit_button.disabled and "not sent" in view.message.value
    assert emu.batches() == []


def test_amounts() -> None:
    assert [usd(6.49), usd(1234.5), usd(0.0031), usd(0), usd(None)] == [
        "$6.49", "$1,234.50", "$0.0031", "$0.00", "an unknown amount"]
