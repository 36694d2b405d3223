"""Fixtures of the widget tests: no frontend, real emulator, one monitor per test."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest


@pytest.fixture(autouse=True)
def quiet_monitor() -> Iterator[None]:
    """Every test starts and ends with nothing watched and the monitor thread stopped."""
    from gemini_batch_magic import _monitor

    yield
    _monitor.reset()
    _eventually(lambda: not _monitor.monitor_running(), "the monitor thread did not stop")


@pytest.fixture
def eventually() -> Callable[..., None]:
    """``eventually(cond, what)``: wait until ``cond()`` is true, else fail with ``what``."""
    return _eventually


def _eventually(cond: Callable[[], object], what: str, timeout: float = 60.0) -> None:
    """Wait until ``cond()`` is true (a generous guard, not a speed requirement)."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)
