"""Parsing of ``%%gembatch`` and ``%gembatch``, apart from running them (cf. jupysql's
``SQLCommand``, jupyter-ai's ``parsers.py``).

:func:`parse_cell` turns the cell magic's line and body into a :class:`CellCommand` (the
DataFrame, the prompt column, the :class:`~gemini_batch_magic._options.RunOptions`);
:func:`parse_line` turns the line magic into a :class:`LineCommand`. Every mistake raises
IPython's :class:`UsageError` with a message saying how to fix it; ``--help`` prints the
help and raises :class:`HelpShown`. Nothing here sends anything.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any, NoReturn

import pandas as pd
from IPython.core.error import UsageError

from ._frames import column_names, input_kind
from ._options import RunOptions, StrictParser, add_run_arguments

__all__ = ["SUBCOMMANDS", "CellCommand", "HelpShown", "LineCommand", "parse_cell",
           "parse_line"]

SUBCOMMANDS = ("list", "status", "wait", "results", "cancel", "retry", "attach", "panel",
               "backend", "help")


class HelpShown(Exception):
    """``--help`` was printed; there is nothing to run."""


class _Parser(StrictParser):
    """argparse that raises :class:`UsageError` instead of exiting, and takes no
    abbreviations (``--temp`` is not ``--temperature``: the error names it)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} ({self.prog.split()[0]} --help lists the "
                         "options; %gembatch help shows the manual)")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        raise HelpShown(message or "")


@dataclass(frozen=True)
class CellCommand:
    """What a ``%%gembatch`` cell asks for."""

    #: Variable that receives the value (run, results or estimate); None: the cell's value.
    out: str | None
    #: The rows to send: the ``--df`` frame (pandas, polars or Arrow), or one row per
    #: non-empty line of the cell.
    df: Any
    #: The column holding the prompts; None when ``options.template`` formats them.
    prompt: str | None
    options: RunOptions
    #: Block and deliver the results instead of the run.
    wait: bool = False
    #: Deliver the estimate and send nothing.
    dry_run: bool = False
    #: ``--backend``: the backend to switch to first (None: keep the current one).
    backend: str | None = None
    #: ``--table SOURCE``: a table run (``bq://``, a query or ``gs://``), the cell its template.
    table: str | None = None
    #: ``--dest``: where a table run writes (``bq://project.dataset.table`` or ``gs://``).
    dest: str | None = None
    #: ``--embed``: an embedding run of the ``--col`` column, with these keywords of
    #: :func:`gemini_batch_magic.embed`; None: a generate run.
    embed: dict[str, Any] | None = None


@dataclass(frozen=True)
class LineCommand:
    """What a ``%gembatch`` line asks for."""

    command: str
    #: A run id, id prefix, ``batches/...`` name, or a variable holding a run.
    run: str | None = None
    out: str | None = None
    timeout: float | None = None
    all: bool = False
    partial: bool = False
    join: bool = False


def _cell_parser() -> _Parser:
    p = _Parser(prog="%%gembatch", add_help=True,
                description="Send the cell's prompts (or a DataFrame) as one batch run.")
    p.add_argument("out", nargs="?", help="variable that receives the run (or the results "
                                          "with --wait)")
    p.add_argument("--df", help="DataFrame variable; the cell is a {column} template")
    p.add_argument("--col", help="column holding the prompts (the cell is then the system "
                                 "instruction)")
    add_run_arguments(p)
    p.add_argument("--schema", help="pydantic model class or JSON schema dict variable")
    p.add_argument("--wait", action="store_true", help="block and return the results")
    p.add_argument("--dry-run", action="store_true", dest="dry_run",
                   help="show the estimate and the first requests; send nothing")
    p.add_argument("--table", help="a table run (Vertex AI): bq://project.dataset.table, "
                                   "'SELECT ...' or gs://.../*.jsonl; the cell is the template")
    p.add_argument("--dest", help="with --table: the result table bq://project.dataset.table "
                                  "(or a gs:// prefix)")
    p.add_argument("--embed", action="store_true",
                   help="embed the --col column (or the column the cell body names) instead; "
                        "default model gemini-embedding-001")
    p.add_argument("--task-type", dest="task_type", help="with --embed: e.g. "
                                                          "RETRIEVAL_DOCUMENT")
    p.add_argument("--output-dimensionality", dest="output_dimensionality", type=int,
                   help="with --embed: dimensions of each vector, e.g. 768")
    p.add_argument("--title", help="with --embed: column of document titles")
    return p


def _line_parser() -> _Parser:
    p = _Parser(prog="%gembatch", add_help=True,
                description="Manage batch runs: " + ", ".join(SUBCOMMANDS))
    sub = p.add_subparsers(dest="command", parser_class=_Parser)
    lst = sub.add_parser("list", help="every run in the registry")
    lst.add_argument("--all", action="store_true", help="every column, not only those that "
                                                        "fit 100 characters")
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


def _lookup(ns: dict[str, Any], name: str, what: str) -> Any:
    if name not in ns:
        raise UsageError(f"{what} {name!r} is not defined in the notebook; define it first "
                         "or check the spelling")
    return ns[name]


def parse_line(line: str) -> LineCommand:
    """The ``%gembatch`` line as a :class:`LineCommand`."""
    words = _split(line)
    if not words:
        raise UsageError(f"%gembatch needs a subcommand: {', '.join(SUBCOMMANDS)} "
                         "(%%gembatch, as a cell magic, sends a run)")
    if words[0] not in SUBCOMMANDS and not words[0].startswith("-"):
        raise UsageError(f"unknown subcommand {words[0]!r}; valid subcommands: "
                         f"{', '.join(SUBCOMMANDS)}")
    args = _line_parser().parse_args(words)
    if args.command is None:  # only options, e.g. a bare "%gembatch --x"
        raise UsageError(f"%gembatch needs a subcommand: {', '.join(SUBCOMMANDS)}")
    if args.command == "wait" and not args.all and not args.run:
        raise UsageError("%gembatch wait needs a run id (%gembatch list shows them), or --all")
    fields = ("run", "out", "timeout", "all", "partial", "join")
    return LineCommand(args.command, **{f: getattr(args, f) for f in fields if hasattr(args, f)})


def parse_cell(line: str, cell: str, user_ns: dict[str, Any]) -> CellCommand:
    """The ``%%gembatch`` line and body as a :class:`CellCommand`; ``user_ns`` holds the
    variables ``--df`` and ``--schema`` name."""
    args = _cell_parser().parse_args(_split(line))
    body = cell.strip("\n")
    if args.table:
        if args.df or args.col or args.schema or args.dry_run:
            raise UsageError("--table reads its rows in BigQuery or Cloud Storage: --df, "
                             "--col, --schema and --dry-run do not go with it")
        options = RunOptions.from_args(args, template=body.strip() or None,
                                       system_instruction=args.system)
        return CellCommand(out=args.out, df=pd.DataFrame(), prompt=None, options=options,
                           wait=args.wait, backend=args.backend, table=args.table,
                           dest=args.dest)
    if args.dest:
        raise UsageError("--dest names where a table run writes: it goes with --table SOURCE")
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
        df = _lookup(user_ns, args.df, "--df")
        if input_kind(df) is None:
            raise UsageError(f"--df {args.df} is a {type(df).__name__}, not a DataFrame "
                             "(pandas or polars, or a pyarrow Table)")
        if args.col:
            prompt = args.col
            if body.strip():
                if system:
                    raise UsageError("with --col the cell body is the system instruction: "
                                     "give it there or with --system, not both")
                system = body.strip()
        elif not body.strip():
            names = column_names(df)
            raise UsageError(f"the cell is empty: write a template over the columns of "
                             f"{args.df} (e.g. 'Summarise: {{{names[0]}}}' ) or pass "
                             "--col COLUMN" if names else f"{args.df} has no columns")
        else:
            template = body
    embed = None
    if args.embed:  # the body may name the column to embed (a cell magic needs a body)
        if args.df is not None and not args.col and body.strip():
            args.col, prompt, template = body.strip(), body.strip(), None
        embed = _embed_options(args, "" if body.strip() == (args.col or "") else body)
    schema = _lookup(user_ns, args.schema, "--schema") if args.schema else None
    options = RunOptions.from_args(args, template=template, system_instruction=system,
                                   response_schema=schema)
    return CellCommand(out=args.out, df=df, prompt=prompt, options=options, wait=args.wait,
                       dry_run=args.dry_run, backend=args.backend, embed=embed)


def _embed_options(args: Any, body: str) -> dict[str, Any]:
    """The keywords of ``embed()`` a ``--embed`` cell asks for."""
    if args.df is None or not args.col:
        raise UsageError("--embed needs --df VAR and the column to embed: --col COLUMN, or "
                         "the column's name as the cell body")
    if body.strip() or args.system or args.media or args.schema:
        raise UsageError("--embed takes no --system, --media or --schema, and a cell body "
                         "only to name the column: an embedding is of that text alone")
    return {"model": args.model, "key": args.key, "task_type": args.task_type,
            "output_dimensionality": args.output_dimensionality, "title": args.title,
            "on_empty": args.on_empty, "max_cost": args.max_cost, "force": args.force,
            "name": args.name}
