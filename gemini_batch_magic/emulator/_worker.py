"""Background answering of batches: streams the input, writes the output, checkpoints.

Work is split into blocks of requests. Each block is answered, shuffled (deterministically
from the seed and the block number), appended to the output file, and checkpointed in
SQLite together with the input offset, so a restarted emulator resumes exactly where the
last checkpoint left off and produces byte-identical output.

Blocks of the built-in model are answered in worker processes (:mod:`._processes`) while
the batch's thread reads the next blocks and writes finished ones, in order; blocks of a
user ``responder`` (which may be any closure) and batches of a single block are answered
in the batch's thread.

Ownership of a batch is a lease in its row (``owner``, ``lease_until``), so two emulator
processes sharing a data directory never work on the same batch at once.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import os
import random
import socket
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Any, BinaryIO

import orjson

from . import _model
from ._model import Responder
from ._processes import AnswerPool, Ticket
from ._store import Store

_dumps = orjson.dumps
_RESPONSE_TEMPLATE = (
    b'{"candidates":[{"content":{"parts":[{"text":%s}],"role":"model"},"finishReason":"STOP",'
    b'"index":0}],"usageMetadata":{"promptTokenCount":%d,"candidatesTokenCount":%d,'
    b'"totalTokenCount":%d},"modelVersion":%s,"responseId":"%s"}'
)
BLOCK_SIZE = 1024
RESPONDER_BLOCK_SIZE = 64
LEASE_SECONDS = 15.0

_HOST = socket.gethostname()
# Owner tokens of the Emulator instances alive in this process.
LIVE_TOKENS: set[str] = set()


def owner_alive(owner: str) -> bool:
    """Best effort: is the emulator that holds this lease still running?"""
    try:
        host, pid_s, token = owner.rsplit(":", 2)
        pid = int(pid_s)
    except ValueError:
        return True
    if host != _HOST:
        return True
    if pid == os.getpid():
        return token in LIVE_TOKENS
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def make_owner(token: str) -> str:
    return f"{_HOST}:{os.getpid()}:{token}"


class _Answerer:
    """Turns one input line into one output line (bytes) and a failure flag."""

    def __init__(
        self,
        kind: str,
        inline: bool,
        model_id: str,
        responder: Responder | None,
    ) -> None:
        self.kind = kind
        self.inline = inline
        self.model_id = model_id
        self.responder = responder
        self._model_json = _dumps(model_id)

    def answer(self, line: bytes, index: int, forced_failure: bool) -> tuple[bytes, bool]:
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            return self._answer_slow(line, index, forced_failure)
        # Fast path: the built-in generate model on a well-formed line. The bytes are the
        # same as orjson.dumps of the dict that _model.default_generate builds.
        if (
            type(obj) is dict
            and not forced_failure
            and self.responder is None
            and self.kind == "generate"
        ):
            request = obj.get("request")
            if type(request) is dict:
                try:
                    text, pt, ct, rid = _model.echo_fields(request, self.model_id, index)
                except Exception:
                    return self._answer_slow(line, index, forced_failure)
                body = _RESPONSE_TEMPLATE % (
                    _dumps(text),
                    pt,
                    ct,
                    pt + ct,
                    self._model_json,
                    rid.encode(),
                )
                if self.inline:
                    md = obj.get("metadata")
                    if type(md) is dict:
                        return b'{"response":' + body + b',"metadata":' + _dumps(md) + b"}", False
                    return b'{"response":' + body + b"}", False
                if "key" in obj:
                    return b'{"key":' + _dumps(obj["key"]) + b',"response":' + body + b"}", False
                return b'{"response":' + body + b"}", False
        return self._answer_slow(line, index, forced_failure)

    def _answer_slow(self, line: bytes, index: int, forced_failure: bool) -> tuple[bytes, bool]:
        out: dict[str, Any] = {}
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            obj = None
            error: dict[str, Any] | None = {
                "code": 400,
                "message": f"Request {index + 1} is not valid JSON: {exc}.",
                "status": "INVALID_ARGUMENT",
            }
        else:
            error = None
        request = None
        if isinstance(obj, dict):
            if not self.inline and "key" in obj:
                out["key"] = obj["key"]
            request = obj.get("request")
            if not isinstance(request, dict):
                request = None
                error = {
                    "code": 400,
                    "message": f'Request {index + 1} has no "request" object.',
                    "status": "INVALID_ARGUMENT",
                }
        elif error is None:
            error = {
                "code": 400,
                "message": f"Request {index + 1} is not a JSON object.",
                "status": "INVALID_ARGUMENT",
            }
        if request is not None:
            if forced_failure:
                error = {"code": 500, "message": _model.FAIL_RATE_MESSAGE, "status": "INTERNAL"}
            else:
                try:
                    if self.kind == "embed":
                        response = _model.default_embed(request)
                    elif self.responder is not None:
                        response = self.responder(request, self.model_id)
                        if not isinstance(response, dict):
                            raise TypeError(
                                f"responder returned {type(response).__name__}, expected dict"
                            )
                    else:
                        response = _model.default_generate(request, self.model_id, index)
                    out["response"] = response
                except Exception as exc:
                    error = _model.error_dict(exc)
        if error is not None:
            out["error"] = error
        if self.inline and isinstance(obj, dict) and isinstance(obj.get("metadata"), dict):
            out["metadata"] = obj["metadata"]
        return orjson.dumps(out), error is not None


def _open_rw(path: Any, offset: int) -> BinaryIO:
    """Opens ``path`` for appending after truncating it to ``offset`` bytes."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    f = os.fdopen(fd, "r+b", buffering=1 << 20)
    f.truncate(offset)
    f.seek(offset)
    return f


@functools.lru_cache(maxsize=64)
def _permutation(seed: int, n: int) -> tuple[list[int], list[int]]:
    """A seeded permutation of ``range(n)`` (never the identity) and its inverse."""
    perm = list(range(n))
    random.Random(f"order:{seed}:{n}").shuffle(perm)
    if perm == sorted(perm):
        perm = perm[1:] + perm[:1]
    inv = [0] * n
    for p, i in enumerate(perm):
        inv[i] = p
    return perm, inv


@dataclass(frozen=True)
class BlockSpec:
    """Everything needed to answer a block of a batch (picklable for worker processes)."""

    kind: str
    inline: bool
    model_id: str
    seed: int
    fail_rate: float
    shuffle: bool


_ANSWERERS: dict[BlockSpec, _Answerer] = {}


def answer_block(
    spec: BlockSpec,
    lines: list[bytes],
    first_index: int,
    block: int,
    responder: Responder | None = None,
    stop: threading.Event | None = None,
) -> tuple[bytes, bytes, int] | None:
    """Answers one block: returns (output bytes, failure-bitmap bytes, failed count).

    A pure function of its arguments (the output is byte-identical in any process), so
    blocks can be answered in worker processes. Returns ``None`` when ``stop`` is set.
    """
    if responder is None:
        answerer = _ANSWERERS.get(spec)
        if answerer is None:
            if len(_ANSWERERS) > 64:
                _ANSWERERS.clear()
            answerer = _ANSWERERS[spec] = _Answerer(spec.kind, spec.inline, spec.model_id, None)
    else:
        answerer = _Answerer(spec.kind, spec.inline, spec.model_id, responder)
    n = len(lines)
    if spec.fail_rate > 0:
        frng = random.Random(f"fail:{spec.seed}:{block}")
        forced = [frng.random() < spec.fail_rate for _ in range(n)]
    else:
        forced = [False] * n
    answer = answerer.answer
    outs: list[bytes] = []
    bad: list[int] = []
    for j in range(n):
        data_j, is_bad = answer(lines[j], first_index + j, forced[j])
        outs.append(data_j)
        if is_bad:
            bad.append(j)
        if stop is not None and stop.is_set():
            return None
    if spec.shuffle and n > 1:
        perm, inv = _permutation(spec.seed, n)
        k = (block * 7919) % n
        outs = [outs[perm[(p + k) % n]] for p in range(n)]
        bad = [(inv[i] - k) % n for i in bad]
    if not outs:
        return b"", b"", 0
    bits = 0
    for p in bad:
        bits |= 1 << p
    return b"\n".join(outs) + b"\n", bits.to_bytes((n + 7) // 8, "little"), len(bad)


_BLANK_START = frozenset(b" \t\n\r\x0b\x0c")  # bytes.strip() whitespace


class _BlockReader:
    """Cuts the input into blocks of ``size`` non-blank lines (blank lines are skipped and
    belong to the block they precede), returned as one bytes segment each."""

    CHUNK = 4 << 20

    def __init__(self, src: BinaryIO) -> None:
        self.src = src
        self.buf = b""
        self.pos = 0
        self.eof = False

    def next(self, size: int) -> tuple[bytes, int]:
        """The next segment and its count of non-blank lines (``b""`` at the end)."""
        buf = self.buf
        start = s = self.pos
        n = 0
        while n < size:
            e = buf.find(b"\n", s)
            if e < 0:
                if not self.eof:
                    chunk = self.src.read(self.CHUNK)
                    if chunk:
                        buf = self.buf = buf[start:] + chunk
                        s -= start
                        start = 0
                        continue
                    self.eof = True
                if s >= len(buf):
                    break
                e = len(buf)  # a last line without a newline
            else:
                e += 1
            if buf[s] not in _BLANK_START or buf[s:e].strip():
                n += 1
            s = e
        self.pos = s
        return buf[start:s], n


def split_block(segment: bytes, nlines: int) -> list[bytes]:
    """The non-blank lines of a segment cut by :class:`_BlockReader`, each with its newline."""
    parts = segment.split(b"\n")
    last = parts.pop()
    lines = [p + b"\n" for p in parts]
    if last:
        lines.append(last)
    if len(lines) != nlines:
        lines = [ln for ln in lines if ln.strip()]
    return lines


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
    spec = BlockSpec(
        kind=row["kind"],
        inline=row["mode"] == "inline",
        model_id=model.split("/", 1)[1] if "/" in model else model,
        seed=int(row["seed"]),
        fail_rate=float(row["fail_rate"]),
        # Inline embedding requests carry no key or metadata: their order is the only way
        # to match results, so those are never shuffled.
        shuffle=bool(row["shuffle"]) and not (row["mode"] == "inline" and row["kind"] == "embed"),
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


class WorkerPool:
    """Finds batches that need answering, claims them, and runs one thread per batch.

    The threads share one :class:`AnswerPool` of ``processes`` worker processes (started
    when a batch first needs them; 0 = answer everything in the threads).
    """

    def __init__(
        self,
        store: Store,
        token: str,
        responder: Responder | None,
        max_threads: int = 4,
        processes: int = 0,
    ) -> None:
        self.store = store
        self.owner = make_owner(token)
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
        self._dispatcher.start()

    def poke(self) -> None:
        self.wake.set()

    def close(self) -> None:
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

    def stats(self) -> dict[str, Any]:
        """Where blocks were answered: worker process ids and block counts."""
        answers = self.answers
        return {
            "processes": answers.pids(),
            "blocksAnsweredInProcesses": answers.blocks_in_processes,
            "blocksAnsweredInThreads": answers.blocks_in_threads,
        }

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
