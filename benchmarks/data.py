"""Deterministic, realistic benchmark data shared by every figure.

Prompts are 50-2,000 characters (log-uniform, so most are a few hundred), cut from a seeded
corpus of words; about a fifth contain non-ASCII text (accents, Cyrillic, CJK, emoji) and some
contain characters JSON must escape (quotes, backslashes, newlines, tabs). Responses files look
like the real service's output (wire spec §5.2): shuffled, with usage metadata, some errors,
some blocked prompts, some thought parts, and optionally a few broken lines.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import pandas as pd

SEED = 20240601

_ASCII_WORDS = (
    "the of and to in is was for that on with as by at from this be are or an it not have "
    "which data model review product customer summary classify sentiment question answer "
    "report quality delivery price support please explain translate following text order "
    "about would could really great terrible average package arrived quickly broken"
).split()
_UNICODE_WORDS = (
    "café naïve résumé über Straße coöperate façade jalapeño São Paulo Zürich "
    "Привет мир спасибо товар 漢字 日本語 中文 评论 👍 😀 🎉 ✓ → “quoted” — ½ €"
).split()
_ESCAPES = ['"quoted"', "back\\slash", "new\nline", "tab\there", "C:\\path\\file"]


def _corpus(rng: np.random.Generator, words: list[str], n_words: int) -> str:
    picks = rng.integers(0, len(words), size=n_words)
    return " ".join(words[i] for i in picks.tolist())


@dataclass(frozen=True)
class PromptData:
    """A DataFrame of prompts (column ``text``) and the same prompts as a list."""

    df: pd.DataFrame
    prompts: list[str]

    @property
    def keys(self) -> list[str]:
        """The wire keys the engine sends: the decimal position of each row."""
        return [str(i) for i in range(len(self.prompts))]


def make_prompts(n: int, seed: int = SEED) -> PromptData:
    """``n`` realistic prompts of 50-2,000 characters, about 20% with non-ASCII text."""
    rng = np.random.default_rng(seed)
    ascii_corpus = _corpus(rng, _ASCII_WORDS + _ESCAPES, 400_000)
    mixed_corpus = _corpus(rng, _ASCII_WORDS + _UNICODE_WORDS * 3 + _ESCAPES, 400_000)
    lengths = np.exp(rng.uniform(np.log(50), np.log(2000), size=n)).astype(np.int64)
    use_mixed = rng.random(n) < 0.2
    starts = rng.integers(0, min(len(ascii_corpus), len(mixed_corpus)) - 2001, size=n)
    prompts = [
        (mixed_corpus if m else ascii_corpus)[s : s + ln]
        for s, ln, m in zip(starts.tolist(), lengths.tolist(), use_mixed.tolist(), strict=True)
    ]
    # pandas' default text dtype, as pd.read_csv / read_parquet give it.
    df = pd.DataFrame({"text": prompts})
    return PromptData(df=df, prompts=prompts)


def make_responses_file(
    path: Path, n: int, *, seed: int = SEED, error_rate: float = 0.02, broken_lines: int = 0
) -> list[str]:
    """Write a shuffled responses JSONL for keys ``"0"..str(n-1)``; return the expected keys.

    About ``error_rate`` of the lines are errors, 0.5% blocked prompts, 5% carry a thought
    part, and ``broken_lines`` lines (including the last) are cut short.
    """
    rng = np.random.default_rng(seed + 1)
    corpus = _corpus(rng, _ASCII_WORDS + _UNICODE_WORDS + _ESCAPES, 400_000)
    lengths = np.exp(rng.uniform(np.log(20), np.log(3000), size=n)).astype(np.int64)
    starts = rng.integers(0, len(corpus) - 3001, size=n)
    kinds = rng.random(n)
    tokens = rng.integers(1, 1000, size=(n, 3))
    order = rng.permutation(n)
    broken = set(rng.choice(n, size=min(broken_lines, n), replace=False).tolist())
    if broken_lines:
        broken.add(int(order[-1]))
    dumps = orjson.dumps
    with open(path, "wb") as f:
        buf: list[bytes] = []
        for i in order.tolist():
            kind = kinds[i]
            key = str(i)
            obj: dict[str, object]
            if kind < error_rate:
                obj = {
                    "key": key,
                    "error": {
                        "code": 500,
                        "message": "Internal error encountered.",
                        "status": "INTERNAL",
                    },
                }
            elif kind < error_rate + 0.005:
                obj = {
                    "key": key,
                    "response": {
                        "promptFeedback": {"blockReason": "SAFETY"},
                        "usageMetadata": {"promptTokenCount": int(tokens[i, 0])},
                    },
                }
            else:
                s = int(starts[i])
                parts: list[dict[str, object]] = [{"text": corpus[s : s + int(lengths[i])]}]
                usage = {
                    "promptTokenCount": int(tokens[i, 0]),
                    "candidatesTokenCount": int(tokens[i, 1]),
                    "totalTokenCount": int(tokens[i, 0] + tokens[i, 1]),
                }
                if kind > 0.95:
                    parts.insert(0, {"text": "Let me think about this.", "thought": True})
                    usage["thoughtsTokenCount"] = int(tokens[i, 2])
                obj = {
                    "key": key,
                    "response": {
                        "candidates": [
                            {
                                "content": {"role": "model", "parts": parts},
                                "finishReason": "STOP" if kind < 0.99 else "MAX_TOKENS",
                                "index": 0,
                            }
                        ],
                        "usageMetadata": usage,
                        "modelVersion": "gemini-2.5-flash",
                        "responseId": f"resp-{i:09d}",
                    },
                }
            line = dumps(obj)
            if i in broken:
                line = line[: len(line) // 2]
            buf.append(line + b"\n")
            if len(buf) >= 10_000:
                f.write(b"".join(buf))
                buf.clear()
        f.write(b"".join(buf))
    return [str(i) for i in range(n)]
