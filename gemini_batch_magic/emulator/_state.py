"""The state the emulator's request handlers share (:class:`ApiState`)."""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from . import _store
from ._config import EmulatorConfig
from ._store import TERMINAL_STATES, BatchView, Store

#: States :meth:`ApiState.set_state` can put a batch in that the SDK's enum does not list,
#: for testing how a client copes with a state it does not know.
UNLISTED_STATES = ("PAUSED", "UPDATING")


class UploadProgress:
    """Running SHA-256 and line count of an upload whose chunks arrive in order."""

    def __init__(self) -> None:
        self.hasher = hashlib.sha256()
        self.offset = 0
        self.newlines = 0
        self.blank_suspect = False
        self.last = b"\n"

    def update(self, piece: bytes) -> None:
        if not piece:
            return
        self.hasher.update(piece)
        self.offset += len(piece)
        self.newlines += piece.count(b"\n")
        if not self.blank_suspect and (
            (self.last == b"\n" and piece[:1] in (b"\n", b"\r"))
            or b"\n\n" in piece
            or b"\n\r\n" in piece
        ):
            self.blank_suspect = True
        self.last = piece[-1:]

    def line_count(self) -> int | None:
        if self.blank_suspect:
            return None
        return self.newlines + (1 if self.offset and self.last != b"\n" else 0)


class ApiState:
    """What the request handlers of one emulator share: the store, the live configuration,
    the record of calls, the fault streams and the uploads in progress."""

    def __init__(
        self,
        store: Store,
        config: EmulatorConfig,
        *,
        poke: Callable[[], None],
        workers: Callable[[], dict[str, Any]] = dict,
    ) -> None:
        self.store = store
        #: The live configuration: replaced whole by :meth:`reconfigure`, so a handler that
        #: reads it once sees one consistent set of options.
        self.config = config
        #: Wakes the scheduler when a batch was created.
        self.poke = poke
        #: Where blocks were answered (``Emulator.workers()``).
        self.workers = workers
        #: Running hash and line count of the uploads whose chunks arrive in order.
        self.uploads: dict[str, UploadProgress] = {}
        self._lock = threading.Lock()
        self._calls: list[tuple[str, str]] = []
        self._fault_rng = random.Random(f"http-fault:{config.seed}")
        self._drop_rng = random.Random(f"drop-after-create:{config.seed}")
        self._batch_fail_rng = random.Random(f"fail-batch:{config.seed}")

    def reconfigure(self, config: EmulatorConfig) -> None:
        """Takes a new configuration at once. A new ``seed`` restarts the fault streams."""
        with self._lock:
            if config.seed != self.config.seed:
                self._fault_rng = random.Random(f"http-fault:{config.seed}")
                self._drop_rng = random.Random(f"drop-after-create:{config.seed}")
                self._batch_fail_rng = random.Random(f"fail-batch:{config.seed}")
            self.config = config

    # -- observability -------------------------------------------------------------------

    def record_call(self, method: str, path: str) -> None:
        with self._lock:
            self._calls.append((method, path))

    def calls(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._calls)

    def reset_calls(self) -> None:
        with self._lock:
            self._calls.clear()

    def draw_fault(self) -> tuple[int, str, str] | None:
        """The simulated 429/503 this call gets (``http_fault_rate``), if any."""
        rate = self.config.http_fault_rate
        if rate <= 0:
            return None
        with self._lock:
            if self._fault_rng.random() >= rate:
                return None
            if self._fault_rng.random() < 0.5:
                return (
                    429,
                    "RESOURCE_EXHAUSTED",
                    "Resource has been exhausted (e.g. check quota). (Simulated by the emulator.)",
                )
            return 503, "UNAVAILABLE", "The service is currently unavailable. (Simulated.)"

    def draw_drop(self) -> bool:
        """Whether this batch create is dropped after it is persisted."""
        rate = self.config.drop_after_create_rate
        if rate <= 0:
            return False
        with self._lock:
            return self._drop_rng.random() < rate

    def draw_batch_failure(self) -> bool:
        """Whether a new batch is made to fail (``fail_batch_rate``)."""
        rate = self.config.fail_batch_rate
        if rate <= 0:
            return False
        if rate >= 1:
            return True
        with self._lock:
            return self._batch_fail_rng.random() < rate

    # -- summaries -----------------------------------------------------------------------

    def view(self, row: Any, now: float | None = None) -> BatchView:
        view = _store.batch_view(self.store, row, time.time() if now is None else now)
        if row["settled_state"] is None and view.state in TERMINAL_STATES:
            self.store.settle(row, view)
        return view

    def settle_all(self) -> None:
        now = time.time()
        for row in self.store.unsettled_batches():
            self.view(row, now)

    def batch_summary(self, row: Any) -> dict[str, Any]:
        view = self.view(row)
        return {
            "name": f"batches/{row['id']}",
            "state": view.state,
            "model": row["model"],
            "displayName": row["display_name"],
            "requestCount": int(row["request_count"]),
            "createTime": _store.rfc3339(row["create_time"]),
            "successfulRequestCount": view.succeeded,
            "failedRequestCount": view.failed,
            "pendingRequestCount": view.pending,
        }

    def file_summary(self, row: Any) -> dict[str, Any]:
        return {
            "name": f"files/{row['id']}",
            "displayName": row["display_name"],
            "mimeType": row["mime_type"],
            "sizeBytes": int(row["size_bytes"]),
            "source": row["source"],
            "createTime": _store.rfc3339_micros(row["create_time"]),
        }

    def file_summaries(self) -> list[dict[str, Any]]:
        """Every file (uploaded and generated), newest first."""
        self.settle_all()
        return [self.file_summary(r) for r in self.store.all_files()]

    def set_state(
        self, batch_id: str, state: str, message: str | None = None, code: int = 13
    ) -> None:
        """Forces a terminal state, or one of the states the service may add (``PAUSED``,
        ``UPDATING``: the batch then stays there, its counts frozen, until set again); a
        FAILED batch's operation error is ``(code, message)`` when ``message`` is given."""
        norm = state.upper().removeprefix("BATCH_STATE_").removeprefix("JOB_STATE_")
        if norm not in ("FAILED", "EXPIRED", "CANCELLED", *UNLISTED_STATES):
            raise ValueError(
                f"Unsupported state {state!r}: use 'FAILED', 'EXPIRED' or 'CANCELLED' (or "
                f"{' or '.join(repr(s) for s in UNLISTED_STATES)}, states a client may not know)."
            )
        if message is not None and norm != "FAILED":
            raise ValueError(f"Only a FAILED batch carries an error message, not {norm}.")
        if isinstance(code, bool) or not isinstance(code, int):
            raise ValueError(f"code must be a google.rpc code (an integer), got {code!r}.")
        error = (code, message) if message is not None else None
        if not self.store.set_override(
            batch_id, f"BATCH_STATE_{norm}", time.time(), False, error=error
        ):
            raise KeyError(f"batches/{batch_id} does not exist.")
