"""Shared fixtures: every test gets its own registry folder and a fresh engine state.

``emu`` starts a real local emulator (``gemini_batch_magic.emulator.Emulator``) and points
the engine at it through ``GOOGLE_GEMINI_BASE_URL``; the SDK itself is never mocked.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

for _var in (
    "GEMINI_API_KEY",
    "GOOGLE_API_KEY",
    "GOOGLE_GEMINI_BASE_URL",
    "GEMBATCH_BACKEND",
    "GEMBATCH_MODEL",
):
    os.environ.pop(_var, None)


@pytest.fixture(autouse=True)
def gembatch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty registry folder, default settings, no cached client, for every test."""
    from gemini_batch_magic import _config
    from gemini_batch_magic._state import state

    home = tmp_path / "gembatch-home"
    monkeypatch.setenv("GEMBATCH_HOME", str(home))
    for var in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_GEMINI_BASE_URL", "GEMBATCH_BACKEND"):
        monkeypatch.delenv(var, raising=False)
    saved = _config.settings.as_dict()
    state.reset()
    _config.settings.home = home
    _config.settings.retry_initial_delay = 0.05
    _config.settings.poll_interval = 0.05
    _config.settings.max_poll_interval = 0.2
    yield home
    state.reset()
    for k, v in saved.items():
        setattr(_config.settings, k, Path(v) if k == "home" else v)


def start_emulator(monkeypatch: pytest.MonkeyPatch, **options: Any) -> Any:
    """Start an emulator with ``options`` and point the engine at it (returns it)."""
    from gemini_batch_magic import _backend
    from gemini_batch_magic.emulator import Emulator

    options.setdefault("pending_seconds", 0.0)
    options.setdefault("rate", 0.0)
    emu = Emulator(**options)
    emu.start()
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", emu.url)
    _backend.reset()
    return emu


@pytest.fixture
def emu(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A fast emulator (no pending time, answers at once) the engine talks to."""
    emulator = start_emulator(monkeypatch)
    yield emulator
    emulator.close()


@pytest.fixture
def emulator_factory(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``emulator_factory(rate=5, ...)`` starts an emulator with options; closed at the end."""
    started: list[Any] = []

    def make(**options: Any) -> Any:
        emulator = start_emulator(monkeypatch, **options)
        started.append(emulator)
        return emulator

    yield make
    for emulator in started:
        emulator.close()
