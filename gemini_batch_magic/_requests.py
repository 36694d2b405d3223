"""DataFrame rows -> prompts -> keyed JSONL request files (pure functions, no network).

The engine calls these in order:

1. :func:`render_prompts` turns each row into one prompt, from a column (``prompt=``) or a
   ``str.format``-style template over columns (``template=``). The engine calls
   :func:`prompt_texts` instead, which keeps a prompt column held in Arrow (pandas' default
   ``str`` dtype) in Arrow, and :func:`take_prompts` to pick the rows to send.
2. :func:`check_prompts` rejects (or, with ``on_empty="skip"``, masks out) empty prompts and
   text that cannot be sent as UTF-8.
3. :func:`check_keys` validates the row keys (the index, or a key column).
4. :func:`request_line_sizes` / :func:`write_request_files` serialise the requests as the
   JSONL input of a file batch (wire spec §5.1), sharded by size and request count.
5. :func:`read_request_prompts` reads prompts back from those files (used by retry).

Every line written is byte-for-byte
``orjson.dumps({"key": k, "request": {"contents": [...], **shared}}) + b"\\n"``, but only the
prompt and the key are serialised per row: the constant pieces around them are serialised once.
Text held in Arrow is turned into Python strings one chunk of rows at a time, and not at all
when a chunk needs no JSON escaping.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import hashlib
import operator
import os
import string
from collections import Counter, deque
from collections.abc import Callable, Collection, Hashable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias, overload

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from gemini_batch_magic._schemas import schema_json
from gemini_batch_magic.exceptions import (
    ColumnError,
    ConfigError,
    DuplicateKeyError,
    EmptyPromptError,
    InputError,
    PromptTypeError,
    RequestTooLargeError,
    TemplateError,
)

__all__ = [
    "ArrowText",
    "RequestFile",
    "RequestWriter",
    "ShardPlanner",
    "check_keys",
    "check_prompts",
    "measure_requests",
    "plan_shards",
    "prompt_texts",
    "read_request_prompts",
    "render_prompts",
    "request_config",
    "request_line_sizes",
    "take_prompts",
    "write_request_files",
]

#: How many index labels an error message shows before "... and N more".
_MAX_SHOWN = 10
#: Rows serialised per batch when writing request files (a few MB of JSON at a time).
_CHUNK_ROWS = 16384
#: Values that are containers, not scalars: a template cannot format them sensibly.
_CONTAINER_TYPES = (dict, list, set, frozenset, tuple, bytes, bytearray, memoryview, np.ndarray)
_ON_EMPTY_CHOICES = ("raise", "skip")
#: Every character ``str.isspace()`` is True for (a test checks it against the running Python).
_WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680"
    + "".join(map(chr, range(0x2000, 0x200B)))
    + "\u2028\u2029\u202f\u205f\u3000"
)
#: Whether a UTF-8 byte can be the first / the last byte of a whitespace character.
_WS_FIRST_BYTE = np.zeros(256, dtype=bool)
_WS_FIRST_BYTE[[c.encode()[0] for c in _WHITESPACE]] = True
_WS_LAST_BYTE = np.zeros(256, dtype=bool)
_WS_LAST_BYTE[[c.encode()[-1] for c in _WHITESPACE]] = True
#: Bytes of text to scan for JSON escapes before scanning a whole chunk.
_ESCAPE_PROBE = 1 << 16


# --------------------------------------------------------------------------------------------
# message helpers


def _show_labels(labels: Sequence[Any] | pd.Index) -> str:
    """Format at most ``_MAX_SHOWN`` index labels, plus how many more there are."""
    n = len(labels)
    shown = ", ".join(repr(x) for x in list(labels[:_MAX_SHOWN]))
    return shown + (f" ... and {n - _MAX_SHOWN} more" if n > _MAX_SHOWN else "")


def _n_rows(n: int) -> str:
    return f"{n} row" + ("" if n == 1 else "s")


def _close_matches(name: object, columns: pd.Index) -> str:
    """A ' Did you mean ...?' sentence listing columns whose names resemble ``name``."""
    names = [str(c) for c in columns]
    matches = difflib.get_close_matches(str(name), names, n=5, cutoff=0.6)
    if not matches:
        lowered = {n.lower(): n for n in names}
        if str(name).lower() in lowered:
            matches = [lowered[str(name).lower()]]
    if matches:
        return " Did you mean " + " or ".join(repr(m) for m in matches) + "?"
    listed = ", ".join(repr(n) for n in names[:20]) + (" ..." if len(names) > 20 else "")
    return f" The columns are: {listed}."


def _type_names(values: Sequence[Any]) -> str:
    return ", ".join(sorted({type(v).__name__ for v in values}))


def _missing_mask(values: np.ndarray) -> np.ndarray:
    """Boolean mask of None / NaN / NaT / pd.NA in an object (or any) array."""
    return np.asarray(pd.isna(values), dtype=bool)


# --------------------------------------------------------------------------------------------
# render_prompts


def render_prompts(
    df: pd.DataFrame, *, prompt: str | None = None, template: str | None = None
) -> pd.Series:
    """Return one prompt per row of ``df``: the text of column ``prompt``, or ``template`` filled in.

    Exactly one of ``prompt`` (a column name) and ``template`` (a ``str.format``-style template
    of plain ``{column}`` / ``{column:spec}`` fields) must be given. The result has ``df``'s
    index, object dtype, and holds ``str`` values, or ``None`` where the prompt is missing (a
    missing value in the prompt column or in any column the template uses).

    Raises:
        InputError: ``df`` is not a non-empty DataFrame, or not exactly one of prompt/template.
        ColumnError: the column, or a template placeholder, is not a column of ``df``.
        TemplateError: the template uses anything but plain ``{column}`` fields.
        PromptTypeError: prompt values that are not text, or template values that are
            containers (dict, list, set, bytes, ...).
    """
    values = _prompt_values(df, prompt, template, keep_arrow=False)
    return pd.Series(values, index=df.index, dtype=object, name="prompt")


def prompt_texts(
    df: pd.DataFrame, *, prompt: str | None = None, template: str | None = None
) -> pd.Series:
    """:func:`render_prompts`, except that a prompt column held in Arrow is returned as it is.

    Held in Arrow: pandas' default ``str`` dtype, ``string[pyarrow]`` and ``pd.ArrowDtype`` of
    a string type. Such a column is returned unchanged (its own dtype and missing values, no
    Python ``str`` per row), for :func:`check_prompts` and :func:`take_prompts`; anything else
    is what render_prompts returns. Raises what render_prompts raises.
    """
    values = _prompt_values(df, prompt, template, keep_arrow=True)
    if isinstance(values, pd.Series):
        return values
    return pd.Series(values, index=df.index, dtype=object, name="prompt")


def _prompt_values(
    df: pd.DataFrame, prompt: str | None, template: str | None, *, keep_arrow: bool
) -> np.ndarray | pd.Series:
    """Validate the arguments of render_prompts; the prompts as an object array (or, with
    ``keep_arrow``, the prompt column itself when it is held in Arrow)."""
    if not isinstance(df, pd.DataFrame):
        raise InputError(
            f"expected a pandas DataFrame, got {type(df).__name__}. "
            "Wrap your data first, e.g. pd.DataFrame({'prompt': prompts}) (polars DataFrames "
            "and LazyFrames and pyarrow Tables are taken too)."
        )
    if (prompt is None) == (template is None):
        got = "both" if prompt is not None else "neither"
        raise InputError(
            f"pass exactly one of prompt= (a column name) or template= (e.g. "
            f"'Summarise: {{text}}'); got {got}."
        )
    if df.shape[1] == 0:
        raise InputError("the DataFrame has no columns; there is nothing to build prompts from.")
    if df.shape[0] == 0:
        raise InputError("the DataFrame has no rows; there is nothing to send.")
    if prompt is not None:
        if not isinstance(prompt, str):
            raise InputError(f"prompt= must be a column name (str), got {type(prompt).__name__}.")
        if keep_arrow:
            col = _column(df, prompt, "prompt column")
            if _arrow_text(col) is not None:
                return col
        return _text_column(df, prompt)
    if not isinstance(template, str):
        raise InputError(f"template= must be a str, got {type(template).__name__}.")
    if keep_arrow:
        rendered = _render_template_arrow(df, template)
        if rendered is not None:
            return rendered
    return _render_template(df, template)


def _column(df: pd.DataFrame, name: str, what: str) -> pd.Series:
    """``df[name]`` as a Series, or ColumnError with close matches."""
    if name not in df.columns:
        raise ColumnError(
            f"{what} {name!r} is not a column of the DataFrame.{_close_matches(name, df.columns)}"
        )
    col = df[name]
    if isinstance(col, pd.DataFrame):
        raise ColumnError(
            f"the DataFrame has {col.shape[1]} columns named {name!r}; rename them so the name "
            "is unique, e.g. df.columns = [...]."
        )
    return col


def _is_text_dtype(dtype: Any) -> bool:
    """True for dtypes whose non-missing values are all ``str`` by construction."""
    if isinstance(dtype, pd.StringDtype):
        return True
    if isinstance(dtype, pd.ArrowDtype):
        return _is_arrow_text_type(dtype.pyarrow_dtype)
    return False


def _is_arrow_text_type(t: pa.DataType) -> bool:
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t))


def _arrow_text(values: Any) -> pa.ChunkedArray | None:
    """The Arrow strings behind ``values`` (no copy), or None if they are not held in Arrow.

    Held in Arrow: a Series or Index of pandas' default ``str`` dtype, ``string[pyarrow]`` or
    ``pd.ArrowDtype`` of a string type, and pyarrow string arrays (chunked or not). On pandas
    2.2 ``future.infer_string`` gives ``string[pyarrow_numpy]``, held in Arrow too.
    """
    if isinstance(values, (pd.Series, pd.Index)):
        dtype = values.dtype
        if not (
            (isinstance(dtype, pd.StringDtype) and dtype.storage in ("pyarrow", "pyarrow_numpy"))
            or isinstance(dtype, pd.ArrowDtype)
        ):
            return None
        array: Any = values.array
        values = array.__arrow_array__()
    if isinstance(values, pa.Array):
        values = pa.chunked_array([values])
    if isinstance(values, pa.ChunkedArray) and _is_arrow_text_type(values.type):
        return values
    return None


def _text_column(df: pd.DataFrame, name: str) -> np.ndarray:
    """The prompt column as an object array of str / None; PromptTypeError on non-text values."""
    col = _column(df, name, "prompt column")
    dtype = col.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        cats = dtype.categories
        bad_cats = [c for c in cats if not isinstance(c, str)]
        if bad_cats:
            bad = np.asarray(col.isin(bad_cats), dtype=bool)
            _raise_not_text(col, bad, name)
        return _none_for_missing(col.to_numpy(dtype=object))
    if _is_text_dtype(dtype):
        values = col.to_numpy(dtype=object)
        missing = np.asarray(col.isna(), dtype=bool)  # from the validity bitmap: no object scan
        if missing.any():
            values = values.copy()  # never write into the caller's frame
            values[missing] = None
        return values
    values = col.to_numpy(dtype=object)
    if dtype is np.dtype(object):
        kind = pd.api.types.infer_dtype(values, skipna=True)
        if kind in ("string", "empty"):
            return _none_for_missing(values)
    missing = _missing_mask(values)
    is_str = np.fromiter((isinstance(v, str) for v in values), dtype=bool, count=len(values))
    _raise_not_text(col, ~is_str & ~missing, name)
    return _none_for_missing(values)  # pragma: no cover - _raise_not_text always raises here


def _none_for_missing(values: np.ndarray) -> np.ndarray:
    missing = _missing_mask(values)
    if missing.any():
        values = values.copy()
        values[missing] = None
    return values


def _raise_not_text(col: pd.Series, bad: np.ndarray, name: str) -> None:
    labels = col.index[bad]
    if len(labels) == 0:
        return
    types = _type_names(col[bad].tolist()[:1000])
    raise PromptTypeError(
        f"prompt column {name!r} must hold text, but {_n_rows(len(labels))} hold {types} "
        f"(index {_show_labels(labels)}). Convert it first, e.g. "
        f"df[{name!r}] = df[{name!r}].astype(str), or use template='...{{{name}}}...' "
        "to format values."
    )


def _parse_template(template: str, df: pd.DataFrame) -> list[tuple[str, str | None, str]]:
    """Split a template into (literal, column or None, format_spec) pieces, validating it."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise TemplateError(
            f"the template is not valid: {exc}. Write a literal brace as '{{{{' or '}}}}'."
        ) from exc
    pieces: list[tuple[str, str | None, str]] = []
    for literal, field, spec, conversion in parsed:
        if field is None:
            pieces.append((literal, None, ""))
            continue
        shown = (
            "{"
            + field
            + (f"!{conversion}" if conversion else "")
            + (f":{spec}" if spec else "")
            + "}"
        )
        if field == "" or field.isdigit():
            raise TemplateError(
                f"the template field {shown} is positional; name a column instead, "
                "e.g. 'Summarise: {text}'."
            )
        if conversion is not None:
            raise TemplateError(
                f"the template field {shown} uses a conversion (!{conversion}); only plain "
                f"{{column}} or {{column:spec}} fields are allowed, e.g. {{{field}}}."
            )
        if spec and ("{" in spec or "}" in spec):
            raise TemplateError(
                f"the template field {shown} has a nested field in its format spec; only a "
                "literal spec such as {price:.2f} is allowed."
            )
        if "." in field or "[" in field:
            head = field.split(".")[0].split("[")[0]
            if field in df.columns:
                raise TemplateError(
                    f"the template field {shown} names a column containing '.' or '[', which a "
                    "template cannot reference; rename it first, e.g. "
                    f"df = df.rename(columns={{{field!r}: {_safe_name(field)!r}}})."
                )
            if head in df.columns:
                raise TemplateError(
                    f"the template field {shown} uses attribute or index access; only plain "
                    f"{{column}} fields are allowed. Compute a column first, e.g. "
                    f"df['new'] = df[{head!r}].map(...), then use {{new}}."
                )
            dotted = [c for c in df.columns if isinstance(c, str) and ("." in c or "[" in c)]
            hint = (
                f" Column names containing '.' or '[' (such as {dotted[0]!r}) cannot be "
                "referenced in a template; rename them first, e.g. "
                f"df = df.rename(columns={{{dotted[0]!r}: {_safe_name(dotted[0])!r}}})."
                if dotted
                else ""
            )
            raise TemplateError(
                f"the template field {shown} uses attribute or index access; only plain "
                f"{{column}} fields are allowed.{hint}"
            )
        if field not in df.columns:
            braced = [c for c in df.columns if isinstance(c, str) and ("{" in c or "}" in c)]
            note = (
                f" Column names containing braces (such as {braced[0]!r}) cannot be referenced; "
                "rename them first."
                if braced
                else ""
            )
            raise ColumnError(
                f"template placeholder {{{field}}} is not a column of the DataFrame."
                f"{_close_matches(field, df.columns)}{note}"
            )
        pieces.append((literal, field, spec or ""))
    if len(df) > 1 and not any(field is not None for _, field, _ in pieces):
        raise TemplateError(
            f"the template has no {{column}} placeholder, so all {len(df):,} rows would send "
            f"the same prompt ({template[:60]!r}) and you would pay for it {len(df):,} times. "
            "Name a column in it, e.g. 'Summarise: {text}'. To send one constant prompt per "
            "row on purpose, put it in a column and pass prompt= that column: "
            "df.assign(prompt='...').gembatch.submit('prompt')."
        )
    return pieces


def _safe_name(name: str) -> str:
    """A column name a template can reference, to suggest in messages."""
    return "".join(c if c.isalnum() or c in " _-" else "_" for c in name).strip("_") or "column"


def _render_template(df: pd.DataFrame, template: str) -> np.ndarray:
    """Fill the template for every row, vectorised by column; None where a value is missing."""
    pieces = _parse_template(template, df)
    n = len(df)
    missing = np.zeros(n, dtype=bool)
    converted: dict[tuple[str, str], np.ndarray] = {}
    for _, field, spec in pieces:
        if field is not None and (field, spec) not in converted:
            text, miss = _format_column(_column(df, field, "template placeholder"), field, spec)
            converted[(field, spec)] = text
            missing |= miss
    out: np.ndarray | None = None
    pending = ""  # literal text not yet added to ``out``
    for literal, field, spec in pieces:
        pending += literal
        if field is None:
            continue
        col = converted[(field, spec)]
        if out is None:
            out = (pending + col) if pending else col.copy()
        else:
            out = (out + pending + col) if pending else (out + col)
        pending = ""
    if out is None:
        out = np.full(n, pending, dtype=object)
    elif pending:
        out = out + pending
    if missing.any():
        out[missing] = None
    return out


def _render_template_arrow(df: pd.DataFrame, template: str) -> pd.Series | None:
    """:func:`_render_template` in Arrow, when every field is a plain ``{column}`` of a text
    column held in Arrow (else None): the same text, missing where a value is missing, and
    no Python ``str`` per row."""
    pieces = _parse_template(template, df)
    args: list[Any] = []
    for literal, field, spec in pieces:
        if literal:
            args.append(pa.scalar(literal, type=pa.large_string()))
        if field is None:
            continue
        col = _arrow_text(_column(df, field, "template placeholder"))
        if spec or col is None:
            return None
        args.append(col if pa.types.is_large_string(col.type) else col.cast(pa.large_string()))
    if not any(isinstance(a, pa.ChunkedArray) for a in args):
        return None
    # a null in any column makes the row's prompt null (emit_null), as the object path does
    out = pc.binary_join_element_wise(*args, pa.scalar("", type=pa.large_string()))
    return pd.Series(pd.arrays.ArrowStringArray(out), index=df.index, name="prompt", copy=False)


def _format_column(col: pd.Series, name: str, spec: str) -> tuple[np.ndarray, np.ndarray]:
    """(text, missing): ``format(value, spec)`` of every value as an object array, "" where missing."""
    dtype = col.dtype
    n = len(col)
    if not spec and (
        _is_text_dtype(dtype)
        or (
            isinstance(dtype, pd.CategoricalDtype)
            and pd.api.types.infer_dtype(dtype.categories, skipna=True) == "string"
        )
    ):
        values = col.to_numpy(dtype=object, na_value="")
        return values, np.asarray(col.isna(), dtype=bool)
    if not spec and isinstance(dtype, np.dtype) and dtype.kind in "iub":
        # str(int) == format(int) and str(bool) == format(bool); numpy converts in C.
        return col.to_numpy().astype(str).astype(object), np.zeros(n, dtype=bool)
    if not spec and dtype == np.float64:
        arr = col.to_numpy()
        miss = np.isnan(arr)
        # numpy prints float64 with the same shortest round-trip repr as Python's format().
        text = arr.astype(str).astype(object)
        text[miss] = ""
        return text, miss
    values = col.to_numpy(dtype=object)
    miss = _missing_mask(values)
    if (
        not spec
        and dtype is np.dtype(object)
        and pd.api.types.infer_dtype(values, skipna=True)
        in (
            "string",
            "empty",
        )
    ):
        values = values.copy()
        values[miss] = ""
        return values, miss
    present = np.flatnonzero(~miss)
    vals = values[present].tolist()
    is_container = np.fromiter(
        (isinstance(v, _CONTAINER_TYPES) for v in vals), dtype=bool, count=len(vals)
    )
    if is_container.any():
        labels = col.index[present[is_container]]
        types = _type_names([v for v, c in zip(vals, is_container, strict=True) if c][:1000])
        raise PromptTypeError(
            f"template column {name!r} holds {types} values in {_n_rows(len(labels))} "
            f"(index {_show_labels(labels)}), which a template cannot format as text. Convert "
            f"them first, e.g. df[{name!r}] = df[{name!r}].map(json.dumps)."
        )
    out = np.full(n, "", dtype=object)
    try:
        out[present] = [format(v, spec) for v in vals] if present.size else []
    except (ValueError, TypeError) as exc:
        bad = [i for i, v in zip(present.tolist(), vals, strict=True) if not _formats(v, spec)]
        labels = col.index[bad]
        raise TemplateError(
            f"the format spec {{{name}:{spec}}} does not fit the values of column {name!r} "
            f"({_type_names([vals[0]] if not bad else values[bad].tolist()[:1000])}) in "
            f"{_n_rows(len(labels))} (index {_show_labels(labels)}): {exc}. Use a spec for that "
            f"type, or convert the column first."
        ) from exc
    return out, miss


def _formats(value: Any, spec: str) -> bool:
    try:
        format(value, spec)
    except (ValueError, TypeError):
        return False
    return True


# --------------------------------------------------------------------------------------------
# check_prompts


def check_prompts(prompts: pd.Series, *, on_empty: str = "raise") -> np.ndarray:
    """Return a boolean mask over ``prompts``: True for each row to send.

    None, NaN, empty and whitespace-only prompts raise :class:`EmptyPromptError` with
    ``on_empty="raise"`` (the default) or are left out of the mask with ``on_empty="skip"``;
    if nothing is left to send, EmptyPromptError is raised either way. Text that cannot be
    encoded as UTF-8 (lone surrogates) raises :class:`PromptTypeError`. Any other Unicode,
    including NUL characters, is valid. Text held in Arrow (see :func:`prompt_texts`) is
    checked from its buffers: it is valid UTF-8 by construction, and only the few rows that
    start and end like whitespace become Python strings.
    """
    if on_empty not in _ON_EMPTY_CHOICES:
        raise InputError(
            f"on_empty={on_empty!r} is not a valid choice; use one of "
            + ", ".join(repr(c) for c in _ON_EMPTY_CHOICES)
            + "."
        )
    arrow = _arrow_text(prompts)
    send = ~_blank_arrow(arrow) if arrow is not None else _sendable_objects(prompts)
    if not send.all():
        labels = prompts.index[~send]
        if on_empty == "raise" or not send.any():
            what = (
                "all prompts are"
                if not send.any()
                else f"{_n_rows(len(labels))} {'has' if len(labels) == 1 else 'have'}"
            )
            fix = (
                "fill or drop them, or pass on_empty='skip' to send only the others"
                if send.any()
                else "check the prompt column or template"
            )
            raise EmptyPromptError(
                f"{what} missing, empty or whitespace-only prompts "
                f"(index {_show_labels(labels)}); {fix}.",
                rows=list(labels[:_MAX_SHOWN]),
            )
    return send


def _sendable_objects(prompts: pd.Series) -> np.ndarray:
    """Not missing, empty or whitespace-only, per row; PromptTypeError for non-text or text
    that cannot be encoded as UTF-8."""
    values = prompts.to_numpy(dtype=object)
    n = len(values)
    items = values.tolist()
    blank: np.ndarray | None
    try:
        # str.isspace raises TypeError on a non-str: this one pass is also the type check.
        blank = np.fromiter(map(str.isspace, items), dtype=bool, count=n)
    except TypeError:
        blank = None
    if blank is not None:
        send = np.ones(n, dtype=bool)
        strs: list[str] = items
    else:
        missing = _missing_mask(values)
        is_str = np.fromiter((isinstance(v, str) for v in items), dtype=bool, count=n)
        other = ~is_str & ~missing
        if other.any():
            labels = prompts.index[other]
            raise PromptTypeError(
                f"prompts must be text, but {_n_rows(len(labels))} hold "
                f"{_type_names(values[other].tolist()[:1000])} (index {_show_labels(labels)})."
            )
        send = is_str
        strs = values[is_str].tolist()
    text_rows = np.flatnonzero(send)  # the row of each item of ``strs``
    _check_utf8(prompts, text_rows, strs)
    # Whitespace-only or empty: str.isspace() is False for "", and len() == 0 catches that.
    if blank is None:
        blank = np.fromiter(map(str.isspace, strs), dtype=bool, count=len(strs))
    if "" in strs:
        blank |= np.fromiter(map(len, strs), dtype=np.int64, count=len(strs)) == 0
    send[text_rows[blank]] = False
    return send


def _blank_arrow(values: pa.ChunkedArray) -> np.ndarray:
    """Missing, empty or whitespace-only (exactly ``str.isspace``), per row of Arrow strings.

    Read from the buffers: a non-empty row can only be whitespace if its first byte can start
    a whitespace character and its last byte can end one; only those rows become Python
    strings, to be tested with ``str.isspace``. Missing rows come from the validity bitmap.
    """
    out = np.empty(len(values), dtype=bool)
    pos = 0
    for chunk in values.chunks:
        if pa.types.is_string_view(chunk.type):
            chunk = chunk.cast(pa.large_string())
        offsets, data = _buffers(chunk)
        starts, ends = offsets[:-1], offsets[1:]
        blank = ends == starts
        rows = np.flatnonzero(~blank)
        maybe = rows[_WS_FIRST_BYTE[data[starts[rows]]] & _WS_LAST_BYTE[data[ends[rows] - 1]]]
        if maybe.size:
            texts = chunk.take(maybe).to_pylist()
            blank[maybe] = [t is not None and t.isspace() for t in texts]
        if chunk.null_count:
            blank |= chunk.is_null().to_numpy(zero_copy_only=False)
        out[pos : pos + len(chunk)] = blank
        pos += len(chunk)
    return out


def _check_utf8(prompts: pd.Series, idx: np.ndarray, strs: list[str]) -> None:
    """PromptTypeError naming the rows whose text has lone surrogates (not encodable as UTF-8)."""
    # Pure-ASCII strings cannot hold surrogates, and str.isascii() is O(1) in CPython.
    ascii_ = np.fromiter(map(str.isascii, strs), dtype=bool, count=len(strs))
    if ascii_.all():
        return
    others = np.flatnonzero(~ascii_).tolist()
    try:
        orjson.dumps([strs[i] for i in others])  # validates UTF-8 far faster than str.encode
        return
    except orjson.JSONEncodeError:
        bad = [i for i in others if not _encodes(strs[i])]
    labels = prompts.index[idx[bad]]
    raise PromptTypeError(
        f"{_n_rows(len(labels))} hold text that cannot be encoded as UTF-8 (lone surrogate "
        f"characters, often from decoding bytes with errors='surrogateescape') "
        f"(index {_show_labels(labels)}). Clean them first, e.g. "
        "s.encode('utf-8', 'replace').decode('utf-8')."
    )


def _encodes(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# --------------------------------------------------------------------------------------------
# check_keys


def check_keys(df: pd.DataFrame, key: str | None = None) -> pd.Index:
    """Return the row keys: ``df.index``, or the values of column ``key``, checked to be unique.

    Raises:
        ColumnError: ``key`` is not a column of ``df``.
        InputError: some key values are missing.
        DuplicateKeyError: some key values occur more than once.
    """
    if key is None:
        keys = df.index
        what = "the DataFrame index"
        fix = "use a unique index (df.reset_index(drop=True)) or pass key= naming a unique column"
    else:
        keys = pd.Index(_column(df, key, "key column"))
        what = f"key column {key!r}"
        fix = "make the column unique, or pass key=None to use the index"
    if isinstance(keys, pd.MultiIndex):
        missing = np.zeros(len(keys), dtype=bool)
        for codes in keys.codes:
            missing |= np.asarray(codes) == -1
    else:
        missing = np.asarray(keys.isna(), dtype=bool)
    if missing.any():
        rows = np.flatnonzero(missing)
        where = (
            f"at positions {_show_labels(rows.tolist())}"
            if key is None
            else f"at index {_show_labels(df.index[rows])}"
        )
        raise InputError(
            f"{what} has {_n_rows(len(rows))} with a missing key {where}; every row needs a key: "
            f"fill them or {fix}."
        )
    if keys.dtype == object and not isinstance(keys, pd.MultiIndex):
        bad = next((i for i, v in enumerate(keys) if not isinstance(v, Hashable)), None)
        if bad is not None:
            raise InputError(
                f"{what} holds unhashable values ({type(keys[bad]).__name__} at position "
                f"{bad}); keys identify rows, so they must be hashable (str, int, tuple...): {fix}."
            )
    if not keys.is_unique:
        dup = keys[keys.duplicated(keep=False)]
        counts = Counter(dup.tolist())
        shown = [f"{k!r} ({c} times)" for k, c in list(counts.items())[:_MAX_SHOWN]]
        more = f" ... and {len(counts) - _MAX_SHOWN} more" if len(counts) > _MAX_SHOWN else ""
        raise DuplicateKeyError(
            f"{what} has {len(counts)} duplicated value{'s' if len(counts) != 1 else ''}: "
            f"{', '.join(shown)}{more}. Results are matched to rows by key, so keys must be "
            f"unique: {fix}.",
            rows=list(counts)[:_MAX_SHOWN],
        )
    return keys


# --------------------------------------------------------------------------------------------
# the request fields every row shares


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def _snake(name: str) -> str:
    return "".join("_" + ch.lower() if ch.isupper() else ch for ch in name)


def _generation_fields() -> set[str]:
    from google.genai import types

    return set(types.GenerateContentConfig.model_fields)


#: GenerateContentConfig fields that are not generation settings (set elsewhere or not ours).
_REQUEST_LEVEL = {"system_instruction", "safety_settings", "tools", "tool_config",
                  "cached_content", "labels", "http_options", "response_schema",
                  "response_json_schema", "response_mime_type"}


def request_config(
    system_instruction: str | None,
    generation_config: Mapping[str, Any] | None,
    safety_settings: Sequence[Mapping[str, Any]] | None,
    response_schema: Any,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(wire fields shared by every request, the same as a GenerateContentConfig dict).

    Raises :class:`ConfigError` for a blank system instruction, an unknown generation field
    (naming close matches) or anything that is not JSON-serialisable.
    """
    wire: dict[str, Any] = {}
    sdk: dict[str, Any] = {}
    if system_instruction is not None:
        if not isinstance(system_instruction, str) or not system_instruction.strip():
            raise ConfigError("system_instruction must be a non-empty string")
        wire["systemInstruction"] = {"parts": [{"text": system_instruction}]}
        sdk["system_instruction"] = system_instruction
    gen: dict[str, Any] = {}
    if generation_config:
        if not isinstance(generation_config, Mapping):
            raise ConfigError(
                f"generation_config must be a dict such as {{'temperature': 0.2}}, got "
                f"{type(generation_config).__name__}"
            )
        valid = _generation_fields() - _REQUEST_LEVEL
        for key, value in generation_config.items():
            snake = _snake(str(key))
            if snake not in valid:
                close = difflib.get_close_matches(snake, sorted(valid), n=3)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise ConfigError(f"unknown generation_config field {key!r}{hint}")
            gen[snake] = value
    if response_schema is not None:
        gen["response_mime_type"] = "application/json"
        gen["response_json_schema"] = schema_json(response_schema)
    if gen:
        wire["generationConfig"] = {_camel(k): v for k, v in gen.items()}
        sdk.update(gen)
    if safety_settings:
        items = [dict(s) for s in safety_settings]
        wire["safetySettings"] = items
        sdk["safety_settings"] = items
    try:
        orjson.dumps(wire)
    except TypeError as exc:
        raise ConfigError(f"the request configuration is not JSON-serialisable: {exc}") from None
    return wire, sdk


# --------------------------------------------------------------------------------------------
# the prompts to send


class ArrowText(Sequence[str]):
    """Text held in Arrow, read as a sequence of ``str``: a string array, or its rows at
    ``positions``.

    Python strings are made only for what is read, so the request writer can turn a million
    prompts into strings one chunk of rows at a time instead of all at once.
    """

    __slots__ = ("_positions", "_values")

    def __init__(
        self, values: pa.Array | pa.ChunkedArray, positions: np.ndarray | None = None
    ) -> None:
        arrow = _arrow_text(values)
        if arrow is None:
            raise InputError(
                f"ArrowText needs a pyarrow string array, got {type(values).__name__}"
                + (f" of {values.type}" if isinstance(values, (pa.Array, pa.ChunkedArray)) else "")
                + "."
            )
        if pa.types.is_string_view(arrow.type):  # Arrow cannot take() from views
            arrow = arrow.cast(pa.large_string())
        self._values = arrow
        self._positions = None if positions is None else np.asarray(positions, dtype=np.int64)

    def __len__(self) -> int:
        return len(self._values) if self._positions is None else len(self._positions)

    def __repr__(self) -> str:
        return f"<ArrowText: {_n_rows(len(self))} of {self._values.type}>"

    def arrow(self, start: int = 0, stop: int | None = None) -> pa.Array:
        """Rows ``start .. stop`` (clipped to the rows there are) as one Arrow array."""
        stop = len(self) if stop is None else stop
        if self._positions is None:
            part = self._values.slice(start, max(0, stop - start))
        else:
            part = self._values.take(self._positions[start:stop])
        return part.chunk(0) if part.num_chunks == 1 else part.combine_chunks()

    @overload
    def __getitem__(self, i: int) -> str: ...

    @overload
    def __getitem__(self, i: slice) -> list[str]: ...

    def __getitem__(self, i: int | slice) -> str | list[str]:
        n = len(self)
        if isinstance(i, slice):
            start, stop, step = i.indices(n)
            if step == 1:
                texts: list[str] = self.arrow(start, max(start, stop)).to_pylist()
                return texts
            return [self[j] for j in range(start, stop, step)]
        j = operator.index(i)
        if j < 0:
            j += n
        if not 0 <= j < n:
            raise IndexError(f"row {i} is out of range for {_n_rows(n)}")
        text: str = self.arrow(j, j + 1)[0].as_py()
        return text

    def __iter__(self) -> Iterator[str]:
        for start in range(0, len(self), _CHUNK_ROWS):
            yield from self.arrow(start, start + _CHUNK_ROWS).to_pylist()


def take_prompts(prompts: pd.Series, rows: np.ndarray) -> Sequence[str]:
    """The prompts at positions ``rows`` (such as ``np.flatnonzero(check_prompts(...))``), in
    that order, for :func:`write_request_files`.

    Text held in Arrow comes back as an :class:`ArrowText` view (nothing copied or converted
    yet); any other prompts as a list of str.
    """
    rows = np.asarray(rows, dtype=np.int64)
    n = len(prompts)
    every = len(rows) == n and bool((rows == np.arange(n)).all())
    arrow = _arrow_text(prompts)
    if arrow is not None:
        return ArrowText(arrow, None if every else rows)
    values = prompts.to_numpy(dtype=object)
    texts: list[str] = values.tolist() if every else values[rows].tolist()
    return texts


# --------------------------------------------------------------------------------------------
# request files

#: What write_request_files and request_line_sizes accept as prompts and as keys: str values
#: in a list, tuple, object array, Series, pyarrow string array or :class:`ArrowText`.
Texts: TypeAlias = Sequence[str] | np.ndarray | pd.Series | pa.Array | pa.ChunkedArray


class ShardPlanner:
    """The one sharding rule, for the estimate and the writer alike.

    Lines are taken in order; a new shard starts whenever the next line would make the
    current one exceed ``max_bytes`` bytes or ``max_requests`` lines. Fed block by block
    (:meth:`split`), so the writer plans as it serialises, with bounded memory.
    """

    def __init__(self, max_bytes: int, max_requests: int) -> None:
        for name, value in (("max_file_bytes", max_bytes), ("max_requests", max_requests)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise InputError(f"{name} must be a positive int, got {value!r}.")
        self.max_bytes = int(max_bytes)
        self.max_requests = int(max_requests)
        self.shard = -1  #: index of the current shard (-1 before the first line)
        self.n_lines = 0  #: lines in the current shard
        self.n_bytes = 0  #: bytes in the current shard
        self._full = True

    def split(self, sizes: np.ndarray) -> Iterator[tuple[int, int, int]]:
        """``(shard, a, b)``: lines ``a .. b`` of this block go to shard ``shard``.

        Raises :class:`RequestTooLargeError` (with ``size`` and ``limit``) when one line alone
        is larger than ``max_bytes``; its ``rows`` field is then the line's position in the
        block (callers map it to a row).
        """
        too_big = np.flatnonzero(sizes > self.max_bytes)
        if too_big.size:
            i = int(too_big[0])
            raise RequestTooLargeError(
                f"a request is {int(sizes[i]):,} bytes, larger than the file limit of "
                f"{self.max_bytes:,} bytes; shorten that prompt.",
                rows=[i], size=int(sizes[i]), limit=self.max_bytes,
            )
        pos, m = 0, len(sizes)
        while pos < m:
            if self._full:
                self.shard += 1
                self.n_lines = self.n_bytes = 0
                self._full = False
            cum = np.cumsum(sizes[pos : pos + self.max_requests - self.n_lines])
            take = int(np.searchsorted(cum, self.max_bytes - self.n_bytes, side="right"))
            if take:
                self.n_lines += take
                self.n_bytes += int(cum[take - 1])
                yield self.shard, pos, pos + take
                pos += take
            if pos < m:
                self._full = True


def plan_shards(sizes: np.ndarray, max_bytes: int, max_requests: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of each shard for lines of these ``sizes`` (see :class:`ShardPlanner`)."""
    bounds: list[list[int]] = []
    for shard, a, b in ShardPlanner(max_bytes, max_requests).split(np.asarray(sizes)):
        if shard == len(bounds):
            bounds.append([a, b])
        else:
            bounds[shard][1] = b
    return [(a, b) for a, b in bounds] or [(0, 0)]


@dataclass(frozen=True)
class RequestFile:
    """One JSONL request file written by :func:`write_request_files`."""

    path: Path
    #: Position in the sent-rows sequence of this file's first line.
    start: int
    #: Position after this file's last line (exclusive).
    stop: int
    n_bytes: int
    #: Hex SHA-256 digest of the file's bytes.
    sha256: str
    #: Bytes of the prompts themselves (JSON-escaped), without the JSON around them.
    prompt_bytes: int = dataclasses.field(default=0, compare=False)


class _LineMaker:
    """Serialises request lines: the constant JSON around the key and prompt is built once.

    Line i is ``HEAD + key_i + MID + prompt_i + TAIL``, where key_i and prompt_i are the JSON
    escaped contents of the two strings (without their quotes). The constant pieces come from
    one ``orjson.dumps`` of a template request, so every line is byte-for-byte what
    ``orjson.dumps`` of the whole request gives.
    """

    def __init__(self, shared: Mapping[str, Any]) -> None:
        if not isinstance(shared, Mapping):
            raise InputError(
                f"shared must be a mapping of request fields, got {type(shared).__name__}."
            )
        if "contents" in shared:
            raise InputError(
                "shared request fields must not contain 'contents'; the prompt of each row "
                "becomes the contents."
            )
        marker_key, marker_text = "\x01K\x01", "\x01P\x01"  # raw controls never appear in JSON
        try:
            template = orjson.dumps(
                {
                    "key": marker_key,
                    "request": {
                        "contents": [{"parts": [{"text": marker_text}], "role": "user"}],
                        **shared,
                    },
                }
            )
        except TypeError as exc:
            raise InputError(f"shared request fields cannot be serialised as JSON: {exc}") from exc
        k_json, p_json = orjson.dumps(marker_key), orjson.dumps(marker_text)
        head, rest = template.split(k_json, 1)
        mid, tail = rest.split(p_json, 1)
        self.head = head + b'"'
        self.mid = b'"' + mid + b'"'
        self.tail = b'"' + tail + b"\n"
        self.fixed = len(self.head) + len(self.mid) + len(self.tail)
        self._head, self._mid, self._tail, self._empty = (
            pa.scalar(x, type=pa.large_binary()) for x in (self.head, self.mid, self.tail, b"")
        )

    def chunks(self, prompts: Texts, keys: Texts) -> Iterator[_Chunk]:
        """Serialise consecutive chunks of rows."""
        n = len(prompts)
        if len(keys) != n:
            raise InputError(
                f"got {len(prompts)} prompts but {len(keys)} keys; pass one key per prompt."
            )
        prompts, keys = _sliceable(prompts), _sliceable(keys)
        for start in range(0, n, _CHUNK_ROWS):
            p = _chunk_values(prompts, start, start + _CHUNK_ROWS)
            k = _chunk_values(keys, start, start + _CHUNK_ROWS)
            _check_str(p, "prompt", start)
            _check_str(k, "key", start)
            try:
                p_esc, k_esc = _escape(p), _escape(k)
            except orjson.JSONEncodeError as exc:
                raise PromptTypeError(_encode_error(p, k, start, exc)) from exc
            yield _Chunk(self, start, k_esc, p_esc)

    def join(self, keys: pa.LargeBinaryArray, prompts: pa.LargeBinaryArray) -> pa.Array:
        """The lines of escaped keys and prompts, as one Arrow array."""
        return pc.binary_join_element_wise(
            self._head, keys, self._mid, prompts, self._tail, self._empty
        )


def _sliceable(values: Texts) -> Texts:
    """Text held in Arrow as an ArrowText (read a chunk at a time); anything else as is."""
    if isinstance(values, ArrowText):
        return values
    arrow = _arrow_text(values)
    return ArrowText(arrow) if arrow is not None else values


def _chunk_values(values: Texts, start: int, stop: int) -> list[Any] | pa.Array:
    """Rows ``start .. stop``: an Arrow string array if held in Arrow, else a list."""
    if isinstance(values, ArrowText):
        return values.arrow(start, stop)
    return _as_list(values, start, stop)


def _escape(values: list[str] | pa.Array) -> pa.LargeBinaryArray:
    """The JSON-escaped contents (without quotes) of each string, as one Arrow array.

    Arrow strings with nothing to escape are used as they are: orjson writes valid UTF-8
    text (as all Arrow strings are) unchanged. Others become Python strings for
    :func:`_escape_all`, one chunk at a time.
    """
    if isinstance(values, list):
        return _escape_all(values)
    raw = values.cast(pa.large_binary())
    offsets, data = _buffers(raw)
    text = data[offsets[0] : offsets[-1]]
    if _needs_escape(text[:_ESCAPE_PROBE]) or _needs_escape(text):
        escaped = _escape_buffers(raw, offsets, text)
        return escaped if escaped is not None else _escape_all(values.to_pylist())
    return raw


#: The byte after the backslash of JSON's two-character escapes, as orjson writes them, by
#: the byte escaped (0: none; orjson writes the other controls as ``\\u00XX``).
_SHORT_ESCAPES = np.zeros(256, dtype=np.uint8)
for _byte, _letter in {0x22: '"', 0x5C: "\\", 0x08: "b", 0x09: "t", 0x0A: "n", 0x0C: "f",
                       0x0D: "r"}.items():
    _SHORT_ESCAPES[_byte] = ord(_letter)


def _escape_buffers(raw: pa.LargeBinaryArray, offsets: np.ndarray, text: np.ndarray
                    ) -> pa.LargeBinaryArray | None:
    """:func:`_escape_all` of Arrow text straight from its buffers (no Python ``str``):
    a backslash put before each byte to escape, which becomes its escape letter. None when
    a byte needs a ``\\u00XX`` escape, or a row is null: those go through orjson."""
    where = np.flatnonzero((text < 0x20) | (text == 0x22) | (text == 0x5C))
    letters = _SHORT_ESCAPES[text[where]]
    if raw.null_count or not letters.all():
        return None
    n, k = len(text), len(where)
    slash = where + np.arange(k)  # where each backslash lands in the escaped bytes
    out = np.empty(n + k, dtype=np.uint8)
    kept = np.ones(n + k, dtype=bool)
    kept[slash] = False
    out[kept] = text
    out[slash] = 0x5C
    out[slash + 1] = letters
    rel = offsets - offsets[0]
    bounds = (rel + np.searchsorted(where, rel)).astype(np.int64)  # + escapes before each
    return pa.Array.from_buffers(pa.large_binary(), len(raw),
                                 [None, pa.py_buffer(bounds), pa.py_buffer(out)])


def _needs_escape(text: np.ndarray) -> bool:
    """True if UTF-8 ``text`` has a byte JSON escapes: ``"``, ``\\`` or a control below 0x20."""
    return bool(((text < 0x20) | (text == 0x22) | (text == 0x5C)).any())


def _escape_all(values: list[str]) -> pa.LargeBinaryArray:
    """The JSON-escaped contents (without quotes) of each string, as one Arrow array.

    Fast path: one ``orjson.dumps`` of the whole list, split at the ``","`` separators by
    Arrow (no Python object per string). Inside an escaped string every ``"`` follows a
    backslash, so a ``","`` inside a string always leaves a piece that ends in an odd run of
    backslashes, which an escaped string never does; if any piece does (text ending in
    ``",``), the chunk is escaped one string at a time instead.
    """
    if values:
        pieces = _split_json_list(orjson.dumps(values), len(values))
        if pieces is not None:
            return pieces
    dumps = orjson.dumps
    return pa.array([dumps(v)[1:-1] for v in values], type=pa.large_binary())


def _split_json_list(out: bytes, n: int) -> pa.LargeBinaryArray | None:
    """The ``n`` strings of orjson's ``["...","..."]``, still escaped; None if a split is
    ambiguous (see :func:`_escape_all`)."""
    # One binary value viewing out[2:-2] (inside the outer '["' and '"]'), without a copy.
    bounds = np.array([2, len(out) - 2], dtype=np.int64)
    body = pa.Array.from_buffers(
        pa.large_binary(), 1, [None, pa.py_buffer(bounds), pa.py_buffer(out)]
    )
    pieces = pc.split_pattern(body, pattern=b'","')[0].values
    if len(pieces) == n and not _ends_in_escape(pieces):
        return pieces
    return None


def _ends_in_escape(pieces: pa.LargeBinaryArray) -> bool:
    """True if a piece ends in an odd number of backslashes (a split inside a string)."""
    offsets, data = _buffers(pieces)
    ends = offsets[1:]
    nonempty = ends > offsets[:-1]
    last = np.zeros(len(ends), dtype=np.uint8)
    last[nonempty] = data[ends[nonempty] - 1]
    for i in np.flatnonzero(last == 0x5C).tolist():
        run, j, lo = 0, int(ends[i]) - 1, int(offsets[i])
        while j >= lo and data[j] == 0x5C:
            run += 1
            j -= 1
        if run % 2:
            return True
    return False


def _buffers(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, data) of a (large) binary or string array as numpy views; offsets index
    ``data``."""
    _, off_buf, data_buf = arr.buffers()[:3]
    large = pa.types.is_large_binary(arr.type) or pa.types.is_large_string(arr.type)
    if off_buf is None:  # a zero-length array may come without buffers
        offsets = np.zeros(len(arr) + 1, dtype=np.int64)
    else:
        offsets = np.frombuffer(off_buf, dtype=np.int64 if large else np.int32)
        offsets = offsets[arr.offset : arr.offset + len(arr) + 1]
    data = (
        np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    )
    return offsets, data


class _Chunk:
    """Serialised rows ``start .. start + len(sizes)``: their escaped keys and prompts.

    The line sizes are known at once; the lines themselves are joined into one Arrow array
    when first asked for, which write_request_files does on its I/O thread (Arrow works
    without the GIL there while the next chunk is escaped).
    """

    def __init__(
        self,
        maker: _LineMaker,
        start: int,
        keys: pa.LargeBinaryArray,
        prompts: pa.LargeBinaryArray,
    ) -> None:
        self.start = start
        self.prompt_sizes = _lengths(prompts)
        self.sizes = maker.fixed + _lengths(keys) + self.prompt_sizes
        self._maker: _LineMaker | None = maker
        self._parts: tuple[pa.LargeBinaryArray, pa.LargeBinaryArray] | None = (keys, prompts)
        self._joined: tuple[pa.Array, np.ndarray, np.ndarray] | None = None

    def lines(self, a: int, b: int) -> memoryview:
        """The bytes of lines ``a .. b`` of this chunk (positions within the chunk); joined on
        first use, by the one I/O thread that writes the files."""
        if self._joined is None:
            assert self._maker is not None and self._parts is not None
            lines = self._maker.join(*self._parts)
            self._joined = (lines, *_buffers(lines))  # the array keeps the buffers alive
            self._maker = self._parts = None
        _, offsets, data = self._joined
        return data[offsets[a] : offsets[b]].data


def _lengths(values: pa.Array) -> np.ndarray:
    """The byte length of each value of a binary array, as int64."""
    offsets, _ = _buffers(values)
    return np.diff(offsets).astype(np.int64, copy=False)


def _as_list(values: Texts, start: int, stop: int) -> list[Any]:
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return values.slice(start, max(0, stop - start)).to_pylist()
    if isinstance(values, ArrowText):
        return values[start:stop]
    if isinstance(values, (pd.Series, pd.Index)):
        return (
            values.iloc[start:stop].tolist()
            if isinstance(values, pd.Series)
            else values[start:stop].tolist()
        )
    if isinstance(values, np.ndarray):
        return values[start:stop].tolist()
    return list(values[start:stop])


def _check_str(values: list[Any] | pa.Array, what: str, start: int) -> None:
    if isinstance(values, pa.Array):  # strings, or missing
        if values.null_count:
            values = values.to_pylist()
        else:
            return
    types = set(map(type, values))
    if types <= {str}:
        return
    bad = [i for i, v in enumerate(values) if not isinstance(v, str)]
    if not bad:
        return
    raise PromptTypeError(
        f"every {what} must be a str, but {what} #{start + bad[0]} is "
        f"{type(values[bad[0]]).__name__}; check the prompts with check_prompts() first."
    )


def _encode_error(
    p: list[str] | pa.Array, k: list[str] | pa.Array, start: int, exc: Exception
) -> str:
    for what, values in (("prompt", p), ("key", k)):
        if not isinstance(values, list):  # Arrow strings are always valid UTF-8
            continue
        for i, v in enumerate(values):
            if not _encodes(v):
                return (
                    f"{what} #{start + i} cannot be encoded as UTF-8 (lone surrogates); "
                    "clean it first, e.g. s.encode('utf-8', 'replace').decode('utf-8')."
                )
    return f"a request cannot be serialised: {exc}"


def request_line_sizes(prompts: Texts, keys: Texts, shared: Mapping[str, Any]) -> np.ndarray:
    """Exact byte length (including the newline) of each request line; writes nothing."""
    return measure_requests(prompts, keys, shared)[0]


def measure_requests(
    prompts: Texts, keys: Texts, shared: Mapping[str, Any]
) -> tuple[np.ndarray, int]:
    """(the exact byte length of each request line, the bytes of the prompts among them)."""
    maker = _LineMaker(shared)
    out = np.empty(len(prompts), dtype=np.int64)
    prompt_bytes = 0
    for chunk in maker.chunks(prompts, keys):
        out[chunk.start : chunk.start + len(chunk.sizes)] = chunk.sizes
        prompt_bytes += int(chunk.prompt_sizes.sum())
    return out, prompt_bytes


def write_request_files(
    directory: Path,
    prompts: Texts,
    keys: Texts,
    shared: Mapping[str, Any],
    *,
    max_file_bytes: int,
    max_requests: int,
    prefix: str = "requests",
) -> list[RequestFile]:
    """Write the requests as JSONL files ``{prefix}-0000.jsonl``, ... in ``directory`` (mode 0600).

    Line ``i`` is ``{"key": keys[i], "request": {"contents": [<user turn with prompts[i]>],
    **shared}}`` as compact JSON. A new file starts whenever the next line would make the
    current one exceed ``max_file_bytes`` bytes or ``max_requests`` lines. On any error the
    files already written are removed. Prompts and keys are str values in any :data:`Texts`
    container; text held in Arrow is read one chunk of rows at a time.

    Raises:
        RequestTooLargeError: one line alone is larger than ``max_file_bytes``; its ``rows``
            field holds the line's position in ``prompts`` and ``size``/``limit`` the bytes.
        InputError: bad limits, shared fields, or prompts/keys of different lengths.
        PromptTypeError: a prompt or key is not a str or not encodable as UTF-8.
    """
    writer = RequestWriter(directory, shared, max_file_bytes=max_file_bytes,
                           max_requests=max_requests, prefix=prefix)
    try:
        try:
            writer.add(prompts, keys)
        except RequestTooLargeError as exc:
            i = (exc.rows or [0])[0]
            raise RequestTooLargeError(
                f"the request for key {_as_list(keys, i, i + 1)[0]!r} is {exc.size:,} "
                f"bytes, larger than the file limit of {exc.limit:,} bytes; shorten that "
                "prompt.", rows=[i], size=exc.size, limit=exc.limit,
            ) from None
        return writer.close()
    except BaseException:
        writer.abort()
        raise


class RequestWriter:
    """Request files written as rows arrive: :func:`write_request_files` fed block by block.

    Each :meth:`add` serialises its prompts and keys, appends the lines to the current file
    and starts a new one by the :class:`ShardPlanner` rule, so input of any size is written
    with memory bounded by a few chunks. :meth:`close` returns the files; :meth:`abort`
    removes them. ``n_lines`` counts the lines so far; ``starts`` holds each file's first
    line.

    Raises (from :meth:`add`) :class:`RequestTooLargeError` whose ``rows`` holds the line's
    position among all lines added, and what :func:`write_request_files` raises.
    """

    def __init__(self, directory: Path, shared: Mapping[str, Any], *, max_file_bytes: int,
                 max_requests: int, prefix: str = "requests") -> None:
        self._planner = ShardPlanner(max_file_bytes, max_requests)
        self._maker = _LineMaker(shared)
        self._directory = Path(directory)
        self._prefix = prefix
        self._files: list[_FileWriter] = []
        self._current: _FileWriter | None = None
        self._io = _BackgroundIO()
        self.n_lines = 0

    @property
    def starts(self) -> list[int]:
        return [f.start for f in self._files]

    def add(self, prompts: Texts, keys: Texts) -> None:
        """Append one line per prompt (``keys`` alike: str values, one per prompt)."""
        base = self.n_lines
        for chunk in self._maker.chunks(prompts, keys):
            try:
                pieces = list(self._planner.split(chunk.sizes))
            except RequestTooLargeError as exc:
                i = base + chunk.start + (exc.rows or [0])[0]
                raise RequestTooLargeError(str(exc), rows=[i], size=exc.size,
                                           limit=exc.limit) from None
            for shard, a, b in pieces:
                if shard == len(self._files):
                    if self._current is not None:
                        self._io.submit(self._current.close)
                    self._current = _FileWriter(
                        self._directory / f"{self._prefix}-{shard:04d}.jsonl",
                        base + chunk.start + a)
                    self._files.append(self._current)
                current = self._current
                assert current is not None
                current.n_lines += b - a
                current.n_bytes += int(chunk.sizes[a:b].sum())
                current.prompt_bytes += int(chunk.prompt_sizes[a:b].sum())
                self._io.submit(current.write, chunk, a, b)
            self.n_lines = base + chunk.start + len(chunk.sizes)

    def close(self) -> list[RequestFile]:
        """Finish the last file; every file written, in order."""
        if self._current is not None:
            self._io.submit(self._current.close)
            self._current = None
        self._io.finish()
        return [f.result() for f in self._files]

    def abort(self) -> None:
        """Stop writing and remove every file written."""
        self._io.abandon()
        for f in self._files:
            f.abort()


class _BackgroundIO:
    """Runs line joins, file writes and hashing on one worker thread, in order, a few jobs
    ahead at most.

    Arrow, ``hashlib`` and file writes release the GIL, so they overlap with serialising the
    next chunk on the calling thread. At most ``depth`` jobs wait, which bounds the memory held.
    """

    def __init__(self, depth: int = 3) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gembatch-write")
        self._pending: deque[Future[None]] = deque()
        self._depth = depth

    def submit(self, func: Callable[..., None], *args: Any) -> None:
        while len(self._pending) >= self._depth:
            self._pending.popleft().result()  # re-raises the worker's error here
        self._pending.append(self._pool.submit(func, *args))

    def finish(self) -> None:
        """Wait for every job; raise the first error."""
        try:
            while self._pending:
                self._pending.popleft().result()
        finally:
            self._pool.shutdown(wait=True)

    def abandon(self) -> None:
        """Wait for the running jobs to stop, ignoring their errors (we are failing anyway)."""
        for job in self._pending:
            job.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._pending.clear()


class _FileWriter:
    """One request file: opened 0600 at once; written and hashed by the I/O thread.

    ``n_lines`` and ``n_bytes`` are planned by the calling thread as it hands out lines.
    """

    def __init__(self, path: Path, start: int) -> None:
        self.path = path
        self.start = start
        self.n_bytes = 0
        self.n_lines = 0
        self.prompt_bytes = 0
        self._hash = hashlib.sha256()
        self._digest: str | None = None
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)
        except BaseException:
            os.close(fd)
            raise
        self._f = os.fdopen(fd, "wb", buffering=0)

    def write(self, chunk: _Chunk, a: int, b: int) -> None:
        """Append lines ``a .. b`` of ``chunk``."""
        data = chunk.lines(a, b)
        self._hash.update(data)
        view = data
        while view:  # a raw write may be partial
            done = self._f.write(view)
            if not done:
                raise OSError(f"could not write to {self.path}")
            view = view[done:]

    def close(self) -> None:
        self._f.close()
        self._digest = self._hash.hexdigest()

    def result(self) -> RequestFile:
        assert self._digest is not None, "result() before close()"
        return RequestFile(
            path=self.path,
            start=self.start,
            stop=self.start + self.n_lines,
            n_bytes=self.n_bytes,
            sha256=self._digest,
            prompt_bytes=self.prompt_bytes,
        )

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self._f.close()
        with contextlib.suppress(OSError):
            self.path.unlink()


def read_request_prompts(paths: Sequence[Path], keys: Collection[str]) -> dict[str, str]:
    """Read back the prompt text of the wanted ``keys`` from request files written here.

    Keys not found in any file are simply absent from the result.
    """
    wanted = set(keys)
    out: dict[str, str] = {}
    if not wanted:
        return out
    quote = ord('"')
    for path in paths:
        with open(path, "rb") as f:
            for line in f:
                # Fast path: {"key":"<plain key>", ... without escapes in the key.
                if line.startswith(b'{"key":"'):
                    end = line.find(b'"', 8)
                    raw = line[8:end]
                    if b"\\" not in raw and end > 0 and line[end] == quote:
                        key = raw.decode("utf-8")
                        if key not in wanted:
                            continue
                if not line.strip():
                    continue
                obj = orjson.loads(line)
                key = obj.get("key")
                if key in wanted:
                    out[str(key)] = obj["request"]["contents"][0]["parts"][0]["text"]
    return out
