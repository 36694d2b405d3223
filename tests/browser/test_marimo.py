"""The widgets in marimo (anywidget is what marimo renders) in a real browser (see
``frontends.py``): ``run.widget()`` advances after every cell has run and ends at 100 %
green, the panel's header row is there, the estimate keeps its dollar signs, nothing is
clipped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from frontends import (
    WIDTH,
    artifacts,
    check_panel,
    clipped,
    fill_width,
    follow_to_success,
)

pytestmark = pytest.mark.browser

NOTEBOOK = Path(__file__).with_name("marimo_widgets.py")


def test_widgets_live_in_marimo(marimo: Any, browser: Any) -> None:
    from playwright.sync_api import expect

    port = marimo(NOTEBOOK)
    page = browser.new_page(viewport={"width": WIDTH, "height": 1000})
    page.goto(f"http://127.0.0.1:{port}/")
    widget = page.locator(".gembatch-progress").first
    widget.wait_for(state="visible", timeout=120_000)
    expect(page.locator(".gembatch-panel")).to_have_count(1, timeout=120_000)
    # marimo has run every cell by now: what moves the bar is the widget itself
    widths = follow_to_success(widget)
    moving = [w for w in widths if w not in ("", "100%")]
    assert len(moving) >= 2, f"the bar did not advance: {widths}"
    expect(widget.locator(".gembatch-state")).to_have_text("SUCCEEDED")
    assert fill_width(widget) == "100%"
    expect(widget.locator(".gembatch-percent")).to_have_text("100%")
    est = page.locator(".gembatch-estimate").first
    assert est.inner_text().count("$") >= 3, est.inner_text()
    check_panel(page)
    bad = clipped(page)
    assert bad == [], f"clipped text: {bad}"
    shots = artifacts()
    widget.screenshot(path=str(shots / "marimo_progress_done.png"))
    page.locator(".gembatch-panel").first.screenshot(path=str(shots / "marimo_panel.png"))
    page.screenshot(path=str(shots / "marimo_page.png"), full_page=True)
    page.close()
