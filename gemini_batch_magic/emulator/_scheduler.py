"""Background answering of batches: finds, claims and answers them, checkpointing.

:class:`BatchScheduler` finds the batches that need answering, claims each one (a lease in
its row: ``owner``, ``lease_until``, so two emulator processes sharing a data directory
never work on the same batch at once) and runs :func:`process_batch` for it on a thread
of its own.

Work is split into blocks of requests (:mod:`._answer`). Each block is answered, shuffled
(deterministically from the seed and the block number), appended to the output file, and
checkpointed in SQLite together with the input offset, so a restarted emulator resumes
exactly where the last checkpoint left off and produces byte-identical output.

Blocks of the built-in model are answered in worker processes (:mod:`._processes`) while
the batch's thread reads the next blocks and writes finished ones, in order; blocks of a
user ``responder`` (which may be any closure) and batches of a single block are answered
in the batch's thread.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import mmap
import os
import re
import socket
import sqlite3
import threading
import time
from typing import Any, BinaryIO

from . import _store
from ._answer import BlockSpec, _BlockReader
from ._model import Responder
from ._processes import AnswerPool, Ticket
from ._store import Store

#: Requests per block of the built-in model (a checkpoint and a worker-process job).
BLOCK_SIZE = 1024
#: Requests per block of a user ``responder`` (answered in-thread, often slowly).
RESPONDER_BLOCK_SIZE = 64
#: Seconds a claim on a batch lasts unless renewed (each checkpoint renews it).
LEASE_SECONDS = 15.0

_HOST = socket.gethostname()


class RunningOwners:
    """The owner tokens of the batch schedulers running in this process.

    Process-wide by nature: a lease taken by this process is alive exactly while the
    scheduler that took it runs, whichever emulator of the process asks. Schedulers
    :meth:`add` their token when they start and :meth:`discard` it when they close.
    """

    def __init__(self) -> None:
        self._tokens: set[str] = set()
        self._lock = threading.Lock()

    def add(self, token: str) -> None:
        with self._lock:
            self._tokens.add(token)

    def discard(self, token: str) -> None:
        with self._lock:
            self._tokens.discard(token)

    def __contains__(self, token: object) -> bool:
        with self._lock:
            return token in self._tokens


#: The one registry of this process (see :class:`RunningOwners`).
running_owners = RunningOwners()


def owner_alive(owner: str) -> bool:
    """Best effort: is the emulator that holds this lease still running?

    The engine has a twin of this check (``_runs._owner_alive``) on purpose: the emulator
    imports nothing of the rest of the package.
    """
    try:
        host, pid_s, token = owner.rsplit(":", 2)
        pid = int(pid_s)
    except ValueError:
        return True
    if host != _HOST:
        return True
    if pid == os.getpid():
        return token in running_owners
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def make_owner(token: str) -> str:
    return f"{_HOST}:{os.getpid()}:{token}"


def _open_rw(path: Any, offset: int) -> BinaryIO:
    """Opens ``path`` for appending after truncating it to ``offset`` bytes."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    f = os.fdopen(fd, "r+b", buffering=1 << 20)
    f.truncate(offset)
    f.seek(offset)
    return f


_FILE_REF = re.compile(rb'"file_?[uU]ri"\s*:\s*"[^"]*?files/([a-z0-9][a-z0-9-]*)"')


def named_files(store: Store, input_path: str, scope: str | None
                ) -> tuple[tuple[str, str, int, str, str | None], ...]:
    """The File API files a batch's input names in ``fileData`` parts, as the store has
    them now (visible to the batch's key, not expired): what its answers are made of."""
    ids: set[str] = set()
    try:
        with open(input_path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            if m.find(b"ileData") < 0 and m.find(b"ile_data") < 0:
                return ()
            ids = {x.decode() for x in _FILE_REF.findall(m)}
    except (OSError, ValueError):  # an empty file cannot be mapped
        return ()
    out = []
    for fid in sorted(ids):
        frow = store.get_file(fid, scope)
        if frow is None:
            continue
        try:
            sha = base64.b64decode(frow["sha256"]).decode()
        except (ValueError, UnicodeDecodeError):
            sha = str(frow["sha256"])
        source = frow["source_uri"] if "source_uri" in frow.keys() else None
        out.append((fid, str(frow["mime_type"]), int(frow["size_bytes"]), sha, source))
    return tuple(out)


def process_batch(
    store: Store,
    batch_id: str,
    owner: str,
    stop: threading.Event,
    responder: Responder | None,
    answers: AnswerPool | None = None,
) -> None:
    """Answers a claimed batch until it is done, cancelled, expired, or ``stop`` is set.

    Blocks are written and checkpointed strictly in order; the output is a pure function of
    the input, the seed and the responder, so a resumed run produces identical bytes. With
    ``answers`` (and no responder) blocks are answered in its worker processes, a few ahead
    of the one being written; without, each block is answered in this thread.
    """
    row = store.get_batch(batch_id)
    if row is None or row["owner"] != owner:
        return
    bdir = store.batch_dir(batch_id)
    bdir.mkdir(mode=0o700, exist_ok=True)
    out_path = bdir / "output.jsonl" if row["mode"] == "inline" else None
    if out_path is None:
        out_path = store.file_path(f"batch-{batch_id}")
    try:
        src = open(row["input_path"], "rb", buffering=1 << 20)
    except OSError:
        with store.conn() as c:
            c.execute(
                "UPDATE batches SET error_at = ?, error_code = 5, error_message = ?, owner = NULL"
                " WHERE id = ? AND owner = ?",
                (time.time(), f"Input file {row['input_file']} no longer exists.", batch_id, owner),
            )
        return
    model = str(row["model"])
    files = named_files(store, row["input_path"], row["owner_key"]) if row["kind"] != "embed" \
        else ()
    spec = BlockSpec(
        kind=row["kind"],
        inline=row["mode"] == "inline",
        model_id=model.split("/", 1)[1] if "/" in model else model,
        seed=int(row["seed"]),
        fail_rate=float(row["fail_rate"]),
        # Inline embedding requests carry no key or metadata: their order is the only way
        # to match results, so those are never shuffled.
        shuffle=bool(row["shuffle"]) and not (row["mode"] == "inline" and row["kind"] == "embed"),
        files=files,
    )
    block_size = RESPONDER_BLOCK_SIZE if responder is not None else BLOCK_SIZE
    expire_at = (
        float(row["create_time"]) + float(row["expire_after"])
        if row["expire_after"] is not None
        else None
    )
    in_offset = int(row["in_offset"])
    in_lines = int(row["in_lines"])
    processed = int(row["processed"])
    failed = int(row["failed"])
    block = int(row["block"])
    if answers is None:
        answers = AnswerPool(0)
    # A batch of one block is answered here: a worker process would cost more than it saves.
    in_process = (
        responder is None
        and answers.usable
        and int(row["request_count"]) - processed > BLOCK_SIZE
    )
    # Blocks read and handed to the pool but not yet written: (ticket, lines, bytes read).
    ahead = answers.processes + 1 if in_process else 1
    pending: collections.deque[tuple[Ticket, int, int]] = collections.deque()
    read_lines = in_lines
    read_block = block
    eof = False
    src.seek(in_offset)
    reader = _BlockReader(src)
    try:
        with (
            src,
            _open_rw(out_path, int(row["out_offset"])) as out,
            _open_rw(bdir / "fails.bin", int(row["fail_offset"])) as fails,
        ):
            out_offset = int(row["out_offset"])
            fail_offset = int(row["fail_offset"])
            while True:
                if stop.is_set() or (expire_at is not None and time.time() >= expire_at):
                    return
                while not eof and len(pending) < ahead:
                    segment, nlines = reader.next(block_size)
                    if not segment:
                        eof = True
                        break
                    ticket = answers.submit(
                        spec, segment, nlines, read_lines, read_block, responder,
                        in_process=in_process,
                    )
                    pending.append((ticket, nlines, len(segment)))
                    read_lines += nlines
                    read_block += 1
                if not pending:
                    break
                ticket, nlines, consumed = pending[0]
                result = ticket.result(stop)
                if result is None:
                    return
                pending.popleft()
                data, fbytes, block_failed = result
                if data:
                    out.write(data)
                    out_offset += len(data)
                    fails.write(fbytes)
                    fail_offset += len(fbytes)
                out.flush()
                fails.flush()
                in_offset += consumed
                in_lines += nlines
                processed += nlines
                failed += block_failed
                block += 1
                with store.conn() as c:
                    cur = c.execute(
                        "UPDATE batches SET processed = ?, failed = ?, in_offset = ?,"
                        " in_lines = ?, out_offset = ?, fail_offset = ?, block = ?,"
                        " lease_until = ? WHERE id = ? AND owner = ? AND override_state IS NULL",
                        (
                            processed,
                            failed,
                            in_offset,
                            in_lines,
                            out_offset,
                            fail_offset,
                            block,
                            time.time() + LEASE_SECONDS,
                            batch_id,
                            owner,
                        ),
                    )
                if cur.rowcount == 0:
                    return  # cancelled, deleted, or the lease was lost
    finally:
        for ticket, _n, _c in pending:
            ticket.cancel()
    # Input exhausted: publish completion. ``processed`` is authoritative for the request
    # count (blank lines are skipped; an estimate made at upload time could differ).
    with store.conn() as c:
        c.execute(
            "UPDATE batches SET done_at = ?, owner = NULL, lease_until = NULL,"
            " request_count = ? WHERE id = ? AND owner = ?",
            (time.time(), processed, batch_id, owner),
        )


class BatchScheduler:
    """Finds batches that need answering, claims them, and runs one thread per batch.

    The threads share one :class:`AnswerPool` of ``processes`` worker processes (started
    when a batch first needs them; 0 = answer everything in the threads).
    """

    def __init__(
        self,
        store: Store,
        responder: Responder | None,
        max_threads: int = 4,
        processes: int = 0,
    ) -> None:
        self.store = store
        self._token = _store.new_id(16)
        self.owner = make_owner(self._token)
        self.responder = responder
        self.max_threads = max_threads
        self.answers = AnswerPool(processes)
        self.stop = threading.Event()
        self.wake = threading.Event()
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()

        self._dispatcher = threading.Thread(
            target=self._run, name="gemini-emulator-dispatch", daemon=True
        )

    def start(self) -> None:
        running_owners.add(self._token)
        self._dispatcher.start()

    def poke(self) -> None:
        """Looks for work now rather than at the next round (a batch was just created)."""
        self.wake.set()

    def close(self) -> None:
        """Stops every batch thread and worker process and releases the claimed batches."""
        self.stop.set()
        self.wake.set()
        if self._dispatcher.is_alive():
            self._dispatcher.join(timeout=10)
        with self._lock:
            threads = list(self._threads.values())
        for t in threads:
            t.join(timeout=10)
        self.answers.close()

        with contextlib.suppress(Exception), self.store.conn() as c:
            c.execute(
                "UPDATE batches SET owner = NULL, lease_until = NULL WHERE owner = ?",
                (self.owner,),
            )
        running_owners.discard(self._token)

    def stats(self) -> dict[str, Any]:
        """Where blocks were answered: worker process ids and block counts."""
        answers = self.answers
        return {
            "processes": answers.pids(),
            "blocksAnsweredInProcesses": answers.blocks_in_processes,
            "blocksAnsweredInThreads": answers.blocks_in_threads,
        }

    def answering(self) -> list[str]:
        """Ids of the batches a thread of this scheduler is answering right now."""
        with self._lock:
            return sorted(b for b, t in self._threads.items() if t.is_alive())

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                self._dispatch()
            except sqlite3.Error:
                pass  # e.g. a locked database; retried on the next round
            self.wake.wait(0.25)
            self.wake.clear()

    def _dispatch(self) -> None:
        with self._lock:
            for bid in [b for b, t in self._threads.items() if not t.is_alive()]:
                del self._threads[bid]
            if len(self._threads) >= self.max_threads:
                return
        with self.store.conn() as c:
            rows = c.execute(
                "SELECT id, owner, lease_until, expire_after, create_time FROM batches"
                " WHERE done_at IS NULL AND override_state IS NULL AND error_at IS NULL"
                " ORDER BY create_time"
            ).fetchall()
        now = time.time()
        for r in rows:
            with self._lock:
                if r["id"] in self._threads or len(self._threads) >= self.max_threads:
                    continue
            if r["expire_after"] is not None and now >= r["create_time"] + r["expire_after"]:
                continue
            cur_owner = r["owner"]
            if cur_owner is not None and cur_owner != self.owner:
                lease = r["lease_until"] or 0.0
                if lease > now and owner_alive(cur_owner):
                    continue
            with self.store.conn() as c:
                cur = c.execute(
                    "UPDATE batches SET owner = ?, lease_until = ? WHERE id = ? AND owner IS ?"
                    " AND done_at IS NULL AND override_state IS NULL",
                    (self.owner, now + LEASE_SECONDS, r["id"], cur_owner),
                )
            if cur.rowcount != 1:
                continue
            t = threading.Thread(
                target=self._work, args=(r["id"],), name=f"gemini-emulator-{r['id']}", daemon=True
            )
            with self._lock:
                self._threads[r["id"]] = t
            t.start()

    def _work(self, batch_id: str) -> None:
        try:
            process_batch(
                self.store, batch_id, self.owner, self.stop, self.responder, self.answers
            )
        except Exception as exc:
            with contextlib.suppress(Exception), self.store.conn() as c:
                c.execute(
                    "UPDATE batches SET error_at = ?, error_code = 13, error_message = ?,"
                    " owner = NULL WHERE id = ? AND owner = ?",
                    (time.time(), f"Emulator worker error: {exc}", batch_id, self.owner),
                )
        finally:
            self.wake.set()
