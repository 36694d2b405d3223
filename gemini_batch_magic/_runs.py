"""The engine's public face: :class:`BatchRun` and the functions that make and find runs.

A *run* is one user action (``submit``): the rows of a DataFrame, each sent as one request
whose key is the row's position in the input (the original index values stay in the
registry, never on the wire). The data flows one way:

    DataFrame -> _plan (checked Plan, Estimate, request files)
              -> _registry (the run recorded before anything is sent; dedupe)
              -> _submission (each shard's batch created exactly once)
              -> _backend (the one seam to the service)
              -> _fetch (a finished shard's results stored and parsed)
              -> _answers (aligned by key, merged with retries, labelled like the input)
              -> DataFrame

Everything about a run is recorded in the registry before and after each step, so any
kernel can attach to it, follow it and fetch its results. Views (the progress widget, the
text meter) are reached through one lazy door, :mod:`gemini_batch_magic.widgets`, from
:meth:`BatchRun.wait` and a run's rich repr.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from . import (
    _backend,
    _embed,
    _files,
    _frames,
    _media,
    _plan,
    _requests,
    _schemas,
    _uploads,
    _vertex,
)
from ._answers import SKIPPED, RunAnswers, fill_from, label
from ._config import settings
from ._fetch import download_shard, release_memory
from ._plan import Estimate, Plan
from ._registry import (
    OWNER,
    STATE_RANK,
    TERMINAL,
    Registry,
    RunBook,
    RunRecord,
    ShardRecord,
    dump_index,
    is_live,
    load_index,
    open_registry,
)
from ._state import state
from ._submission import Submission
from .exceptions import BackendError, GemBatchError, InputError, RunNotDoneError, RunNotFoundError

__all__ = [
    "BatchRun",
    "Estimate",
    "RunStats",
    "attach",
    "embed",
    "estimate",
    "live_runs",
    "registry",
    "runs",
    "submit",
    "submit_file",
]


_log = logging.getLogger(__name__)
#: End states whose batch has answers to download.
_WITH_RESULTS = ("SUCCEEDED", "PARTIALLY_SUCCEEDED")


class RunStats(NamedTuple):
    """Request counts of a run (all shards together)."""

    total: int
    succeeded: int
    failed: int
    pending: int


def registry() -> Registry:
    """The registry under the current ``settings.home``."""
    return open_registry(settings.home)


def _run_object(run_id: str, given: _frames.Input | None = None) -> BatchRun:
    """The one object of this process for ``run_id`` (one lock per run); ``given``: the
    input this process just gave for it (``result()``'s default kind, ``join=True``)."""
    key = (settings.home, run_id)  # a registry of its own under another home
    with state.lock:
        obj = state.runs.get(key)
        if obj is None:
            obj = BatchRun(run_id)
            state.runs[key] = obj
    if given is not None:
        obj._given = given.released()
    return obj  # type: ignore[no-any-return]


class BatchRun(_embed.EmbeddingViews, _uploads.UploadViews, _files.FileResults):
    """A run: one user action, however many batch jobs (shards) it took.

    Get one from :func:`submit`, ``df.gembatch.submit(...)``, :func:`attach` or the magics
    (the constructor is private: :func:`attach` keeps one object per run). The object reads
    its state from the registry; :meth:`refresh` asks the service.
    """

    def __init__(self, run_id: str) -> None:
        self._book = RunBook(registry(), run_id)
        self.run_id = run_id
        self._answers = RunAnswers(self._book)
        self._submission = Submission(self._book)
        self._given: _frames.Input | None = None  #: the input, as this process gave it
        self._result_cache: tuple[Any, pd.DataFrame] | None = None
        self._index_cache: pd.Index | None = None
        self.notice: str | None = None  #: e.g. "identical run already exists"

    # -- facts ------------------------------------------------------------------------------
    @property
    def record(self) -> RunRecord:
        return self._book.record

    @property
    def model(self) -> str:
        return self.record.model

    @property
    def display_name(self) -> str:
        return self.record.display_name

    @property
    def created(self) -> pd.Timestamp:
        return pd.Timestamp(self.record.created, unit="s", tz="UTC")

    @property
    def elapsed(self) -> float:
        """Seconds since the run was created (until it ended, once done)."""
        end = self.record.updated if self.done else time.time()
        return max(0.0, end - self.record.created)

    @property
    def parent_id(self) -> str | None:
        return self.record.parent_id

    @property
    def n_rows(self) -> int:
        return int(self.record.n_requests)

    @property
    def shards(self) -> list[ShardRecord]:
        return list(self.record.shards)

    @property
    def batch_names(self) -> list[str]:
        return [s.batch_name for s in self.record.shards if s.batch_name]

    @property
    def live_batch_names(self) -> set[str]:
        """Batch names of the shards the service is still working on."""
        return {s.batch_name for s in self.record.shards
                if s.batch_name is not None and is_live(s.state)}

    @property
    def state(self) -> str:
        """SUBMITTING, PENDING, RUNNING, SUCCEEDED, FAILED, CANCELLED or EXPIRED (or a state
        the service added that this version does not know, shown by its name)."""
        return self.record.state

    @property
    def done(self) -> bool:
        return self.record.state in TERMINAL

    @property
    def error(self) -> str | None:
        return self.record.error

    @property
    def stats(self) -> RunStats:
        total = self.record.n_requests
        ok = sum(s.succeeded for s in self.record.shards)
        bad = sum(s.failed for s in self.record.shards)
        pending = max(0, total - ok - bad) if not self.done else 0
        return RunStats(total, ok, bad, pending)

    @property
    def estimated_cost(self) -> float | None:
        return self.record.est_cost

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

        return run_mimebundle(self, include, exclude)  # type: ignore[no-any-return]

    def widget(self) -> Any:
        """A live progress widget of this run (an anywidget ``ProgressWidget``), for a cell's
        last line in any front end, marimo included: ``run.widget()``."""
        from .widgets import progress_widget  # the one door to the views

        return progress_widget(self)

    # -- following it ----------------------------------------------------------------------
    def watch(self, callback: Callable[[BatchRun, BaseException | None], Any] | None = None
              ) -> None:
        """Have the background monitor poll this run until it is done, calling
        ``callback(run, error)`` after each poll (how views stay live)."""
        from ._monitor import monitor

        monitor.watch(self, callback)

    def unwatch(self, callback: Callable[[BatchRun, BaseException | None], Any] | None = None
                ) -> None:
        """Stop calling ``callback`` (all callbacks, and polling, if None)."""
        from ._monitor import monitor

        monitor.unwatch(self, callback)

    def refresh(self, known: Mapping[str, _backend.BatchStatus] | None = None) -> BatchRun:
        """Ask the service about every live shard once; download results of finished ones.

        ``known`` maps batch names to statuses just listed (:func:`_backend.list_batches`);
        a shard listed as still live needs no call of its own. A finished one is always
        fetched anew, so its output is read from the batch itself.
        """
        book = self._book
        with book.lock:
            book.reload()
            if self.done and all(s.results_file or s.state not in _WITH_RESULTS
                                 for s in self.shards):
                return self
            _backend.check_key(self.record.key_fp, self.run_id)
            if known is None:  # many live shards: one listing instead of a get each
                live = {s.batch_name for s in book.record.shards
                        if s.batch_name is not None and is_live(s.state)}
                if len(live) > 2:
                    known = _backend.list_batches(live)
            changed = False
            for shard in book.record.shards:
                if shard.batch_name is None:
                    continue
                if shard.state in TERMINAL and (shard.results_file or shard.error):
                    continue
                status = known.get(shard.batch_name) if known else None
                if status is None or not is_live(status.state):
                    try:
                        status = _backend.get_batch(shard.batch_name)
                    except BackendError as exc:
                        if exc.retryable:
                            continue  # transient: the next poll tries again
                        raise
                values = self._shard_values(shard, status)
                if any(getattr(shard, k) != v for k, v in values.items()):
                    book.set_shard(shard, **values)  # a quiet poll writes nothing
                    changed = True
            book.aggregate(reload=changed)  # unchanged: the record was just reloaded
        return self

    def _shard_values(self, shard: ShardRecord, status: _backend.BatchStatus) -> dict[str, Any]:
        """The shard fields ``status`` implies (downloading the results of a finished one)."""
        values: dict[str, Any] = {"state": status.state}
        if status.state not in STATE_RANK and (self.run_id, status.state) not in state.told:
            state.told.add((self.run_id, status.state))  # said once per run and state
            _log.warning("batch %s of run %s is in state %s, which this version does not "
                         "know; it is polled (with backoff) until it ends", shard.batch_name,
                         self.run_id, status.state)
        if status.counts:
            values.update(succeeded=status.counts["succeeded"], failed=status.counts["failed"],
                          pending=status.counts["pending"])
        if status.state in TERMINAL:
            fetched = download_shard(self._book.run_dir(), shard, status.job)
            done = dataclasses.replace(shard, results_file=fetched.results_file,
                                       state=status.state, results_lost=fetched.lost)
            # a file run's shards are read one at a time (write_results), never all kept
            aligned = self._answers.shard(done, parsed=fetched.parsed,
                                          keep=self.record.config.get("input") != "files")
            failed = int(aligned["error"].notna().sum())
            values.update(results_file=fetched.results_file, succeeded=len(aligned) - failed,
                          failed=failed, pending=0, results_lost=fetched.lost)
            if status.state != "SUCCEEDED":
                why = f": {status.error}" if status.error else ""
                values["error"] = f"batch {shard.batch_name} ended {status.state}{why}"
            elif fetched.lost:
                values["error"] = f"batch {shard.batch_name}: {fetched.lost}"
            if shard.upload_name and not self.record.config.get("keep_inputs"):
                _backend.delete_file(shard.upload_name)  # the user's 20 GB of File API storage
        return values

    def wait(
        self, timeout: float | None = None, *, poll_interval: float | None = None,
        progress: Any = True,
    ) -> BatchRun:
        """Block until every shard is done, showing progress.

        ``progress``: True shows the widget in a notebook and a text line elsewhere, False
        nothing; any object with ``update()`` and ``close()`` is used as the display.
        ``timeout`` (seconds, None = no limit) raises :class:`WaitTimeout` when it runs out;
        the run itself goes on and can be waited for again.
        """
        from .exceptions import WaitTimeout

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
                self._submission.join(delay)
                self._submission.resume_if_orphaned()
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
                        f"call wait() again later, or attach({self.run_id!r}) from any kernel",
                        run_id=self.run_id,
                    )
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                time.sleep(delay if left is None else min(delay, left))
                delay = min(delay * 1.5, poll_interval or settings.max_poll_interval)
        finally:
            if display is not None:
                display.close()

    def run_to_completion(self, timeout: float | None = None, *, progress: Any = True
                          ) -> pd.DataFrame:
        """:meth:`wait`, then :meth:`result`: what ``--wait`` and ``df.gembatch.run`` do."""
        return self.wait(timeout=timeout, progress=progress).result()

    # -- results ----------------------------------------------------------------------------
    def _merged(self) -> pd.DataFrame:
        """Own answers, with failed rows filled from retry runs (recursively)."""
        own = self._answers.own()
        for child in self.children():
            fill_from(own, child._merged())
        return own

    def _root(self) -> BatchRun:
        run: BatchRun = self
        while run.parent_id:
            run = _run_object(run.parent_id)
        return run

    def _descendants(self) -> list[BatchRun]:
        out = []
        for child in self.children():
            out.append(child)
            out.extend(child._descendants())
        return out

    def result(self, join: Any = False, *, partial: bool = False, format: str | None = None
               ) -> Any:
        """The answers, one row per input row, in the input's order.

        Columns: ``response``, ``error`` (missing on success), ``finish_reason``,
        ``input_tokens``, ``output_tokens``; with a ``response_schema`` also ``parsed`` and,
        for flat schemas, one column per field. Rows whose answer failed or is missing carry
        the reason in ``error``. Rows answered by :meth:`retry_failed` runs are merged in.

        ``format``: ``"pandas"`` (a DataFrame with exactly the input's index), ``"polars"``
        or ``"arrow"`` (the key, if any, as the first column; see :mod:`._frames`); None: the
        kind of the input (recorded with the run, so the same in any kernel).
        ``join=True`` puts the input columns first (needs the input: the one this process
        submitted, or pass it as ``join=df``). ``partial=True`` returns what has arrived so
        far instead of raising while the run is still live.
        """
        fmt = _frames.check_format(format)
        self._book.reload()
        if not self.done:
            self.refresh()
        if not self.done and not partial:
            st = self.stats
            raise RunNotDoneError(
                f"run {self.run_id} is still {self.state} ({st.succeeded + st.failed}/"
                f"{st.total} answered): call run.wait() first, or result(partial=True)",
                run_id=self.run_id,
            )
        signature = (self.state, tuple((c.run_id, c.state) for c in self._descendants()))
        cached = self._result_cache if self.done else None
        if cached is not None and cached[0] == signature:
            out = cached[1]
        else:
            out = self._build_result()
            if self.done:
                self._result_cache = (signature, out)
        fmt = fmt or (self._given.kind if self._given is not None
                      else self.record.config.get("input_kind", "pandas"))
        if join is False:  # polars and Arrow are new objects: the cache is never handed out
            return (out.copy() if fmt == "pandas"
                    else _frames.convert(out, fmt, _frames.index_key(self.record.config)))
        source = _join_source(self, join, out)
        if fmt != "pandas":
            return _frames.join(out, source, fmt)
        clash = [c for c in out.columns if c in source.frame.columns]
        return pd.concat([source.frame,
                          out.rename(columns={c: f"{c}_result" for c in clash})], axis=1)

    def _index(self) -> pd.Index:
        """The original row labels of the root input (kept in the registry)."""
        if self._index_cache is None and self._root().record.config.get("key_files"):
            self._index_cache = _files.read_keys(self._root()._book)  # a file run's keys
        if self._index_cache is None:
            index_blob = registry().index_blob(self._root().run_id)
            self._index_cache = (load_index(index_blob) if index_blob
                                 else pd.RangeIndex(self.record.n_rows))
        return self._index_cache

    def _build_result(self) -> pd.DataFrame:
        keep = self._answers.positions() if self.parent_id else None
        absent = (f"not answered in {self.record.config['batch']} (another shard's row, or "
                  "not answered yet)" if self.record.config.get("adopted") else SKIPPED)
        frame = label(self._merged(), self._index(), keep, absent)
        if "embedding" in frame:  # an embedding run: one vector per row
            return _embed.finish(frame, self.record.config.get("output_dimensionality"))
        schema = self.record.config.get("response_schema")
        if schema:
            cls = state.schema_classes.get(self._root().run_id)
            if cls is None and self.record.config.get("schema_class"):
                cls = _schemas.import_model_class(self.record.config["schema_class"])
            frame = _schemas.add_parsed(frame, schema, cls)
        return frame

    # -- actions ----------------------------------------------------------------------------
    def cancel(self) -> BatchRun:
        """Cancel every live shard; answers already given are kept."""
        book = self._book
        with book.lock:
            book.reload()
            _backend.check_key(self.record.key_fp, self.run_id)
            for shard in book.record.shards:
                if not is_live(shard.state):
                    continue
                if shard.batch_name is None:
                    book.set_shard(shard, state="CANCELLED", error="cancelled before submission")
                else:
                    _backend.cancel_batch(shard.batch_name)
            book.aggregate()
        return self.refresh()

    def retry_failed(self, **overrides: Any) -> BatchRun | None:
        """Submit the rows whose answer failed or is missing again, as a child run.

        The parent's :meth:`result` then shows the merged answers. Returns None (and says
        so) when no row needs a retry. ``overrides`` may change ``model`` or ``name``.
        """
        unknown = sorted(set(overrides) - {"model", "name"})
        if unknown:
            raise InputError(f"retry_failed() takes model= and name=, not {', '.join(unknown)}")
        self._book.reload()
        if not self.done:
            raise RunNotDoneError(
                f"run {self.run_id} is still {self.state}: wait for it (run.wait()) before "
                "retrying its failed rows", run_id=self.run_id,
            )
        merged = self._merged()
        failed = merged.index[merged["error"].notna()].to_numpy(dtype=np.int64)
        if not len(failed):
            from .widgets import notice  # the one door to the views: a notice, not an error

            notice(__name__, f"run {self.run_id}: no failed rows to retry")
            return None
        wanted = _plan.wire_keys(failed)
        prompts, lines = _sent_requests(self, [self, *self._descendants()], wanted)
        plan = _plan.retry_plan(
            self.record.config, model=overrides.get("model") or self.model,
            prompts=prompts, positions=failed, lines=lines,
            index=self._root()._index(), n_rows=self.record.n_rows,
            display_name=overrides.get("name") or f"{self.display_name}-retry",
        )
        return _submit_plan(plan, parent=self, force=True, max_cost=None)


def _join_source(run: BatchRun, join: Any, out: pd.DataFrame) -> _frames.Input:
    """The input ``result(join=...)`` puts first: the frame given, or (``join=True``) the
    one this process submitted; checked to have the run's rows."""
    given = run._root()._given
    if _frames.input_kind(join) is not None:
        source = _frames.take(join, _frames.index_key(run.record.config))
    elif given is not None:
        source = _frames.again(given, _frames.index_key(run.record.config))
    else:
        raise InputError(
            "join=True needs the input DataFrame, which this kernel does not have (the run "
            "was submitted elsewhere): pass it as run.result(join=df)"
        )
    frame = source.frame
    if len(frame) != len(out) or not frame.index.equals(out.index):
        raise InputError(
            "the DataFrame given to join= does not have the run's index "
            f"({len(frame)} rows vs {len(out)}): pass the DataFrame that was submitted"
        )
    return source


def _sent_requests(run: BatchRun, family: list[BatchRun], wanted: list[str]
                   ) -> tuple[list[str], Any]:
    """The prompts sent for these wire keys, read back from the request files of ``run``
    and its retries; and, for runs of more than text prompts (media, embeddings), the
    requests themselves as :class:`~._media.RawLines` (None for text runs)."""
    config = run.record.config
    rich = bool(config.get("media")) or config.get("kind") == "embed"
    found: dict[str, Any] = {}
    manifests = []
    for r in family:
        folder = registry().run_dir(r.run_id)
        manifests.append(folder / _media.MANIFEST)
        paths = [folder / s.request_file for s in r.shards if (folder / s.request_file).exists()]
        left = set(wanted) - set(found)
        found.update(_media.read_requests(paths, left) if rich
                     else _requests.read_request_prompts(paths, left))
    missing = set(wanted) - set(found)
    if missing:
        raise GemBatchError(
            f"cannot retry run {run.run_id}: the request files of {len(missing)} rows are "
            f"gone from {registry().run_dir(run.run_id)}", run_id=run.run_id,
        )
    if not rich:
        return [found[k] for k in wanted], None
    embed = config.get("kind") == "embed"
    lines = _media.RawLines(
        [found[k] for k in wanted], manifests=manifests, inline_ok=not embed,
        texts=(lambda r: str(r["content"]["parts"][0]["text"])) if embed
        else (lambda r: str(r["contents"][0]["parts"][0].get("text", ""))),
        output_tokens=0 if embed else None)
    return [lines.texts(r) for r in lines.requests], lines


# --------------------------------------------------------------------------- making runs
def _new_record(plan: Plan, written: _plan.WrittenPlan, backend: str,
                parent: BatchRun | None, run_id: str) -> RunRecord:
    """The registry record of a new run of ``plan``, before anything is sent."""
    now = time.time()
    return RunRecord(
        run_id=run_id, created=now, updated=now, model=plan.model,
        display_name=plan.display_name, backend=backend,
        content_hash=written.content_hash, n_rows=plan.n_rows,
        n_requests=len(plan.positions), source=written.mode, state="SUBMITTING",
        parent_id=parent.run_id if parent else None,
        est_cost=written.estimate.cost_usd, config=plan.config, owner=OWNER,
        error=None, positions_blob=plan.positions.tobytes(), key_fp=_backend.key_fingerprint(),
        index_blob=None if parent else dump_index(plan.index),
        shards=[
            ShardRecord(run_id=run_id, shard=i, start=f.start, stop=f.stop,
                        n_bytes=f.n_bytes, request_file=f.path.name,
                        pending=f.stop - f.start)
            for i, f in enumerate(written.files)
        ],
    )


def _submit_plan(
    plan: Plan, *, parent: BatchRun | None, force: bool, max_cost: float | None,
    given: _frames.Input | None = None, background: bool | None = False,
    confirm: bool = True,
) -> BatchRun:
    """Write, record (or find the identical run) and submit a plan (``given``: the input it
    was made from, as the user gave it)."""
    reg = registry()
    backend = _backend.backend_id()
    tmp = Path(reg.tmp_dir()) / os.urandom(8).hex()
    tmp.mkdir(mode=0o700)
    try:
        # one serialisation pass: the files written here are the ones uploaded (or inlined)
        written = _plan.write(plan, tmp)
        make = functools.partial(_new_record, plan, written, backend, parent)
        record, created = _record(reg, tmp, written.estimate, written.content_hash, make,
                                  model=plan.model, backend=backend, force=force,
                                  max_cost=max_cost, confirm=confirm)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    n_sent, mode, schema = len(plan.positions), written.mode, plan.schema
    uploads = bool(written.estimate.media.get("upload_files"))
    del plan, make, written  # on disk now: the prompt strings can go before uploading
    if n_sent >= 10_000:
        release_memory()  # ~1 GB of prompt strings at 1M rows
    return _started(record, created, schema=schema, mode=mode, uploads=uploads,
                    given=given, background=background)


def _record(reg: Registry, tmp: Path, est: Estimate, content_hash: str,
            make: Callable[[str], RunRecord], *, model: str, backend: str, force: bool,
            max_cost: float | None, confirm: bool) -> tuple[RunRecord, bool]:
    """The last checks of written request files (cost, confirmation, model), then the run
    recorded with the files of ``tmp`` (or the identical run found): ``(record, created)``."""
    _plan.check_cost(est, max_cost)
    again = not force and reg.find_run(content_hash, backend) is not None
    _plan.check_confirmed(est, confirm or again)  # an identical run: no cost
    if _backend.is_vertex():
        _vertex.check_staging()  # no staging prefix: refused before anything is sent
    _backend.check_model(model)  # misspelt: refused before anything is sent
    return reg.insert_or_find(make, content_hash, backend, folder=tmp, force=force)


def _started(record: RunRecord, created: bool, *, schema: Any, mode: str, uploads: bool,
             given: _frames.Input | None, background: bool | None) -> BatchRun:
    """The run object of a just recorded run, its batches being created (or, for an
    identical run found, that run with a notice)."""
    if isinstance(schema, type):
        state.schema_classes.setdefault(record.run_id, schema)
    run = _run_object(record.run_id, given)
    run._book.reload()
    if not created:
        run.notice = (
            f"an identical run already exists: {record.run_id} ({record.state}); "
            "returning it instead of paying twice (pass force=True to submit anew)"
        )
        from .widgets import notice  # the one door to the views: a notice, not an error

        notice(__name__, run.notice)
        run._submission.resume_if_orphaned()
        return run
    state.fresh.add(record.run_id)
    if background is None:  # a notebook keeps its kernel free while files upload
        from ._env import in_notebook

        background = (mode == "file" or uploads) and in_notebook()
    try:
        run._submission.start(background)
    finally:
        run._book.reload()
    return run


def submit(
    df: Any,
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
    keep_inputs: bool = False,
    confirm: bool = False,
    media: str | Sequence[str] | None = None,
    mime_type: str | Mapping[str, str] | None = None,
) -> BatchRun:
    """Send each row of ``df`` as one request of a batch run; returns at once.

    ``df`` is a pandas or polars DataFrame, a polars LazyFrame (collected with the streaming
    engine) or a pyarrow Table; :meth:`BatchRun.result` gives back the same kind (polars
    and Arrow inputs are keyed by row position, or by ``key``: see :mod:`._frames`).
    ``prompt`` names the column holding the prompts, or ``template`` formats columns
    (``"Translate {text} into {lang}."``). ``key`` names a unique column identifying rows
    (default: the index). Submitting the same rows, model and configuration again returns
    the existing run unless ``force=True``. ``max_cost`` (USD) refuses runs estimated above
    it. ``on_empty="skip"`` leaves empty prompts out instead of raising. The request files
    uploaded for a run are deleted from the File API once their batch has ended (they count
    against the project's 20 GB); ``keep_inputs=True`` keeps them. A run estimated above
    ``settings.confirm_above`` (USD) raises :class:`ConfirmationRequired` unless
    ``confirm=True``.

    Bad input raises before anything is written or sent. Uploading the request files of a
    large run happens in a background thread when ``background`` is true (default: in a
    notebook kernel, so the kernel stays free); :meth:`BatchRun.wait` raises any error it met.

    ``media`` names the columns holding files to send after each row's text (a path,
    bytes, an ``https://`` or ``gs://`` URI or a ``files/...`` name per cell; None for
    none), in that order; ``mime_type`` (a type, or ``{column: type}``) overrides the type
    read from each file's content. See :mod:`gemini_batch_magic._media`.
    """
    given = _frames.take(df, key)  # polars and Arrow: a pandas frame over Arrow buffers
    # the plan is handed on, not kept here: once written, its prompts can be freed (and so
    # can the text a polars input was cast to: `given` is rebound to what the run keeps)
    return _submit_plan(
        _recorded_kind(_plan.prepare(
            given.frame, prompt, template=template, model=model, key=key,
            system_instruction=system_instruction, generation_config=generation_config,
            safety_settings=safety_settings, response_schema=response_schema,
            on_empty=on_empty, display_name=name, keep_inputs=keep_inputs,
            media=media, mime_type=mime_type,
        ), given),
        parent=None, force=force, max_cost=max_cost, given=(given := given.released()),
        background=background, confirm=confirm,
    )


def _recorded_kind(plan: Plan, given: _frames.Input) -> Plan:
    """``plan`` with the kind of its input in the config the registry keeps, so that
    ``result()`` gives that kind back in any kernel (a retry keeps its parent's config)."""
    plan.config["input_kind"] = given.kind
    return plan


def submit_file(
    path_or_glob: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    prompt: str | None = None,
    *,
    template: str | None = None,
    key: str | None = None,
    model: str | None = None,
    system_instruction: str | None = None,
    generation_config: Mapping[str, Any] | None = None,
    safety_settings: Sequence[Mapping[str, Any]] | None = None,
    response_schema: Any = None,
    max_cost: float | None = None,
    force: bool = False,
    name: str | None = None,
    on_empty: str = "raise",
    background: bool | None = None,
    keep_inputs: bool = False,
    confirm: bool = False,
    batch_rows: int = _files.BATCH_ROWS,
) -> BatchRun:
    """Send every row of a file (or files) bigger than memory as one batch run; returns at
    once. See :mod:`gemini_batch_magic._files`.

    ``path_or_glob``: a parquet, CSV or JSON lines file, a glob (``"tickets/*.parquet"``,
    sorted), a directory (its files of those formats, sorted) or a list of paths (in
    order). ``prompt`` names the column of prompts, or ``template`` formats columns; ``key``
    names a column of unique, non-missing values labelling the rows of the results (None:
    rows are numbered from 0 across the files). The files are read ``batch_rows`` rows at a
    time (default 16,384), never all at once. Every other keyword is :func:`submit`'s. Bad
    input raises naming the file and the row before anything is sent or recorded; the same
    files submitted again return the existing run (``force=True`` submits anew).
    ``run.write_results(path)`` writes the answers out one shard at a time;
    ``run.result()`` loads them all into a DataFrame indexed by key.
    """
    reg = registry()
    backend = _backend.backend_id()
    tmp = Path(reg.tmp_dir()) / os.urandom(8).hex()
    tmp.mkdir(mode=0o700)
    try:
        written = _files.write(
            path_or_glob, prompt, template=template, key=key, model=model,
            system_instruction=system_instruction, generation_config=generation_config,
            safety_settings=safety_settings, response_schema=response_schema,
            on_empty=on_empty, display_name=name, keep_inputs=keep_inputs,
            batch_rows=batch_rows, folder=tmp, backend=backend,
        )
        record, created = _record(reg, tmp, written.estimate, written.content_hash,
                                  written.make, model=written.model, backend=backend,
                                  force=force, max_cost=max_cost, confirm=confirm)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    mode = written.mode
    del written  # the run's positions and the pass's buffers
    release_memory()
    return _started(record, created, schema=response_schema, mode=mode, uploads=False,
                    given=None, background=background)


def estimate(
    df: Any,
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
    media: str | Sequence[str] | None = None,
    mime_type: str | Mapping[str, str] | None = None,
) -> Estimate:
    """What :func:`submit` would send and cost, with a preview of the first requests."""
    return _plan.estimate(_plan.prepare(
        _frames.take(df, key).frame, prompt, template=template, model=model, key=key,
        system_instruction=system_instruction, generation_config=generation_config,
        safety_settings=safety_settings, response_schema=response_schema,
        on_empty=on_empty, display_name=None, media=media, mime_type=mime_type,
    ))


def embed(
    df: Any,
    column: str,
    *,
    model: str | None = None,
    output_dimensionality: int | None = None,
    task_type: str | None = None,
    title: str | None = None,
    key: str | None = None,
    max_cost: float | None = None,
    force: bool = False,
    name: str | None = None,
    on_empty: str = "raise",
    background: bool | None = None,
    keep_inputs: bool = False,
    confirm: bool = False,
    dry_run: bool = False,
) -> Any:
    """Embed the text of ``column``, one request per row; returns a :class:`BatchRun` at once.

    ``model`` defaults to ``gemini-embedding-001``; ``output_dimensionality`` (e.g. 768),
    ``task_type`` (e.g. ``"RETRIEVAL_DOCUMENT"``) and ``title`` (a column of document
    titles, with that task type) are passed to the service. Always a keyed JSONL file batch
    (inline embedding batches carry no per-row key). ``run.result()`` has an ``embedding``
    column (fixed-size list of float32, NA where the row failed, the reason in ``error``)
    and ``run.vectors()`` the float32 matrix in input order. ``dry_run=True`` returns the
    :class:`Estimate` (embedding batch price) and sends nothing. The other keywords are
    :func:`submit`'s.
    """
    given = _frames.take(df, key)
    plan = _recorded_kind(_embed.prepare(
        given.frame, column, model=model, key=key, task_type=task_type, title=title,
        output_dimensionality=output_dimensionality, on_empty=on_empty, display_name=name,
        keep_inputs=keep_inputs), given)
    given = given.released()
    if dry_run:
        return _plan.estimate(plan)
    return _submit_plan(plan, parent=None, force=force, max_cost=max_cost, given=given,
                        background=background, confirm=confirm)


def attach(ref: str, df: Any = None) -> BatchRun:
    """A run, by run id (or a unique prefix) or by a ``batches/...`` name.

    From the registry when this machine knows it. A ``batches/...`` name the registry does
    not know (a fresh Colab runtime, a new laptop) is rebuilt from the service alone: with
    ``df=`` the DataFrame that was submitted (its row count and index are checked against
    what the batch's display name carries) the answers are aligned to it by key as usual;
    without, they come back keyed by row position. ``df=`` with a known run checks it the
    same way and lets ``result(join=True)`` use it; ``result()`` then defaults to its kind
    (a pandas or polars DataFrame, or a pyarrow Table).
    """
    if not isinstance(ref, str) or not ref.strip():
        raise RunNotFoundError(f"expected a run id or a batch name, got {ref!r}")
    if df is not None and _frames.input_kind(df) is None:
        raise InputError(f"df= must be the DataFrame that was submitted (pandas or polars, or "
                         f"a pyarrow Table), got {type(df).__name__}")
    given = _frames.take(df) if df is not None else None
    run = _find(ref.strip(), given)
    if run.record.source == "table":  # a table run (submit_table) is its own kind
        from ._tables import TableRun

        return TableRun(run.run_id)  # type: ignore[return-value]
    if given is not None and not run.record.config.get("adopted"):
        key = _frames.index_key(run.record.config)
        if key is not None:  # the run's rows are labelled by its key column
            given = _frames.take(given.native, key)
        _check_frame(run.record.n_rows, run.record.config.get("rows_hash"), given.frame,
                     run.run_id)
        run._given = given.released()
    return run


def _check_frame(n_rows: int | None, rows_hash: str | None, df: pd.DataFrame,
                 what: str) -> None:
    """Refuse a DataFrame that is not the one a run was made from (row count, index)."""
    if n_rows is not None and len(df) != n_rows:
        raise InputError(
            f"{what} was made from {n_rows:,} rows but the DataFrame given has {len(df):,}: "
            "pass the DataFrame that was submitted (same rows, same index)",
            rows=None, size=len(df), limit=n_rows,
        )
    if rows_hash and _plan.rows_hash(df.index) != rows_hash:
        raise InputError(
            f"the DataFrame given does not have the index {what} was made from (index hash "
            f"{_plan.rows_hash(df.index)} vs {rows_hash}): pass the DataFrame that was "
            "submitted, with its original index (or its key column as the index)"
        )


def _find(ref: str, given: _frames.Input | None) -> BatchRun:
    reg = registry()
    if ref.startswith(("batches/", "projects/")):
        run_id = reg.find_by_batch(ref)
        return _run_object(run_id) if run_id is not None else _adopt([ref], given)
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
    if _backend.is_vertex() and re.fullmatch(r"[0-9a-f]{8}", ref):
        labelled = _backend.find_run_batches(ref)  # another machine's run, by its label
        if labelled:
            return _adopt([s.name for s in labelled], given, known=labelled)
    recent = [r.run_id for r in reg.all_runs()[:5]]
    hint = f" Recent runs: {', '.join(recent)}." if recent else " The registry is empty."
    raise RunNotFoundError(f"no run {ref!r} in the registry at {settings.home}.{hint}",
                           run_id=ref)


_DISPLAY = re.compile(
    r"^(?P<base>.*)-(?P<run>[0-9a-f]{8})-s(?P<shard>\d+)(?:-n(?P<n>\d+)-h(?P<h>[0-9a-f]{8}))?$")


def _adopt(batch_names: list[str], given: _frames.Input | None = None,
           known: list[_backend.BatchStatus] | None = None) -> BatchRun:
    """A run rebuilt from the service alone: the batches ``batch_names`` (the shards of one
    run, in shard order) recorded anew."""
    df = given.frame if given is not None else None
    statuses = list(known or [])
    for batch_name in batch_names[len(statuses):]:
        try:
            statuses.append(_backend.get_batch(batch_name))
        except BackendError as exc:
            if exc.code in (403, 404):
                raise RunNotFoundError(
                    f"no run in the registry ({settings.home}) owns {batch_name}, and the "
                    f"service does not show it to these credentials ({exc.code} {exc.status}); "
                    "check the name, or use the key or project it was created with",
                    batch_name=batch_name,
                ) from exc
            raise
    status, batch_name = statuses[0], batch_names[0]
    job = status.job
    found = _DISPLAY.match(str(getattr(job, "display_name", "") or ""))
    n_rows = int(found["n"]) if found and found["n"] else None
    if df is not None:
        _check_frame(n_rows, found["h"] if found else None, df, batch_name)
        n_rows = len(df)
    totals = [(s.counts or {}).get("total") or 0 for s in statuses]
    total = sum(totals) or n_rows or 0
    if len(statuses) == 1:
        totals = [total]
    n_rows = n_rows or total
    run_id = found["run"] if found and registry().get(found["run"]) is None else None
    now = time.time()
    record = RunRecord(
        run_id=run_id or os.urandom(4).hex(), created=now, updated=now,
        model=str(getattr(job, "model", "") or settings.model).rsplit("/", 1)[-1],
        display_name=found["base"] if found else str(getattr(job, "display_name", "") or
                                                      "attached"),
        backend=_backend.backend_id(), content_hash=f"attached:{batch_name}",
        n_rows=n_rows, n_requests=total, source="file", state=status.state,
        parent_id=None, est_cost=None,
        config={"adopted": True, "batch": batch_name,
                "input_kind": given.kind if given is not None else "pandas"},
        owner=None, error=None, key_fp=_backend.key_fingerprint(),
        index_blob=dump_index(df.index) if df is not None else None,
        shards=[ShardRecord(run_id="", shard=i, start=sum(totals[:i]),
                            stop=sum(totals[:i + 1]), n_bytes=0, request_file="",
                            batch_name=s.name, state=s.state, pending=totals[i])
                for i, s in enumerate(statuses)],
    )
    for shard in record.shards:
        shard.run_id = record.run_id
    with registry().transaction() as con:
        Registry.insert_run(con, record)
    run = _run_object(record.run_id, given)
    run.notice = (f"rebuilt from the service alone ({batch_name}): answers are aligned "
                  + ("to the DataFrame given, by key" if df is not None
                     else "by row position (pass df= to align them to your DataFrame)"))
    return run.refresh()


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
    """Runs that are not finished yet (a table run as its TableRun)."""
    from ._tables import TableRun

    live: list[Any] = [TableRun(r.run_id) if r.source == "table" else _run_object(r.run_id)
                       for r in registry().all_runs() if r.state not in TERMINAL]
    return live  # a TableRun has the same verbs
