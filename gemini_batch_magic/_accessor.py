"""The ``df.gembatch`` pandas accessor: it only adapts, the engine does the work.

It keeps no state (pandas builds a new accessor on every attribute access), never changes
the DataFrame, and returns new objects.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from . import _runs

__all__ = ["GemBatchAccessor"]


@pd.api.extensions.register_dataframe_accessor("gembatch")
class GemBatchAccessor:
    """Gemini Batch Mode for this DataFrame: ``submit``, ``run``, ``estimate``.

    >>> run = df.gembatch.submit("prompt")                 # returns at once
    >>> out = df.gembatch.run(template="Summarise: {text}")  # submit, wait, result
    """

    def __init__(self, pandas_obj: pd.DataFrame) -> None:
        if not isinstance(pandas_obj, pd.DataFrame):  # pragma: no cover - pandas checks
            raise AttributeError("df.gembatch works on DataFrames only")
        self._df = pandas_obj

    def submit(self, prompt: str | None = None, **options: Any) -> _runs.BatchRun:
        """Submit every row as one request; see :func:`gemini_batch_magic.submit`."""
        return _runs.submit(self._df, prompt, **options)

    def estimate(self, prompt: str | None = None, **options: Any) -> _runs.Estimate:
        """What :meth:`submit` would send and cost; sends nothing."""
        return _runs.estimate(self._df, prompt, **options)

    def run(
        self, prompt: str | None = None, *, timeout: float | None = None,
        join: bool = False, **options: Any,
    ) -> pd.DataFrame:
        """Submit, wait and return the results aligned to this DataFrame (for scripts)."""
        run = _runs.submit(self._df, prompt, **options)
        run.wait(timeout=timeout)
        return run.result(join=self._df if join else False)
