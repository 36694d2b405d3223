"""HTTP layer: routes the Gemini Batch API and File API wire protocol onto the store."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import random
import re
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import orjson

from . import _store
from ._model import _get
from ._store import STATE_PENDING, STATE_SUCCEEDED, TERMINAL_STATES, BatchView, Store

_VER = r"(?P<v>v\d+[a-z0-9]*)"
_ID = r"(?P<id>[A-Za-z0-9_.-]+)"
_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("POST", re.compile(rf"^/upload/{_VER}/files$"), "upload"),
    ("GET", re.compile(rf"^/download/{_VER}/files/{_ID}:download$"), "file_download"),
    ("GET", re.compile(rf"^/{_VER}/files$"), "file_list"),
    ("GET", re.compile(rf"^/{_VER}/files/{_ID}:download$"), "file_download"),
    ("GET", re.compile(rf"^/{_VER}/files/{_ID}$"), "file_get"),
    ("DELETE", re.compile(rf"^/{_VER}/files/{_ID}$"), "file_delete"),
    (
        "POST",
        re.compile(
            rf"^/{_VER}/(?P<model>(?:models|tunedModels)/[A-Za-z0-9_.@-]+)"
            r":(?P<op>batchGenerateContent|asyncBatchEmbedContent)$"
        ),
        "batch_create",
    ),
    ("GET", re.compile(rf"^/{_VER}/batches$"), "batch_list"),
    ("GET", re.compile(rf"^/{_VER}/batches/{_ID}$"), "batch_get"),
    ("DELETE", re.compile(rf"^/{_VER}/batches/{_ID}$"), "batch_delete"),
    ("POST", re.compile(rf"^/{_VER}/batches/{_ID}:cancel$"), "batch_cancel"),
]
_ADMIN_SET_STATE = re.compile(r"^/_emulator/batches/(?P<id>[A-Za-z0-9_-]+):setState$")
_FILE_ID_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$")
_INLINE_PLACEHOLDER = "@@gemini-emulator-inlined-responses@@"
_GEN_BATCH_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch"
_GEN_OUTPUT_TYPE = (
    "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatchOutput"
)
_EMB_BATCH_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main.EmbedContentBatch"
_EMB_OUTPUT_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main.EmbedContentBatchOutput"
_MAX_JSON_BODY = 1 << 30
_VALIDATE_LINES = 1000
_COPY_CHUNK = 1 << 20
_BLANK_LINE = re.compile(rb"\n[ \t\r]*\n")
UPLOAD_GRANULARITY = 8 * 1024 * 1024


class ApiError(Exception):
    """An error answered in the Google JSON shape."""

    def __init__(self, code: int, status: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.message = message


def _stringify_metadata(md: Any) -> dict[str, str] | None:
    if not isinstance(md, dict):
        return None
    return {str(k): v if isinstance(v, str) else orjson.dumps(v).decode() for k, v in md.items()}


def count_and_check_jsonl(path: Path, label: str, known_count: int | None = None) -> int:
    """Counts the non-blank lines of a JSONL file and checks that the first ones are objects.

    With ``known_count`` (counted during the upload) only the first lines are read.
    """
    count = 0
    with open(path, "rb", buffering=_COPY_CHUNK) as f:
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
            chunk = f.read(4 * _COPY_CHUNK)
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


class _UploadProgress:
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
    with os.fdopen(fd, "wb", buffering=_COPY_CHUNK) as f:
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


class Core:
    """State shared by all request handlers of one emulator."""

    def __init__(
        self,
        store: Store,
        *,
        pending_seconds: float,
        rate: float,
        fail_rate: float,
        seed: int,
        http_fault_rate: float,
        drop_after_create_rate: float,
        shuffle: bool,
        expire_after: float | None,
        api_key: str | None,
        poke: Callable[[], None],
        workers: Callable[[], dict[str, Any]] = dict,
    ) -> None:
        self.store = store
        self.pending_seconds = pending_seconds
        self.rate = rate
        self.fail_rate = fail_rate
        self.seed = seed
        self.http_fault_rate = http_fault_rate
        self.drop_after_create_rate = drop_after_create_rate
        self.shuffle = shuffle
        self.expire_after = expire_after
        self._api_key = api_key
        self.poke = poke
        self.workers = workers
        self._lock = threading.Lock()
        self._calls: list[tuple[str, str]] = []
        self._fault_rng = random.Random(f"http-fault:{seed}")
        self._drop_rng = random.Random(f"drop-after-create:{seed}")
        self._uploads: dict[str, _UploadProgress] = {}

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
        if self.http_fault_rate <= 0:
            return None
        with self._lock:
            if self._fault_rng.random() >= self.http_fault_rate:
                return None
            if self._fault_rng.random() < 0.5:
                return (
                    429,
                    "RESOURCE_EXHAUSTED",
                    "Resource has been exhausted (e.g. check quota). (Simulated by the emulator.)",
                )
            return 503, "UNAVAILABLE", "The service is currently unavailable. (Simulated.)"

    def draw_drop(self) -> bool:
        if self.drop_after_create_rate <= 0:
            return False
        with self._lock:
            return self._drop_rng.random() < self.drop_after_create_rate

    def check_key(self, provided: str | None) -> None:
        if not provided:
            raise ApiError(
                401,
                "UNAUTHENTICATED",
                "Method doesn't allow unregistered callers (callers without established "
                "identity). Please use API Key or other form of API consumer identity to call "
                "this API.",
            )
        if self._api_key is not None and not hmac.compare_digest(
            provided.encode(), self._api_key.encode()
        ):
            raise ApiError(
                400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key."
            )

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
            "createTime": _store.rfc3339(row["create_time"]),
        }

    def set_state(self, batch_id: str, state: str) -> None:
        norm = state.upper().removeprefix("BATCH_STATE_").removeprefix("JOB_STATE_")
        if norm not in ("FAILED", "EXPIRED", "CANCELLED"):
            raise ValueError(
                f"Unsupported state {state!r}: use 'FAILED', 'EXPIRED' or 'CANCELLED'."
            )
        if not self.store.set_override(batch_id, f"BATCH_STATE_{norm}", time.time(), False):
            raise KeyError(f"batches/{batch_id} does not exist.")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    core: Core

    def __init__(self, addr: tuple[str, int], core: Core, ipv6: bool) -> None:
        self.address_family = socket.AF_INET6 if ipv6 else socket.AF_INET
        self.core = core
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(addr, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_all_connections(self) -> None:
        with self._open_lock:
            conns = list(self._open)
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # client disconnects and similar: never print tracebacks


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "GeminiBatchEmulator/1.0"
    sys_version = ""
    server: _Server

    def setup(self) -> None:
        super().setup()
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    # -- plumbing ------------------------------------------------------------------------

    @property
    def core(self) -> Core:
        return self.server.core

    def _dispatch(self, method: str) -> None:
        self._body_left: int | None = None
        self._chunked = "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()
        cl = self.headers.get("Content-Length")
        try:
            self._body_left = int(cl) if cl is not None else (None if self._chunked else 0)
        except ValueError:
            self._body_left = 0
        self._upload_chunk = False
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        self._query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        self._version = "v1beta"
        try:
            if path.startswith("/_emulator/") or path == "/_emulator":
                self._admin(method, path)
                return
            self.core.record_call(method, path)
            self._upload_chunk = (
                method == "POST" and path.startswith("/upload/") and "upload_id" in self._query
            )
            fault = self.core.draw_fault()
            if fault is not None:
                self._drain()
                # Chunk faults carry no X-Goog-Upload-Status so the SDK resends the chunk.
                self._send_error(*fault, upload_status=None)
                return
            self._route(method, path)
        except ApiError as e:
            self._drain()
            self._send_error(
                e.code, e.status, e.message, upload_status="final" if self._upload_chunk else None
            )
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.close_connection = True
        except Exception as e:
            self._drain()
            self._send_error(
                500,
                "INTERNAL",
                f"Emulator internal error: {type(e).__name__}: {e}",
                upload_status="final" if self._upload_chunk else None,
            )

    def _route(self, method: str, path: str) -> None:
        if self._upload_chunk:
            vm = re.match(r"^/upload/(v\d+[a-z0-9]*)/files$", path)
            if vm is None:
                raise ApiError(404, "NOT_FOUND", f"The requested URL {path} was not found.")
            self._version = vm.group(1)
            self._upload_chunk_handler()
            return
        matched_path = False
        for m, pattern, name in _ROUTES:
            match = pattern.match(path)
            if match is None:
                continue
            matched_path = True
            if m != method:
                continue
            self._version = match.group("v")
            self.core.check_key(self._api_key())
            getattr(self, "_h_" + name)(**{k: v for k, v in match.groupdict().items() if k != "v"})
            return
        if matched_path:
            raise ApiError(404, "NOT_FOUND", f"Method {method} is not supported on {path}.")
        raise ApiError(404, "NOT_FOUND", f"The requested URL {path} was not found on this server.")

    def _api_key(self) -> str | None:
        key = self.headers.get("x-goog-api-key")
        if key is None:
            key = self._query.get("key")
        return key.strip() if key else None

    def _read_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            piece = self.rfile.read(min(n - len(buf), _COPY_CHUNK))
            if not piece:
                raise ConnectionResetError("client closed the connection mid-body")
            buf += piece
        return bytes(buf)

    def _iter_body(self) -> Any:
        """Yields the request body in pieces (Content-Length or chunked)."""
        if self._chunked and self._body_left is None:
            while True:
                size_line = self.rfile.readline(1024)
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    self._body_left = 0
                    return
                left = size
                while left:
                    piece = self.rfile.read(min(left, _COPY_CHUNK))
                    if not piece:
                        raise ConnectionResetError("client closed the connection mid-body")
                    left -= len(piece)
                    yield piece
                self.rfile.readline(16)
        left = self._body_left or 0
        while left > 0:
            piece = self.rfile.read(min(left, _COPY_CHUNK))
            if not piece:
                self._body_left = 0
                raise ConnectionResetError("client closed the connection mid-body")
            left -= len(piece)
            self._body_left = left
            yield piece
        self._body_left = 0

    def _drain(self) -> None:
        try:
            for _ in self._iter_body():
                pass
        except (OSError, ValueError):
            self.close_connection = True

    def _read_body(self) -> bytes:
        if self._body_left is not None and self._body_left > _MAX_JSON_BODY:
            raise ApiError(400, "INVALID_ARGUMENT", "Request body too large.")
        return b"".join(self._iter_body())

    def _read_json(self, required: bool) -> dict[str, Any]:
        raw = self._read_body()
        if not raw.strip():
            if required:
                raise ApiError(400, "INVALID_ARGUMENT", "The request body must be a JSON object.")
            return {}
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ApiError(
                400, "INVALID_ARGUMENT", f"Invalid JSON payload received. {exc}."
            ) from None
        if not isinstance(obj, dict):
            raise ApiError(400, "INVALID_ARGUMENT", "The request body must be a JSON object.")
        return obj

    def _send_bytes(
        self,
        body: bytes,
        code: int = 200,
        content_type: str = "application/json; charset=UTF-8",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if body:
            self.wfile.write(body)

    def _send_json(self, obj: Any, headers: dict[str, str] | None = None) -> None:
        self._send_bytes(orjson.dumps(obj), headers=headers)

    def _send_error(
        self, code: int, status: str, message: str, upload_status: str | None = None
    ) -> None:
        body = orjson.dumps({"error": {"code": code, "message": message, "status": status}})
        headers = {"X-Goog-Upload-Status": upload_status} if upload_status else None
        try:
            self._send_bytes(body, code=code, headers=headers)
        except OSError:
            self.close_connection = True

    def _base(self) -> str:
        host = self.headers.get("Host")
        if not host:
            h, p = self.server.server_address[:2]
            hs = h.decode() if isinstance(h, bytes) else str(h)
            host = f"[{hs}]:{p}" if ":" in hs else f"{hs}:{p}"
        return f"http://{host}"

    # -- admin ---------------------------------------------------------------------------

    def _admin(self, method: str, path: str) -> None:
        core = self.core
        if method != "POST":
            self._drain()
        if method == "GET" and path == "/_emulator/calls":
            self._send_json({"calls": [list(c) for c in core.calls()]})
        elif method == "POST" and path == "/_emulator/reset-calls":
            self._drain()
            core.reset_calls()
            self._send_json({})
        elif method == "GET" and path == "/_emulator/batches":
            self._send_json({"batches": [core.batch_summary(r) for r in core.store.all_batches()]})
        elif method == "GET" and path == "/_emulator/files":
            core.settle_all()
            with core.store.conn() as c:
                rows = c.execute(
                    "SELECT * FROM files ORDER BY create_time DESC, id DESC"
                ).fetchall()
            self._send_json({"files": [core.file_summary(r) for r in rows]})
        elif method == "GET" and path == "/_emulator/workers":
            self._send_json(core.workers())
        elif method == "GET" and path == "/_emulator/health":
            self._send_json({"ok": True})
        elif method == "POST" and (m := _ADMIN_SET_STATE.match(path)):
            body = self._read_json(required=True)
            state = body.get("state")
            if not isinstance(state, str):
                raise ApiError(400, "INVALID_ARGUMENT", 'Body must be {"state": "EXPIRED"}.')
            try:
                core.set_state(m.group("id"), state)
            except ValueError as exc:
                raise ApiError(400, "INVALID_ARGUMENT", str(exc)) from None
            except KeyError:
                raise ApiError(
                    404, "NOT_FOUND", f"batches/{m.group('id')} does not exist."
                ) from None
            row = core.store.get_batch(m.group("id"))
            self._send_json(core.batch_summary(row) if row is not None else {})
        else:
            raise ApiError(404, "NOT_FOUND", f"Unknown emulator admin route {method} {path}.")

    # -- files ---------------------------------------------------------------------------

    def _file_json(self, row: Any) -> dict[str, Any]:
        base = self._base()
        fid = row["id"]
        out: dict[str, Any] = {"name": f"files/{fid}"}
        if row["display_name"]:
            out["displayName"] = row["display_name"]
        out.update(
            {
                "mimeType": row["mime_type"],
                "sizeBytes": str(row["size_bytes"]),
                "createTime": _store.rfc3339(row["create_time"]),
                "updateTime": _store.rfc3339(row["create_time"]),
                "expirationTime": _store.rfc3339(row["create_time"] + _store.FILE_TTL_SECONDS),
                "sha256Hash": row["sha256"],
                "uri": f"{base}/{self._version}/files/{fid}",
                "state": "ACTIVE",
                "source": row["source"],
            }
        )
        if row["source"] == "GENERATED":
            out["downloadUri"] = f"{base}/download/{self._version}/files/{fid}:download?alt=media"
        return out

    def _file_row(self, file_id: str) -> Any:
        row = self.core.store.get_file(file_id)
        if row is None and file_id.startswith("batch-"):
            self.core.settle_all()
            row = self.core.store.get_file(file_id)
        if row is None:
            raise ApiError(
                403,
                "PERMISSION_DENIED",
                f"You do not have permission to access the File {file_id} or it may not exist.",
            )
        return row

    def _h_file_get(self, id: str) -> None:
        self._drain()
        self._send_json(self._file_json(self._file_row(id)))

    def _h_file_delete(self, id: str) -> None:
        self._drain()
        self._file_row(id)
        self.core.store.delete_file(id)
        self._send_json({})

    def _page_size(self, default: int) -> int:
        raw = self._query.get("pageSize")
        if raw is None:
            return default
        try:
            n = int(raw)
        except ValueError:
            raise ApiError(400, "INVALID_ARGUMENT", f"Invalid pageSize {raw!r}.") from None
        if n < 0:
            raise ApiError(400, "INVALID_ARGUMENT", "pageSize must not be negative.")
        return min(n or default, 1000)

    def _h_file_list(self) -> None:
        self._drain()
        self.core.settle_all()
        try:
            rows, token = self.core.store.list_files(
                self._page_size(100), self._query.get("pageToken") or None
            )
        except ValueError as exc:
            raise ApiError(400, "INVALID_ARGUMENT", str(exc)) from None
        out: dict[str, Any] = {}
        if rows:
            out["files"] = [self._file_json(r) for r in rows]
        if token:
            out["nextPageToken"] = token
        self._send_json(out)

    def _h_file_download(self, id: str) -> None:
        self._drain()
        row = self._file_row(id)
        path = self.core.store.file_path(id)
        try:
            f = open(path, "rb")
        except FileNotFoundError:
            raise ApiError(404, "NOT_FOUND", f"The bytes of files/{id} are gone.") from None
        with f:
            size = os.fstat(f.fileno()).st_size
            self.send_response(200)
            mime = str(row["mime_type"] or "")
            self.send_header("Content-Type", mime if "/" in mime else "application/octet-stream")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            # The kernel copies the bytes (os.sendfile where there is one): no Python loop
            # that would wait for the GIL per chunk while batches are being answered.
            if self.connection.sendfile(f, 0, size) < size:
                self.close_connection = True  # the file shrank: the body is short

    def _h_upload(self) -> None:
        protocol = (self.headers.get("X-Goog-Upload-Protocol") or "").lower()
        command = (self.headers.get("X-Goog-Upload-Command") or "").lower()
        body = self._read_json(required=False)
        if protocol != "resumable" or "start" not in command:
            raise ApiError(
                400,
                "INVALID_ARGUMENT",
                "Only resumable uploads are supported: send X-Goog-Upload-Protocol: resumable "
                "and X-Goog-Upload-Command: start.",
            )
        meta = body.get("file") if isinstance(body.get("file"), dict) else {}
        assert isinstance(meta, dict)
        display_name = _get(meta, "displayName", "display_name")
        mime = (
            _get(meta, "mimeType", "mime_type")
            or self.headers.get("X-Goog-Upload-Header-Content-Type")
            or "application/octet-stream"
        )
        size_raw = self.headers.get("X-Goog-Upload-Header-Content-Length")
        if size_raw is None:
            size_raw = _get(meta, "sizeBytes", "size_bytes")
        try:
            size = int(size_raw) if size_raw is not None else None
        except (TypeError, ValueError):
            raise ApiError(400, "INVALID_ARGUMENT", f"Invalid upload size {size_raw!r}.") from None
        name = meta.get("name")
        if name:
            file_id = str(name).removeprefix("files/")
            if not _FILE_ID_RE.match(file_id):
                raise ApiError(
                    400,
                    "INVALID_ARGUMENT",
                    f"Invalid file name {name!r}: ids are 1-40 lowercase letters, digits and "
                    "dashes, and may not start or end with a dash.",
                )
            if self.core.store.get_file(file_id) is not None:
                raise ApiError(409, "ALREADY_EXISTS", f"File files/{file_id} already exists.")
        else:
            file_id = _store.new_id(12)
        upload_id = _store.new_id(32)
        part = self.core.store.upload_path(upload_id)
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.close(fd)
        self.core.store.insert_upload(upload_id, file_id, display_name, str(mime), size)
        url = (
            f"{self._base()}/upload/{self._version}/files?upload_id={upload_id}"
            "&upload_protocol=resumable"
        )
        self._send_bytes(
            b"",
            headers={
                "X-Goog-Upload-Status": "active",
                "X-Goog-Upload-URL": url,
                "X-Goog-Upload-Control-URL": url,
                "X-Goog-Upload-Chunk-Granularity": str(UPLOAD_GRANULARITY),
            },
        )

    def _upload_chunk_handler(self) -> None:
        core = self.core
        upload_id = self._query.get("upload_id", "")
        up = core.store.get_upload(upload_id) if re.fullmatch(r"[a-z0-9]+", upload_id) else None
        if up is None:
            raise ApiError(404, "NOT_FOUND", "Unknown or finished upload session.")
        command = {
            c.strip() for c in (self.headers.get("X-Goog-Upload-Command") or "").lower().split(",")
        }
        part = core.store.upload_path(upload_id)
        current = part.stat().st_size if part.exists() else 0
        if "query" in command:
            self._drain()
            self._send_bytes(
                b"",
                headers={
                    "X-Goog-Upload-Status": "active",
                    "X-Goog-Upload-Size-Received": str(current),
                },
            )
            return
        if "upload" not in command and "finalize" not in command:
            raise ApiError(
                400, "INVALID_ARGUMENT", "X-Goog-Upload-Command must be upload and/or finalize."
            )
        off_raw = self.headers.get("X-Goog-Upload-Offset")
        try:
            offset = int(off_raw) if off_raw is not None else current
        except ValueError:
            raise ApiError(
                400, "INVALID_ARGUMENT", f"Invalid X-Goog-Upload-Offset {off_raw!r}."
            ) from None
        if offset < 0 or offset > current:
            raise ApiError(
                400,
                "INVALID_ARGUMENT",
                f"X-Goog-Upload-Offset {offset} does not match the {current} bytes received.",
            )
        progress = core._uploads.pop(upload_id, None)
        if progress is None and offset == 0:
            progress = _UploadProgress()
        if progress is not None and progress.offset != offset:
            progress = None
        written = 0
        with open(part, "r+b") as f:
            f.seek(offset)
            for piece in self._iter_body():
                f.write(piece)
                written += len(piece)
                if progress is not None:
                    progress.update(piece)
            f.truncate(offset + written)
        if "finalize" not in command:
            if progress is not None:
                core._uploads[upload_id] = progress
            self._send_bytes(b"", headers={"X-Goog-Upload-Status": "active"})
            return
        total = offset + written
        if up["size_bytes"] is not None and total != int(up["size_bytes"]):
            core.store.delete_upload(upload_id)
            raise ApiError(
                400,
                "INVALID_ARGUMENT",
                f"The upload declared {up['size_bytes']} bytes but {total} were received.",
            )
        if progress is None:
            progress = _UploadProgress()
            with open(part, "rb") as f:
                while chunk := f.read(_COPY_CHUNK):
                    progress.update(chunk)
        sha = base64.b64encode(progress.hasher.hexdigest().encode()).decode()
        file_id = up["file_id"]
        dest = core.store.file_path(file_id)
        if not core.store.insert_file(
            file_id,
            up["display_name"],
            up["mime_type"],
            total,
            sha,
            "UPLOADED",
            line_count=progress.line_count(),
        ):
            core.store.delete_upload(upload_id)
            raise ApiError(409, "ALREADY_EXISTS", f"File files/{file_id} already exists.")
        os.replace(part, dest)
        core.store.delete_upload(upload_id)
        row = core.store.get_file(file_id)
        self._send_bytes(
            orjson.dumps({"file": self._file_json(row)}),
            headers={"X-Goog-Upload-Status": "final"},
        )

    # -- batches -------------------------------------------------------------------------

    def _batch_row(self, batch_id: str) -> Any:
        row = self.core.store.get_batch(batch_id)
        if row is None:
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
        meta["updateTime"] = _store.rfc3339(view.update_time)
        if view.end_time is not None:
            meta["endTime"] = _store.rfc3339(view.end_time)
        meta["batchStats"] = {
            "requestCount": str(view.request_count),
            "successfulRequestCount": str(view.succeeded),
            "failedRequestCount": str(view.failed),
            "pendingRequestCount": str(view.pending),
        }
        meta["state"] = view.state
        op: dict[str, Any] = {"name": f"batches/{row['id']}", "metadata": meta}
        raw_inline: bytes | None = None
        if view.state == STATE_SUCCEEDED:
            output: dict[str, Any]
            if row["mode"] == "file":
                output = {"responsesFile": f"files/batch-{row['id']}"}
            else:
                output = {"inlinedResponses": {"inlinedResponses": _INLINE_PLACEHOLDER}}
                raw_inline = self._inline_results(row)
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

    def _inline_results(self, row: Any) -> bytes:
        path = self.core.store.batch_dir(row["id"]) / "output.jsonl"
        try:
            with open(path, "rb") as f:
                data = f.read(int(row["out_offset"]))
        except FileNotFoundError:
            return b"[]"
        lines = [ln for ln in data.split(b"\n") if ln]
        return b"[" + b",".join(lines) + b"]"

    def _h_batch_get(self, id: str) -> None:
        self._drain()
        row = self._batch_row(id)
        self._send_bytes(self._operation(row, self.core.view(row)))

    def _h_batch_list(self) -> None:
        self._drain()
        try:
            rows, token = self.core.store.list_batches(
                self._page_size(50), self._query.get("pageToken") or None
            )
        except ValueError as exc:
            raise ApiError(400, "INVALID_ARGUMENT", str(exc)) from None
        ops = [self._operation(r, self.core.view(r)) for r in rows]
        parts = []
        if ops:
            parts.append(b'"operations":[' + b",".join(ops) + b"]")
        if token:
            parts.append(b'"nextPageToken":' + orjson.dumps(token))
        self._send_bytes(b"{" + b",".join(parts) + b"}")

    def _h_batch_cancel(self, id: str) -> None:
        self._drain()
        self._batch_row(id)
        if not self.core.store.set_override(id, _store.STATE_CANCELLED, time.time(), True):
            if self.core.store.get_batch(id) is None:
                raise ApiError(404, "NOT_FOUND", f"Batch batches/{id} was not found.")
            raise ApiError(
                400,
                "FAILED_PRECONDITION",
                f"Batch batches/{id} has already finished and cannot be cancelled.",
            )
        self._send_json({})

    def _h_batch_delete(self, id: str) -> None:
        self._drain()
        self._batch_row(id)
        self.core.store.delete_batch(id)
        self._send_json({})

    def _h_batch_create(self, model: str, op: str) -> None:
        core = self.core
        body = self._read_json(required=True)
        batch = body.get("batch", body)
        if not isinstance(batch, dict):
            raise ApiError(400, "INVALID_ARGUMENT", '"batch" must be an object.')
        display_name = _get(batch, "displayName", "display_name")
        if display_name is not None and not isinstance(display_name, str):
            raise ApiError(400, "INVALID_ARGUMENT", "batch.displayName must be a string.")
        ic = _get(batch, "inputConfig", "input_config")
        if not isinstance(ic, dict):
            raise ApiError(400, "INVALID_ARGUMENT", "batch.inputConfig is required.")
        kind = "embed" if op == "asyncBatchEmbedContent" else "generate"
        batch_id = _store.new_id(20)
        reqs = ic.get("requests")
        file_name = _get(ic, "fileName", "file_name")
        bdir = core.store.batch_dir(batch_id)
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
            frow = core.store.get_file(fid)
            if frow is None:
                raise ApiError(
                    403,
                    "PERMISSION_DENIED",
                    f"You do not have permission to access the File {fid} or it may not exist.",
                )
            input_path = core.store.file_path(fid)
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
        core.store.insert_batch(
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
                "pending_seconds": core.pending_seconds,
                "rate": core.rate,
                "expire_after": core.expire_after,
                "fail_rate": core.fail_rate,
                "seed": core.seed,
                "shuffle": 1 if core.shuffle else 0,
            }
        )
        core.poke()
        if core.draw_drop():
            # The "ambiguous create": persisted, but the client never hears back.
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        row = core.store.get_batch(batch_id)
        view = BatchView(STATE_PENDING, count, 0, 0, count, now, None, None)
        self._send_bytes(self._operation(row, view))
