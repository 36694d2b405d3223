"""The views that are text: the estimate, the manual, the run list, notices; and where the
monitor's thread sends its updates (the parent header)."""

from __future__ import annotations

import contextvars
import logging
import re
from collections.abc import Callable
from typing import Any

import pandas as pd
import pytest

import gemini_batch_magic as gbm
from gemini_batch_magic import _magics
from gemini_batch_magic.widgets import (
    _notices,
    estimate_headline,
    estimate_html,
    manual_html,
    manual_text,
    notice,
    relative_time,
    runs_table,
)


def _estimate(**changes: Any) -> Any:
    fields = dict(model="gemini-2.5-flash", rows=20_000, requests=20_000, skipped=0,
                  bytes=5_896_799, mode="file", shards=1, input_tokens=1_100_000,
                  output_tokens=5_120_000, cost_usd=0.19362000000000001,
                  price_note="$0.15/1M input, $1.25/1M output; output assumed 256 "
                             "tokens/request")
    fields.update(changes)
    return gbm.Estimate(**fields)


def test_estimate_headline_and_human_units() -> None:
    est = _estimate()
    assert estimate_headline(est) == ("20,000 requests · 5.9 MB · file · 1 shard · ~$0.19 at "
                                      "batch prices")
    text = est._repr_mimebundle_()["text/plain"]
    assert "5896799" not in text and "0.1936" not in text and "~1.1M input" in text
    small = _estimate(requests=1, rows=1, bytes=512, mode="inline", cost_usd=0.0019362)
    assert estimate_headline(small) == "1 request · 512 B · inline · 1 shard · ~$0.0019 at " \
                                       "batch prices"
    assert "cost unknown" in estimate_headline(_estimate(cost_usd=None))


def test_estimate_html_never_reads_as_math() -> None:
    page = _estimate()._repr_html_()
    assert "$" not in page, "a literal $ would be typeset by JupyterLab's math renderer"
    assert page.count("&#36;") == 4  # ~$0.19 (headline, cost), $0.15/1M, $1.25/1M
    assert "gembatch-estimate" in page and "mathjax_ignore" in page
    assert page == estimate_html(_estimate())
    assert "20,000 requests · 5.9 MB" in page


def test_manual_renders_as_html_and_as_plain_text() -> None:
    doc = _magics.__doc__ or ""
    page = manual_html(doc)
    assert "<h3>" in page and "<table>" in page and "<pre>" in page and "<dl>" in page
    assert "<code>%gembatch list</code>" in page and "``" not in page
    assert "$" not in page and "&#36;var" in page  # "$var" stays literal, never math
    text = manual_text(doc)
    assert "``" not in text and ":class:" not in text and "<" not in text.split("\n")[0]
    assert "%gembatch list" in text and "--dry-run" in text
    assert max(len(line) for line in text.splitlines()) <= 100


def test_run_list_fits_100_columns(emu: Any) -> None:
    df = pd.DataFrame({"q": ["a", "b [[fail]]"]})
    run = gbm.submit(df, "q", name="a-rather-long-name-for-a-run-that-goes-on-and-on"
                     ).wait(progress=False)
    table = runs_table(gbm.runs())
    text = repr(table)
    assert text.splitlines()[0].split() == ["id", "name", "state", "progress", "rows", "model",
                                           "age", "cost"]
    assert max(len(line) for line in text.splitlines()) <= 100
    assert run.run_id in text and "100% · 1 failed" in text and "…" in text
    assert "$" not in table._repr_html_() and "<th" in table._repr_html_()
    wide = runs_table(gbm.runs(), all_columns=True)
    assert "backend" in repr(wide) and "parent_id" in wide._repr_html_()
    assert "no runs yet" in repr(runs_table(gbm.runs().head(0)))


def test_relative_time() -> None:
    assert relative_time(1000, 1002) == "just now"
    assert relative_time(1000, 1042) == "42 s ago"
    assert relative_time(1000, 1000 + 300) == "5 min ago"
    assert relative_time(1000, 1000 + 3 * 3600) == "3 h ago"
    assert relative_time(0, 86400) == "1 day ago"
    assert relative_time(0, 40 * 86400) == "1970-01-01"


def test_a_notice_is_a_quiet_display_in_a_notebook_not_stderr(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture
) -> None:
    shown: list[Any] = []
    monkeypatch.setattr(_notices, "in_notebook", lambda: True)
    monkeypatch.setattr("IPython.display.display", lambda obj, raw=False: shown.append(obj))
    with caplog.at_level(logging.INFO, logger="gemini_batch_magic"):
        notice("gemini_batch_magic._runs", "an identical run already exists: abc ($0.50)")
    assert capsys.readouterr().err == ""
    [bundle] = shown
    assert "identical run" in bundle["text/plain"]
    assert "gembatch-notice" in bundle["text/html"] and "$" not in bundle["text/html"]
    assert [r.getMessage() for r in caplog.records] == [
        "an identical run already exists: abc ($0.50)"]  # it went through logging


def test_notices_of_the_engine_go_through_logging(
    emu: Any, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    df = pd.DataFrame({"q": ["a"]})
    gbm.submit(df, "q").wait(progress=False)
    with caplog.at_level(logging.INFO, logger="gemini_batch_magic"):
        again = gbm.submit(df, "q")
        assert again.retry_failed() is None
    said = [(r.name, r.getMessage()) for r in caplog.records]
    assert said[0][0] == "gemini_batch_magic._runs" and "identical run" in said[0][1]
    assert "no failed rows to retry" in said[1][1]
    # outside a notebook they are still printed (on stderr, as any log line)
    assert "identical run already exists" in capsys.readouterr().err


def test_the_monitor_thread_sends_with_a_parent_header(
    emu: Any, monkeypatch: pytest.MonkeyPatch, eventually: Callable[..., None]
) -> None:
    """ipykernel >= 7: a thread's widget messages carry that thread's parent header. The
    monitor sets it before calling back: the request the kernel serves now (whose messages
    nbclient records), else the one that registered the callback."""
    parent_var: contextvars.ContextVar[Any] = contextvars.ContextVar("shell_parent")
    thread_parents: list[Any] = []

    class Kernel:
        _shell_parent = parent_var
        _shell_context: contextvars.Context | None = None

        def get_parent(self, channel: str = "shell") -> Any:
            return parent_var.get(None)

    class Shell:
        kernel = Kernel()

        def set_thread_parent(self, parent: Any) -> Any:
            thread_parents.append(parent)
            return ("token",)

        def reset_thread_parent(self, tokens: Any) -> None:
            pass

    shell = Shell()
    monkeypatch.setattr("IPython.get_ipython", lambda: shell)
    cell_a, cell_b = {"header": {"msg_id": "cell-a"}}, {"header": {"msg_id": "cell-b"}}
    parent_var.set(cell_a)  # the kernel runs cell A (a kernel that keeps no main context)
    run = gbm.submit(pd.DataFrame({"q": ["a", "b"]}), "q")
    seen: list[Any] = []
    run.watch(lambda r, e: seen.append(shell.kernel.get_parent()))
    eventually(lambda: bool(seen), "the monitor never called back")
    assert seen[0] is cell_a and thread_parents[0] is cell_a  # the watching cell's
    # the kernel now serves cell B (ipykernel >= 7 keeps it in its main context)
    parent_var.set(cell_b)
    Kernel._shell_context = contextvars.copy_context()
    seen.clear()
    other = gbm.submit(pd.DataFrame({"q": ["c"]}), "q")
    other.watch(lambda r, e: seen.append(shell.kernel.get_parent()))
    eventually(lambda: bool(seen), "the monitor never called back")
    assert {p["header"]["msg_id"] for p in seen} == {"cell-b"}
    assert re.fullmatch(r"[0-9a-f]+", run.run_id)
