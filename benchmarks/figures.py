"""Imports every figure module so that its ``@figure`` functions register themselves.

To add figure 3 (end to end through the SDK and the emulator), 4 (peak RSS vs responses-file
size) or 5 (monitoring CPU): write ``benchmarks/fig_<name>.py`` with one ``@figure(...)``
function returning :class:`~benchmarks.registry.Measurement` rows, and import it here.
"""

from benchmarks import (  # noqa: F401
    fig_build,
    fig_e2e,
    fig_files,
    fig_media,
    fig_memory,
    fig_monitor,
    fig_parse,
    fig_polars,
)
from benchmarks.registry import FIGURES

__all__ = ["FIGURES"]
