"""The seam between the engine and the views: what crosses it, and what does not.

Views are handed a run and read its public attributes; the engine reaches them through the
one door ``gemini_batch_magic.widgets`` (``auto_progress``, ``run_mimebundle``).
"""

from __future__ import annotations

import ast
import io
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import gemini_batch_magic as gbm
from gemini_batch_magic import _monitor, widgets
from gemini_batch_magic.widgets import Eta, TextProgress, _auto, auto_progress, run_mimebundle

PACKAGE = Path(gbm.__file__).parent
ENGINE = {"_runs", "_plan", "_submission", "_fetch", "_registry", "_backend", "_config",
          "_requests", "_results", "_schemas", "_pricing", "_monitor", "_state"}
ADAPTERS = {"_panel", "_magics", "_accessor", "cli"}
LEAVES = {"exceptions", "_secrets", "_env"}


class _FakeRun:
    """A run by duck type only: what a view may read (``RunView``), nothing of the engine."""

    def __init__(self, total: int = 100) -> None:
        self.run_id, self.model, self.display_name = "f00dcafe", "gemini-x", "fake"
        self.state, self.error, self.notice = "RUNNING", None, None
        self.elapsed, self.batch_names, self.shards = 12.0, ["batches/fake"], [object()]
        self.n_rows = total
        self.answered = 0
        self.watched: list[Any] = []

    @property
    def stats(self) -> gbm.RunStats:
        return gbm.RunStats(self.n_rows, self.answered, 0, self.n_rows - self.answered)

    @property
    def done(self) -> bool:
        return self.state in ("SUCCEEDED", "FAILED", "CANCELLED", "EXPIRED")

    def refresh(self) -> _FakeRun:
        return self

    def cancel(self) -> _FakeRun:
        self.state = "CANCELLED"
        return self

    def result(self) -> pd.DataFrame:
        return pd.DataFrame({"response": ["a"], "error": [None]})

    def watch(self, callback: Any = None) -> None:
        self.watched.append(callback)

    def unwatch(self, callback: Any = None) -> None:
        self.watched.remove(callback)

    def __repr__(self) -> str:
        return f"<FakeRun {self.run_id} {self.state}>"


# -- Eta: the time left belongs to the view ---------------------------------------------------
def test_eta_knows_nothing_before_two_observations_with_answers() -> None:
    now = [0.0]
    eta, run = Eta(clock=lambda: now[0]), _FakeRun(total=100)
    eta.observe(run)
    assert eta.left(run) is None  # no answers yet
    now[0], run.answered = 10.0, 10
    eta.observe(run)
    assert eta.left(run) is None  # the first answers: a start, not yet a rate
    now[0], run.answered = 20.0, 30
    eta.observe(run)
    assert eta.left(run) == pytest.approx(35.0)  # 20 answers in 10 s: 70 left at 2/s
    assert "~0:35 left" in widgets.summary_line(run, eta)
    assert "left" not in widgets.summary_line(run)  # no view state, no guess (never "~?")
    run.state = "SUCCEEDED"
    assert eta.left(run) == 0.0 and "left" not in widgets.summary_line(run, eta)


def test_each_view_keeps_its_own_eta() -> None:
    run = _FakeRun()
    run.answered = 5
    out = io.StringIO()
    text = TextProgress(run, file=out)
    text.update()
    assert text.eta.left(run) is None and "left" not in out.getvalue()
    other = TextProgress(run, file=io.StringIO())
    run.answered = 50
    text.update()
    assert text.eta.left(run) is not None and other.eta.left(run) is None


def test_the_engine_keeps_no_time_left_state(emu: Any) -> None:
    run = gbm.submit(pd.DataFrame({"q": ["a", "b"]}), "q").wait(progress=False)
    assert not hasattr(run, "first_answer_time") and not hasattr(run, "first_answer_count")


# -- the door: auto_progress and run_mimebundle -------------------------------------------------
def test_outside_a_kernel_a_run_shows_text_and_starts_no_poller(emulator_factory: Any) -> None:
    emulator_factory(pending_seconds=60)
    run = gbm.submit(pd.DataFrame({"q": ["a", "b"]}), "q")
    assert not run.done
    bundle = run._repr_mimebundle_()
    assert bundle == {"text/plain": repr(run)}
    assert run_mimebundle(run) == bundle
    assert not _monitor.monitor_running() and _monitor.watched_runs() == []
    assert not [t for t in threading.enumerate() if t.name == "gembatch-monitor"]
    assert isinstance(auto_progress(run), TextProgress)


def test_in_a_kernel_a_run_shows_the_widget(
    emulator_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator_factory(pending_seconds=60)
    monkeypatch.setattr(_auto, "in_notebook", lambda: True)
    monkeypatch.setattr("IPython.display.display", lambda *a, **k: None)
    run = gbm.submit(pd.DataFrame({"q": ["a"]}), "q")
    view = auto_progress(run)
    assert isinstance(view.widget, widgets.ProgressWidget)  # type: ignore[attr-defined]
    bundle = run_mimebundle(run)
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert run.run_id in bundle["text/plain"]
    assert _monitor.monitor.entries()[run.run_id].callbacks == 2  # two widgets, one poller


def test_wait_drives_a_view_of_the_callers_own(
    emu: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    class Recorder:
        def __init__(self) -> None:
            self.calls: list[str] = []

        def update(self) -> None:
            self.calls.append("update")

        def close(self) -> None:
            self.calls.append("close")

    view = Recorder()
    run = gbm.submit(pd.DataFrame({"q": ["a", "b"]}), "q").wait(progress=view)
    assert run.done
    assert view.calls[-1] == "close" and view.calls.count("close") == 1
    assert "update" in view.calls
    assert capsys.readouterr().err.count(run.run_id) == 0  # no text meter of its own
    run.wait(progress=False)
    assert view.calls.count("close") == 1


def test_a_widget_follows_its_run_through_the_run() -> None:
    run = _FakeRun()
    pw = widgets.ProgressWidget(run, display_now=False)
    assert run.watched == [pw._on_poll]
    assert not _monitor.monitor_running()  # the fake run has no monitor behind it
    run.answered, run.state = 100, "SUCCEEDED"
    pw.view().close()  # what wait() calls: the final state, and the widget stays displayed
    assert run.watched == [] and pw.tone == "success" and pw.comm is not None


def test_the_views_import_without_ipywidgets() -> None:
    """tqdm style: the package imports, a widget refuses to be built, auto_progress gives text."""
    code = (
        "import sys; sys.modules['anywidget'] = None\n"
        "from gemini_batch_magic import widgets\n"
        "from gemini_batch_magic.widgets import _auto\n"
        "_auto.in_notebook = lambda: True\n"
        "class Run:\n"
        "    run_id, state, done, error, notice, elapsed = 'r1', 'RUNNING', False, None, None, 1.0\n"
        "    model = display_name = 'm'; batch_names = []; shards = []; n_rows = 2\n"
        "    stats = (2, 0, 0, 2)\n"
        "    def __repr__(self): return '<Run r1>'\n"
        "run = Run()\n"
        "assert type(widgets.auto_progress(run)).__name__ == 'TextProgress'\n"
        "assert widgets.run_mimebundle(run) == {'text/plain': '<Run r1>'}\n"
        "try:\n"
        "    widgets.ProgressWidget(run)\n"
        "except ImportError as exc:\n"
        "    assert 'anywidget' in str(exc) and 'TextProgress' in str(exc), exc\n"
        "else:\n"
        "    raise AssertionError('built a widget without ipywidgets')\n"
        "assert 'gemini_batch_magic._monitor' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_terminal_repr_loads_no_widget_library() -> None:
    code = (
        "import sys\n"
        "from gemini_batch_magic.widgets import run_mimebundle, summary_line\n"
        "class Run:\n"
        "    def __repr__(self): return '<Run>'\n"
        "assert run_mimebundle(Run()) == {'text/plain': '<Run>'}\n"
        "bad = [m for m in ('ipywidgets', 'anywidget', 'gemini_batch_magic._monitor')\n"
        "       if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- the imports, read from the source ----------------------------------------------------------
def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(name: str) -> bool:
    rel = Path(*name.split("."))
    return (PACKAGE.parent / rel).with_suffix(".py").exists() or (
        PACKAGE.parent / rel / "__init__.py").exists()


def _imports(path: Path) -> set[str]:
    """Package modules ``path`` imports, at module level or inside functions."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            else:
                module = node.module or ""
            subs = [f"{module}.{a.name}" for a in node.names if _is_module(f"{module}.{a.name}")]
            found.update(subs or [module])
    return {m for m in found if m == "gemini_batch_magic" or m.startswith("gemini_batch_magic.")}


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in PACKAGE.rglob("*.py")}


def test_views_import_no_engine_module_and_no_adapter() -> None:
    for path in sorted((PACKAGE / "widgets").glob("*.py")):
        for module in _imports(path):
            top = module.split(".")[1] if "." in module else ""
            assert top == "widgets" or top in LEAVES, (
                f"{_module_name(path)} imports {module}: a view may import only the views "
                f"and the leaves {sorted(LEAVES)}; read the run's attributes instead")


def test_the_monitor_knows_runs_by_duck_type() -> None:
    imported = _imports(PACKAGE / "_monitor.py")
    assert "gemini_batch_magic._runs" not in imported
    assert not [m for m in imported if m.startswith("gemini_batch_magic.widgets")]


def test_the_engine_reaches_the_views_only_through_the_door() -> None:
    graph = _graph()
    for name in sorted(f"gemini_batch_magic.{m}" for m in ENGINE):
        views = {m for m in graph.get(name, set()) if m.startswith("gemini_batch_magic.widgets")}
        assert views <= {"gemini_batch_magic.widgets"}, (name, views)
        adapters = {m for m in graph.get(name, set()) if m.split(".")[-1] in ADAPTERS}
        assert not adapters, (name, adapters)


def test_no_import_cycle_touches_the_views_the_monitor_or_the_panel() -> None:
    graph = _graph()
    mine = {m for m in graph if m.startswith("gemini_batch_magic.widgets")} | {
        "gemini_batch_magic._monitor", "gemini_batch_magic._panel"}
    for start in sorted(mine):
        # every module reachable from `start`; a cycle through it would reach it again
        seen: set[str] = set()
        todo = list(graph.get(start, ()))
        while todo:
            m = todo.pop()
            if m not in seen:
                seen.add(m)
                todo.extend(graph.get(m, ()))
        assert start not in seen, f"{start} is on an import cycle"
