"""Helpers shared by the reliability tests (no fixtures here: see tests/conftest.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

import gemini_batch_magic as gbm


def prompts(n: int, prefix: str = "prompt") -> list[str]:
    """Distinct, non-ASCII prompts (the emulator echoes each one back)."""
    return [f"{prefix} {i}: ünïcödé ✓ {'x' * (i % 7)}" for i in range(n)]


def assert_echoed(out: pd.DataFrame, df: pd.DataFrame, column: str) -> None:
    """Every row answered, aligned to its own input row (the emulator echoes prompts)."""
    assert out.index.equals(df.index)
    assert out["error"].isna().all(), out.loc[out["error"].notna(), "error"].head().tolist()
    assert out["response"].tolist() == df[column].tolist()


def shards_per_batch(emu: Any) -> dict[str, int]:
    """How many emulator batches carry each display name (1 everywhere = no duplicates)."""
    counts: dict[str, int] = {}
    for b in emu.batches():
        name = str(b.get("displayName"))
        counts[name] = counts.get(name, 0) + 1
    return counts


def nothing_happened(emu: Any, home: Path) -> None:
    """No API call, no run in the registry, no run folder on disk."""
    assert list(emu.calls) == []
    assert gbm.runs().empty
    runs_dir = home / "runs"
    assert not runs_dir.exists() or not any(runs_dir.rglob("*")), list(runs_dir.rglob("*"))


def eventually(check: Callable[[], Any], timeout: float = 30.0, what: str = "") -> Any:
    """Poll ``check`` until it returns something truthy (a bound, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what or check}")
        time.sleep(0.05)


def text_response(text: str, finish: str = "STOP") -> dict[str, Any]:
    """A GenerateContentResponse dict with one candidate."""
    return {
        "candidates": [
            {"content": {"role": "model", "parts": [{"text": text}]},
             "finishReason": finish, "index": 0}
        ],
        "usageMetadata": {"promptTokenCount": 2, "candidatesTokenCount": 2, "totalTokenCount": 4},
    }


def last_text(request: dict[str, Any]) -> str:
    """The prompt text of a GenerateContentRequest as the emulator hands it to a responder."""
    return str(request["contents"][-1]["parts"][0]["text"])
