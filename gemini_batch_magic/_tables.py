"""Tables in, tables out: :func:`submit_table` and :class:`TableRun` (Vertex AI only).

``submit_table("bq://proj.ds.raw", template="Summarise: {text}", key="id",
dest="bq://proj.ds.summaries")`` builds every request inside BigQuery (one
``CREATE TABLE ... AS SELECT`` makes a staging table ``<dest>_gembatch_requests`` with the
``request`` JSON column and the key column), and a Vertex AI batch prediction job reads that
table and writes ``dest`` (the input's columns, ``request``, ``response``, ``status``,
``processed_time``). Nothing of the rows passes through the kernel, except what
:meth:`TableRun.result` (``limit=``) or :meth:`TableRun.to_dataframe` read back on request.
The source may also be a SQL query (``"SELECT ... FROM ..."``), or Cloud Storage JSONL
(``"gs://bucket/in/*.jsonl"``: lines already in Vertex AI's ``{"request": ...}`` form) with a
``gs://`` destination prefix.

Estimates come from the table's metadata (its row count) and a sample of 100 built requests;
``max_cost`` and ``confirm_above`` apply before the job is created. The run is recorded in the
registry (``gbm.runs()`` lists it, ``gbm.attach(run_id)`` gives it back, the same source,
template and destination again returns the existing run unless ``force=True``).
"""

from __future__ import annotations

import math
import re
import string
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

import orjson
import pandas as pd

from . import _backend, _plan, _pricing, _results, _vertex
from ._config import settings, validate_model
from ._registry import OWNER, TERMINAL, RunBook, RunRecord, ShardRecord, is_live, open_registry
from .exceptions import ColumnError, ConfigError, InputError, RunNotDoneError, TemplateError

__all__ = ["TableRun", "submit_table"]

_TABLE = re.compile(r"^bq://([A-Za-z0-9_.:-]+)\.([A-Za-z0-9_]+)\.([A-Za-z0-9_$-]+)$")
_SAMPLE = 100


def _split_bq(uri: str, what: str) -> tuple[str, str, str]:
    m = _TABLE.match(uri.strip())
    if not m:
        raise InputError(f"{what} {uri!r} is not a BigQuery table: write "
                         "bq://project.dataset.table")
    return m.group(1), m.group(2), m.group(3)


def _quote(text: str) -> str:
    """A GoogleSQL string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


def _prompt_sql(template: str, columns: list[str]) -> str:
    """The SQL expression of ``template``: literal pieces and ``CAST(col AS STRING)``."""
    pieces = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise TemplateError(f"template {template!r} is malformed: {exc}") from None
    for literal, name, spec, conv in parsed:
        if literal:
            pieces.append(_quote(literal))
        if name is None:
            continue
        if spec or conv or not name.isidentifier():
            raise TemplateError(f"template field {{{name}}} must name a column plainly "
                                "(no attribute, index, conversion or format)")
        if name not in columns:
            raise ColumnError(f"template names column {name!r}, which the source does not "
                              f"have; its columns: {', '.join(columns)}")
        pieces.append(f"IFNULL(CAST(`{name}` AS STRING), '')")
    if not pieces:
        raise TemplateError("the template is empty")
    return pieces[0] if len(pieces) == 1 else f"CONCAT({', '.join(pieces)})"


class TableStats(NamedTuple):
    """Request counts of a table run (the fields of ``RunStats``)."""

    total: int
    succeeded: int
    failed: int
    pending: int


class TableRun:
    """A table run: one Vertex AI job from a table (or JSONL) to a table (or prefix)."""

    def __init__(self, run_id: str) -> None:
        self._book = RunBook(open_registry(settings.home), run_id)
        self.run_id = run_id
        self.notice: str | None = None

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
    def table(self) -> str | None:
        """The result table (``project.dataset.table``), None for a ``gs://`` destination."""
        dest = self._cfg["dest"]
        return dest.removeprefix("bq://") if dest.startswith("bq://") else None

    @property
    def dest(self) -> str:
        return str(self._cfg["dest"])

    @property
    def batch_names(self) -> list[str]:
        return [s.batch_name for s in self.record.shards if s.batch_name]

    @property
    def estimated_cost(self) -> float | None:
        return self.record.est_cost

    @property
    def stats(self) -> TableStats:
        s = self.record.shards[0]
        return TableStats(self.record.n_requests, s.succeeded, s.failed,
                        0 if self.done else max(0, self.record.n_requests - s.succeeded
                                                - s.failed))

    def __repr__(self) -> str:
        st = self.stats
        return (f"<TableRun {self.run_id} {self.state} {st.succeeded + st.failed}/{st.total} "
                f"answered ({st.failed} failed) -> {self.dest}>")

    # -- following it -----------------------------------------------------------------------
    def refresh(self) -> TableRun:
        with self._book.lock:
            self._book.reload()
            for shard in self.record.shards:
                if shard.batch_name is None or not is_live(shard.state):
                    continue
                status = _backend.get_batch(shard.batch_name)
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
        return self

    def wait(self, timeout: float | None = None, *, poll_interval: float | None = None,
             progress: Any = False) -> TableRun:
        """Block until the job has ended (``WaitTimeout`` after ``timeout`` seconds)."""
        from .exceptions import WaitTimeout

        delay = poll_interval or settings.poll_interval
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.refresh().done:
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(f"table run {self.run_id} is still {self.state} after "
                                  f"{timeout} s; it goes on: wait() again later",
                                  run_id=self.run_id)
            time.sleep(delay)
            delay = min(delay * 1.5, poll_interval or settings.max_poll_interval)
        return self

    def cancel(self) -> TableRun:
        for name in self.batch_names:
            _backend.cancel_batch(name)
        return self.refresh()

    # -- results ----------------------------------------------------------------------------
    def result(self, limit: int | None = 1000) -> pd.DataFrame:
        """At most ``limit`` rows of the result, read back on request (None: all), indexed
        by the key column: ``response``, ``error``, ``finish_reason``, token counts."""
        self._book.reload()
        if not self.done:
            raise RunNotDoneError(f"table run {self.run_id} is still {self.state}: call "
                                  "wait() first", run_id=self.run_id)
        key = self._cfg.get("key") or "key"
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "results.jsonl"
            with open(path, "wb") as fh:
                if self.table is not None:
                    rows = _vertex.bigquery_client().list_rows(self.table, max_results=limit)
                    for row in rows:
                        line = _vertex.prediction_line({**dict(row.items()), "key": row[key]})
                        if line is not None:
                            fh.write(orjson.dumps(line) + b"\n")
                else:
                    left = [limit if limit is not None else math.inf]

                    def take(data: bytes) -> None:
                        lines = data.splitlines(keepends=True)[: int(min(left[0], 1e12))]
                        left[0] -= len(lines)
                        fh.write(b"".join(lines))

                    for name in self.batch_names:
                        job = _backend.get_batch(name).job
                        dest = job.dest
                        _vertex.read_predictions(
                            getattr(dest, "gcs_output_directory", None) or dest.gcs_uri, take)
            frame = _results.parse_results_file(path)
        return frame.set_index("key").rename_axis(key)

    def to_dataframe(self) -> pd.DataFrame:
        """Every row of the result (it all comes into the kernel)."""
        return self.result(limit=None)


def _source_sql(source: str) -> tuple[str, str | None]:
    """(a FROM clause, the table for its metadata or None for a query)."""
    text = source.strip()
    if text.startswith("bq://"):
        p, d, t = _split_bq(text, "source")
        return f"`{p}.{d}.{t}`", f"{p}.{d}.{t}"
    if re.match(r"(?is)^\s*(select|with)\b", text):
        return f"({text})", None
    raise InputError(f"source {source!r} is neither a BigQuery table (bq://project.dataset."
                     "table), a query (SELECT ...) nor Cloud Storage JSONL (gs://.../*.jsonl)")


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
    """Send every row of a BigQuery table or query (or a Cloud Storage JSONL file) as one
    request of a Vertex AI job writing a table (see the module docstring). ``template``
    formats columns (``"Summarise: {text}"``); ``key`` names the column that identifies rows
    (kept beside each answer); ``dest`` is a new ``bq://project.dataset.table`` (a
    ``gs://`` prefix for a ``gs://`` source, default ``<staging>/<run>/out/``)."""
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
        if template is not None:
            raise InputError("a gs:// source is read by the job as it is: its lines must "
                             "already be {\"request\": ...}; build prompts from a BigQuery "
                             "table or query to use a template")
        n_rows, per_request = 0, 0
    else:
        if template is None or key is None or dest is None:
            raise InputError("submit_table() from BigQuery needs template=, key= and "
                             "dest='bq://project.dataset.table'")
        _split_bq(dest, "dest")
    h = orjson.dumps([source, template, key, dest, model, shared],
                     option=orjson.OPT_SORT_KEYS)
    import hashlib

    content_hash = "table:" + hashlib.sha256(h).hexdigest()[:32]
    reg = open_registry(settings.home)
    backend = _backend.backend_id()
    if not force:
        with reg.transaction() as con:
            existing = reg.find_by_hash(content_hash, backend, con)
        if existing is not None:
            run = TableRun(existing.run_id)
            run.notice = (f"an identical table run already exists: {existing.run_id} "
                          f"({existing.state}); returning it (pass force=True to submit anew)")
            return run
    _backend.check_model(model)
    if gcs:
        src, out = source.strip(), dest or ""
    else:
        src, out, n_rows, per_request = _build_requests(source, str(template), str(key),
                                                        str(dest), shared)
    est = _estimate(model, n_rows, per_request, shared)
    _plan.check_cost(est, max_cost)
    _plan.check_confirmed(est, confirm)
    display = (name or "table")[:60]

    def make(run_id: str) -> RunRecord:
        now = time.time()
        target = out or _vertex.staging_uri(run_id, "out/")
        cfg = {"table": {"source": source, "template": template, "key": key, "dest": target,
                         "src": src, "shared": shared}}
        return RunRecord(
            run_id=run_id, created=now, updated=now, model=model, display_name=display,
            backend=backend, content_hash=content_hash, n_rows=n_rows, n_requests=n_rows,
            source="table", state="SUBMITTING", parent_id=None, est_cost=est.cost_usd,
            config=cfg, owner=OWNER, error=None, positions_blob=b"", key_fp=None,
            shards=[ShardRecord(run_id=run_id, shard=0, start=0, stop=n_rows, n_bytes=0,
                                request_file="", upload_name=src, pending=n_rows)])

    folder = Path(tempfile.mkdtemp(dir=reg.tmp_dir()))
    record, _ = reg.insert_or_find(make, content_hash, backend, folder=folder, force=True)
    run = TableRun(record.run_id)
    shard = run.record.shards[0]
    batch = _backend.create_batch(
        model, src, f"{display}-{run.run_id}-s0", reconcile_first=False, run_id=run.run_id,
        dest=run.dest, labels={_vertex.RUN_LABEL: run.run_id, "gembatch_shard": "0"})
    run._book.set_shard(shard, batch_name=batch, state="PENDING")
    run._book.aggregate()
    return run


def _build_requests(source: str, template: str, key: str, dest: str,
                    shared: dict[str, Any]) -> tuple[str, str, int, int]:
    """Make the staging table of requests with one query; (its bq:// URI, dest, rows,
    bytes per request from a sample)."""
    client = _vertex.bigquery_client()
    from_sql, table = _source_sql(source)
    columns = [f.name for f in client.query(f"SELECT * FROM {from_sql} LIMIT 0").result()
               .schema]
    if key not in columns:
        raise ColumnError(f"key column {key!r} is not in the source; its columns: "
                          f"{', '.join(columns)}")
    if "request" in columns:
        raise ColumnError("the source has a column named 'request', which the job reads as "
                          "the request: rename it in a query (SELECT request AS ...)")
    prompt = _prompt_sql(template, columns)
    tail = ("," + orjson.dumps(shared).decode()[1:-1]) if shared else ""
    request = (f"""CONCAT('{{"contents":[{{"role":"user","parts":[{{"text":', """
               f"TO_JSON_STRING({prompt}), {_quote('}]}]' + tail + '}')})")
    p, d, t = _split_bq(dest, "dest")
    staging = f"{p}.{d}.{t}_gembatch_requests"
    client.query(f"CREATE OR REPLACE TABLE `{staging}` AS SELECT `{key}`, {request} AS "
                 f"request FROM {from_sql}").result()
    if table is not None:
        n_rows = int(client.get_table(table).num_rows or 0)
    else:
        n_rows = int(next(iter(client.query(f"SELECT COUNT(*) AS n FROM `{staging}`")
                               .result()))[0])
    sample = [len(str(r[0]).encode()) for r in client.query(
        f"SELECT request FROM `{staging}` LIMIT {_SAMPLE}").result()]
    per_request = int(sum(sample) / len(sample)) if sample else 0
    return f"bq://{staging}", dest, n_rows, per_request


def _estimate(model: str, n_rows: int, per_request: int, shared: dict[str, Any]
              ) -> _plan.Estimate:
    """An estimate from the row count and the sampled request size (nothing sent)."""
    in_tokens = math.ceil(per_request / 4) * n_rows
    gen = shared.get("generationConfig") or {}
    per_out = int(gen.get("max_output_tokens") or gen.get("maxOutputTokens")
                  or _pricing.ASSUMED_OUTPUT_TOKENS)
    price = _pricing.price_for(model)
    cost = None if price is None else (in_tokens * price[0] + per_out * n_rows * price[1]) / 1e6
    note = (f"no batch price known for {model}" if price is None else
            f"${price[0]}/1M input, ${price[1]}/1M output; from the table's row count and a "
            f"sample of {_SAMPLE} requests")
    return _plan.Estimate(model=model, rows=n_rows, requests=n_rows, skipped=0,
                          bytes=per_request * n_rows, mode="table", shards=1,
                          input_tokens=in_tokens, output_tokens=per_out * n_rows,
                          cost_usd=cost, price_note=note)
