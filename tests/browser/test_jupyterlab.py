"""The widgets in a real JupyterLab 4 and a real browser (see ``frontends.py``).

* ``push_updates = False``: the progress widget advances while no cell runs and reaches
  100 % green by the front end's pull alone; the honest look without counts; the panel's
  header row, details and sort; the estimate's literal dollar signs; nothing clipped.
* The quickstart notebook runs top to bottom and every widget ends green.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from frontends import (
    CELLS,
    REPO,
    TOKEN,
    WIDTH,
    artifacts,
    check_panel,
    clipped,
    demo_notebook,
    fill_width,
    follow_to_success,
    no_cell_running,
    wait_kernel_idle,
)

pytestmark = pytest.mark.browser


def _open_and_run_all(page: Any, port: int, name: str) -> None:
    page.goto(f"http://127.0.0.1:{port}/lab/tree/{name}?token={TOKEN}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
    wait_kernel_idle(port)
    page.wait_for_selector('.jp-Notebook-ExecutionIndicator[data-status="idle"]',
                           state="attached", timeout=120_000)
    if page.locator("#jp-left-stack").is_visible():
        page.keyboard.press("Control+b")  # the file browser off: the notebook gets the width
    page.locator(".lm-MenuBar-item", has_text=re.compile(r"^Run$")).click()
    page.locator('.lm-Menu-item[data-command="runmenu:run-all"]').click()


def test_pull_alone_keeps_the_widget_live_in_jupyterlab(jupyter: Any, browser: Any,
                                                       tmp_path: Path) -> None:
    from playwright.sync_api import expect

    root = tmp_path / "root"
    root.mkdir()
    name = demo_notebook(root, push=False)
    port = jupyter("jupyterlab", root)
    page = browser.new_page(viewport={"width": WIDTH, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    _open_and_run_all(page, port, name)
    shots = artifacts()

    widget = page.locator(".gembatch-progress").first
    widget.wait_for(state="visible", timeout=120_000)
    expect(page.locator(".gembatch-progress")).to_have_count(2, timeout=120_000)
    # while the service reports no counts: state, elapsed and the honest note, no percentage
    quiet = page.locator(".gembatch-progress").nth(1)
    expect(quiet.locator(".gembatch-note")).to_have_text("counts arrive when the batch ends",
                                                         timeout=60_000)
    expect(quiet.locator(".gembatch-bar")).to_have_class(re.compile(r"gembatch-indeterminate"))
    assert quiet.locator(".gembatch-percent").is_hidden()
    assert "left" not in quiet.inner_text() and "?" not in quiet.inner_text()
    expect(quiet.locator(".gembatch-cancel")).to_be_visible()

    # every cell has run; from now on only the widget's own pull can move it
    page.wait_for_function("""() => [...document.querySelectorAll(
        '.jp-CodeCell .jp-InputArea-prompt')].every(p => /\\[\\d+\\]/.test(p.textContent))""",
                           timeout=120_000)
    assert no_cell_running(page)
    widths = follow_to_success(widget, while_true=lambda: no_cell_running(page))
    moving = [w for w in widths if w not in ("", "100%")]
    assert len(moving) >= 2, f"the bar did not advance while no cell ran: {widths}"
    expect(widget.locator(".gembatch-state")).to_have_text("SUCCEEDED")
    assert fill_width(widget) == "100%"
    expect(widget.locator(".gembatch-percent")).to_have_text("100%")
    expect(widget.locator(".gembatch-counts")).to_have_text("40 / 40 · 40 ok · 0 failed")
    expect(widget.locator(".gembatch-counts .gembatch-zero")).to_have_text("0 failed")
    expect(widget.locator("table.gembatch-preview thead th")).to_have_text(
        ["review_id", "response"])
    widget.scroll_into_view_if_needed()
    widget.screenshot(path=str(shots / "jupyterlab_progress_done.png"))
    quiet.screenshot(path=str(shots / "jupyterlab_progress_no_counts.png"))

    # the estimate: a headline and literal dollar signs, never typeset as math
    est = page.locator(".gembatch-estimate").first
    expect(est.locator(".gembatch-estimate-headline")).to_contain_text(
        re.compile(r"^Estimate: 40 requests · .* · ~\$\d"))
    assert est.inner_text().count("$") >= 3, est.inner_text()
    expect(est.locator("mjx-container, .MathJax")).to_have_count(0)
    est.screenshot(path=str(shots / "jupyterlab_estimate.png"))

    check_panel(page)
    panel = page.locator(".gembatch-panel").first
    panel.scroll_into_view_if_needed()
    panel.screenshot(path=str(shots / "jupyterlab_panel.png"))
    bad = clipped(page)
    assert bad == [], f"clipped text: {bad}"
    page.screenshot(path=str(shots / "jupyterlab_widgets_page.png"), full_page=True)
    assert not errors, errors
    page.close()


def test_quickstart_runs_and_every_widget_ends_green(jupyter: Any, browser: Any,
                                                     tmp_path: Path) -> None:
    from playwright.sync_api import expect

    root = tmp_path / "root"
    root.mkdir()
    notebook = REPO / "notebooks" / "quickstart.ipynb"
    shutil.copy(notebook, root / notebook.name)
    port = jupyter("jupyterlab", root)
    page = browser.new_page(viewport={"width": WIDTH, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    _open_and_run_all(page, port, notebook.name)

    first = page.locator(".gembatch-progress").first
    first.wait_for(state="visible", timeout=120_000)
    widths = follow_to_success(first)
    assert widths, "the widget was never seen live"
    expect(first.locator(".gembatch-state")).to_have_text("SUCCEEDED")
    # Run All reaches the last cell (the run list): every widget green, no error output
    final = page.locator(".jp-Cell").last.locator(".jp-OutputArea-output")
    expect(final).to_contain_text("SUCCEEDED", timeout=120_000)
    assert page.locator(".gembatch-progress").count() >= 6
    expect(page.locator(".gembatch-progress:not(.gembatch-state-succeeded)")).to_have_count(0)
    expect(page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']",
                        has_text="Traceback")).to_have_count(0)
    expect(page.locator(".gembatch-panel")).to_be_visible()
    page.screenshot(path=str(artifacts() / "jupyterlab_quickstart.png"), full_page=True)
    assert not errors, errors
    page.close()


POLARS_CELLS = [
    "import polars as pl\n"
    "tickets = pl.DataFrame({'ticket_id': [907, 12, 555, 3, 48, 730],\n"
    "                        'body': ['Écran cassé 📱', '画面が割れた', 'the battery',\n"
    "                                 'refund please', 'late delivery', '[[fail]] lost']})\n"
    "prun = tickets.gembatch.submit(template='Classify: {body}', key='ticket_id',\n"
    "                               name='polars-tickets')\n"
    "prun",
    "out = prun.wait(progress=False).result()\n"
    "type(out).__module__, out.columns[:3], out['ticket_id'].to_list()",
]


def test_a_polars_run_widget_shows_its_keys_and_errors(jupyter: Any, browser: Any,
                                                       tmp_path: Path) -> None:
    """A polars DataFrame's run in JupyterLab: the widget ends green, its preview labels
    the rows by the key column (in input order, the shuffled keys as given) and shows the
    error column because a row failed; the result is a polars DataFrame."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook
    from playwright.sync_api import expect

    root = tmp_path / "root"
    root.mkdir()
    cells = [new_code_cell(src) for src in
             (CELLS[0].format(push=False), *POLARS_CELLS)]
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, root / "polars_run.ipynb")
    port = jupyter("jupyterlab", root)
    page = browser.new_page(viewport={"width": WIDTH, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    _open_and_run_all(page, port, "polars_run.ipynb")

    widget = page.locator(".gembatch-progress").first
    widget.wait_for(state="visible", timeout=120_000)
    follow_to_success(widget)
    expect(widget.locator(".gembatch-state")).to_have_text("SUCCEEDED")
    table = widget.locator("table")
    expect(table).to_contain_text("ticket_id", timeout=60_000)
    header = table.locator("thead th").all_inner_texts()
    assert [h.strip() for h in header] == ["ticket_id", "response", "error"], header
    first_col = [c.strip() for c in table.locator("tbody tr th").all_inner_texts()]
    assert first_col == ["907", "12", "555", "3", "48"], first_col
    expect(table).to_contain_text("Classify: Écran cassé 📱")
    expect(table).to_contain_text("画面が割れた")
    final = page.locator(".jp-Cell").last.locator(".jp-OutputArea-output")
    expect(final).to_contain_text("polars", timeout=120_000)
    expect(final).to_contain_text("[907, 12, 555, 3, 48, 730]")
    assert clipped(page) == [], clipped(page)
    widget.screenshot(path=str(artifacts() / "jupyterlab_polars_run.png"))
    assert not errors, errors
    page.close()
