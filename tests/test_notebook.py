"""``notebooks/quickstart.ipynb`` runs top to bottom in a real kernel (nbclient), offline.

What a user would see afterwards is asserted on the saved notebook: no errors, the result
DataFrames rendered as tables, and every progress widget's saved state at 100 % and green.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


@pytest.fixture
def jupyter_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Kernel connection files, IPython profile and Jupyter data stay in ``tmp_path``."""
    for var, sub in (("JUPYTER_RUNTIME_DIR", "runtime"), ("JUPYTER_DATA_DIR", "data"),
                     ("JUPYTER_CONFIG_DIR", "config"), ("IPYTHONDIR", "ipython")):
        monkeypatch.setenv(var, str(tmp_path / sub))
    return tmp_path


def _outputs(cell: Any) -> list[Any]:
    return list(cell.get("outputs", [])) if cell.cell_type == "code" else []


def _cell(nb: Any, source_start: str) -> Any:
    return next(c for c in nb.cells if c.cell_type == "code" and c.source.startswith(source_start))


def _text(cell: Any) -> str:
    parts = []
    for out in _outputs(cell):
        parts.append(out.get("text", ""))
        data = out.get("data", {})
        parts.append(data.get("text/plain", ""))
        parts.append(data.get("text/html", ""))
    return "\n".join(parts)


def test_the_committed_notebook_has_no_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not _outputs(c) and c.get("execution_count") is None
               for c in nb.cells if c.cell_type == "code")
    assert "widgets" not in nb.metadata


@pytest.mark.slow
def test_quickstart_runs_offline_and_ends_green(jupyter_dirs: Path) -> None:
    work = jupyter_dirs / "nb"
    work.mkdir()
    shutil.copy(NOTEBOOK, work / NOTEBOOK.name)
    nb = nbformat.read(work / NOTEBOOK.name, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", store_widget_state=True,
        resources={"metadata": {"path": str(work)}},
    )
    client.execute()
    nbformat.write(nb, work / "executed.ipynb")  # kept in tmp_path for a look on failure

    errors = [o for c in nb.cells for o in _outputs(c) if o.output_type == "error"]
    assert not errors, errors
    # the embedded emulator, not Gemini, and the registry in the test's folder
    assert "embedded local emulator" in _text(_cell(nb, "%gembatch backend"))
    assert Path(os.environ["GEMBATCH_HOME"], "registry.sqlite3").exists()
    # dry run: an estimate and the first requests, nothing sent
    dry = _text(_cell(nb, "%%gembatch --df reviews --dry-run"))
    assert "dry run, nothing sent" in dry and "Classify the sentiment of this review: Great" in dry
    # results DataFrames rendered as tables, aligned to the review ids
    summaries = _text(_cell(nb, 'summaries[["response"'))
    assert "<table" in summaries and "r6" in summaries
    assert "Summarise this review in five words: Great" in summaries
    labels = _text(_cell(nb, 'labels[["label"'))
    assert "<table" in labels and "confidence" in labels
    results = _text(_cell(nb, "%gembatch results"))
    assert "Simulated failure" in results  # the [[fail]] row carries its error
    # wait --all: one summary line per run it waited for; then the run list, all finished
    waited = _text(_cell(nb, "%gembatch wait --all"))
    assert "PENDING" not in waited and "RUNNING" not in waited and "Traceback" not in waited
    final = _text([c for c in nb.cells if c.cell_type == "code"][-1])
    assert final.count("SUCCEEDED") >= 5 and "PENDING" not in final and "RUNNING" not in final

    state = nb.metadata["widgets"][WIDGET_STATE]["state"]

    def of_class(name: str) -> list[str]:
        return [k for k, m in state.items()
                if m["state"].get("_anywidget_id", "").endswith(name)]

    progress = of_class("._progress_widget.ProgressWidget")
    assert len(progress) >= 6, "too few progress widgets were saved"
    for model_id in progress:
        saved = state[model_id]["state"]
        assert saved["state"] == "SUCCEEDED" and saved["tone"] == "success", saved
        assert saved["percent"] == 100.0 and not saved["live"], saved
    # the cell that displays `run` shows one of those widgets, with a text fallback
    shown = [o for o in _outputs(_cell(nb, "run = reviews.gembatch.submit"))
             if WIDGET_VIEW in o.get("data", {})]
    assert shown and shown[0]["data"][WIDGET_VIEW]["model_id"] in progress
    assert "elapsed" in shown[0]["data"]["text/plain"]  # the summary line, for no-widget views
    # the jobs panel lists every run
    [panel] = of_class("._panel.JobsPanel")
    rows = state[panel]["state"]["rows"]
    assert len(rows) == 5  # sentiment, lines, summaries, labels and the retry
