"""Submitting a run: each shard's batch job created exactly once, even across crashes.

A run is recorded (state SUBMITTING) before anything is sent. :class:`Submission` then, for
every shard without a batch yet, uploads its request file (file runs) and creates its batch
job, recording each step as it happens, so a kernel that dies half way leaves a run that
any kernel can finish (:meth:`Submission.resume_if_orphaned`: only when the owning process
is gone, claimed with a compare-and-set in the registry). A create that may have reached
the service (a timeout, a 5xx) is reconciled by listing the service's batches by display
name before it is tried again: a batch is never created, and paid for, twice.

In a notebook the files of a large run upload in a background thread (the kernel stays
free); :meth:`Submission.join` hands its error to whoever waits for the run.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson

from . import _backend, _requests, _uploads, _vertex
from ._config import settings
from ._registry import OWNER, RunBook, ShardRecord, is_live, owner_alive
from ._state import state

__all__ = ["Submission", "display_name"]


class Submission:
    """Creates the batch jobs of one run (see the module docstring)."""

    def __init__(self, book: RunBook) -> None:
        self.book = book
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        #: media placeholders -> their URIs (runs with media parts; see _uploads)
        self._media: dict[bytes, bytes] | None = None

    @property
    def run_id(self) -> str:
        return self.book.run_id

    def start(self, background: bool) -> None:
        """Create the run's batch jobs now, or in a background thread."""
        if not background:
            try:
                self.submit_pending()
            finally:
                state.fresh.discard(self.run_id)
            return
        state.submitting.add(self.run_id)
        self._thread = threading.Thread(
            target=self._in_background, name=f"gembatch-submit-{self.run_id}", daemon=True,
        )
        self._thread.start()

    def _in_background(self) -> None:
        try:
            self.submit_pending()
        except BaseException as exc:
            self._error = exc
        finally:
            state.fresh.discard(self.run_id)
            self.book.reload()

    def join(self, timeout: float) -> None:
        """Wait a little for a background submission; raise its error if it failed."""
        thread = self._thread
        if thread is not None and thread.is_alive():
            thread.join(timeout)
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def resume_if_orphaned(self) -> None:
        """Finish submitting a run whose submitting process died (else do nothing)."""
        rec = self.book.record
        if rec.state != "SUBMITTING" or self.run_id in state.submitting:
            return
        if rec.owner != OWNER:
            if owner_alive(rec.owner) or not self.book.registry.claim(self.run_id, rec.owner,
                                                                      OWNER):
                return  # someone else submits it (or just took it over)
            self.book.reload()  # what the dead owner recorded before it died
        self.submit_pending()

    def submit_pending(self) -> None:
        """Create a batch job for every shard that has none yet (uploading files first)."""
        state.submitting.add(self.run_id)
        try:
            pending = [s for s in self.book.record.shards
                       if s.batch_name is None and is_live(s.state)]
            if not pending:
                return
            self._media = _uploads.resolve(self.book)  # media uploaded before any create
            workers = max(1, min(settings.max_concurrent_shards, len(pending)))
            errors: list[BaseException] = []

            def one(shard: ShardRecord) -> None:
                try:
                    self._submit_one(shard)
                except Exception as exc:
                    self.book.set_shard(shard, error=f"not submitted yet: {exc}")
                    errors.append(exc)

            if workers == 1:
                for s in pending:
                    one(s)
            else:
                with ThreadPoolExecutor(workers, thread_name_prefix="gembatch-submit") as pool:
                    list(pool.map(one, pending))
            self.book.aggregate()
            if errors:
                raise errors[0]
        finally:
            state.submitting.discard(self.run_id)

    def _display(self, shard: ShardRecord) -> str:
        return display_name(self.book.record, shard)

    def _submit_one(self, shard: ShardRecord) -> None:
        rec = self.book.record
        display = self._display(shard)
        path = self.book.run_dir() / shard.request_file
        dest = labels = None
        if _backend.is_vertex():  # staged in Cloud Storage, answered into it
            if shard.upload_name is None:
                uri = _vertex.stage_requests(
                    _uploads.resolved_file(path, self._media),
                    _vertex.staging_uri(self.run_id, f"requests-{shard.shard:04d}.jsonl"))
                self.book.set_shard(shard, upload_name=uri)
            src: Any = shard.upload_name
            dest = _vertex.staging_uri(self.run_id, f"out-{shard.shard:04d}/")
            labels = {_vertex.RUN_LABEL: self.run_id, "gembatch_shard": str(shard.shard)}
        elif rec.source == "inline":
            src = _inline_src(_uploads.resolved_file(path, self._media), self._sdk_config())
        else:
            if shard.upload_name is None:
                name = _backend.upload_file(_uploads.resolved_file(path, self._media),
                                            f"{display}-requests")
                self.book.set_shard(shard, upload_name=name)
            src = shard.upload_name
        path.with_name(path.stem + ".resolved.jsonl").unlink(missing_ok=True)
        batch = _backend.create_batch(
            rec.model, src, display, run_id=self.run_id,
            reconcile_first=self.run_id not in state.fresh, dest=dest, labels=labels,
            embed=rec.config.get("kind") == "embed",
        )
        self.book.set_shard(shard, batch_name=batch, state="PENDING",
                            pending=shard.n_requests, error=None)

    def _sdk_config(self) -> dict[str, Any]:
        cfg = self.book.record.config
        return _requests.request_config(
            cfg.get("system_instruction"), cfg.get("generation_config"),
            cfg.get("safety_settings"), cfg.get("response_schema"),
        )[1]


def display_name(record: Any, shard: ShardRecord) -> str:
    """A shard's batch display name: ``<name>-<run id>-s<shard>-n<rows>-h<rows hash>``.

    It is how an ambiguous create is reconciled (by listing), and how a run is rebuilt from
    the service alone (:func:`gemini_batch_magic.attach` with ``df=``): the input's row count
    and a hash of its index let another machine check that a DataFrame is the one sent.
    """
    rows_hash = record.config.get("rows_hash")
    tail = f"-n{record.n_rows}-h{rows_hash}" if rows_hash else ""  # runs of older versions
    return f"{record.display_name[:80]}-{record.run_id}-s{shard.shard}{tail}"


def _inline_src(path: Path, config: dict[str, Any]) -> list[dict[str, Any]]:
    """The inline requests of a request file, as the SDK's create takes them."""
    src = []
    with open(path, "rb") as fh:
        for line in fh:
            item = orjson.loads(line)
            req: dict[str, Any] = {"contents": item["request"]["contents"],
                                   "metadata": {"key": item["key"]}}
            if config:
                req["config"] = config
            src.append(req)
    return src
