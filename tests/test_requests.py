"""Tests of gemini_batch_magic._requests: prompts, keys and JSONL request files."""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import itertools
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pytest

from gemini_batch_magic._requests import (
    ArrowText,
    RequestFile,
    check_keys,
    check_prompts,
    prompt_texts,
    read_request_prompts,
    render_prompts,
    request_line_sizes,
    take_prompts,
    write_request_files,
)
from gemini_batch_magic._results import PANDAS_3
from gemini_batch_magic.exceptions import (
    ColumnError,
    DuplicateKeyError,
    EmptyPromptError,
    InputError,
    PromptTypeError,
    RequestTooLargeError,
    TemplateError,
)

TRICKY = [
    "plain ascii",
    "héllo wörld",
    "emoji 😀🎉 and CJK 漢字",
    "nul \x00 byte",
    'quotes " and \\ backslash',
    "newline\nand\ttab\r",
    "\u2028 line separator \u2029",
    "control \x01\x1f chars",
    "",
    "a" * 3000,
]


def expected_line(key: str, prompt: str, shared: dict[str, Any]) -> bytes:
    """The line the contract defines, built the slow obvious way."""
    request = {"contents": [{"parts": [{"text": prompt}], "role": "user"}], **shared}
    return orjson.dumps({"key": key, "request": request}) + b"\n"


# --------------------------------------------------------------------------------------------
# render_prompts: input validation


def test_render_rejects_non_dataframe_naming_the_type() -> None:
    with pytest.raises(InputError, match=r"expected a pandas DataFrame, got list"):
        render_prompts(["a"], prompt="text")  # type: ignore[arg-type]


@pytest.mark.parametrize("kwargs", [{}, {"prompt": "text", "template": "{text}"}])
def test_render_needs_exactly_one_of_prompt_and_template(kwargs: dict[str, str]) -> None:
    with pytest.raises(InputError, match=r"exactly one of prompt= .* or template="):
        render_prompts(pd.DataFrame({"text": ["a"]}), **kwargs)


def test_render_rejects_empty_frames() -> None:
    with pytest.raises(InputError, match=r"no rows"):
        render_prompts(pd.DataFrame({"text": []}), prompt="text")
    with pytest.raises(InputError, match=r"no columns"):
        render_prompts(pd.DataFrame(index=[1, 2]), template="hi")


def test_render_missing_column_suggests_close_match() -> None:
    df = pd.DataFrame({"question": ["a"], "answer": ["b"]})
    with pytest.raises(ColumnError, match=r"'questoin' is not a column.*Did you mean 'question'"):
        render_prompts(df, prompt="questoin")


def test_column_error_message_is_not_quoted_like_a_keyerror() -> None:
    with pytest.raises(ColumnError) as info:
        render_prompts(pd.DataFrame({"text": ["a"]}), prompt="txt")
    assert str(info.value).startswith("prompt column 'txt'")


# --------------------------------------------------------------------------------------------
# render_prompts: prompt column


@pytest.mark.parametrize(
    "dtype",
    [object, "string", "string[python]", "string[pyarrow]", "str", "category"],
)
def test_render_prompt_column_accepts_every_text_dtype(dtype: Any) -> None:
    text = pd.Series(["héllo", None, "x\x00y 😀"], dtype=dtype, index=[10, 11, 12])
    df = pd.DataFrame({"text": text})
    before = df.copy()
    out = render_prompts(df, prompt="text")
    assert out.dtype == object
    assert out.index.tolist() == [10, 11, 12]
    assert out.tolist() == ["héllo", None, "x\x00y 😀"]
    pd.testing.assert_frame_equal(df, before)  # the caller's frame is untouched
    out.iloc[0] = "changed"
    pd.testing.assert_frame_equal(df, before)


@pytest.mark.parametrize("arrow_type", ["string", "large_string"])
def test_render_prompt_column_accepts_arrow_backed_strings(arrow_type: str) -> None:
    import pyarrow as pa

    pa_type = pa.string() if arrow_type == "string" else pa.large_string()
    df = pd.DataFrame({"text": pd.Series(["a", None], dtype=pd.ArrowDtype(pa_type))})
    assert render_prompts(df, prompt="text").tolist() == ["a", None]


def test_render_missing_values_become_none() -> None:
    df = pd.DataFrame({"text": ["a", None, np.nan, pd.NA]}, dtype=object)
    assert render_prompts(df, prompt="text").tolist() == ["a", None, None, None]


def test_render_non_text_values_name_rows_types_and_fix() -> None:
    df = pd.DataFrame({"text": ["ok", 3, {"a": 1}, b"raw", None]}, index=list("abcde"))
    with pytest.raises(PromptTypeError) as info:
        render_prompts(df, prompt="text")
    msg = str(info.value)
    assert "3 rows" in msg
    assert "'b', 'c', 'd'" in msg
    assert "bytes, dict, int" in msg
    assert "df['text'].astype(str)" in msg


def test_render_numeric_prompt_column_is_rejected() -> None:
    df = pd.DataFrame({"n": [1, 2]})
    with pytest.raises(PromptTypeError, match=r"2 rows hold int"):
        render_prompts(df, prompt="n")


def test_render_categorical_of_non_text_is_rejected() -> None:
    df = pd.DataFrame({"c": pd.Categorical([1, 2, 1])})
    with pytest.raises(PromptTypeError, match=r"3 rows"):
        render_prompts(df, prompt="c")


def test_render_shows_at_most_ten_labels_and_a_count() -> None:
    df = pd.DataFrame({"text": list(range(25))})
    with pytest.raises(
        PromptTypeError, match=r"25 rows.*0, 1, 2, 3, 4, 5, 6, 7, 8, 9 \.\.\. and 15 more"
    ):
        render_prompts(df, prompt="text")


def test_render_duplicate_column_names_are_reported() -> None:
    df = pd.DataFrame([["a", "b"]], columns=["text", "text"])
    with pytest.raises(ColumnError, match=r"2 columns named 'text'"):
        render_prompts(df, prompt="text")


# --------------------------------------------------------------------------------------------
# render_prompts: templates


def test_template_fills_columns_with_literal_braces_and_specs() -> None:
    df = pd.DataFrame(
        {"name": ["Zoë", "Ann"], "price": [1.5, 20.0], "qty": [3, 4]}, index=["x", "y"]
    )
    out = render_prompts(df, template="{{json}} {name} pays {price:.2f} for {qty} ({name})")
    assert out.tolist() == ["{json} Zoë pays 1.50 for 3 (Zoë)", "{json} Ann pays 20.00 for 4 (Ann)"]
    assert out.index.tolist() == ["x", "y"]


def test_template_matches_str_format_for_every_scalar_type() -> None:
    rng = np.random.default_rng(0)
    floats = np.concatenate(
        [rng.normal(size=50) * 10.0 ** rng.integers(-20, 20, size=50), [0.1, 1e16, 1e-7, -0.0, 3.0]]
    )
    n = len(floats)
    df = pd.DataFrame(
        {
            "f": floats,
            "i": rng.integers(-(10**12), 10**12, size=n),
            "u": rng.integers(0, 255, size=n).astype(np.uint8),
            "b": rng.integers(0, 2, size=n).astype(bool),
            "s": [f"s{i}é" for i in range(n)],
            "d": [dt.date(2024, 1, 1 + i % 28) for i in range(n)],
            "ts": pd.date_range("2024-01-01", periods=n, freq="h"),
            "dec": [decimal.Decimal("1.10")] * n,
            "nullable": pd.array(range(n), dtype="Int64"),
            "cat": pd.Categorical(["a", "b"] * (n // 2) + ["a"] * (n % 2)),
        }
    )
    template = "{f}|{i}|{u}|{b}|{s}|{d}|{ts}|{dec}|{nullable}|{cat}|{f:.3e}|{i:,}"
    out = render_prompts(df, template=template)
    plain = [
        template.format(**{str(k): v for k, v in row.items()}) for row in df.to_dict("records")
    ]
    assert out.tolist() == plain


def test_template_row_with_any_missing_value_is_none() -> None:
    df = pd.DataFrame({"a": ["x", None, "z"], "b": [1.0, 2.0, np.nan]})
    assert render_prompts(df, template="{a}-{b}").tolist() == ["x-1.0", None, None]


def test_template_over_arrow_text_is_rendered_in_arrow_with_the_same_requests(
        tmp_path: Path) -> None:
    """Plain {column} fields over text held in Arrow render without a Python str per row:
    the same prompts (missing where a value is), the same request bytes."""
    texts = ["x", None, 'q "uoted" \\ tab\t new\nline é ✓ 😀', "", "  "]
    df = pd.DataFrame({"a": pd.array(texts, dtype="string[pyarrow]"),
                       "b": pd.Series(["1", "2", "3", "4", None],
                                      dtype=pd.ArrowDtype(pa.large_string())),
                       "c": pd.Series(texts, dtype=object)})
    template = "A {a} / {b}{a}!"
    arrow = prompt_texts(df, template=template)
    assert isinstance(arrow.array, pd.arrays.ArrowStringArray)
    plain = render_prompts(df, template=template)
    assert arrow.astype(object).where(arrow.notna(), None).tolist() == plain.tolist()
    assert prompt_texts(df, template="A {c} / {b}{a}!").dtype == object  # not all Arrow
    keep = check_prompts(arrow, on_empty="skip")
    assert keep.tolist() == check_prompts(plain, on_empty="skip").tolist()
    rows = np.flatnonzero(keep)
    keys = [str(i) for i in rows]
    limits = {"max_file_bytes": 1 << 20, "max_requests": 2}  # several files
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = write_request_files(tmp_path / "a", take_prompts(arrow, rows), keys, {}, **limits)
    b = write_request_files(tmp_path / "b", plain[keep].tolist(), keys, {}, **limits)
    assert [f.path.read_bytes() for f in a] == [f.path.read_bytes() for f in b]


def test_arrow_text_is_escaped_from_its_buffers_as_orjson_escapes_it() -> None:
    """Escaping Arrow text in numpy (two-character escapes) gives orjson's bytes exactly;
    text with a control that needs \\u00XX goes through orjson itself."""
    from gemini_batch_magic._requests import _escape, _escape_all

    rng = np.random.default_rng(3)
    alphabet = ["a", "é", "✓", "😀", '"', "\\", "\n", "\t", "\r", "\b", "\f", " ", "\x01",
                "\x1f", "\x7f", "\u2028"]
    for i in range(400):
        letters = alphabet[:12] if i % 2 else alphabet
        values = ["".join(rng.choice(letters, size=rng.integers(0, 9)))
                  for _ in range(int(rng.integers(1, 20)))]
        arr = pa.array(values, type=pa.large_string() if i % 3 else pa.string())
        if i % 5 == 0:
            arr = arr.slice(int(rng.integers(0, len(values))))
        assert _escape(arr).to_pylist() == _escape_all(arr.to_pylist()).to_pylist(), values


def test_template_without_fields_is_refused_as_the_same_prompt_n_times() -> None:
    df = pd.DataFrame({"a": [1, 2]})
    with pytest.raises(TemplateError, match=r"no \{column\} placeholder.*all 2 rows.*"
                       r"df\.assign\(prompt="):
        render_prompts(df, template="Say hi {{}}")
    # one row is one prompt: nothing is repeated, so a constant template is fine
    assert render_prompts(df.iloc[:1], template="Say hi {{}}").tolist() == ["Say hi {}"]


@pytest.mark.parametrize(
    ("template", "match"),
    [
        ("Q: {}", "positional"),
        ("Q: {0}", "positional"),
        ("{text.__class__}", "attribute or index access"),
        ("{text[0]}", "attribute or index access"),
        ("{text!r}", "conversion"),
        ("{text:{width}}", "nested field"),
        ("{text", "not valid"),
        ("text}", "not valid"),
    ],
)
def test_template_rejects_anything_but_plain_fields(template: str, match: str) -> None:
    df = pd.DataFrame({"text": ["a"], "width": [3]})
    with pytest.raises(TemplateError, match=match):
        render_prompts(df, template=template)


def test_template_unknown_placeholder_names_it_with_close_matches() -> None:
    df = pd.DataFrame({"review_text": ["a"]})
    with pytest.raises(ColumnError, match=r"\{review_txt\} is not a column.*'review_text'"):
        render_prompts(df, template="Summarise {review_txt}")


def test_template_explains_dotted_and_braced_column_names() -> None:
    df = pd.DataFrame({"a.b": ["x"], "c{d}": ["y"]})
    with pytest.raises(TemplateError, match=r"containing '.' or '\['.*rename"):
        render_prompts(df, template="{a.b}")
    with pytest.raises(ColumnError, match=r"braces.*cannot be referenced"):
        render_prompts(df, template="{c}")


def test_template_rejects_containers_with_json_fix() -> None:
    df = pd.DataFrame({"meta": [{"a": 1}, [1, 2], "ok", None]}, index=[5, 6, 7, 8])
    with pytest.raises(PromptTypeError) as info:
        render_prompts(df, template="data: {meta}")
    msg = str(info.value)
    assert "'meta'" in msg and "dict, list" in msg and "5, 6" in msg
    assert "df['meta'].map(json.dumps)" in msg


def test_template_bad_format_spec_names_the_column() -> None:
    df = pd.DataFrame({"text": ["a", "b"]})
    with pytest.raises(TemplateError, match=r"\{text:.2f\}.*2 rows"):
        render_prompts(df, template="{text:.2f}")


# --------------------------------------------------------------------------------------------
# check_prompts


def test_check_prompts_all_good_sends_everything() -> None:
    mask = check_prompts(pd.Series([*TRICKY[:-2], "x"]))
    assert mask.dtype == bool
    assert mask.all()


def test_check_prompts_raise_lists_labels_and_fix() -> None:
    prompts = pd.Series(["ok", None, "", "  \n\t", "fine"], index=list("abcde"), dtype=object)
    with pytest.raises(EmptyPromptError) as info:
        check_prompts(prompts)
    msg = str(info.value)
    assert "3 rows have" in msg and "'b', 'c', 'd'" in msg
    assert "on_empty='skip'" in msg


def test_check_prompts_skip_masks_empty_rows() -> None:
    prompts = pd.Series(["ok", None, np.nan, "", " ", "fine"], dtype=object)
    assert check_prompts(prompts, on_empty="skip").tolist() == [
        True,
        False,
        False,
        False,
        False,
        True,
    ]


def test_check_prompts_skip_with_nothing_left_raises() -> None:
    with pytest.raises(EmptyPromptError, match=r"all prompts are"):
        check_prompts(pd.Series([None, " "], dtype=object), on_empty="skip")


def test_check_prompts_rejects_unknown_on_empty_listing_choices() -> None:
    with pytest.raises(InputError, match=r"'drop'.*'raise', 'skip'"):
        check_prompts(pd.Series(["a"]), on_empty="drop")


def test_check_prompts_rejects_lone_surrogates_naming_rows() -> None:
    prompts = pd.Series(["fine é", "bad \udc80", "ok"], index=["r1", "r2", "r3"], dtype=object)
    with pytest.raises(PromptTypeError, match=r"1 row .*UTF-8.*'r2'"):
        check_prompts(prompts)


def test_check_prompts_rejects_non_text() -> None:
    with pytest.raises(PromptTypeError, match=r"int"):
        check_prompts(pd.Series(["a", 3], dtype=object))


# --------------------------------------------------------------------------------------------
# check_keys


@pytest.mark.parametrize(
    "index",
    [
        pd.RangeIndex(3),
        pd.Index(["a", "b", "c"]),
        pd.date_range("2024-01-01", periods=3),
        pd.MultiIndex.from_tuples([("a", 1), ("a", 2), ("b", 1)]),
        pd.Index([1, "1", (1, 2)], dtype=object),
    ],
)
def test_check_keys_accepts_any_unique_index(index: pd.Index) -> None:
    df = pd.DataFrame({"text": ["x", "y", "z"]}, index=index)
    assert check_keys(df).equals(index)


def test_check_keys_uses_the_key_column() -> None:
    df = pd.DataFrame({"id": ["u1", "u2"], "text": ["x", "y"]})
    assert check_keys(df, "id").tolist() == ["u1", "u2"]


def test_check_keys_missing_column_suggests() -> None:
    df = pd.DataFrame({"row_id": [1]})
    with pytest.raises(ColumnError, match=r"'rowid'.*Did you mean 'row_id'"):
        check_keys(df, "rowid")


def test_check_keys_duplicates_list_values_counts_and_fix() -> None:
    df = pd.DataFrame({"id": ["a", "b", "a", "c", "a", "b"]})
    with pytest.raises(DuplicateKeyError) as info:
        check_keys(df, "id")
    msg = str(info.value)
    assert "'a' (3 times), 'b' (2 times)" in msg
    assert "'c'" not in msg
    assert "unique" in msg


def test_check_keys_duplicate_index_suggests_reset_index() -> None:
    df = pd.DataFrame({"t": ["x", "y"]}, index=[7, 7])
    with pytest.raises(DuplicateKeyError, match=r"7 \(2 times\).*reset_index"):
        check_keys(df)


def test_check_keys_duplicate_multiindex() -> None:
    df = pd.DataFrame({"t": ["x", "y"]}, index=pd.MultiIndex.from_tuples([("a", 1), ("a", 1)]))
    with pytest.raises(DuplicateKeyError, match=r"\('a', 1\) \(2 times\)"):
        check_keys(df)


def test_check_keys_missing_values_name_rows() -> None:
    df = pd.DataFrame({"id": ["a", None, "c"]}, index=["r1", "r2", "r3"])
    with pytest.raises(InputError, match=r"1 row with a missing key at index 'r2'"):
        check_keys(df, "id")
    df2 = pd.DataFrame({"t": ["x", "y"]}, index=pd.MultiIndex.from_arrays([["a", None], [1, 2]]))
    with pytest.raises(InputError, match=r"missing key at positions 1"):
        check_keys(df2)


# --------------------------------------------------------------------------------------------
# request files


SHARED = {
    "systemInstruction": {"parts": [{"text": "Be brief. ✓ 100%"}]},
    "generationConfig": {"temperature": 0.2, "maxOutputTokens": 64},
    "safetySettings": [{"category": "HARM_CATEGORY_HATE_SPEECH", "threshold": "BLOCK_NONE"}],
}


@pytest.mark.parametrize("shared", [{}, SHARED])
def test_write_is_byte_identical_to_orjson_per_line(tmp_path: Path, shared: dict[str, Any]) -> None:
    keys = [str(i) for i in range(len(TRICKY))] + ['we"ird\\key', "ключ"]
    prompts = [*TRICKY, "x", "y"]
    files = write_request_files(
        tmp_path, prompts, keys, shared, max_file_bytes=10**9, max_requests=10**6
    )
    assert len(files) == 1
    data = files[0].path.read_bytes()
    assert data == b"".join(expected_line(k, p, shared) for k, p in zip(keys, prompts, strict=True))
    assert files[0] == RequestFile(
        path=tmp_path / "requests-0000.jsonl",
        start=0,
        stop=len(keys),
        n_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )
    # Every prompt, NUL bytes and emoji included, round-trips through JSON.
    decoded = [orjson.loads(line) for line in data.splitlines()]
    assert [d["request"]["contents"][0]["parts"][0]["text"] for d in decoded] == prompts


def test_write_accepts_series_and_arrays(tmp_path: Path) -> None:
    prompts = pd.Series(["a", "b"], index=[5, 9], dtype=object)
    keys = np.array(["k1", "k2"], dtype=object)
    files = write_request_files(
        tmp_path,
        prompts,  # type: ignore[arg-type]
        keys,  # type: ignore[arg-type]
        {},
        max_file_bytes=1000,
        max_requests=10,
    )
    assert files[0].path.read_bytes() == expected_line("k1", "a", {}) + expected_line("k2", "b", {})


def test_line_sizes_match_written_lines(tmp_path: Path) -> None:
    keys = [str(i) for i in range(len(TRICKY))]
    sizes = request_line_sizes(TRICKY, keys, SHARED)
    assert sizes.dtype == np.int64
    assert sizes.tolist() == [
        len(expected_line(k, p, SHARED)) for k, p in zip(keys, TRICKY, strict=True)
    ]
    assert list(tmp_path.iterdir()) == []


def test_files_split_by_request_count(tmp_path: Path) -> None:
    n = 40_000  # more than one internal chunk
    keys = [str(i) for i in range(n)]
    prompts = [f"prompt {i} é" for i in range(n)]
    files = write_request_files(
        tmp_path, prompts, keys, {}, max_file_bytes=10**9, max_requests=14000, prefix="job"
    )
    assert [f.path.name for f in files] == ["job-0000.jsonl", "job-0001.jsonl", "job-0002.jsonl"]
    assert [(f.start, f.stop) for f in files] == [(0, 14000), (14000, 28000), (28000, 40000)]
    joined = b"".join(f.path.read_bytes() for f in files)
    assert joined == b"".join(expected_line(k, p, {}) for k, p in zip(keys, prompts, strict=True))
    for f in files:
        assert stat.S_IMODE(f.path.stat().st_mode) == 0o600
        assert f.n_bytes == f.path.stat().st_size


def test_files_split_by_bytes_never_exceeding_the_limit(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    n = 3000
    keys = [str(i) for i in range(n)]
    prompts = ["ü" * int(k) for k in rng.integers(1, 400, size=n)]
    sizes = request_line_sizes(prompts, keys, {})
    limit = 5000
    files = write_request_files(
        tmp_path, prompts, keys, {}, max_file_bytes=limit, max_requests=10**6
    )
    assert files[0].start == 0 and files[-1].stop == n
    for a, b in itertools.pairwise(files):
        assert a.stop == b.start
    for f in files:
        assert f.n_bytes <= limit
        assert f.n_bytes == int(sizes[f.start : f.stop].sum())
        # Greedy: the next line would not have fit.
        if f.stop < n:
            assert f.n_bytes + sizes[f.stop] > limit
        lines = f.path.read_bytes().splitlines()
        assert [orjson.loads(x)["key"] for x in lines] == keys[f.start : f.stop]


def test_exact_fit_stays_in_one_file(tmp_path: Path) -> None:
    sizes = request_line_sizes(["a", "b"], ["0", "1"], {})
    files = write_request_files(
        tmp_path, ["a", "b"], ["0", "1"], {}, max_file_bytes=int(sizes.sum()), max_requests=2
    )
    assert len(files) == 1


def test_too_large_request_names_key_size_and_limit_and_cleans_up(tmp_path: Path) -> None:
    keys = [str(i) for i in range(20_000)]
    prompts = ["short"] * 20_000
    prompts[19_500] = "x" * 30_000  # in the second internal chunk, after files were written
    with pytest.raises(
        RequestTooLargeError, match=r"key '19500' is 30,\d\d\d bytes.*limit of 20,000 bytes"
    ):
        write_request_files(tmp_path, prompts, keys, {}, max_file_bytes=20_000, max_requests=10**6)
    assert list(tmp_path.iterdir()) == []


def test_write_rejects_non_str_prompts_and_cleans_up(tmp_path: Path) -> None:
    prompts: list[Any] = ["ok"] * 20000 + [None]
    with pytest.raises(PromptTypeError, match=r"prompt #20000 is NoneType"):
        write_request_files(
            tmp_path,
            prompts,
            [str(i) for i in range(20001)],
            {},
            max_file_bytes=10**6,
            max_requests=10,
        )
    assert list(tmp_path.iterdir()) == []


def test_write_rejects_surrogates(tmp_path: Path) -> None:
    with pytest.raises(PromptTypeError, match=r"prompt #1 cannot be encoded as UTF-8"):
        write_request_files(
            tmp_path, ["ok", "\ud800"], ["0", "1"], {}, max_file_bytes=10**6, max_requests=10
        )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_file_bytes": 0, "max_requests": 1}, "max_file_bytes must be a positive int"),
        ({"max_file_bytes": 10, "max_requests": -1}, "max_requests must be a positive int"),
    ],
)
def test_write_validates_limits(tmp_path: Path, kwargs: dict[str, int], match: str) -> None:
    with pytest.raises(InputError, match=match):
        write_request_files(tmp_path, ["a"], ["0"], {}, **kwargs)  # type: ignore[arg-type]


def test_write_rejects_contents_in_shared_and_mismatched_lengths(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"must not contain 'contents'"):
        write_request_files(
            tmp_path, ["a"], ["0"], {"contents": []}, max_file_bytes=99, max_requests=9
        )
    with pytest.raises(InputError, match=r"2 prompts but 1 keys"):
        write_request_files(tmp_path, ["a", "b"], ["0"], {}, max_file_bytes=999, max_requests=9)


def test_write_nothing_gives_no_files(tmp_path: Path) -> None:
    assert write_request_files(tmp_path, [], [], {}, max_file_bytes=99, max_requests=9) == []


def test_read_request_prompts_returns_only_wanted_keys(tmp_path: Path) -> None:
    keys = [str(i) for i in range(len(TRICKY))] + ['q"uote']
    prompts = [*TRICKY, "quoted key prompt"]
    files = write_request_files(
        tmp_path, prompts, keys, SHARED, max_file_bytes=4000, max_requests=4
    )
    assert len(files) > 1
    wanted = {"1", "3", "9", 'q"uote', "not-there"}
    got = read_request_prompts([f.path for f in files], wanted)
    assert got == {"1": TRICKY[1], "3": TRICKY[3], "9": TRICKY[9], 'q"uote': "quoted key prompt"}
    assert read_request_prompts([f.path for f in files], []) == {}


@pytest.mark.parametrize(
    "texts",
    [
        ['ends with quote comma ",', "next"],  # the one shape the bulk splitter cannot split
        ['a","b', '","', ",", '"', '\\",', "\\", '"],["', "", '\\","\\'],
        ['{"json": ["a","b"], "n": 1}', 'say "hi", then "bye",x'],
    ],
)
def test_write_bulk_escaping_matches_orjson_on_separator_lookalikes(
    tmp_path: Path, texts: list[str]
) -> None:
    # Repeat the texts through more than one chunk, as prompts and as keys.
    prompts = texts * 3000
    keys = [f"{t}#{i}" for i, t in enumerate(prompts)]
    files = write_request_files(
        tmp_path, prompts, keys, SHARED, max_file_bytes=10**9, max_requests=10**9
    )
    data = files[0].path.read_bytes()
    assert data == b"".join(expected_line(k, p, SHARED) for k, p in zip(keys, prompts, strict=True))
    sizes = request_line_sizes(prompts, keys, SHARED)
    assert sizes.tolist() == [len(line) + 1 for line in data.split(b"\n")[:-1]]


def test_write_shared_fields_with_string_lists_and_markers(tmp_path: Path) -> None:
    shared = {
        "generationConfig": {"stopSequences": ["a", '","', "\x01P\x01"]},
        "cachedContent": "c",
    }
    files = write_request_files(
        tmp_path, ["p1", "p2"], ["k1", "k2"], shared, max_file_bytes=10**6, max_requests=10
    )
    assert files[0].path.read_bytes() == expected_line("k1", "p1", shared) + expected_line(
        "k2", "p2", shared
    )


def test_write_key_comma_and_prompt_bracket_lookalikes(tmp_path: Path) -> None:
    prompts = ["],[", ",", "x", "],[", '"],["', "\\"] * 2000
    keys = [str(i) for i in range(len(prompts))]
    keys[3] = ","
    keys[5] = "],["
    files = write_request_files(
        tmp_path, prompts, keys, {}, max_file_bytes=10**9, max_requests=10**9
    )
    assert files[0].path.read_bytes() == b"".join(
        expected_line(k, p, {}) for k, p in zip(keys, prompts, strict=True)
    )


def test_bulk_escaping_is_used_for_ordinary_text_and_refused_when_ambiguous(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from gemini_batch_magic import _requests

    one_by_one: list[int] = []
    real_array = _requests.pa.array

    def spy_array(values: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(values, list) and len(values) > 1:
            one_by_one.append(len(values))
        return real_array(values, *args, **kwargs)

    monkeypatch.setattr(_requests.pa, "array", spy_array)
    ordinary = [*TRICKY, "ends in a backslash \\", 'has "quotes", inside', "\\\\"]
    escaped = _requests._escape_all(ordinary).to_pylist()
    assert escaped == [orjson.dumps(t)[1:-1] for t in ordinary]
    assert one_by_one == []  # the bulk path handled it
    for risky in ['ends in quote comma ",', 'ends in backslash quote comma \\",']:
        values = [*ordinary, risky, "after"]
        assert _requests._escape_all(values).to_pylist() == [orjson.dumps(t)[1:-1] for t in values]
    assert one_by_one == [len(ordinary) + 2] * 2  # and refused these


# --------------------------------------------------------------------------------------------
# Arrow-held text (pandas' default str dtype): checked and written straight from Arrow, with
# exactly the results of the plain (object column, list of str) path

def _infer_string_dtype() -> Any:
    """The dtype pandas 2 gives text with ``future.infer_string`` on, its preview of pandas 3's
    ``str`` (``string[pyarrow_numpy]`` on pandas 2.2, ``str`` on 2.3); pandas 2's default is
    object, the plain path (see the test after these)."""
    with pd.option_context("future.infer_string", True):
        return pd.Series(["x"]).dtype


ARROW_DTYPES = [
    # pandas' default text dtype: Arrow-backed on pandas 3 only
    pytest.param("str", id="str") if PANDAS_3 else
    pytest.param(_infer_string_dtype(), id="infer_string"),
    pytest.param("string[pyarrow]", id="string[pyarrow]"),
    pytest.param(pd.ArrowDtype(pa.string()), id="arrow-string"),
    pytest.param(pd.ArrowDtype(pa.large_string()), id="arrow-large_string"),
    pytest.param(pd.ArrowDtype(pa.string_view()), id="arrow-string_view"),
]
#: Text JSON must escape, non-ASCII, lookalikes of whitespace, and rows the skip leaves out.
ARROW_TEXTS: list[str | None] = [
    *TRICKY,
    "\x00",
    "\x01",
    "\x1f",
    "\u2028",
    '"',
    "\\",
    "tab\tend\t",
    " leading and trailing space ",
    "\u3000ideographic space then text",
    "€ starts like a space",
    None,
    " ",
    "\u3000\u2029\n",
]


def _arrow_series(texts: list[str | None], dtype: Any, layout: str) -> pd.Series:
    """``texts`` as a Series of ``dtype`` whose Arrow data is whole, chunked, or offset."""
    labels = [f"r{i}" for i in range(len(texts))]
    if layout == "offset":  # df.iloc[3:]: the Arrow array starts 3 values into its buffers
        series = pd.Series(["x", "y", "z", *texts], index=["-3", "-2", "-1", *labels], dtype=dtype)
        return series.iloc[3:]
    series = pd.Series(texts, index=labels, dtype=dtype)
    if layout == "chunked":  # several Arrow chunks, two of them sliced
        a, b = len(texts) // 3, 2 * len(texts) // 3 + 5
        series = pd.concat([series.iloc[:a], series.iloc[a:b], series.iloc[b:]])
    return series


def _build(
    df: pd.DataFrame, out: Path, *, arrow_keys: bool, max_requests: int = 10**6
) -> tuple[np.ndarray, Any, list[RequestFile]]:
    """What the engine does: prompts, check, rows to send, keys, files."""
    texts = prompt_texts(df, prompt="text")
    mask = check_prompts(texts, on_empty="skip")
    rows = np.flatnonzero(mask)
    prompts = take_prompts(texts, rows)
    keys: Any = (
        ArrowText(pa.array(rows, type=pa.int64()).cast(pa.string()))
        if arrow_keys
        else [str(r) for r in rows.tolist()]
    )
    out.mkdir()
    files = write_request_files(
        out, prompts, keys, SHARED, max_file_bytes=150_000, max_requests=max_requests
    )
    return mask, prompts, files


def _contents(files: list[RequestFile]) -> list[tuple[str, int, int, int, str, bytes]]:
    return [(f.path.name, f.start, f.stop, f.n_bytes, f.sha256, f.path.read_bytes()) for f in files]


def test_default_text_column_is_written_from_arrow_on_pandas_3_and_plainly_on_pandas_2(
    tmp_path: Path,
) -> None:
    df = pd.DataFrame({"text": ARROW_TEXTS})  # pandas' default text dtype
    mask, prompts, files = _build(df, tmp_path / "default", arrow_keys=PANDAS_3)
    if PANDAS_3:  # Arrow-backed str: no Python str per row
        assert str(df["text"].dtype) == "str" and isinstance(prompts, ArrowText)
    else:  # object: a list of Python str
        assert df["text"].dtype == object and isinstance(prompts, list)
    sent = [t for t in ARROW_TEXTS if t is not None and not t.isspace() and t != ""]
    assert b"".join(f.path.read_bytes() for f in files) == b"".join(
        expected_line(str(r), t, SHARED)
        for r, t in zip(np.flatnonzero(mask).tolist(), sent, strict=True)
    )


@pytest.mark.parametrize("layout", ["whole", "chunked", "offset"])
@pytest.mark.parametrize("dtype", ARROW_DTYPES)
def test_arrow_column_files_are_byte_identical_to_the_plain_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dtype: Any, layout: str
) -> None:
    from gemini_batch_magic import _requests

    monkeypatch.setattr(_requests, "_CHUNK_ROWS", 7)  # many chunk boundaries, some mid-chunk
    texts = ARROW_TEXTS * 5
    df = pd.DataFrame({"text": _arrow_series(texts, dtype, layout)})
    mask, prompts, files = _build(df, tmp_path / "arrow", arrow_keys=True, max_requests=40)
    assert isinstance(prompts, ArrowText)  # the Arrow path, not the plain one

    plain = pd.DataFrame({"text": _arrow_series(texts, object, layout)})
    ref_mask, ref_prompts, ref_files = _build(plain, tmp_path / "plain", arrow_keys=False,
                                              max_requests=40)
    assert isinstance(ref_prompts, list)
    assert mask.tolist() == ref_mask.tolist()
    assert not mask.all() and mask.any()
    assert len(files) > 1
    assert _contents(files) == _contents(ref_files)
    sent = [t for t in texts if t is not None and t.strip() != "" and not t.isspace()]
    data = b"".join(f.path.read_bytes() for f in files)
    assert data == b"".join(
        expected_line(str(r), t, SHARED)
        for r, t in zip(np.flatnonzero(mask).tolist(), sent, strict=True)
    )


@pytest.mark.parametrize("dtype", ARROW_DTYPES)
def test_arrow_column_beyond_one_real_chunk_matches_the_plain_path(
    tmp_path: Path, dtype: Any
) -> None:
    from gemini_batch_magic import _requests

    n = 2 * _requests._CHUNK_ROWS + 123
    texts = [ARROW_TEXTS[i % len(ARROW_TEXTS)] for i in range(n)]
    df = pd.DataFrame({"text": _arrow_series(texts, dtype, "offset")})
    mask, prompts, files = _build(df, tmp_path / "arrow", arrow_keys=True)
    assert isinstance(prompts, ArrowText)
    plain = pd.DataFrame({"text": _arrow_series(texts, object, "offset")})
    ref_mask, _, ref_files = _build(plain, tmp_path / "plain", arrow_keys=False)
    assert mask.tolist() == ref_mask.tolist()
    assert len(files) > 2
    assert _contents(files) == _contents(ref_files)
    assert request_line_sizes(prompts, [str(r) for r in np.flatnonzero(mask)], SHARED).sum() == (
        sum(f.n_bytes for f in files)
    )


def test_arrow_chunks_without_escapes_are_written_as_they_are(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gemini_batch_magic import _requests

    monkeypatch.setattr(_requests, "_CHUNK_ROWS", 4)
    monkeypatch.setattr(_requests, "_ESCAPE_PROBE", 8)  # the escape lies past the probe
    prompts = ["plain text", "héllo wörld 😀", "\u2028 and DEL \x7f", "漢字"] * 3
    prompts[9] = "only this chunk has a quote: \" here"
    keys = [str(i) for i in range(len(prompts))]
    files = write_request_files(
        tmp_path, pa.array(prompts), pa.chunked_array([pa.array(keys)]), SHARED,
        max_file_bytes=10**6, max_requests=10**6,
    )
    assert files[0].path.read_bytes() == b"".join(
        expected_line(k, p, SHARED) for k, p in zip(keys, prompts, strict=True)
    )


def test_arrow_chunks_with_a_single_escape_of_any_kind_are_escaped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gemini_batch_magic import _requests

    monkeypatch.setattr(_requests, "_CHUNK_ROWS", 2)
    escaped = [chr(b) for b in range(0x20)] + ['"', "\\"]
    prompts = [t for c in escaped for t in ("plain é", f"a{c}b")]  # one kind per chunk
    keys = [str(i) for i in range(len(prompts))]
    files = write_request_files(
        tmp_path, pa.array(prompts), pa.array(keys), {}, max_file_bytes=10**6, max_requests=10**6
    )
    assert files[0].path.read_bytes() == b"".join(
        expected_line(k, p, {}) for k, p in zip(keys, prompts, strict=True)
    )


def test_write_accepts_every_arrow_container_for_prompts_and_keys(tmp_path: Path) -> None:
    prompts = TRICKY[:-1]
    keys = [f'k"{i}\\' for i in range(len(prompts))]  # keys that JSON must escape
    expected = b"".join(expected_line(k, p, {}) for k, p in zip(keys, prompts, strict=True))
    containers: list[Callable[[list[str]], Any]] = [
        lambda v: pa.array(v, type=pa.large_string()),
        lambda v: pa.chunked_array([pa.array(v[:3]), pa.array(v[3:])]),
        lambda v: pd.Series(v, dtype="str"),
        lambda v: ArrowText(pa.array(["skipped", *v]), np.arange(1, len(v) + 1)),
    ]
    for i, make in enumerate(containers):
        out = tmp_path / str(i)
        out.mkdir()
        files = write_request_files(
            out, make(prompts), make(keys), {}, max_file_bytes=10**6, max_requests=10
        )
        assert files[0].path.read_bytes() == expected, i
        assert request_line_sizes(make(prompts), make(keys), {}).tolist() == [
            len(line) + 1 for line in expected.split(b"\n")[:-1]
        ]


def test_write_rejects_missing_arrow_prompts_and_keys_and_cleans_up(tmp_path: Path) -> None:
    with pytest.raises(PromptTypeError, match=r"every prompt must be a str, but prompt #2 is NoneType"):
        write_request_files(
            tmp_path, pa.array(["a", "b", None]), ["0", "1", "2"], {},
            max_file_bytes=100, max_requests=10,
        )
    with pytest.raises(PromptTypeError, match=r"every key must be a str, but key #1 is NoneType"):
        write_request_files(
            tmp_path, ["a", "b"], pa.array(["0", None]), {}, max_file_bytes=100, max_requests=10
        )
    assert list(tmp_path.iterdir()) == []


def test_arrow_text_reads_like_a_list_of_str() -> None:
    values = pa.chunked_array([pa.array(["a", "b"]), pa.array(["c", "dé", "e"])])
    every = ArrowText(values)
    picked = ArrowText(values, np.array([4, 0, 3]))
    assert len(every) == 5 and list(every) == ["a", "b", "c", "dé", "e"]
    assert every[1:4] == ["b", "c", "dé"] and every[::2] == ["a", "c", "e"]
    assert list(picked) == ["e", "a", "dé"] and picked[-1] == "dé" and picked[0] == "e"
    with pytest.raises(IndexError, match=r"row 3 is out of range for 3 rows"):
        picked[3]
    with pytest.raises(InputError, match=r"pyarrow string array, got Int64Array of int64"):
        ArrowText(pa.array([1, 2]))


def test_whitespace_table_is_exactly_what_str_isspace_accepts() -> None:
    from gemini_batch_magic import _requests

    every = {chr(c) for c in range(0x110000) if chr(c).isspace()}
    assert set(_requests._WHITESPACE) == every


@pytest.mark.parametrize("dtype", ["str", pd.ArrowDtype(pa.string())])  # 64- and 32-bit offsets
def test_arrow_blank_detection_is_exactly_str_isspace_for_every_character(dtype: Any) -> None:
    chars = [chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000]
    mask = check_prompts(pd.Series(chars, dtype=dtype), on_empty="skip")
    assert mask.tolist() == [not c.isspace() for c in chars]


@pytest.mark.parametrize("dtype", ARROW_DTYPES)
def test_arrow_blank_detection_of_whitespace_runs_and_lookalikes(dtype: Any) -> None:
    from gemini_batch_magic._requests import _WHITESPACE

    texts: list[str | None] = [None, "", *_WHITESPACE, _WHITESPACE, _WHITESPACE[::-1]]
    texts += [ws * 3 for ws in _WHITESPACE]
    texts += [f"{ws}x" for ws in _WHITESPACE] + [f"x{ws}" for ws in _WHITESPACE]
    texts += [f"{ws}x{ws}" for ws in _WHITESPACE]
    # Not whitespace, though they share first or last bytes with whitespace characters.
    texts += ["\u200b", "\u180e", "\ufeff", "\u2010", "\u201c\u2000", "\u2000\u201c", "€",
              "\xa0\xa1", "\u1680\u1681", "\u3001", "\u205e", "\x85\x86", "\u3000\u2028a"]
    arrow = pd.Series(texts, dtype=dtype)
    plain = pd.Series(texts, dtype=object)
    expected = [not (t is None or t == "" or t.isspace()) for t in texts]
    assert check_prompts(arrow, on_empty="skip").tolist() == expected
    assert check_prompts(plain, on_empty="skip").tolist() == expected


@pytest.mark.parametrize("dtype", ARROW_DTYPES)
def test_arrow_empty_prompt_errors_name_the_same_rows_as_the_plain_path(dtype: Any) -> None:
    texts = ["ok", None, "", " \t", "fine", "\u3000", "\x1c"] + ["x"] * 20 + [None] * 9
    index = pd.Index([f"row-{i}" for i in range(len(texts))])
    arrow = _arrow_series(texts, dtype, "chunked").set_axis(index)
    plain = pd.Series(texts, index=index, dtype=object)
    messages = []
    for series in (arrow, plain):
        with pytest.raises(EmptyPromptError) as info:
            check_prompts(series)
        messages.append(str(info.value))
    assert messages[0] == messages[1]
    assert "14 rows have" in messages[0] and "'row-1', 'row-2', 'row-3'" in messages[0]
    assert "... and 4 more" in messages[0]
    nothing = pd.Series([None, " ", "\u2029"], index=["a", "b", "c"], dtype=dtype)
    with pytest.raises(EmptyPromptError, match=r"all prompts are .*'a', 'b', 'c'"):
        check_prompts(nothing, on_empty="skip")


def test_arrow_missing_values_come_from_the_validity_bitmap() -> None:
    # Arrow may keep bytes under a missing value; the row is still missing.
    full = pa.array(["kept", "hidden text", "also kept"])
    validity = pa.py_buffer(np.packbits([1, 0, 1], bitorder="little").tobytes())
    masked = pa.Array.from_buffers(pa.string(), 3, [validity, *full.buffers()[1:]])
    series = pd.Series(pd.arrays.ArrowExtensionArray(masked), index=["a", "b", "c"])
    assert series.isna().tolist() == [False, True, False]
    with pytest.raises(EmptyPromptError, match=r"1 row has .*\(index 'b'\)"):
        check_prompts(series)
    assert check_prompts(series, on_empty="skip").tolist() == [True, False, True]


def test_prompt_texts_keeps_arrow_columns_and_renders_everything_else() -> None:
    df = pd.DataFrame(
        {
            "text": pd.Series(["a", None], dtype="str"),
            "cat": pd.Categorical(["x", "y"]),
            "obj": pd.Series(["p", None], dtype=object),
            "n": [1, 2],
        }
    )
    kept = prompt_texts(df, prompt="text")
    assert kept.dtype == df["text"].dtype and kept.isna().tolist() == [False, True]
    for kwargs in ({"prompt": "cat"}, {"prompt": "obj"}, {"template": "{text} #{n}"}):
        rendered = prompt_texts(df, **kwargs)  # type: ignore[arg-type]
        assert rendered.dtype == object
        assert rendered.tolist() == render_prompts(df, **kwargs).tolist()  # type: ignore[arg-type]
    with pytest.raises(PromptTypeError, match=r"prompt column 'n' must hold text"):
        prompt_texts(df, prompt="n")
    assert take_prompts(render_prompts(df, prompt="obj"), np.array([0])) == ["p"]
