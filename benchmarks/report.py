"""The shared table printer and JSON writer of the benchmark results."""

from __future__ import annotations

import json
import os
import platform
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks.registry import OURS, Measurement


def ratios(measurements: list[Measurement]) -> dict[tuple[int, str], dict[str, float]]:
    """For each (figure, our variant): baseline seconds / our seconds, per baseline name.

    A ratio of 3.0 means our code took a third of the baseline's time.
    """
    out: dict[tuple[int, str], dict[str, float]] = {}
    for m in measurements:
        if m.baseline or m.seconds is None:
            continue
        out[(m.figure, m.variant)] = {
            b.variant: b.seconds / m.seconds
            for b in measurements
            if b.baseline and b.figure == m.figure and b.seconds is not None and m.seconds > 0
        }
    return out


def format_table(measurements: list[Measurement]) -> str:
    """A plain-text table: figure, variant, N, seconds, ratio against each baseline."""
    rat = ratios(measurements)
    baselines = sorted({m.variant for m in measurements if m.baseline})
    header = ["fig", "name", "variant", "N", "seconds", *[f"vs {b}" for b in baselines]]
    rows: list[list[str]] = [header]
    for m in measurements:
        secs = "" if m.seconds is None else f"{m.seconds:.3f}"
        if m.value is not None:
            secs = f"{m.value:.1f} {m.unit or ''}".strip()
        cells = [str(m.figure), m.name, m.variant, f"{m.rows:,}", secs]
        for b in baselines:
            r = rat.get((m.figure, m.variant), {}).get(b)
            cells.append("" if r is None else f"{r:.2f}x")
        rows.append(cells)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import numpy
    import orjson
    import pandas
    import pyarrow

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average_at_end": load,
        "pandas": pandas.__version__,
        "numpy": numpy.__version__,
        "orjson": orjson.__version__,
        "pyarrow": pyarrow.__version__,
    }


def write_json(path: Path, measurements: list[Measurement], argv: list[str]) -> None:
    """Write every measurement, the ratios and the machine description as JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "argv": argv,
        "machine": machine(),
        "ours": OURS,
        "measurements": [asdict(m) for m in measurements],
        "ratios": [
            {"figure": fig, "variant": variant, "speedup_vs": r}
            for (fig, variant), r in ratios(measurements).items()
        ],
        "table": format_table(measurements).splitlines(),
    }
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
