"""Tests of gemini_batch_magic._results: parsing result files / inline responses and aligning."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
from google.genai import types

from gemini_batch_magic import _results
from gemini_batch_magic._results import (
    RESULT_COLUMNS,
    align_results,
    parse_inlined_responses,
    parse_results_file,
)

TEXTS = ["plain", "héllo wörld", "emoji 😀🎉 漢字", "nul \x00 byte", 'q " \\ b', "line\nbreak", ""]


def ok(key: str, text: str = "answer", *, finish: str = "STOP", **usage: int) -> dict[str, Any]:
    """A successful result line."""
    response: dict[str, Any] = {
        "candidates": [
            {
                "content": {"role": "model", "parts": [{"text": text}]},
                "finishReason": finish,
                "index": 0,
            }
        ],
        "modelVersion": "gemini-2.5-flash",
        "responseId": "abc",
    }
    if usage:
        response["usageMetadata"] = usage
    return {"key": key, "response": response}


def err(
    key: str, code: int = 500, message: str = "Internal error.", status: str | None = "INTERNAL"
) -> dict[str, Any]:
    """A failed result line."""
    error: dict[str, Any] = {"code": code, "message": message}
    if status:
        error["status"] = status
    return {"key": key, "error": error}


def write_jsonl(path: Path, objs: list[Any], tail: bytes = b"") -> Path:
    path.write_bytes(b"".join(orjson.dumps(o) + b"\n" for o in objs) + tail)
    return path


def records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as dicts with missing values (NaN, pd.NA) shown as None, for readable comparisons."""
    return [
        {str(k): (None if pd.isna(v) else v) for k, v in row.items()}
        for row in df.to_dict("records")
    ]


def assert_result_dtypes(df: pd.DataFrame) -> None:
    """Text columns have pandas' own text dtype (Arrow-backed ``str`` on pandas 3, object with
    None for missing on pandas 2); token counts are nullable Int64."""
    for name in ("response", "error", "finish_reason"):
        assert df[name].dtype == _results.TEXT_DTYPE, (name, df[name].dtype)
        assert all(isinstance(v, str) or pd.isna(v) for v in df[name]), name
        if not _results.PANDAS_3:
            assert all(isinstance(v, str) or v is None for v in df[name]), name
    assert df["response"].dtype == ("str" if _results.PANDAS_3 else object)
    for name in ("input_tokens", "output_tokens"):
        assert df[name].dtype == "Int64"


# --------------------------------------------------------------------------------------------
# parse_results_file


def test_parse_success_and_error_lines(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "r.jsonl",
        [
            ok("1", "héllo 😀", promptTokenCount=3, candidatesTokenCount=4, totalTokenCount=7),
            err("0", 500, "Internal error.", "INTERNAL"),
        ],
    )
    df = parse_results_file(path)
    assert list(df.columns) == ["key", *RESULT_COLUMNS]
    assert records(df) == [
        {
            "key": "1",
            "response": "héllo 😀",
            "error": None,
            "finish_reason": "STOP",
            "input_tokens": 3,
            "output_tokens": 4,
        },
        {
            "key": "0",
            "response": None,
            "error": "500 INTERNAL: Internal error.",
            "finish_reason": None,
            "input_tokens": None,
            "output_tokens": None,
        },
    ]
    assert_result_dtypes(df)


def test_parse_error_without_status_names_the_code(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "r.jsonl", [err("a", 3, "Bad.", None), err("b", 400, "Nope.", None)]
    )
    assert parse_results_file(path)["error"].tolist() == [
        "3 INVALID_ARGUMENT: Bad.",
        "400 INVALID_ARGUMENT: Nope.",
    ]


def test_parse_joins_text_parts_and_skips_thoughts_like_the_sdk(tmp_path: Path) -> None:
    response = {
        "candidates": [
            {
                "content": {
                    "parts": [
                        {"text": "thinking...", "thought": True},
                        {"text": "Hello, "},
                        {"functionCall": {"name": "f"}},
                        {"text": "world"},
                    ]
                },
                "finishReason": "STOP",
            },
            {"content": {"parts": [{"text": "second candidate"}]}},
        ],
        "usageMetadata": {
            "promptTokenCount": 5,
            "candidatesTokenCount": 2,
            "thoughtsTokenCount": 10,
        },
    }
    path = write_jsonl(tmp_path / "r.jsonl", [{"key": "k", "response": response}])
    row = records(parse_results_file(path))[0]
    sdk_text = types.GenerateContentResponse.model_validate(response).text
    assert row["response"] == sdk_text == "Hello, world"
    assert row["output_tokens"] == 12
    assert row["input_tokens"] == 5


def test_parse_blocked_prompt_and_textless_candidates(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "r.jsonl",
        [
            {
                "key": "blocked",
                "response": {
                    "promptFeedback": {"blockReason": "SAFETY"},
                    "usageMetadata": {"promptTokenCount": 9},
                },
            },
            {"key": "nocand", "response": {"candidates": []}},
            {"key": "safety", "response": {"candidates": [{"finishReason": "SAFETY"}]}},
            {
                "key": "recite",
                "response": {
                    "candidates": [{"content": {"parts": []}, "finishReason": "RECITATION"}]
                },
            },
            ok("empty", ""),
        ],
    )
    rows = {r["key"]: r for r in records(parse_results_file(path))}
    assert rows["blocked"]["error"] == "no candidates (prompt blocked: SAFETY)"
    assert rows["blocked"]["input_tokens"] == 9
    assert rows["nocand"]["error"] == "no candidates"
    assert rows["safety"]["error"] == "no text (finish_reason SAFETY)"
    assert rows["safety"]["finish_reason"] == "SAFETY"
    assert rows["recite"]["error"] == "no text (finish_reason RECITATION)"
    # An empty answer is an answer, not an error.
    assert rows["empty"]["response"] == "" and rows["empty"]["error"] is None


def test_parse_broken_lines_never_raise(tmp_path: Path) -> None:
    good = b"".join(orjson.dumps(o) + b"\n" for o in [ok("0"), ok("1")])
    path = tmp_path / "r.jsonl"
    path.write_bytes(
        good
        + b'{"key": "2", "response": {oops}\n'  # line 3: invalid, key recoverable
        + b"not json at all\n"  # line 4: no key: skipped
        + b"\n"  # blank lines are ignored
        + b"[1, 2]\n"  # valid JSON but no key: skipped
        + b'{"key":"we\\"ird","response":{"candidates":[{"content":{"parts":[{"text":"trunc'  # truncated
    )
    df = parse_results_file(path)
    assert df["key"].tolist() == ["0", "1", "2", 'we"ird']
    assert [r["error"] for r in records(df)] == [
        None,
        None,
        "result line 3 is not valid JSON",
        "result line 7 is not valid JSON",
    ]
    assert_result_dtypes(df)


def test_parse_line_with_neither_response_nor_error(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "r.jsonl", [{"key": "x"}])
    assert parse_results_file(path)["error"].tolist() == [
        "result line 1 has neither a response nor an error"
    ]


def test_parse_empty_file_gives_empty_frame(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_bytes(b"")
    df = parse_results_file(path)
    assert list(df.columns) == ["key", *RESULT_COLUMNS]
    assert len(df) == 0
    assert_result_dtypes(df)


def test_parse_handles_crlf_line_endings(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_bytes(orjson.dumps(ok("a", "x")) + b"\r\n" + orjson.dumps(ok("b", "y")) + b"\r\n")
    assert parse_results_file(path)["response"].tolist() == ["x", "y"]


# --------------------------------------------------------------------------------------------
# fast path == plain path


def realistic_results(n: int, seed: int = 0) -> list[Any]:
    """Shuffled result lines of every shape: text, non-ASCII, NUL, empty, errors, blocked."""
    rng = random.Random(seed)
    out: list[Any] = []
    for i in range(n):
        kind = rng.random()
        key = str(i)
        if kind < 0.05:
            out.append(
                err(key, rng.choice([400, 429, 500, 13]), "fail é", rng.choice([None, "INTERNAL"]))
            )
        elif kind < 0.07:
            out.append({"key": key, "response": {"promptFeedback": {"blockReason": "OTHER"}}})
        elif kind < 0.09:
            out.append(
                {
                    "key": key,
                    "response": {
                        "candidates": [{"finishReason": "MAX_TOKENS", "content": {"role": "model"}}]
                    },
                }
            )
        else:
            text = rng.choice(TEXTS) * rng.randint(1, 30)
            usage = {
                "promptTokenCount": rng.randint(1, 999),
                "candidatesTokenCount": rng.randint(0, 99),
            }
            if rng.random() < 0.3:
                usage["thoughtsTokenCount"] = rng.randint(0, 50)
            if rng.random() < 0.1:
                usage = {}
            line = ok(key, text, finish=rng.choice(["STOP", "MAX_TOKENS"]), **usage)
            if rng.random() < 0.1:
                parts = line["response"]["candidates"][0]["content"]["parts"]
                parts.insert(0, {"text": "hidden thought", "thought": True})
                parts.append({"text": " more é"})
            out.append(line)
    rng.shuffle(out)
    return out


def test_fast_parse_matches_plain_parse(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "r.jsonl", realistic_results(3000))
    plain = _results._parse_lines(path.read_bytes())
    fast = _results._parse_arrow(path)
    assert fast is not None  # the vectorised reader handled this file
    pd.testing.assert_frame_equal(fast, plain)
    pd.testing.assert_frame_equal(parse_results_file(path), plain)


@pytest.mark.parametrize("chunk", [700, 4096, 1 << 20])
def test_chunked_parse_matches_plain_parse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    """Reading the file in line-aligned chunks (to bound memory) changes nothing."""
    path = write_jsonl(tmp_path / "r.jsonl", realistic_results(1500, seed=4))
    plain = _results._parse_lines(path.read_bytes())
    monkeypatch.setattr(_results, "_READ_CHUNK", chunk)
    chunked = _results._parse_arrow_blocks(path)
    assert chunked is not None
    pd.testing.assert_frame_equal(chunked, plain)
    pd.testing.assert_frame_equal(parse_results_file(path), plain)


def _ok_line(key: str, text: str = "x") -> bytes:
    return orjson.dumps(ok(key, text))


@pytest.mark.parametrize(
    ("data", "fast_path"),
    [
        pytest.param(_ok_line("a") + b"\r\n" + _ok_line("b") + b"\r\n", True, id="crlf"),
        pytest.param(_ok_line("a") + b"\n\n  \n" + _ok_line("b") + b"\n", True, id="blank-lines"),
        pytest.param(_ok_line("a", "x\x00y😀\n\u2028") + b"\n", True, id="nul-emoji"),
        pytest.param(b'{"response":{}}\n' + _ok_line("b") + b"\n", True, id="no-key-skipped"),
        pytest.param(b'{"key":"a","response":null,"error":{"code":3}}\n', True, id="null-response"),
        pytest.param(b'{"key":"a","response":{}}\n', True, id="empty-response"),
        pytest.param(b'{"key":"a","response":{"candidates":[{}]}}\n', True, id="empty-candidate"),
        pytest.param(
            b'{"key":"a","response":{"candidates":[{"content":{"parts":[{"text":"t",'
            b'"functionCall":{"x":[1,{"y":2}]}},{"functionCall":{}}]},"safetyRatings":[{}]}],'
            b'"modelVersion":"m"},"other":[1,2]}\n',
            True,
            id="extra-fields",
        ),
        pytest.param(
            _ok_line("a")[:-3] + b'\xff"}]}}\n' + _ok_line("b") + b"\n", False, id="bad-utf8"
        ),
        pytest.param(b'{"key":5,"response":{}}\n', False, id="numeric-key"),
        pytest.param(
            b'{"key":"a","response":{"candidates":[{"content":{"parts":["x"]}}]}}\n',
            False,
            id="odd-shape",
        ),
        pytest.param(b'{"key":"a"}\n', False, id="neither"),
        pytest.param(b'{"key":"a","error":{"code":500.0,"message":"m"}}\n', False, id="float-code"),
    ],
)
def test_fast_parse_agrees_with_plain_parse_on_edge_cases(
    tmp_path: Path, data: bytes, fast_path: bool
) -> None:
    path = tmp_path / "r.jsonl"
    path.write_bytes(data)
    plain = _results._parse_lines(data)
    fast = _results._parse_arrow(path)
    assert (fast is not None) == fast_path
    if fast is not None:
        pd.testing.assert_frame_equal(fast, plain)
    pd.testing.assert_frame_equal(parse_results_file(path), plain)
    assert_result_dtypes(plain)


def test_parse_edge_case_messages(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_bytes(
        b'{"key":5,"response":{}}\n'
        b'{"key":"b","response":{"candidates":[{"content":{"parts":["x"]}}]}}\n'
        b'{"key":"c","error":{"code":3}}\n'
    )
    assert parse_results_file(path).to_dict("list")["error"] == [
        "no candidates",
        "result line 2 has an unexpected shape",
        "3 INVALID_ARGUMENT",
    ]
    assert parse_results_file(path)["key"].tolist() == ["5", "b", "c"]


def test_fast_parse_with_broken_lines_matches_plain_parse(tmp_path: Path) -> None:
    objs = realistic_results(2000, seed=1)
    body = b"".join(orjson.dumps(o) + b"\n" for o in objs)
    path = tmp_path / "r.jsonl"
    path.write_bytes(body + b'{"key":"2000","response":{"cand')
    plain = _results._parse_lines(path.read_bytes())
    df = parse_results_file(path)
    pd.testing.assert_frame_equal(df, plain)
    assert df["error"].iloc[-1] == "result line 2001 is not valid JSON"
    # Only the cut-short last line went through the per-line parser.
    head_fast = _results._parse_with_broken_last_line(path)
    assert head_fast is not None
    pd.testing.assert_frame_equal(head_fast, plain)


def test_broken_middle_line_uses_the_plain_parser_for_the_file(tmp_path: Path) -> None:
    objs = realistic_results(500, seed=4)
    lines = [orjson.dumps(o) for o in objs]
    lines[100] = lines[100][:40]
    data = b"\n".join(lines) + b"\n"
    path = tmp_path / "r.jsonl"
    path.write_bytes(data)
    assert _results._parse_with_broken_last_line(path) is None
    df = parse_results_file(path)
    pd.testing.assert_frame_equal(df, _results._parse_lines(data))
    assert "result line 101 is not valid JSON" in df["error"].tolist()


# --------------------------------------------------------------------------------------------
# parse_inlined_responses


def test_inlined_responses_match_the_file_parser(tmp_path: Path) -> None:
    objs = realistic_results(300, seed=2)
    items = []
    for o in objs:
        item: dict[str, Any] = {"metadata": {"key": o["key"]}}
        if "response" in o:
            item["response"] = o["response"]
        else:
            item["error"] = {"code": o["error"]["code"], "message": o["error"]["message"]}
        items.append(types.InlinedResponse.model_validate(item))
    path = write_jsonl(
        tmp_path / "r.jsonl",
        # JobError has no status: the code alone names it, in both paths.
        [
            o if "response" in o else err(o["key"], o["error"]["code"], o["error"]["message"], None)
            for o in objs
        ],
    )
    pd.testing.assert_frame_equal(parse_inlined_responses(items), parse_results_file(path))


def test_inlined_item_without_key_gets_none() -> None:
    item = types.InlinedResponse(
        response=types.GenerateContentResponse.model_validate(ok("x", "hi")["response"])
    )
    df = parse_inlined_responses([item])
    assert df["key"].isna().tolist() == [True]
    assert df["response"].tolist() == ["hi"]


def test_inlined_error_formats_code_and_message() -> None:
    item = types.InlinedResponse(
        metadata={"key": "k"}, error=types.JobError(code=500, message="Boom")
    )
    assert parse_inlined_responses([item])["error"].tolist() == ["500 INTERNAL: Boom"]


def test_inlined_empty_list() -> None:
    df = parse_inlined_responses([])
    assert list(df.columns) == ["key", *RESULT_COLUMNS] and len(df) == 0


# --------------------------------------------------------------------------------------------
# align_results


def test_align_orders_by_key_not_position(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "r.jsonl", [ok("2", "two"), ok("0", "zero"), ok("1", "one")])
    aligned = align_results(parse_results_file(path), ["0", "1", "2"])
    assert aligned["response"].tolist() == ["zero", "one", "two"]
    assert list(aligned.columns) == list(RESULT_COLUMNS)
    assert isinstance(aligned.index, pd.RangeIndex)
    assert_result_dtypes(aligned)


def test_align_missing_duplicate_and_unknown_keys(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "r.jsonl",
        [
            ok("17", "first", promptTokenCount=1, candidatesTokenCount=2),
            ok("17", "second"),
            ok("stranger", "ignored"),
            err("3"),
        ],
    )
    aligned = align_results(parse_results_file(path), ["3", "17", "4"])
    assert records(aligned) == [
        {
            "response": None,
            "error": "500 INTERNAL: Internal error.",
            "finish_reason": None,
            "input_tokens": None,
            "output_tokens": None,
        },
        {
            "response": "first",
            "error": "the service returned 2 results for key '17'",
            "finish_reason": "STOP",
            "input_tokens": 1,
            "output_tokens": 2,
        },
        {
            "response": None,
            "error": "no result returned for this row (key '4')",
            "finish_reason": None,
            "input_tokens": None,
            "output_tokens": None,
        },
    ]


def test_align_with_no_results_at_all(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_bytes(b"")
    aligned = align_results(parse_results_file(path), ["a", "b"])
    assert aligned["error"].tolist() == [
        "no result returned for this row (key 'a')",
        "no result returned for this row (key 'b')",
    ]
    assert_result_dtypes(aligned)


def test_align_with_no_expected_keys() -> None:
    aligned = align_results(parse_inlined_responses([]), [])
    assert list(aligned.columns) == list(RESULT_COLUMNS) and len(aligned) == 0


def test_align_accepts_index_and_array_keys(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "r.jsonl", [ok("b", "B"), ok("a", "A")])
    parsed = parse_results_file(path)
    for keys in (pd.Index(["a", "b"]), np.array(["a", "b"]), pd.Series(["a", "b"], dtype="str")):
        assert align_results(parsed, keys)["response"].tolist() == ["A", "B"]  # type: ignore[arg-type]


def test_align_large_shuffled_matches_dict_lookup(tmp_path: Path) -> None:
    objs = realistic_results(5000, seed=3)
    objs = objs[:-5] + objs[:3]  # drop five results, repeat three
    path = write_jsonl(tmp_path / "r.jsonl", objs)
    parsed = parse_results_file(path)
    keys = [str(i) for i in range(5000)]
    aligned = align_results(parsed, keys)
    by_key: dict[str, list[Any]] = {}
    for o in objs:
        by_key.setdefault(o["key"], []).append(o)
    for i, key in enumerate(keys):
        got = aligned.iloc[i]
        if key not in by_key:
            assert got["error"] == f"no result returned for this row (key '{key}')"
        elif len(by_key[key]) > 1:
            assert got["error"] == f"the service returned 2 results for key '{key}'"
        elif "error" in by_key[key][0]:
            assert got["error"].endswith(by_key[key][0]["error"]["message"])
        elif pd.isna(got["error"]):
            parts = by_key[key][0]["response"]["candidates"][0]["content"]["parts"]
            assert got["response"] == "".join(p["text"] for p in parts if not p.get("thought"))


def test_align_by_positions_matches_align_by_string_keys(tmp_path: Path) -> None:
    """The engine passes row positions (ints); the lookup-table path gives exactly what the
    hash lookup of the same keys as strings gives, misses and repeats included."""
    objs = realistic_results(4000, seed=8)
    objs = objs[:-7] + objs[:4]
    path = write_jsonl(tmp_path / "r.jsonl", objs)
    parsed = parse_results_file(path)
    positions = np.arange(4000, dtype=np.int64)
    by_int = align_results(parsed, positions)
    by_str = align_results(parsed, [str(i) for i in positions])
    pd.testing.assert_frame_equal(by_int, by_str)
    assert by_int["error"].str.startswith("no result returned").sum() == 7
    assert by_int["error"].str.startswith("the service returned 2").sum() == 4
    # a subset, out of order (a retry run's rows): same answers, in the order asked
    subset = np.array([3999, 5, 17, 0], dtype=np.int64)
    pd.testing.assert_frame_equal(
        align_results(parsed, subset), align_results(parsed, [str(i) for i in subset])
    )


def test_align_never_matches_a_non_canonical_decimal_key(tmp_path: Path) -> None:
    """Keys are strings: "007", "+7" and " 7" are not "7", though they parse to 7."""
    path = write_jsonl(
        tmp_path / "r.jsonl",
        [ok("007", "zeros"), ok("+7", "plus"), ok(" 7", "space"), ok("8", "eight")],
    )
    parsed = parse_results_file(path)
    for keys in (np.array([7, 8]), ["7", "8"]):
        aligned = align_results(parsed, keys)  # type: ignore[arg-type]
        assert records(aligned)[0]["error"] == "no result returned for this row (key '7')"
        assert aligned["response"].tolist()[1] == "eight"
    assert align_results(parsed, ["007", "+7"])["response"].tolist() == ["zeros", "plus"]


# --------------------------------------------------------------------------------------------
# StreamParser: parsing while the file downloads


def _feed(data: bytes, piece: int, block: int) -> pd.DataFrame | None:
    parser = _results.StreamParser(block_size=block)
    for i in range(0, len(data), piece):
        parser.write(data[i : i + piece])
    return parser.finish()


@pytest.mark.parametrize(("piece", "block"), [(1, 512), (333, 4096), (1 << 20, 64 << 20)])
def test_stream_parse_matches_parsing_the_file(tmp_path: Path, piece: int, block: int) -> None:
    """Fed the download's bytes in any pieces, it gives exactly the file's parse: non-ASCII,
    empty answers, thoughts, errors and blank lines included."""
    objs = [*realistic_results(800, seed=5), ok("empty", ""), err("e", 429, "slow down")]
    data = b"".join(orjson.dumps(o) + b"\n" for o in objs) + b"\n  \n"
    path = tmp_path / "r.jsonl"
    path.write_bytes(data)
    streamed = _feed(data, piece, block)
    assert streamed is not None
    pd.testing.assert_frame_equal(streamed, parse_results_file(path))
    assert_result_dtypes(streamed)
    assert records(streamed[streamed["key"] == "empty"])[0]["response"] == ""


@pytest.mark.parametrize(
    "data",
    [
        _ok_line("1") + b'\n{"key":"2","response":{"candi',  # a download cut short
        b'{"key":"1"' + b"\n" + _ok_line("2"),  # a broken line in the middle
        _ok_line("1") + b'\n{"key":"2"}\n',  # neither a response nor an error
    ],
    ids=["truncated", "broken-middle", "no-response"],
)
def test_stream_parse_leaves_odd_files_to_the_reference_parser(data: bytes) -> None:
    """Anything the vectorised reader cannot report exactly returns None: the caller parses
    the written file, whose messages name the line."""
    assert _feed(data, 7, 64) is None


def test_stream_parse_of_nothing_is_the_empty_frame() -> None:
    frame = _feed(b"", 1, 64)
    assert frame is not None and len(frame) == 0
    assert list(frame.columns) == ["key", *RESULT_COLUMNS]


# --------------------------------------------------------------------------------------------
# the text dtype contract (README, the module docstring), on each pandas


def test_a_runs_text_columns_have_each_pandas_own_text_dtype(emu: Any) -> None:
    """pandas 3: the Arrow-backed ``str`` dtype, missing values NaN. pandas 2: object, missing
    values None. The same after the results are read back from disk by a fresh run object."""
    from gemini_batch_magic import _runs

    assert _results.PANDAS_3 == (int(pd.__version__.split(".", 1)[0]) >= 3)
    df = pd.DataFrame({"text": ["héllo 😀", "[[fail]] x"]}, index=["a", "b"])
    run = df.gembatch.submit("text")
    out = run.wait(progress=False).result()
    fresh = _runs.BatchRun(run.run_id).result()
    pd.testing.assert_frame_equal(out, fresh)
    for frame in (out, fresh):
        for name in ("response", "error", "finish_reason"):
            if _results.PANDAS_3:
                assert frame[name].dtype == pd.StringDtype("pyarrow", na_value=np.nan)
                assert str(frame[name].dtype) == "str"
            else:
                assert frame[name].dtype == np.dtype(object)
        missing = [frame.at["a", "error"], frame.at["b", "response"]]
        if _results.PANDAS_3:
            assert all(isinstance(v, float) and np.isnan(v) for v in missing)
        else:
            assert missing == [None, None]
        assert frame.at["a", "response"] == "héllo 😀"
        assert frame["error"].notna().tolist() == [False, True]
        assert "Simulated failure" in frame.at["b", "error"]
    joined = run.result(join=True)
    assert joined["text"].dtype == df["text"].dtype  # the input's columns keep their own dtype
    assert joined["response"].dtype == _results.TEXT_DTYPE
