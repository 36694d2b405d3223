"""Command line of the benchmarks: ``python -m benchmarks [--rows N | --quick] [--only ...]``."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from benchmarks.figures import FIGURES
from benchmarks.registry import Context, Measurement
from benchmarks.report import format_table, write_json

DEFAULT_ROWS = 1_000_000
QUICK_ROWS = 20_000
DEFAULT_OUT = Path(__file__).parent / "results" / "latest.json"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Time gemini_batch_magic against the notebooks' way and an orjson floor.",
    )
    parser.add_argument(
        "--rows", type=int, default=None, help=f"rows per figure (default {DEFAULT_ROWS:,})"
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"a fast smoke run with {QUICK_ROWS:,} rows"
    )
    parser.add_argument(
        "--only",
        default=None,
        help="comma-separated figure names to run (default: all): " + ",".join(FIGURES),
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="timed runs per variant; the best counts (default 3, or 2 at 1M+ rows)",
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"JSON results file (default {DEFAULT_OUT})"
    )
    parser.add_argument(
        "--workdir", type=Path, default=None, help="scratch folder (default: a temporary folder)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the selected figures, print the table and write the JSON. Returns the exit code."""
    args = parse_args(argv)
    rows = args.rows or (QUICK_ROWS if args.quick else DEFAULT_ROWS)
    repeat = args.repeat or (2 if rows >= 1_000_000 else 3)
    names = (
        list(FIGURES) if not args.only else [n.strip() for n in args.only.split(",") if n.strip()]
    )
    unknown = [n for n in names if n not in FIGURES]
    if unknown:
        print(
            f"unknown figure(s) {', '.join(unknown)}; choose from {', '.join(FIGURES)}",
            file=sys.stderr,
        )
        return 2
    command = sys.argv if argv is None else ["python", "-m", "benchmarks", *argv]
    workdir = Path(tempfile.mkdtemp(prefix="gembatch-bench-", dir=args.workdir))
    measurements: list[Measurement] = []
    try:
        for name in sorted(names, key=lambda n: FIGURES[n].number):
            fig = FIGURES[name]
            print(
                f"figure {fig.number} ({fig.name}): {fig.title}, N={rows:,} ...",
                file=sys.stderr,
                flush=True,
            )
            ctx = Context(rows=rows, workdir=workdir / fig.name, repeat=repeat, quick=args.quick)
            ctx.workdir.mkdir(parents=True)
            measurements.extend(fig.func(ctx))
            # Written after every figure, so a long run that is stopped keeps what it measured.
            write_json(args.out, measurements, command)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(format_table(measurements))
    write_json(args.out, measurements, command)
    print(f"\nwrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
