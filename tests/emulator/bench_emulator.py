"""Manual benchmark (not collected by pytest): upload, process, download N requests.

    /work/venv/bin/python tests/emulator/bench_emulator.py 1000000

Prints wall seconds and process CPU seconds per phase and the peak RSS. The emulator runs
in this process, so CPU includes the SDK client's share.
"""

from __future__ import annotations

import os
import resource
import sys
import tempfile
import time
import urllib.request

import orjson
from google import genai
from google.genai import types

from gemini_batch_magic.emulator import Emulator


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main(n: int) -> None:
    path = os.path.join(tempfile.gettempdir(), f"gemini_emulator_bench_{n}.jsonl")
    if not os.path.exists(path):
        filler = "lorem ipsum dolor sit amet " * 34  # ~1 KB per line
        with open(path, "wb") as f:
            for i in range(n):
                line = {
                    "key": f"req-{i}",
                    "request": {
                        "contents": [{"parts": [{"text": f"{i} {filler}"}], "role": "user"}]
                    },
                }
                f.write(orjson.dumps(line) + b"\n")
    print(f"input: {n:,} requests, {os.path.getsize(path) / 1e6:,.0f} MB")
    with Emulator() as emu:
        client = genai.Client(
            api_key="test-key",
            http_options=types.HttpOptions(base_url=emu.url, timeout=3_600_000),
        )
        t, c = time.time(), _cpu()
        src = client.files.upload(file=path, config={"mime_type": "jsonl"})
        print(f"upload   {time.time() - t:7.2f} s wall {_cpu() - c:7.2f} s cpu")
        t, c = time.time(), _cpu()
        job = client.batches.create(model="gemini-2.5-flash", src=src.name or "")
        print(f"create   {time.time() - t:7.2f} s wall {_cpu() - c:7.2f} s cpu")
        t, c = time.time(), _cpu()
        while not (job := client.batches.get(name=job.name or "")).done:
            time.sleep(0.1)
        wall, cpu = time.time() - t, _cpu() - c
        print(
            f"process  {wall:7.2f} s wall {cpu:7.2f} s cpu "
            f"({n / wall:,.0f} req/s wall, {n / cpu:,.0f} req/CPU-s) -> {job.state}"
        )
        assert job.dest is not None and job.dest.file_name is not None
        t, c = time.time(), _cpu()
        fid = job.dest.file_name.split("/", 1)[1]
        req = urllib.request.Request(
            f"{emu.url}/v1/files/{fid}:download?alt=media", headers={"x-goog-api-key": "k"}
        )
        size = 0
        with urllib.request.urlopen(req) as r:
            while chunk := r.read(1 << 20):
                size += len(chunk)
        print(
            f"download {time.time() - t:7.2f} s wall {_cpu() - c:7.2f} s cpu ({size / 1e6:,.0f} MB)"
        )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:,.0f} MB")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
