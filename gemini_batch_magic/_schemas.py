"""Structured output: JSON schemas from pydantic models, and answers parsed against them.

A run made with ``response_schema=`` keeps the schema (and the model class's import path) in
the registry; :func:`add_parsed` turns each answer into a validated object (or a dict) in a
``parsed`` column and, for a flat schema, one column per field.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import orjson
import pandas as pd

from ._results import text_series
from .exceptions import ConfigError

__all__ = ["add_parsed", "check_required", "class_path", "import_model_class", "schema_json"]


def schema_json(schema: Any) -> dict[str, Any]:
    """A JSON schema dict from a pydantic model class or a dict."""
    if isinstance(schema, dict):
        return schema
    if isinstance(schema, type) and hasattr(schema, "model_json_schema"):
        return dict(schema.model_json_schema())
    raise ConfigError(
        f"response_schema must be a pydantic model class or a JSON schema dict, got "
        f"{type(schema).__name__}"
    )


def class_path(schema: Any) -> str | None:
    """``module.QualName`` of a model class (kept so another kernel can re-import it)."""
    if isinstance(schema, type):
        return f"{schema.__module__}.{schema.__qualname__}"
    return None


def add_parsed(frame: pd.DataFrame, schema: dict[str, Any], model_cls: Any) -> pd.DataFrame:
    """Add ``parsed`` (validated object or dict) and, for flat schemas, a column per field."""
    parsed: list[Any] = []
    errors = frame["error"].to_numpy(dtype=object, copy=True)
    for i, (text, err) in enumerate(zip(frame["response"], errors, strict=False)):
        if not pd.isna(err) or pd.isna(text):
            parsed.append(None)
            continue
        try:
            if model_cls is not None:
                parsed.append(model_cls.model_validate_json(text))
            else:
                value = orjson.loads(text)
                check_required(value, schema)
                parsed.append(value)
        except Exception as exc:
            parsed.append(None)
            errors[i] = f"the answer does not match the response schema: {str(exc).splitlines()[0]}"
    frame = frame.copy()
    frame["error"] = text_series(errors, index=frame.index)
    frame["parsed"] = pd.Series(parsed, index=frame.index, dtype=object)
    props = schema.get("properties") if schema.get("type") in ("object", "OBJECT", None) else None
    scalar = {"string", "integer", "number", "boolean"}
    if isinstance(props, dict) and props and all(
        isinstance(p, dict) and str(p.get("type", "")).lower() in scalar for p in props.values()
    ):
        for name in props:
            if name in frame.columns:
                continue
            frame[name] = [
                (getattr(p, name, None) if model_cls is not None else p.get(name))
                if p is not None else None
                for p in parsed
            ]
    return frame


def check_required(value: Any, schema: dict[str, Any]) -> None:
    """Raise ValueError unless ``value`` is an object holding the schema's required fields."""
    if str(schema.get("type", "")).lower() == "object" or "properties" in schema:
        if not isinstance(value, dict):
            raise ValueError(f"expected a JSON object, got {type(value).__name__}")
        missing = [k for k in schema.get("required", []) if k not in value]
        if missing:
            raise ValueError(f"missing required field(s) {', '.join(missing)}")


def import_model_class(path: str) -> Any:
    """The pydantic model class at ``module.QualName``, or None if it cannot be imported."""
    module_name, _, qual = path.rpartition(".")
    module = sys.modules.get(module_name)
    if module is None:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            return None
    obj: Any = module
    for part in qual.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj if hasattr(obj, "model_validate_json") else None
