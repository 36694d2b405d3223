"""Figures 6 and 7: SUBMITTING 10,000 small images, against a hand-written SDK loop.

A DataFrame of 10,000 distinct small PNG files (48x48 pixels of noise, about 7 KB each; a
question per row) is submitted as one batch to an emulator in its own process, each variant
in a fresh client process, timed from the call until the batch is created (nothing is
waited for: the emulator keeps the batch pending). Peak memory is the client's RSS
high-water mark during the submit (``VmHWM``, reset once the input frame is loaded).

* figure 6, **inline**: every image goes inline (base64 in the JSONL request file, which
  is uploaded once). Ours: ``gbm.submit(df, "q", media="path")`` (the files are read,
  typed from their bytes, hashed, and each line written once). The baseline is what a
  notebook does by hand: for each row read the file, base64 it, ``json.dumps`` the request,
  write the line; upload the file; create the batch.
* figure 7, **upload**: every image through the File API (``media_inline_bytes=0`` for
  ours, which uploads ``max_concurrent_uploads`` at a time; the baseline uploads them one
  after the other with ``client.files.upload``, as the SDK's examples do), then a JSONL of
  ``fileData`` parts. Ours is also timed submitting the same images again with another
  question (``extra.resubmit_seconds``): the registry knows the uploads, so they are reused
  (each checked with a ``files.get``).

``--quick`` uses 300 images. Each variant is run once (10,000 uploads per run take a while).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.fig_e2e import _settle_memory, client_env, emulator, vm_hwm
from benchmarks.registry import OURS, Context, Measurement, figure

BASELINE = "sdk-loop"
MODEL = "gemini-2.5-flash"
IMAGES = 10_000
QUICK_IMAGES = 300


def make_images(folder: Path, n: int) -> Path:
    """``n`` distinct noise PNGs and a parquet of (q, path); returns the parquet."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(12)
    paths = []
    for i in range(n):
        path = folder / f"img{i:05d}.png"
        Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    table = folder.parent / "images.parquet"
    pd.DataFrame({"q": [f"What is in image {i}?" for i in range(n)], "path": paths},
                 index=pd.Index(rng.permutation(n), name="id")).to_parquet(table)
    return table


def run_ours(df: pd.DataFrame, mode: str) -> dict[str, Any]:
    import gemini_batch_magic as gbm

    gbm.configure(media_inline_bytes=0 if mode == "upload" else 1_000_000)
    start = time.perf_counter()
    run = gbm.submit(df, "q", media="path", background=False, confirm=True)
    seconds = time.perf_counter() - start
    assert run.batch_names, run
    out: dict[str, Any] = {"seconds": seconds}
    if mode == "upload":
        start = time.perf_counter()
        again = gbm.submit(df.assign(q=df["q"] + " Be brief."), "q", media="path",
                           background=False, confirm=True)
        out["resubmit_seconds"] = time.perf_counter() - start
        assert again.batch_names and again.run_id != run.run_id
    return out


def run_baseline(df: pd.DataFrame, mode: str, workdir: Path) -> dict[str, Any]:
    """The hand-written loop: what a notebook does with the SDK alone."""
    from google import genai
    from google.genai import types

    client = genai.Client(api_key=os.environ["GEMINI_API_KEY"],
                          http_options=types.HttpOptions(
                              base_url=os.environ["GOOGLE_GEMINI_BASE_URL"]))
    start = time.perf_counter()
    jsonl = workdir / "requests.jsonl"
    with open(jsonl, "w") as f:
        for i, row in df.iterrows():
            if mode == "upload":
                up = client.files.upload(file=row["path"])
                part = {"file_data": {"file_uri": up.uri, "mime_type": up.mime_type}}
            else:
                with open(row["path"], "rb") as img:
                    data = base64.b64encode(img.read()).decode()
                part = {"inline_data": {"mime_type": "image/png", "data": data}}
            req = {"contents": [{"role": "user", "parts": [{"text": row["q"]}, part]}]}
            f.write(json.dumps({"key": str(i), "request": req}) + "\n")
    up = client.files.upload(file=str(jsonl), config={"mime_type": "jsonl"})
    job = client.batches.create(model=MODEL, src=up.name)
    assert job.name
    return {"seconds": time.perf_counter() - start}


def worker(variant: str, mode: str, table: Path, workdir: Path, out: Path) -> None:
    """One measured submit in this fresh process; its numbers go to ``out`` as JSON."""
    df = pd.read_parquet(table)
    if variant == OURS:
        import gemini_batch_magic  # noqa: F401  (import time is not what we measure)
    from google import genai  # noqa: F401

    _settle_memory()
    before = vm_hwm()
    cpu0 = time.process_time()
    got = run_ours(df, mode) if variant == OURS else run_baseline(df, mode, workdir)
    got.update(cpu=time.process_time() - cpu0, peak_rss=vm_hwm(), rss_before=before)
    out.write_text(json.dumps(got))


def _measure(ctx: Context, mode: str, number: int) -> list[Measurement]:
    n = QUICK_IMAGES if ctx.quick else IMAGES
    table = make_images(ctx.workdir / "images", n)
    results: dict[str, dict[str, Any]] = {}
    with emulator(pending_seconds=3600) as emu:
        for variant in (OURS, BASELINE):
            home = ctx.workdir / f"home-{variant}"
            scratch = ctx.workdir / f"scratch-{variant}"
            scratch.mkdir()
            out = ctx.workdir / f"{variant}.json"
            env = client_env(emu.url, home)
            env["PYTHONPATH"] = os.pathsep.join(
                [str(Path(__file__).resolve().parent.parent), env.get("PYTHONPATH", "")])
            proc = subprocess.run([sys.executable, "-m", "benchmarks.fig_media", variant, mode,
                                   str(table), str(scratch), str(out)], env=env,
                                  timeout=3600, stderr=subprocess.PIPE, text=True)
            if proc.returncode:
                raise RuntimeError(f"{variant} ({mode}) failed: {proc.stderr[-3000:]}")
            results[variant] = json.loads(out.read_text())
    rows: list[Measurement] = []
    for variant, r in results.items():
        extra = {k: v for k, v in r.items() if k != "seconds"}
        rows.append(Measurement(
            figure=number, name=f"submit-{mode}", variant=variant, rows=n,
            seconds=r["seconds"], baseline=variant != OURS, runs=[r["seconds"]],
            notes=f"{n:,} PNG files {'inline' if mode == 'inline' else 'uploaded'}; "
                  f"client CPU {r['cpu']:.1f} s"
                  + (f"; resubmit (uploads reused) {r['resubmit_seconds']:.2f} s"
                     if "resubmit_seconds" in r else ""),
            extra=extra))
        rows.append(Measurement(
            figure=number, name=f"peak-rss-{mode}", variant=f"{variant} (memory)", rows=n,
            seconds=None, baseline=False, value=(r["peak_rss"] - r["rss_before"]) / 1e6,
            unit="MB", notes=f"peak RSS during the submit {r['peak_rss'] / 1e6:,.0f} MB, of "
                             f"which {r['rss_before'] / 1e6:,.0f} MB before it",
            extra={"peak_rss_bytes": r["peak_rss"], "rss_before_bytes": r["rss_before"]}))
    return rows


@figure(6, "media-inline", "submit 10,000 small images inline (base64 in the JSONL)")
def media_inline(ctx: Context) -> list[Measurement]:
    return _measure(ctx, "inline", 6)


@figure(7, "media-upload", "submit 10,000 small images through the File API")
def media_upload(ctx: Context) -> list[Measurement]:
    return _measure(ctx, "upload", 7)


if __name__ == "__main__":
    worker(sys.argv[1], sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]), Path(sys.argv[5]))
