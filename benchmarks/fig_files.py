"""Figures 8 and 9: A FILE BIGGER THAN MEMORY, parquet in -> parquet of answers out.

The input is a parquet of ``ticket_id`` (unique, shuffled int64) and ``text`` (the
benchmark prompts of :mod:`benchmarks.data`: 50-2,000 characters, about 530 on average),
built here one million rows at a time (the harness never holds it whole). Each variant runs
in a fresh client process against an emulator in its own process (``--pending-seconds 0
--rate 0``), so the client's RSS is the client's:

* ``gemini_batch_magic``: ``gbm.submit_file(path, template="Classify: {text}",
  key="ticket_id")``, ``run.wait()``, ``run.write_results("answers.parquet")``: the file is
  read in batches, written as request shards of 500,000 requests, and the answers written
  out one shard at a time.
* ``notebooks-sdk`` (at most 2,000,000 rows: it holds everything in memory): the figure-3
  script by hand (:func:`benchmarks.fig_e2e.run_notebooks`) after ``pd.read_parquet``, its
  aligned frame written with ``to_parquet``: one request file, one batch.

Figure 8 is the client-side time (total minus the time the client slept between polls,
polling every second in both, as figure 3), figure 9 the client's RSS high-water mark
(``VmHWM``) for the whole job, interpreter and imports included. Targets: peak RSS under
1.5 GB at 1M and 10M rows (bounded: not growing with N), 10M within 11x of 1M, and at 1M
at least 3x the script's throughput. Run ``python -m benchmarks --only files,files-memory
--rows 10000000`` for the big size (about 6 GB of requests: check the disk first).
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.data import make_prompts
from benchmarks.fig_e2e import POLL_SECONDS, _Timeline, emulator, run_client, run_notebooks, vm_hwm
from benchmarks.registry import OURS, Context, Measurement, figure

BASELINE = "notebooks-sdk"
MODEL = "gemini-2.5-flash"
TEMPLATE = "Classify: {text}"
#: The script holds the whole input and result in memory: not run above this many rows.
BASELINE_MAX_ROWS = 2_000_000
_CHUNK = 1_000_000
#: Results of the last run, by rows: figure 9 reuses them.
RUNS: dict[int, dict[str, dict[str, Any]]] = {}


def make_input(path: Path, n: int) -> Path:
    """A parquet of ``n`` rows (ticket_id, text), written a million rows at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.exists():
        return path
    ids = np.random.default_rng(8).permutation(n).astype(np.int64) + 10_000_000
    with pq.ParquetWriter(path, pa.schema([("ticket_id", pa.int64()),
                                           ("text", pa.large_string())])) as writer:
        for i, start in enumerate(range(0, n, _CHUNK)):
            m = min(_CHUNK, n - start)
            texts = make_prompts(m, seed=1000 + i).prompts
            writer.write_table(pa.table({"ticket_id": ids[start:start + m],
                                         "text": pa.array(texts, type=pa.large_string())}),
                               row_group_size=128_000)
            del texts
    return path


def run_ours(parquet: Path, out: Path) -> int:
    import gemini_batch_magic as gbm

    run = gbm.submit_file(parquet, template=TEMPLATE, key="ticket_id", model=MODEL,
                          background=False, confirm=True)
    run.wait(poll_interval=POLL_SECONDS, progress=False)
    return run.write_results(out)


def run_script(parquet: Path, out: Path, workdir: Path) -> int:
    df = pd.read_parquet(parquet)
    df["text"] = [TEMPLATE.format(text=t) for t in df["text"]]
    frame = run_notebooks(df, workdir)
    frame.insert(0, "ticket_id", df["ticket_id"].to_numpy())
    frame.reset_index(drop=True).to_parquet(out)
    return len(frame)


def worker(variant: str, parquet: Path, workdir: Path, out: Path) -> None:
    """One measured run in this fresh process; its numbers go to ``out`` as JSON."""
    if variant == OURS:
        import gemini_batch_magic  # noqa: F401  (import time is not what we measure)
    import pyarrow.parquet  # noqa: F401
    from google import genai  # noqa: F401

    tl = _Timeline()
    tl.install()
    before = vm_hwm()
    cpu0 = time.process_time()
    start = time.perf_counter()
    answers = workdir / "answers.parquet"
    rows = (run_ours(parquet, answers) if variant == OURS
            else run_script(parquet, answers, workdir))
    total = time.perf_counter() - start
    payload = {
        "variant": variant, "rows": rows, "total": total, "service": tl.slept,
        "client": total - tl.slept, "cpu": time.process_time() - cpu0,
        "peak_rss": vm_hwm(), "rss_before": before, "batches": len(tl.created),
        "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "answers_bytes": answers.stat().st_size,
        "upload_s": tl.upload_s, "download_s": tl.download_s,
    }
    import pyarrow.parquet as pq

    head = pq.ParquetFile(answers).read_row_group(0, columns=["ticket_id", "response"])
    payload["first"] = head.slice(0, 1).to_pylist()[0]
    out.write_text(json.dumps(payload, default=str))


def measure(ctx: Context) -> dict[str, dict[str, Any]]:
    if ctx.rows in RUNS:
        return RUNS[ctx.rows]
    parquet = make_input(ctx.workdir / f"tickets-{ctx.rows}.parquet", ctx.rows)
    variants = [OURS] + ([BASELINE] if ctx.rows <= BASELINE_MAX_ROWS else [])
    results: dict[str, dict[str, Any]] = {}
    with emulator() as emu:
        for variant in variants:
            results[variant] = run_client(
                "benchmarks.fig_files", emu, ctx.workdir, f"{variant}-",
                lambda workdir, out, v=variant: [v, str(parquet), str(workdir), str(out)])
    parquet.unlink(missing_ok=True)
    RUNS[ctx.rows] = results
    return results


@figure(8, "files", "a parquet file -> a parquet of answers (submit_file, write_results)")
def files(ctx: Context) -> list[Measurement]:
    """Client-side seconds of both variants (the script only up to 2M rows)."""
    out = []
    for variant, r in measure(ctx).items():
        out.append(Measurement(
            figure=8, name="files-client", variant=variant, rows=ctx.rows, seconds=r["client"],
            baseline=variant != OURS, runs=[r["client"]],
            notes=(f"client-side (total {r['total']:.1f} s minus {r['service']:.1f} s idle "
                   f"between polls); {r['rows']:,} rows written; {r['batches']} batches; "
                   f"client CPU {r['cpu']:.1f} s"),
            extra={k: r[k] for k in ("total", "service", "cpu", "batches", "answers_bytes",
                                     "upload_s", "download_s", "peak_rss")},
        ))
    return out


@figure(9, "files-memory", "peak client RSS of figure 8 (the whole job)")
def files_memory(ctx: Context) -> list[Measurement]:
    """Peak RSS of both variants of figure 8 (the same runs when figure 8 ran)."""
    out = []
    for variant, r in measure(ctx).items():
        out.append(Measurement(
            figure=9, name="files-peak-rss", variant=variant, rows=ctx.rows, seconds=None,
            baseline=variant != OURS, runs=[r["peak_rss"] / 1e6], value=r["peak_rss"] / 1e6,
            unit="MB", notes=(f"VmHWM of the client for the whole job, of which "
                              f"{r['rss_before'] / 1e6:,.0f} MB before it (imports); target "
                              "for ours < 1,500 MB at any size"),
            extra={"peak_rss_bytes": r["peak_rss"], "rss_before_bytes": r["rss_before"],
                   "ru_maxrss_bytes": r["ru_maxrss"]},
        ))
    return out


if __name__ == "__main__":
    worker(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
