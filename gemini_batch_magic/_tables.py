"""Tables in, tables out: :func:`submit_table` and :class:`TableRun` (Vertex AI only).

``submit_table("bq://proj.ds.raw", template="Summarise: {text}", key="id",
dest="bq://proj.ds.summaries")`` builds every request inside BigQuery (one
``CREATE TABLE ... AS SELECT`` makes a staging table ``<dest>_gembatch_requests`` with the
``request`` JSON column and the key column), and a Vertex AI batch prediction job reads that
table and writes ``dest`` (the input's columns, ``request``, ``response``, ``status``,
``processed_time``). Nothing of the rows passes through the kernel, except what
:meth:`TableRun.result` (``limit=``) or :meth:`TableRun.to_dataframe` read back on request.
The source may also be a SQL query (``"SELECT ... FROM ..."``), or Cloud Storage JSONL
(``"gs://bucket/in/*.jsonl"``) with a ``gs://`` destination prefix: without a template its
lines must already be Vertex AI's ``{"request": ...}``; with one, each line is a JSON
object whose fields the template formats (streamed into staging, see
:mod:`._table_sources`).

Estimates come from the row count and a sample of 100 built requests; ``max_cost`` and
``confirm_above`` apply before the job is created. The run is recorded in the registry
(``gbm.runs()`` lists it, ``gbm.attach(run_id)`` gives it back, the same source, template
and destination again returns the existing run unless ``force=True``). The job carries the
label ``gembatch_run=<run id>``: a run whose job was never created, or created but never
recorded (the process died, the answer was lost), is finished by ``refresh()``/``wait()``
from any process, which first looks for the job by that label, so it is never made twice.

:meth:`TableRun.retry_failed` sends the rows whose answer failed or is missing again (a
child run over the staging table ``<dest>_gembatch_requests_retry<n>``, writing
``<dest>_retry<n>``); once it has ended, the table ``<dest>_merged`` holds every row's
newest answer and the parent's :attr:`~TableRun.table` and :meth:`~TableRun.result` read it.
A ``gs://`` run does the same with objects beside its destination prefix: the request file
``<dest>_gembatch_requests_retry<n>.jsonl`` (the run's request lines of those keys), the
child's prefix ``<dest>_retry<n>/`` and ``<dest>_merged/predictions.jsonl``.
:attr:`TableRun.stats` counts the merged answers: a row the retry answered is a success,
and a row with no answer at all (never processed, or cancelled) counts as failed once the
run has ended, since :meth:`~TableRun.retry_failed` sends it again.
"""

from __future__ import annotations

import hashlib
import math
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import orjson
import pandas as pd

from . import _backend, _plan, _results, _vertex
from . import _table_sources as _sources
from ._config import settings, validate_model
from ._registry import (
    OWNER,
    TERMINAL,
    RunBook,
    RunRecord,
    ShardRecord,
    is_live,
    open_registry,
    owner_alive,
)
from ._state import state
from .exceptions import ConfigError, InputError, RunNotDoneError

__all__ = ["TableRun", "submit_table"]

_ANSWERED = ("SUCCEEDED", "PARTIALLY_SUCCEEDED")


class TableStats(NamedTuple):
    """Request counts of a table run (the fields of ``RunStats``)."""

    total: int
    succeeded: int
    failed: int
    pending: int


class TableRun:
    """A table run: one Vertex AI job from a table (or JSONL) to a table (or prefix).

    It has the surface the views read (``gemini_batch_magic.widgets.RunView``), so
    ``run.widget()``, its rich display and the background monitor work as for a BatchRun.
    As for a BatchRun there is one object per run in a process: ``TableRun(run_id)`` gives
    the existing one, its record read again, so what a retry's end merges or the monitor's
    poll reads is seen by every holder of the run.
    """

    _book: RunBook
    run_id: str
    notice: str | None

    def __new__(cls, run_id: str) -> TableRun:
        key = (settings.home, f"table:{run_id}")  # beside the BatchRun objects of state.runs
        with state.lock:
            obj: TableRun | None = state.runs.get(key)
            if obj is None:
                obj = super().__new__(cls)
                obj._book = RunBook(open_registry(settings.home), run_id)
                obj.run_id = run_id
                obj.notice = None  #: e.g. "an identical table run already exists"
                state.runs[key] = obj
                return obj
        obj._book.reload()  # another process may have moved it on
        return obj

    # -- facts ------------------------------------------------------------------------------
    @property
    def record(self) -> RunRecord:
        return self._book.record

    @property
    def _cfg(self) -> dict[str, Any]:
        return dict(self.record.config["table"])

    @property
    def state(self) -> str:
        return self.record.state

    @property
    def done(self) -> bool:
        return self.record.state in TERMINAL

    @property
    def error(self) -> str | None:
        return self.record.error

    @property
    def model(self) -> str:
        return self.record.model

    @property
    def display_name(self) -> str:
        return self.record.display_name

    @property
    def parent_id(self) -> str | None:
        return self.record.parent_id

    @property
    def elapsed(self) -> float:
        """Seconds since the run was created (until it ended, once done)."""
        end = self.record.updated if self.done else time.time()
        return max(0.0, end - self.record.created)

    @property
    def n_rows(self) -> int:
        return int(self.record.n_requests)

    @property
    def shards(self) -> list[ShardRecord]:
        return list(self.record.shards)

    @property
    def table(self) -> str | None:
        """The result table (``project.dataset.table``): ``<dest>_merged`` once a retry has
        been merged, else ``dest``; None for a ``gs://`` destination."""
        dest = self._cfg["dest"]
        if not dest.startswith("bq://"):
            return None
        self._book.reload()  # a retry may have been merged by another object or process
        return str(self._cfg.get("merged") or dest.removeprefix("bq://"))

    @property
    def results_uri(self) -> str:
        """Where every row's newest answer is: ``bq://`` + :attr:`table`, or for a ``gs://``
        destination the folder ``<dest>_merged/`` once a retry has been merged, else
        ``dest`` (the job writes a ``prediction-model-*`` folder under it)."""
        table = self.table
        if table is not None:
            return f"bq://{table}"
        return str(self._cfg.get("merged") or self.dest)

    @property
    def dest(self) -> str:
        """Where the job writes (``bq://...`` or ``gs://...``), as given."""
        return str(self._cfg["dest"])

    @property
    def batch_names(self) -> list[str]:
        return [s.batch_name for s in self.record.shards if s.batch_name]

    @property
    def live_batch_names(self) -> set[str]:
        return {s.batch_name for s in self.record.shards
                if s.batch_name is not None and is_live(s.state)}

    @property
    def estimated_cost(self) -> float | None:
        return self.record.est_cost

    @property
    def stats(self) -> TableStats:
        """Request counts: the job's own (Vertex AI's ``completion_stats``) until a retry has
        been merged, then those of the merged answers. Once the run has ended, every row
        without a good answer is failed (never processed rows too: a retry sends them)."""
        rec = self.record
        s = rec.shards[0]
        # n_requests is 0 for raw JSONL submitted before lines were counted: the job's counts
        total = rec.n_requests or s.succeeded + s.failed + s.pending
        merged = rec.config["table"].get("merged_ok")
        ok = s.succeeded if merged is None else int(merged)
        if self.done:
            return TableStats(total, ok, max(0, total - ok), 0)
        return TableStats(total, ok, s.failed, max(0, total - ok - s.failed))

    def children(self) -> list[TableRun]:
        """The retry runs made from this run, oldest first."""
        return [TableRun(c) for c in self._book.registry.children(self.run_id)]

    def __repr__(self) -> str:
        st = self.stats
        return (f"<TableRun {self.run_id} {self.state} {st.succeeded + st.failed}/{st.total} "
                f"answered ({st.failed} failed) -> {self.dest}>")

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        from .widgets import run_mimebundle  # the one door to the views

        return run_mimebundle(self, include, exclude)  # type: ignore[no-any-return]

    def widget(self) -> Any:
        """A live progress widget of this run, as ``BatchRun.widget()``."""
        from .widgets import progress_widget  # the one door to the views

        return progress_widget(self)

    # -- following it -----------------------------------------------------------------------
    def watch(self, callback: Callable[[TableRun, BaseException | None], Any] | None = None
              ) -> None:
        """Have the background monitor poll this run until it is done."""
        from ._monitor import monitor

        monitor.watch(self, callback)

    def unwatch(self, callback: Callable[[TableRun, BaseException | None], Any] | None = None
                ) -> None:
        from ._monitor import monitor

        monitor.unwatch(self, callback)

    def refresh(self, known: Mapping[str, _backend.BatchStatus] | None = None) -> TableRun:
        """Ask the service about the job once (``known``: statuses just listed); a job not
        created or not recorded yet is found by its label, or created (see the module)."""
        with self._book.lock:
            self._book.reload()
            for shard in self.record.shards:
                if shard.batch_name is None and shard.state == "SUBMITTING":
                    self._resume(shard)
                if shard.batch_name is None or not is_live(shard.state):
                    continue
                status = (known or {}).get(shard.batch_name) or _backend.get_batch(
                    shard.batch_name)
                values: dict[str, Any] = {"state": status.state}
                if status.counts:
                    values.update(succeeded=status.counts["succeeded"],
                                  failed=status.counts["failed"],
                                  pending=status.counts["pending"])
                if status.state in TERMINAL and status.state != "SUCCEEDED":
                    why = f": {status.error}" if status.error else ""
                    values["error"] = f"batch {shard.batch_name} ended {status.state}{why}"
                self._book.set_shard(shard, **values)
            self._book.aggregate()
        if self.done and self.parent_id:
            TableRun(self.parent_id)._merge_children()
        return self

    def _resume(self, shard: ShardRecord) -> None:
        """Finish a half-submitted run: adopt its labelled job, or create it (once)."""
        owner = self.record.owner
        if owner != OWNER:
            if owner_alive(owner) or not self._book.registry.claim(self.run_id, owner, OWNER):
                return  # its own process may still be creating it: only look later
            self._book.reload()
        name = self._labelled(shard) or self._create(shard, reconcile_first=True)
        self._book.set_shard(shard, batch_name=name, state="PENDING")

    def _labelled(self, shard: ShardRecord) -> str | None:
        """The name of this shard's job, found by its labels (None if there is none)."""
        found = [s for s in _backend.find_run_batches(self.run_id)
                 if (getattr(s.job, "labels", None) or {}).get("gembatch_shard",
                                                               str(shard.shard))
                 == str(shard.shard)]
        return found[0].name if found else None

    def _create(self, shard: ShardRecord, *, reconcile_first: bool) -> str:
        return _backend.create_batch(
            self.model, self._cfg["src"], f"{self.display_name}-{self.run_id}-s{shard.shard}",
            reconcile_first=reconcile_first, run_id=self.run_id, dest=self.dest,
            labels={_vertex.RUN_LABEL: self.run_id, "gembatch_shard": str(shard.shard)})

    def wait(self, timeout: float | None = None, *, poll_interval: float | None = None,
             progress: Any = False) -> TableRun:
        """Block until the job has ended (``WaitTimeout`` after ``timeout`` seconds);
        ``progress`` as for ``BatchRun.wait`` (default False: nothing shown)."""
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
            while not self.refresh().done:
                if display is not None:
                    display.update()
                if deadline is not None and time.monotonic() >= deadline:
                    raise WaitTimeout(f"table run {self.run_id} is still {self.state} after "
                                      f"{timeout} s; it goes on: wait() again later",
                                      run_id=self.run_id)
                time.sleep(delay)
                delay = min(delay * 1.5, poll_interval or settings.max_poll_interval)
        finally:
            if display is not None:
                display.close()
        return self

    def run_to_completion(self, timeout: float | None = None, *, progress: Any = True
                          ) -> pd.DataFrame:
        """:meth:`wait`, then :meth:`result` (its first 1000 rows): what ``--wait`` does."""
        return self.wait(timeout=timeout, progress=progress).result()

    def cancel(self) -> TableRun:
        """Cancel the job; answers it has already written are kept. A run whose job was not
        created (or not recorded) yet is looked up by its label first, and if there is no
        job it ends CANCELLED without one (refresh() then creates nothing)."""
        with self._book.lock:
            self._book.reload()
            for shard in self.record.shards:
                if shard.batch_name is None and shard.state == "SUBMITTING":
                    name = self._labelled(shard)
                    if name is None:
                        self._book.set_shard(shard, state="CANCELLED",
                                             error="cancelled before its job was created")
                    else:
                        self._book.set_shard(shard, batch_name=name, state="PENDING")
            self._book.aggregate()
        for name in self.live_batch_names:
            _backend.cancel_batch(name)
        return self.refresh()

    # -- results ----------------------------------------------------------------------------
    def result(self, limit: int | None = 1000) -> pd.DataFrame:
        """At most ``limit`` rows of the result, read back on request (None: all), indexed
        by the key column: ``response``, ``error``, ``finish_reason``, token counts. After a
        retry, the merged answers (:attr:`table`)."""
        self._book.reload()
        if not self.done:
            raise RunNotDoneError(f"table run {self.run_id} is still {self.state}: call "
                                  "wait() first", run_id=self.run_id)
        self._merge_children()
        key = self._cfg.get("key") or "key"
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "results.jsonl"
            with open(path, "wb") as fh:
                table = self.table
                if table is not None:
                    _read_table(table, key, fh.write, limit,
                                written=self.record.state == "SUCCEEDED")
                else:
                    self._read_gcs(fh.write, limit)
            frame = _results.parse_results_file(path)
        return frame.set_index("key").rename_axis(key)

    def _read_gcs(self, write: Callable[[bytes], Any], limit: int | None) -> None:
        left = [limit if limit is not None else math.inf]

        def take(data: bytes) -> None:
            lines = data.splitlines(keepends=True)[: int(min(left[0], 1e12))]
            left[0] -= len(lines)
            write(b"".join(lines))

        for folder in self._answer_folders():
            if left[0] <= 0:
                break
            _vertex.read_predictions(folder, take)

    def _answer_folders(self) -> list[str]:
        """The ``gs://`` folders of this run's answers: the merged folder after a retry,
        else the folder each job wrote (as its ``output_info`` names it)."""
        merged = self._cfg.get("merged")
        if merged:
            return [str(merged)]
        return [_job_folder(_backend.get_batch(name).job) for name in self.batch_names]

    def to_dataframe(self) -> pd.DataFrame:
        """Every row of the result (it all comes into the kernel)."""
        return self.result(limit=None)

    # -- retries ----------------------------------------------------------------------------
    def retry_failed(self, **overrides: Any) -> TableRun | None:
        """Send the rows whose answer failed or is missing again, as a child run reading
        just those requests (see the module): a staging table of those keys for a BigQuery
        run, a request file of those lines for a ``gs://`` one. Returns None when every row
        has an answer. ``overrides`` may change ``model`` or ``name``."""
        unknown = sorted(set(overrides) - {"model", "name"})
        if unknown:
            raise InputError(f"retry_failed() takes model= and name=, not {', '.join(unknown)}")
        if self.parent_id:
            return TableRun(self.parent_id).retry_failed(**overrides)
        self.refresh()
        if not self.done or any(not c.done for c in self.children()):
            raise RunNotDoneError(f"table run {self.run_id} (or its last retry) is still "
                                  "running: wait() for it before retrying its failed rows",
                                  run_id=self.run_id)
        self._merge_children()
        cfg = self._cfg
        n = len(self.children()) + 1
        table = self.table
        if table is not None:
            if not str(cfg["src"]).startswith("bq://"):
                raise InputError(f"table run {self.run_id} read {cfg['src']}, not a BigQuery "
                                 "table: submit the failed rows again with "
                                 "submit_table(force=True)")
            p, d, t = _sources.split_bq(cfg["dest"], "dest")
            staging, count, per_request = _sources.build_retry(
                cfg["src"].removeprefix("bq://"), table, cfg["key"],
                f"{p}.{d}.{t}_gembatch_requests_retry{n}")
            dest = f"bq://{p}.{d}.{t}_retry{n}"
        else:
            staging = _beside(cfg["dest"], f"_gembatch_requests_retry{n}.jsonl")
            count, per_request = _sources.build_retry_jsonl(
                str(cfg["src"]), self._answer_folders(), staging)
            dest = _beside(cfg["dest"], f"_retry{n}/")
        if count == 0:
            from .widgets import notice  # the one door to the views: a notice, not an error

            notice(__name__, f"table run {self.run_id}: no failed rows to retry")
            return None
        model = overrides.get("model") or self.model
        est = _sources.estimate(model, count, per_request, cfg.get("shared") or {})
        child_cfg = {**cfg, "source": f"retry of {self.run_id}", "src": staging,
                     "dest": dest, "merged": None, "merged_from": [], "merged_ok": None}
        return _record_and_create(
            content_hash=f"table-retry:{self.run_id}:{n}", model=model,
            display=(overrides.get("name") or f"{self.display_name}-retry")[:60],
            n_rows=count, est=est, cfg=child_cfg, parent_id=self.run_id)

    def _merge_children(self) -> None:
        """Fold every ended, not yet merged retry into ``<dest>_merged`` (in order), and
        count the merged answers (:attr:`stats`)."""
        if self.parent_id:
            return
        with self._book.lock:
            self._book.reload()
            for child in self.children():
                cfg = self._cfg
                if child.state not in _ANSWERED or child.run_id in (cfg.get("merged_from")
                                                                    or []):
                    continue
                if cfg["dest"].startswith("bq://"):
                    merged = cfg["dest"].removeprefix("bq://") + "_merged"
                    ok = _sources.merge_retry(str(self.table), child.dest.removeprefix("bq://"),
                                              cfg["key"], merged)
                else:
                    merged = _beside(cfg["dest"], "_merged/")
                    ok = _sources.merge_retry_jsonl(self._answer_folders(),
                                                    child._answer_folders(), merged)
                config = dict(self.record.config)
                config["table"] = {**cfg, "merged": merged, "merged_ok": ok,
                                   "merged_from": [*(cfg.get("merged_from") or []),
                                                   child.run_id]}
                self._book.registry.update_run(self.run_id,
                                               config=orjson.dumps(config).decode())
                self._book.reload()


def _read_table(table: str, key: str, write: Callable[[bytes], Any], limit: int | None, *,
                written: bool) -> None:
    """At most ``limit`` rows of a result table into ``write``, as results lines; a table
    that does not exist is no rows, unless the job must have ``written`` it."""
    from google.api_core.exceptions import NotFound

    try:
        for row in _vertex.bigquery_client().list_rows(table, max_results=limit):
            line = _vertex.prediction_line({**dict(row.items()), "key": row[key]})
            if line is not None:
                write(orjson.dumps(line) + b"\n")
    except NotFound:
        if written:
            raise
        # the job ended (FAILED, CANCELLED, ...) without writing its table: no answers


def _job_folder(job: Any) -> str:
    """The ``gs://`` folder a Vertex AI job wrote its prediction files to: the one its
    ``output_info`` names, else (not reported) its destination prefix."""
    info = getattr(job, "output_info", None)
    folder = getattr(info, "gcs_output_directory", None)
    return str(folder or job.dest.gcs_uri)


def _beside(dest: str, suffix: str) -> str:
    """A name next to the ``gs://`` prefix ``dest``: ``gs://b/out/`` + ``_merged/`` ->
    ``gs://b/out_merged/`` (``gs://b/merged/`` for a bucket's root)."""
    bucket, name = _vertex.split_gs(dest)
    name = name.rstrip("/")
    return f"gs://{bucket}/{name}{suffix}" if name else f"gs://{bucket}/{suffix.lstrip('_')}"


def _record_and_create(*, content_hash: str, model: str, display: str, n_rows: int,
                       est: _plan.Estimate, cfg: dict[str, Any],
                       parent_id: str | None) -> TableRun:
    """Record the run (SUBMITTING, no job yet), then create its job."""
    reg = open_registry(settings.home)
    backend = _backend.backend_id()

    def make(run_id: str) -> RunRecord:
        now = time.time()
        config = {"table": {**cfg, "dest": cfg["dest"] or _vertex.staging_uri(run_id, "out/")}}
        return RunRecord(
            run_id=run_id, created=now, updated=now, model=model, display_name=display,
            backend=backend, content_hash=content_hash, n_rows=n_rows, n_requests=n_rows,
            source="table", state="SUBMITTING", parent_id=parent_id, est_cost=est.cost_usd,
            config=config, owner=OWNER, error=None, positions_blob=b"", key_fp=None,
            shards=[ShardRecord(run_id=run_id, shard=0, start=0, stop=n_rows, n_bytes=0,
                                request_file="", upload_name=str(cfg["src"]),
                                pending=n_rows)])

    folder = Path(tempfile.mkdtemp(dir=reg.tmp_dir()))
    record, _ = reg.insert_or_find(make, content_hash, backend, folder=folder, force=True)
    run = TableRun(record.run_id)
    shard = run.record.shards[0]
    try:
        name = run._create(shard, reconcile_first=False)
    except Exception as exc:
        if not _backend.is_retryable(exc):  # refused: nothing to finish later
            run._book.set_shard(shard, state="FAILED", error=f"not created: {exc}")
            run._book.aggregate()
        raise  # a transient failure: refresh()/wait() finishes it, reconciling by label
    run._book.set_shard(shard, batch_name=name, state="PENDING")
    run._book.aggregate()
    return run


def submit_table(
    source: str,
    template: str | None = None,
    *,
    key: str | None = None,
    dest: str | None = None,
    model: str | None = None,
    system_instruction: str | None = None,
    generation_config: dict[str, Any] | None = None,
    max_cost: float | None = None,
    confirm: bool = False,
    force: bool = False,
    name: str | None = None,
) -> TableRun:
    """Send every row of a BigQuery table or query (or of Cloud Storage JSONL) as one
    request of a Vertex AI job writing a table (see the module docstring). ``template``
    formats columns (``"Summarise: {text}"``); ``key`` names the column that identifies rows
    (kept beside each answer; for JSONL, optional: the line number without it); ``dest`` is
    a new ``bq://project.dataset.table`` (a ``gs://`` prefix for a ``gs://`` source,
    default ``<staging>/<run>/out/``)."""
    if not _backend.is_vertex():
        raise ConfigError("submit_table() runs on Vertex AI: gbm.configure(backend='vertex', "
                          "project=..., location=..., staging='gs://...') first")
    model = validate_model(model or settings.model).removeprefix("models/")
    shared: dict[str, Any] = {}
    if system_instruction:
        shared["systemInstruction"] = {"parts": [{"text": str(system_instruction)}]}
    if generation_config:
        shared["generationConfig"] = dict(generation_config)
    gcs = source.strip().startswith("gs://")
    if gcs:
        if dest is not None and not dest.startswith("gs://"):
            raise InputError(f"dest {dest!r}: a gs:// source writes a gs:// prefix "
                             "(default <staging>/<run>/out/)")
    elif template is None or key is None or dest is None:
        raise InputError("submit_table() from BigQuery needs template=, key= and "
                         "dest='bq://project.dataset.table'")
    else:
        _sources.split_bq(dest, "dest")
    h = orjson.dumps([source, template, key, dest, model, shared], option=orjson.OPT_SORT_KEYS)
    content_hash = "table:" + hashlib.sha256(h).hexdigest()[:32]
    reg = open_registry(settings.home)
    if not force:
        existing = reg.find_run(content_hash, _backend.backend_id())
        if existing is not None:
            run = TableRun(existing.run_id)
            run.notice = (f"an identical table run already exists: {existing.run_id} "
                          f"({existing.state}); returning it (pass force=True to submit anew)")
            return run
    _backend.check_model(model)
    if gcs and template is None:
        src = source.strip()
        n_rows, per_request = _sources.scan_jsonl(src)
    elif gcs:
        src = _vertex.staging_uri(f"table-{content_hash[6:22]}", "requests.jsonl")
        n_rows, per_request = _sources.build_jsonl(source.strip(), str(template), key, src,
                                                  shared)
    else:
        src, n_rows, per_request = _sources.build_bigquery(source, str(template), str(key),
                                                           str(dest), shared)
    est = _sources.estimate(model, n_rows, per_request, shared)
    _plan.check_cost(est, max_cost)
    _plan.check_confirmed(est, confirm)
    cfg = {"source": source, "template": template, "key": key, "dest": dest or "",
           "src": src, "shared": shared}
    return _record_and_create(content_hash=content_hash, model=model,
                              display=(name or "table")[:60], n_rows=n_rows, est=est,
                              cfg=cfg, parent_id=None)
