"""df.gembatch: stateless, never mutates the frame, returns new objects."""

from __future__ import annotations

from typing import Any

import pandas as pd

import gemini_batch_magic as gbm


def test_accessor_submit_estimate_run_leave_the_frame_untouched(emu: Any) -> None:
    df = pd.DataFrame({"p": ["x", "y"]}, index=["b", "a"])
    before = df.copy()
    est = df.gembatch.estimate("p")
    assert isinstance(est, gbm.Estimate) and est.requests == 2
    run = df.gembatch.submit("p")
    assert isinstance(run, gbm.BatchRun)
    out = df.gembatch.run("p", join=True)
    assert list(out.columns[:2]) == ["p", "response"]
    assert out["response"].tolist() == ["x", "y"]
    pd.testing.assert_frame_equal(df, before)
    assert df.gembatch is not df.gembatch  # no state kept between accesses
