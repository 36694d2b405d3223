"""gemini_batch_magic: Gemini Batch Mode (half price, asynchronous) as a notebook tool.

>>> import gemini_batch_magic as gbm      # also registers the df.gembatch accessor
>>> run = df.gembatch.submit("prompt")     # returns at once; the kernel stays free
>>> run.wait(); out = run.result()         # a DataFrame aligned to df's index
>>> gbm.runs(); gbm.attach(run.run_id)     # any kernel, any day
>>> df.gembatch.submit("q", media="photo")  # files (paths, bytes, URLs) after the text
>>> emb = df.gembatch.embed("text"); emb.wait().vectors()   # float32 (n_rows, dim)
>>> run = pdf.gembatch.submit("text", key="id")   # polars (pl.DataFrame / pl.LazyFrame)
>>> run.wait().result()                    # a polars DataFrame, in input order, key first
>>> gbm.submit(pa_table, "text").wait().result()   # a pyarrow Table in, a Table out
>>> run.result(format="pandas")            # or "polars", "arrow": another kind on request
>>> big = gbm.submit_file("t.parquet", template="Classify: {body}", key="id")
>>> big.wait(); big.write_results("answers.parquet")  # one shard at a time

In IPython: ``%load_ext gemini_batch_magic`` for ``%%gembatch`` and ``%gembatch``.
Without an API key, everything runs on an embedded local emulator (synthetic answers).
"""

from __future__ import annotations

import importlib.util
from typing import Any

from . import _accessor as _accessor  # registers df.gembatch
from ._backend import BackendInfo, backend_info
from ._config import Settings, configure, settings
from ._files import estimate_file as _estimate_file
from ._options import checked_keywords as _checked_keywords
from ._runs import BatchRun, Estimate, RunStats, attach, embed, runs
from ._runs import estimate as _estimate
from ._runs import submit as _submit
from ._runs import submit_file as _submit_file
from ._tables import TableRun, submit_table
from .exceptions import (
    BackendError,
    ColumnError,
    ConfigError,
    ConfirmationRequired,
    CostLimitError,
    DuplicateKeyError,
    EmptyPromptError,
    GemBatchError,
    InputError,
    PromptTypeError,
    RequestTooLargeError,
    RunNotDoneError,
    RunNotFoundError,
    TemplateError,
    WaitTimeout,
)

__version__ = "0.1.0"


def _polars_installed() -> bool:
    """Whether polars can be imported (found, not imported: no cost without it)."""
    try:
        return importlib.util.find_spec("polars") is not None
    except (ImportError, ValueError):  # a broken or stubbed-out polars
        return False


if _polars_installed():
    from . import _polars as _polars  # registers pl.DataFrame.gembatch, pl.LazyFrame.gembatch

# a misspelt keyword (temprature=0.2) is a TypeError naming the one meant, never ignored
submit = _checked_keywords("gemini_batch_magic.submit")(_submit)
estimate = _checked_keywords("gemini_batch_magic.estimate")(_estimate)
submit_file = _checked_keywords("gemini_batch_magic.submit_file")(_submit_file)
estimate_file = _checked_keywords("gemini_batch_magic.estimate_file")(_estimate_file)

__all__ = [
    "BackendError",
    "BackendInfo",
    "BatchRun",
    "ColumnError",
    "ConfigError",
    "ConfirmationRequired",
    "CostLimitError",
    "DuplicateKeyError",
    "EmptyPromptError",
    "Estimate",
    "GemBatchError",
    "InputError",
    "PromptTypeError",
    "RequestTooLargeError",
    "RunNotDoneError",
    "RunNotFoundError",
    "RunStats",
    "Settings",
    "TableRun",
    "TemplateError",
    "WaitTimeout",
    "attach",
    "backend_info",
    "configure",
    "embed",
    "estimate",
    "estimate_file",
    "load_ipython_extension",
    "panel",
    "runs",
    "settings",
    "submit",
    "submit_file",
    "submit_table",
    "unload_ipython_extension",
]


def panel() -> Any:
    """The jobs panel widget: every run in the registry, with actions and a submit form."""
    from ._panel import JobsPanel

    return JobsPanel()


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext gemini_batch_magic``: registers ``%%gembatch`` and ``%gembatch``."""
    from ._magics import load_ipython_extension as _load

    _load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext gemini_batch_magic``."""
    from ._magics import unload_ipython_extension as _unload

    _unload(ipython)
