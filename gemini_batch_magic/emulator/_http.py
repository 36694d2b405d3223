"""HTTP plumbing: the server, body reading and sending, errors, route-table dispatch.

Nothing here knows what a file or a batch is: the operations are methods of the
subclasses of :class:`HttpHandler` in ``_files_api``, ``_batches_api`` and ``_admin_api``,
found through their route tables.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import parse_qs, unquote, urlsplit

import orjson

from ._config import EmulatorConfig
from ._state import ApiState

#: The API version segment of a path (``v1``, ``v1beta``, ...), captured as ``v``.
VERSION = r"(?P<v>v\d+[a-z0-9]*)"
#: A file or batch id in a path, captured as ``id``.
ID = r"(?P<id>[A-Za-z0-9_.-]+)"
#: Bytes read or copied at a time.
COPY_CHUNK = 1 << 20
_MAX_JSON_BODY = 1 << 30


class ApiError(Exception):
    """An error answered in the Google JSON shape (``details``: its ``google.rpc`` details)."""

    def __init__(
        self,
        code: int,
        status: str,
        message: str,
        details: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.message = message
        self.details = details


@dataclass(frozen=True)
class Route:
    """One row of a route table: ``op(handler, **groups)`` answers ``method`` on ``pattern``
    (the named groups of the match, ``v`` aside, become its keyword arguments)."""

    method: str
    pattern: re.Pattern[str]
    op: Callable[..., None]
    needs_key: bool = True


_INVALID_KEY_MESSAGE = "API key not valid. Please pass a valid API key."
#: The ``details`` of the service's answer to a wrong key (continuedev/continue#8516).
INVALID_KEY_DETAILS: tuple[dict[str, Any], ...] = (
    {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "API_KEY_INVALID",
        "domain": "googleapis.com",
        "metadata": {"service": "generativelanguage.googleapis.com"},
    },
    {
        "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
        "locale": "en-US",
        "message": _INVALID_KEY_MESSAGE,
    },
)


def check_key(provided: str | None, config: EmulatorConfig) -> None:
    """Refuses a missing key (403, as the service) and, when the emulator has
    ``api_key``, any other key (400 with an ``ErrorInfo`` ``API_KEY_INVALID``)."""
    if not provided:
        raise ApiError(
            403,
            "PERMISSION_DENIED",
            "Method doesn't allow unregistered callers (callers without established "
            "identity). Please use API Key or other form of API consumer identity to call "
            "this API.",
        )
    if not config.accepts_key(provided):
        raise ApiError(
            400,
            "INVALID_ARGUMENT",
            _INVALID_KEY_MESSAGE,
            details=[dict(d) for d in INVALID_KEY_DETAILS],
        )


def key_scope(key: str) -> str:
    """The fingerprint stored with what a key creates (never the key itself)."""
    return hashlib.sha256(b"gemini-batch-emulator/key-scope\0" + key.encode()).hexdigest()[:32]


class HttpServer(ThreadingHTTPServer):
    """A threading HTTP server that can close every open connection (on shutdown)."""

    daemon_threads = True
    allow_reuse_address = True
    state: ApiState

    def __init__(
        self,
        addr: tuple[str, int],
        state: ApiState,
        ipv6: bool,
        handler: type[HttpHandler],
    ) -> None:
        self.address_family = socket.AF_INET6 if ipv6 else socket.AF_INET
        self.state = state
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(addr, handler)

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


class HttpHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 plumbing of the API: reading bodies (Content-Length or chunked), sending
    answers and errors in the Google JSON shape, and dispatching on the route tables.

    The API's operations live in subclasses (``_files_api``, ``_batches_api``,
    ``_admin_api``); the server's handler (``_server.Handler``) combines them and sets the
    route tables below.
    """

    protocol_version = "HTTP/1.1"
    server_version = "GeminiBatchEmulator/1.0"
    sys_version = ""
    server: HttpServer

    #: The API's routes, tried in order (a path matching with another method is a 404
    #: naming the method). Each needs an API key unless ``needs_key`` is false.
    routes: ClassVar[tuple[Route, ...]] = ()
    #: The route of upload chunks (a POST to the session URL, which needs no key).
    upload_chunk_route: ClassVar[Route | None] = None
    #: The admin routes under ``/_emulator/`` (no key, no faults, not recorded in calls).
    admin_routes: ClassVar[tuple[Route, ...]] = ()

    # Per request, set by _dispatch.
    _body_left: int | None
    _chunked: bool
    _upload_chunk: bool
    _query: dict[str, str]
    _version: str

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

    # -- routing -------------------------------------------------------------------------

    @property
    def state(self) -> ApiState:
        return self.server.state

    def _dispatch(self, method: str) -> None:
        self._body_left = None
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
                self._route_admin(method, path)
                return
            self.state.record_call(method, path)
            self._upload_chunk = (
                method == "POST" and path.startswith("/upload/") and "upload_id" in self._query
            )
            fault = self.state.draw_fault()
            if fault is not None:
                self._drain()
                # Chunk faults carry no X-Goog-Upload-Status so the SDK resends the chunk.
                self._send_error(*fault, upload_status=None)
                return
            self._route(method, path)
        except ApiError as e:
            self._drain()
            self._send_error(
                e.code,
                e.status,
                e.message,
                upload_status="final" if self._upload_chunk else None,
                details=e.details,
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
            chunk = self.upload_chunk_route
            match = chunk.pattern.match(path) if chunk is not None else None
            if chunk is None or match is None:
                raise ApiError(404, "NOT_FOUND", f"The requested URL {path} was not found.")
            self._version = match.group("v")
            chunk.op(self)
            return
        matched_path = False
        for route in self.routes:
            match = route.pattern.match(path)
            if match is None:
                continue
            matched_path = True
            if route.method != method:
                continue
            self._version = match.group("v")
            if route.needs_key:
                check_key(self._api_key(), self.state.config)
            route.op(self, **{k: v for k, v in match.groupdict().items() if k != "v"})
            return
        if matched_path:
            raise ApiError(404, "NOT_FOUND", f"Method {method} is not supported on {path}.")
        raise ApiError(404, "NOT_FOUND", f"The requested URL {path} was not found on this server.")

    def _route_admin(self, method: str, path: str) -> None:
        if method != "POST":
            self._drain()
        for route in self.admin_routes:
            match = route.pattern.match(path)
            if match is not None and route.method == method:
                route.op(self, **match.groupdict())
                return
        raise ApiError(404, "NOT_FOUND", f"Unknown emulator admin route {method} {path}.")

    # -- reading and sending ---------------------------------------------------------------

    def _scope(self) -> str | None:
        """The key scope of this request (None: every key sees everything)."""
        key = self._api_key()
        if key is None or not self.state.config.scope_by_key:
            return None
        return key_scope(key)

    def _api_key(self) -> str | None:
        key = self.headers.get("x-goog-api-key")
        if key is None:
            key = self._query.get("key")
        return key.strip() if key else None

    def _iter_body(self) -> Iterator[bytes]:
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
                    piece = self.rfile.read(min(left, COPY_CHUNK))
                    if not piece:
                        raise ConnectionResetError("client closed the connection mid-body")
                    left -= len(piece)
                    yield piece
                self.rfile.readline(16)
        left = self._body_left or 0
        while left > 0:
            piece = self.rfile.read(min(left, COPY_CHUNK))
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
        self,
        code: int,
        status: str,
        message: str,
        upload_status: str | None = None,
        details: list[dict[str, Any]] | None = None,
    ) -> None:
        error: dict[str, Any] = {"code": code, "message": message, "status": status}
        if details:
            error["details"] = details
        body = orjson.dumps({"error": error})
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
