"""Broken results hurt only their own rows: each carries a clear error, all others are intact.

Response shapes come from a custom ``responder``; file-level corruption is made by rewriting
the generated responses file in the emulator's data folder after the batch finished and
before the engine downloads it.
"""

from __future__ import annotations

from typing import Any

import orjson
import pandas as pd
import pytest

from gemini_batch_magic._config import settings

from ._util import eventually, last_text, text_response


def shaped(request: dict[str, Any], model: str) -> dict[str, Any]:
    text = last_text(request)
    if text.startswith("nocand"):
        return {"candidates": [], "usageMetadata": {"promptTokenCount": 1}}
    if text.startswith("blocked"):
        return {"promptFeedback": {"blockReason": "SAFETY"}}
    if text.startswith("unsafe"):
        return {"candidates": [{"finishReason": "SAFETY", "index": 0}]}
    if text.startswith("empty"):
        return {"candidates": [{"content": {"role": "model", "parts": []},
                                "finishReason": "MAX_TOKENS"}]}
    return text_response(text.upper())


PROMPTS = ["ok a", "nocand b", "ok c", "blocked d", "unsafe e", "empty f", "ok g"]
EXPECTED_ERRORS = {
    "nocand b": "no candidates",
    "blocked d": "SAFETY",
    "unsafe e": "SAFETY",
    "empty f": "MAX_TOKENS",
}


@pytest.mark.parametrize("source", ["inline", "file"])
def test_odd_response_shapes_error_only_their_rows(emulator_factory: Any, source: str) -> None:
    emulator_factory(responder=shaped)
    if source == "file":
        settings.inline_limit_bytes = 100
    df = pd.DataFrame({"p": PROMPTS}, index=[f"r{i}" for i in range(len(PROMPTS))])
    run = df.gembatch.submit("p")
    out = run.wait(progress=False).result()
    assert run.state == "SUCCEEDED"
    for label, prompt in zip(df.index, PROMPTS, strict=True):
        row = out.loc[label]
        if prompt in EXPECTED_ERRORS:
            assert pd.isna(row["response"])
            assert EXPECTED_ERRORS[prompt] in row["error"], row["error"]
        else:
            assert pd.isna(row["error"]) and row["response"] == prompt.upper()
    assert run.stats.failed == len(EXPECTED_ERRORS)


def _corrupt(lines: list[bytes]) -> tuple[list[bytes], dict[str, str]]:
    """Damage the file; returns the damaged lines and {key: expected error} of hit rows."""
    by_key = {orjson.loads(line)["key"]: line for line in lines}
    hit: dict[str, str] = {}
    by_key["2"] = b'{"key": "2", "response": {"candidates": [nope'  # not JSON, key readable
    hit["2"] = "not valid JSON"
    by_key["4"] = b"\x00\xff garbage with no key at all"  # not JSON, key unknown
    hit["4"] = "no result returned"
    line = orjson.loads(by_key.pop("6"))
    line["key"] = "60000"  # an unknown key: ignored, row 6 has no answer
    by_key["unknown"] = orjson.dumps(line)
    hit["6"] = "no result returned"
    by_key["dup"] = by_key["8"]  # key 8 twice
    hit["8"] = "2 results"
    out = list(by_key.values())
    last = orjson.loads(out[-1])["key"]
    out[-1] = out[-1][: len(out[-1]) // 2]  # a truncated last line (download cut short)
    hit.setdefault(last, "")
    return out, hit


def test_corrupt_responses_file_hurts_only_its_rows_and_retry_recovers(
    emulator_factory: Any,
) -> None:
    emu = emulator_factory(seed=4)
    settings.inline_limit_bytes = 100
    df = pd.DataFrame({"p": [f"row {i}" for i in range(20)]}, index=pd.RangeIndex(1000, 1020))
    run = df.gembatch.submit("p")
    batch_id = run.batch_names[0].removeprefix("batches/")
    published = eventually(
        lambda: [f for f in emu.files() if f.get("name") == f"files/batch-{batch_id}"],
        what="the responses file to be published",
    )
    assert published
    path = emu.data_dir / "files" / f"batch-{batch_id}.bin"
    lines = [line for line in path.read_bytes().split(b"\n") if line]
    damaged, hit = _corrupt(lines)
    path.write_bytes(b"\n".join(damaged) + b"\n")

    out = run.wait(progress=False).result()
    assert run.state == "SUCCEEDED"
    positions = {str(i): label for i, label in enumerate(df.index)}
    for key, label in positions.items():
        if key in hit:
            assert out.loc[label, "error"] is not None
            assert hit[key] in out.loc[label, "error"], out.loc[label, "error"]
        else:
            assert pd.isna(out.loc[label, "error"]), (key, out.loc[label, "error"])
            assert out.loc[label, "response"] == df.loc[label, "p"]
    assert run.stats.failed == len(hit)

    child = run.retry_failed()
    assert child is not None and child.n_rows == len(hit)
    child.wait(progress=False)
    merged = run.result()
    assert merged["error"].isna().all()
    assert merged["response"].tolist() == df["p"].tolist()
