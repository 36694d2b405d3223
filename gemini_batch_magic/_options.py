"""The request options of a run, declared once for the magic, the CLI and the accessor.

:class:`RunOptions` holds the keywords :func:`gemini_batch_magic.submit` and
:func:`gemini_batch_magic.estimate` take besides the DataFrame and the prompt column;
:func:`add_run_arguments` adds their command-line flags to an argparse parser (``%%gembatch``
and ``gembatch submit`` share them) and :meth:`RunOptions.from_args` reads them back,
folding ``--temperature`` and ``--max-output-tokens`` into ``generation_config``.

The submit -> wait -> result sequence that ``%%gembatch --wait``, ``df.gembatch.run()`` and
``gembatch submit --wait`` share is the engine's :meth:`BatchRun.run_to_completion`.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["ON_EMPTY", "RunOptions", "add_run_arguments"]

#: What ``on_empty`` accepts: raise on empty prompts, or leave those rows out.
ON_EMPTY = ("raise", "skip")

#: The options :func:`~gemini_batch_magic.estimate` does not take (they only matter to a send).
_SEND_ONLY = ("max_cost", "force", "name")


@dataclass(frozen=True)
class RunOptions:
    """Every request option of a run, with its default (the engine's defaults)."""

    #: A ``{column}`` template over the DataFrame's columns, instead of a prompt column.
    template: str | None = None
    #: Model id; None: the ``model`` setting (``%config GemBatch.model``).
    model: str | None = None
    #: A unique column identifying rows; None: the DataFrame's index.
    key: str | None = None
    #: System instruction sent with every request.
    system_instruction: str | None = None
    #: Generation settings, e.g. ``{"temperature": 0.2, "max_output_tokens": 100}``.
    generation_config: Mapping[str, Any] | None = None
    #: Safety settings, a list of ``{"category": ..., "threshold": ...}`` dicts.
    safety_settings: Sequence[Mapping[str, Any]] | None = None
    #: A pydantic model class or a JSON-schema dict: answers are JSON of that shape.
    response_schema: Any = None
    #: Refuse to submit when the estimated cost (USD) is higher; None: no limit.
    max_cost: float | None = None
    #: Submit even if an identical run exists (by default that run is returned).
    force: bool = False
    #: Display name of the run and its batch jobs; None: generated.
    name: str | None = None
    #: ``raise`` on empty prompts, or ``skip`` those rows.
    on_empty: str = "raise"
    #: Columns of files (paths, bytes, URLs) sent after each row's text, in this order.
    media: Sequence[str] | None = None
    #: A MIME type for every media file, overriding the one read from its content.
    mime_type: str | None = None

    def submit_kwargs(self) -> dict[str, Any]:
        """The keywords of :func:`~gemini_batch_magic.submit`."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def estimate_kwargs(self) -> dict[str, Any]:
        """The keywords of :func:`~gemini_batch_magic.estimate` (no send-only options)."""
        return {k: v for k, v in self.submit_kwargs().items() if k not in _SEND_ONLY}

    @classmethod
    def from_args(cls, args: argparse.Namespace, **overrides: Any) -> RunOptions:
        """The options parsed by :func:`add_run_arguments`; ``overrides`` win.

        The adapter passes what comes from elsewhere (the magic's cell body as
        ``template``, a ``--schema`` variable as ``response_schema``).
        """
        generation: dict[str, Any] = {}
        if args.temperature is not None:
            generation["temperature"] = args.temperature
        if args.max_output_tokens is not None:
            generation["max_output_tokens"] = args.max_output_tokens
        values: dict[str, Any] = {
            "model": args.model, "key": args.key, "system_instruction": args.system,
            "generation_config": generation or None, "on_empty": args.on_empty,
            "media": [c for v in args.media for c in v.split(",") if c] if args.media else None,
            "mime_type": args.mime_type,
        }
        for name in _SEND_ONLY:
            if hasattr(args, name):
                values[name] = getattr(args, name)
        values.update(overrides)
        return cls(**values)


_DEFAULTS = RunOptions()


def add_run_arguments(parser: argparse.ArgumentParser, *, send: bool = True) -> None:
    """Add the request flags; with ``send`` also ``--max-cost``, ``--force``, ``--name``."""
    parser.add_argument("-m", "--model", help="model id (default: the model setting, "
                                              "%%config GemBatch.model)")
    parser.add_argument("--key", help="unique column identifying rows (default: the index; "
                                      "for a file, the row number)")
    parser.add_argument("--system", help="system instruction for every request")
    parser.add_argument("--temperature", type=float, help="generation temperature")
    parser.add_argument("--max-output-tokens", type=int, dest="max_output_tokens",
                        help="most tokens per answer")
    parser.add_argument("--on-empty", choices=ON_EMPTY, default=_DEFAULTS.on_empty,
                        dest="on_empty", help="what to do with empty prompts "
                                              f"(default: {_DEFAULTS.on_empty})")
    parser.add_argument("--media", action="append", metavar="COL",
                        help="column of files (paths, https:// or gs:// URIs, files/... "
                             "names) sent after the text; repeat or comma-separate for "
                             "several, in order")
    parser.add_argument("--mime-type", dest="mime_type", metavar="TYPE",
                        help="MIME type of every media file (default: read from its content)")
    if not send:
        return
    parser.add_argument("--max-cost", type=float, dest="max_cost",
                        help="refuse to submit when the estimate exceeds this (USD)")
    parser.add_argument("--force", action="store_true",
                        help="submit even if an identical run exists")
    parser.add_argument("--name", help="display name of the run")
