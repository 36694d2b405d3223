"""df.gembatch: stateless, never mutates the frame, returns new objects."""

from __future__ import annotations

import inspect
from typing import Any

import pandas as pd
import pytest

import gemini_batch_magic as gbm
from gemini_batch_magic._results import PANDAS_3


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
    # no state kept between accesses: the accessor holds its frame and nothing else, even after
    # submit and run; pandas 3 builds a new accessor on every access, pandas 2 caches one per frame
    assert list(vars(df.gembatch)) == ["_df"] and df.gembatch._df is df
    if PANDAS_3:
        assert df.gembatch is not df.gembatch
    else:
        assert df.gembatch is df.gembatch


def _sent(emu: Any) -> list[tuple[str, str]]:
    return [(m, p) for m, p in emu.calls if not (m == "GET" and "/models" in p)]


def test_a_misspelt_keyword_names_the_one_meant_and_sends_nothing(emu: Any) -> None:
    df = pd.DataFrame({"text": ["a", "b"]})
    with pytest.raises(TypeError) as err:
        df.gembatch.submit("text", temprature=0.2)
    assert str(err.value).startswith(
        "'temprature' is not a keyword of df.gembatch.submit(): temperature is a generation "
        "setting, pass generation_config={'temperature': 0.2}")
    with pytest.raises(TypeError, match=r"'modle' .* did you mean model\?"):
        df.gembatch.run("text", modle="gemini-2.5-pro")
    with pytest.raises(TypeError, match=r"'timout' .* did you mean timeout\?"):
        df.gembatch.run("text", timout=3)
    with pytest.raises(TypeError, match=r"'schema' .* did you mean response_schema\?"):
        gbm.submit(df, "text", schema={"type": "object"})
    with pytest.raises(TypeError, match=r"'max_tokens' .*generation_config=\{'max_output_tok"):
        gbm.estimate(df, "text", max_tokens=10)
    with pytest.raises(TypeError, match=r"'system' .* did you mean system_instruction\?"):
        df.gembatch.estimate("text", system="Be brief.")
    assert _sent(emu) == [] and gbm.runs().empty


def test_every_keyword_is_in_the_signature() -> None:
    """``df.gembatch.submit?`` shows the real keywords: nothing hides behind ``**options``."""
    accessor = pd.DataFrame({"p": ["x"]}).gembatch
    for fn in (accessor.submit, accessor.run, accessor.estimate, gbm.submit, gbm.estimate):
        params = inspect.signature(fn).parameters.values()
        assert not [p for p in params if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL)], fn
        assert fn.__doc__ and inspect.unwrap(fn) is not fn  # the checked wrapper, documented
    assert {"keep_inputs", "confirm"} <= set(inspect.signature(accessor.submit).parameters)
    assert "confirm" not in inspect.signature(accessor.estimate).parameters


def test_above_confirm_above_python_needs_confirm_true(emu: Any) -> None:
    df = pd.DataFrame({"text": [f"t{i}" for i in range(20)]})
    costly = {"template": "Say {text}", "model": "gemini-2.5-pro",
              "generation_config": {"max_output_tokens": 65536}}  # $6.55 > $5
    with pytest.raises(gbm.ConfirmationRequired) as err:
        df.gembatch.submit(**costly)
    assert err.value.estimate.cost_usd == pytest.approx(6.55, abs=0.01)
    assert "confirm=True" in str(err.value)
    with pytest.raises(gbm.ConfirmationRequired):
        gbm.submit(df, **costly)
    with pytest.raises(gbm.CostLimitError) as refused:  # max_cost still refuses outright
        df.gembatch.submit(**costly, confirm=True, max_cost=1.0)
    assert not isinstance(refused.value, gbm.ConfirmationRequired)
    assert _sent(emu) == [] and gbm.runs().empty
    out = df.gembatch.run(**costly, confirm=True, keep_inputs=True)
    assert out["response"].tolist() == [f"Say t{i}" for i in range(20)]
    run = gbm.attach(gbm.runs()["run_id"][0])
    assert run.record.config["keep_inputs"] is True
