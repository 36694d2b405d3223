"""The ``df.gembatch`` pandas accessor: it only adapts, the engine does the work.

It keeps no state (pandas builds a new accessor on every attribute access), never changes
the DataFrame, and returns new objects. Its keywords are those of
:func:`gemini_batch_magic.submit` and :func:`gemini_batch_magic.estimate`, written out so that
``df.gembatch.submit?`` and tab completion show them; their defaults and meaning are
documented once, on :class:`~gemini_batch_magic._options.RunOptions`. A misspelt keyword
(``temprature=0.2``) raises a :class:`TypeError` naming the one meant (here:
``generation_config={'temperature': 0.2}``), before anything is read or sent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

# the engine modules by full name: "from . import" would read as importing the package,
# whose __init__ imports this module
import gemini_batch_magic._runs as _runs

from ._options import checked_keywords

__all__ = ["FrameMethods", "GemBatchAccessor"]


class FrameMethods:
    """``submit``, ``run``, ``estimate`` and ``embed`` of one frame (``self._df``): pandas
    here, polars' DataFrame and LazyFrame in :mod:`._polars`. The engine takes every kind
    (:mod:`._frames`), and a run's ``result()`` gives the input's kind back."""

    _df: Any

    @checked_keywords("df.gembatch.submit")
    def submit(
        self,
        prompt: str | None = None,
        *,
        template: str | None = None,
        model: str | None = None,
        key: str | None = None,
        system_instruction: str | None = None,
        generation_config: Mapping[str, Any] | None = None,
        safety_settings: Sequence[Mapping[str, Any]] | None = None,
        response_schema: Any = None,
        max_cost: float | None = None,
        force: bool = False,
        name: str | None = None,
        on_empty: str = "raise",
        background: bool | None = None,
        keep_inputs: bool = False,
        confirm: bool = False,
        media: str | Sequence[str] | None = None,
        mime_type: str | Mapping[str, str] | None = None,
    ) -> _runs.BatchRun:
        """Submit every row as one request; returns at once. See
        :func:`gemini_batch_magic.submit`. A run estimated above ``confirm_above``
        (``%config GemBatch.confirm_above``, USD) raises
        :class:`~gemini_batch_magic.ConfirmationRequired` unless ``confirm=True``."""
        return _runs.submit(
            self._df, prompt, template=template, model=model, key=key,
            system_instruction=system_instruction, generation_config=generation_config,
            safety_settings=safety_settings, response_schema=response_schema,
            max_cost=max_cost, force=force, name=name, on_empty=on_empty,
            background=background, keep_inputs=keep_inputs, confirm=confirm,
            media=media, mime_type=mime_type,
        )

    @checked_keywords("df.gembatch.estimate")
    def estimate(
        self,
        prompt: str | None = None,
        *,
        template: str | None = None,
        model: str | None = None,
        key: str | None = None,
        system_instruction: str | None = None,
        generation_config: Mapping[str, Any] | None = None,
        safety_settings: Sequence[Mapping[str, Any]] | None = None,
        response_schema: Any = None,
        on_empty: str = "raise",
        media: str | Sequence[str] | None = None,
        mime_type: str | Mapping[str, str] | None = None,
    ) -> _runs.Estimate:
        """What :meth:`submit` would send and cost; sends nothing."""
        return _runs.estimate(
            self._df, prompt, template=template, model=model, key=key,
            system_instruction=system_instruction, generation_config=generation_config,
            safety_settings=safety_settings, response_schema=response_schema,
            on_empty=on_empty, media=media, mime_type=mime_type,
        )

    @checked_keywords("df.gembatch.run")
    def run(
        self,
        prompt: str | None = None,
        *,
        template: str | None = None,
        model: str | None = None,
        key: str | None = None,
        system_instruction: str | None = None,
        generation_config: Mapping[str, Any] | None = None,
        safety_settings: Sequence[Mapping[str, Any]] | None = None,
        response_schema: Any = None,
        max_cost: float | None = None,
        force: bool = False,
        name: str | None = None,
        on_empty: str = "raise",
        background: bool | None = None,
        keep_inputs: bool = False,
        confirm: bool = False,
        media: str | Sequence[str] | None = None,
        mime_type: str | Mapping[str, str] | None = None,
        timeout: float | None = None,
        join: bool = False,
    ) -> Any:
        """Submit, wait and return the results aligned to this frame, as a frame of its
        kind (for scripts).

        Takes :meth:`submit`'s keywords; ``timeout`` (seconds) bounds the wait (the run goes
        on after :class:`~gemini_batch_magic.WaitTimeout`); ``join=True`` puts this
        frame's columns first (a LazyFrame's as it was collected: never collected twice).
        """
        run = self.submit(
            prompt, template=template, model=model, key=key,
            system_instruction=system_instruction, generation_config=generation_config,
            safety_settings=safety_settings, response_schema=response_schema,
            max_cost=max_cost, force=force, name=name, on_empty=on_empty,
            background=background, keep_inputs=keep_inputs, confirm=confirm,
            media=media, mime_type=mime_type,
        )
        return run.wait(timeout=timeout).result(join=join)

    # -- embeddings (issue 12) --------------------------------------------------------------
    @checked_keywords("df.gembatch.embed")
    def embed(
        self,
        column: str,
        *,
        model: str | None = None,
        output_dimensionality: int | None = None,
        task_type: str | None = None,
        title: str | None = None,
        key: str | None = None,
        max_cost: float | None = None,
        force: bool = False,
        name: str | None = None,
        on_empty: str = "raise",
        background: bool | None = None,
        dry_run: bool = False,
    ) -> Any:
        """Embed the text of ``column``, one request per row; returns a run at once
        (``run.vectors()`` once done). See :func:`gemini_batch_magic.embed`."""
        return _runs.embed(
            self._df, column, model=model, output_dimensionality=output_dimensionality,
            task_type=task_type, title=title, key=key, max_cost=max_cost, force=force,
            name=name, on_empty=on_empty, background=background, dry_run=dry_run,
        )


@pd.api.extensions.register_dataframe_accessor("gembatch")
class GemBatchAccessor(FrameMethods):
    """Gemini Batch Mode for this DataFrame: ``submit``, ``run``, ``estimate``, ``embed``.

    >>> run = df.gembatch.submit("prompt")                 # returns at once
    >>> out = df.gembatch.run(template="Summarise: {text}")  # submit, wait, result
    """

    def __init__(self, pandas_obj: pd.DataFrame) -> None:
        if not isinstance(pandas_obj, pd.DataFrame):  # pragma: no cover - pandas checks
            raise AttributeError("df.gembatch works on DataFrames only")
        self._df = pandas_obj
