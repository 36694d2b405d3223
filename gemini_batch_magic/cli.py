"""The ``gembatch`` command: the same engine as the Python API and the magics.

Usage::

    gembatch demo                       submit a few prompts to the local emulator and print answers
    gembatch emulator [--port 8000 ...] run the local Gemini Batch API emulator (see --help)
    gembatch emulator --vertex          the Vertex AI test bed: Cloud Storage, BigQuery, Vertex AI
    gembatch submit data.csv --prompt text [--wait] [--out answers.csv]
    gembatch submit 'tickets/*.parquet' --template "Classify: {body}" --key ticket_id \
        --wait --out answers.parquet       (files bigger than memory: read and written in parts)
    gembatch estimate data.csv --template "Summarise: {text}"
    gembatch submit-table bq://p.d.raw --template "Summarise: {text}" --key id \
        --dest bq://p.d.out --backend vertex [--wait]      (also 'SELECT ...', gs://.../*.jsonl)
    gembatch submit photos.csv --template "What is in this photo?" --media path --wait
    gembatch embed data.csv --col text [--task-type T] [--output-dimensionality N] --out v.parquet
    gembatch list | status RUN | wait RUN | results RUN [--out F] | cancel RUN | retry RUN
    gembatch backend | config

Input files: .csv, .parquet, .jsonl/.ndjson, .json (lines, or one array), a quoted glob or a
folder of them; read a batch at a time (``submit_file``) unless ``--media`` is given. Errors print one line to stderr and exit 2
(bad input) or 1 (service errors); nothing is sent when the input is bad.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from ._options import RunOptions, StrictParser, add_run_arguments, confirm_message

__all__ = ["main"]

_DEMO_PROMPTS = [
    "What is the capital of France?",
    "Translate 'good morning' into Japanese.",
    "Name three prime numbers.",
    "Écris une phrase en français.",
    "Summarise: batch mode halves the price of Gemini requests.",
]


def _emit(out: Any, path: str | None) -> None:
    """Results to ``path`` (``--out``), else printed."""
    if path:
        _write_table(out, path)
        print(f"wrote {len(out)} rows to {path}")
    else:
        print(out.to_string())


def _read_table(path: str) -> Any:
    import pandas as pd

    from .exceptions import InputError

    p = Path(path)
    if not p.exists():
        raise InputError(f"input file {path!r} does not exist")
    suffix = p.suffix.lower()
    if suffix == ".csv":
        return pd.read_csv(p)
    if suffix == ".parquet":
        return pd.read_parquet(p)
    if suffix in (".jsonl", ".ndjson"):
        return pd.read_json(p, lines=True)
    if suffix == ".json":
        return pd.read_json(p)
    raise InputError(
        f"cannot read {path!r}: use a .csv, .parquet, .jsonl/.ndjson or .json file"
    )


def _as_frame(ns: argparse.Namespace) -> bool:
    """Whether ``submit``/``estimate`` read the input into a DataFrame: media runs, and a
    ``.json`` file holding one array (every other input is read a batch at a time)."""
    if getattr(ns, "media", None):
        return True
    path = Path(ns.input)
    if path.suffix.lower() == ".json" and path.is_file():
        with open(path, "rb") as fh:
            return fh.read(4096).lstrip()[:1] == b"["
    return False


def _file_kwargs(options: RunOptions) -> dict[str, Any]:
    """The keywords of :func:`~gemini_batch_magic.submit_file` among a run's options."""
    return {k: v for k, v in options.submit_kwargs().items() if k not in ("media", "mime_type")}


def _write_table(df: Any, path: str) -> None:
    from .exceptions import InputError

    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        df.to_csv(path)
    elif suffix == ".parquet":
        _write_parquet(df, path)
    elif suffix in (".jsonl", ".ndjson"):
        df.reset_index().to_json(path, orient="records", lines=True, force_ascii=False)
    else:
        raise InputError(f"cannot write {path!r}: use .csv, .parquet or .jsonl")


def _write_parquet(df: Any, path: str) -> None:
    """``df.to_parquet``, readable again by ``pd.read_parquet``: pandas cannot rebuild an
    ``ArrowDtype`` with parameters (the embeddings' fixed-size list) from its own metadata,
    so such columns are recorded as plain Arrow columns (they read back as arrays)."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df)
    meta = json.loads(table.schema.metadata[b"pandas"])
    for col in meta.get("columns", []):
        if "[" in str(col.get("numpy_type", "")):
            col["numpy_type"] = "object"
    table = table.replace_schema_metadata({**table.schema.metadata,
                                           b"pandas": json.dumps(meta).encode()})
    pq.write_table(table, path)


def _add_input_args(p: argparse.ArgumentParser, *, send: bool) -> None:
    p.add_argument("input", help="a .parquet, .csv, .jsonl/.ndjson or .json file of rows, a "
                                 "quoted glob ('tickets/*.parquet') or a folder of them; read "
                                 "a batch at a time (with --media: into memory)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="column holding the prompts")
    src.add_argument("--template", help="template over columns, e.g. 'Summarise: {text}'")
    add_run_arguments(p, send=send)


def _parser() -> argparse.ArgumentParser:
    # no abbreviations (--temp is an error naming --temperature); subcommands alike
    parser = StrictParser(prog="gembatch", description="Gemini Batch Mode from the command line.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="submit a few prompts to the local emulator; print answers")
    demo.add_argument("--home", help="registry folder (default: a temporary folder)")

    sub.add_parser("emulator", help="run the local Gemini Batch API emulator", add_help=False)

    p = sub.add_parser("submit", help="submit every row of a file as a batch run")
    _add_input_args(p, send=True)
    p.add_argument("--wait", action="store_true", help="wait, then write the results to --out "
                   "(streamed one shard at a time) or, without --out, print them (all loaded "
                   "in memory: use --out for big files)")
    p.add_argument("--out", help="with --wait: write results here (.csv, .parquet, .jsonl)")

    p = sub.add_parser("submit-table", help="a table run on Vertex AI: BigQuery (or Cloud "
                       "Storage JSONL) in, a table out; the rows never come to this machine")
    p.add_argument("source", help="bq://project.dataset.table, 'SELECT ...' or "
                                  "gs://bucket/in/*.jsonl")
    p.add_argument("--template", help="template over the columns, e.g. 'Summarise: {text}' "
                                      "(needed but for gs:// lines already {\"request\": ...})")
    p.add_argument("--dest", help="the new result table bq://project.dataset.table (for a "
                                  "gs:// source a gs:// prefix; default under staging)")
    add_run_arguments(p, send=True)
    p.add_argument("--wait", action="store_true", help="wait, then print (or --out) the "
                                                     "first --limit result rows")
    p.add_argument("--limit", type=int, default=1000, help="with --wait: rows read back "
                                                          "(default 1000)")
    p.add_argument("--out", help="with --wait: write them here (.csv, .parquet, .jsonl)")

    p = sub.add_parser("estimate", help="what a submit would send and cost; sends nothing")
    _add_input_args(p, send=False)

    p = sub.add_parser("embed", help="embed a text column of a file (waits; writes vectors)")
    p.add_argument("input", help="a .csv, .parquet, .jsonl or .json file of rows")
    p.add_argument("--col", required=True, help="column holding the text to embed")
    p.add_argument("-m", "--model", help="embedding model (default: gemini-embedding-001)")
    p.add_argument("--key", help="unique column identifying rows (default: the row number)")
    p.add_argument("--task-type", dest="task_type", help="e.g. RETRIEVAL_DOCUMENT")
    p.add_argument("--output-dimensionality", dest="output_dimensionality", type=int,
                   help="dimensions of each vector, e.g. 768")
    p.add_argument("--title", help="column of document titles (RETRIEVAL_DOCUMENT)")
    p.add_argument("--max-cost", type=float, dest="max_cost",
                   help="refuse to submit when the estimate exceeds this (USD)")
    p.add_argument("--force", action="store_true", help="submit even if an identical run "
                                                        "exists")
    p.add_argument("--name", help="display name of the run")
    p.add_argument("--dry-run", action="store_true", dest="dry_run",
                   help="print the estimate; send nothing")
    p.add_argument("--no-wait", action="store_true", dest="no_wait",
                   help="print the run id and return at once")
    p.add_argument("--out", help="write the results here (.parquet keeps the vectors as "
                                 "float32 lists; .jsonl as lists; .npy: the matrix only)")

    sub.add_parser("list", help="every run this machine knows, newest first")
    for name, text in (("status", "state and counts of a run"),
                       ("wait", "wait for a run to finish"),
                       ("cancel", "cancel a run"),
                       ("retry", "resubmit the failed rows of a run")):
        q = sub.add_parser(name, help=text)
        q.add_argument("run", help="run id (or unique prefix) or batches/... name")
    q = sub.add_parser("results", help="the results of a finished run")
    q.add_argument("run")
    q.add_argument("--out", help="write here (.csv, .parquet, .jsonl) instead of printing")
    sub.add_parser("backend", help="which backend is used and where the key comes from")
    sub.add_parser("config", help="the current settings")
    return parser


def _demo(home: str | None) -> int:
    import pandas as pd

    if home is None:
        home = tempfile.mkdtemp(prefix="gembatch-demo-")
    os.environ["GEMBATCH_HOME"] = home
    import gemini_batch_magic as gbm

    gbm.configure(home=home, backend="local", emulator_pending_seconds=1.0, emulator_rate=5.0,
                  poll_interval=0.5, max_poll_interval=1.0)
    df = pd.DataFrame({"prompt": _DEMO_PROMPTS},
                      index=pd.Index(["paris", "japanese", "primes", "french", "summary"],
                                     name="id"))
    print(f"Submitting {len(df)} prompts as one batch (registry: {home})")
    print(gbm.estimate(df, "prompt"))
    run = df.gembatch.submit("prompt", name="gembatch-demo")
    print(f"Run {run.run_id}: batch {', '.join(run.batch_names)}")
    run.wait()
    out = run.result()
    print(f"\nAnswers ({run.state}), aligned to the input's index:")
    with pd.option_context("display.max_colwidth", 60, "display.width", 120):
        print(out[["response", "error", "input_tokens", "output_tokens"]].to_string())
    return 0


def _run(ns: argparse.Namespace, rest: list[str]) -> int:
    import pandas as pd

    import gemini_batch_magic as gbm

    cmd = ns.command
    if cmd == "demo":
        return _demo(ns.home)
    if getattr(ns, "backend", None):
        gbm.configure(backend=ns.backend)
    if cmd == "submit":
        options = RunOptions.from_args(ns, template=ns.template)
        try:
            if _as_frame(ns):  # media runs (and JSON arrays) go through a DataFrame
                run = gbm.submit(_read_table(ns.input), ns.prompt, **options.submit_kwargs())
            else:  # any file, read a batch at a time
                run = gbm.submit_file(ns.input, ns.prompt, **_file_kwargs(options))
        except gbm.ConfirmationRequired as exc:
            print("gembatch: " + confirm_message(
                exc.estimate, gbm.settings.confirm_above,
                "add --yes to send it (--max-cost still refuses)"), file=sys.stderr)
            return 2
        print(f"{run.run_id}\t{run.state}\t{' '.join(run.batch_names)}")
        if ns.wait:
            if ns.out:  # streamed to the file, one shard at a time
                n = run.wait().write_results(ns.out)
                print(f"wrote {n} rows to {ns.out}")
            else:
                _emit(run.run_to_completion(), None)
        return 0
    if cmd == "submit-table":
        options = RunOptions.from_args(ns, template=ns.template)
        try:
            table_run = gbm.submit_table(ns.source, dest=ns.dest, **options.table_kwargs())
        except gbm.ConfirmationRequired as exc:
            print("gembatch: " + confirm_message(
                exc.estimate, gbm.settings.confirm_above,
                "add --yes to send it (--max-cost still refuses)"), file=sys.stderr)
            return 2
        if table_run.notice:
            print(f"gembatch: {table_run.notice}", file=sys.stderr)
        print(f"{table_run.run_id}\t{table_run.state}\t{table_run.dest}")
        if ns.wait:
            out = table_run.wait(progress=True).result(limit=ns.limit)
            print(f"{table_run.run_id}\t{table_run.state}\t{table_run.table or table_run.dest}")
            _emit(out, ns.out)
        return 0
    if cmd == "estimate":
        options = RunOptions.from_args(ns, template=ns.template)
        if _as_frame(ns):
            print(gbm.estimate(_read_table(ns.input), ns.prompt, **options.estimate_kwargs()))
        else:
            kwargs = {k: v for k, v in options.estimate_kwargs().items()
                      if k not in ("media", "mime_type")}
            print(gbm.estimate_file(ns.input, ns.prompt, **kwargs))
        return 0
    if cmd == "embed":
        return _embed(ns)
    if cmd == "list":
        table = gbm.runs()
        print(table.to_string(index=False) if len(table) else "no runs yet")
        return 0
    if cmd in ("status", "wait", "cancel", "retry", "results"):
        run = gbm.attach(ns.run)
        if cmd == "status":
            from ._secrets import redact
            from .widgets import summary_line

            run.refresh()
            print(summary_line(run))
            if run.error:  # the service's own reason, e.g. why a batch FAILED
                print(f"  error: {redact(run.error)}")
            for s in run.shards:
                print(f"  shard {s.shard}: {s.batch_name or '-'} {s.state} "
                      f"{s.succeeded + s.failed}/{s.n_requests} answered")
        elif cmd == "wait":
            run.wait()
        elif cmd == "cancel":
            print(f"{run.cancel().run_id}\t{run.state}")
        elif cmd == "retry":
            child = run.retry_failed()
            if child is not None:
                print(f"{child.run_id}\t{child.state}\t{child.n_rows} rows")
        elif ns.out and isinstance(run, gbm.BatchRun):  # streamed, one shard at a time
            print(f"wrote {run.write_results(ns.out)} rows to {ns.out}")
        else:  # a run made from polars or Arrow is written through pandas here too
            out = run.result(format="pandas") if isinstance(run, gbm.BatchRun) else run.result()
            if ns.out:
                _write_table(out, ns.out)
                print(f"wrote {len(out)} rows to {ns.out}")
            else:
                with pd.option_context("display.max_colwidth", 80):
                    print(out.to_string())
        return 0
    if cmd == "backend":
        print(gbm.backend_info().describe())  # where the key came from, never the key
        return 0
    if cmd == "config":
        for k, v in gbm.settings.as_dict().items():
            print(f"{k} = {v}")
        return 0
    raise AssertionError(cmd)


def _embed(ns: argparse.Namespace) -> int:
    """``gembatch embed``: an embedding run of a file's column, waited for and written."""
    import numpy as np

    import gemini_batch_magic as gbm

    kwargs = {k: getattr(ns, k) for k in ("model", "key", "task_type", "output_dimensionality",
                                         "title", "max_cost", "force", "name")}
    got = gbm.embed(_read_table(ns.input), ns.col, dry_run=ns.dry_run, **kwargs)
    if ns.dry_run:
        print(got)
        return 0
    print(f"{got.run_id}\t{got.state}\t{' '.join(got.batch_names)}")
    if ns.no_wait:
        return 0
    out = got.run_to_completion()
    failed = int(out["error"].notna().sum())
    if ns.out and ns.out.lower().endswith(".npy"):
        np.save(ns.out, got.vectors())
    elif ns.out:
        _write_table(out, ns.out)
    else:
        print(out.to_string())
    if ns.out:
        print(f"wrote {len(out)} rows to {ns.out} ({failed} failed: see the error column; "
              f"gembatch retry {got.run_id})")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``gembatch``; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "emulator" and "--vertex" in argv[1:]:
        from .emulator._bed import main as bed_main

        return bed_main([a for a in argv[1:] if a != "--vertex"], prog="gembatch emulator --vertex")
    if argv and argv[0] == "emulator":
        from .emulator import main as emulator_main

        return int(emulator_main(argv[1:]) or 0)
    ns = _parser().parse_args(argv)
    from .exceptions import BackendError, GemBatchError

    try:
        return _run(ns, [])
    except BackendError as exc:
        print(f"gembatch: {exc}", file=sys.stderr)
        return 1
    except GemBatchError as exc:
        print(f"gembatch: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gembatch: interrupted; the run goes on (gembatch list shows it)", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
