"""A local emulator of Vertex AI batch prediction for Gemini (``batchPredictionJobs``).

It answers the routes the ``google-genai`` SDK calls with ``vertexai=True``
(``/v1beta1/projects/{p}/locations/{l}/batchPredictionJobs``: create, get, list with
``pageSize``/``pageToken``/``filter``, ``:cancel``, delete; and ``publishers/google/models``
get), reads each job's input where the job names it and writes its predictions there, as the
service does:

* ``gs://`` JSONL input (one ``{"request": {...}}`` per line) -> ``predictions.jsonl`` under
  ``<outputUriPrefix>/prediction-model-<time>/``, each line
  ``{"status": "", "processed_time": ..., "request": {...}, "response": {...}}``: the request
  is echoed, other fields of the input line are **not** (the service documents only
  ``request``), a failed row has ``status`` set and no ``response``;
* ``bq://`` table input (a ``request`` JSON column; other columns are copied to the output,
  as documented) -> a new table at the ``bq://`` destination with the input's columns plus
  ``response``, ``status`` and ``processed_time``.

Cloud Storage and BigQuery are other emulators (``gcp-storage-emulator``, ``bqemulator``),
reached over HTTP (:mod:`._cloud`). Jobs live in memory. Each job goes QUEUED -> PENDING
(``pending_seconds``) -> RUNNING -> SUCCEEDED; ``[[fail]]`` in a prompt fails that row.
:meth:`VertexEmulator.inject` makes the next jobs end ``FAILED``, ``EXPIRED`` or
``PARTIALLY_SUCCEEDED`` (only the first half of the rows answered), or stay ``RUNNING``
(``"HOLD"``) until cancelled or released; ``drop_after_create_rate`` makes a create
persisted but unanswered (the connection drops), as on the Gemini routes. Calls need ``Authorization: Bearer <token>``;
a project not in ``projects`` gets the service's 403 ``PERMISSION_DENIED``.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from . import _model
from ._cloud import BigQuery, CloudError, Storage, split_bq, split_gs

__all__ = ["INJECTABLE", "VERTEX_STATES", "VertexEmulator"]

#: Every state of a Vertex AI job (without the ``JOB_STATE_`` prefix).
VERTEX_STATES = ("QUEUED", "PENDING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLING",
                 "CANCELLED", "PAUSED", "EXPIRED", "UPDATING", "PARTIALLY_SUCCEEDED")
TERMINAL = frozenset({"SUCCEEDED", "FAILED", "CANCELLED", "EXPIRED", "PARTIALLY_SUCCEEDED"})
#: What :meth:`VertexEmulator.inject` accepts.
INJECTABLE = ("FAILED", "EXPIRED", "PARTIALLY_SUCCEEDED", "HOLD", "PAUSED", "UPDATING")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Job:
    """One batch prediction job."""

    project: str
    location: str
    id: str
    body: dict[str, Any]  #: what was created: displayName, model, inputConfig, outputConfig
    created: float = field(default_factory=time.monotonic)
    state: str = "QUEUED"
    outcome: str | None = None  #: an injected end, or None
    stats: dict[str, str] = field(default_factory=dict)
    output_info: dict[str, str] = field(default_factory=dict)
    error: dict[str, Any] | None = None
    create_time: str = field(default_factory=_now)
    update_time: str = field(default_factory=_now)

    @property
    def name(self) -> str:
        return f"projects/{self.project}/locations/{self.location}/batchPredictionJobs/{self.id}"

    def resource(self) -> dict[str, Any]:
        doc = {**self.body, "name": self.name, "state": f"JOB_STATE_{self.state}",
               "createTime": self.create_time, "updateTime": self.update_time}
        if self.stats:
            doc["completionStats"] = dict(self.stats)
        if self.output_info:
            doc["outputInfo"] = dict(self.output_info)
        if self.error:
            doc["error"] = self.error
        return doc

    def set(self, state: str) -> None:
        self.state = state
        self.update_time = _now()


class VertexEmulator:
    """The jobs, their scheduler and the Cloud Storage / BigQuery I/O (see the module).

    ``storage_host`` / ``bigquery_host``: the emulators' endpoints (``http://127.0.0.1:port``).
    """

    def __init__(self, storage_host: str | None, bigquery_host: str | None = None, *,
                 projects: tuple[str, ...] = ("test-project",), pending_seconds: float = 0.1,
                 models: tuple[str, ...] = ("gemini-2.5-flash", "gemini-2.5-pro",
                                            "gemini-2.5-flash-lite"),
                 host: str = "127.0.0.1", port: int = 0, seed: int = 0,
                 drop_after_create_rate: float = 0.0) -> None:
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"the Vertex emulator binds 127.0.0.1 only, not {host!r}")
        self.storage = Storage(storage_host) if storage_host else None
        self.bigquery = BigQuery(bigquery_host) if bigquery_host else None
        self.projects = tuple(projects)
        self.pending_seconds = pending_seconds
        self.models = tuple(models)
        self.host, self.port = host, port
        self.lock = threading.RLock()
        self.jobs: dict[str, Job] = {}
        #: Fraction of creates persisted but answered by a dropped connection (the
        #: "ambiguous create", as ``drop_after_create_rate`` of the Gemini routes).
        self.drop_after_create_rate = _fraction(drop_after_create_rate)
        self._drop_rng = random.Random(seed + 1)
        self._ids = itertools.count(1_000_000_000_000 + random.Random(seed).randrange(10**9))
        self._outcomes: list[str] = []
        self._stop = threading.Event()
        self._server: Any = None
        self._threads: list[threading.Thread] = []
        self.calls: list[tuple[str, str]] = []  #: (method, path) of every API call

    # -- lifecycle ------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The base URL for ``HttpOptions(base_url=...)`` / ``GOOGLE_VERTEX_BASE_URL``."""
        if self._server is None:
            raise RuntimeError("the Vertex emulator is not started: call start() first")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> VertexEmulator:
        from ._vertex_api import make_server

        self._server = make_server((self.host, self.port), self)
        self._stop.clear()
        for target, name in ((self._server.serve_forever, "vertex-http"),
                             (self._schedule, "vertex-scheduler")):
            t = threading.Thread(target=target, name=f"gembatch-{name}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def close(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.close_all_connections()
            self._server.server_close()
        for t in self._threads:
            t.join(5)
        self._threads.clear()

    def __enter__(self) -> VertexEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- test helpers ---------------------------------------------------------------------
    def inject(self, outcome: str, count: int = 1) -> None:
        """Make the next ``count`` jobs end ``outcome`` (one of :data:`INJECTABLE`)."""
        if outcome not in INJECTABLE:
            raise ValueError(f"cannot inject {outcome!r}: choose one of {', '.join(INJECTABLE)}")
        with self.lock:
            self._outcomes.extend([outcome] * count)

    def set_drop_rate(self, rate: float) -> None:
        """Set :attr:`drop_after_create_rate` (a fraction between 0 and 1)."""
        with self.lock:
            self.drop_after_create_rate = _fraction(rate)

    def draw_drop(self) -> bool:
        """Whether this create is dropped after it is persisted."""
        with self.lock:
            rate = self.drop_after_create_rate
            return rate > 0 and self._drop_rng.random() < rate

    def release(self) -> None:
        """Let held (``HOLD``, ``PAUSED``, ``UPDATING``) jobs finish."""
        with self.lock:
            for job in self.jobs.values():
                if job.outcome in ("HOLD", "PAUSED", "UPDATING"):
                    job.outcome = None
                    if job.state in ("PAUSED", "UPDATING"):
                        job.set("RUNNING")

    # -- the API's operations (called by _vertex_api) -------------------------------------
    def create(self, project: str, location: str, body: dict[str, Any]) -> Job:
        with self.lock:
            job = Job(project, location, str(next(self._ids)), body)
            job.outcome = self._outcomes.pop(0) if self._outcomes else None
            self.jobs[job.id] = job
            return job

    def listing(self, project: str, location: str, flt: str | None) -> list[Job]:
        wanted = _parse_filter(flt)
        with self.lock:
            jobs = [j for j in self.jobs.values()
                    if j.project == project and j.location == location]
        jobs.sort(key=lambda j: (j.create_time, int(j.id)), reverse=True)
        return [j for j in jobs if all(_matches(j, k, v) for k, v in wanted)]

    def cancel(self, job: Job) -> None:
        with self.lock:
            if job.state not in TERMINAL:
                job.set("CANCELLING")

    # -- the scheduler --------------------------------------------------------------------
    def _schedule(self) -> None:
        while not self._stop.wait(0.02):
            with self.lock:
                jobs = [j for j in self.jobs.values() if j.state not in TERMINAL]
            for job in jobs:
                with contextlib.suppress(Exception):
                    self._step(job)

    def _step(self, job: Job) -> None:
        age = time.monotonic() - job.created
        if job.state == "CANCELLING":
            job.error = {"code": 1, "message": "CANCELED"}
            job.set("CANCELLED")
        elif job.state == "QUEUED":
            job.set("PENDING")
        elif job.state == "PENDING" and age >= self.pending_seconds:
            job.set("RUNNING")
        elif job.state == "RUNNING":
            if job.outcome in ("HOLD", "PAUSED", "UPDATING"):
                if job.outcome != "HOLD":
                    job.set(job.outcome)
                return
            self._finish(job)

    def _finish(self, job: Job) -> None:
        if job.outcome == "FAILED":
            job.error = {"code": 3, "message": "Injected failure: the job FAILED."}
            job.set("FAILED")
            return
        if job.outcome == "EXPIRED":
            job.error = {"code": 4, "message": "Injected expiry: the job did not finish "
                         "within its time limit."}
            job.set("EXPIRED")
            return
        try:
            rows, columns = self._read_input(job)
            answered = rows[: len(rows) // 2] if job.outcome == "PARTIALLY_SUCCEEDED" else rows
            outputs = [self._answer(job, row) for row in answered]
            self._write_output(job, outputs, columns)
        except (CloudError, ValueError, KeyError, TypeError) as exc:
            job.error = {"code": 3, "message": f"Batch prediction failed: {exc}"}
            job.set("FAILED")
            return
        failed = sum(1 for o in outputs if o["status"])
        job.stats = {"successfulCount": str(len(outputs) - failed),
                     "failedCount": str(failed),
                     "incompleteCount": str(len(rows) - len(outputs))}
        if job.outcome == "PARTIALLY_SUCCEEDED":
            job.error = {"code": 13, "message": f"{len(rows) - len(outputs)} of {len(rows)} "
                         "rows were not processed (injected partial success)."}
        job.set("PARTIALLY_SUCCEEDED" if job.outcome == "PARTIALLY_SUCCEEDED" else "SUCCEEDED")

    # -- input and output -----------------------------------------------------------------
    def _read_input(self, job: Job) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(rows, extra BigQuery columns); a row is ``{"request": dict, ...other columns}``."""
        cfg = job.body.get("inputConfig") or {}
        if "gcsSource" in cfg:
            if self.storage is None:
                raise CloudError("this emulator was started without a Cloud Storage endpoint")
            rows = []
            for line in self.storage.read_uris(list(cfg["gcsSource"].get("uris") or [])):
                obj = orjson.loads(line)
                if not isinstance(obj, dict) or not isinstance(obj.get("request"), dict):
                    raise ValueError(f"an input line has no request object: {line[:200]!r}")
                rows.append(obj)
            return rows, []
        if "bigquerySource" in cfg:
            if self.bigquery is None:
                raise CloudError("this emulator was started without a BigQuery endpoint")
            p, d, t = split_bq(cfg["bigquerySource"]["inputUri"])
            if self.bigquery.table(p, d, t) is None:
                raise CloudError(f"input table {p}.{d}.{t} does not exist", 404)
            fields, raw = self.bigquery.rows(p, d, t)
            if "request" not in [f["name"] for f in fields]:
                raise ValueError(f"input table {p}.{d}.{t} has no request column")
            out = []
            for r in raw:
                req = r["request"]
                out.append({**r, "request": orjson.loads(req) if isinstance(req, str) else req})
            return out, [f for f in fields if f["name"] != "request"]
        raise ValueError("the job names no gcsSource or bigquerySource input")

    def _answer(self, job: Job, row: dict[str, Any]) -> dict[str, Any]:
        model = str(job.body.get("model", "")).rsplit("/", 1)[-1]
        out: dict[str, Any] = {"status": "", "processed_time": _now(), "request": row["request"]}
        try:
            out["response"] = _model.default_generate(row["request"], model)
        except Exception as exc:
            status = _model.error_dict(exc)
            out["status"] = f"Bad Request: {orjson.dumps({'error': status}).decode()}"
        return {**{k: v for k, v in row.items() if k != "request"}, **out}

    def _write_output(self, job: Job, outputs: list[dict[str, Any]],
                      columns: list[dict[str, Any]]) -> None:
        cfg = job.body.get("outputConfig") or {}
        if "gcsDestination" in cfg:
            if self.storage is None:
                raise CloudError("this emulator was started without a Cloud Storage endpoint")
            prefix = str(cfg["gcsDestination"]["outputUriPrefix"]).rstrip("/")
            stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            folder = f"{prefix}/prediction-model-{stamp}"
            bucket, name = split_gs(f"{folder}/predictions.jsonl")
            lines = b"".join(orjson.dumps({k: o[k] for k in ("status", "processed_time",
                                                             "request", "response") if k in o})
                             + b"\n" for o in outputs)
            self.storage.write(bucket, name, lines)
            job.output_info = {"gcsOutputDirectory": folder}
        elif "bigqueryDestination" in cfg:
            if self.bigquery is None:
                raise CloudError("this emulator was started without a BigQuery endpoint")
            p, d, t = split_bq(cfg["bigqueryDestination"]["outputUri"])
            if self.bigquery.table(p, d, t) is not None:
                raise CloudError(f"output table {p}.{d}.{t} already exists; name a new table")
            fields = [*columns, {"name": "request", "type": "STRING"},
                      {"name": "response", "type": "STRING"},
                      {"name": "status", "type": "STRING"},
                      {"name": "processed_time", "type": "TIMESTAMP"}]
            self.bigquery.create_table(p, d, t, fields)
            rows = []
            for o in outputs:
                row = {c["name"]: o.get(c["name"]) for c in columns}
                row.update(request=orjson.dumps(o["request"]).decode(),
                           response=(orjson.dumps(o["response"]).decode()
                                     if "response" in o else None),
                           status=o["status"], processed_time=o["processed_time"])
                rows.append(row)
            self.bigquery.insert(p, d, t, rows)
            job.output_info = {"bigqueryOutputTable": f"bq://{p}.{d}.{t}",
                               "bigqueryOutputDataset": f"bq://{p}.{d}"}
        else:
            raise ValueError("the job names no gcsDestination or bigqueryDestination output")


def _fraction(value: float) -> float:
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"drop_after_create_rate must be between 0 and 1, not {value!r}")
    return float(value)


def _parse_filter(flt: str | None) -> list[tuple[str, str]]:
    """``display_name="x" AND labels.k="v" AND state=JOB_STATE_RUNNING`` -> pairs."""
    if not flt or not flt.strip():
        return []
    pairs = []
    for term in flt.replace(" and ", " AND ").split(" AND "):
        key, sep, value = term.partition("=")
        if not sep:
            raise ValueError(f"unsupported filter term {term!r}: use name=\"value\" terms "
                             "joined by AND")
        pairs.append((key.strip(), value.strip().strip('"')))
    return pairs


def _matches(job: Job, key: str, value: str) -> bool:
    if key in ("display_name", "displayName"):
        return bool(job.body.get("displayName") == value)
    if key == "state":
        return f"JOB_STATE_{job.state}" == value or job.state == value
    if key.startswith("labels."):
        return bool((job.body.get("labels") or {}).get(key[7:]) == value)
    if key == "model":
        return str(job.body.get("model", "")).endswith(value)
    raise ValueError(f"unsupported filter field {key!r}: display_name, state, labels.<key> "
                     "or model")
