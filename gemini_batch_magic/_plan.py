"""What a run would send: a DataFrame checked and turned into a plan, its estimate, its files.

The first step of every run, and all of :func:`~gemini_batch_magic.estimate`. Nothing here
sends anything or needs a run:

* :func:`prepare` checks the input (prompts, keys, model, request options) and returns a
  :class:`Plan`: the prompts of the rows to send, their positions in the input, and the
  request fields every row shares. Bad input raises here, before anything is written.
* :func:`estimate` measures the exact request lines of a plan (writing nothing) and prices
  them; :func:`write` writes them as request files and returns the same figures, both from
  the one sharding rule (:func:`gemini_batch_magic._requests.plan_shards`). The transport
  (inline or file) is decided before writing: inline means at most 100 requests.
* :func:`check_cost` refuses a plan estimated above ``max_cost``; :func:`content_hash`
  identifies what is sent, for dedupe.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa

from . import _media, _pricing, _requests
from ._config import settings, validate_model
from ._registry import dump_index
from ._requests import RequestFile
from ._schemas import class_path, schema_json
from .exceptions import ConfigError, ConfirmationRequired, CostLimitError, RequestTooLargeError

__all__ = [
    "INLINE_MAX_REQUESTS",
    "Estimate",
    "Plan",
    "WrittenPlan",
    "check_confirmed",
    "check_cost",
    "content_hash",
    "estimate",
    "key_text",
    "prepare",
    "rows_hash",
    "wire_keys",
    "write",
]

#: Inline batches cost the SDK about 1 ms of CPU per request (pydantic conversion on create
#: and on every get of the finished batch), a file batch one upload and one download: above
#: this many requests a file is faster, even when the bytes would fit inline.
INLINE_MAX_REQUESTS = 100


@dataclass
class Plan:
    """Validated input, ready to write: nothing has been sent or stored yet."""

    model: str
    prompts: Sequence[str]  #: the prompts of the rows to send (an ArrowText for Arrow text)
    positions: np.ndarray  #: int64 positions (in the root input) of the rows to send
    index: pd.Index  #: the root input's index (original row labels)
    n_rows: int  #: rows of the root input, skipped ones included
    shared: dict[str, Any]  #: request fields identical for every row, wire (camelCase) form
    config: dict[str, Any]  #: what the registry keeps about how the run was made
    schema: Any  #: pydantic model class, JSON schema dict, or None
    display_name: str
    skipped: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    #: request lines other than plain text prompts: media parts (_media.MediaLines), a
    #: retry's requests as sent (_media.RawLines) or embeddings (_embed.EmbedLines)
    lines: Any = None


def prepare(
    df: Any,
    prompt: str | None,
    *,
    template: str | None,
    model: str | None,
    key: str | None,
    system_instruction: str | None,
    generation_config: Mapping[str, Any] | None,
    safety_settings: Sequence[Mapping[str, Any]] | None,
    response_schema: Any,
    on_empty: str,
    display_name: str | None,
    keep_inputs: bool = False,
    media: str | Sequence[str] | None = None,
    mime_type: str | Mapping[str, str] | None = None,
) -> Plan:
    """Check ``df`` and the options; the :class:`Plan` of what would be sent."""
    model = validate_model(model or settings.model)
    media_cols = _media.media_columns(media)
    texts = _requests.prompt_texts(df, prompt=prompt, template=template)
    mask = _requests.check_prompts(texts, on_empty=on_empty)
    keys = _requests.check_keys(df, key)
    shared, _ = _requests.request_config(
        system_instruction, generation_config, safety_settings, response_schema
    )
    positions = np.flatnonzero(mask).astype(np.int64)
    if display_name is not None and (not isinstance(display_name, str) or not display_name):
        raise ConfigError("name (display_name) must be a non-empty string")
    config = {
        "prompt": prompt,
        "template": template,
        "key": key,
        "system_instruction": system_instruction,
        "generation_config": dict(generation_config or {}),
        "safety_settings": [dict(s) for s in safety_settings or []],
        "response_schema": schema_json(response_schema) if response_schema is not None else None,
        "schema_class": class_path(response_schema),
        "on_empty": on_empty,
        "keep_inputs": bool(keep_inputs),
        "rows_hash": rows_hash(df.index),
    }
    lines = None
    if media_cols:  # every media cell checked and hashed now: bad input raises here
        lines = _media.collect(df, media_cols, positions, keys, mime_type)
        config["media"] = {"columns": media_cols, "mime_type": mime_type}
    return Plan(
        model=model,
        prompts=_requests.take_prompts(texts, positions),
        positions=positions,
        index=df.index,
        n_rows=len(df),
        shared=shared,
        config=config,
        schema=response_schema,
        display_name=display_name or "gembatch",
        skipped=np.flatnonzero(~mask).astype(np.int64),
        lines=lines,
    )


def rows_hash(index: pd.Index) -> str:
    """8 hex digits identifying an input's row labels and count (carried in display names)."""
    h = hashlib.sha256(str(len(index)).encode() + b"\0")
    try:
        h.update(pd.util.hash_pandas_object(index).to_numpy().tobytes())
    except (TypeError, ValueError):  # exotic labels: their exact pickle
        h.update(dump_index(index))
    return h.hexdigest()[:8]


def retry_plan(parent_config: dict[str, Any], *, model: str, prompts: Sequence[str],
               positions: np.ndarray, index: pd.Index, n_rows: int,
               display_name: str, lines: Any = None) -> Plan:
    """The plan of a retry: the given rows again, with the parent run's request options
    (``lines``: the requests as sent, for runs that were more than text prompts)."""
    shared, _ = _requests.request_config(
        parent_config.get("system_instruction"), parent_config.get("generation_config"),
        parent_config.get("safety_settings"), parent_config.get("response_schema"),
    )
    return Plan(model=validate_model(model), prompts=prompts, positions=positions,
                index=index, n_rows=n_rows, shared=shared, config=parent_config, schema=None,
                display_name=display_name, lines=lines)


def wire_keys(positions: np.ndarray) -> list[str]:
    """The wire key of each row: its position in the root input, in decimal."""
    return list(map(str, positions.tolist()))


def key_text(positions: np.ndarray) -> _requests.ArrowText:
    """The same keys as :func:`wire_keys`, held in Arrow, for writing request files."""
    return _requests.ArrowText(pa.array(positions, type=pa.int64()).cast(pa.string()))


# --------------------------------------------------------------------------- estimate
@dataclass
class Estimate:
    """What a run would send and cost. Nothing is sent to make it."""

    model: str
    rows: int
    requests: int
    skipped: int
    bytes: int
    mode: str  #: ``inline`` or ``file``
    shards: int
    input_tokens: int
    output_tokens: int  #: assumed; see gemini_batch_magic._pricing
    cost_usd: float | None  #: None when the model has no known price
    price_note: str
    #: the first requests: ``key``, ``row`` (its label), ``prompt`` and the wire ``request``
    preview: list[dict[str, Any]] = field(default_factory=list)
    #: media parts: ``media_parts``, ``media_files`` (distinct), ``upload_files``,
    #: ``upload_bytes`` (sent once with the File API), ``inline_bytes``, ``media_tokens``
    media: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "preview"}

    def __str__(self) -> str:
        cost = f"${self.cost_usd:,.4f}" if self.cost_usd is not None else "unknown"
        media = ""
        if self.media.get("media_parts"):
            m = self.media
            media = (f"; {m['media_parts']:,} media parts ({m['media_files']:,} files: "
                     f"{m['upload_files']:,} uploaded, {_fmt_bytes(m['upload_bytes'])}; "
                     f"{_fmt_bytes(m['inline_bytes'])} inline; ~{m['media_tokens']:,} tokens)")
        return (
            f"{self.requests:,} requests ({self.skipped:,} skipped) to {self.model}, "
            f"{_fmt_bytes(self.bytes)} as {self.mode} in {self.shards} shard(s){media}; "
            f"~{self.input_tokens:,} input + ~{self.output_tokens:,} output tokens; "
            f"estimated cost {cost} at batch prices ({self.price_note})"
        )

    def _repr_html_(self) -> str:
        from .widgets import estimate_html  # the one door to the views

        return estimate_html(self)  # type: ignore[no-any-return]

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        from .widgets import estimate_html, estimate_text  # the one door to the views

        return {"text/plain": estimate_text(self), "text/html": estimate_html(self)}


def _fmt_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1000
    return f"{n} B"


def _too_large(plan: Plan, exc: RequestTooLargeError) -> RequestTooLargeError:
    """The writer's error (a line position) restated with the row's label."""
    i = (exc.rows or [0])[0]
    label = plan.index[plan.positions[i]]
    return RequestTooLargeError(
        f"the request for row {label!r} is {exc.size:,} bytes, more than the per-file limit "
        f"of {exc.limit:,} bytes; shorten that prompt or raise max_file_bytes",
        rows=[label], size=exc.size, limit=exc.limit,
    )


def _inline(total_bytes: int, n_requests: int, plan: Plan | None = None) -> bool:
    if settings.backend == "vertex":  # Vertex AI batch prediction reads files only
        return False
    if plan is not None and plan.lines is not None and not plan.lines.inline_ok:
        return False  # embeddings: inline embedding batches carry no per-row key
    return total_bytes <= settings.inline_limit_bytes and n_requests <= INLINE_MAX_REQUESTS


def _measure(plan: Plan, keys: Any) -> tuple[np.ndarray, int]:
    measure = plan.lines.measure if plan.lines is not None else _requests.measure_requests
    return measure(plan.prompts, keys, plan.shared)  # type: ignore[no-any-return]


def estimate(plan: Plan) -> Estimate:
    """The estimate of a plan: exact line sizes, nothing written or sent."""
    sizes, prompt_bytes = _measure(plan, key_text(plan.positions))
    try:
        shards = _requests.plan_shards(sizes, settings.max_file_bytes,
                                       settings.max_requests_per_shard)
    except RequestTooLargeError as exc:
        raise _too_large(plan, exc) from None
    total = int(sizes.sum())
    inline = _inline(total, len(sizes), plan)
    return _priced(plan, total, prompt_bytes, "inline" if inline else "file",
                   1 if inline else len(shards))


@dataclass
class WrittenPlan:
    """A plan's request files, as written, with the figures measured while writing them."""

    files: list[RequestFile]
    mode: str  #: ``inline`` (one file, sent in the create call) or ``file`` (uploaded)
    estimate: Estimate
    content_hash: str


def write(plan: Plan, folder: Path) -> WrittenPlan:
    """Write the plan's request files into ``folder`` (one per shard) and measure them.

    The transport is decided first: a run of at most :data:`INLINE_MAX_REQUESTS` requests
    whose lines fit ``inline_limit_bytes`` goes inline, as one file; anything else is
    sharded under ``max_file_bytes`` and ``max_requests_per_shard``.
    """
    keys = key_text(plan.positions)
    n = len(plan.positions)
    max_bytes, max_requests = settings.max_file_bytes, settings.max_requests_per_shard
    mode = "file"
    if n <= INLINE_MAX_REQUESTS and settings.backend != "vertex":  # sizing 100 lines is free
        sizes, _ = _measure(plan, keys)
        if _inline(int(sizes.sum()), n, plan) and not (sizes > max_bytes).any():
            mode, max_bytes, max_requests = "inline", max(int(sizes.sum()), 1), max(n, 1)
    writer = plan.lines.write if plan.lines is not None else _requests.write_request_files
    try:
        files = writer(
            folder, plan.prompts, keys, plan.shared,
            max_file_bytes=max_bytes, max_requests=max_requests,
        )
    except RequestTooLargeError as exc:
        raise _too_large(plan, exc) from None
    total = sum(f.n_bytes for f in files)
    est = _priced(plan, total, sum(f.prompt_bytes for f in files), mode, len(files))
    return WrittenPlan(files=files, mode=mode, estimate=est,
                       content_hash=content_hash(plan, files))


def _priced(plan: Plan, total: int, prompt_bytes: int, mode: str, n_shards: int) -> Estimate:
    """Tokens and cost from the request bytes (see gemini_batch_magic._pricing)."""
    n = len(plan.positions)
    sys_bytes = len(str(plan.config.get("system_instruction") or "").encode())
    in_tokens = math.ceil(prompt_bytes / 4) + n * math.ceil(sys_bytes / 4)
    media: dict[str, int] = {}
    if plan.lines is not None:
        media = {**plan.lines.summary(), "media_tokens": plan.lines.tokens()}
        in_tokens += media["media_tokens"]
    gen = plan.config.get("generation_config") or {}
    max_out = gen.get("max_output_tokens") or gen.get("maxOutputTokens")
    per_out = int(max_out) if max_out else _pricing.ASSUMED_OUTPUT_TOKENS
    if getattr(plan.lines, "output_tokens", None) is not None:  # embeddings: none
        per_out = plan.lines.output_tokens
    out_tokens = per_out * n
    price = _pricing.price_for(plan.model)
    if price is None:
        cost, note = None, f"no batch price known for {plan.model}"
    else:
        cost = (in_tokens * price[0] + out_tokens * price[1]) / 1e6
        note = (
            f"${price[0]}/1M input, ${price[1]}/1M output; output assumed "
            f"{per_out} tokens/request"
        )
    preview = []
    for i in range(min(3, n)):
        text = plan.prompts[i]
        request = ({"contents": [{"parts": [{"text": text}], "role": "user"}], **plan.shared}
                   if not hasattr(plan.lines, "request")
                   else plan.lines.request(i, text, plan.shared, data=False))
        preview.append({
            "key": str(int(plan.positions[i])), "row": plan.index[plan.positions[i]],
            "prompt": text, "request": request,
        })
    return Estimate(
        model=plan.model, rows=plan.n_rows, requests=n, skipped=len(plan.skipped),
        bytes=total, mode=mode, shards=n_shards, input_tokens=in_tokens,
        output_tokens=out_tokens, cost_usd=cost, price_note=note, preview=preview,
        media=media,
    )


def check_cost(est: Estimate, max_cost: float | None) -> None:
    """Raise :class:`CostLimitError` if ``est`` is above ``max_cost`` (USD) or unpriced."""
    if max_cost is None:
        return
    if est.cost_usd is None:
        raise CostLimitError(
            f"max_cost={max_cost} was given but {est.model} has no known batch price, so "
            "the cost cannot be checked; add it to gemini_batch_magic._pricing.BATCH_PRICES "
            "or drop max_cost"
        )
    if est.cost_usd > max_cost:
        raise CostLimitError(
            f"estimated cost ${est.cost_usd:,.4f} exceeds max_cost=${max_cost:,.4f} "
            f"({est.requests:,} requests to {est.model}); nothing was submitted. Raise "
            "max_cost, use a cheaper model, or send fewer rows"
        )


def check_confirmed(est: Estimate, confirm: bool) -> None:
    """Raise :class:`ConfirmationRequired` for an unconfirmed run above ``confirm_above``."""
    limit = settings.confirm_above
    if confirm or limit is None or est.cost_usd is None or est.cost_usd <= limit:
        return
    err = ConfirmationRequired(
        f"this run is estimated at ${est.cost_usd:,.2f} ({est.requests:,} requests to "
        f"{est.model}), above confirm_above=${limit:,.2f}; nothing was sent. Confirm it with "
        "--yes (%%gembatch, gembatch submit) or confirm=True (Python), raise the threshold "
        "(%config GemBatch.confirm_above = ...), or turn it off with None",
        limit=limit,
    )
    err.estimate = est
    raise err


def content_hash(plan: Plan, files: Sequence[RequestFile]) -> str:
    """What identifies a run for dedupe: model, shared fields, request bytes, row labels."""
    h = hashlib.sha256()
    h.update(b"gembatch-v1\0" + plan.model.encode() + b"\0")
    h.update(orjson.dumps(plan.shared, option=orjson.OPT_SORT_KEYS) + b"\0")
    for f in files:
        h.update(f.sha256.encode() + b"\0")
    if len(plan.index):
        try:
            labels = pd.util.hash_pandas_object(plan.index).to_numpy().tobytes()
        except (TypeError, ValueError):  # exotic labels: fall back to their exact pickle
            labels = dump_index(plan.index)
        h.update(labels)
    h.update(plan.positions.tobytes())
    return h.hexdigest()[:32]
