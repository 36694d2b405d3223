"""Persistence: SQLite metadata (WAL) plus file bytes on disk under ``data_dir``.

Layout::

    data_dir/emulator.sqlite3      metadata (files, uploads, batches)
    data_dir/files/<id>.bin        bytes of uploaded and generated files
    data_dir/uploads/<uid>.part    bytes of resumable uploads in progress
    data_dir/batches/<id>/         per-batch work files (input copy, output, failure bitmap)

Every batch stores the configuration it was created with (pending time, rate, fail rate,
seed, ...), so its visible progress is a pure function of the stored row and the clock, and
any emulator process opening the same directory serves it identically.
"""

from __future__ import annotations

import base64
import contextlib
import math
import os
import queue
import secrets
import sqlite3
import string
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

_ID_ALPHABET = string.ascii_lowercase + string.digits

STATE_PENDING = "BATCH_STATE_PENDING"
STATE_RUNNING = "BATCH_STATE_RUNNING"
STATE_SUCCEEDED = "BATCH_STATE_SUCCEEDED"
STATE_FAILED = "BATCH_STATE_FAILED"
STATE_CANCELLED = "BATCH_STATE_CANCELLED"
STATE_EXPIRED = "BATCH_STATE_EXPIRED"
TERMINAL_STATES = frozenset({STATE_SUCCEEDED, STATE_FAILED, STATE_CANCELLED, STATE_EXPIRED})

#: Columns added since the first schema: (table, column, declaration). A data directory
#: written by an older emulator gets them when it is opened (its rows keep the old
#: behaviour: visible to every key, counts advancing live, files kept forever).
_ADDED_COLUMNS = (
    ("files", "expire_time", "REAL"),
    ("files", "owner_key", "TEXT"),
    ("uploads", "expire_time", "REAL"),
    ("uploads", "owner_key", "TEXT"),
    ("batches", "progress", "TEXT NOT NULL DEFAULT 'live'"),
    ("batches", "results_ttl", "REAL"),
    ("batches", "owner_key", "TEXT"),
    ("files", "source_uri", "TEXT"),
)
_FILE_COLUMNS = (
    "id, display_name, mime_type, size_bytes, sha256, create_time, source, line_count,"
    " expire_time, owner_key"
)
#: A finished batch's ``updateTime`` is this many nanoseconds off its ``endTime`` (the
#: service's two stamps differ by tens of nanoseconds in every recording).
UPDATE_AFTER_END_NS = -41

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id TEXT PRIMARY KEY,
    display_name TEXT,
    mime_type TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    create_time REAL NOT NULL,
    source TEXT NOT NULL,
    line_count INTEGER,
    expire_time REAL,
    owner_key TEXT
);
CREATE INDEX IF NOT EXISTS files_by_time ON files (create_time, id);
CREATE TABLE IF NOT EXISTS uploads (
    id TEXT PRIMARY KEY,
    file_id TEXT NOT NULL,
    display_name TEXT,
    mime_type TEXT NOT NULL,
    size_bytes INTEGER,
    create_time REAL NOT NULL,
    expire_time REAL,
    owner_key TEXT
);
CREATE TABLE IF NOT EXISTS batches (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    mode TEXT NOT NULL,
    model TEXT NOT NULL,
    display_name TEXT,
    input_file TEXT,
    input_path TEXT NOT NULL,
    request_count INTEGER NOT NULL,
    create_time REAL NOT NULL,
    pending_seconds REAL NOT NULL,
    rate REAL NOT NULL,
    expire_after REAL,
    fail_rate REAL NOT NULL,
    seed INTEGER NOT NULL,
    shuffle INTEGER NOT NULL,
    processed INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    in_offset INTEGER NOT NULL DEFAULT 0,
    in_lines INTEGER NOT NULL DEFAULT 0,
    out_offset INTEGER NOT NULL DEFAULT 0,
    fail_offset INTEGER NOT NULL DEFAULT 0,
    block INTEGER NOT NULL DEFAULT 0,
    done_at REAL,
    error_code INTEGER,
    error_message TEXT,
    error_at REAL,
    override_state TEXT,
    override_time REAL,
    owner TEXT,
    lease_until REAL,
    settled_state TEXT,
    settled_end REAL,
    settled_k INTEGER,
    settled_failed INTEGER,
    progress TEXT NOT NULL DEFAULT 'live',
    results_ttl REAL,
    owner_key TEXT
);
CREATE INDEX IF NOT EXISTS batches_by_time ON batches (create_time, id);
"""


def new_id(length: int) -> str:
    """A random id of lowercase letters and digits (safe in every SDK name rule)."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


def rfc3339(ts: float, offset_ns: int = 0) -> str:
    """Formats a POSIX timestamp as RFC 3339 UTC with nanoseconds (9 fractional digits, as
    the service's batch stamps) and a ``Z`` suffix, ``offset_ns`` nanoseconds later."""
    seconds, nanos = divmod(round(ts * 1e9) + offset_ns, 10**9)
    day = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{day}.{nanos:09d}Z"


def rfc3339_micros(ts: float) -> str:
    """RFC 3339 UTC with microseconds (the service's ``createTime`` of a file)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def visible(row: sqlite3.Row, scope: str | None) -> bool:
    """Whether a file or batch row is visible to the key scope ``scope`` (None = any)."""
    return scope is None or row["owner_key"] is None or row["owner_key"] == scope


def encode_page_token(create_time: float, item_id: str) -> str:
    raw = f"{create_time!r}|{item_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(token: str) -> tuple[float, str]:
    """Decodes a page token; raises ``ValueError`` when it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        ts, item_id = raw.split("|", 1)
        return float(ts), item_id
    except Exception as exc:
        raise ValueError("Invalid page token.") from exc


@dataclass
class BatchView:
    """The visible state of a batch at one instant (computed, never stored as such)."""

    state: str
    request_count: int
    succeeded: int
    failed: int
    pending: int
    update_time: float
    end_time: float | None
    error: dict[str, Any] | None


class Store:
    """Thread-safe access to the emulator's data directory (shareable between processes)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        for sub in ("files", "uploads", "batches"):
            d = data_dir / sub
            d.mkdir(mode=0o700, exist_ok=True)
            with contextlib.suppress(OSError):
                os.chmod(d, 0o700)
        self.db_path = data_dir / "emulator.sqlite3"
        # SQLite gives its -wal/-shm files the permissions of the database file.
        os.close(os.open(self.db_path, os.O_RDWR | os.O_CREAT, 0o600))
        self._pool: queue.LifoQueue[sqlite3.Connection] = queue.LifoQueue()
        self._all: list[sqlite3.Connection] = []
        self._closed = False
        with self.conn() as c:
            c.execute("PRAGMA journal_mode=WAL")
            c.executescript(_SCHEMA)
            for table, column, decl in _ADDED_COLUMNS:
                have = {r["name"] for r in c.execute(f"PRAGMA table_info({table})")}
                if column not in have:
                    with contextlib.suppress(sqlite3.OperationalError):  # a sibling added it
                        c.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")

    # -- connections ---------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        c = sqlite3.connect(
            str(self.db_path), timeout=30.0, isolation_level=None, check_same_thread=False
        )
        c.row_factory = sqlite3.Row
        c.execute("PRAGMA busy_timeout=30000")
        c.execute("PRAGMA synchronous=NORMAL")
        self._all.append(c)
        return c

    @contextlib.contextmanager
    def conn(self) -> Iterator[sqlite3.Connection]:
        """Borrows a connection (autocommit mode; use ``tx`` for multi-statement work)."""
        try:
            c = self._pool.get_nowait()
        except queue.Empty:
            c = self._connect()
        try:
            yield c
        finally:
            if self._closed:
                c.close()
            else:
                self._pool.put(c)

    @contextlib.contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (``BEGIN IMMEDIATE``), committed on success."""
        with self.conn() as c:
            c.execute("BEGIN IMMEDIATE")
            try:
                yield c
            except BaseException:
                c.execute("ROLLBACK")
                raise
            c.execute("COMMIT")

    def close(self) -> None:
        self._closed = True
        for c in self._all:
            with contextlib.suppress(Exception):
                c.close()
        self._all.clear()

    # -- paths ---------------------------------------------------------------------------

    def file_path(self, file_id: str) -> Path:
        return self.data_dir / "files" / f"{file_id}.bin"

    def upload_path(self, upload_id: str) -> Path:
        return self.data_dir / "uploads" / f"{upload_id}.part"

    def batch_dir(self, batch_id: str) -> Path:
        return self.data_dir / "batches" / batch_id

    # -- files ---------------------------------------------------------------------------

    def get_file(self, file_id: str, scope: str | None = None) -> sqlite3.Row | None:
        """The file's row; ``None`` when it does not exist, has expired (it is deleted
        then) or is not visible to the key scope ``scope``."""
        with self.conn() as c:
            row: sqlite3.Row | None = c.execute(
                "SELECT * FROM files WHERE id = ?", (file_id,)
            ).fetchone()
        if row is None:
            return None
        if row["expire_time"] is not None and row["expire_time"] <= time.time():
            self.delete_file(file_id)
            return None
        return row if visible(row, scope) else None

    def sweep_expired_files(self) -> None:
        """Deletes every file whose lifetime is over (rows and bytes)."""
        with self.conn() as c:
            ids = [
                r["id"]
                for r in c.execute(
                    "SELECT id FROM files WHERE expire_time IS NOT NULL AND expire_time <= ?",
                    (time.time(),),
                )
            ]
        for file_id in ids:
            self.delete_file(file_id)

    def list_files(
        self, page_size: int, token: str | None, scope: str | None = None
    ) -> tuple[list[sqlite3.Row], str | None]:
        self.sweep_expired_files()
        return self._page("files", page_size, token, scope)

    def all_files(self) -> list[sqlite3.Row]:
        self.sweep_expired_files()
        with self.conn() as c:
            return c.execute("SELECT * FROM files ORDER BY create_time DESC, id DESC").fetchall()

    def uploaded_bytes(self, scope: str | None) -> tuple[int, int]:
        """(bytes, count) of the live uploaded files of the key scope ``scope``."""
        self.sweep_expired_files()
        sql = "SELECT COALESCE(SUM(size_bytes), 0), COUNT(*) FROM files WHERE source = 'UPLOADED'"
        args: list[Any] = []
        if scope is not None:
            sql += " AND (owner_key IS NULL OR owner_key = ?)"
            args.append(scope)
        with self.conn() as c:
            total, count = c.execute(sql, args).fetchone()
        return int(total), int(count)

    def _page(
        self, table: str, page_size: int, token: str | None, scope: str | None = None
    ) -> tuple[list[sqlite3.Row], str | None]:
        sql = f"SELECT * FROM {table} WHERE 1"
        args: list[Any] = []
        if scope is not None:
            sql += " AND (owner_key IS NULL OR owner_key = ?)"
            args.append(scope)
        if token:
            ts, item_id = decode_page_token(token)
            sql += " AND (create_time < ? OR (create_time = ? AND id < ?))"
            args += [ts, ts, item_id]
        sql += " ORDER BY create_time DESC, id DESC LIMIT ?"
        args.append(page_size + 1)
        with self.conn() as c:
            rows = c.execute(sql, args).fetchall()
        next_token = None
        if len(rows) > page_size:
            rows = rows[:page_size]
            last = rows[-1]
            next_token = encode_page_token(last["create_time"], last["id"])
        return rows, next_token

    def insert_file(
        self,
        file_id: str,
        display_name: str | None,
        mime_type: str,
        size_bytes: int,
        sha256: str,
        source: str,
        create_time: float | None = None,
        line_count: int | None = None,
        expire_time: float | None = None,
        owner_key: str | None = None,
        source_uri: str | None = None,
    ) -> bool:
        """Inserts a file row; returns False when the id is already taken.

        ``line_count`` is the number of non-blank lines when it is known cheaply;
        ``expire_time`` when the file is gone (None = never); ``owner_key`` the key scope
        that sees it (None = every key).
        """
        with self.conn() as c:
            cur = c.execute(
                f"INSERT OR IGNORE INTO files ({_FILE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    file_id,
                    display_name,
                    mime_type,
                    size_bytes,
                    sha256,
                    create_time if create_time is not None else time.time(),
                    source,
                    line_count,
                    expire_time,
                    owner_key,
                ),
            )
            if cur.rowcount == 1 and source_uri is not None:
                c.execute("UPDATE files SET source_uri = ? WHERE id = ?", (source_uri, file_id))
            return cur.rowcount == 1

    def delete_file(self, file_id: str) -> bool:
        with self.conn() as c:
            cur = c.execute("DELETE FROM files WHERE id = ?", (file_id,))
        if cur.rowcount:
            with contextlib.suppress(FileNotFoundError):
                self.file_path(file_id).unlink()
            return True
        return False

    # -- uploads -------------------------------------------------------------------------

    def insert_upload(
        self,
        upload_id: str,
        file_id: str,
        display_name: str | None,
        mime_type: str,
        size_bytes: int | None,
        ttl: float | None = None,
        owner_key: str | None = None,
    ) -> None:
        """Records an upload session; the file it makes lives ``ttl`` seconds from now."""
        now = time.time()
        with self.conn() as c:
            c.execute(
                "INSERT INTO uploads (id, file_id, display_name, mime_type, size_bytes,"
                " create_time, expire_time, owner_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    upload_id,
                    file_id,
                    display_name,
                    mime_type,
                    size_bytes,
                    now,
                    now + ttl if ttl is not None else None,
                    owner_key,
                ),
            )

    def get_upload(self, upload_id: str) -> sqlite3.Row | None:
        with self.conn() as c:
            row: sqlite3.Row | None = c.execute(
                "SELECT * FROM uploads WHERE id = ?", (upload_id,)
            ).fetchone()
            return row

    def delete_upload(self, upload_id: str) -> None:
        with self.conn() as c:
            c.execute("DELETE FROM uploads WHERE id = ?", (upload_id,))
        with contextlib.suppress(FileNotFoundError):
            self.upload_path(upload_id).unlink()

    # -- batches -------------------------------------------------------------------------

    def insert_batch(self, values: dict[str, Any]) -> None:
        cols = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        with self.conn() as c:
            c.execute(f"INSERT INTO batches ({cols}) VALUES ({marks})", list(values.values()))

    def get_batch(self, batch_id: str) -> sqlite3.Row | None:
        with self.conn() as c:
            row: sqlite3.Row | None = c.execute(
                "SELECT * FROM batches WHERE id = ?", (batch_id,)
            ).fetchone()
            return row

    def list_batches(
        self, page_size: int, token: str | None, scope: str | None = None
    ) -> tuple[list[sqlite3.Row], str | None]:
        return self._page("batches", page_size, token, scope)

    def all_batches(self) -> list[sqlite3.Row]:
        with self.conn() as c:
            return c.execute("SELECT * FROM batches ORDER BY create_time DESC, id DESC").fetchall()

    def unsettled_batches(self) -> list[sqlite3.Row]:
        with self.conn() as c:
            return c.execute("SELECT * FROM batches WHERE settled_state IS NULL").fetchall()

    def set_override(
        self,
        batch_id: str,
        state: str,
        when: float,
        only_live: bool,
        error: tuple[int, str] | None = None,
    ) -> bool:
        """Forces a terminal state. With ``only_live`` it fails for a finished batch.

        ``error`` is the ``(code, message)`` of the operation error a FAILED batch shows.
        """
        with self.tx() as c:
            row = c.execute("SELECT * FROM batches WHERE id = ?", (batch_id,)).fetchone()
            if row is None:
                return False
            if only_live and batch_view(self, row, when).state in TERMINAL_STATES:
                return False
            c.execute(
                "UPDATE batches SET override_state = ?, override_time = ?, settled_state = NULL,"
                " settled_end = NULL, settled_k = NULL, settled_failed = NULL WHERE id = ?",
                (state, when, batch_id),
            )
            if error is not None:
                c.execute(
                    "UPDATE batches SET error_code = ?, error_message = ? WHERE id = ?",
                    (error[0], error[1], batch_id),
                )
            return True

    def delete_batch(self, batch_id: str) -> bool:
        with self.conn() as c:
            cur = c.execute("DELETE FROM batches WHERE id = ?", (batch_id,))
        if not cur.rowcount:
            return False
        d = self.batch_dir(batch_id)
        if d.exists():
            for p in d.iterdir():
                with contextlib.suppress(OSError):
                    p.unlink()
            with contextlib.suppress(OSError):
                d.rmdir()
        # An output file that was never published is removed too.
        results_id = f"batch-{batch_id}"
        if self.get_file(results_id) is None:
            with contextlib.suppress(FileNotFoundError):
                self.file_path(results_id).unlink()
        return True

    def settle(self, row: sqlite3.Row, view: BatchView) -> None:
        """Records a terminal state once observed, and publishes the results file."""
        if row["settled_state"] is not None or view.state not in TERMINAL_STATES:
            return
        k = view.succeeded + view.failed
        with self.conn() as c:
            cur = c.execute(
                "UPDATE batches SET settled_state = ?, settled_end = ?, settled_k = ?,"
                " settled_failed = ? WHERE id = ? AND settled_state IS NULL",
                (view.state, view.end_time, k, view.failed, row["id"]),
            )
        if not cur.rowcount or row["mode"] != "file":
            return
        if view.state == STATE_SUCCEEDED:
            self.publish_results(row, view.end_time or time.time())
        elif view.state == STATE_CANCELLED and k > 0:
            # A cancelled batch keeps the answers it had produced: its results file holds
            # the first k answered lines (those its counts describe), written to a new
            # file so an answering thread still writing to the old one cannot touch it.
            fresh = self.get_batch(row["id"])
            out_offset = int(fresh["out_offset"]) if fresh is not None else 0
            if keep_first_lines(self.file_path(f"batch-{row['id']}"), out_offset, k):
                self.publish_results(row, view.end_time or time.time())

    def publish_results(self, row: sqlite3.Row, when: float) -> None:
        import hashlib

        file_id = f"batch-{row['id']}"
        path = self.file_path(file_id)
        h = hashlib.sha256()
        size = 0
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
                size += len(chunk)
        sha = base64.b64encode(h.hexdigest().encode()).decode()
        ttl = row["results_ttl"]
        self.insert_file(
            file_id,
            None,
            "application/jsonl",
            size,
            sha,
            "GENERATED",
            when,
            expire_time=when + float(ttl) if ttl is not None else None,
            owner_key=row["owner_key"],
        )


def keep_first_lines(path: Path, size: int, k: int) -> bool:
    """Replaces ``path`` by a new file holding the first ``k`` lines of its first ``size``
    bytes (a writer still holding the old file cannot touch the new one). False when
    ``path`` does not exist."""
    part = path.with_suffix(".cancelled")
    try:
        with open(path, "rb") as src:
            lines = src.read(size).split(b"\n")[:k]
    except FileNotFoundError:
        return False
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(b"".join(ln + b"\n" for ln in lines if ln))
    os.replace(part, path)
    return True


def prefix_failures(fail_path: Path, k: int) -> int:
    """Counts failed requests among the first ``k`` answered (from the failure bitmap)."""
    if k <= 0:
        return 0
    nbytes = (k + 7) // 8
    try:
        with open(fail_path, "rb") as f:
            data = f.read(nbytes)
    except FileNotFoundError:
        return 0
    full = k // 8
    count = int.from_bytes(data[:full], "little").bit_count()
    rem = k % 8
    if rem and len(data) > full:
        count += (data[full] & ((1 << rem) - 1)).bit_count()
    return count


def batch_view(store: Store, row: sqlite3.Row, now: float) -> BatchView:
    """The visible state of a batch at ``now``: a pure function of the row and the clock."""
    n = int(row["request_count"])
    processed = int(row["processed"])
    if row["settled_state"] is not None:
        settled = row["settled_state"]
        settled_end = float(row["settled_end"])
        sk = int(row["settled_k"])
        sfailed = int(row["settled_failed"])
        return BatchView(
            settled,
            n,
            sk - sfailed,
            sfailed,
            n - sk,
            settled_end,
            settled_end,
            _op_error(row, settled),
        )

    t0 = float(row["create_time"])
    run_at = t0 + float(row["pending_seconds"])
    rate = float(row["rate"])

    def k_at(t: float) -> int:
        if t < run_at:
            return 0
        if rate <= 0:
            return n
        return min(n, math.floor((t - run_at) * rate + 1e-9))

    end: float | None = None
    if row["override_state"] is not None and row["override_state"] not in TERMINAL_STATES:
        # a state the service added (PAUSED...): frozen where it was set, not over
        held = float(row["override_time"])
        k = min(k_at(held), processed)
        failed = int(row["failed"]) if k >= processed else 0
        return BatchView(row["override_state"], n, k - failed, failed, n - k, held, None, None)
    if row["override_state"] is not None:
        state = row["override_state"]
        end = float(row["override_time"])
        k = min(k_at(end), processed)
    elif row["error_at"] is not None and now >= float(row["error_at"]):
        state = STATE_FAILED
        end = max(float(row["error_at"]), t0)
        k = min(k_at(end), processed)
    else:
        complete_at = None
        if row["done_at"] is not None:
            complete_at = max(run_at + (n / rate if rate > 0 else 0.0), float(row["done_at"]))
        expire_at = t0 + float(row["expire_after"]) if row["expire_after"] is not None else None
        if (
            expire_at is not None
            and now >= expire_at
            and (complete_at is None or complete_at > expire_at)
        ):
            state, end = STATE_EXPIRED, expire_at
            k = min(k_at(expire_at), processed)
        elif complete_at is not None and now >= complete_at:
            state, end, k = STATE_SUCCEEDED, complete_at, n
        elif now >= run_at:
            state = STATE_RUNNING
            # progress "end": nothing is reported until the batch ends (as recorded).
            k = min(k_at(now), processed) if row["progress"] == "live" else 0
        else:
            state, k = STATE_PENDING, 0
    if k >= processed:
        failed = int(row["failed"])
    else:
        failed = prefix_failures(store.batch_dir(row["id"]) / "fails.bin", k)
    if end is not None:
        update = end
    elif state == STATE_RUNNING:
        update = run_at + (k / rate if rate > 0 and row["progress"] == "live" else 0.0)
    else:
        update = t0
    return BatchView(state, n, k - failed, failed, n - k, update, end, _op_error(row, state))


def _op_error(row: sqlite3.Row, state: str) -> dict[str, Any] | None:
    if state == STATE_CANCELLED:
        return {"code": 1, "message": "The batch was cancelled."}
    if state == STATE_FAILED:
        if row["error_message"]:
            return {"code": int(row["error_code"] or 13), "message": row["error_message"]}
        return {"code": 13, "message": "The batch failed (simulated by the emulator)."}
    return None
