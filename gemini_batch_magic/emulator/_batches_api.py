"""The Batch API: create (generate and embed), get, list, cancel and delete batches."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import time
from pathlib import Path
from typing import Any

import orjson

from . import _store
from ._http import COPY_CHUNK, ID, VERSION, ApiError, HttpHandler, Route
from ._model import field
from ._models_api import check_model
from ._store import (
    STATE_CANCELLED,
    STATE_PENDING,
    STATE_SUCCEEDED,
    TERMINAL_STATES,
    BatchView,
)

_INLINE_PLACEHOLDER = "@@gemini-emulator-inlined-responses@@"
_GEN_BATCH_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch"
_GEN_OUTPUT_TYPE = (
    "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatchOutput"
)
_EMB_BATCH_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main.EmbedContentBatch"
_EMB_OUTPUT_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main.EmbedContentBatchOutput"
#: Lines of an input file checked at create time (later bad lines are per-request errors).
_VALIDATE_LINES = 1000
_BLANK_LINE = re.compile(rb"\n[ \t\r]*\n")


def _stringify_metadata(md: Any) -> dict[str, str] | None:
    if not isinstance(md, dict):
        return None
    return {str(k): v if isinstance(v, str) else orjson.dumps(v).decode() for k, v in md.items()}


def count_and_check_jsonl(path: Path, label: str, known_count: int | None = None) -> int:
    """Counts the non-blank lines of a JSONL file and checks that the first ones are objects.

    With ``known_count`` (counted during the upload) only the first lines are read.
    """
    count = 0
    with open(path, "rb", buffering=COPY_CHUNK) as f:
        while count < _VALIDATE_LINES:
            line = f.readline()
            if not line:
                return count
            if line.strip():
                count += 1
                _check_line(line, count, label)
        if known_count is not None:
            return known_count
        carry = b""
        while True:
            chunk = f.read(4 * COPY_CHUNK)
            if not chunk:
                break
            data = carry + chunk
            cut = data.rfind(b"\n") + 1
            data, carry = data[:cut], data[cut:]
            if _BLANK_LINE.search(data) is None and not data.startswith(b"\n"):
                count += data.count(b"\n")
            else:
                count += sum(1 for ln in data.split(b"\n") if ln.strip())
        if carry.strip():
            count += 1
    return count


def _check_line(line: bytes, number: int, label: str) -> None:
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise ApiError(
            400, "INVALID_ARGUMENT", f"Line {number} of {label} is not valid JSON: {exc}."
        ) from None
    if not isinstance(obj, dict):
        raise ApiError(400, "INVALID_ARGUMENT", f"Line {number} of {label} is not a JSON object.")


def _write_inline_requests(path: Path, items: list[Any]) -> None:
    """Stores inline requests as JSONL lines ``{"request", "metadata"?}`` (0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb", buffering=COPY_CHUNK) as f:
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise ApiError(400, "INVALID_ARGUMENT", f"requests[{i}] must be an object.")
            request = item.get("request")
            if request is None and ("contents" in item or "content" in item):
                request = item
            if not isinstance(request, dict):
                raise ApiError(400, "INVALID_ARGUMENT", f"requests[{i}].request must be an object.")
            line: dict[str, Any] = {"request": request}
            md = _stringify_metadata(item.get("metadata"))
            if md is not None:
                line["metadata"] = md
            f.write(orjson.dumps(line) + b"\n")


class BatchesApi(HttpHandler):
    """The operations on ``batches/*`` and ``models/*:batch...`` (see :data:`ROUTES`)."""

    def _batch_row(self, batch_id: str) -> Any:
        """The batch's row, if this request's key may see it (else 404, as the service)."""
        row = self.state.store.get_batch(batch_id)
        if row is None or not _store.visible(row, self._scope()):
            raise ApiError(404, "NOT_FOUND", f"Batch batches/{batch_id} was not found.")
        return row

    def _operation(self, row: Any, view: BatchView) -> bytes:
        embed = row["kind"] == "embed"
        meta: dict[str, Any] = {
            "@type": _EMB_BATCH_TYPE if embed else _GEN_BATCH_TYPE,
            "name": f"batches/{row['id']}",
            "model": row["model"],
        }
        if row["display_name"] is not None:
            meta["displayName"] = row["display_name"]
        if row["input_file"]:
            meta["inputConfig"] = {"fileName": row["input_file"]}
        meta["createTime"] = _store.rfc3339(row["create_time"])
        if view.end_time is not None:
            meta["endTime"] = _store.rfc3339(view.end_time)
            # The service's updateTime of a finished batch is a few ns off its endTime.
            meta["updateTime"] = _store.rfc3339(view.end_time, _store.UPDATE_AFTER_END_NS)
        else:
            meta["updateTime"] = _store.rfc3339(view.update_time)
        counts = {
            "requestCount": view.request_count,
            "successfulRequestCount": view.succeeded,
            "failedRequestCount": view.failed,
            "pendingRequestCount": view.pending,
        }
        zeros = self.state.config.zero_counts  # the service leaves zero counts out
        meta["batchStats"] = {k: str(v) for k, v in counts.items() if v or zeros}
        meta["state"] = view.state
        op: dict[str, Any] = {"name": f"batches/{row['id']}", "metadata": meta}
        raw_inline: bytes | None = None
        answered = view.succeeded + view.failed
        # A cancelled batch keeps the answers it had produced (none: no output at all).
        if view.state == STATE_SUCCEEDED or (view.state == STATE_CANCELLED and answered):
            output: dict[str, Any]
            if row["mode"] == "file":
                output = {"responsesFile": f"files/batch-{row['id']}"}
            else:
                output = {"inlinedResponses": {"inlinedResponses": _INLINE_PLACEHOLDER}}
                raw_inline = self._inline_results(row, answered)
            meta["output"] = output
            op["response"] = {"@type": _EMB_OUTPUT_TYPE if embed else _GEN_OUTPUT_TYPE, **output}
        if view.state in TERMINAL_STATES:
            op["done"] = True
        if view.error is not None:
            op["error"] = view.error
        data = orjson.dumps(op)
        if raw_inline is not None:
            data = data.replace(orjson.dumps(_INLINE_PLACEHOLDER), raw_inline)
        return data

    def _inline_results(self, row: Any, count: int) -> bytes:
        """The first ``count`` answered lines of an inline batch, as a JSON array."""
        path = self.state.store.batch_dir(row["id"]) / "output.jsonl"
        fresh = self.state.store.get_batch(row["id"]) or row
        try:
            with open(path, "rb") as f:
                data = f.read(int(fresh["out_offset"]))
        except FileNotFoundError:
            return b"[]"
        lines = [ln for ln in data.split(b"\n") if ln][:count]
        return b"[" + b",".join(lines) + b"]"

    def op_batch_get(self, id: str) -> None:
        self._drain()
        row = self._batch_row(id)
        self._send_bytes(self._operation(row, self.state.view(row)))

    def op_batch_list(self) -> None:
        self._drain()
        try:
            rows, token = self.state.store.list_batches(
                self._page_size(50), self._query.get("pageToken") or None, self._scope()
            )
        except ValueError as exc:
            raise ApiError(400, "INVALID_ARGUMENT", str(exc)) from None
        ops = [self._operation(r, self.state.view(r)) for r in rows]
        parts = []
        if ops:
            parts.append(b'"operations":[' + b",".join(ops) + b"]")
        if token:
            parts.append(b'"nextPageToken":' + orjson.dumps(token))
        self._send_bytes(b"{" + b",".join(parts) + b"}")

    def op_batch_cancel(self, id: str) -> None:
        self._drain()
        self._batch_row(id)
        if not self.state.store.set_override(id, _store.STATE_CANCELLED, time.time(), True):
            if self.state.store.get_batch(id) is None:
                raise ApiError(404, "NOT_FOUND", f"Batch batches/{id} was not found.")
            raise ApiError(
                400,
                "FAILED_PRECONDITION",
                f"Batch batches/{id} has already finished and cannot be cancelled.",
            )
        self._send_json({})

    def op_batch_delete(self, id: str) -> None:
        self._drain()
        self._batch_row(id)
        self.state.store.delete_batch(id)
        self._send_json({})

    def op_batch_create(self, model: str, op: str) -> None:
        state = self.state
        config = state.config  # one consistent set of options for this batch
        body = self._read_json(required=True)
        batch = body.get("batch", body)
        if not isinstance(batch, dict):
            raise ApiError(400, "INVALID_ARGUMENT", '"batch" must be an object.')
        display_name = field(batch, "displayName", "display_name")
        if display_name is not None and not isinstance(display_name, str):
            raise ApiError(400, "INVALID_ARGUMENT", "batch.displayName must be a string.")
        ic = field(batch, "inputConfig", "input_config")
        if not isinstance(ic, dict):
            raise ApiError(400, "INVALID_ARGUMENT", "batch.inputConfig is required.")
        kind = "embed" if op == "asyncBatchEmbedContent" else "generate"
        check_model(config, model, op, self._version)
        batch_id = _store.new_id(config.batch_id_length)
        scope = self._scope()
        reqs = ic.get("requests")
        file_name = field(ic, "fileName", "file_name")
        bdir = state.store.batch_dir(batch_id)
        input_file: str | None = None
        if reqs is not None:
            items = reqs.get("requests") if isinstance(reqs, dict) else reqs
            if not isinstance(items, list):
                raise ApiError(
                    400, "INVALID_ARGUMENT", "batch.inputConfig.requests.requests must be a list."
                )
            bdir.mkdir(mode=0o700, parents=True, exist_ok=True)
            input_path = bdir / "input.jsonl"
            try:
                _write_inline_requests(input_path, items)
            except BaseException:
                with contextlib.suppress(OSError):
                    input_path.unlink(missing_ok=True)
                    bdir.rmdir()
                raise
            count = len(items)
            mode = "inline"
        elif isinstance(file_name, str) and file_name:
            fid = file_name.removeprefix("files/")
            frow = state.store.get_file(fid, scope)
            if frow is None:
                raise ApiError(
                    403,
                    "PERMISSION_DENIED",
                    f"You do not have permission to access the File {fid} or it may not exist.",
                )
            input_path = state.store.file_path(fid)
            count = count_and_check_jsonl(input_path, f"files/{fid}", frow["line_count"])
            mode = "file"
            input_file = f"files/{fid}"
        else:
            raise ApiError(
                400,
                "INVALID_ARGUMENT",
                "batch.inputConfig needs either requests.requests[] or fileName.",
            )
        now = time.time()
        failure: dict[str, Any] = {}
        if state.draw_batch_failure():
            # FAILED when it would have started to run, with the operation error given.
            failure = {
                "error_at": now + config.pending_seconds,
                "error_code": 13,
                "error_message": config.fail_batch_message,
            }
        state.store.insert_batch(
            {
                "id": batch_id,
                "kind": kind,
                "mode": mode,
                "model": model,
                "display_name": display_name,
                "input_file": input_file,
                "input_path": str(input_path),
                "request_count": count,
                "create_time": now,
                "owner_key": scope,
                **config.batch_options(count),
                **failure,
            }
        )
        state.poke()
        if state.draw_drop():
            # The "ambiguous create": persisted, but the client never hears back.
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        row = state.store.get_batch(batch_id)
        view = BatchView(STATE_PENDING, count, 0, 0, count, now, None, None)
        self._send_bytes(self._operation(row, view))


#: The Batch API's routes, in the order they are tried.
ROUTES: tuple[Route, ...] = (
    Route(
        "POST",
        re.compile(
            rf"^/{VERSION}/(?P<model>(?:models|tunedModels)/[A-Za-z0-9_.@-]+)"
            r":(?P<op>batchGenerateContent|asyncBatchEmbedContent)$"
        ),
        BatchesApi.op_batch_create,
    ),
    Route("GET", re.compile(rf"^/{VERSION}/batches$"), BatchesApi.op_batch_list),
    Route("GET", re.compile(rf"^/{VERSION}/batches/{ID}$"), BatchesApi.op_batch_get),
    Route("DELETE", re.compile(rf"^/{VERSION}/batches/{ID}$"), BatchesApi.op_batch_delete),
    Route("POST", re.compile(rf"^/{VERSION}/batches/{ID}:cancel$"), BatchesApi.op_batch_cancel),
)
