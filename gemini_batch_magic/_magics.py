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

* ``--df VAR``: one request per row of the DataFrame ``VAR`` (pandas or polars, a polars
  LazyFrame or a pyarrow Table: the results are of the same kind); the cell body is a
  template over its columns (``Translate {text} into {lang}.``)::

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
``--table SOURCE`` / ``--dest DEST``
    A table run on Vertex AI (``gbm.submit_table``): SOURCE is ``bq://project.dataset.table``,
    a quoted ``'SELECT ...'`` or ``gs://bucket/in/*.jsonl``; the cell body is the template
    over its columns (fields); ``--key COL`` names the key column; DEST the new result table
    ``bq://project.dataset.table`` (or a ``gs://`` prefix). ``OUT`` receives the
    :class:`~gemini_batch_magic.TableRun`; with ``--wait``, its first 1000 result rows.
    Example: ``%%gembatch t --table bq://p.d.raw --key id --dest bq://p.d.out --backend
    vertex`` over ``Summarise: {text}``.
``--max-cost USD``
    Refuse to submit when the estimated cost is higher.
``--force``
    Submit even if an identical run exists (by default the existing run is returned, so
    re-running a cell never pays twice).
``--name NAME``
    Display name of the run (and its batch jobs).
``--on-empty {raise,skip}``
    What to do with empty prompts (default ``raise``).
``--yes``
    Send even if the estimate is above ``confirm_above`` (default $5; see below).
    ``--max-cost`` still refuses.
``--keep-inputs``
    Keep the request files uploaded to the File API (by default each is deleted once its
    batch has ended, so the project's 20 GB of files do not fill up).

Spending more than you meant
----------------------------

A run estimated above ``%config GemBatch.confirm_above`` (USD, default 5.0; ``None`` turns
it off) is not sent at once. In JupyterLab, Notebook, VS Code or Colab the cell shows the
estimate and a "Submit ($6.49)" button instead; clicking it sends the run (and puts it in
``OUT``). Where no one can click (nbclient, papermill, nbconvert, a terminal) the cell fails
with a ``UsageError`` naming ``--yes``. ``--max-cost USD`` refuses outright, confirmed or
not. A template without any ``{column}`` placeholder is refused (it would send the same
prompt for every row); options are never abbreviated (``--temp`` is an error naming
``--temperature``), so a typo never sends.
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
``%gembatch list``              every run, newest first, in 100 columns (``--all``: every column)
``%gembatch status RUN``        refresh and show one run (live widget in notebooks)
``%gembatch wait RUN``          block until the run is done (``--timeout SECONDS``);
                                ``--all``: every live run, then one summary line each
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
``retry_initial_delay``, ``emulator_pending_seconds``, ``emulator_rate``,
``emulator_max_running_seconds``,
``confirm_above``, ``push_updates``. A bad value is
refused with a ``TraitError`` naming it and what is valid (IPython's ``%config`` prints it as
an error).

Errors
======

Options are never abbreviated (``--temp`` is an error, not ``--temperature``). Mistakes (an unknown column, a bad option, an unknown run) raise :class:`UsageError`, so
IPython prints one line instead of a traceback, and a notebook run with nbclient/papermill
stops at that cell. The API key is never shown.
"""

from __future__ import annotations

import dataclasses
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
from ._config import configure, settings
from ._env import in_notebook
from ._options import confirm_message
from ._runs import BatchRun
from ._secrets import KEY_VARS, redact
from ._tables import TableRun
from .exceptions import ConfirmationRequired, GemBatchError

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
            if cmd.backend:
                configure(backend=cmd.backend)
            if cmd.table:
                return self._table_run(cmd)
            if cmd.embed is not None:  # --embed: an embedding run of --col
                if cmd.dry_run:
                    return self._deliver(_runs.embed(cmd.df, str(cmd.prompt), dry_run=True,
                                                     **cmd.embed), cmd.out, show=False)
                run = _runs.embed(cmd.df, str(cmd.prompt), **cmd.embed)
            elif cmd.dry_run:
                return self._dry_run(cmd)
            else:
                try:
                    run = _runs.submit(cmd.df, cmd.prompt, **cmd.options.submit_kwargs())
                except ConfirmationRequired as exc:
                    if not (_person_can_answer() and self._ask_to_confirm(cmd, exc)):
                        raise UsageError(confirm_message(
                            exc.estimate, settings.confirm_above,
                            "add --yes to the %%gembatch line to send it (max_cost still "
                            "refuses), or change %config GemBatch.confirm_above (None turns "
                            "it off)")) from None
                    return None
            if not cmd.wait:
                return self._deliver(run, cmd.out, show=True)
            return self._deliver(self._wait_for_results(run, cmd.out), cmd.out, show=False)
        except GemBatchError as exc:
            raise _usage_error(exc) from None

    def _table_run(self, cmd: CellCommand) -> Any:
        """``--table SOURCE``: :func:`submit_table` (the cell is the template)."""
        from ._tables import submit_table

        try:
            run = submit_table(str(cmd.table), dest=cmd.dest, **cmd.options.table_kwargs())
        except ConfirmationRequired as exc:
            raise UsageError(confirm_message(
                exc.estimate, settings.confirm_above,
                "add --yes to the %%gembatch line to send it (--max-cost still refuses)"
            )) from None
        if not cmd.wait:
            return self._deliver(run, cmd.out, show=True)
        return self._deliver(self._wait_for_results(run, cmd.out), cmd.out, show=False)

    def _ask_to_confirm(self, cmd: CellCommand, exc: ConfirmationRequired) -> bool:
        """Show the estimate and a "Submit ($6.49)" button; a click sends the run (confirmed)
        and puts it in OUT. The cell itself has ended by then, so OUT gets the run even
        with ``--wait``. False when no button can be shown (no ipywidgets)."""
        try:
            from .widgets._confirm import ConfirmSubmit
        except ImportError:
            return False

        options = dataclasses.replace(cmd.options, confirm=True)
        out = cmd.out

        def send() -> BatchRun:
            run = _runs.submit(cmd.df, cmd.prompt, **options.submit_kwargs())
            if out:
                self._shell.push({out: run})
            return run

        if out and cmd.wait:
            note = (f"After Submit, {out} holds the run (this cell has ended, so it cannot "
                    f"wait): %gembatch results {out} once it is done.")
        elif out:
            note = f"After Submit, {out} holds the run."
        else:
            note = "After Submit, %gembatch list shows the run."
        try:
            ConfirmSubmit(exc.estimate, send, limit=settings.confirm_above,
                          note=note + " Or run the cell again with --yes.")
        except ImportError:  # ipywidgets missing: the view says so when built
            return False
        return True

    def _wait_for_results(self, run: BatchRun | TableRun, out: str | None) -> pd.DataFrame:
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
        if show and isinstance(value, (BatchRun, TableRun)):
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
        from .widgets import manual_html, manual_text

        if in_notebook():
            from IPython.display import display

            display({"text/plain": manual_text(__doc__ or ""),
                     "text/html": manual_html(__doc__ or "")}, raw=True)
        else:
            print(manual_text(__doc__ or ""))

    def _do_list(self, cmd: LineCommand, ns: dict[str, Any]) -> Any:
        from .widgets import runs_table

        return runs_table(_runs.runs(), all_columns=cmd.all)

    def _do_panel(self, cmd: LineCommand, ns: dict[str, Any]) -> Any:
        from ._panel import JobsPanel

        return JobsPanel(self._shell.user_ns)

    def _do_backend(self, cmd: LineCommand, ns: dict[str, Any]) -> None:
        info = backend_info()
        print(redact(
            f"{info.describe()}\nkind: {info.kind}\nbase URL: {info.base_url or 'default'}"
            f"\nAPI key from: {_key_origin(info.key_source)}"
            f"\nsynthetic answers: {info.synthetic}"))

    def _do_status(self, cmd: LineCommand, ns: dict[str, Any]) -> BatchRun:
        return _find_run(cmd, ns).refresh()

    def _do_attach(self, cmd: LineCommand, ns: dict[str, Any]) -> Any:
        return self._deliver(_find_run(cmd, ns), cmd.out, show=True)

    def _do_wait(self, cmd: LineCommand, ns: dict[str, Any]) -> None:
        if cmd.all:
            _wait_all(cmd.timeout)
            return None
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


def _key_origin(source: str | None) -> str:
    """Where the key came from, never the key: ``$GEMINI_API_KEY``, ``Colab secret
    GEMINI_API_KEY`` or ``no key``."""
    if not source:
        return "no key"
    return f"${source}" if source in KEY_VARS else source


def _person_can_answer() -> bool:
    """True when someone can click a button now: a Jupyter kernel whose current request
    allows input. JupyterLab, Notebook, VS Code and Colab send ``allow_stdin=True`` with a
    cell they run; nbclient, papermill and nbconvert send False (no one to ask), and a
    terminal or script has no kernel at all."""
    from IPython import get_ipython

    # a kernel's shell has one, a terminal's not (Colab's shell is a subclass of the Jupyter
    # one, under another class name: no test by name here)
    kernel = getattr(get_ipython(), "kernel", None)
    if kernel is None:
        return False
    try:  # the request being run, as the Jupyter protocol sends it (ipykernel >= 6)
        parent = kernel.get_parent("shell")
    except (AttributeError, TypeError):
        parent = None
    if isinstance(parent, dict) and isinstance(parent.get("content"), dict):
        return bool(parent["content"].get("allow_stdin", False))
    return bool(getattr(kernel, "_allow_stdin", False))  # what ipykernel keeps of it


def _show_widget(run: BatchRun | TableRun) -> None:
    try:
        from .widgets import ProgressWidget
    except ImportError:
        print(repr(run))
        return
    ProgressWidget(run, display_now=True)


def _wait_all(timeout: float | None) -> list[BatchRun]:
    """Wait for every live run, let every widget draw its final state, then print one
    summary line per run waited for; returns those runs."""
    from .widgets import summary_line

    deadline = None if timeout is None else time.monotonic() + timeout
    waited = _runs.live_runs()
    for run in waited:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        run.wait(timeout=left, progress=False)
    _monitor.wait_idle(None if deadline is None else max(0.0, deadline - time.monotonic()))
    if not waited:
        print("no live runs: every run of the registry is done (%gembatch list shows them)")
    for run in waited:
        print(redact(summary_line(run)))
    return waited


def _find_run(cmd: LineCommand, ns: dict[str, Any]) -> BatchRun:
    """The run ``cmd.run`` names: a variable holding a run (or a run id), else a reference."""
    ref = str(cmd.run)
    value = ns.get(ref) if ref.isidentifier() else None
    if isinstance(value, (BatchRun, TableRun)):
        return value  # type: ignore[return-value]  # a TableRun has the same verbs
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

