"""The quickstart in a real JupyterLab and a real browser: the progress widget renders live.

JupyterLab runs on loopback in a temporary root holding a copy of the quickstart; Debian's
Chromium (``/usr/bin/chromium``, driven by Playwright, no browser download) opens it, runs
every cell, and watches the first progress widget go from pending to 100 % and green. A
screenshot lands in ``artifacts/`` of the repository (or ``$GEMBATCH_ARTIFACTS``).

Needs Chromium: ``apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y
chromium``. Without it this test fails under CI (``CI=true``, where .ci/run installs it), so
CI cannot pass by accident; elsewhere it is skipped with the install command as the reason.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "notebooks" / "quickstart.ipynb"
CHROMIUM = "/usr/bin/chromium"
INSTALL = "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
TOKEN = "gembatch-e2e"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _http(port: int, path: str, method: str = "GET", timeout: float = 10) -> bytes:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 headers={"Authorization": f"token {TOKEN}"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return bytes(resp.read())


def _write_settings(config_dir: Path) -> None:
    """No news toast over the screenshot; every cell kept in the DOM (no windowing)."""
    user = config_dir / "lab" / "user-settings" / "@jupyterlab"
    files = {
        "apputils-extension/notification.jupyterlab-settings":
            {"fetchNews": "false", "checkForUpdates": False},
        "notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    }
    for rel, content in files.items():
        path = user / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(content))


@pytest.fixture
def lab_server(tmp_path: Path) -> Iterator[int]:
    """JupyterLab on loopback with isolated Jupyter dirs and a copy of the quickstart."""
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)
    env = dict(os.environ)
    for var, sub in (("JUPYTER_RUNTIME_DIR", "runtime"), ("JUPYTER_DATA_DIR", "data"),
                     ("JUPYTER_CONFIG_DIR", "config"), ("IPYTHONDIR", "ipython")):
        env[var] = str(tmp_path / sub)
    env["GEMBATCH_HOME"] = str(tmp_path / "gembatch-home")
    _write_settings(tmp_path / "config")
    port = _free_port()
    log = open(tmp_path / "server.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1",
         f"--port={port}", "--port-retries=0", f"--ServerApp.root_dir={root}",
         f"--IdentityProvider.token={TOKEN}", "--allow-root", "--LabApp.news_url=None",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()
            try:
                _http(port, "/api/status")
                break
            except OSError:
                assert time.monotonic() < deadline, (tmp_path / "server.log").read_text()
                time.sleep(0.2)
        yield port
    finally:
        try:  # graceful: shuts the kernels down too
            _http(port, "/api/shutdown", method="POST", timeout=5)
            proc.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            for sig in (signal.SIGTERM, signal.SIGKILL):
                if proc.poll() is None:
                    os.killpg(proc.pid, sig)
                    try:
                        proc.wait(10)
                    except subprocess.TimeoutExpired:
                        pass
        log.close()
        print((tmp_path / "server.log").read_text()[-3000:])  # shown by pytest on failure


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """Debian's Chromium through Playwright; fails (never skips) when it is missing."""
    if not os.path.exists(CHROMIUM):
        message = f"{CHROMIUM} is missing; install it with: {INSTALL}"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI installs it (.ci/run): never pass by accident there
        pytest.skip(message)  # a fresh laptop: say so, loudly, in the summary
    from playwright.sync_api import sync_playwright

    home = tmp_path / "chromium-home"
    home.mkdir()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
                              env={**os.environ, "HOME": str(home)})
        yield b
        b.close()


def _wait_kernel_idle(page: Any, port: int, timeout: float = 120) -> None:
    """A kernel with a websocket that is idle (the toolbar says "idle" before one exists)."""
    def ready() -> bool:
        try:
            kernels = json.loads(_http(port, "/api/kernels", timeout=10))
        except OSError:
            return False
        return any(k["connections"] >= 1 and k["execution_state"] == "idle" for k in kernels)

    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, "the kernel never became idle"
        time.sleep(0.1)
    page.wait_for_selector('.jp-Notebook-ExecutionIndicator[data-status="idle"]',
                           state="attached", timeout=timeout * 1000)


def _artifacts() -> Path:
    folder = Path(os.environ.get("GEMBATCH_ARTIFACTS") or REPO / "artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_progress_widget_renders_live_and_completes(lab_server: int, browser: Any) -> None:
    from playwright.sync_api import expect

    port = lab_server
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"http://127.0.0.1:{port}/lab/tree/{NOTEBOOK.name}?token={TOKEN}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
    _wait_kernel_idle(page, port)

    page.locator(".lm-MenuBar-item", has_text=re.compile(r"^Run$")).click()
    page.locator('.lm-Menu-item[data-command="runmenu:run-all"]').click()

    # the first progress widget is the one of `run` (df.gembatch.submit, then `run`)
    first = page.locator(".gembatch-progress").first
    first.wait_for(state="visible", timeout=120_000)
    bar = first.locator(".widget-hprogress .progress-bar")
    seen_classes: set[str] = set()
    widths: set[str] = set()
    deadline = time.monotonic() + 120
    while True:
        classes = first.get_attribute("class") or ""
        seen_classes.update(c for c in classes.split() if c.startswith("gembatch-state-"))
        widths.add(str(bar.evaluate("e => e.style.width")))
        if "gembatch-state-succeeded" in classes:
            break
        assert time.monotonic() < deadline, f"never succeeded; saw {seen_classes} {widths}"
        time.sleep(0.05)
    # it was seen live before it finished, and it ends full and green
    assert seen_classes - {"gembatch-state-succeeded"}, seen_classes
    assert len(widths) >= 2, f"the bar did not move: {widths}"
    expect(bar).to_have_attribute("style", re.compile(r"width: 100%"))
    expect(bar).to_have_class(re.compile(r"\bprogress-bar-success\b"))
    expect(first.locator(".gembatch-badge")).to_have_text("SUCCEEDED")
    expect(first.locator("table.gembatch-preview")).to_be_visible()
    first.scroll_into_view_if_needed()
    first.screenshot(path=str(_artifacts() / "jupyterlab_progress_widget.png"))

    # Run All reaches the last cell: every run done, every widget green, no error output
    final = page.locator(".jp-Cell").last.locator(".jp-OutputArea-output")
    expect(final.locator("table.dataframe")).to_be_visible(timeout=120_000)
    widgets = page.locator(".gembatch-progress")
    assert widgets.count() >= 6
    expect(page.locator(".gembatch-progress:not(.gembatch-state-succeeded)")).to_have_count(0)
    expect(page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']",
                        has_text="Traceback")).to_have_count(0)
    expect(page.locator(".gembatch-panel")).to_be_visible()
    page.screenshot(path=str(_artifacts() / "jupyterlab_quickstart.png"), full_page=True)
    assert not errors, errors
    page.close()
