"""Figure 3: END TO END, a DataFrame -> aligned results, through the real SDK and the emulator.

Both variants run in a fresh client subprocess (``python -m benchmarks.fig_e2e ...``) against an
emulator in its own process (``--pending-seconds 0 --rate 0``), so neither the emulator's CPU
nor its memory counts as the client's, and each run starts with a cold interpreter:

* ``gemini_batch_magic``: ``gbm.submit(df, "text")`` (background=False), ``run.wait()``,
  ``run.result()``: default settings (inline below 19 MB, else JSONL files uploaded with the
  File API, sharded at 500,000 requests), with the poll interval set to ``POLL_SECONDS``.
* ``notebooks-sdk``: the Batch Mode notebook's way by hand: ``json.dumps`` per line written
  line by line, ``client.files.upload``, ``client.batches.create``, ``batches.get`` every
  ``POLL_SECONDS`` until done, ``client.files.download`` to bytes, ``json.loads`` per line,
  a dict by key and one row per input row (same columns as ours).

``seconds`` is the *client-side* time: the total minus the service's share, i.e. the time
the client sat idle between polls (main-thread ``time.sleep``, recorded by wrapping it in the
client process) while the batch was PENDING/RUNNING on the service. Both variants poll every
``POLL_SECONDS`` and sleep only there, so the poll slack is removed the same way for both; the
``batches.get`` calls themselves count as client time. The emulator-side window (from
``batches.create`` returning to the first ``batches.get`` reporting the batch done, timed by
wrapping the SDK's methods) is kept as ``service_window``: it is not subtracted because a
sharded run uploads later shards and downloads earlier ones inside that window. The total is
reported too.

The emulator is profiled from both sides: upload and download seconds and MB/s as the
client's SDK calls see them, processing seconds and requests/s from the batch's own
``createTime``/``endTime``, and the emulator process's CPU seconds per run (``/proc``).

The subprocess also records its RSS high-water mark (``VmHWM``, reset once the input is loaded;
``ru_maxrss`` too), which figure 4 (:mod:`benchmarks.fig_memory`) uses.

Rows: ``e2e-client`` (the figure, with ratios), ``e2e-total`` and the emulator profile rows;
secondary rows carry variant names such as ``gemini_batch_magic (total)`` and are never
baselines, so the table shows ratios only where they mean what the header says.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from benchmarks.data import make_prompts
from benchmarks.registry import OURS, Context, Measurement, figure

BASELINE = "notebooks-sdk"
MODEL = "gemini-2.5-flash"
#: Poll interval of both variants (the notebook sleeps between polls; we use a second).
POLL_SECONDS = 1.0
RESULT_COLUMNS = ("response", "error", "finish_reason", "input_tokens", "output_tokens")
_DONE = {"JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED"}


# --------------------------------------------------------------------------- the emulator
@dataclass
class EmulatorProcess:
    """An emulator running in its own process."""

    url: str
    proc: subprocess.Popen[str]

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of the emulator process so far (all threads)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def admin(self, method: str, route: str) -> Any:
        """Call an admin route (``/_emulator/...``); returns the decoded JSON."""
        import urllib.request

        req = urllib.request.Request(self.url + route, method=method, data=b"" if method == "POST" else None)
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())


@contextlib.contextmanager
def emulator(pending_seconds: float = 0.0, rate: float = 0.0) -> Iterator[EmulatorProcess]:
    """Start ``python -m gemini_batch_magic.emulator`` in a subprocess; stop it on exit."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "gemini_batch_magic.emulator", "--pending-seconds",
         str(pending_seconds), "--rate", str(rate), "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        if not url.startswith("http"):
            raise RuntimeError(f"the emulator did not start (printed {url!r})")
        yield EmulatorProcess(url=url, proc=proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def client_env(url: str, home: Path) -> dict[str, str]:
    """The environment of a client process talking to the emulator at ``url``."""
    env = {k: v for k, v in os.environ.items() if k not in ("GEMINI_API_KEY", "GOOGLE_API_KEY")}
    env.update(GOOGLE_GEMINI_BASE_URL=url, GEMBATCH_HOME=str(home), GEMBATCH_BACKEND="auto",
               GEMINI_API_KEY="emulator-key")
    return env


# --------------------------------------------------------------------------- the variants
def run_ours(df: pd.DataFrame) -> pd.DataFrame:
    """gemini_batch_magic: submit, wait, result."""
    import gemini_batch_magic as gbm

    run = gbm.submit(df, "text", model=MODEL, background=False, confirm=True)  # no prompt
    run.wait(poll_interval=POLL_SECONDS, progress=False)
    return run.result()


def _row(result: dict[str, Any] | None) -> tuple[Any, ...]:
    """One aligned row from one parsed result line, as a notebook user would write it."""
    if result is None:
        return (None, "no result returned", None, None, None)
    if "error" in result:
        err = result["error"]
        return (None, f"{err.get('code')} {err.get('status')}: {err.get('message')}", None,
                None, None)
    resp = result["response"]
    usage = resp.get("usageMetadata", {})
    out_tok = usage.get("candidatesTokenCount")
    if "thoughtsTokenCount" in usage:
        out_tok = (out_tok or 0) + usage["thoughtsTokenCount"]
    cands = resp.get("candidates") or []
    if not cands:
        return (None, "no candidates", None, usage.get("promptTokenCount"), out_tok)
    cand = cands[0]
    text = "".join(p["text"] for p in cand.get("content", {}).get("parts", [])
                   if "text" in p and not p.get("thought"))
    return (text or None, None if text else "no text", cand.get("finishReason"),
            usage.get("promptTokenCount"), out_tok)


def run_notebooks(df: pd.DataFrame, workdir: Path) -> pd.DataFrame:
    """The notebook's way, by hand with the SDK."""
    from google import genai
    from google.genai import types

    client = genai.Client(http_options=types.HttpOptions(
        base_url=os.environ["GOOGLE_GEMINI_BASE_URL"]))
    path = workdir / "my-batch-requests.jsonl"
    with open(path, "w") as f:
        for i, text in enumerate(df["text"]):
            request = {"key": str(i),
                       "request": {"contents": [{"parts": [{"text": text}], "role": "user"}]}}
            f.write(json.dumps(request) + "\n")
    uploaded = client.files.upload(
        file=str(path),
        config=types.UploadFileConfig(display_name="my-batch-requests", mime_type="jsonl"),
    )
    job = client.batches.create(model=MODEL, src=uploaded.name)
    assert job.name is not None
    while job.state is None or job.state.name not in _DONE:
        time.sleep(POLL_SECONDS)
        job = client.batches.get(name=job.name)
    assert job.dest is not None and job.dest.file_name is not None
    file_content_bytes = client.files.download(file=job.dest.file_name)
    parsed = [json.loads(line) for line in file_content_bytes.decode("utf-8").strip().split("\n")]
    by_key = {r["key"]: r for r in parsed}
    rows = [_row(by_key.get(str(i))) for i in range(len(df))]
    out = pd.DataFrame(rows, columns=list(RESULT_COLUMNS), index=df.index, dtype=object)
    for col in ("input_tokens", "output_tokens"):
        out[col] = out[col].astype("Int64")
    return out


# --------------------------------------------------------------------------- timing hooks
class _Timeline:
    """Timestamps of the SDK calls that matter, recorded by wrapping the SDK's methods."""

    def __init__(self) -> None:
        self.created: list[float] = []  # create returned
        self.done: dict[str, float] = {}  # batch name -> first get that saw it done
        self.processing: list[float] = []  # endTime - createTime of each finished batch
        self.upload_s = 0.0
        self.upload_bytes = 0
        self.download_s = 0.0
        self.download_bytes = 0
        self.slept = 0.0  # main-thread time.sleep while polling: idle, waiting on the service

    def install(self) -> None:
        import threading

        from google.genai import batches, files

        tl = self
        orig_sleep = time.sleep
        main = threading.main_thread()

        def sleep(seconds: float) -> None:
            start = time.perf_counter()
            orig_sleep(seconds)
            if threading.current_thread() is main:
                tl.slept += time.perf_counter() - start

        time.sleep = sleep  # type: ignore[assignment]
        orig_create, orig_get = batches.Batches.create, batches.Batches.get
        orig_upload, orig_download = files.Files.upload, files.Files.download

        def create(self: Any, *a: Any, **kw: Any) -> Any:
            job = orig_create(self, *a, **kw)
            tl.created.append(time.perf_counter())
            return job

        def get(self: Any, *a: Any, **kw: Any) -> Any:
            job = orig_get(self, *a, **kw)
            state = getattr(getattr(job, "state", None), "name", None)
            if state in _DONE and job.name not in tl.done:
                tl.done[job.name] = time.perf_counter()
                if job.end_time is not None and job.create_time is not None:
                    tl.processing.append((job.end_time - job.create_time).total_seconds())
            return job

        def upload(self: Any, *a: Any, **kw: Any) -> Any:
            start = time.perf_counter()
            out = orig_upload(self, *a, **kw)
            tl.upload_s += time.perf_counter() - start
            tl.upload_bytes += int(out.size_bytes or 0)
            return out

        def download(self: Any, *a: Any, **kw: Any) -> Any:
            dest = kw.get("destination")
            pos = dest.tell() if dest is not None and hasattr(dest, "tell") else 0
            start = time.perf_counter()
            out = orig_download(self, *a, **kw)
            tl.download_s += time.perf_counter() - start
            if isinstance(out, bytes):
                tl.download_bytes += len(out)
            elif dest is not None and hasattr(dest, "tell"):
                tl.download_bytes += dest.tell() - pos
            return out

        batches.Batches.create = create  # type: ignore[method-assign]
        batches.Batches.get = get  # type: ignore[method-assign]
        files.Files.upload = upload  # type: ignore[method-assign]
        files.Files.download = download  # type: ignore[method-assign]

    def service_window(self) -> float:
        """From the first create returning to the last batch seen done (for reference: with
        several shards it also spans client work, uploads of later shards and downloads and
        parsing of earlier ones, so it is not what is subtracted)."""
        if not self.created or not self.done:
            return 0.0
        return max(self.done.values()) - min(self.created)


def fingerprint(frame: pd.DataFrame) -> str:
    """A hash of the aligned result columns (index included), to compare variants cheaply."""
    h = hashlib.sha256()
    h.update(pd.util.hash_pandas_object(frame.index).to_numpy().tobytes())
    for col in RESULT_COLUMNS:
        values = frame[col].astype(object).where(frame[col].notna(), None).tolist()
        h.update(json.dumps(values, ensure_ascii=False).encode())
    return h.hexdigest()


def vm_hwm() -> int:
    """This process's RSS high-water mark in bytes (``VmHWM``; ``ru_maxrss`` when absent).

    ``ru_maxrss`` of an exec'd child also counts the RSS its *parent* had when it forked
    (Linux keeps the old address space's high-water mark across exec), so a child started by
    a large harness process reports the harness's size. ``VmHWM`` is the child's own.
    """
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _settle_memory() -> int:
    """Free what reading the input left behind and restart the RSS high-water mark.

    Reading 1M prompts from parquet peaks at twice the frame's size (Arrow's pool keeps the
    decoding buffers): that is the input's cost, not the run's. The pool's unused memory is
    returned and the kernel's high-water mark reset (``/proc/self/clear_refs``, which
    ``VmHWM`` and ``ru_maxrss`` follow), so the high-water mark at the end is the peak *during*
    the run, with the input frame resident as a user's kernel would hold it. Returns the
    loading peak (bytes).
    """
    import gc

    import pyarrow as pa

    peak = vm_hwm()
    gc.collect()
    pa.default_memory_pool().release_unused()
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
    return peak


def worker(variant: str, parquet: Path, workdir: Path, out: Path) -> None:
    """One measured run in this (fresh) process; writes its numbers to ``out`` as JSON."""
    df = pd.read_parquet(parquet)
    if variant == OURS:
        import gemini_batch_magic  # noqa: F401  (import time is not what we measure)
    from google import genai  # noqa: F401

    tl = _Timeline()
    tl.install()
    loading_peak = _settle_memory()
    rss_before = vm_hwm()
    cpu0 = time.process_time()
    start = time.perf_counter()
    frame = run_ours(df) if variant == OURS else run_notebooks(df, workdir)
    total = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    peak = vm_hwm()
    ru_maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    service = tl.slept
    responses = 0
    if variant == OURS:
        responses = sum(p.stat().st_size for p in (workdir / "home" / "runs").rglob("results-*"))
    else:
        responses = tl.download_bytes
    payload = {
        "variant": variant, "rows": len(df), "total": total, "service": service,
        "client": total - service, "service_window": tl.service_window(), "cpu": cpu, "peak_rss": peak, "rss_before": rss_before,
        "loading_peak": loading_peak, "ru_maxrss": ru_maxrss,
        "responses_bytes": responses, "fingerprint": fingerprint(frame),
        "errors": int(frame["error"].notna().sum()),
        "upload_s": tl.upload_s, "upload_bytes": tl.upload_bytes,
        "download_s": tl.download_s, "download_bytes": tl.download_bytes,
        "processing_s": max(tl.processing, default=0.0), "batches": len(tl.created),
    }
    out.write_text(json.dumps(payload))


def run_client(
    module: str, emu: EmulatorProcess, scratch: Path, prefix: str,
    argv: Callable[[Path, Path], list[str]],
) -> dict[str, Any]:
    """Run ``python -m module *argv(workdir, out)`` as a fresh client of ``emu`` (its own
    ``GEMBATCH_HOME`` under a new ``workdir``); returns the JSON it wrote to ``out``, plus the
    emulator's CPU seconds meanwhile. The workdir is removed afterwards."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix, dir=scratch))
    (workdir / "home").mkdir()
    out = workdir / "out.json"
    cpu0 = emu.cpu_seconds()
    subprocess.run(
        [sys.executable, "-m", module, *argv(workdir, out)],
        env=client_env(emu.url, workdir / "home"), check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    result: dict[str, Any] = json.loads(out.read_text())
    result["emulator_cpu"] = emu.cpu_seconds() - cpu0
    shutil.rmtree(workdir, ignore_errors=True)
    return result


def measure(variant: str, parquet: Path, emu: EmulatorProcess, scratch: Path) -> dict[str, Any]:
    """Run ``variant`` once in a fresh subprocess; returns its numbers (+ emulator CPU)."""
    return run_client("benchmarks.fig_e2e", emu, scratch, f"{variant}-",
                      lambda workdir, out: [variant, str(parquet), str(workdir), str(out)])


#: Results of the last figure-3 run, by (rows, variant): figure 4 reuses their peak RSS.
RUNS: dict[tuple[int, str], list[dict[str, Any]]] = {}


def input_parquet(ctx: Context) -> Path:
    """The benchmark prompts as a parquet file (each client subprocess reads it)."""
    path = ctx.workdir / f"prompts-{ctx.rows}.parquet"
    if not path.exists():
        make_prompts(ctx.rows).df.to_parquet(path)
    return path


def run_variants(ctx: Context, repeat: int) -> dict[str, list[dict[str, Any]]]:
    """``repeat`` interleaved runs of both variants on one emulator process."""
    parquet = input_parquet(ctx)
    runs: dict[str, list[dict[str, Any]]] = {OURS: [], BASELINE: []}
    with emulator() as emu:
        for _ in range(repeat):
            for variant in runs:
                runs[variant].append(measure(variant, parquet, emu, ctx.workdir))
    for variant, results in runs.items():
        RUNS[(ctx.rows, variant)] = results
    return runs


@figure(3, "e2e", "DataFrame -> aligned results through the SDK and the emulator")
def e2e(ctx: Context) -> list[Measurement]:
    """Time both variants end to end; client-side seconds, totals and the emulator profile."""
    repeat = min(ctx.repeat, 2) if ctx.rows >= 1_000_000 else ctx.repeat
    runs = run_variants(ctx, repeat)
    same = len({r["fingerprint"] for rs in runs.values() for r in rs}) == 1
    best = {v: min(rs, key=lambda r: r["client"]) for v, rs in runs.items()}
    total = {v: min(r["total"] for r in rs) for v, rs in runs.items()}
    out: list[Measurement] = []
    for variant, rs in runs.items():
        b = best[variant]
        out.append(Measurement(
            figure=3, name="e2e-client", variant=variant, rows=ctx.rows, seconds=b["client"],
            baseline=variant != OURS, runs=[r["client"] for r in rs],
            notes=("client-side = total - idle time between polls (waiting on the service); "
                   f"poll every {POLL_SECONDS:g} s in both; identical aligned frames: {same}"),
            extra={k: b[k] for k in ("total", "service", "service_window", "cpu", "batches",
                                     "errors", "responses_bytes", "peak_rss")},
        ))
    for variant, rs in runs.items():
        ratio = total[BASELINE] / total[variant]
        out.append(Measurement(
            figure=3, name="e2e-total", variant=f"{variant} (total)", rows=ctx.rows,
            seconds=None, runs=[r["total"] for r in rs], value=total[variant],
            unit="s total", notes=f"total incl. service time; baseline/this = {ratio:.2f}x",
            extra={"service_seconds": [r["service"] for r in rs]},
        ))
    # the emulator, as both variants saw it (upload, processing, download, its CPU)
    for variant, rs in runs.items():
        r = min(rs, key=lambda x: x["total"])
        mb = 1e6
        prof = {
            "upload_s": r["upload_s"], "upload_MBps": r["upload_bytes"] / mb / max(r["upload_s"], 1e-9),
            "processing_s": r["processing_s"],
            "processing_req_per_s": r["rows"] / max(r["processing_s"], 1e-9),
            "download_s": r["download_s"],
            "download_MBps": r["download_bytes"] / mb / max(r["download_s"], 1e-9),
            "emulator_cpu_s": r["emulator_cpu"],
        }
        out.append(Measurement(
            figure=3, name="emulator", variant=f"emulator (for {variant})", rows=ctx.rows,
            seconds=None, value=r["processing_s"], unit="s processing",
            notes=(f"upload {prof['upload_s']:.2f} s ({prof['upload_MBps']:.0f} MB/s), "
                   f"processing {prof['processing_s']:.2f} s "
                   f"({prof['processing_req_per_s']:,.0f} req/s), download "
                   f"{prof['download_s']:.2f} s ({prof['download_MBps']:.0f} MB/s), "
                   f"emulator CPU {prof['emulator_cpu_s']:.2f} s"),
            extra=prof,
        ))
    return out


if __name__ == "__main__":
    worker(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
