r"""IPython magics for Gemini Batch Mode: ``%%gembatch`` and ``%gembatch``.

Load them with ``%load_ext gemini_batch_magic``, or for every session add to an IPython
profile (``ipython profile create``, then ``~/.ipython/profile_default/ipython_config.py``)::

    c.InteractiveShellApp.extensions = ["gemini_batch_magic"]
    c.GemBatch.model = "gemini-2.5-flash"          # any option below, as in %config

Without ``GEMINI_API_KEY`` every batch runs on an embedded local emulator whose answers are
synthetic (each prompt echoed back); ``%gembatch backend`` says which backend is in use.

The ``%%gembatch`` cell magic
=============================

``%%gembatch [OUT] [options]`` sends one batch run and returns at once (the kernel stays
free); a live progress widget shows how far it got.

Where the prompts come from:

* no ``--df``: each non-empty line of the cell is one prompt; the results are keyed by the
  line number in the cell (1-based)::

      %%gembatch answers
      What is the capital of France?
      Name three prime numbers.

* ``--df VAR``: one request per row of the DataFrame ``VAR``; the cell body is a template
  over its columns (``Translate {text} into {lang}.``)::

      %%gembatch out --df reviews --wait
      Classify the sentiment of this review as positive or negative: {text}

* ``--df VAR --col COL``: the prompts are the column ``COL``; a non-empty cell body is the
  system instruction.

Options:

``OUT`` (positional)
    Variable that receives the :class:`~gemini_batch_magic.BatchRun` at once (with
    ``--wait``: the results DataFrame; with ``--dry-run``: the Estimate). Without ``OUT``,
    the run (or DataFrame) is the cell's value.
``-m/--model MODEL``
    Model id (default: ``%config GemBatch.model``).
``--df VAR`` / ``--col COL`` / ``--key COL``
    Input DataFrame, prompt column, and a unique column to key the rows by (default: the
    index). Results always come back aligned to the input's index, by key.
``--system TEXT``
    System instruction.
``--temperature T`` / ``--max-output-tokens N``
    Generation settings.
``--schema VAR``
    A pydantic model class or a JSON-schema dict in the namespace: answers are JSON of that
    shape; the results get a ``parsed`` column and one column per field.
``--wait``
    Block (with a progress display) and put the results DataFrame in ``OUT``.
``--dry-run``
    Show the estimate (requests, bytes, tokens, cost) and the first requests; send nothing.
``--max-cost USD``
    Refuse to submit when the estimated cost is higher.
``--force``
    Submit even if an identical run exists (by default the existing run is returned, so
    re-running a cell never pays twice).
``--name NAME``
    Display name of the run (and its batch jobs).
``--on-empty {raise,skip}``
    What to do with empty prompts (default ``raise``).

The line is expanded like any IPython line magic: ``$var`` and ``{var}`` take values from the
namespace (``--name run_$day``, ``-m {model}``); write ``$$`` for a literal ``$``. The cell
body is not expanded: its ``{column}`` placeholders belong to the template.

The ``%gembatch`` line magic
============================

==============================  ================================================================
``%gembatch list``              every run in the registry (a DataFrame, newest first)
``%gembatch status RUN``        refresh and show one run (live widget in notebooks)
``%gembatch wait RUN``          block until the run is done (``--timeout SECONDS``);
                                ``--all``: every live run, and every widget updated
``%gembatch results RUN``       the results DataFrame; ``-o VAR`` stores it instead,
                                ``--partial`` returns what has arrived so far
``%gembatch cancel RUN``        cancel the run's live batch jobs (answers so far are kept)
``%gembatch retry RUN``         submit the failed rows again as a child run
``%gembatch attach NAME``       a run by id, id prefix or ``batches/...`` name (``-o VAR``)
``%gembatch panel``             the jobs panel: every run with actions, plus a submit form
``%gembatch backend``           which backend is used and where the API key came from
``%gembatch help``              this manual
==============================  ================================================================

``RUN`` is a run id (or a unique prefix), a ``batches/...`` name, or a variable holding a
BatchRun (``%gembatch status $run`` or ``%gembatch status run``).

Configuration
=============

``%config GemBatch`` lists the options, ``%config GemBatch.poll_interval = 0.5`` sets one.
They are the package settings (:func:`gemini_batch_magic.configure`), so Python code and
magics always agree: ``model``, ``home``, ``backend``, ``poll_interval``,
``max_poll_interval``, ``inline_limit_bytes``, ``max_file_bytes``,
``max_requests_per_shard``, ``max_concurrent_shards``, ``retry_attempts``,
``retry_initial_delay``, ``emulator_pending_seconds``, ``emulator_rate``. A bad value is
refused with a message naming it (IPython's ``%config`` prints it as an error).

Errors
======

Mistakes (an unknown column, a bad option, an unknown run) raise :class:`UsageError`, so
IPython prints one line instead of a traceback, and a notebook run with nbclient/papermill
stops at that cell. The API key is never shown.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from pathlib import Path
from typing import Any, NoReturn

import pandas as pd
from IPython.core.error import UsageError
from IPython.core.magic import (
    Magics,
    cell_magic,
    line_magic,
    magics_class,
    needs_local_scope,
)
from traitlets import Bool, Float, HasTraits, Integer, TraitError, Unicode, validate

from . import _config, _monitor, _runs
from ._runs import BatchRun
from .exceptions import ConfigError, GemBatchError

__all__ = ["GemBatch", "GemBatchMagics", "load_ipython_extension", "unload_ipython_extension"]

SUBCOMMANDS = ("list", "status", "wait", "results", "cancel", "retry", "attach", "panel",
               "backend", "help")


class _Parser(argparse.ArgumentParser):
    """argparse that raises :class:`UsageError` instead of printing and exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} ({self.prog.split()[0]} --help lists the "
                         "options; %gembatch help shows the manual)")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        raise _HelpShown(message or "")


class _HelpShown(Exception):
    """``--help`` was printed; nothing else to do."""


def _cell_parser() -> _Parser:
    p = _Parser(prog="%%gembatch", add_help=True,
                description="Send the cell's prompts (or a DataFrame) as one batch run.")
    p.add_argument("out", nargs="?", help="variable that receives the run (or the results "
                                          "with --wait)")
    p.add_argument("-m", "--model")
    p.add_argument("--df", help="DataFrame variable; the cell is a {column} template")
    p.add_argument("--col", help="column holding the prompts (the cell is then the system "
                                 "instruction)")
    p.add_argument("--key", help="unique column identifying rows (default: the index)")
    p.add_argument("--system", help="system instruction")
    p.add_argument("--temperature", type=float)
    p.add_argument("--max-output-tokens", type=int, dest="max_output_tokens")
    p.add_argument("--schema", help="pydantic model class or JSON schema dict variable")
    p.add_argument("--wait", action="store_true", help="block and return the results")
    p.add_argument("--dry-run", action="store_true", dest="dry_run",
                   help="show the estimate and the first requests; send nothing")
    p.add_argument("--max-cost", type=float, dest="max_cost")
    p.add_argument("--force", action="store_true")
    p.add_argument("--name")
    p.add_argument("--on-empty", choices=["raise", "skip"], default="raise", dest="on_empty")
    return p


def _line_parser() -> _Parser:
    p = _Parser(prog="%gembatch", add_help=True,
                description="Manage batch runs: " + ", ".join(SUBCOMMANDS))
    sub = p.add_subparsers(dest="command", parser_class=_Parser)
    sub.add_parser("list", help="every run in the registry")
    for name, text in (("status", "refresh and show a run"),
                       ("cancel", "cancel a run"), ("retry", "retry the failed rows")):
        sub.add_parser(name, help=text).add_argument("run")
    wait = sub.add_parser("wait", help="block until a run (or --all) is done")
    wait.add_argument("run", nargs="?")
    wait.add_argument("--all", action="store_true", help="every live run of the registry")
    wait.add_argument("--timeout", type=float)
    res = sub.add_parser("results", help="the results DataFrame of a run")
    res.add_argument("run")
    res.add_argument("-o", "--out", help="store in this variable instead of returning")
    res.add_argument("--partial", action="store_true", help="what has arrived so far")
    res.add_argument("--join", action="store_true", help="input columns first")
    att = sub.add_parser("attach", help="a run by id, prefix or batches/... name")
    att.add_argument("run")
    att.add_argument("-o", "--out")
    sub.add_parser("panel", help="the jobs panel")
    sub.add_parser("backend", help="which backend is used")
    sub.add_parser("help", help="the manual")
    return p


def _split(line: str) -> list[str]:
    try:
        return shlex.split(line)
    except ValueError as exc:
        raise UsageError(f"cannot parse the options {line!r}: {exc}") from None


def _usage_error(exc: BaseException) -> UsageError:
    """A one-line :class:`UsageError` from an engine error, without any secret."""
    return UsageError(_monitor.redact(exc))


_FIELD_HELP = {
    "model": "Model used when a cell names none (-m/--model).",
    "home": "Folder of the run registry and cached results ($GEMBATCH_HOME).",
    "backend": "auto (the key decides; no key: local emulator), local, or gemini.",
    "poll_interval": "First delay (s) between status polls of a live run.",
    "max_poll_interval": "Longest delay (s) between polls once a run has been quiet.",
    "inline_limit_bytes": "Runs up to this many request bytes go inline (limit 20 MB).",
    "max_file_bytes": "Largest request file per shard (limit 2 GB).",
    "max_requests_per_shard": "Most requests per batch job; larger runs are split.",
    "max_concurrent_shards": "How many shards upload and submit at the same time.",
    "retry_attempts": "Attempts per API call on transient errors (1 = no retry).",
    "retry_initial_delay": "First retry delay (s), doubling each attempt.",
    "emulator_pending_seconds": "Seconds the embedded emulator keeps a new batch PENDING.",
    "emulator_rate": "Requests/s the embedded emulator answers (0 = all at once).",
}


def _settings_traits() -> type[HasTraits]:
    """A mixin with one ``config=True`` trait per field of :class:`Settings`, same defaults.

    Built from the dataclass, so every engine setting is a ``%config GemBatch`` option.
    """
    traits: dict[str, Any] = {}
    for f in dataclasses.fields(_config.Settings):
        default = getattr(_config.Settings(), f.name)
        kind = {bool: Bool, int: Integer, float: Float}.get(type(default), Unicode)
        value = str(default) if isinstance(default, Path) else default
        traits[f.name] = kind(default_value=value, config=True,
                              help=_FIELD_HELP.get(f.name, f.name.replace("_", " ")))
    return type("_SettingsTraits", (HasTraits,), traits)


_SETTINGS = tuple(f.name for f in dataclasses.fields(_config.Settings))


@magics_class
class GemBatchMagics(Magics, _settings_traits()):  # type: ignore[misc]
    """``%%gembatch`` and ``%gembatch``; its traits are the package settings.

    Registered under the config name ``GemBatch`` (see :class:`GemBatch`): setting a trait
    calls :func:`gemini_batch_magic.configure`, so there is one source of truth.
    """

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        self._pull_settings()  # class defaults -> the current settings, before config loads
        super().__init__(shell=shell, **kwargs)

    @property
    def _shell(self) -> Any:
        """The shell the magics are registered with."""
        if self.shell is None:
            raise UsageError("the gembatch magics are not registered with an IPython shell")
        return self.shell

    def __getattribute__(self, name: str) -> Any:
        # reads of a setting see the package settings (also after gbm.configure), except
        # while traitlets holds notifications to validate a new value
        if name in _SETTINGS and not super().__getattribute__("_cross_validation_lock"):
            value = getattr(_config.settings, name)
            return str(value) if isinstance(value, Path) else value
        return super().__getattribute__(name)

    def _pull_settings(self) -> None:
        """Make every trait show the current setting (also after ``gbm.configure``)."""
        current = _config.settings.as_dict()
        for name in self.trait_names(config=True):
            if name in current:
                self._trait_values[name] = current[name]

    @validate(*_SETTINGS)
    def _validate_setting(self, proposal: Any) -> Any:
        name = proposal["trait"].name
        value = proposal["value"]
        current = _config.settings.as_dict().get(name)
        if value != current:
            try:
                _config.configure(**{name: value})
            except ConfigError as exc:
                raise TraitError(f"GemBatch.{name} = {value!r} refused: {exc}") from None
        new = _config.settings.as_dict()[name]
        return new

    # -- %%gembatch -----------------------------------------------------------------------
    @needs_local_scope
    @cell_magic("gembatch")  # type: ignore[arg-type]  # IPython's stubs forbid local_ns
    def gembatch_cell(self, line: str, cell: str, local_ns: dict[str, Any] | None = None) -> Any:
        """Send a batch run: see ``%gembatch help``."""
        try:
            args = _cell_parser().parse_args(_split(line))
        except _HelpShown:
            print(_cell_parser().format_help())
            return None
        ns = {**self._shell.user_ns, **(local_ns or {})}
        self._pull_settings()
        try:
            df, prompt, options = _cell_request(args, cell, ns)
            if args.dry_run:
                return self._dry_run(df, prompt, options, args.out)
            run = _runs.submit(df, prompt, max_cost=args.max_cost, force=args.force,
                               name=args.name, **options)
            if not args.wait:
                return self._deliver(run, args.out, show=True)
            try:
                run.wait()
            except KeyboardInterrupt:
                if args.out:
                    self._shell.push({args.out: run})
                print(f"gembatch: stopped waiting; run {run.run_id} goes on. "
                      f"%gembatch wait {run.run_id} to wait again", file=sys.stderr)
                raise
            frame = run.result()
            if run.state != "SUCCEEDED" or run.stats.failed:
                print(f"gembatch: run {run.run_id} ended {run.state} with "
                      f"{run.stats.failed} failed row(s): see the error column; "
                      f"%gembatch retry {run.run_id}", file=sys.stderr)
            return self._deliver(frame, args.out, show=False)
        except GemBatchError as exc:
            raise _usage_error(exc) from None

    def _dry_run(self, df: pd.DataFrame, prompt: str | None, options: dict[str, Any],
                 out: str | None) -> None:
        from IPython.display import display

        est = _runs.estimate(df, prompt, **options)
        if out:
            self._shell.push({out: est})
        preview = pd.DataFrame([
            {"key": p["key"], "row": p["row"],
             "prompt": p["request"]["contents"][0]["parts"][0]["text"]}
            for p in est.preview
        ])
        print(f"dry run, nothing sent: {est}")
        display(est)
        if len(preview):
            display(preview.set_index("key"))
        return None

    def _deliver(self, value: Any, out: str | None, *, show: bool) -> Any:
        """bigquery-magics style: OUT receives the value (nothing returned), else return it."""
        if not out:
            return value
        self._shell.push({out: value})
        if show and isinstance(value, BatchRun):
            if _in_kernel():
                _show_widget(value)
            else:
                print(_monitor.redact(repr(value)))
        return None

    # -- %gembatch ------------------------------------------------------------------------
    @needs_local_scope
    @line_magic("gembatch")  # type: ignore[arg-type]
    def gembatch_line(self, line: str, local_ns: dict[str, Any] | None = None) -> Any:
        """Manage runs: ``%gembatch list|status|wait|results|cancel|retry|attach|panel|backend|help``."""
        words = _split(line)
        if not words:
            raise UsageError(f"%gembatch needs a subcommand: {', '.join(SUBCOMMANDS)} "
                             "(%%gembatch, as a cell magic, sends a run)")
        if words[0] not in SUBCOMMANDS and not words[0].startswith("-"):
            raise UsageError(f"unknown subcommand {words[0]!r}; valid subcommands: "
                             f"{', '.join(SUBCOMMANDS)}")
        try:
            args = _line_parser().parse_args(words)
        except _HelpShown:
            print(_line_parser().format_help())
            return None
        ns = {**self._shell.user_ns, **(local_ns or {})}
        self._pull_settings()
        try:
            return self._line_command(args, ns)
        except GemBatchError as exc:
            raise _usage_error(exc) from None

    def _line_command(self, args: argparse.Namespace, ns: dict[str, Any]) -> Any:
        cmd = args.command
        if cmd == "help":
            print(__doc__)
            return None
        if cmd == "list":
            return _runs.runs()
        if cmd == "panel":
            from .widgets import JobsPanel

            return JobsPanel(self._shell.user_ns)
        if cmd == "backend":
            from ._backend import backend_info

            info = backend_info()
            print(_monitor.redact(
                f"{info.describe()}\nkind: {info.kind}\nbase URL: {info.base_url or 'default'}"
                f"\nAPI key from: {('$' + info.key_source) if info.key_source else 'no key'}"
                f"\nsynthetic answers: {info.synthetic}"))
            return None
        if cmd == "wait" and args.all:
            return _wait_all(args.timeout)
        if not args.run:
            raise UsageError(f"%gembatch {cmd} needs a run id (%gembatch list shows them)")
        run = _find_run(args.run, ns)
        if cmd == "status":
            return run.refresh()
        if cmd == "attach":
            return self._deliver(run, args.out, show=True)
        if cmd == "wait":
            run.wait(timeout=args.timeout)  # shows its own progress (widget or text)
            return None
        if cmd == "cancel":
            run.cancel()
            print(f"cancel requested: {run!r}")
            return None
        if cmd == "retry":
            return run.retry_failed()
        if cmd == "results":
            frame = run.result(join=args.join, partial=args.partial)
            return self._deliver(frame, args.out, show=False)
        raise UsageError(f"unknown subcommand {cmd!r}; valid: {', '.join(SUBCOMMANDS)}")


class GemBatch(GemBatchMagics):
    """The magics under their config name: ``%config GemBatch.model = '...'``."""


def _in_kernel() -> bool:
    from ._progress import in_notebook

    return in_notebook()


def _show_widget(run: BatchRun) -> None:
    try:
        from .widgets import ProgressWidget
    except ImportError:
        print(repr(run))
        return
    ProgressWidget(run, display_now=True)


def _wait_all(timeout: float | None) -> pd.DataFrame:
    """Wait for every live run, let every widget draw its final state; the run list."""
    import time

    deadline = None if timeout is None else time.monotonic() + timeout
    for run in _runs.live_runs():
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        run.wait(timeout=left, progress=False)
    _monitor.wait_idle(None if deadline is None else max(0.0, deadline - time.monotonic()))
    return _runs.runs()


def _find_run(ref: str, ns: dict[str, Any]) -> BatchRun:
    value = ns.get(ref) if ref.isidentifier() else None
    if isinstance(value, BatchRun):
        return value
    if isinstance(value, str):
        ref = value
    return _runs.attach(ref)


def _lookup(ns: dict[str, Any], name: str, what: str) -> Any:
    if name not in ns:
        raise UsageError(f"{what} {name!r} is not defined in the notebook; define it first "
                         "or check the spelling")
    return ns[name]


def _cell_request(args: argparse.Namespace, cell: str, ns: dict[str, Any],
                  ) -> tuple[pd.DataFrame, str | None, dict[str, Any]]:
    """(DataFrame, prompt column, submit/estimate options) from the parsed cell magic."""
    body = cell.strip("\n")
    system = args.system
    template: str | None = None
    prompt: str | None = None
    if args.df is None:
        if args.col or args.key:
            raise UsageError("--col and --key need --df VAR (a DataFrame to read them from)")
        lines = [(i, text.strip()) for i, text in enumerate(cell.splitlines(), 1) if text.strip()]
        if not lines:
            raise UsageError("the cell is empty: write one prompt per line, or pass --df VAR "
                             "with a {column} template")
        df = pd.DataFrame({"prompt": [t for _, t in lines]},
                          index=pd.Index([i for i, _ in lines], name="line"))
        prompt = "prompt"
    else:
        df = _lookup(ns, args.df, "--df")
        if not isinstance(df, pd.DataFrame):
            raise UsageError(f"--df {args.df} is a {type(df).__name__}, not a pandas DataFrame")
        if args.col:
            prompt = args.col
            if body.strip():
                if system:
                    raise UsageError("with --col the cell body is the system instruction: "
                                     "give it there or with --system, not both")
                system = body.strip()
        else:
            if not body.strip():
                raise UsageError(f"the cell is empty: write a template over the columns of "
                                 f"{args.df} (e.g. 'Summarise: {{{df.columns[0]}}}' ) or pass "
                                 "--col COLUMN" if len(df.columns) else
                                 f"{args.df} has no columns")
            template = body
    generation: dict[str, Any] = {}
    if args.temperature is not None:
        generation["temperature"] = args.temperature
    if args.max_output_tokens is not None:
        generation["max_output_tokens"] = args.max_output_tokens
    options: dict[str, Any] = {
        "template": template, "model": args.model, "key": args.key,
        "system_instruction": system, "generation_config": generation or None,
        "response_schema": _lookup(ns, args.schema, "--schema") if args.schema else None,
        "on_empty": args.on_empty,
    }
    return df, prompt, options


def load_ipython_extension(ipython: Any) -> None:
    """Register ``%%gembatch`` / ``%gembatch`` and the ``GemBatch`` configurable."""
    for old in [c for c in ipython.configurables if isinstance(c, GemBatchMagics)]:
        ipython.configurables.remove(old)
    magics = GemBatch(shell=ipython)
    ipython.register_magics(magics)
    ipython.configurables.append(magics)


def unload_ipython_extension(ipython: Any) -> None:
    """Remove the magics and the configurable (``%unload_ext gemini_batch_magic``)."""
    for old in [c for c in ipython.configurables if isinstance(c, GemBatchMagics)]:
        ipython.configurables.remove(old)
    manager = ipython.magics_manager
    for kind in ("line", "cell"):
        manager.magics[kind].pop("gembatch", None)
    manager.registry.pop("GemBatch", None)
