"""Figure 1: BUILD, a DataFrame of prompts -> JSONL request file(s) on disk.

Variants, all from the same DataFrame (column ``text``, pandas' default text dtype) with the
same shared request fields, each writing into a fresh folder:

* ``gemini_batch_magic``: prompt_texts + check_prompts + check_keys + take_prompts +
  write_request_files, the steps the engine runs (validation, 0600 files, sha256, size limits
  included; Arrow-held text stays in Arrow until written, a chunk at a time).
* ``notebooks``: the Batch Mode notebook's way: a dict per request, ``json.dumps`` per line,
  written line by line.
* ``orjson-floor``: the fastest few lines one would write by hand: ``orjson.dumps`` of a dict
  per row, joined and written at once (no validation, no limits, no hash).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa

from benchmarks.data import make_prompts
from benchmarks.registry import OURS, Context, Measurement, figure, time_variants
from gemini_batch_magic._requests import (
    ArrowText,
    check_keys,
    check_prompts,
    prompt_texts,
    take_prompts,
    write_request_files,
)

#: Request fields shared by every row, as a typical call sets them.
SHARED: dict[str, Any] = {
    "systemInstruction": {"parts": [{"text": "You are a careful annotator. Answer in one word."}]},
    "generationConfig": {"temperature": 0.2, "maxOutputTokens": 256},
}
#: The service's limit for an input file (2 GB) and a generous request count.
MAX_FILE_BYTES = 2_000_000_000
MAX_REQUESTS = 10_000_000


def build_ours(df: pd.DataFrame, out: Path) -> int:
    """What the engine does; returns the bytes written."""
    prompts = prompt_texts(df, prompt="text")
    mask = check_prompts(prompts)
    check_keys(df)
    rows = np.flatnonzero(mask)
    keys = ArrowText(pa.array(rows, type=pa.int64()).cast(pa.string()))
    sent = take_prompts(prompts, rows)
    files = write_request_files(
        out, sent, keys, SHARED, max_file_bytes=MAX_FILE_BYTES, max_requests=MAX_REQUESTS
    )
    return sum(f.n_bytes for f in files)


def build_notebooks(df: pd.DataFrame, out: Path) -> None:
    """The notebook's loop: one dict and one json.dumps per request, one write per line."""
    with open(out / "my-batch-requests.jsonl", "w") as f:
        for i, text in enumerate(df["text"]):
            request = {
                "key": str(i),
                "request": {"contents": [{"parts": [{"text": text}], "role": "user"}], **SHARED},
            }
            f.write(json.dumps(request) + "\n")


def build_floor(df: pd.DataFrame, out: Path) -> None:
    """The fastest few-line orjson version."""
    dumps, nl = orjson.dumps, orjson.OPT_APPEND_NEWLINE
    (out / "requests.jsonl").write_bytes(
        b"".join(
            [
                dumps(
                    {
                        "key": str(i),
                        "request": {
                            "contents": [{"parts": [{"text": t}], "role": "user"}],
                            **SHARED,
                        },
                    },
                    option=nl,
                )
                for i, t in enumerate(df["text"].tolist())
            ]
        )
    )


def _sha256(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            while block := f.read(1 << 24):
                digest.update(block)
    return digest.hexdigest()


@figure(1, "build", "DataFrame -> JSONL request files on disk")
def build(ctx: Context) -> list[Measurement]:
    """Time the three ways of building the request file from the same DataFrame."""
    data = make_prompts(ctx.rows)
    df = data.df
    dirs = {name: ctx.workdir / name for name in (OURS, "notebooks", "orjson-floor")}

    def fresh(name: str) -> None:
        shutil.rmtree(dirs[name], ignore_errors=True)
        dirs[name].mkdir(parents=True)

    sizes: dict[str, int] = {}

    def ours() -> None:
        sizes["bytes"] = build_ours(df, dirs[OURS])

    runs = time_variants(
        {
            OURS: ours,
            "notebooks": lambda: build_notebooks(df, dirs["notebooks"]),
            "orjson-floor": lambda: build_floor(df, dirs["orjson-floor"]),
        },
        ctx.repeat,
        setup=fresh,
    )
    # Same content: our files, concatenated, are byte for byte the floor's file.
    same = _sha256(sorted(dirs[OURS].glob("*.jsonl"))) == _sha256(
        [dirs["orjson-floor"] / "requests.jsonl"]
    )
    chars = int(df["text"].str.len().sum())
    return [
        Measurement(
            figure=1,
            name="build",
            variant=name,
            rows=ctx.rows,
            seconds=min(r),
            baseline=name != OURS,
            runs=r,
            notes="" if name != OURS else f"output identical to floor: {same}",
            extra={"file_bytes": sizes.get("bytes"), "prompt_chars": chars},
        )
        for name, r in runs.items()
    ]
