"""The run registry: a SQLite file at ``$GEMBATCH_HOME/registry.sqlite3`` and a folder per run.

Everything a later kernel needs to find, follow and finish a run lives here: the run's model,
configuration and content hash, its shards and their batch names, the original index values
of its rows (kept here, never sent as keys), its state, and its results as soon as they are
downloaded (``runs/<run_id>/results-<shard>.parquet``), so a finished run never needs a
second download. ``media_files`` remembers the media files uploaded (by SHA-256) and
registered (gs://), with their expiry, so later runs reuse them (see ``_uploads``). The request files a run sent are kept too (``requests-<shard>.jsonl``), so
``retry_failed()`` works from any kernel.

Several kernels may use one registry at once: WAL journal, a busy timeout, and every
read-modify-write inside one ``BEGIN IMMEDIATE`` transaction. The folder is 0700 and its
files 0600. The API key is never stored.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import random
import secrets
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ._state import state as _state
from .exceptions import RunNotFoundError

__all__ = [
    "LIVE",
    "OWNER",
    "STATE_RANK",
    "TERMINAL",
    "Registry",
    "RunBook",
    "RunRecord",
    "ShardRecord",
    "dump_index",
    "is_live",
    "load_index",
    "open_registry",
    "owner_alive",
]

#: A run or shard in one of these states is over; nothing more will happen to it.
TERMINAL = frozenset({"SUCCEEDED", "FAILED", "CANCELLED", "EXPIRED", "PARTIALLY_SUCCEEDED"})
#: A run or shard in one of these states is still being worked on.
LIVE = frozenset({"SUBMITTING", "PENDING", "RUNNING"})
def is_live(state: str) -> bool:
    """Whether a run or shard in ``state`` may still change: a known live state, or one
    this version does not know (the service added it; it is polled, never taken as over)."""
    return state not in TERMINAL


#: When shards end differently, the run shows the most serious state (an unknown state
#: ranks as RUNNING).
STATE_RANK = {
    "SUBMITTING": 0, "QUEUED": 1, "PENDING": 1, "RUNNING": 2, "PAUSED": 2, "UPDATING": 2,
    "CANCELLING": 2, "SUCCEEDED": 3, "PARTIALLY_SUCCEEDED": 4, "CANCELLED": 5, "EXPIRED": 6,
    "FAILED": 7,
}
#: Who is submitting a run: this process, as ``host:pid`` (kept with the run).
OWNER = f"{socket.gethostname()}:{os.getpid()}"


def owner_alive(owner: str | None) -> bool:
    """Whether the process named ``host:pid`` may still be working (another host: assume so)."""
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


def open_registry(home: Path) -> Registry:
    """The registry under ``home``, opened once per process (see :mod:`._state`)."""
    home = Path(home)
    with _state.lock:
        reg = _state.registries.get(home)
        if reg is None:
            reg = _state.registries[home] = Registry(home)
        return reg  # type: ignore[no-any-return]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id        TEXT PRIMARY KEY,
    created       REAL NOT NULL,
    updated       REAL NOT NULL,
    model         TEXT NOT NULL,
    display_name  TEXT NOT NULL,
    backend       TEXT NOT NULL,
    content_hash  TEXT NOT NULL,
    n_rows        INTEGER NOT NULL,
    n_requests    INTEGER NOT NULL,
    source        TEXT NOT NULL,
    state         TEXT NOT NULL,
    parent_id     TEXT,
    est_cost      REAL,
    config        TEXT NOT NULL,
    owner         TEXT,
    error         TEXT,
    index_blob    BLOB,
    positions     BLOB NOT NULL,
    key_fp        TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_hash ON runs(content_hash, backend);
CREATE TABLE IF NOT EXISTS shards (
    run_id        TEXT NOT NULL REFERENCES runs(run_id),
    shard         INTEGER NOT NULL,
    start         INTEGER NOT NULL,
    stop          INTEGER NOT NULL,
    n_bytes       INTEGER NOT NULL,
    request_file  TEXT NOT NULL,
    upload_name   TEXT,
    batch_name    TEXT,
    state         TEXT NOT NULL,
    succeeded     INTEGER NOT NULL DEFAULT 0,
    failed        INTEGER NOT NULL DEFAULT 0,
    pending       INTEGER NOT NULL DEFAULT 0,
    results_file  TEXT,
    error         TEXT,
    updated       REAL NOT NULL,
    results_lost  TEXT,
    PRIMARY KEY (run_id, shard)
);
CREATE INDEX IF NOT EXISTS shards_by_batch ON shards(batch_name);
-- A run's large immutable blobs, apart from its row in runs: SQLite rewrites a whole row
-- (overflow pages included) on every UPDATE, and runs is touched on every state change.
-- Registries written before this table keep them in runs.positions/index_blob (read there).
CREATE TABLE IF NOT EXISTS run_blobs (
    run_id        TEXT PRIMARY KEY REFERENCES runs(run_id),
    positions     BLOB NOT NULL,
    index_blob    BLOB
);
CREATE TABLE IF NOT EXISTS media_files (
    backend       TEXT NOT NULL,
    key_fp        TEXT NOT NULL,
    source        TEXT NOT NULL,  -- sha256:<hex> of an uploaded file, or the gs:// URI
    name          TEXT NOT NULL,  -- files/... on the service
    uri           TEXT NOT NULL,
    mime_type     TEXT,
    size_bytes    INTEGER,
    created       REAL NOT NULL,
    expire_time   REAL,
    PRIMARY KEY (backend, key_fp, source)
);
"""


@dataclass
class ShardRecord:
    """One batch job of a run."""

    run_id: str
    shard: int
    start: int  #: first request (position in the run's sent rows)
    stop: int  #: one past the last
    n_bytes: int
    request_file: str  #: file name inside the run folder
    upload_name: str | None = None  #: ``files/...`` of the uploaded request file (file batches)
    batch_name: str | None = None  #: ``batches/...`` once created
    state: str = "SUBMITTING"
    succeeded: int = 0
    failed: int = 0
    pending: int = 0
    results_file: str | None = None  #: file name inside the run folder, once downloaded
    error: str | None = None
    updated: float = field(default_factory=time.time)
    #: why the shard's rows have no answer although it ended, e.g. "results expired on the
    #: service" (its results were deleted before anyone downloaded them); None otherwise
    results_lost: str | None = None

    @property
    def n_requests(self) -> int:
        return self.stop - self.start


@dataclass
class RunRecord:
    """One user action: a DataFrame (or list of prompts) sent as one or more batch jobs."""

    run_id: str
    created: float
    updated: float
    model: str
    display_name: str
    backend: str
    content_hash: str
    n_rows: int  #: rows of the input (incl. skipped ones); for a retry, of the root input
    n_requests: int  #: requests actually sent
    source: str  #: ``inline`` or ``file``
    state: str
    parent_id: str | None
    est_cost: float | None
    config: dict[str, Any]
    owner: str | None
    error: str | None
    #: int64 positions (in the root input) of the rows sent, in order. Written with the run
    #: (in run_blobs, not in its row of runs); not read back with it (it can be megabytes):
    #: see :meth:`Registry.positions`.
    positions_blob: bytes = b""
    index_blob: bytes | None = None  #: pickled ``pd.Index`` of the root input (root runs only)
    shards: list[ShardRecord] = field(default_factory=list)
    #: one-way fingerprint of the API key the run was created with (never the key)
    key_fp: str | None = None


_RUN_COLS = (
    "run_id, created, updated, model, display_name, backend, content_hash, n_rows, n_requests, "
    "source, state, parent_id, est_cost, config, owner, error, key_fp"
)
_SHARD_COLS = (
    "run_id, shard, start, stop, n_bytes, request_file, upload_name, batch_name, state, "
    "succeeded, failed, pending, results_file, error, updated, results_lost"
)
#: Columns added after the first release: (table, column, type), added to older files.
_ADDED_COLUMNS = (("runs", "key_fp", "TEXT"), ("shards", "results_lost", "TEXT"))


def _secure_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(OSError):
        os.chmod(path, 0o700)


class Registry:
    """Access to the registry under ``home``; cheap to create, safe across threads and processes."""

    def __init__(self, home: Path) -> None:
        self.home = Path(home)
        self.path = self.home / "registry.sqlite3"
        _secure_dir(self.home)
        if not self.path.exists():
            fd = os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600)
            os.close(fd)
        self._initialise()

    def _initialise(self) -> None:
        """Switch a new file to WAL (once: it is persistent) and create the tables.

        Changing the journal mode needs the database to itself and does not wait on SQLite's
        busy handler, so two kernels opening a new registry at the same moment retry here.
        """
        deadline = time.monotonic() + 60.0
        while True:
            try:
                with self._connect() as con:
                    if con.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                        con.execute("PRAGMA journal_mode = WAL")
                    con.executescript(_SCHEMA)
                    self._add_columns(con)
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02 + random.random() * 0.05)

    @staticmethod
    def _add_columns(con: sqlite3.Connection) -> None:
        """Bring a registry written by an older version up to date (a column at a time)."""
        for table, column, kind in _ADDED_COLUMNS:
            have = {row[1] for row in con.execute(f"PRAGMA table_info({table})")}
            if column not in have:
                try:
                    con.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
                except sqlite3.OperationalError:
                    have = {row[1] for row in con.execute(f"PRAGMA table_info({table})")}
                    if column not in have:  # not another kernel adding it at the same time
                        raise

    # -- plumbing -------------------------------------------------------------------------
    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        con = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
        try:
            con.execute("PRAGMA busy_timeout = 60000")
            con.execute("PRAGMA synchronous = NORMAL")
            yield con
        finally:
            con.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (``BEGIN IMMEDIATE``): other writers wait until it ends."""
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    def run_dir(self, run_id: str) -> Path:
        """The folder holding a run's request files and cached results (created 0700)."""
        path = self.home / "runs" / run_id
        _secure_dir(path.parent)
        _secure_dir(path)
        return path

    def tmp_dir(self) -> Path:
        path = self.home / "tmp"
        _secure_dir(path)
        return path

    # -- writes ---------------------------------------------------------------------------
    @staticmethod
    def insert_run(con: sqlite3.Connection, run: RunRecord) -> None:
        con.execute(
            f"INSERT INTO runs ({_RUN_COLS}, positions, index_blob) "
            f"VALUES ({', '.join('?' * 19)})",
            (
                run.run_id, run.created, run.updated, run.model, run.display_name, run.backend,
                run.content_hash, run.n_rows, run.n_requests, run.source, run.state,
                run.parent_id, run.est_cost, orjson.dumps(run.config).decode(), run.owner,
                run.error, run.key_fp, b"", None,  # the blobs go to run_blobs
            ),
        )
        con.execute("INSERT INTO run_blobs (run_id, positions, index_blob) VALUES (?, ?, ?)",
                    (run.run_id, run.positions_blob, run.index_blob))
        for s in run.shards:
            con.execute(
                f"INSERT INTO shards ({_SHARD_COLS}) VALUES ({', '.join('?' * 16)})",
                (
                    s.run_id, s.shard, s.start, s.stop, s.n_bytes, s.request_file,
                    s.upload_name, s.batch_name, s.state, s.succeeded, s.failed, s.pending,
                    s.results_file, s.error, s.updated, s.results_lost,
                ),
            )

    def update_shard(self, run_id: str, shard: int, **values: Any) -> None:
        """Set columns of one shard (and touch the run's ``updated``)."""
        if not values:
            return
        values["updated"] = time.time()
        cols = ", ".join(f"{k} = ?" for k in values)
        with self.transaction() as con:
            con.execute(
                f"UPDATE shards SET {cols} WHERE run_id = ? AND shard = ?",
                (*values.values(), run_id, shard),
            )
            con.execute("UPDATE runs SET updated = ? WHERE run_id = ?", (values["updated"], run_id))

    def update_run(self, run_id: str, **values: Any) -> None:
        """Set columns of one run."""
        values["updated"] = time.time()
        cols = ", ".join(f"{k} = ?" for k in values)
        with self.transaction() as con:
            con.execute(f"UPDATE runs SET {cols} WHERE run_id = ?", (*values.values(), run_id))

    def claim(self, run_id: str, owner: str | None, new_owner: str) -> bool:
        """Take a run over from ``owner`` (compare-and-set); False if another process did first."""
        with self.transaction() as con:
            cur = con.execute(
                "UPDATE runs SET owner = ?, updated = ? WHERE run_id = ? AND owner IS ?",
                (new_owner, time.time(), run_id, owner),
            )
        return cur.rowcount == 1

    # -- reads ----------------------------------------------------------------------------
    @staticmethod
    def _run_from_row(row: tuple[Any, ...]) -> RunRecord:
        (run_id, created, updated, model, display_name, backend, content_hash, n_rows,
         n_requests, source, state, parent_id, est_cost, config, owner, error, key_fp) = row
        return RunRecord(
            run_id=run_id, created=created, updated=updated, model=model,
            display_name=display_name, backend=backend, content_hash=content_hash,
            n_rows=n_rows, n_requests=n_requests, source=source, state=state,
            parent_id=parent_id, est_cost=est_cost, config=orjson.loads(config), owner=owner,
            error=error, key_fp=key_fp,
        )

    @staticmethod
    def _shards(con: sqlite3.Connection, run_id: str) -> list[ShardRecord]:
        rows = con.execute(
            f"SELECT {_SHARD_COLS} FROM shards WHERE run_id = ? ORDER BY shard", (run_id,)
        ).fetchall()
        return [ShardRecord(*r) for r in rows]

    def get(self, run_id: str, *, con: sqlite3.Connection | None = None) -> RunRecord | None:
        """The run with this id, with its shards, or None."""
        if con is None:
            with self._connect() as c:
                return self.get(run_id, con=c)
        row = con.execute(f"SELECT {_RUN_COLS} FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            return None
        run = self._run_from_row(row)
        run.shards = self._shards(con, run_id)
        return run

    def positions(self, run_id: str) -> bytes:
        """The int64 positions blob of a run (immutable once written)."""
        row = self._blob(run_id, "positions")
        return b"" if row is None else bytes(row)

    def index_blob(self, run_id: str) -> bytes | None:
        """The pickled index of a root run's input, None for other runs."""
        row = self._blob(run_id, "index_blob")
        return None if row is None else bytes(row)

    def _blob(self, run_id: str, column: str) -> Any:
        """A column of the run's row in run_blobs, else (an older registry) in runs."""
        with self._connect() as con:
            row = con.execute(f"SELECT {column} FROM run_blobs WHERE run_id = ?",
                              (run_id,)).fetchone()
            if row is None:
                row = con.execute(f"SELECT {column} FROM runs WHERE run_id = ?",
                                  (run_id,)).fetchone()
        return None if row is None else row[0]

    def find_by_hash(
        self, content_hash: str, backend: str, con: sqlite3.Connection
    ) -> RunRecord | None:
        """The newest run with this content on this backend (not a cancelled one)."""
        row = con.execute(
            f"SELECT {_RUN_COLS} FROM runs WHERE content_hash = ? AND backend = ? "
            "AND state NOT IN ('CANCELLED', 'SUBMIT_FAILED') ORDER BY created DESC LIMIT 1",
            (content_hash, backend),
        ).fetchone()
        if row is None:
            return None
        run = self._run_from_row(row)
        run.shards = self._shards(con, run.run_id)
        return run

    def insert_or_find(
        self, make: Any, content_hash: str, backend: str, *, folder: Path, force: bool
    ) -> tuple[RunRecord, bool]:
        """Record a new run, unless an identical one exists (the dedupe transaction).

        In one transaction: the newest run with this content on this backend is returned as
        ``(record, False)`` unless ``force``; else a fresh run id is drawn, ``make(run_id)``
        builds the record, the request files in ``folder`` move to the run's folder and the
        run is inserted: ``(record, True)``.
        """
        with self.transaction() as con:
            existing = None if force else self.find_by_hash(content_hash, backend, con)
            if existing is not None:
                return existing, False
            run_id = secrets.token_hex(4)
            while self.get(run_id, con=con) is not None:
                run_id = secrets.token_hex(4)
            record: RunRecord = make(run_id)
            target = self.home / "runs" / run_id
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.replace(folder, target)
            self.insert_run(con, record)
            return record, True

    def find_run(self, content_hash: str, backend: str) -> RunRecord | None:
        """:meth:`find_by_hash` outside a transaction (a look, not a decision)."""
        with self._connect() as con:
            return self.find_by_hash(content_hash, backend, con)

    def find_by_batch(self, batch_name: str) -> str | None:
        """The run id owning ``batches/...``, or None."""
        with self._connect() as con:
            row = con.execute(
                "SELECT run_id FROM shards WHERE batch_name = ?", (batch_name,)
            ).fetchone()
        return None if row is None else row[0]

    def find_prefix(self, prefix: str) -> list[str]:
        """Run ids starting with ``prefix`` (so users may type a short prefix)."""
        with self._connect() as con:
            rows = con.execute(
                "SELECT run_id FROM runs WHERE run_id LIKE ? ORDER BY created DESC",
                (prefix.replace("%", "").replace("_", "") + "%",),
            ).fetchall()
        return [r[0] for r in rows]

    def children(self, run_id: str) -> list[str]:
        """Ids of the retry runs made from this run, oldest first."""
        with self._connect() as con:
            rows = con.execute(
                "SELECT run_id FROM runs WHERE parent_id = ? ORDER BY created", (run_id,)
            ).fetchall()
        return [r[0] for r in rows]

    def all_runs(self) -> list[RunRecord]:
        """Every run, newest first, with shards."""
        with self._connect() as con:
            rows = con.execute(f"SELECT {_RUN_COLS} FROM runs ORDER BY created DESC").fetchall()
            runs = [self._run_from_row(r) for r in rows]
            shards: dict[str, list[ShardRecord]] = {}
            for r in con.execute(f"SELECT {_SHARD_COLS} FROM shards ORDER BY run_id, shard"):
                shards.setdefault(r[0], []).append(ShardRecord(*r))
        for run in runs:
            run.shards = shards.get(run.run_id, [])
        return runs


class RunBook:
    """One run's record, kept in step with the registry (shared by the run's parts).

    The run object, its submission and its fetches all read and write the run through its
    book: :attr:`record` as last read, :meth:`set_shard` to record a shard's progress,
    :meth:`aggregate` to derive the run's state and error from its shards.
    """

    def __init__(self, registry: Registry, run_id: str) -> None:
        record = registry.get(run_id)
        if record is None:
            raise RunNotFoundError(
                f"no run {run_id!r} in the registry at {registry.home}", run_id=run_id)
        self.registry = registry
        self.run_id = run_id
        self.record: RunRecord = record
        self.lock = threading.RLock()  #: held while the run is refreshed, cancelled, ...

    def reload(self) -> None:
        """Read the record again (another thread or process may have changed it)."""
        rec = self.registry.get(self.run_id)
        if rec is not None:
            self.record = rec

    def set_shard(self, shard: ShardRecord, **values: Any) -> None:
        """Set fields of one shard, in memory and in the registry."""
        for k, v in values.items():
            setattr(shard, k, v)
        self.registry.update_shard(self.run_id, shard.shard, **values)

    def aggregate(self, *, reload: bool = True) -> None:
        """Derive the run's state and error from its shards (as the registry has them)."""
        with self.lock:
            if reload:
                self.reload()
            states = [s.state for s in self.record.shards]
            live = [s for s in states if is_live(s)]
            pool = live or states
            state = max(pool, key=lambda s: STATE_RANK.get(s, 2)) if pool else "SUCCEEDED"
            errors = [f"shard {s.shard}: {s.error}" for s in self.record.shards if s.error]
            error = "; ".join(errors) or None
            if state != self.record.state or error != self.record.error:
                self.registry.update_run(self.run_id, state=state, error=error)
                self.record.state, self.record.error = state, error

    def run_dir(self) -> Path:
        return self.registry.run_dir(self.run_id)


def dump_index(index: Any) -> bytes:
    """Serialise a ``pd.Index`` exactly (any hashable values, MultiIndex, timestamps)."""
    return pickle.dumps(index, protocol=pickle.HIGHEST_PROTOCOL)


def load_index(blob: bytes) -> Any:
    """The ``pd.Index`` saved by :func:`dump_index` (our own file, 0600, in a 0700 folder)."""
    return pickle.loads(blob)
