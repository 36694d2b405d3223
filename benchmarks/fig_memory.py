"""Figure 4: PEAK MEMORY of figure 3, against the size of the responses file.

The client process of each figure-3 variant is a fresh subprocess; its high-water RSS, read
at the end of the run, is divided by the size of the responses file(s) the run downloaded.
The high-water mark is ``VmHWM`` from ``/proc/self/status``, reset after the input frame is
loaded; ``ru_maxrss`` (in ``extra``) is not used because, for an exec'd child, Linux also
counts the RSS the parent (this harness, holding figures 1-2's data) had when it forked. Target for our engine: at most 2.5x (the
file is streamed to disk and parsed in blocks, never held twice).

The RSS includes everything the process holds: the interpreter and its imports (pandas,
pyarrow, google-genai: about 200 MB) and the input DataFrame (read from parquet before the
timed part starts); ``extra`` has the high-water mark before the run started too.

When figure 3 ran in the same invocation with the same N, its runs are reused (the best
run's peak is reported; all peaks are in ``runs``); otherwise one run per variant is made.
"""

from __future__ import annotations

from typing import Any

from benchmarks.fig_e2e import BASELINE, RUNS, run_variants
from benchmarks.registry import OURS, Context, Measurement, figure

TARGET = 2.5


@figure(4, "memory", "peak client RSS of figure 3 / responses-file bytes")
def memory(ctx: Context) -> list[Measurement]:
    """Peak RSS / responses-file size of both variants of figure 3."""
    runs: dict[str, list[dict[str, Any]]] = {}
    if all((ctx.rows, v) in RUNS for v in (OURS, BASELINE)):
        runs = {v: RUNS[(ctx.rows, v)] for v in (OURS, BASELINE)}
    else:
        runs = run_variants(ctx, 1)
    out: list[Measurement] = []
    for variant, rs in runs.items():
        r = min(rs, key=lambda x: x["peak_rss"])
        ratio = r["peak_rss"] / max(r["responses_bytes"], 1)
        out.append(Measurement(
            figure=4, name="peak-rss/file", variant=variant, rows=ctx.rows, seconds=None,
            baseline=variant != OURS, runs=[x["peak_rss"] / max(x["responses_bytes"], 1)
                                            for x in rs],
            value=ratio, unit="x file",
            notes=(f"peak RSS {r['peak_rss'] / 1e6:,.0f} MB / responses file "
                   f"{r['responses_bytes'] / 1e6:,.0f} MB (target for ours <= {TARGET}x); "
                   f"RSS high-water before the run (interpreter + input frame) "
                   f"{r['rss_before'] / 1e6:,.0f} MB"),
            extra={"peak_rss_bytes": r["peak_rss"], "responses_bytes": r["responses_bytes"],
                   "rss_before_bytes": r["rss_before"], "ru_maxrss_bytes": r.get("ru_maxrss"),
                   "input_loading_peak_bytes": r.get("loading_peak"),
                   "increase_over_file": (r["peak_rss"] - r["rss_before"])
                   / max(r["responses_bytes"], 1)},
        ))
    return out
