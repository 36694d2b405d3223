"""Answering blocks of requests: pure functions, and the loop a worker process runs.

:func:`answer_block` turns a block of input lines into output bytes, a failure bitmap and
a failure count. It is a pure function of its arguments (the synthetic model of
:mod:`._model`, the seed, the block number), so its output is byte-identical in the
emulator's threads and in any worker process. :class:`_BlockReader` and
:func:`split_block` cut a batch's input into such blocks.

:func:`serve` is the loop of a worker process (started by :mod:`._processes`): it reads
jobs from stdin and writes answers to stdout, in frames of an 8-byte little-endian length
followed by a pickle (the peer is always our own parent), written with one ``writev``. A
worker first sends ``(HELLO, pid)``; then, for each job ``(spec, segment, nlines,
first_index, block)`` (a segment is the block's input bytes, cheaper to move than a list
of lines), it answers ``("ok", (data, fail_bits, failed))`` or ``("error", message)``.

A worker process imports this module and :mod:`._model` only (plus the standard library
and orjson): never the scheduler, the store, the HTTP server or ``gemini_batch_magic``
itself, which would import pandas. So this module imports nothing else of the package.
"""

from __future__ import annotations

import functools
import os
import pickle
import queue
import random
import signal
import struct
import threading
from dataclasses import dataclass
from typing import IO, Any, BinaryIO

import orjson

from . import _model
from ._model import Responder

_dumps = orjson.dumps

_RESPONSE_TEMPLATE = (
    b'{"candidates":[{"content":{"parts":[{"text":%s}],"role":"model"},"finishReason":"STOP",'
    b'"index":0}],"usageMetadata":{"promptTokenCount":%d,"candidatesTokenCount":%d,'
    b'"totalTokenCount":%d},"modelVersion":%s,"responseId":"%s"}'
)

#: What answering one block gives: (output bytes, failure-bitmap bytes, failed count).
BlockResult = tuple[bytes, bytes, int]
#: Niceness added to worker processes (where the OS has one).
NICENESS = 5
#: The first frame a worker process sends: ``(HELLO, pid)``.
HELLO = "gemini-batch-emulator-answerer/1"
_HEADER = struct.Struct("<Q")
_writev = getattr(os, "writev", None)


class _Answerer:
    """Turns one input line into one output line (bytes) and a failure flag."""

    def __init__(
        self,
        kind: str,
        inline: bool,
        model_id: str,
        responder: Responder | None,
        files: _model.Files | None = None,
    ) -> None:
        self.files = files
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
                    text, pt, ct, rid = _model.echo_fields(request, self.model_id, index,
                                                                self.files)
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
                "code": 3,
                "message": f"Request {index + 1} is not valid JSON: {exc}.",
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
                error = {"code": 3, "message": f'Request {index + 1} has no "request" object.'}
        elif error is None:
            error = {"code": 3, "message": f"Request {index + 1} is not a JSON object."}
        if request is not None:
            if forced_failure:
                error = {"code": 13, "message": _model.FAIL_RATE_MESSAGE}
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
                        response = _model.default_generate(request, self.model_id, index,
                                                           self.files)
                    out["response"] = response
                except Exception as exc:
                    error = _model.error_dict(exc)
        if error is not None:
            out["error"] = error
        if self.inline and isinstance(obj, dict) and isinstance(obj.get("metadata"), dict):
            out["metadata"] = obj["metadata"]
        return orjson.dumps(out), error is not None


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
    #: the File API files the batch's requests name: (id, mime, size, sha256 hex, gs:// or
    #: None), read when the batch started (a file gone by then is an error for its rows)
    files: tuple[tuple[str, str, int, str, str | None], ...] = ()


@functools.lru_cache(maxsize=64)
def _builtin_answerer(spec: BlockSpec) -> _Answerer:
    """The built-in model's answerer for a spec (one per spec, kept between blocks)."""
    return _Answerer(spec.kind, spec.inline, spec.model_id, None, _files(spec))


def _files(spec: BlockSpec) -> _model.Files:
    return {f[0]: (f[1], f[2], f[3], f[4]) for f in spec.files}


def answer_block(
    spec: BlockSpec,
    lines: list[bytes],
    first_index: int,
    block: int,
    responder: Responder | None = None,
    stop: threading.Event | None = None,
) -> BlockResult | None:
    """Answers one block: returns (output bytes, failure-bitmap bytes, failed count).

    A pure function of its arguments (the output is byte-identical in any process), so
    blocks can be answered in worker processes. Returns ``None`` when ``stop`` is set.
    """
    if responder is None:
        answerer = _builtin_answerer(spec)
    else:
        answerer = _Answerer(spec.kind, spec.inline, spec.model_id, responder, _files(spec))
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


# -- framing and the worker process's loop ------------------------------------------------


def send_frame(fd: int, obj: Any) -> None:
    """Writes one frame to a blocking pipe in as few system calls as possible (each one
    releases the GIL, and waiting for the GIL again is what a busy process makes slow)."""
    payload = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    views = [memoryview(_HEADER.pack(len(payload))), memoryview(payload)]
    while views:
        if _writev is not None:
            n = _writev(fd, views)
        else:
            n = os.write(fd, views[0])
        while views and n >= len(views[0]):
            n -= len(views[0])
            views.pop(0)
        if n:
            views[0] = views[0][n:]


def recv_frame(f: IO[bytes], limit: int | None = None) -> Any:
    """The next frame's object; raises ``EOFError`` when the peer is gone (or, with
    ``limit``, announces a longer frame: not one of ours)."""
    header = f.read(_HEADER.size)
    if len(header) < _HEADER.size:
        raise EOFError("pipe closed")
    (n,) = _HEADER.unpack(header)
    if limit is not None and n > limit:
        raise EOFError(f"unexpected output {header!r}")
    payload = f.read(n)
    if len(payload) < n:
        raise EOFError("pipe closed mid-frame")
    return pickle.loads(payload)


def serve() -> None:
    """The worker process's loop: answers jobs from stdin until it closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Answering is background work: the emulator's API and its clients come first.
    try:
        os.nice(NICENESS)
    except (AttributeError, OSError):
        pass
    # Frames go to a private copy of stdout; stray prints land on stderr instead.
    out = os.dup(1)
    os.dup2(2, 1)
    inp = os.fdopen(0, "rb")

    # A writer thread sends an answer while the next block is being answered.
    replies: queue.Queue[Any] = queue.Queue(maxsize=1)

    def send_replies() -> None:
        try:
            while (reply := replies.get()) is not None:
                send_frame(out, reply)
        except OSError:
            os._exit(0)  # the emulator is gone

    writer = threading.Thread(target=send_replies, daemon=True)
    writer.start()
    replies.put((HELLO, os.getpid()))
    while True:
        try:
            spec, segment, nlines, first_index, block = recv_frame(inp)
        except EOFError:
            break
        try:
            result = answer_block(spec, split_block(segment, nlines), first_index, block)
            reply: tuple[str, Any] = ("ok", result)
        except Exception as exc:
            reply = ("error", str(exc))
        replies.put(reply)
    replies.put(None)
    writer.join()
