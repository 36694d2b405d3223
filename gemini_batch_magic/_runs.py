"""The engine: DataFrame rows to keyed batch jobs that survive restarts, results aligned by key.

A *run* is one user action (``submit``): the rows of a DataFrame, each sent as one request
whose key is the row's position in the input (the original index values stay in the
registry, never on the wire). Small runs go inline; larger ones are written to JSONL,
uploaded with the File API and split into shards (one batch job each) when they exceed the
per-file size or request count. Everything about a run is recorded in the registry before
and after each step, so any kernel can attach to it, follow it and fetch its results.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import logging
import math
import os
import re
import secrets
import shutil
import socket
import sys
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa

from . import _backend, _pricing, _requests, _results
from ._config import settings, validate_model
from ._registry import Registry, RunRecord, ShardRecord, dump_index, load_index
from .exceptions import (
    BackendError,
    ConfigError,
    CostLimitError,
    GemBatchError,
    InputError,
    RequestTooLargeError,
    RunNotFoundError,
    WaitTimeout,
)

__all__ = [
    "BatchRun",
    "Estimate",
    "RunStats",
    "attach",
    "estimate",
    "registry",
    "runs",
    "submit",
]

_log = logging.getLogger(__name__)

TERMINAL = frozenset({"SUCCEEDED", "FAILED", "CANCELLED", "EXPIRED"})
LIVE = frozenset({"SUBMITTING", "PENDING", "RUNNING"})
#: When shards end differently, the run shows the most serious state.
_STATE_RANK = {
    "SUBMITTING": 0, "PENDING": 1, "RUNNING": 2, "SUCCEEDED": 3, "CANCELLED": 4,
    "EXPIRED": 5, "FAILED": 6,
}
_RETRYABLE_CODES = {408, 429, 500, 502, 503, 504}
_SKIPPED = "skipped: the prompt was empty (on_empty='skip')"


class RunStats(NamedTuple):
    """Request counts of a run (all shards together)."""

    total: int
    succeeded: int
    failed: int
    pending: int


# --------------------------------------------------------------------------- preparation
@dataclass
class _Prepared:
    """Validated input, ready to write: nothing has been sent or stored yet."""

    model: str
    prompts: Sequence[str]  # the prompts of the rows to send (an ArrowText for Arrow-held text)
    positions: np.ndarray  # int64 positions (in the root input) of the rows to send
    index: pd.Index  # the root input's index (original row labels)
    key_values: pd.Index  # the row keys (index or key column) of the root input
    n_rows: int
    shared: dict[str, Any]  # request fields identical for every row, wire (camelCase) form
    sdk_config: dict[str, Any]  # the same as a GenerateContentConfig dict, for inline batches
    config: dict[str, Any]  # what the registry keeps about how the run was made
    schema: Any  # pydantic model class, JSON schema dict, or None
    display_name: str
    skipped: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def _snake(name: str) -> str:
    out = []
    for ch in name:
        if ch.isupper():
            out.append("_" + ch.lower())
        else:
            out.append(ch)
    return "".join(out)


def _generation_fields() -> set[str]:
    from google.genai import types

    return set(types.GenerateContentConfig.model_fields)


_REQUEST_LEVEL = {"system_instruction", "safety_settings", "tools", "tool_config",
                  "cached_content", "labels", "http_options", "response_schema",
                  "response_json_schema", "response_mime_type"}


def _schema_json(schema: Any) -> dict[str, Any]:
    """A JSON schema dict from a pydantic model class or a dict."""
    if isinstance(schema, dict):
        return schema
    if isinstance(schema, type) and hasattr(schema, "model_json_schema"):
        return dict(schema.model_json_schema())
    raise ConfigError(
        f"response_schema must be a pydantic model class or a JSON schema dict, got "
        f"{type(schema).__name__}"
    )


def _build_config(
    system_instruction: str | None,
    generation_config: Mapping[str, Any] | None,
    safety_settings: Sequence[Mapping[str, Any]] | None,
    response_schema: Any,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(wire fields shared by every request, the same as a GenerateContentConfig dict)."""
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
                import difflib

                close = difflib.get_close_matches(snake, sorted(valid), n=3)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise ConfigError(f"unknown generation_config field {key!r}{hint}")
            gen[snake] = value
    if response_schema is not None:
        gen["response_mime_type"] = "application/json"
        gen["response_json_schema"] = _schema_json(response_schema)
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


def _prepare(
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
) -> _Prepared:
    model = validate_model(model or settings.model)
    texts = _requests.prompt_texts(df, prompt=prompt, template=template)
    mask = _requests.check_prompts(texts, on_empty=on_empty)
    key_values = _requests.check_keys(df, key)
    shared, sdk_config = _build_config(
        system_instruction, generation_config, safety_settings, response_schema
    )
    positions = np.flatnonzero(mask).astype(np.int64)
    prompts = _requests.take_prompts(texts, positions)
    if display_name is not None and (not isinstance(display_name, str) or not display_name):
        raise ConfigError("name (display_name) must be a non-empty string")
    config = {
        "prompt": prompt,
        "template": template,
        "key": key,
        "system_instruction": system_instruction,
        "generation_config": dict(generation_config or {}),
        "safety_settings": [dict(s) for s in safety_settings or []],
        "response_schema": _schema_json(response_schema) if response_schema is not None else None,
        "schema_class": _class_path(response_schema),
        "on_empty": on_empty,
    }
    return _Prepared(
        model=model,
        prompts=prompts,
        positions=positions,
        index=df.index,
        key_values=key_values,
        n_rows=len(df),
        shared=shared,
        sdk_config=sdk_config,
        config=config,
        schema=response_schema,
        display_name=display_name or "gembatch",
        skipped=np.flatnonzero(~mask).astype(np.int64),
    )


def _class_path(schema: Any) -> str | None:
    if isinstance(schema, type):
        return f"{schema.__module__}.{schema.__qualname__}"
    return None


def _keys(positions: np.ndarray) -> list[str]:
    """The wire key of each row: its position in the root input, in decimal."""
    return list(map(str, positions.tolist()))


def _key_text(positions: np.ndarray) -> _requests.ArrowText:
    """The same keys as :func:`_keys`, held in Arrow, for writing request files."""
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
    preview: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "preview"}

    def __str__(self) -> str:
        cost = f"${self.cost_usd:,.4f}" if self.cost_usd is not None else "unknown"
        return (
            f"{self.requests:,} requests ({self.skipped:,} skipped) to {self.model}, "
            f"{_fmt_bytes(self.bytes)} as {self.mode} in {self.shards} shard(s); "
            f"~{self.input_tokens:,} input + ~{self.output_tokens:,} output tokens; "
            f"estimated cost {cost} at batch prices ({self.price_note})"
        )

    def _repr_html_(self) -> str:
        import html

        rows = "".join(
            f"<tr><th style='text-align:left'>{html.escape(k)}</th>"
            f"<td style='text-align:left'>{html.escape(str(v))}</td></tr>"
            for k, v in self.as_dict().items()
        )
        return f"<table class='gembatch-estimate'>{rows}</table>"


def _fmt_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1000
    return f"{n} B"


def _plan_shards(sizes: np.ndarray) -> list[tuple[int, int]]:
    """Split line sizes into shards under the per-file byte and request limits."""
    limit_b, limit_n = settings.max_file_bytes, settings.max_requests_per_shard
    out: list[tuple[int, int]] = []
    start, acc = 0, 0
    for i, size in enumerate(sizes.tolist()):
        if i > start and (acc + size > limit_b or i - start >= limit_n):
            out.append((start, i))
            start, acc = i, 0
        acc += size
    out.append((start, len(sizes)))
    return out


#: Inline batches cost the SDK about 1 ms of CPU per request (pydantic conversion on create
#: and on every get of the finished batch), a file batch one upload and one download: above
#: this many requests, a file is faster even when the bytes would fit inline (benchmark fig. 3).
_INLINE_MAX_REQUESTS = 100


def _mode(total_bytes: int, n_requests: int) -> str:
    """``inline`` for small runs, else ``file``."""
    small = total_bytes <= settings.inline_limit_bytes and n_requests <= _INLINE_MAX_REQUESTS
    return "inline" if small else "file"


def _estimate(prep: _Prepared) -> Estimate:
    """The estimate for :func:`estimate`: exact line sizes, nothing written or sent."""
    keys = _key_text(prep.positions)
    sizes = _requests.request_line_sizes(prep.prompts, keys, prep.shared)
    too_big = np.flatnonzero(sizes > settings.max_file_bytes)
    if len(too_big):
        i = int(too_big[0])
        raise RequestTooLargeError(
            f"the request for row {prep.index[prep.positions[i]]!r} is {int(sizes[i]):,} bytes, "
            f"more than the per-file limit of {settings.max_file_bytes:,} bytes; shorten it"
        )
    total = int(sizes.sum())
    mode = _mode(total, len(keys))
    n_shards = 1 if mode == "inline" else len(_plan_shards(sizes))
    return _estimate_totals(prep, total, mode, n_shards)


def _estimate_totals(prep: _Prepared, total: int, mode: str, n_shards: int) -> Estimate:
    """Tokens and cost from the total request bytes (see gemini_batch_magic._pricing)."""
    n = len(prep.positions)
    sys_bytes = len(str(prep.config.get("system_instruction") or "").encode())
    # prompt bytes = line bytes minus the fixed JSON around each prompt and its key
    frame = orjson.dumps({"key": "", "request": {
        "contents": [{"parts": [{"text": ""}], "role": "user"}], **prep.shared}})
    key_bytes = int(sum(len(str(int(p))) for p in prep.positions[:1000]) * n
                    / max(1, min(n, 1000)))
    prompt_bytes = max(0, total - key_bytes - n * (len(frame) + 1))
    in_tokens = math.ceil(prompt_bytes / 4) + n * math.ceil(sys_bytes / 4)
    gen = prep.config["generation_config"]
    max_out = gen.get("max_output_tokens") or gen.get("maxOutputTokens")
    per_out = int(max_out) if max_out else _pricing.ASSUMED_OUTPUT_TOKENS
    out_tokens = per_out * n
    price = _pricing.price_for(prep.model)
    if price is None:
        cost, note = None, f"no batch price known for {prep.model}"
    else:
        cost = (in_tokens * price[0] + out_tokens * price[1]) / 1e6
        note = (
            f"${price[0]}/1M input, ${price[1]}/1M output; output assumed "
            f"{per_out} tokens/request"
        )
    preview = [
        {"key": str(int(prep.positions[i])), "row": prep.index[prep.positions[i]],
         "request": {"contents": [{"parts": [{"text": prep.prompts[i]}], "role": "user"}],
                     **prep.shared}}
        for i in range(min(3, n))
    ]
    return Estimate(
        model=prep.model, rows=prep.n_rows, requests=n, skipped=len(prep.skipped),
        bytes=total, mode=mode, shards=n_shards, input_tokens=in_tokens,
        output_tokens=out_tokens, cost_usd=cost, price_note=note, preview=preview,
    )


# --------------------------------------------------------------------------- registry access
_registries: dict[Path, Registry] = {}


def registry() -> Registry:
    """The registry under the current ``settings.home``."""
    home = settings.home
    reg = _registries.get(home)
    if reg is None:
        reg = _registries[home] = Registry(home)
    return reg


_schema_classes: dict[str, Any] = {}  # run id -> pydantic class given in this process
_live_objects: weakref.WeakValueDictionary[str, BatchRun] = weakref.WeakValueDictionary()
_objects_lock = threading.Lock()
_submitting: set[str] = set()  # run ids this process is submitting right now
#: run ids created by this process and never sent before: only their first create may skip
#: the reconciling list (any other create may follow one the service already accepted).
_fresh: set[str] = set()
_OWNER = f"{socket.gethostname()}:{os.getpid()}"


def _owner_alive(owner: str | None) -> bool:
    if not owner:
        return False
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname():
        return True  # cannot tell: assume another machine is still working on it
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError):
        return False
    except PermissionError:
        return True
    return True


def _run_object(run_id: str, input_df: pd.DataFrame | None = None) -> BatchRun:
    with _objects_lock:
        obj = _live_objects.get(run_id)
        if obj is None:
            obj = BatchRun(run_id)
            _live_objects[run_id] = obj
    if input_df is not None and obj._input is None:
        obj._input = input_df
    return obj


# --------------------------------------------------------------------------- SDK helpers
def _is_retryable(exc: BaseException) -> bool:
    from google.genai import errors

    if isinstance(exc, errors.APIError):
        return int(getattr(exc, "code", 0) or 0) in _RETRYABLE_CODES
    name = type(exc).__name__
    return isinstance(exc, (OSError, ConnectionError, TimeoutError)) or any(
        n in name for n in ("Timeout", "Connect", "Network", "Protocol", "Transport", "ReadError")
    )


def _backend_error(action: str, exc: BaseException) -> BackendError:
    msg = getattr(exc, "message", None) or str(exc)
    code = getattr(exc, "code", None)
    head = f"{code} " if code else ""
    return BackendError(f"{action} failed: {head}{msg}")


def _with_retries(action: str, fn: Callable[[], Any], attempts: int | None = None) -> Any:
    """Call ``fn`` retrying transient failures (for calls the SDK itself does not retry)."""
    attempts = attempts or settings.retry_attempts
    delay = settings.retry_initial_delay
    for i in range(attempts):
        try:
            return fn()
        except Exception as exc:
            if not _is_retryable(exc) or i == attempts - 1:
                raise _backend_error(action, exc) from exc
            time.sleep(delay * (1 + secrets.randbelow(1000) / 1000))
            delay = min(delay * 2, 30.0)
    raise AssertionError("unreachable")


def _job_state(job: Any) -> str:
    state = getattr(job, "state", None)
    name = getattr(state, "name", None) or str(state or "JOB_STATE_UNSPECIFIED")
    return name.removeprefix("JOB_STATE_").removeprefix("BATCH_STATE_")


# --------------------------------------------------------------------------- the run object
class _Tee:
    """A download destination that writes to a file and hands the same bytes to a parser."""

    def __init__(self, fh: Any, parser: _results.StreamParser) -> None:
        self._fh = fh
        self._parser = parser

    def write(self, data: bytes) -> int:
        self._fh.write(data)
        self._parser.write(data)
        return len(data)

    def flush(self) -> None:
        self._fh.flush()


class BatchRun:
    """A run: one user action, however many batch jobs (shards) it took.

    Get one from :func:`submit`, ``df.gembatch.submit(...)``, :func:`attach` or the magics.
    The object reads its state from the registry; :meth:`refresh` asks the service.
    """

    def __init__(self, run_id: str) -> None:
        record = registry().get(run_id)
        if record is None:
            raise RunNotFoundError(f"no run {run_id!r} in the registry at {settings.home}")
        self.run_id = run_id
        self._record: RunRecord = record
        self._lock = threading.RLock()
        self._input: pd.DataFrame | None = None
        self._result_cache: tuple[Any, pd.DataFrame] | None = None
        self.notice: str | None = None  #: e.g. "identical run already exists"
        self._submit_thread: threading.Thread | None = None
        self._shard_cache: dict[int, tuple[Any, pd.DataFrame]] = {}
        #: shard -> (results file name, frame parsed while it downloaded), used once
        self._preparsed: dict[int, tuple[str, pd.DataFrame]] = {}
        self._positions_cache: np.ndarray | None = None
        self._index_cache: pd.Index | None = None
        self._submit_error: BaseException | None = None

    # -- facts ------------------------------------------------------------------------------
    @property
    def record(self) -> RunRecord:
        return self._record

    @property
    def model(self) -> str:
        return self._record.model

    @property
    def display_name(self) -> str:
        return self._record.display_name

    @property
    def created(self) -> pd.Timestamp:
        return pd.Timestamp(self._record.created, unit="s", tz="UTC")

    @property
    def elapsed(self) -> float:
        end = self._record.updated if self.done else time.time()
        return max(0.0, end - self._record.created)

    @property
    def parent_id(self) -> str | None:
        return self._record.parent_id

    @property
    def n_rows(self) -> int:
        return int(self._record.n_requests)

    @property
    def shards(self) -> list[ShardRecord]:
        return list(self._record.shards)

    @property
    def batch_names(self) -> list[str]:
        return [s.batch_name for s in self._record.shards if s.batch_name]

    @property
    def live_batch_names(self) -> set[str]:
        """Batch names of the shards the service is still working on."""
        return {s.batch_name for s in self._record.shards
                if s.batch_name is not None and s.state in LIVE}

    @property
    def state(self) -> str:
        """SUBMITTING, PENDING, RUNNING, SUCCEEDED, FAILED, CANCELLED or EXPIRED."""
        return self._record.state

    @property
    def done(self) -> bool:
        return self._record.state in TERMINAL

    @property
    def error(self) -> str | None:
        return self._record.error

    @property
    def stats(self) -> RunStats:
        total = self._record.n_requests
        ok = sum(s.succeeded for s in self._record.shards)
        bad = sum(s.failed for s in self._record.shards)
        pending = max(0, total - ok - bad) if not self.done else 0
        return RunStats(total, ok, bad, pending)

    @property
    def estimated_cost(self) -> float | None:
        return self._record.est_cost

    def children(self) -> list[BatchRun]:
        """The runs made by :meth:`retry_failed` from this one, oldest first."""
        return [_run_object(c) for c in registry().children(self.run_id)]

    def __repr__(self) -> str:
        st = self.stats
        return (
            f"<BatchRun {self.run_id} {self.state} {st.succeeded + st.failed}/{st.total} "
            f"answered ({st.failed} failed), model={self.model}, shards={len(self.shards)}>"
        )

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        from .widgets import run_mimebundle  # the one door to the views

        return run_mimebundle(self, include, exclude)

    # -- following in the background ---------------------------------------------------------
    def watch(
        self, callback: Callable[[BatchRun, BaseException | None], Any] | None = None,
    ) -> None:
        """Keep this run current in the background until it is done (one thread polls every
        watched run), calling ``callback(run, error)`` after each poll; how views stay live."""
        from ._monitor import monitor

        monitor.watch(self, callback)

    def unwatch(
        self, callback: Callable[[BatchRun, BaseException | None], Any] | None = None,
    ) -> None:
        """Stop calling ``callback`` (every callback, and stop polling, if None)."""
        from ._monitor import monitor

        monitor.unwatch(self, callback)

    # -- talking to the service --------------------------------------------------------------
    def _reload(self) -> None:
        rec = registry().get(self.run_id)
        if rec is not None:
            self._record = rec

    def _set_shard(self, shard: ShardRecord, **values: Any) -> None:
        for k, v in values.items():
            setattr(shard, k, v)
        registry().update_shard(self.run_id, shard.shard, **values)

    def _aggregate(self) -> None:
        """Derive the run's state and error from its shards, as the registry has them."""
        with self._lock:
            self._reload()  # shards may have been updated by another thread or process
            self._aggregate_loaded()

    def _aggregate_loaded(self) -> None:
        states = [s.state for s in self._record.shards]
        if any(s in LIVE for s in states):
            live = [s for s in states if s in LIVE]
            state = max(live, key=_STATE_RANK.__getitem__)
        else:
            state = max(states, key=_STATE_RANK.__getitem__) if states else "SUCCEEDED"
        errors = [f"shard {s.shard}: {s.error}" for s in self._record.shards if s.error]
        error = "; ".join(errors) or None
        if state != self._record.state or error != self._record.error:
            registry().update_run(self.run_id, state=state, error=error)
            self._record.state, self._record.error = state, error
            self._result_cache = None

    def refresh(self, known: Mapping[str, Any] | None = None) -> BatchRun:
        """Ask the service about every live shard once; download results of finished ones.

        ``known`` maps batch names to batch jobs just listed (``_backend.list_batches``);
        a shard listed as still live needs no call of its own. A finished one is always
        fetched anew, so its output is read from the batch itself.
        """
        with self._lock:
            self._reload()
            if self.done and all(s.results_file or s.state != "SUCCEEDED" for s in self.shards):
                return self
            client = _backend.get_client()
            changed = False
            for shard in self._record.shards:
                if shard.batch_name is None:
                    continue
                if shard.state in TERMINAL and (shard.results_file or shard.error):
                    continue
                listed = known.get(shard.batch_name) if known else None
                try:
                    job = (listed if listed is not None and _job_state(listed) in LIVE
                           else client.batches.get(name=shard.batch_name))
                except Exception as exc:
                    if _is_retryable(exc):
                        continue  # transient: the next poll tries again
                    raise _backend_error(f"checking {shard.batch_name}", exc) from exc
                state = _job_state(job)
                stats = _backend.batch_stats(shard.batch_name)
                values: dict[str, Any] = {"state": state if state in _STATE_RANK else "RUNNING"}
                if stats:
                    values.update(succeeded=stats["succeeded"], failed=stats["failed"],
                                  pending=stats["pending"])
                if state in TERMINAL:
                    values.update(self._download(client, shard, job, state))
                if any(getattr(shard, k) != v for k, v in values.items()):
                    self._set_shard(shard, **values)  # a quiet poll writes nothing (fig. 5)
                    changed = True
            if changed:
                self._aggregate()
            else:  # the record was just reloaded: nothing to write, nothing new to read
                self._aggregate_loaded()
        return self

    def _download(self, client: Any, shard: ShardRecord, job: Any, state: str) -> dict[str, Any]:
        """Fetch and store the results of a finished shard; returns the shard columns to set.

        A file batch's responses file is streamed to ``results-NNNN.jsonl.part`` and renamed
        only once complete, so a download cut short (a killed kernel) is never taken for
        results. It is kept as downloaded (the cheapest faithful copy); inline answers are
        stored as parquet. Either way they never need a second download.
        """
        dest = getattr(job, "dest", None)
        run_dir = registry().run_dir(self.run_id)
        stem = f"results-{shard.shard:04d}"
        # the temporary name is this writer's own: two kernels may fetch the same shard at once
        own = f"{os.getpid()}-{secrets.token_hex(4)}.part"
        if dest is not None and dest.inlined_responses:
            frame = _results.parse_inlined_responses(dest.inlined_responses)
            out = run_dir / f"{stem}.parquet"
            tmp = run_dir / f"{stem}.parquet.{own}"
            frame.to_parquet(tmp, index=False)
        elif dest is not None and dest.file_name:
            out = run_dir / f"{stem}.jsonl"
            tmp = run_dir / f"{stem}.jsonl.{own}"

            parsers: list[_results.StreamParser] = []

            def fetch() -> None:
                for old in parsers:  # an attempt cut short: its bytes are written anew
                    old.close()
                parsers[:] = [_results.StreamParser()]
                with open(tmp, "wb") as fh:
                    os.chmod(tmp, 0o600)
                    client.files.download(
                        file=dest.file_name, destination=_Tee(fh, parsers[0])
                    )

            try:
                _with_retries(f"downloading {dest.file_name}", fetch)
                parsed = parsers[0].finish()  # parsed while it downloaded (None: read the file)
            except BaseException:
                for old in parsers:
                    old.close()
                tmp.unlink(missing_ok=True)  # a half download is never kept, never read
                raise
            if parsed is not None:
                self._preparsed[shard.shard] = (out.name, parsed)
                if len(parsed) >= 100_000:  # the download's and parser's scratch (fig. 4)
                    _trim_heap()
        else:  # the batch ended without output
            out = run_dir / f"{stem}.parquet"
            tmp = run_dir / f"{stem}.parquet.{own}"
            _results.empty_frame().to_parquet(tmp, index=False)
        os.chmod(tmp, 0o600)
        os.replace(tmp, out)
        for leftover in run_dir.glob(f"{stem}.*.part"):  # cut short by a writer that died
            pid = leftover.name.rsplit(".", 2)[-2].split("-")[0]
            if not _owner_alive(f"{socket.gethostname()}:{pid}"):
                leftover.unlink(missing_ok=True)
        # read it back as the shard will be once recorded (the caller records these values;
        # changing `shard` here would hide them from its change check)
        aligned = self._shard_results(
            dataclasses.replace(shard, results_file=out.name, state=state)
        )
        failed = int(aligned["error"].notna().sum())
        values: dict[str, Any] = {
            "results_file": out.name,
            "succeeded": len(aligned) - failed,
            "failed": failed,
            "pending": 0,
        }
        if state != "SUCCEEDED":
            values["error"] = f"batch {shard.batch_name} ended {state}"
        return values

    def _shard_results(self, shard: ShardRecord) -> pd.DataFrame:
        """One shard's answers aligned to its requests (RangeIndex), cached per process."""
        cache_key = (shard.shard, shard.results_file, shard.state)
        cached = self._shard_cache.get(shard.shard)
        if cached is not None and cached[0] == cache_key:
            return cached[1]
        n = shard.stop - shard.start
        if not shard.results_file:
            msg = (f"no result: the batch ended {shard.state}" if shard.state in TERMINAL
                   else f"not answered yet (shard {shard.shard} is {shard.state})")
            return _empty_results(n, msg)
        path = registry().run_dir(self.run_id) / shard.results_file
        keys = self._positions()[shard.start:shard.stop]  # the keys are these, in decimal
        name, parsed = self._preparsed.pop(shard.shard, (None, None))
        if parsed is None or name != shard.results_file:
            # not parsed as it downloaded (another kernel fetched it, or a restart)
            parsed = (_results.parse_results_file(path) if path.suffix == ".jsonl"
                      else _normalise(pd.read_parquet(path)))
        aligned = _results.align_results(parsed, keys)
        if len(keys) >= 100_000:  # the answers in file order are garbage now (fig. 4)
            del parsed
            _trim_heap()
        if shard.state != "SUCCEEDED":
            lost = np.array([isinstance(e, str) and e.startswith("no result returned")
                             for e in aligned["error"].to_numpy(dtype=object)], dtype=bool)
            _results.set_errors(aligned, lost, f"no result: the batch ended {shard.state}")
        self._shard_cache[shard.shard] = (cache_key, aligned)
        return aligned

    def _positions(self) -> np.ndarray:
        """Positions (in the root input) of the rows this run sent; read once, immutable."""
        if self._positions_cache is None:
            blob = self._record.positions_blob or registry().positions(self.run_id)
            self._positions_cache = np.frombuffer(blob, dtype=np.int64)
        return self._positions_cache

    # -- waiting ----------------------------------------------------------------------------
    def wait(
        self, timeout: float | None = None, *, poll_interval: float | None = None,
        progress: Any = True,
    ) -> BatchRun:
        """Block until every shard is done; shows progress (text outside notebooks).

        ``timeout`` (seconds, None = no limit) raises :class:`WaitTimeout` when it runs out;
        the run itself goes on and can be waited for again. ``progress``: True shows the
        widget in a notebook and text elsewhere, False shows nothing, and any object with
        ``update()`` and ``close()`` is driven as the display instead.
        """
        display = None
        if hasattr(progress, "update") and hasattr(progress, "close"):
            display = progress
        elif progress:
            from .widgets import auto_progress  # the one door to the views

            display = auto_progress(self)
        delay = poll_interval or settings.poll_interval
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                self._join_submission(delay)
                self._resume_if_orphaned()
                self.refresh()
                if display is not None:
                    display.update()
                if self.done:
                    return self
                if deadline is not None and time.monotonic() >= deadline:
                    st = self.stats
                    raise WaitTimeout(
                        f"run {self.run_id} is still {self.state} after {timeout} s "
                        f"({st.succeeded + st.failed}/{st.total} answered); it goes on: "
                        f"call wait() again later, or attach({self.run_id!r}) from any kernel"
                    )
                pause = delay if deadline is None else min(delay, max(0.0, deadline - time.monotonic()))
                time.sleep(pause)
                delay = min(delay * 1.5, poll_interval or settings.max_poll_interval)
        finally:
            if display is not None:
                display.close()

    # -- results ----------------------------------------------------------------------------
    def _own_results(self) -> pd.DataFrame:
        """This run's answers (not its children's), one row per request, by position."""
        frames = []
        positions = self._positions()
        for shard in self._record.shards:
            pos = positions[shard.start:shard.stop]
            frame = self._shard_results(shard).copy(deep=False)
            frame.index = pd.Index(pos, name="position")
            frames.append(frame)
        if not frames:
            return _empty_results(0, "")
        return pd.concat(frames)

    def _merged(self) -> pd.DataFrame:
        """Own answers, with failed rows filled from retry runs (recursively)."""
        own = self._own_results()
        for child in self.children():
            sub = child._merged()
            sub = sub[sub["error"].isna()]
            sub = sub[sub.index.isin(own.index)]
            if len(sub):
                own.loc[sub.index, list(sub.columns)] = sub.to_numpy()
        return own

    def _root(self) -> BatchRun:
        run: BatchRun = self
        while run.parent_id:
            run = _run_object(run.parent_id)
        return run

    def result(self, join: bool | pd.DataFrame = False, *, partial: bool = False) -> pd.DataFrame:
        """The answers as a DataFrame with exactly the input's index, in the input's order.

        Columns: ``response``, ``error`` (missing on success), ``finish_reason``,
        ``input_tokens``, ``output_tokens``; with a ``response_schema`` also ``parsed`` and,
        for flat schemas, one column per field. Rows whose answer failed or is missing carry
        the reason in ``error``. Rows answered by :meth:`retry_failed` runs are merged in.

        ``join=True`` puts the input columns first (needs the input DataFrame: the one this
        process submitted, or pass it as ``join=df``). ``partial=True`` returns what has
        arrived so far instead of raising while the run is still live.
        """
        self._reload()
        if not self.done:
            self.refresh()
        if not self.done and not partial:
            st = self.stats
            raise GemBatchError(
                f"run {self.run_id} is still {self.state} ({st.succeeded + st.failed}/"
                f"{st.total} answered): call run.wait() first, or result(partial=True)"
            )
        signature = tuple((c.run_id, c.state) for c in self._descendants())
        cached = self._result_cache if self.done else None
        if cached is not None and cached[0] == signature:
            out = cached[1]
        else:
            out = self._build_result()
            if self.done:
                self._result_cache = (signature, out)
        out = out.copy()
        if join is False:
            return out
        source = join if isinstance(join, pd.DataFrame) else self._root()._input
        if source is None:
            raise InputError(
                "join=True needs the input DataFrame, which this kernel does not have (the run "
                "was submitted elsewhere): pass it as run.result(join=df)"
            )
        if len(source) != len(out) or not source.index.equals(out.index):
            raise InputError(
                "the DataFrame given to join= does not have the run's index "
                f"({len(source)} rows vs {len(out)}): pass the DataFrame that was submitted"
            )
        clash = [c for c in out.columns if c in source.columns]
        return pd.concat([source, out.rename(columns={c: f"{c}_result" for c in clash})], axis=1)

    def _index(self) -> pd.Index:
        """The original row labels of the root input (kept in the registry)."""
        if self._index_cache is None:
            index_blob = registry().index_blob(self._root().run_id)
            self._index_cache = (load_index(index_blob) if index_blob
                                 else pd.RangeIndex(self._record.n_rows))
        return self._index_cache

    def _build_result(self) -> pd.DataFrame:
        index = self._index()
        n = len(index)
        merged = self._merged()
        src = np.full(n, -1, dtype=np.int64)  # row of `merged` answering each input row
        src[merged.index.to_numpy()] = np.arange(len(merged))
        if n and (src == np.arange(n)).all():  # every row sent, in order: nothing to move
            frame = merged.reset_index(drop=True)
        else:
            frame = _results.take_rows(merged, src)
            skipped = np.flatnonzero(src < 0)
            if len(skipped):
                _results.set_errors(frame, skipped, _SKIPPED)
        if self._record.parent_id:
            # a retry run shows only its own rows, labelled like the input
            keep = self._positions()
            frame = frame.iloc[keep]
            frame.index = index[keep]
        else:
            frame.index = index
        schema = self._record.config.get("response_schema")
        if schema:
            cls = _schema_classes.get(self._root().run_id)
            if cls is None and self._record.config.get("schema_class"):
                cls = _import_class(self._record.config["schema_class"])
            frame = _add_parsed(frame, schema, cls)
        return frame

    # -- actions ----------------------------------------------------------------------------
    def cancel(self) -> BatchRun:
        """Cancel every live shard; answers already given are kept."""
        client = _backend.get_client()
        with self._lock:
            self._reload()
            for shard in self._record.shards:
                if shard.state not in LIVE:
                    continue
                if shard.batch_name is None:
                    self._set_shard(shard, state="CANCELLED", error="cancelled before submission")
                    continue
                name = shard.batch_name
                try:
                    _with_retries(f"cancelling {name}", functools.partial(
                        client.batches.cancel, name=name))
                except BackendError as exc:
                    if "FAILED_PRECONDITION" not in str(exc) and " 400 " not in f" {exc} ":
                        raise
            self._aggregate()
        return self.refresh()

    def retry_failed(self, **overrides: Any) -> BatchRun | None:
        """Submit the rows whose answer failed or is missing again, as a child run.

        The parent's :meth:`result` then shows the merged answers. Returns None (and says
        so) when no row needs a retry. ``overrides`` may change ``model`` or ``name``.
        """
        self._reload()
        if not self.done:
            raise GemBatchError(
                f"run {self.run_id} is still {self.state}: wait for it (run.wait()) before "
                "retrying its failed rows"
            )
        merged = self._merged()
        failed = merged.index[merged["error"].notna()].to_numpy(dtype=np.int64)
        if not len(failed):
            print(f"run {self.run_id}: no failed rows to retry", file=sys.stderr)
            return None
        wanted = set(_keys(failed))
        prompts_by_key: dict[str, str] = {}
        for run in [self, *self._descendants()]:
            folder = registry().run_dir(run.run_id)
            paths = [folder / s.request_file for s in run.shards if (folder / s.request_file).exists()]
            found = _requests.read_request_prompts(paths, wanted - set(prompts_by_key))
            prompts_by_key.update(found)
        missing = wanted - set(prompts_by_key)
        if missing:
            raise GemBatchError(
                f"cannot retry run {self.run_id}: the request files of {len(missing)} rows are "
                f"gone from {registry().run_dir(self.run_id)}"
            )
        cfg = self._record.config
        prep = _Prepared(
            model=validate_model(overrides.get("model") or self.model),
            prompts=[prompts_by_key[k] for k in _keys(failed)],
            positions=failed,
            index=self._root()._index(),
            key_values=pd.RangeIndex(0),
            n_rows=self._record.n_rows,
            shared={},
            sdk_config={},
            config=cfg,
            schema=None,
            display_name=overrides.get("name") or f"{self.display_name}-retry",
        )
        prep.shared, prep.sdk_config = _build_config(
            cfg.get("system_instruction"), cfg.get("generation_config"),
            cfg.get("safety_settings"), cfg.get("response_schema"),
        )
        return _submit_prepared(prep, parent=self, force=True, max_cost=None)

    def _descendants(self) -> list[BatchRun]:
        out = []
        for child in self.children():
            out.append(child)
            out.extend(child._descendants())
        return out

    # -- submission (also used to resume an interrupted one) -------------------------------
    def _join_submission(self, timeout: float) -> None:
        """Wait a little for a background submission; raise its error if it failed."""
        thread = self._submit_thread
        if thread is not None and thread.is_alive():
            thread.join(timeout)
        if self._submit_error is not None:
            error, self._submit_error = self._submit_error, None
            raise error

    def _submit_in_background(self) -> None:
        try:
            self._submit_shards()
        except BaseException as exc:
            self._submit_error = exc
        finally:
            _fresh.discard(self.run_id)
            self._reload()

    def _start_submission(self, background: bool) -> None:
        """Create the run's batch jobs now, or in a background thread."""
        if not background:
            try:
                self._submit_shards()
            finally:
                _fresh.discard(self.run_id)
            return
        _submitting.add(self.run_id)
        self._submit_thread = threading.Thread(
            target=self._submit_in_background, name=f"gembatch-submit-{self.run_id}",
            daemon=True,
        )
        self._submit_thread.start()

    def _resume_if_orphaned(self) -> None:
        rec = self._record
        if rec.state != "SUBMITTING" or self.run_id in _submitting:
            return
        if rec.owner != _OWNER:
            if _owner_alive(rec.owner) or not registry().claim(self.run_id, rec.owner, _OWNER):
                return  # someone else submits it (or just took it over)
            self._reload()  # what the dead owner recorded before it died
        self._submit_shards()

    def _submit_shards(self) -> None:
        """Create a batch job for every shard that has none yet (uploading files first)."""
        _submitting.add(self.run_id)
        try:
            pending = [s for s in self._record.shards if s.batch_name is None and s.state in LIVE]
            if not pending:
                return
            client = _backend.get_client()
            workers = max(1, min(settings.max_concurrent_shards, len(pending)))
            errors: list[BaseException] = []

            def one(shard: ShardRecord) -> None:
                try:
                    self._submit_one(client, shard)
                except Exception as exc:
                    self._set_shard(shard, error=f"not submitted yet: {exc}")
                    errors.append(exc)

            if workers == 1:
                for s in pending:
                    one(s)
            else:
                with ThreadPoolExecutor(workers, thread_name_prefix="gembatch-submit") as pool:
                    list(pool.map(one, pending))
            self._aggregate()
            if errors:
                raise errors[0]
        finally:
            _submitting.discard(self.run_id)

    def _shard_display(self, shard: ShardRecord) -> str:
        base = self.display_name[:90]
        return f"{base}-{self.run_id}-s{shard.shard}"

    def _submit_one(self, client: Any, shard: ShardRecord) -> None:
        display = self._shard_display(shard)
        folder = registry().run_dir(self.run_id)
        path = folder / shard.request_file
        cfg_sdk = self._sdk_config()
        if self._record.source == "inline":
            src: Any = self._inline_src(path, cfg_sdk)
        else:
            if shard.upload_name is None:
                uploaded = _with_retries(
                    f"uploading {path.name}",
                    lambda: client.files.upload(
                        file=str(path),
                        config={"mime_type": "jsonl", "display_name": f"{display}-requests"},
                    ),
                )
                self._set_shard(shard, upload_name=uploaded.name)
            src = shard.upload_name
        name = self._create(client, src, display)
        self._set_shard(shard, batch_name=name, state="PENDING", pending=shard.n_requests,
                        error=None)

    def _sdk_config(self) -> dict[str, Any]:
        cfg = self._record.config
        return _build_config(
            cfg.get("system_instruction"), cfg.get("generation_config"),
            cfg.get("safety_settings"), cfg.get("response_schema"),
        )[1]

    def _inline_src(self, path: Path, config: dict[str, Any]) -> list[dict[str, Any]]:
        src = []
        with open(path, "rb") as fh:
            for line in fh:
                item = orjson.loads(line)
                req: dict[str, Any] = {"contents": item["request"]["contents"],
                                       "metadata": {"key": item["key"]}}
                if config:
                    req["config"] = config
                src.append(req)
        return src

    def _create(self, client: Any, src: Any, display: str) -> str:
        """Create one batch job, never twice: an ambiguous failure is reconciled by listing."""
        from google.genai import types

        no_retry = types.HttpOptions(retry_options=types.HttpRetryOptions(attempts=1))
        delay = settings.retry_initial_delay
        last: BaseException | None = None
        for attempt in range(settings.retry_attempts):
            if attempt or self.run_id not in _fresh:
                found = self._find_batch(client, display)
                if found:
                    return found
            try:
                job = client.batches.create(
                    model=self.model, src=src,
                    config={"display_name": display, "http_options": no_retry},
                )
                return str(job.name)
            except Exception as exc:
                if not _is_retryable(exc):
                    raise _backend_error(f"creating batch {display}", exc) from exc
                last = exc
            time.sleep(delay * (1 + secrets.randbelow(1000) / 1000))
            delay = min(delay * 2, 30.0)
        found = self._find_batch(client, display)
        if found:
            return found
        assert last is not None
        raise _backend_error(f"creating batch {display}", last) from last

    def _find_batch(self, client: Any, display: str) -> str | None:
        """The batch with this display name among the newest ones, if the service has it.

        Raises :class:`BackendError` when the service cannot be asked: "cannot tell" must
        never read as "not there", or the caller would create (and pay for) it twice.
        """
        def look() -> str | None:
            for job in _backend._newest_batches(client, 501):
                if getattr(job, "display_name", None) == display:
                    return str(job.name)
            return None

        try:
            return _with_retries("listing batches", look)  # type: ignore[no-any-return]
        except BackendError as exc:
            raise BackendError(
                f"could not confirm whether batch {display} was created ({exc}); nothing is "
                f"sent again until it can be checked: call run.wait() or "
                f"gbm.attach({self.run_id!r}).wait() later"
            ) from exc


def _empty_results(n: int, error: str) -> pd.DataFrame:
    none = pa.nulls(n, pa.large_string())
    return pd.DataFrame(
        {
            "response": _results.text_series(none),
            "error": _results.text_series(pa.array([error] * n, pa.large_string()) if error
                                          else none),
            "finish_reason": _results.text_series(none),
            "input_tokens": pd.arrays.IntegerArray(np.zeros(n, np.int64), np.ones(n, bool)),
            "output_tokens": pd.arrays.IntegerArray(np.zeros(n, np.int64), np.ones(n, bool)),
        }
    )


def _normalise(frame: pd.DataFrame) -> pd.DataFrame:
    """A stored parsed frame: text columns as :data:`_results.TEXT_DTYPE`, tokens Int64."""
    for col in ("key", "response", "error", "finish_reason"):
        frame[col] = _results.text_series(_results.arrow_text(frame[col]))
    for col in ("input_tokens", "output_tokens"):
        frame[col] = frame[col].astype("Int64")
    return frame


def _add_parsed(frame: pd.DataFrame, schema: dict[str, Any], model_cls: Any) -> pd.DataFrame:
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
                _check_required(value, schema)
                parsed.append(value)
        except Exception as exc:
            parsed.append(None)
            errors[i] = f"the answer does not match the response schema: {str(exc).splitlines()[0]}"
    frame = frame.copy()
    frame["error"] = _results.text_series(errors, index=frame.index)
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


def _check_required(value: Any, schema: dict[str, Any]) -> None:
    if str(schema.get("type", "")).lower() == "object" or "properties" in schema:
        if not isinstance(value, dict):
            raise ValueError(f"expected a JSON object, got {type(value).__name__}")
        missing = [k for k in schema.get("required", []) if k not in value]
        if missing:
            raise ValueError(f"missing required field(s) {', '.join(missing)}")


def _import_class(path: str) -> Any:
    module_name, _, qual = path.rpartition(".")
    module = sys.modules.get(module_name)
    if module is None:
        try:
            import importlib

            module = importlib.import_module(module_name)
        except ImportError:
            return None
    obj: Any = module
    for part in qual.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj if hasattr(obj, "model_validate_json") else None


# --------------------------------------------------------------------------- public functions
def _content_hash(prep: _Prepared, files: Sequence[Any]) -> str:
    h = hashlib.sha256()
    h.update(b"gembatch-v1\0" + prep.model.encode() + b"\0")
    h.update(orjson.dumps(prep.shared, option=orjson.OPT_SORT_KEYS) + b"\0")
    for f in files:
        h.update(f.sha256.encode() + b"\0")
    if len(prep.index):
        try:
            labels = pd.util.hash_pandas_object(prep.index).to_numpy().tobytes()
        except (TypeError, ValueError):  # exotic labels: fall back to their exact pickle
            labels = dump_index(prep.index)
        h.update(labels)
    h.update(prep.positions.tobytes())
    return h.hexdigest()[:32]


def _trim_heap() -> None:
    """Hand freed heap memory back to the OS (glibc keeps what a million freed prompt
    strings occupied, which otherwise stays in the process's RSS for good)."""
    pa.default_memory_pool().release_unused()  # Arrow's own pool keeps freed buffers too
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            import ctypes

            ctypes.CDLL("libc.so.6").malloc_trim(0)


def _check_cost(est: Estimate, max_cost: float | None, model: str) -> None:
    if max_cost is None:
        return
    if est.cost_usd is None:
        raise CostLimitError(
            f"max_cost={max_cost} was given but {model} has no known batch price, so "
            "the cost cannot be checked; add it to gemini_batch_magic._pricing.BATCH_PRICES "
            "or drop max_cost"
        )
    if est.cost_usd > max_cost:
        raise CostLimitError(
            f"estimated cost ${est.cost_usd:,.4f} exceeds max_cost=${max_cost:,.4f} "
            f"({est.requests:,} requests to {model}); nothing was submitted. Raise "
            "max_cost, use a cheaper model, or send fewer rows"
        )


def _submit_prepared(
    prep: _Prepared, *, parent: BatchRun | None, force: bool, max_cost: float | None,
    input_df: pd.DataFrame | None = None, background: bool | None = False,
) -> BatchRun:
    reg = registry()
    backend = _backend.backend_id()
    keys = _key_text(prep.positions)
    tmp = Path(reg.tmp_dir()) / secrets.token_hex(8)
    tmp.mkdir(mode=0o700)
    try:
        # one serialisation pass: the files written here are the ones uploaded (or inlined)
        try:
            files = _requests.write_request_files(
                tmp, prep.prompts, keys, prep.shared, max_file_bytes=settings.max_file_bytes,
                max_requests=settings.max_requests_per_shard,
            )
        except RequestTooLargeError as exc:
            found = re.search(r"key '(\d+)'", str(exc))
            if found is None:
                raise
            label = prep.index[int(found.group(1))]
            raise RequestTooLargeError(
                f"the request for row {label!r} is larger than the per-file limit of "
                f"{settings.max_file_bytes:,} bytes ({exc}); shorten that prompt or raise "
                "max_file_bytes"
            ) from None
        total = sum(f.n_bytes for f in files)
        mode = _mode(total, len(keys))
        if mode == "inline" and len(files) > 1:  # an inline batch is one job, one file
            for f in files:
                f.path.unlink()
            files = _requests.write_request_files(
                tmp, prep.prompts, keys, prep.shared,
                max_file_bytes=max(total, 1), max_requests=max(len(keys), 1),
            )
        est = _estimate_totals(prep, total, mode, len(files))
        _check_cost(est, max_cost, prep.model)
        content_hash = _content_hash(prep, files)
        with reg.transaction() as con:
            existing = None if force else reg.find_by_hash(content_hash, backend, con)
            if existing is None:
                run_id = secrets.token_hex(4)
                while reg.get(run_id, con=con) is not None:
                    run_id = secrets.token_hex(4)
                now = time.time()
                record = RunRecord(
                    run_id=run_id, created=now, updated=now, model=prep.model,
                    display_name=prep.display_name, backend=backend, content_hash=content_hash,
                    n_rows=prep.n_rows, n_requests=len(keys), source=mode,
                    state="SUBMITTING", parent_id=parent.run_id if parent else None,
                    est_cost=est.cost_usd, config=prep.config, owner=_OWNER, error=None,
                    positions_blob=prep.positions.tobytes(),
                    index_blob=None if parent else dump_index(prep.index),
                    shards=[
                        ShardRecord(run_id=run_id, shard=i, start=f.start, stop=f.stop,
                                    n_bytes=f.n_bytes, request_file=f.path.name,
                                    pending=f.stop - f.start)
                        for i, f in enumerate(files)
                    ],
                )
                folder = reg.home / "runs" / run_id
                folder.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                os.replace(tmp, folder)
                Registry.insert_run(con, record)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if len(prep.prompts) >= 10_000:  # written: free the strings before uploading (fig. 4)
        prep.prompts = []
        _trim_heap()
    if existing is not None:
        if isinstance(prep.schema, type):
            _schema_classes.setdefault(existing.run_id, prep.schema)
        run = _run_object(existing.run_id, input_df)
        run._reload()
        run.notice = (
            f"an identical run already exists: {existing.run_id} ({existing.state}); "
            "returning it instead of paying twice (pass force=True to submit anew)"
        )
        print(f"gemini_batch_magic: {run.notice}", file=sys.stderr)
        run._resume_if_orphaned()
        return run
    if isinstance(prep.schema, type):
        _schema_classes[run_id] = prep.schema
    run = _run_object(run_id, input_df)
    _fresh.add(run_id)
    if background is None:  # a notebook keeps its kernel free while files upload
        from ._env import in_notebook

        background = mode == "file" and in_notebook()
    try:
        run._start_submission(background)
    except GemBatchError:
        run._reload()
        raise
    run._reload()
    return run


def submit(
    df: pd.DataFrame,
    prompt: str | None = None,
    *,
    template: str | None = None,
    model: str | None = None,
    key: str | None = None,
    system_instruction: str | None = None,
    generation_config: Mapping[str, Any] | None = None,
    safety_settings: Sequence[Mapping[str, Any]] | None = None,
    response_schema: Any = None,
    max_cost: float | None = None,
    force: bool = False,
    name: str | None = None,
    on_empty: str = "raise",
    background: bool | None = None,
) -> BatchRun:
    """Send each row of ``df`` as one request of a batch run; returns at once.

    ``prompt`` names the column holding the prompts, or ``template`` formats columns
    (``"Translate {text} into {lang}."``). ``key`` names a unique column identifying rows
    (default: the index). Submitting the same rows, model and configuration again returns
    the existing run unless ``force=True``. ``max_cost`` (USD) refuses runs estimated above
    it. ``on_empty="skip"`` leaves empty prompts out instead of raising.

    Bad input raises before anything is written or sent. Uploading the request files of a
    large run happens in a background thread when ``background`` is true (default: in a
    notebook kernel, so the kernel stays free); :meth:`BatchRun.wait` raises any error it met.
    """
    prep = _prepare(
        df, prompt, template=template, model=model, key=key,
        system_instruction=system_instruction, generation_config=generation_config,
        safety_settings=safety_settings, response_schema=response_schema,
        on_empty=on_empty, display_name=name,
    )
    return _submit_prepared(prep, parent=None, force=force, max_cost=max_cost, input_df=df,
                            background=background)


def estimate(
    df: pd.DataFrame,
    prompt: str | None = None,
    *,
    template: str | None = None,
    model: str | None = None,
    key: str | None = None,
    system_instruction: str | None = None,
    generation_config: Mapping[str, Any] | None = None,
    safety_settings: Sequence[Mapping[str, Any]] | None = None,
    response_schema: Any = None,
    on_empty: str = "raise",
) -> Estimate:
    """What :func:`submit` would send and cost, with a preview of the first requests."""
    prep = _prepare(
        df, prompt, template=template, model=model, key=key,
        system_instruction=system_instruction, generation_config=generation_config,
        safety_settings=safety_settings, response_schema=response_schema,
        on_empty=on_empty, display_name=None,
    )
    return _estimate(prep)


def attach(ref: str) -> BatchRun:
    """A run from the registry, by run id (or a unique prefix) or by a ``batches/...`` name."""
    if not isinstance(ref, str) or not ref.strip():
        raise RunNotFoundError(f"expected a run id or a batch name, got {ref!r}")
    ref = ref.strip()
    reg = registry()
    if ref.startswith("batches/"):
        run_id = reg.find_by_batch(ref)
        if run_id is None:
            raise RunNotFoundError(
                f"no run in the registry ({settings.home}) owns {ref}; gbm.runs() lists the "
                "runs this machine knows"
            )
        return _run_object(run_id)
    matches = reg.find_prefix(ref)
    exact = [m for m in matches if m == ref]
    if exact:
        return _run_object(exact[0])
    if len(matches) == 1:
        return _run_object(matches[0])
    if matches:
        raise RunNotFoundError(
            f"{ref!r} matches several runs ({', '.join(matches[:5])}); give more characters"
        )
    recent = [r.run_id for r in reg.all_runs()[:5]]
    hint = f" Recent runs: {', '.join(recent)}." if recent else " The registry is empty."
    raise RunNotFoundError(f"no run {ref!r} in the registry at {settings.home}.{hint}")


_RUNS_COLUMNS = ["run_id", "created", "state", "model", "rows", "succeeded", "failed",
                 "pending", "shards", "source", "est_cost_usd", "name", "parent_id", "backend"]


def runs() -> pd.DataFrame:
    """Every run this machine knows (this registry), newest first."""
    rows = []
    for rec in registry().all_runs():
        ok = sum(s.succeeded for s in rec.shards)
        bad = sum(s.failed for s in rec.shards)
        rows.append({
            "run_id": rec.run_id,
            "created": pd.Timestamp(rec.created, unit="s", tz="UTC"),
            "state": rec.state,
            "model": rec.model,
            "rows": rec.n_requests,
            "succeeded": ok,
            "failed": bad,
            "pending": 0 if rec.state in TERMINAL else max(0, rec.n_requests - ok - bad),
            "shards": len(rec.shards),
            "source": rec.source,
            "est_cost_usd": rec.est_cost,
            "name": rec.display_name,
            "parent_id": rec.parent_id,
            "backend": rec.backend,
        })
    return pd.DataFrame(rows, columns=_RUNS_COLUMNS)


def live_runs() -> list[BatchRun]:
    """Runs that are not finished yet."""
    return [_run_object(r.run_id) for r in registry().all_runs() if r.state not in TERMINAL]
