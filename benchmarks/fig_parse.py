"""Figure 2: PARSE + ALIGN, a shuffled responses JSONL -> one row per sent key, in order.

The responses file (seeded) has the shape of the real service's output: shuffled lines,
usage metadata, 2% error results, 0.5% blocked prompts, 5% thought parts. Variants, all
producing the response text, error, finish reason and token counts aligned to the keys:

* ``gemini_batch_magic``: ``align_results(parse_results_file(path), keys)``.
* ``gemini_batch_magic (1 broken line)``: the same on a copy whose last line is cut short,
  which sends the whole file through the per-line fallback parser.
* ``notebooks``: the notebook's way: ``json.loads`` per line into a list, Python loops to pull
  the text out, a frame built from dicts, aligned with a dict lookup.
* ``orjson-floor``: the fastest few lines one would write with orjson (no broken-line
  handling, no messages for blocked prompts or missing keys).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pandas as pd

from benchmarks.data import make_responses_file
from benchmarks.registry import OURS, Context, Measurement, figure, time_variants
from gemini_batch_magic._results import align_results, parse_results_file

BROKEN = f"{OURS} (1 broken line)"


def parse_ours(path: Path, keys: list[str]) -> pd.DataFrame:
    """What the engine does."""
    return align_results(parse_results_file(path), keys)


def parse_notebooks(path: Path, keys: list[str]) -> pd.DataFrame:
    """The notebook's way, extended just enough to give the same columns."""
    file_content_bytes = path.read_bytes()
    parsed_responses = [
        json.loads(line) for line in file_content_bytes.decode("utf-8").strip().split("\n")
    ]
    by_key: dict[str, dict[str, Any]] = {}
    for result in parsed_responses:
        row: dict[str, Any] = {
            "response": None,
            "error": None,
            "finish_reason": None,
            "input_tokens": None,
            "output_tokens": None,
        }
        if "response" in result:
            response = result["response"]
            usage = response.get("usageMetadata", {})
            row["input_tokens"] = usage.get("promptTokenCount")
            row["output_tokens"] = usage.get("candidatesTokenCount", 0) + usage.get(
                "thoughtsTokenCount", 0
            )
            if response.get("candidates"):
                candidate = response["candidates"][0]
                text = ""
                for part in candidate["content"]["parts"]:
                    if not part.get("thought"):
                        text += part["text"]
                row["response"] = text
                row["finish_reason"] = candidate.get("finishReason")
            else:
                row["error"] = "blocked"
        else:
            row["error"] = f"{result['error']['code']}: {result['error']['message']}"
        by_key[result["key"]] = row
    missing = {
        "response": None,
        "error": "missing",
        "finish_reason": None,
        "input_tokens": None,
        "output_tokens": None,
    }
    return pd.DataFrame([by_key.get(k, missing) for k in keys])


def _floor_row(r: dict[str, Any]) -> tuple[Any, ...]:
    resp = r.get("response")
    if resp is None:
        return r["key"], None, r["error"]["message"], None, None, None
    c = (resp.get("candidates") or [None])[0]
    u = resp.get("usageMetadata") or {}
    text = "".join(p["text"] for p in c["content"]["parts"] if not p.get("thought")) if c else None
    out = u.get("candidatesTokenCount", 0) + u.get("thoughtsTokenCount", 0)
    return r["key"], text, None, c and c.get("finishReason"), u.get("promptTokenCount"), out


def parse_floor(path: Path, keys: list[str]) -> pd.DataFrame:
    """The fastest few-line orjson version: one tuple per line (each dict freed at once),
    columns by zip, aligned with pandas' reindex."""
    loads = orjson.loads
    rows = [_floor_row(loads(line)) for line in path.read_bytes().splitlines()]
    key, *cols = zip(*rows, strict=True)
    names = ["response", "error", "finish_reason", "input_tokens", "output_tokens"]
    df = pd.DataFrame(dict(zip(names, cols, strict=True)), index=key)
    return df[~df.index.duplicated()].reindex(keys).reset_index(drop=True)


@figure(2, "parse", "shuffled responses JSONL -> frame aligned by key")
def parse(ctx: Context) -> list[Measurement]:
    """Time parsing + aligning the same responses file four ways."""
    path = ctx.workdir / "responses.jsonl"
    keys = make_responses_file(path, ctx.rows)
    broken = ctx.workdir / "responses-broken.jsonl"
    data = path.read_bytes()
    broken.write_bytes(data[: len(data) - 50])  # cut the last line short
    fingerprints: dict[str, tuple[int, int]] = {}

    def check(name: str, result: pd.DataFrame) -> None:
        # What a user reads: the answers, aligned. Compare as a hash, not by keeping frames.
        texts = result["response"].fillna("").tolist()
        fingerprints[name] = (hash(tuple(texts)), int(result["error"].notna().sum()))

    runs = time_variants(
        {
            OURS: lambda: parse_ours(path, keys),
            BROKEN: lambda: parse_ours(broken, keys),
            "notebooks": lambda: parse_notebooks(path, keys),
            "orjson-floor": lambda: parse_floor(path, keys),
        },
        ctx.repeat,
        check=check,
    )
    same_text = fingerprints[OURS][0] == fingerprints["orjson-floor"][0]
    n_errors = fingerprints[OURS][1]
    return [
        Measurement(
            figure=2,
            name="parse",
            variant=name,
            rows=ctx.rows,
            seconds=min(r),
            baseline=name not in (OURS, BROKEN),
            runs=r,
            notes=(
                f"response text identical to floor: {same_text}; error rows: {n_errors}"
                if name == OURS
                else ""
            ),
            extra={"file_bytes": len(data)},
        )
        for name, r in runs.items()
    ]
