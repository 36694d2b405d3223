"""The registry of benchmark figures and the types they share.

A figure is a function ``(ctx: Context) -> list[Measurement]`` registered with
:func:`figure`. Each measurement is one variant (our code, or a baseline) timed on the same data
in the same run; :mod:`benchmarks.report` turns them into the table and the JSON, with ratios
against every baseline of the same figure.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Name of the variant that measures gemini_batch_magic itself; every other variant of a
#: figure whose ``baseline`` flag is set is something to compare it with.
OURS = "gemini_batch_magic"


@dataclass(frozen=True)
class Context:
    """What every figure gets: the row count, a scratch folder and the repeat count."""

    rows: int
    workdir: Path
    repeat: int = 3
    quick: bool = False


@dataclass
class Measurement:
    """One timed variant of one figure.

    ``seconds`` is the best of ``runs`` (the least disturbed run on a shared machine);
    ``value``/``unit`` hold a non-time quantity for figures that measure something else
    (peak RSS, CPU share), in which case ``seconds`` may be None.
    """

    figure: int
    name: str
    variant: str
    rows: int
    seconds: float | None
    baseline: bool = False
    runs: list[float] = field(default_factory=list)
    value: float | None = None
    unit: str | None = None
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Figure:
    """A registered figure."""

    number: int
    name: str
    title: str
    func: Callable[[Context], list[Measurement]]


FIGURES: dict[str, Figure] = {}


def figure(
    number: int, name: str, title: str
) -> Callable[[Callable[[Context], list[Measurement]]], Callable[[Context], list[Measurement]]]:
    """Register a figure function under ``name`` (what ``--only`` selects)."""

    def register(
        func: Callable[[Context], list[Measurement]],
    ) -> Callable[[Context], list[Measurement]]:
        if name in FIGURES:
            raise ValueError(f"figure {name!r} is registered twice")
        FIGURES[name] = Figure(number, name, title, func)
        return func

    return register


def time_variants(
    variants: dict[str, Callable[[], Any]],
    repeat: int,
    *,
    setup: Callable[[str], None] | None = None,
    check: Callable[[str, Any], None] | None = None,
) -> dict[str, list[float]]:
    """Time each variant ``repeat`` times, interleaved (A B C A B C ...) so that load from
    other processes spreads evenly.

    ``setup(name)`` runs untimed before each run; ``check(name, result)`` runs untimed after
    the first run of each variant, then the result is dropped (results of 1M rows are large:
    keep a fingerprint, not the frame).
    """
    runs: dict[str, list[float]] = {name: [] for name in variants}
    for i in range(repeat):
        for name, func in variants.items():
            if setup is not None:
                setup(name)
            gc.collect()
            start = time.perf_counter()
            result = func()
            runs[name].append(time.perf_counter() - start)
            if check is not None and i == 0:
                check(name, result)
            del result
    return runs
