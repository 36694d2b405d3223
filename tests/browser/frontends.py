"""Helpers and fixtures of the browser tests (``conftest.py`` registers the fixtures).

Real front ends in a real browser: JupyterLab 4, Notebook 7 and marimo on loopback,
driven by Debian's Chromium through Playwright (no browser download).

Needs Chromium: ``apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y
chromium``. Without it these tests fail under CI (``CI=true``, where .ci/run installs it),
so CI cannot pass by accident; elsewhere they are skipped with the install command as the
reason. Screenshots land in ``artifacts/`` of the repository (or ``$GEMBATCH_ARTIFACTS``);
each test prints the folder.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
INSTALL = "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
TOKEN = "gembatch-e2e"
#: The width a data scientist's notebook window often has; every screenshot is taken at it.
WIDTH = 900
#: The header row of the jobs panel, in order.
PANEL_COLUMNS = ["Run", "Name", "State", "Progress", "OK", "Failed", "Rows", "Model",
                 "Created", "Cost"]
#: Elements that must never clip their text (``scrollWidth <= clientWidth``).
NO_CLIP = (".gembatch-panel button, .gembatch-panel .gembatch-table-box, "
           ".gembatch-panel th, .gembatch-panel td, "
           ".gembatch-panel .gembatch-state, .gembatch-panel, .gembatch-progress, "
           ".gembatch-progress button, .gembatch-progress th, .gembatch-progress td, "
           ".gembatch-progress .gembatch-state, .gembatch-progress .gembatch-counts, "
           ".gembatch-estimate")
_CLIPPED_JS = """els => els.filter(e => e.getClientRects().length && e.clientWidth > 0
                                 && e.scrollWidth > e.clientWidth)
    .map(e => `${e.tagName.toLowerCase()}.${[...e.classList].join('.')} "${
               (e.textContent || '').trim().slice(0, 40)}" ${e.scrollWidth} > ${e.clientWidth}`)"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(port: int, path: str, method: str = "GET", timeout: float = 10) -> bytes:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 headers={"Authorization": f"token {TOKEN}"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return bytes(resp.read())


def artifacts() -> Path:
    folder = Path(os.environ.get("GEMBATCH_ARTIFACTS") or REPO / "artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    print(f"screenshots in {folder}")
    return folder


def isolated_env(tmp_path: Path) -> dict[str, str]:
    """Jupyter's and IPython's folders and the run registry inside ``tmp_path``; the
    package importable from this checkout."""
    env = dict(os.environ)
    for var, sub in (("JUPYTER_RUNTIME_DIR", "runtime"), ("JUPYTER_DATA_DIR", "data"),
                     ("JUPYTER_CONFIG_DIR", "config"), ("IPYTHONDIR", "ipython")):
        env[var] = str(tmp_path / sub)
    env["GEMBATCH_HOME"] = str(tmp_path / "gembatch-home")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    for var in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_GEMINI_BASE_URL"):
        env.pop(var, None)
    return env


def _write_lab_settings(config_dir: Path) -> None:
    """No news toast over the screenshots; every cell kept in the DOM (no windowing)."""
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


def _opened(handles: list[Any], path: Path) -> Any:
    handle = open(path, "wb")
    handles.append(handle)
    return handle


def _stop(proc: subprocess.Popen[bytes]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is None:
            os.killpg(proc.pid, sig)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                pass


def _wait_ready(proc: subprocess.Popen[bytes], log: Path, ready: Callable[[], bool],
                timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, log.read_text()
        if ready():
            return
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)


@pytest.fixture
def jupyter(tmp_path: Path) -> Iterator[Callable[[str, Path], int]]:
    """``jupyter(app, root)`` starts ``jupyterlab`` or ``notebook`` on loopback serving
    ``root``, with isolated folders; returns its port. Stopped (kernels too) at the end."""
    started: list[tuple[int, subprocess.Popen[bytes], Path]] = []
    handles: list[Any] = []

    def start(app: str, root: Path) -> int:
        env = isolated_env(tmp_path)
        _write_lab_settings(tmp_path / "config")
        port = free_port()
        log = tmp_path / f"{app}.log"
        app_class = "LabApp" if app == "jupyterlab" else "JupyterNotebookApp"
        proc = subprocess.Popen(
            [sys.executable, "-m", app, "--no-browser", "--ip=127.0.0.1", f"--port={port}",
             "--port-retries=0", f"--ServerApp.root_dir={root}",
             f"--IdentityProvider.token={TOKEN}", "--allow-root",
             f"--{app_class}.news_url=None",
             f"--{app_class}.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
            stdout=_opened(handles, log), stderr=subprocess.STDOUT, env=env,
            start_new_session=True)
        started.append((port, proc, log))

        def ready() -> bool:
            try:
                http(port, "/api/status")
                return True
            except OSError:
                return False

        _wait_ready(proc, log, ready)
        return port

    yield start
    for port, proc, log in started:
        try:  # graceful: shuts the kernels down too
            http(port, "/api/shutdown", method="POST", timeout=5)
            proc.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            _stop(proc)
        print(log.read_text()[-3000:])  # shown by pytest on failure
    for handle in handles:
        handle.close()


@pytest.fixture
def marimo(tmp_path: Path) -> Iterator[Callable[[Path], int]]:
    """``marimo(path)`` serves the marimo notebook ``path`` as an app on loopback (its
    cells run when the page opens); returns its port."""
    started: list[tuple[subprocess.Popen[bytes], Path]] = []
    handles: list[Any] = []

    def start(path: Path) -> int:
        env = isolated_env(tmp_path)
        env["HOME"] = str(tmp_path / "marimo-home")  # marimo keeps its config under ~
        port = free_port()
        log = tmp_path / "marimo.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "marimo", "run", str(path), "--headless", "--host",
             "127.0.0.1", "--port", str(port), "--no-token"],
            stdout=_opened(handles, log), stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
            start_new_session=True)
        started.append((proc, log))

        def ready() -> bool:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5)
                return True
            except OSError:
                return False

        _wait_ready(proc, log, ready)
        return port

    yield start
    for proc, log in started:
        _stop(proc)
        print(log.read_text()[-3000:])
    for handle in handles:
        handle.close()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """Debian's Chromium through Playwright; fails (never skips) under CI when missing."""
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


def wait_kernel_idle(port: int, timeout: float = 120) -> None:
    """A kernel with a websocket that is idle (the toolbar says "idle" before one exists)."""
    def ready() -> bool:
        try:
            kernels = json.loads(http(port, "/api/kernels", timeout=10))
        except OSError:
            return False
        return any(k["connections"] >= 1 and k["execution_state"] == "idle" for k in kernels)

    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, "the kernel never became idle"
        time.sleep(0.1)


def clipped(page: Any) -> list[str]:
    """Every widget part that clips its text (Playwright's locators see into shadow roots)."""
    return list(page.locator(NO_CLIP).evaluate_all(_CLIPPED_JS))


def fill_width(widget: Any) -> str:
    """The progress bar's fill width (``""`` while indeterminate)."""
    return str(widget.locator(".gembatch-bar .gembatch-fill").evaluate("e => e.style.width"))


def follow_to_success(widget: Any, timeout: float = 120,
                      while_true: Callable[[], bool] = lambda: True) -> list[str]:
    """Sample the bar until the widget shows SUCCEEDED; the widths seen while
    ``while_true()`` held (e.g. no cell running)."""
    widths: list[str] = []
    deadline = time.monotonic() + timeout
    while "gembatch-state-succeeded" not in (widget.get_attribute("class") or ""):
        if while_true():
            width = fill_width(widget)
            if not widths or widths[-1] != width:
                widths.append(width)
        assert time.monotonic() < deadline, f"never succeeded; widths seen: {widths}"
        time.sleep(0.1)
    return widths


def check_panel(page: Any) -> None:
    """The panel's header cells, a row's details with its actions, nothing clipped."""
    from playwright.sync_api import expect

    panel = page.locator(".gembatch-panel").first
    heads = panel.locator("table.gembatch-runs thead th")
    expect(heads).to_have_count(len(PANEL_COLUMNS))
    texts = [t.strip() for t in heads.all_inner_texts()]
    assert [t.split(" ")[0] for t in texts] == PANEL_COLUMNS, texts
    assert texts[PANEL_COLUMNS.index("Created")] in ("Created ▼", "Created ▲")
    rows = panel.locator("tbody tr.gembatch-row")
    assert rows.count() >= 1
    rows.first.click()
    details = panel.locator(".gembatch-details-box")
    expect(details).to_be_visible()
    expect(details.locator("button.gembatch-refresh")).to_be_visible()
    expect(details.locator("button.gembatch-copy")).to_be_visible()
    # sortable by Created: one click turns the order round
    first_id = rows.first.locator("td.gembatch-col-id").inner_text()
    panel.locator("button.gembatch-sort").click()
    if rows.count() > 1:
        assert rows.first.locator("td.gembatch-col-id").inner_text() != first_id
    panel.locator("button.gembatch-sort").click()


# -- the notebook the Jupyter tests open --------------------------------------------------
SETUP = '''\
import os
import pandas as pd
from gemini_batch_magic.emulator import Emulator, EmulatorConfig

# counts that advance while a batch runs ("live"; the recorded service reports them at the end)
LIVE = {{"progress": "live"}} if "progress" in EmulatorConfig.__dataclass_fields__ else {{}}
emu = Emulator(pending_seconds=2.0, rate=5.0, **LIVE).start()
os.environ["GOOGLE_GEMINI_BASE_URL"] = emu.url
import gemini_batch_magic as gbm
%load_ext gemini_batch_magic
%config GemBatch.push_updates = {push}
%config GemBatch.poll_interval = 0.5
%config GemBatch.max_poll_interval = 1.0'''

CELLS = [
    SETUP,
    'reviews = pd.DataFrame(\n'
    '    {"text": [f"Review {i}: the battery lasts {i % 7 + 1} days and the screen is fine."\n'
    '              for i in range(40)]},\n'
    '    index=pd.Index([f"r{i}" for i in range(40)], name="review_id"))\n'
    'run = reviews.gembatch.submit("text", name="browser-live")\n'
    'run',
    'reviews.gembatch.estimate("text")',
    'gbm.panel()',
    '# the service reports no counts until the batch ends: the honest look\n'
    'emu.configure(rate=0.0001)\n'
    'quiet = reviews.head(8).gembatch.submit("text", name="no-counts-yet")\n'
    'quiet',
]


def demo_notebook(root: Path, push: bool) -> str:
    """Write the demo notebook into ``root``; its file name."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    cells = [new_code_cell(CELLS[0].format(push=push)), *map(new_code_cell, CELLS[1:])]
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    name = "widgets_demo.ipynb"
    nbformat.write(nb, root / name)
    return name


def no_cell_running(page: Any) -> bool:
    """Every code cell has run (no ``[*]`` prompt left): nothing executes any more."""
    prompts = page.locator(".jp-CodeCell .jp-InputArea-prompt").all_inner_texts()
    return bool(prompts) and all("*" not in p and p.strip() not in ("[ ]:", "") for p in prompts)
