"""The ``pl.DataFrame.gembatch`` and ``pl.LazyFrame.gembatch`` polars namespaces: adapters.

Imported (and so registered) by ``import gemini_batch_magic`` when polars is installed. They
mirror the pandas accessor (:mod:`._accessor`): the same methods (``submit``, ``estimate``,
``run``, ``embed``), the same keywords written out (``pdf.gembatch.submit?`` lists them),
the same typo protection (a misspelt keyword is a :class:`TypeError` naming the one meant,
before anything is read or sent). They keep no state and never change the frame.

Polars has no index: rows are keyed by their position, or by the column named with
``key=``. Results are polars DataFrames in the input's order (with ``key=``, the key is
their first column); see :mod:`._frames`. A LazyFrame is collected with the streaming
engine when it is submitted; its results follow the collected frame's order.
"""

from __future__ import annotations

import polars as pl

# the adapter by full name (as _accessor imports the engine): the package's __init__ imports
# this module
from gemini_batch_magic._accessor import FrameMethods

__all__ = ["PolarsGemBatch", "PolarsLazyGemBatch"]


class _GemBatch(FrameMethods):
    """Gemini Batch Mode for this frame: ``submit``, ``run``, ``estimate``, ``embed`` --
    the pandas accessor's methods and keywords; ``run()`` returns a polars DataFrame."""

    def __init__(self, frame: pl.DataFrame | pl.LazyFrame) -> None:
        self._df = frame


@pl.api.register_dataframe_namespace("gembatch")
class PolarsGemBatch(_GemBatch):
    """Gemini Batch Mode for a polars DataFrame: ``submit``, ``run``, ``estimate``, ``embed``.

    >>> run = pdf.gembatch.submit(template="Summarise: {text}", key="id")  # returns at once
    >>> out = run.wait().result()        # a polars DataFrame: id, response, error, ...
    """


@pl.api.register_lazyframe_namespace("gembatch")
class PolarsLazyGemBatch(_GemBatch):
    """Gemini Batch Mode for a polars LazyFrame, collected (streaming engine) on submit."""
