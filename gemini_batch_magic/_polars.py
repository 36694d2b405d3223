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

from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl

# the engine modules by full name (as in _accessor): the package's __init__ imports this one
import gemini_batch_magic._runs as _runs

from ._options import checked_keywords

__all__ = ["PolarsGemBatch", "PolarsLazyGemBatch"]


class _GemBatch:
    """Gemini Batch Mode for this frame: ``submit``, ``run``, ``estimate``, ``embed``."""

    def __init__(self, frame: pl.DataFrame | pl.LazyFrame) -> None:
        self._frame = frame

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
        """Submit every row as one request; returns at once (``run.wait().result()`` is a
        polars DataFrame in this frame's order). See :func:`gemini_batch_magic.submit`. A run
        estimated above ``confirm_above`` raises
        :class:`~gemini_batch_magic.ConfirmationRequired` unless ``confirm=True``."""
        return _runs.submit(
            self._frame, prompt, template=template, model=model, key=key,
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
            self._frame, prompt, template=template, model=model, key=key,
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
    ) -> pl.DataFrame:
        """Submit, wait and return the results as a polars DataFrame (for scripts).

        Takes :meth:`submit`'s keywords; ``timeout`` (seconds) bounds the wait (the run goes
        on after :class:`~gemini_batch_magic.WaitTimeout`); ``join=True`` puts this frame's
        columns first (a LazyFrame's as it was collected).
        """
        run = self.submit(
            prompt, template=template, model=model, key=key,
            system_instruction=system_instruction, generation_config=generation_config,
            safety_settings=safety_settings, response_schema=response_schema,
            max_cost=max_cost, force=force, name=name, on_empty=on_empty,
            background=background, keep_inputs=keep_inputs, confirm=confirm,
            media=media, mime_type=mime_type,
        )
        run.wait(timeout=timeout)
        # join=True: the frame submit() just collected and gave the run (never collected twice)
        out: pl.DataFrame = run.result(join=join, format="polars")
        return out

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
        (``run.vectors()`` once done; ``run.result()`` has an ``Array(Float32, dim)`` column
        ``embedding``). See :func:`gemini_batch_magic.embed`."""
        return _runs.embed(
            self._frame, column, model=model, output_dimensionality=output_dimensionality,
            task_type=task_type, title=title, key=key, max_cost=max_cost, force=force,
            name=name, on_empty=on_empty, background=background, dry_run=dry_run,
        )


@pl.api.register_dataframe_namespace("gembatch")
class PolarsGemBatch(_GemBatch):
    """Gemini Batch Mode for a polars DataFrame: ``submit``, ``run``, ``estimate``, ``embed``.

    >>> run = pdf.gembatch.submit(template="Summarise: {text}", key="id")  # returns at once
    >>> out = run.wait().result()        # a polars DataFrame: id, response, error, ...
    """


@pl.api.register_lazyframe_namespace("gembatch")
class PolarsLazyGemBatch(_GemBatch):
    """Gemini Batch Mode for a polars LazyFrame, collected (streaming engine) on submit."""
