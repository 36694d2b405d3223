"""The widgets in a real Notebook 7 and a real browser (see ``frontends.py``): with the
monitor's push on (the default), the progress widget advances while no cell runs and ends
at 100 % green; the panel's header row; the estimate's dollar signs; nothing clipped."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from frontends import (
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


def test_widgets_live_in_notebook7(jupyter: Any, browser: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    root = tmp_path / "root"
    root.mkdir()
    name = demo_notebook(root, push=True)
    port = jupyter("notebook", root)
    page = browser.new_page(viewport={"width": WIDTH, "height": 1000})
    page.goto(f"http://127.0.0.1:{port}/notebooks/{name}?token={TOKEN}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
    wait_kernel_idle(port)
    page.locator(".lm-MenuBar-item", has_text=re.compile(r"^Run$")).click()
    page.locator('.lm-Menu-item[data-command="runmenu:run-all"]').click()

    widget = page.locator(".gembatch-progress").first
    widget.wait_for(state="visible", timeout=120_000)
    page.wait_for_function("""() => [...document.querySelectorAll(
        '.jp-CodeCell .jp-InputArea-prompt')].every(p => /\\[\\d+\\]/.test(p.textContent))""",
                           timeout=120_000)
    widths = follow_to_success(widget, while_true=lambda: no_cell_running(page))
    moving = [w for w in widths if w not in ("", "100%")]
    assert len(moving) >= 2, f"the bar did not advance while no cell ran: {widths}"
    expect(widget.locator(".gembatch-state")).to_have_text("SUCCEEDED")
    assert fill_width(widget) == "100%"
    expect(widget.locator(".gembatch-percent")).to_have_text("100%")
    quiet = page.locator(".gembatch-progress").nth(1)
    expect(quiet.locator(".gembatch-note")).to_have_text("counts arrive when the batch ends")

    est = page.locator(".gembatch-estimate").first
    assert est.inner_text().count("$") >= 3, est.inner_text()
    expect(est.locator("mjx-container, .MathJax")).to_have_count(0)
    check_panel(page)
    bad = clipped(page)
    assert bad == [], f"clipped text: {bad}"
    shots = artifacts()
    widget.screenshot(path=str(shots / "notebook7_progress_done.png"))
    page.locator(".gembatch-panel").first.screenshot(path=str(shots / "notebook7_panel.png"))
    page.close()
