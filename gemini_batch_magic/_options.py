"""The request options of a run, declared once for the magic, the CLI and the accessor.

:class:`RunOptions` holds the keywords :func:`gemini_batch_magic.submit` and
:func:`gemini_batch_magic.estimate` take besides the DataFrame and the prompt column;
:func:`add_run_arguments` adds their command-line flags to an argparse parser (``%%gembatch``
and ``gembatch submit`` share them) and :meth:`RunOptions.from_args` reads them back,
folding ``--temperature`` and ``--max-output-tokens`` into ``generation_config``.

Both command lines refuse what a user did not type in full: :class:`StrictParser` takes no
abbreviations (``--temp`` is not ``--temperature``) and names the option meant. In Python,
:func:`checked_keywords` does the same for keywords: ``temprature=0.2`` raises a
:class:`TypeError` naming ``generation_config``'s field or the close keyword, before
anything is read or sent.

The submit -> wait -> result sequence that ``%%gembatch --wait``, ``df.gembatch.run()`` and
``gembatch submit --wait`` share is the engine's :meth:`BatchRun.run_to_completion`.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import functools
import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

__all__ = ["ON_EMPTY", "RunOptions", "StrictParser", "add_run_arguments", "checked_keywords",
           "close_names", "confirm_message"]

_P = ParamSpec("_P")
_R = TypeVar("_R")

#: What ``on_empty`` accepts: raise on empty prompts, or leave those rows out.
ON_EMPTY = ("raise", "skip")

#: The options :func:`~gemini_batch_magic.estimate` does not take (they only matter to a send).
_SEND_ONLY = ("max_cost", "force", "name", "keep_inputs", "confirm")
#: The options :func:`~gemini_batch_magic.submit_table` takes.
_TABLE_OPTIONS = ("template", "key", "model", "system_instruction", "generation_config",
                  "max_cost", "confirm", "force", "name")


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
    #: Keep the request files uploaded to the File API; by default each is deleted once its
    #: batch has ended (they count against the project's 20 GB of files).
    keep_inputs: bool = False
    #: Send a run estimated above ``confirm_above`` (``%config GemBatch.confirm_above``, USD)
    #: without asking; ``max_cost`` still refuses outright.
    confirm: bool = False
    #: Columns of files (paths, bytes, URLs) sent after each row's text, in this order.
    media: Sequence[str] | None = None
    #: A MIME type for every media file, overriding the one read from its content.
    mime_type: str | None = None

    def submit_kwargs(self) -> dict[str, Any]:
        """The keywords of :func:`~gemini_batch_magic.submit`."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def table_kwargs(self) -> dict[str, Any]:
        """The keywords of :func:`~gemini_batch_magic.submit_table` (request options of a
        DataFrame only, such as ``safety_settings`` or ``on_empty``, do not apply)."""
        return {n: getattr(self, n) for n in _TABLE_OPTIONS}

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
    parser.add_argument("--backend", choices=("auto", "local", "gemini", "vertex"),
                        help="switch to this backend first (for the session, as "
                             "%%config GemBatch.backend; vertex also needs project, location "
                             "and staging)")
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
    parser.add_argument("--keep-inputs", action="store_true", dest="keep_inputs",
                        help="keep the request files uploaded to the File API (default: "
                             "deleted once their batch has ended)")
    parser.add_argument("--yes", action="store_true", dest="confirm",
                        help="send even if the estimate is above confirm_above (default "
                             "$5; %%config GemBatch.confirm_above); --max-cost still refuses")


def confirm_message(estimate: Any, limit: float | None, how: str) -> str:
    """Why a run was not sent (its estimate is above ``confirm_above``) and ``how`` to send
    it, read from the :class:`~gemini_batch_magic.exceptions.ConfirmationRequired` fields."""
    cost = estimate.cost_usd
    shown = f"${cost:,.2f}" if cost >= 0.01 or cost == 0 else f"${cost:.4f}"
    above = f", above confirm_above=${limit:,.2f}" if limit is not None else ""
    return (f"this run is estimated at {shown} ({estimate.requests:,} requests to "
            f"{estimate.model}){above}, so nothing was sent: {how}")


# --------------------------------------------------------------------------- exact names
def close_names(name: str, names: Iterable[str]) -> list[str]:
    """The names ``name`` was probably meant to be, best first: those it abbreviates or is
    part of (``--temp``, ``schema``), then spelling neighbours (``temprature``)."""
    by_bare = {n.lstrip("-"): n for n in names}  # "--" would make every option look alike
    bare = name.lstrip("-")
    found = [n for b, n in by_bare.items() if len(bare) >= 3 and bare in b]
    found += [by_bare[b] for b in difflib.get_close_matches(bare, by_bare, n=3, cutoff=0.7)]
    return list(dict.fromkeys(found))[:3]


class StrictParser(argparse.ArgumentParser):
    """argparse that takes no abbreviations (``--temp`` is an error, not ``--temperature``)
    and, for an unknown option, names the ones meant; subcommand parsers are of its class.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def parse_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                   namespace: argparse.Namespace | None = None) -> argparse.Namespace:
        ns, extras = self.parse_known_args(args, namespace)
        if extras:
            self.error(self._unrecognized(extras, ns))
        return ns

    def _options(self, ns: argparse.Namespace) -> list[str]:
        """Every option string of this parser and of the subcommand ``ns`` chose."""
        found: list[str] = []
        for action in self._actions:
            found += [o for o in action.option_strings if o.startswith("--")]
            if isinstance(action, argparse._SubParsersAction):
                chosen = action.choices.get(getattr(ns, action.dest, None) or "")
                if isinstance(chosen, StrictParser):
                    found += chosen._options(ns)
        return found

    def _unrecognized(self, extras: list[str], ns: argparse.Namespace) -> str:
        message = f"unrecognized arguments: {' '.join(extras)}"
        options = self._options(ns)
        hints = []
        for word in extras:
            if word.startswith("--"):
                close = close_names(word.split("=", 1)[0], options)
                if close:
                    hints.append(f"{word.split('=', 1)[0]} is not an option, did you mean "
                                 f"{' or '.join(close)}?")
        if hints:
            message += f"; {'; '.join(hints)} (options are never abbreviated)"
        return message


# --------------------------------------------------------------------------- keywords
def checked_keywords(where: str) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    """A decorator: an unknown keyword raises a :class:`TypeError` before the function runs,
    naming the keyword meant (``where`` is how users call it, e.g. ``df.gembatch.submit``).

    A generation setting given as a keyword (``temperature=0.2``) is answered with
    ``generation_config={'temperature': 0.2}``; any other name with its close keywords.
    ``inspect.signature``, ``help`` and ``fn?`` still show the function's own signature
    (``functools.wraps`` sets ``__wrapped__``).
    """

    def decorate(fn: Callable[_P, _R]) -> Callable[_P, _R]:
        params = inspect.signature(fn).parameters
        if any(p.kind is p.VAR_KEYWORD for p in params.values()):
            raise TypeError(f"{fn.__qualname__} takes **kwargs: no keyword is unknown to it")
        allowed = [n for n, p in params.items() if n != "self"
                   and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
        known = frozenset(allowed)

        @functools.wraps(fn)
        def checked(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            if not known.issuperset(kwargs):
                raise TypeError(_unknown_keywords(where, kwargs, allowed))
            return fn(*args, **kwargs)

        return checked

    return decorate


def _unknown_keywords(where: str, given: Mapping[str, Any], allowed: list[str]) -> str:
    generation = _generation_fields()
    parts = []
    if "generation_config" not in allowed:
        generation = ()
    for name in sorted(set(given) - set(allowed)):
        # the keywords first, so "schema" is response_schema, not a generation field
        close = close_names(name, [*allowed, *generation])
        field = name if name in generation else next(
            (c for c in close[:1] if c not in allowed), None)
        close = [c for c in close if c in allowed]
        if field is not None:
            parts.append(f"{name!r} is not a keyword of {where}(): {field} is a generation "
                         f"setting, pass generation_config={{{field!r}: {given[name]!r}}}")
        elif close:
            parts.append(f"{name!r} is not a keyword of {where}(): did you mean "
                         f"{' or '.join(close)}?")
        else:
            parts.append(f"{name!r} is not a keyword of {where}()")
    return "; ".join(parts) + f" (its keywords: {', '.join(allowed)})"


@functools.cache
def _generation_fields() -> tuple[str, ...]:
    """The fields of ``generation_config`` (the SDK's ``GenerationConfig``, snake_case)."""
    from google.genai import types

    return tuple(types.GenerationConfig.model_fields)
