"""Figure 8: POLARS IN, POLARS OUT, end to end, beside the same run from pandas.

The prompts of figure 3 (``benchmarks.data.make_prompts``, one column ``text``) are written
to parquet once; each variant runs in a fresh client subprocess against one emulator in its
own process (``--pending-seconds 0 --rate 0``), like figure 3:

* ``polars-in/polars-out``: ``pl.read_parquet`` (polars' own string layout), then
  ``gbm.submit(pdf, "text")``, ``run.wait()``, ``run.result()``, which is a polars
  DataFrame. On the way in the text is cast once from polars' views to Arrow
  ``large_string`` (the engine's Arrow paths read offsets); on the way out the answers go
  from Arrow into polars' layout, one more copy.
* ``pandas-in/pandas-out`` (the baseline): ``pd.read_parquet`` (pandas 3's Arrow-backed
  ``str``), the same calls, a pandas DataFrame back.

Both use default settings (JSONL files, two 500,000-request shards at 1M rows) with a poll
every ``POLL_SECONDS``. ``seconds`` is the client-side time (total minus the time slept
between polls), as in figure 3; the ``peak-rss`` rows are the client's RSS high-water mark
during the run (``VmHWM``, reset after the input was read), with the input frame resident.
Both variants' answers are checked equal (``identical answers``), outside the timed part.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.fig_e2e import (
    MODEL,
    POLL_SECONDS,
    _settle_memory,
    _Timeline,
    emulator,
    input_parquet,
    run_client,
    vm_hwm,
)
from benchmarks.registry import Context, Measurement, figure

OURS_POLARS = "polars-in/polars-out"
BASELINE = "pandas-in/pandas-out"


def _answers_hash(values: list[Any]) -> str:
    return hashlib.sha256(json.dumps(values, ensure_ascii=False).encode()).hexdigest()


def worker(variant: str, parquet: Path, out: Path) -> None:
    """One measured run in this fresh process; its numbers go to ``out`` as JSON."""
    import gemini_batch_magic as gbm  # (import time is not what is measured)

    if variant == OURS_POLARS:
        import polars as pl

        frame: Any = pl.read_parquet(parquet)
    else:
        import pandas as pd

        frame = pd.read_parquet(parquet)
    tl = _Timeline()
    tl.install()
    _settle_memory()
    rss_before = vm_hwm()
    cpu0 = time.process_time()
    start = time.perf_counter()
    run = gbm.submit(frame, "text", model=MODEL, background=False, confirm=True)
    run.wait(poll_interval=POLL_SECONDS, progress=False)
    result = run.result()
    total = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    peak = vm_hwm()
    kind = type(result).__module__.split(".")[0]
    responses = (result["response"].to_list() if kind == "polars"
                 else result["response"].tolist())
    out.write_text(json.dumps({
        "variant": variant, "rows": len(frame), "result_kind": kind, "total": total,
        "client": total - tl.slept, "service": tl.slept, "cpu": cpu, "peak_rss": peak,
        "rss_before": rss_before, "batches": len(tl.created),
        "answers": _answers_hash(responses),
        "errors": int(len(result) - result["error"].null_count() if kind == "polars"
                      else result["error"].notna().sum()),
    }))


def _measure(variant: str, parquet: Path, emu: Any, scratch: Path) -> dict[str, Any]:
    return run_client("benchmarks.fig_polars", emu, scratch, "polars-",
                      lambda workdir, out: [variant, str(parquet), str(out)])


@figure(10, "polars", "polars in, polars out, end to end, beside the same run from pandas")
def polars_e2e(ctx: Context) -> list[Measurement]:
    """Client-side seconds and peak RSS of both variants, interleaved, best of ``repeat``
    (two runs each with ``--quick``)."""
    parquet = input_parquet(ctx)
    repeat = 2 if ctx.quick else ctx.repeat
    runs: dict[str, list[dict[str, Any]]] = {OURS_POLARS: [], BASELINE: []}
    with emulator() as emu:
        for _ in range(repeat):
            for variant in runs:
                runs[variant].append(_measure(variant, parquet, emu, ctx.workdir))
    same = len({r["answers"] for rs in runs.values() for r in rs}) == 1
    kinds = {v: {r["result_kind"] for r in rs} for v, rs in runs.items()}
    best = {v: min(rs, key=lambda r: r["client"]) for v, rs in runs.items()}
    low = {v: min(rs, key=lambda r: r["peak_rss"]) for v, rs in runs.items()}
    out: list[Measurement] = []
    for variant, rs in runs.items():
        b = best[variant]
        out.append(Measurement(
            figure=10, name="polars-e2e-client", variant=variant, rows=ctx.rows,
            seconds=b["client"], baseline=variant == BASELINE, runs=[r["client"] for r in rs],
            notes=(f"client-side seconds (total {b['total']:.1f} s, poll every "
                   f"{POLL_SECONDS:g} s); client CPU {min(r['cpu'] for r in rs):.1f} s "
                   f"(least of {len(rs)}); result is {'/'.join(sorted(kinds[variant]))}; "
                   f"identical answers: {same}"),
            extra={**{k: b[k] for k in ("total", "service", "cpu", "batches", "errors",
                                        "peak_rss", "rss_before")},
                   "cpu_runs": [r["cpu"] for r in rs], "total_runs": [r["total"] for r in rs]},
        ))
    base_peak = low[BASELINE]["peak_rss"] - low[BASELINE]["rss_before"]
    for variant, rs in runs.items():
        r = low[variant]
        grew = r["peak_rss"] - r["rss_before"]
        out.append(Measurement(
            figure=10, name="polars-peak-rss", variant=f"{variant} (memory)", rows=ctx.rows,
            seconds=None, value=r["peak_rss"] / 1e6, unit="MB",
            runs=[x["peak_rss"] / 1e6 for x in rs],
            notes=(f"peak RSS {r['peak_rss'] / 1e6:,.0f} MB, {r['rss_before'] / 1e6:,.0f} MB "
                   f"before the run (interpreter + input frame); growth during the run "
                   f"{grew / 1e6:,.0f} MB = {grew / max(base_peak, 1):.2f}x pandas'"),
            extra={"peak_rss_bytes": r["peak_rss"], "rss_before_bytes": r["rss_before"],
                   "growth_vs_pandas": grew / max(base_peak, 1),
                   "peak_vs_pandas": r["peak_rss"] / max(low[BASELINE]["peak_rss"], 1)},
        ))
    return out


if __name__ == "__main__":
    worker(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]))
