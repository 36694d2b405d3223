"""A media run's files put within the service's reach when the run is submitted.

A media run's request files hold placeholders where the service's URIs go (see
:mod:`._media`); its folder holds the manifest of what they stand for. :func:`resolve`,
called by the submission before any batch is created, turns every placeholder into a URI:

* ``gembatch-file:files/<id>``: looked up (``files.get``); an unknown file is an error.
* ``gembatch-gcs:gs://...``: registered with ``files.register_files`` (all in one call),
  unless the registry knows a registration the service still holds.
* ``gembatch-upload:<sha256>``: the registry's ``media_files`` table is asked first: a file
  uploaded before (by this key, to this backend) is reused while it has long enough to live
  (at least half its lifetime or 24 hours, whichever is less: a batch may take a day) and
  the service still shows it. Any other is uploaded, concurrently
  (``max_concurrent_uploads``), from its source (re-hashed: a changed file is refused), and
  recorded within a second (in batches: a transaction per file would cost more than a small
  upload), so a crash re-sends at most that second's uploads. An expired file is uploaded
  again.

:func:`resolved_file` writes a shard's request file with the URIs in place, for the upload
(or the inline create). Progress of the uploads is kept per run (:func:`progress`) and told
on stderr.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from . import _backend
from ._config import settings
from ._media import MANIFEST, PLACEHOLDER
from ._registry import Registry, RunBook
from .exceptions import BackendError, InputError

__all__ = ["UploadProgress", "UploadViews", "progress", "resolve", "resolved_file"]

#: A reused file must live at least this much longer (or half its lifetime, if less).
REUSE_MARGIN = 24 * 3600.0


@dataclass
class UploadProgress:
    """How far a run's media uploads got."""

    files: int = 0
    bytes: int = 0
    done_files: int = 0
    done_bytes: int = 0
    reused: int = 0
    finished: bool = False

    def __str__(self) -> str:
        return (f"{self.done_files}/{self.files} media files uploaded "
                f"({self.done_bytes / 1e6:,.1f}/{self.bytes / 1e6:,.1f} MB), "
                f"{self.reused} reused")


_progress: dict[str, UploadProgress] = {}
_lock = threading.Lock()


def progress(run_id: str) -> UploadProgress | None:
    """The media upload progress of a run submitted by this process, if it has media."""
    return _progress.get(run_id)


class UploadViews:
    """What a run shows of its media uploads (mixed into :class:`~gemini_batch_magic.BatchRun`)."""

    run_id: str

    @property
    def media_uploads(self) -> UploadProgress | None:
        """How far this run's media uploads got (files, bytes, reused), when this process
        submits it; None for a run without uploads or submitted elsewhere."""
        return progress(self.run_id)


def _lookup(reg: Registry, backend: str, key_fp: str, sources: list[str]
            ) -> dict[str, tuple[str, str, float, float | None]]:
    """source -> (name, uri, created, expires) of what the registry remembers."""
    found = {}
    with reg.transaction() as con:
        for i in range(0, len(sources), 500):
            part = sources[i:i + 500]
            rows = con.execute(
                "SELECT source, name, uri, created, expire_time FROM media_files WHERE "
                f"backend = ? AND key_fp = ? AND source IN ({', '.join('?' * len(part))})",
                (backend, key_fp, *part)).fetchall()
            for src, name, uri, created, expires in rows:
                found[src] = (name, uri, created, expires)
    return found


def _remember(reg: Registry, backend: str, key_fp: str,
              done: list[tuple[str, _backend.RemoteFile]]) -> None:
    """Record uploaded or registered files (one transaction for all of them)."""
    if not done:
        return
    with reg.transaction() as con:
        con.executemany(
            "INSERT OR REPLACE INTO media_files (backend, key_fp, source, name, uri, mime_type, "
            "size_bytes, created, expire_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(backend, key_fp, source, f.name, f.uri, f.mime_type, f.size_bytes,
              f.created or time.time(), f.expires) for source, f in done])
    done.clear()


def _fresh(created: float, expires: float | None, now: float) -> bool:
    """Whether a file with this lifetime lives long enough to be used by a new batch."""
    if expires is None:
        return True
    margin = min(REUSE_MARGIN, max(0.0, (expires - created) / 2))
    return expires - now >= margin


def resolve(book: RunBook) -> dict[bytes, bytes] | None:
    """placeholder -> URI for every placeholder of the run (None: a run without media)."""
    manifest_path = book.run_dir() / MANIFEST
    if not manifest_path.exists():
        return None
    manifest = orjson.loads(manifest_path.read_bytes())
    rec = book.record
    reg, backend, key_fp = book.registry, rec.backend, rec.key_fp or ""
    mapping: dict[bytes, bytes] = {}
    for name in manifest.get("files", []):
        got = _backend.get_file(name)
        if got is None or (got.state not in (None, "ACTIVE", "STATE_UNSPECIFIED")):
            state = "does not exist" if got is None else f"is {got.state}"
            raise InputError(f"media file {name} {state} on the service (this API key); "
                             "upload it again, or give its local path instead. Nothing was "
                             "uploaded or sent.")
        mapping[f"gembatch-file:{name}".encode()] = got.uri.encode()
    gcs = list(manifest.get("gcs", []))
    if gcs:
        known = _lookup(reg, backend, key_fp, gcs)
        now = time.time()
        todo = [u for u in gcs if u not in known or not _fresh(known[u][2], known[u][3], now)]
        for uri in gcs:
            if uri not in todo:
                mapping[f"gembatch-gcs:{uri}".encode()] = known[uri][1].encode()
        for i in range(0, len(todo), 100):
            part = todo[i:i + 100]
            got_files = _backend.register_files(part)
            if len(got_files) != len(part):
                raise BackendError(f"registering {len(part)} gs:// files returned "
                                   f"{len(got_files)}; check the URIs and the bucket's access")
            _remember(reg, backend, key_fp, list(zip(part, got_files, strict=True)))
            for uri, f in zip(part, got_files, strict=True):
                mapping[f"gembatch-gcs:{uri}".encode()] = f.uri.encode()
    uploads: dict[str, dict[str, Any]] = manifest.get("uploads", {})
    if uploads:
        mapping.update(_upload_all(book, uploads, reg, backend, key_fp))
    return mapping


def _upload_all(book: RunBook, uploads: dict[str, dict[str, Any]], reg: Registry,
                backend: str, key_fp: str) -> dict[bytes, bytes]:
    sources = [f"sha256:{sha}" for sha in uploads]
    known = _lookup(reg, backend, key_fp, sources)
    now = time.time()
    out: dict[bytes, bytes] = {}
    candidates = {sha: known[f"sha256:{sha}"] for sha in uploads
                  if f"sha256:{sha}" in known
                  and _fresh(known[f"sha256:{sha}"][2], known[f"sha256:{sha}"][3], now)}
    todo = [sha for sha in uploads if sha not in candidates]
    prog = UploadProgress(files=len(uploads), bytes=sum(int(v["size"]) for v in uploads.values()))
    with _lock:
        _progress[book.run_id] = prog
    workers = max(1, min(settings.max_concurrent_uploads, len(uploads)))
    with ThreadPoolExecutor(workers, thread_name_prefix="gembatch-media") as pool:
        # a remembered file is used only if the service still has it (not deleted by hand)
        checks = {pool.submit(_backend.get_file, known_name): sha
                  for sha, (known_name, *_rest) in candidates.items()}
        for check in as_completed(checks):
            sha = checks[check]
            f = check.result()
            if f is None or (f.expires is not None and not _fresh(f.created or now,
                                                                  f.expires, now)):
                todo.append(sha)
                continue
            out[f"gembatch-upload:{sha}".encode()] = candidates[sha][1].encode()
            prog.reused += 1
            prog.done_files += 1
            prog.done_bytes += int(uploads[sha]["size"])
        if todo:
            size = sum(int(uploads[s]["size"]) for s in todo)
            print(f"gembatch: run {book.run_id}: uploading {len(todo)} media file(s), "
                  f"{size / 1e6:,.1f} MB ({prog.reused} reused)", file=sys.stderr)
        folder = book.run_dir()  # a relative path is a copy in the run folder (bytes cells)
        jobs = {pool.submit(_upload_one, book.run_id, sha,
                            {**uploads[sha], "path": str(folder / uploads[sha]["path"])}): sha
                for sha in todo}
        last = saved = time.monotonic()
        done: list[tuple[str, _backend.RemoteFile]] = []
        try:
            for job in as_completed(jobs):
                sha = jobs[job]
                f = job.result()
                done.append((f"sha256:{sha}", f))
                out[f"gembatch-upload:{sha}".encode()] = f.uri.encode()
                prog.done_files += 1
                prog.done_bytes += int(uploads[sha]["size"])
                if len(done) >= 256 or time.monotonic() - saved > 1:
                    _remember(reg, backend, key_fp, done)  # at most a second's uploads unsaved
                    saved = time.monotonic()
                if sys.stderr.isatty() and time.monotonic() - last > 2:
                    last = time.monotonic()
                    print(f"gembatch: run {book.run_id}: {prog}", file=sys.stderr)
        finally:
            _remember(reg, backend, key_fp, done)  # what finished, even if one failed
    prog.finished = True
    return out


def _upload_one(run_id: str, sha: str, info: dict[str, Any]) -> _backend.RemoteFile:
    path = str(info["path"])
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    except OSError as exc:
        raise InputError(f"media file {path} (sha256 {sha[:12]}) cannot be read any more "
                         f"({exc.strerror}); restore it, or submit anew") from exc
    if h.hexdigest() != sha:
        raise InputError(f"media file {path} changed since run {run_id} was planned (its "
                         "SHA-256 differs); submit the DataFrame again to send the new "
                         "content")
    return _backend.upload_media(path, str(info["mime"]), f"gembatch-{sha[:16]}")


def resolved_file(path: Path, mapping: dict[bytes, bytes] | None) -> Path:
    """``path``, or a copy beside it with every placeholder replaced by its URI."""
    if not mapping:
        return path
    out = path.with_name(path.stem + ".resolved.jsonl")
    missing: set[bytes] = set()

    def put(m: Any) -> bytes:
        uri = mapping.get(m.group(1))
        if uri is None:
            missing.add(m.group(1))
            return bytes(m.group(0))
        return b'"fileUri":' + orjson.dumps(uri.decode())

    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(path, "rb") as src, os.fdopen(fd, "wb") as dst:
        for line in src:
            dst.write(PLACEHOLDER.sub(put, line) if b"gembatch-" in line else line)
    if missing:
        out.unlink(missing_ok=True)
        raise InputError(f"request file {path.name} names media this run did not plan "
                         f"({sorted(missing)[:3]}); submit the DataFrame again")
    return out
