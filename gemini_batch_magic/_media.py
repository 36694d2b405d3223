"""Media columns -> request parts: values checked, typed, hashed, and placed inline or uploaded.

:func:`collect` reads the media columns of the rows a run sends (``media="photo"`` or
``media=["scan", "chart"]``) and returns :class:`MediaLines`, the request lines of a media
run. Every cell is one of:

=====================================  ===================================================
a local path (``str``, ``pathlib.Path``)  read, hashed (SHA-256), typed from its bytes
``bytes`` / ``bytearray``                 hashed and typed from its bytes
``https://...``                           sent as ``fileData.fileUri`` as it is
``gs://bucket/object``                    registered with the File API at submit time
``files/<id>``                            an existing File API file, looked up at submit
None / NaN                                no part for this row
=====================================  ===================================================

Anything else (an int, a directory, a missing or unreadable file, a type Gemini does not
read, a file over ``media_max_file_bytes``, more than ``media_max_total_bytes`` to upload)
raises :class:`~gemini_batch_magic.InputError` naming the rows, before anything is written,
uploaded or sent. The MIME type comes from the content (:mod:`._mime`) and the suffix;
``mime_type=`` (one type, or ``{column: type}``) overrides it.

Parts follow the prompt's text, in the order the columns are named. A file goes inline
(``inlineData``, base64) when its size times the rows using it is at most
``media_inline_bytes`` and the request stays under the service's 20 MB a request; any other
file is uploaded once (per run, and across runs while the service keeps it: see
:mod:`._uploads`) and referenced as ``fileData``. The request files keep a placeholder
(``gembatch-upload:<sha256>``, ``gembatch-gcs:gs://...``, ``gembatch-file:files/...``)
where the service's URI goes: they, and so the run's content hash, depend only on the
files' contents; :mod:`._uploads` puts the URIs in when the run is submitted.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd

from . import _mime, _pricing
from ._config import settings
from ._requests import RequestFile, ShardPlanner
from .exceptions import ColumnError, InputError, RequestTooLargeError

__all__ = ["MANIFEST", "PLACEHOLDER", "Blob", "MediaLines", "RawLines", "collect",
           "read_requests", "write_lines"]

#: The run-folder file listing what a run's placeholders stand for (see :mod:`._uploads`).
MANIFEST = "media.json"
#: A placeholder in a request file: ``"fileUri":"gembatch-<kind>:<what>"``.
PLACEHOLDER = re.compile(rb'"fileUri":"(gembatch-(upload|gcs|file):[^"\\]+)"')
#: The service refuses a request over 20 MB: inline parts stop short of it.
REQUEST_LIMIT = 19_000_000
_FILE_NAME = re.compile(r"^files/[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$")
_SAFE_URI = re.compile(r'^[^"\\\x00-\x1f]+$')
_MAX_SHOWN = 10
_READ = 1 << 20


@dataclass
class Blob:
    """One distinct file content of a run (by SHA-256), local or from a ``bytes`` cell."""

    sha256: str
    size: int
    mime: str
    path: str | None  #: absolute local path, or None for a bytes cell
    data: bytes | None  #: a bytes cell's value (the DataFrame holds it anyway)
    facts: _mime.MediaFacts
    rows: int = 0  #: how many rows use it
    upload: bool = False  #: uploaded with the File API (else inline)

    def read(self) -> bytes:
        """The bytes, checked against the hash they were planned with."""
        if self.data is not None:
            return self.data
        assert self.path is not None
        with open(self.path, "rb") as f:
            data = f.read()
        if len(data) != self.size or hashlib.sha256(data).hexdigest() != self.sha256:
            raise InputError(
                f"{self.path} changed while the run was being written (its bytes are not the "
                "ones hashed a moment ago); submit again once it is stable")
        return data


#: One part of a row: (kind, payload, mime). kind: ``blob`` (payload: index into blobs),
#: ``url``, ``gcs``, ``file`` (payload: the URI or name), ``raw`` (payload: a wire part).
Part = tuple[str, Any, "str | None"]


def _show(labels: Sequence[Any]) -> str:
    shown = ", ".join(repr(x) for x in list(labels)[:_MAX_SHOWN])
    more = len(labels) - _MAX_SHOWN
    return shown + (f" ... and {more} more" if more > 0 else "")


class _Problems:
    """Bad cells found while reading the columns, grouped by what is wrong with them."""

    def __init__(self) -> None:
        self.found: dict[str, tuple[str, list[Any]]] = {}

    def add(self, what: str, fix: str, label: Any) -> None:
        self.found.setdefault(what, (fix, []))[1].append(label)

    def raise_any(self) -> None:
        if not self.found:
            return
        lines = [f"{what} in {len(rows)} row(s) (key {_show(rows)}): {fix}"
                 for what, (fix, rows) in self.found.items()]
        rows = [r for _, rs in self.found.values() for r in rs]
        raise InputError("media columns: " + "; ".join(lines) + ". Nothing was uploaded or "
                         "sent.", rows=rows[:_MAX_SHOWN])


def _overrides(mime_type: str | Mapping[str, str] | None, columns: Sequence[str]
               ) -> dict[str, str]:
    if mime_type is None:
        return {}
    if isinstance(mime_type, str):
        given = dict.fromkeys(columns, mime_type)
    elif isinstance(mime_type, Mapping):
        unknown = [c for c in mime_type if c not in columns]
        if unknown:
            raise InputError(f"mime_type= names {unknown!r}, which are not media columns "
                             f"({list(columns)!r}); key it by media column")
        given = dict(mime_type)
    else:
        raise InputError(f"mime_type= must be a MIME type or a {{column: type}} dict, got "
                         f"{type(mime_type).__name__}")
    out = {}
    for col, mime in given.items():
        norm = _mime.normalise(str(mime))
        problem = _mime.check_supported(norm)
        if problem:
            raise InputError(f"mime_type for column {col!r}: {problem}")
        out[col] = norm
    return out


def media_columns(media: str | Sequence[str] | None) -> list[str]:
    """The media column names given as ``media=`` (one name or a list of names)."""
    if media is None:
        return []
    cols = [media] if isinstance(media, str) else list(media)
    if not cols or not all(isinstance(c, str) and c for c in cols):
        raise InputError(f"media= must name a column or a list of columns, got {media!r}")
    if len(set(cols)) != len(cols):
        raise InputError(f"media= names a column twice: {cols!r}")
    return cols


def collect(df: pd.DataFrame, media: str | Sequence[str], positions: np.ndarray,
            labels: pd.Index, mime_type: str | Mapping[str, str] | None = None
            ) -> MediaLines:
    """The media parts of the rows at ``positions`` (see the module docstring).

    ``labels`` names every row of ``df`` in messages (its keys). Raises InputError for any
    bad value, naming the rows; reads and hashes every local file.
    """
    columns = media_columns(media)
    for col in columns:
        if col not in df.columns:
            raise ColumnError(f"media column {col!r} is not a column of the DataFrame; the "
                              f"columns are: {', '.join(map(repr, list(df.columns)[:20]))}")
        if isinstance(df[col], pd.DataFrame):
            raise ColumnError(f"the DataFrame has several columns named {col!r}; rename them")
    forced = _overrides(mime_type, columns)
    problems = _Problems()
    rows: list[list[Part]] = [[] for _ in range(len(positions))]
    pending: dict[str, list[tuple[int, str, Any, int]]] = {}  # path -> (row, col, label, slot)
    blobs: list[Blob] = []
    by_sha: dict[str, int] = {}
    for col in columns:
        values = df[col].to_numpy(dtype=object)[positions]
        for i, value in enumerate(values.tolist()):
            label = labels[positions[i]]
            _classify(value, i, col, label, forced.get(col), rows, pending, blobs, by_sha,
                      problems)
    problems.raise_any()
    _hash_paths(pending, forced, columns, rows, blobs, by_sha, problems)
    problems.raise_any()
    lines = MediaLines(rows=rows, blobs=blobs, columns=columns)
    lines.place(labels[positions])
    return lines


def _classify(value: Any, i: int, col: str, label: Any, forced: str | None,
              rows: list[list[Part]], pending: dict[str, list[tuple[int, str, Any, int]]],
              blobs: list[Blob], by_sha: dict[str, int], problems: _Problems) -> None:
    """File one cell: a part of row ``i``, a path to hash, nothing, or a problem."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        _add_blob(data, None, i, col, label, forced, rows, blobs, by_sha, problems)
        return
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, str):
        text = value.strip()
        if not text:
            problems.add("an empty string", "give a path, a URL or None for no file", label)
        elif text.startswith(("https://", "gs://", "files/")):
            _remote(text, i, col, label, forced, rows, problems)
        elif text.startswith("http://"):
            problems.add("an http:// URL", "the service fetches https:// URLs only", label)
        else:
            pending.setdefault(os.path.abspath(os.path.expanduser(text)), []).append(
                (i, col, label, len(rows[i])))
            rows[i].append(("pending", None, None))  # filled in once hashed
        return
    try:
        missing = bool(pd.isna(value))
    except (TypeError, ValueError):
        missing = False
    if missing:
        return
    problems.add(f"{type(value).__name__} values", "a media cell holds a path, bytes, an "
                 "https:// or gs:// URI, a files/... name, or None", label)


def _remote(text: str, i: int, col: str, label: Any, forced: str | None,
            rows: list[list[Part]], problems: _Problems) -> None:
    kind = "url" if text.startswith("https://") else "gcs" if text.startswith("gs://") else "file"
    if kind == "file" and not _FILE_NAME.match(text):
        problems.add("a malformed files/... name", "File API names are files/ and 1-40 "
                     "lowercase letters, digits or dashes", label)
        return
    if not _SAFE_URI.match(text) or (kind == "gcs" and len(text) <= 5):
        problems.add(f"a malformed {'gs://' if kind == 'gcs' else 'https://'} URI",
                     "no quotes, backslashes or control characters; gs://bucket/object", label)
        return
    mime = forced or (_mime.suffix_type(text.split("?", 1)[0]) if kind != "file" else None)
    if mime is not None and _mime.check_supported(mime):
        problems.add(f"{mime} URIs", str(_mime.check_supported(mime)), label)
        return
    rows[i].append((kind, text, mime))


def _add_blob(data: bytes, path: str | None, i: int, col: str, label: Any, forced: str | None,
              rows: list[list[Part]], blobs: list[Blob], by_sha: dict[str, int],
              problems: _Problems, *, sha: str | None = None,
              facts: _mime.MediaFacts | None = None, size: int | None = None,
              slot: int | None = None, sniffed: str | None = None) -> None:
    size = len(data) if size is None else size
    if size > settings.media_max_file_bytes:
        problems.add(f"files over {settings.media_max_file_bytes:,} bytes (media_max_file_bytes"
                     ", the File API's 2 GB a file)", "split or shrink them", label)
        return
    if size == 0:
        problems.add("empty files", "an empty file cannot be sent; drop the row's file", label)
        return
    mime = forced or (sniffed if path is not None else _mime.sniff(data[:_mime.HEAD_BYTES]))
    if mime is None:
        problems.add("files of an unknown type", "their bytes match no type Gemini reads; "
                     "pass mime_type= if you know it", label)
        return
    problem = _mime.check_supported(mime)
    if problem:
        problems.add(f"{mime} files", problem, label)
        return
    sha = sha or hashlib.sha256(data).hexdigest()
    j = by_sha.get(sha)
    if j is None:
        j = by_sha[sha] = len(blobs)
        blobs.append(Blob(sha256=sha, size=size, mime=mime, path=path,
                          data=data if path is None else None,
                          facts=facts or _mime.measure(mime, data, size)))
    blobs[j].rows += 1
    part: Part = ("blob", j, mime)
    if slot is None:
        rows[i].append(part)
    else:
        rows[i][slot] = part


def _hash_one(path: str) -> tuple[str, str | None, _mime.MediaFacts, int] | str:
    """(sha256, type read from its bytes, facts, size) of a file, or what is wrong with it
    (only these are kept of a file: never its bytes)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "missing"
    except OSError:
        return "unreadable"
    if stat.S_ISDIR(st.st_mode):
        return "directory"
    if st.st_size > settings.media_max_file_bytes:
        return "large"
    h = hashlib.sha256()
    head = b""
    pages = 0
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_READ):
                if len(head) < _mime.HEAD_BYTES:
                    head += chunk[: _mime.HEAD_BYTES - len(head)]
                if chunk.startswith(b"%PDF-") or (pages or head.startswith(b"%PDF-")):
                    pages += len(re.findall(rb"/Type\s*/Page(?![a-zA-Z])", chunk))
                h.update(chunk)
    except OSError:
        return "unreadable"
    mime = _mime.sniff(head, path)
    facts = _mime.measure(mime or "", head, st.st_size)
    if mime == "application/pdf" and pages:
        facts = _mime.MediaFacts(pages=pages)
    return h.hexdigest(), mime, facts, st.st_size


_PATH_PROBLEMS = {
    "missing": ("missing files", "no file at that path: check the path (relative paths are "
                "read from the working directory)"),
    "unreadable": ("unreadable files", "they cannot be opened for reading: check their "
                   "permissions"),
    "directory": ("directories", "name a file, not a folder"),
}


def _hash_paths(pending: dict[str, list[tuple[int, str, Any, int]]], forced: dict[str, str],
                columns: list[str], rows: list[list[Part]], blobs: list[Blob],
                by_sha: dict[str, int], problems: _Problems) -> None:
    """Hash every distinct local file (in threads: hashlib and reads release the GIL)."""
    if not pending:
        return
    paths = list(pending)
    # a few hundred files a task: reads and hashlib release the GIL, a task per file would
    # cost more in handing out than small files take to read
    blocks = [paths[i:i + 256] for i in range(0, len(paths), 256)]
    with ThreadPoolExecutor(min(4, len(blocks)), thread_name_prefix="gembatch-hash") as pool:
        results = [r for block in pool.map(lambda b: [_hash_one(p) for p in b], blocks)
                   for r in block]
    for path, got in zip(paths, results, strict=True):
        for i, col, label, slot in pending[path]:
            if isinstance(got, str):
                if got == "large":
                    problems.add(f"files over {settings.media_max_file_bytes:,} bytes "
                                 "(media_max_file_bytes, the File API's 2 GB a file)",
                                 "split or shrink them", label)
                else:
                    problems.add(*_PATH_PROBLEMS[got], label)
                continue
            sha, sniffed, facts, size = got
            if forced.get(col) and forced[col] != sniffed:
                facts = _mime.MediaFacts()  # measured as another type: not known
            _add_blob(b"", path, i, col, label, forced.get(col), rows, blobs, by_sha,
                      problems, sha=sha, facts=facts, size=size, slot=slot,
                      sniffed=sniffed)
    for r in rows:  # rows whose file was refused: drop the placeholder entry
        r[:] = [p for p in r if p[0] != "pending"]


def _b64_len(n: int) -> int:
    return 4 * ((n + 2) // 3)


@dataclass
class MediaLines:
    """The request lines of a media run: each row's text followed by its parts."""

    rows: list[list[Part]]
    blobs: list[Blob]
    columns: list[str] = field(default_factory=list)
    inline_ok: bool = True  #: may the run go inline (one create call) at all

    def place(self, labels: Sequence[Any] | pd.Index) -> None:
        """Decide inline or upload for every file, and check the upload total."""
        limit = settings.media_inline_bytes
        for b in self.blobs:
            b.upload = b.size * max(b.rows, 1) > limit or _b64_len(b.size) > REQUEST_LIMIT
        for row in self.rows:  # the request as a whole stays under the service's limit
            inline = sorted((p for p in row if p[0] == "blob" and not self.blobs[p[1]].upload),
                            key=lambda p: -self.blobs[p[1]].size)
            total = sum(_b64_len(self.blobs[p[1]].size) for p in inline)
            for p in inline:
                if total <= REQUEST_LIMIT:
                    break
                self.blobs[p[1]].upload = True
                total -= _b64_len(self.blobs[p[1]].size)
        total = sum(b.size for b in self.blobs if b.upload)
        if total > settings.media_max_total_bytes:
            big = {j for j, b in enumerate(self.blobs) if b.upload}
            hit = [labels[i] for i, row in enumerate(self.rows)
                   if any(p[0] == "blob" and p[1] in big for p in row)]
            raise InputError(
                f"the media to upload come to {total:,} bytes, more than "
                f"media_max_total_bytes={settings.media_max_total_bytes:,} (the File API "
                f"holds 20 GB a project) (rows with uploaded files: key {_show(hit)}); send "
                "the rows in several runs, or shrink the files. Nothing was uploaded or sent.",
                rows=hit[:_MAX_SHOWN], size=total, limit=settings.media_max_total_bytes)

    # -- what the plan asks of its lines --------------------------------------------------
    def _parts(self, i: int, data: bool) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for kind, what, mime in self.rows[i]:
            if kind == "raw":
                out.append(what)
            elif kind == "blob":
                b = self.blobs[what]
                if b.upload:
                    out.append({"fileData": {"mimeType": mime, "fileUri":
                                             f"gembatch-upload:{b.sha256}"}})
                else:
                    payload = base64.b64encode(b.read()).decode("ascii") if data else ""
                    out.append({"inlineData": {"mimeType": mime, "data": payload}})
            else:
                uri = what if kind == "url" else f"gembatch-{kind}:{what}"
                fd: dict[str, Any] = {"fileUri": uri}
                if mime:
                    fd["mimeType"] = mime
                out.append({"fileData": fd})
        return out

    def _inline_bytes(self, i: int) -> int:
        return sum(_b64_len(self.blobs[w].size) for k, w, _ in self.rows[i]
                   if k == "blob" and not self.blobs[w].upload)

    def request(self, i: int, text: str, shared: Mapping[str, Any], data: bool = True
                ) -> dict[str, Any]:
        """Row ``i``'s request (wire form); ``data=False`` leaves inline data empty."""
        return {"contents": [{"parts": [{"text": text}, *self._parts(i, data)],
                              "role": "user"}], **shared}

    def lines(self, prompts: Sequence[str], keys: Sequence[str], shared: Mapping[str, Any],
              data: bool = True) -> Iterator[tuple[bytes, int]]:
        """(line, bytes of its text) of every row, in order."""
        dumps = orjson.dumps
        for i, (text, key) in enumerate(zip(prompts, keys, strict=True)):
            line = dumps({"key": key, "request": self.request(i, text, shared, data)}) + b"\n"
            yield line, len(dumps(text)) - 2

    def measure(self, prompts: Sequence[str], keys: Sequence[str], shared: Mapping[str, Any]
                ) -> tuple[np.ndarray, int]:
        """(exact line sizes, text bytes), without reading or encoding any file."""
        sizes = np.empty(len(prompts), dtype=np.int64)
        text = 0
        for i, (line, n) in enumerate(self.lines(prompts, keys, shared, data=False)):
            sizes[i] = len(line) + self._inline_bytes(i)
            text += n
        return sizes, text

    def write(self, folder: Path, prompts: Sequence[str], keys: Sequence[str],
              shared: Mapping[str, Any], *, max_file_bytes: int, max_requests: int
              ) -> list[RequestFile]:
        files = write_lines(folder, self.lines(prompts, keys, shared), max_file_bytes,
                            max_requests)
        self.write_manifest(folder)
        return files

    def write_manifest(self, folder: Path) -> None:
        """What the placeholders stand for (bytes cells to upload are copied beside it)."""
        uploads = {}
        for b in self.blobs:
            if not b.upload:
                continue
            source = b.path
            if source is None:  # a bytes cell: kept in the run folder, path relative to it
                assert b.data is not None
                spool = folder / "media"
                spool.mkdir(mode=0o700, exist_ok=True)
                source = f"media/{b.sha256}"
                fd = os.open(folder / source, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(b.data)
            uploads[b.sha256] = {"mime": b.mime, "size": b.size, "path": source}
        remote = sorted({(k, w) for row in self.rows for k, w, _ in row
                         if k in ("gcs", "file")})
        manifest = {"uploads": uploads, "gcs": [w for k, w in remote if k == "gcs"],
                    "files": [w for k, w in remote if k == "file"]}
        fd = os.open(folder / MANIFEST, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(orjson.dumps(manifest))

    def tokens(self) -> int:
        """Estimated input tokens of every part of every row (see :mod:`._pricing`)."""
        total = 0
        for row in self.rows:
            for kind, what, mime in row:
                if kind == "blob":
                    b = self.blobs[what]
                    f = b.facts
                    total += _pricing.media_tokens(b.mime, b.size, width=f.width,
                                                   height=f.height, pages=f.pages,
                                                   seconds=f.seconds)
                else:
                    total += _pricing.media_tokens(mime, None)
        return total

    def summary(self) -> dict[str, int]:
        """Files, parts and bytes: what the estimate shows."""
        up = [b for b in self.blobs if b.upload]
        return {
            "media_parts": sum(len(r) for r in self.rows),
            "media_files": len(self.blobs),
            "upload_files": len(up),
            "upload_bytes": sum(b.size for b in up),
            "inline_bytes": sum(b.size * b.rows for b in self.blobs if not b.upload),
        }


def write_lines(folder: Path, lines: Iterable[tuple[bytes, int]], max_file_bytes: int,
                max_requests: int, prefix: str = "requests") -> list[RequestFile]:
    """Write ``(line, text bytes)`` pairs as ``{prefix}-0000.jsonl``, ... (0600), sharded by
    the one rule (:class:`~gemini_batch_magic._requests.ShardPlanner`); removes what it
    wrote on any error."""
    planner = ShardPlanner(max_file_bytes, max_requests)
    written: list[RequestFile] = []
    opened: list[Path] = []
    state: dict[str, Any] = {}
    pos = 0

    def close() -> None:
        if state:
            state["f"].close()
            written.append(RequestFile(path=state["path"], start=state["start"],
                                       stop=state["start"] + state["n"], n_bytes=state["bytes"],
                                       sha256=state["hash"].hexdigest(),
                                       prompt_bytes=state["text"]))
            state.clear()

    block: list[tuple[bytes, int]] = []

    def flush() -> None:
        nonlocal pos
        sizes = np.fromiter((len(b) for b, _ in block), dtype=np.int64, count=len(block))
        try:
            pieces = list(planner.split(sizes))
        except RequestTooLargeError as exc:
            i = pos + (exc.rows or [0])[0]
            raise RequestTooLargeError(str(exc), rows=[i], size=exc.size,
                                       limit=exc.limit) from None
        for shard, a, b in pieces:
            if shard != state.get("shard"):
                close()
                path = folder / f"{prefix}-{shard:04d}.jsonl"
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                opened.append(path)
                state.update(shard=shard, path=path, start=pos + a, n=0, bytes=0, text=0,
                             hash=hashlib.sha256(), f=os.fdopen(fd, "wb", buffering=1 << 20))
            data = b"".join(x for x, _ in block[a:b])
            state["f"].write(data)
            state["hash"].update(data)
            state["n"] += b - a
            state["bytes"] += len(data)
            state["text"] += sum(t for _, t in block[a:b])
        pos += len(block)
        block.clear()

    try:
        held = 0
        for item in lines:
            block.append(item)
            held += len(item[0])
            if len(block) >= 1024 or held >= 8 << 20:
                flush()
                held = 0
        if block:
            flush()
        close()
    except BaseException:
        if state:
            state["f"].close()
        for path in opened:
            path.unlink(missing_ok=True)
        raise
    return written


@dataclass
class RawLines:
    """Request lines sent before, again (a retry run): each request exactly as it was sent,
    placeholders and inline data included, under its row's key."""

    requests: list[dict[str, Any]]
    manifests: list[Path] = field(default_factory=list)  #: the parent runs' manifests
    inline_ok: bool = True
    texts: Callable[[dict[str, Any]], str] = field(
        default=lambda r: str(r["contents"][0]["parts"][0].get("text", "")))
    output_tokens: int | None = None  #: None: as the run's generation config says

    def lines(self, keys: Sequence[str]) -> Iterator[tuple[bytes, int]]:
        for key, req in zip(keys, self.requests, strict=True):
            yield orjson.dumps({"key": key, "request": req}) + b"\n", len(self.texts(req))

    def measure(self, prompts: Sequence[str], keys: Sequence[str], shared: Mapping[str, Any]
                ) -> tuple[np.ndarray, int]:
        got = list(self.lines(keys))
        return np.array([len(b) for b, _ in got], dtype=np.int64), sum(t for _, t in got)

    def write(self, folder: Path, prompts: Sequence[str], keys: Sequence[str],
              shared: Mapping[str, Any], *, max_file_bytes: int, max_requests: int
              ) -> list[RequestFile]:
        used: set[tuple[bytes, bytes]] = set()  # (kind, what) of the placeholders used

        def lines() -> Iterator[tuple[bytes, int]]:
            for line, n in self.lines(keys):
                if b"gembatch-" in line:
                    used.update((m.group(2), m.group(1).split(b":", 1)[1])
                                for m in PLACEHOLDER.finditer(line))
                yield line, n

        files = write_lines(folder, lines(), max_file_bytes, max_requests)
        want = {kind.decode(): {w.decode() for k, w in used if k == kind}
                for kind in (b"upload", b"gcs", b"file")}
        merged: dict[str, Any] = {"uploads": {}, "gcs": [], "files": []}
        for path in self.manifests:  # only what these requests name (not the whole parent)
            if path.exists():
                m = orjson.loads(path.read_bytes())
                merged["uploads"].update({  # a parent's own copies by their full path
                    sha: {**v, "path": str(path.parent / v["path"])}
                    for sha, v in m.get("uploads", {}).items() if sha in want["upload"]})
                merged["gcs"] = sorted(set(merged["gcs"]) | (set(m.get("gcs", []))
                                                             & want["gcs"]))
                merged["files"] = sorted(set(merged["files"]) | (set(m.get("files", []))
                                                                 & want["file"]))
        if any(merged.values()):
            fd = os.open(folder / MANIFEST, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(orjson.dumps(merged))
        return files

    def tokens(self) -> int:
        return sum(_pricing.media_tokens(None, None) * (len(r["contents"][0]["parts"]) - 1)
                   for r in self.requests if "contents" in r)

    def summary(self) -> dict[str, int]:
        return {}


def read_requests(paths: Sequence[Path], keys: set[str]) -> dict[str, dict[str, Any]]:
    """The whole request of each wanted key, read back from request files written here."""
    out: dict[str, dict[str, Any]] = {}
    for path in paths:
        with open(path, "rb") as f:
            for line in f:
                if not line.strip():
                    continue
                obj = orjson.loads(line)
                key = str(obj.get("key"))
                if key in keys:
                    out[key] = obj["request"]
    return out
