"""Polars and Arrow at the engine's two edges: inputs in, results out.

The engine works on pandas. Polars and Arrow frames are turned into the pandas frame it
takes at its entry (:func:`take`), and results are turned back into the kind asked for at
its exit (:func:`convert`), so every surface (the plain API, ``df.gembatch``,
``pl.DataFrame.gembatch``, ``%%gembatch --df`` on a polars variable) gets both for free.

**In** (:func:`take`): a polars ``DataFrame``, a polars ``LazyFrame`` (collected with the
streaming engine first), a pyarrow ``Table`` or ``RecordBatch``, or a pandas ``DataFrame``
(unchanged). Polars and Arrow columns become ``pd.ArrowDtype`` columns over the same Arrow
buffers: text is not copied (polars' ``string_view`` columns are cast once to
``large_string``, which is the one copy). Polars has no index, so rows are keyed by their
position (the pandas frame has a RangeIndex); with ``key=`` the key column's values are the
index (the column stays too), so they are what the registry keeps and what results carry.

**Out** (:func:`convert`): a result frame (pandas, one row per input row, in input order) as
``"pandas"`` (unchanged), ``"arrow"`` (a ``pyarrow.Table``) or ``"polars"``:

* with ``key``, the index becomes the first column, named ``key``; without one, a default
  RangeIndex is left out (rows are in input order: ``pl.concat([df, out],
  how="horizontal")`` lines them up) and any other index becomes the first column(s), as
  ``reset_index()`` would. A result column named like the key gets the suffix ``_result``.
* text (``response``, ``error``, ``finish_reason``, the fields of a flat schema) is Arrow
  ``large_string`` (polars ``String``), missing as null; token counts ``int64`` with nulls;
  ``embedding`` a ``fixed_size_list<float32>[dim]`` (polars ``Array(Float32, dim)``);
  ``parsed`` a struct (pydantic objects through ``model_dump(mode="json")``, dicts as they
  are), or, when no one struct type fits every answer, the answer's JSON text.

A leaf of the engine: it imports no other module of the package but :mod:`._results` (for
the text dtype) and the exceptions. polars is imported only when a polars result is asked
for (a polars input means polars is already imported).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import orjson
import pandas as pd
import pyarrow as pa

from ._results import arrow_text
from .exceptions import ConfigError

__all__ = ["FORMATS", "POLARS_EXTRA", "Input", "again", "check_format", "column_names",
           "convert", "index_key", "input_kind", "join", "polars", "take"]

#: What ``result(format=...)`` accepts.
FORMATS = ("pandas", "polars", "arrow")
#: How to install polars, for the error that says it is missing.
POLARS_EXTRA = "pip install 'gemini_batch_magic[polars]'"


def polars() -> Any:
    """The polars module, or a :class:`ConfigError` saying how to install it."""
    try:
        import polars as pl
    except ImportError as exc:
        raise ConfigError(f"polars results need polars, which is not installed: {POLARS_EXTRA}"
                          ) from exc
    return pl


def _polars_types() -> tuple[Any, ...]:
    """polars' DataFrame and LazyFrame, if polars is imported (an object can only be a
    polars frame if it is: nothing is imported to ask)."""
    pl = sys.modules.get("polars")
    if pl is None or not hasattr(pl, "DataFrame"):
        return ()
    return (pl.DataFrame, pl.LazyFrame)


def input_kind(obj: Any) -> str | None:
    """``"pandas"``, ``"polars"`` or ``"arrow"`` for the frames :func:`take` reads; None for
    anything else."""
    if isinstance(obj, pd.DataFrame):
        return "pandas"
    if isinstance(obj, (pa.Table, pa.RecordBatch)):
        return "arrow"
    types = _polars_types()
    if types and isinstance(obj, types):
        return "polars"
    return None


def column_names(obj: Any) -> list[str]:
    """The column names of a frame :func:`take` reads (a LazyFrame's from its schema)."""
    if isinstance(obj, (pa.Table, pa.RecordBatch)):
        return list(obj.schema.names)
    types = _polars_types()
    if types and isinstance(obj, types[1]):
        return list(obj.collect_schema().names())
    return [str(c) for c in obj.columns]


@dataclass(frozen=True)
class Input:
    """An input as the engine takes it, and as the user gave it."""

    frame: Any  #: the pandas DataFrame the engine reads (anything else is passed on as is)
    kind: str  #: ``pandas``, ``polars`` or ``arrow``
    #: the user's frame: a polars DataFrame (a LazyFrame collected), an Arrow Table, or the
    #: pandas frame itself; what ``result(join=True)`` puts first in polars and Arrow results
    native: Any

    def released(self) -> Input:
        """What a run keeps: the user's frame, without the pandas frame made from a polars
        or Arrow one (a polars input's text was copied into it; :func:`again` makes it anew
        for ``join=``)."""
        return self if self.kind == "pandas" else Input(frame=None, kind=self.kind,
                                                        native=self.native)


def again(given: Input, key: str | None) -> Input:
    """``given`` with its pandas frame, made anew (with ``key``) if it was released."""
    return given if given.frame is not None else take(given.native, key)


def take(obj: Any, key: str | None = None) -> Input:
    """``obj`` as the pandas frame the engine reads (see the module docstring).

    Anything that is not a frame is passed on unchanged (kind ``pandas``): the engine's own
    checks then say what is wrong with it.
    """
    kind = input_kind(obj)
    if kind in (None, "pandas"):
        return Input(frame=obj, kind="pandas", native=obj)
    if kind == "polars":
        if isinstance(obj, _polars_types()[1]):  # a LazyFrame: collected, streaming
            obj = obj.collect(engine="streaming")
        table = obj.to_arrow()
    else:
        table = obj if isinstance(obj, pa.Table) else pa.Table.from_batches([obj])
    table = _without_views(table)
    frame = table.to_pandas(types_mapper=pd.ArrowDtype)
    _key_as_index(frame, key)
    return Input(frame=frame, kind=kind, native=obj if kind == "polars" else table)


def _without_views(table: pa.Table) -> pa.Table:
    """``string_view`` / ``binary_view`` columns (polars' own layout) cast to ``large_*``: the
    engine's Arrow paths read offsets, not views."""
    for i, field in enumerate(table.schema):
        if pa.types.is_string_view(field.type):
            table = table.set_column(i, field.name, table.column(i).cast(pa.large_string()))
        elif pa.types.is_binary_view(field.type):
            table = table.set_column(i, field.name, table.column(i).cast(pa.large_binary()))
    return table


def _key_as_index(frame: pd.DataFrame, key: str | None) -> None:
    """Make the key column's values the index, when they can be (a key that is missing,
    has nulls or repeats is left to the engine's key check, whose errors then name row
    positions)."""
    if not isinstance(key, str) or key not in frame.columns:
        return
    col = frame[key]
    if isinstance(col, pd.Series) and not col.isna().any() and col.is_unique:
        frame.index = pd.Index(col, name=key)


def index_key(config: dict[str, Any]) -> str | None:
    """The key column a run's result index holds, from its registry config: the ``key`` of a
    polars or Arrow input (:func:`take` made it the index); None for pandas inputs, whose
    index is the DataFrame's own."""
    if config.get("input_kind") in ("polars", "arrow"):
        return config.get("key")
    return None


def check_format(fmt: Any) -> str | None:
    """``fmt`` if it is None or one of :data:`FORMATS`, else a :class:`ConfigError`."""
    if fmt is None or fmt in FORMATS:
        return fmt  # type: ignore[no-any-return]
    raise ConfigError(f"format={fmt!r} is not a result format: use one of "
                      f"{', '.join(map(repr, FORMATS))} (or None: the kind of the input)")


# --------------------------------------------------------------------------------- out
def convert(frame: pd.DataFrame, fmt: str, key: str | None = None) -> Any:
    """The result ``frame`` as ``fmt`` (``"pandas"``, ``"polars"`` or ``"arrow"``); ``key``:
    the name of the key column the index holds (see the module docstring)."""
    fmt = check_format(fmt) or "pandas"
    if fmt == "pandas":
        return frame
    table = _arrow_table(frame, key)
    return table if fmt == "arrow" else polars().from_arrow(table, rechunk=False)


def join(frame: pd.DataFrame, source: Input, fmt: str) -> Any:
    """The input's columns, then the result's (``result(join=True)``) as ``fmt``, for
    ``"polars"`` and ``"arrow"``; ``source`` is the input (checked to match by the caller).
    A result column named like an input column gets the suffix ``_result``."""
    if source.kind == "polars" and fmt == "polars":
        pl = polars()
        result = pl.from_arrow(_arrow_table(frame, None, index=False, avoid=source.native.columns),
                               rechunk=False)
        return pl.concat([source.native, result], how="horizontal")
    if source.kind == "polars":
        left = _without_views(source.native.to_arrow())
    elif source.kind == "arrow":
        left = source.native
    else:
        left = _arrow_table(source.frame, None)
    right = _arrow_table(frame, None, index=False, avoid=left.column_names)
    table = pa.Table.from_arrays([*left.columns, *right.columns],
                                 names=[*left.column_names, *right.column_names])
    return table if fmt == "arrow" else polars().from_arrow(table, rechunk=False)


def _arrow_table(frame: pd.DataFrame, key: str | None, *, index: bool = True,
                 avoid: Any = ()) -> pa.Table:
    names: list[str] = []
    arrays: list[Any] = []
    if index:
        for name, values in _index_columns(frame.index, key):
            names.append(name)
            arrays.append(_arrow_column(values))
    taken = set(names) | {str(a) for a in avoid}
    for name in frame.columns:
        col = frame[name]
        names.append(f"{name}_result" if str(name) in taken else str(name))
        arrays.append(_parsed_column(col) if name == "parsed" and col.dtype == object
                      else _arrow_column(col))
    return pa.Table.from_arrays(arrays, names=names)


def _index_columns(index: pd.Index, key: str | None) -> list[tuple[str, Any]]:
    if key is not None:
        return [(key, index)]
    if isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1:
        return []  # row positions: the rows are in input order
    if isinstance(index, pd.MultiIndex):
        return [(str(n) if n is not None else f"level_{i}", index.get_level_values(i))
                for i, n in enumerate(index.names)]
    return [(str(index.name) if index.name is not None else "index", index)]


def _arrow_column(values: pd.Series | pd.Index) -> pa.Array | pa.ChunkedArray:
    """One column as Arrow: Arrow-backed columns as they are (no copy), text as
    ``large_string``, anything Arrow cannot type as its ``str()`` text."""
    array = values.array
    if values.dtype == object and pd.api.types.infer_dtype(values, skipna=True) in (
            "string", "empty"):  # pandas 2's text (None where missing): large_string even
        return arrow_text(values)  # when every value is missing (no Arrow null type)
    try:
        if hasattr(array, "__arrow_array__"):
            arr = array.__arrow_array__()
        else:
            arr = pa.array(values, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        objects = values.to_numpy(dtype=object)
        arr = arrow_text([None if _missing(v) else str(v) for v in objects])
    if pa.types.is_string(arr.type) or pa.types.is_string_view(arr.type):
        arr = arr.cast(pa.large_string())
    return arr


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value) or value is pd.NA


def _plain(value: Any) -> Any:
    if _missing(value):
        return None
    dump = getattr(value, "model_dump", None)  # a pydantic object
    return dump(mode="json") if callable(dump) else value


def _parsed_column(col: pd.Series) -> pa.Array:
    """``parsed`` (validated objects or dicts) as one Arrow struct column; the JSON text
    when no single struct type fits every answer (a field that is a number in one answer
    and text in another)."""
    values = [_plain(v) for v in col.tolist()]
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError):
        text = [None if v is None else orjson.dumps(v).decode() for v in values]
        return pa.array(text, type=pa.large_string())

