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
``--media COL`` / ``--mime-type TYPE``
    Columns of files (local paths, bytes, ``https://`` or ``gs://`` URIs, ``files/...``
    names) sent after each row's text, in order (repeat or comma-separate); the type is
    read from each file's content unless ``--mime-type`` says it.
``--embed`` (with ``--df VAR --col COL``, or ``--df VAR`` and the column's name as the body)
    Embed the column instead (default model ``gemini-embedding-001``);
    ``--task-type``, ``--output-dimensionality N`` and ``--title COL`` are passed through.
    The run's ``result()`` has an ``embedding`` column; ``run.vectors()`` the matrix.

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

``%config GemBatch`` lists the options with their help, ``%config GemBatch.poll_interval =
0.5`` sets one. ``GemBatch`` is the package settings object itself
(``gemini_batch_magic.settings``, also changed by :func:`gemini_batch_magic.configure`), so
Python code and magics always agree: ``model``, ``home``, ``backend``, ``poll_interval``,
``max_poll_interval``, ``inline_limit_bytes``, ``max_file_bytes``,
``max_requests_per_shard``, ``max_concurrent_shards``, ``retry_attempts``,
``retry_initial_delay``, ``emulator_pending_seconds``, ``emulator_rate``. A bad value is
refused with a ``TraitError`` naming it and what is valid (IPython's ``%config`` prints it as
an error).

Errors
======

Options are never abbreviated (``--temp`` is an error, not ``--temperature``). Mistakes (an unknown column, a bad option, an unknown run) raise :class:`UsageError`, so
IPython prints one line instead of a traceback, and a notebook run with nbclient/papermill
stops at that cell. The API key is never shown.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import pandas as pd
from IPython.core.error import UsageError
from IPython.core.magic import (
    Magics,
    cell_magic,
    line_magic,
    magics_class,
    needs_local_scope,
)

# the engine modules by full name: "from . import" would read as importing the package,
# whose __init__ imports this module
import gemini_batch_magic._monitor as _monitor
import gemini_batch_magic._runs as _runs

from ._backend import backend_info
from ._command import CellCommand, HelpShown, LineCommand, parse_cell, parse_line
from ._config import settings
from ._env import in_notebook
from ._runs import BatchRun
from ._secrets import redact
from .exceptions import GemBatchError

__all__ = ["GemBatchMagics", "load_ipython_extension", "unload_ipython_extension"]


def _usage_error(exc: BaseException) -> UsageError:
    """A one-line :class:`UsageError` from an engine error, without any secret."""
    return UsageError(redact(exc))


@magics_class
class GemBatchMagics(Magics):
    """``%%gembatch`` and ``%gembatch``: parse, call the engine, deliver the value.

    Their options are the package settings, configured as ``GemBatch`` (``%config``).
    """

    @property
    def _shell(self) -> Any:
        """The shell the magics are registered with."""
        if self.shell is None:
            raise UsageError("the gembatch magics are not registered with an IPython shell")
        return self.shell

    def _namespace(self, local_ns: dict[str, Any] | None) -> dict[str, Any]:
        return {**self._shell.user_ns, **(local_ns or {})}

    # -- %%gembatch -----------------------------------------------------------------------
    @needs_local_scope
    @cell_magic("gembatch")  # type: ignore[arg-type]  # IPython's stubs forbid local_ns
    def gembatch_cell(self, line: str, cell: str, local_ns: dict[str, Any] | None = None) -> Any:
        """Send a batch run: see ``%gembatch help``."""
        try:
            cmd = parse_cell(line, cell, self._namespace(local_ns))
        except HelpShown:
            return None
        try:
            if cmd.embed is not None:  # --embed: an embedding run of --col
                if cmd.dry_run:
                    return self._deliver(_runs.embed(cmd.df, str(cmd.prompt), dry_run=True,
                                                     **cmd.embed), cmd.out, show=False)
                run = _runs.embed(cmd.df, str(cmd.prompt), **cmd.embed)
            elif cmd.dry_run:
                return self._dry_run(cmd)
            else:
                run = _runs.submit(cmd.df, cmd.prompt, **cmd.options.submit_kwargs())
            if not cmd.wait:
                return self._deliver(run, cmd.out, show=True)
            return self._deliver(self._wait_for_results(run, cmd.out), cmd.out, show=False)
        except GemBatchError as exc:
            raise _usage_error(exc) from None

    def _wait_for_results(self, run: BatchRun, out: str | None) -> pd.DataFrame:
        """``--wait``: the results; on Ctrl-C, OUT still gets the run, which goes on."""
        try:
            frame = run.run_to_completion()
        except KeyboardInterrupt:
            if out:
                self._shell.push({out: run})
            print(f"gembatch: stopped waiting; run {run.run_id} goes on. "
                  f"%gembatch wait {run.run_id} to wait again", file=sys.stderr)
            raise
        if run.state != "SUCCEEDED" or run.stats.failed:
            print(f"gembatch: run {run.run_id} ended {run.state} with "
                  f"{run.stats.failed} failed row(s): see the error column; "
                  f"%gembatch retry {run.run_id}", file=sys.stderr)
        return frame

    def _dry_run(self, cmd: CellCommand) -> None:
        from IPython.display import display

        est = _runs.estimate(cmd.df, cmd.prompt, **cmd.options.estimate_kwargs())
        if cmd.out:
            self._shell.push({cmd.out: est})
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
            if in_notebook():
                _show_widget(value)
            else:
                print(redact(repr(value)))
        return None

    # -- %gembatch ------------------------------------------------------------------------
    @needs_local_scope
    @line_magic("gembatch")  # type: ignore[arg-type]
    def gembatch_line(self, line: str, local_ns: dict[str, Any] | None = None) -> Any:
        """Manage runs: ``%gembatch list|status|wait|results|cancel|retry|attach|panel|backend|help``."""
        try:
            cmd = parse_line(line)
        except HelpShown:
            return None
        handler = getattr(self, f"_do_{cmd.command}")
        try:
            return handler(cmd, self._namespace(local_ns))
        except GemBatchError as exc:
            raise _usage_error(exc) from None

    # one _do_<name> method per subcommand (SUBCOMMANDS), handed the parsed line and namespace
    def _do_help(self, cmd: LineCommand, ns: dict[str, Any]) -> None:
        print(__doc__)

    def _do_list(self, cmd: LineCommand, ns: dict[str, Any]) -> pd.DataFrame:
        return _runs.runs()

    def _do_panel(self, cmd: LineCommand, ns: dict[str, Any]) -> Any:
        from ._panel import JobsPanel

        return JobsPanel(self._shell.user_ns)

    def _do_backend(self, cmd: LineCommand, ns: dict[str, Any]) -> None:
        info = backend_info()
        print(redact(
            f"{info.describe()}\nkind: {info.kind}\nbase URL: {info.base_url or 'default'}"
            f"\nAPI key from: {('$' + info.key_source) if info.key_source else 'no key'}"
            f"\nsynthetic answers: {info.synthetic}"))

    def _do_status(self, cmd: LineCommand, ns: dict[str, Any]) -> BatchRun:
        return _find_run(cmd, ns).refresh()

    def _do_attach(self, cmd: LineCommand, ns: dict[str, Any]) -> Any:
        return self._deliver(_find_run(cmd, ns), cmd.out, show=True)

    def _do_wait(self, cmd: LineCommand, ns: dict[str, Any]) -> pd.DataFrame | None:
        if cmd.all:
            return _wait_all(cmd.timeout)
        _find_run(cmd, ns).wait(timeout=cmd.timeout)  # shows its own progress
        return None

    def _do_cancel(self, cmd: LineCommand, ns: dict[str, Any]) -> None:
        run = _find_run(cmd, ns)
        run.cancel()
        print(f"cancel requested: {run!r}")

    def _do_retry(self, cmd: LineCommand, ns: dict[str, Any]) -> BatchRun | None:
        return _find_run(cmd, ns).retry_failed()

    def _do_results(self, cmd: LineCommand, ns: dict[str, Any]) -> Any:
        frame = _find_run(cmd, ns).result(join=cmd.join, partial=cmd.partial)
        return self._deliver(frame, cmd.out, show=False)


def _show_widget(run: BatchRun) -> None:
    try:
        from .widgets import ProgressWidget
    except ImportError:
        print(repr(run))
        return
    ProgressWidget(run, display_now=True)


def _wait_all(timeout: float | None) -> pd.DataFrame:
    """Wait for every live run, let every widget draw its final state; the run list."""
    deadline = None if timeout is None else time.monotonic() + timeout
    for run in _runs.live_runs():
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        run.wait(timeout=left, progress=False)
    _monitor.wait_idle(None if deadline is None else max(0.0, deadline - time.monotonic()))
    return _runs.runs()


def _find_run(cmd: LineCommand, ns: dict[str, Any]) -> BatchRun:
    """The run ``cmd.run`` names: a variable holding a run (or a run id), else a reference."""
    ref = str(cmd.run)
    value = ns.get(ref) if ref.isidentifier() else None
    if isinstance(value, BatchRun):
        return value
    if isinstance(value, str):
        ref = value
    return _runs.attach(ref)


def load_ipython_extension(ipython: Any) -> None:
    """Register ``%%gembatch`` / ``%gembatch`` and the settings as the ``GemBatch``
    configurable, with ``c.GemBatch.*`` from the profile applied."""
    settings.update_config(ipython.config)
    if settings not in ipython.configurables:
        ipython.configurables.append(settings)
    ipython.register_magics(GemBatchMagics)


def unload_ipython_extension(ipython: Any) -> None:
    """Remove the magics and the configurable (``%unload_ext gemini_batch_magic``)."""
    while settings in ipython.configurables:
        ipython.configurables.remove(settings)
    manager = ipython.magics_manager
    for kind in ("line", "cell"):
        manager.magics[kind].pop("gembatch", None)
    manager.registry.pop(GemBatchMagics.__name__, None)

