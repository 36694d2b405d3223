"""The Vertex AI routes of :mod:`._vertex` on the HTTP plumbing of :mod:`._http`.

``/{v}/projects/{p}/locations/{l}/batchPredictionJobs`` (POST create, GET list),
``.../batchPredictionJobs/{id}`` (GET, DELETE), ``.../{id}:cancel`` (POST) and
``/{v}/publishers/google/models/{model}`` (GET); admin helpers under ``/_emulator/``:
``POST /_emulator/vertex/inject`` ``{"outcome": "FAILED", "count": 1}``,
``POST /_emulator/vertex/drop`` ``{"rate": 1.0}`` (``drop_after_create_rate``),
``POST /_emulator/vertex/release``, ``GET /_emulator/health``.
"""

from __future__ import annotations

import contextlib
import re
import socket
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from ._http import VERSION, ApiError, HttpHandler, HttpServer

_JOBS = rf"^/{VERSION}/projects/(?P<p>[^/]+)/locations/(?P<l>[^/]+)/batchPredictionJobs"
_ROUTES: tuple[tuple[str, re.Pattern[str], str], ...] = (
    ("POST", re.compile(_JOBS + r"$"), "op_create"),
    ("GET", re.compile(_JOBS + r"$"), "op_list"),
    ("POST", re.compile(_JOBS + r"/(?P<id>\d+):cancel$"), "op_cancel"),
    ("GET", re.compile(_JOBS + r"/(?P<id>\d+)$"), "op_get"),
    ("DELETE", re.compile(_JOBS + r"/(?P<id>\d+)$"), "op_delete"),
    ("GET", re.compile(rf"^/{VERSION}/publishers/google/models/(?P<m>[^/:]+)$"), "op_model"),
)


class VertexApi(HttpHandler):
    """Answers the routes above for the :class:`~._vertex.VertexEmulator` ``server.state``."""

    @property
    def emu(self) -> Any:
        return self.server.state

    def _dispatch(self, method: str) -> None:
        self._chunked = "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()
        cl = self.headers.get("Content-Length")
        self._body_left = int(cl) if cl and cl.isdigit() else (None if self._chunked else 0)
        self._upload_chunk = False
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        self._query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        try:
            if path.startswith("/_emulator/"):
                self._admin(method, path)
                return
            self.emu.calls.append((method, path))
            for verb, pattern, op in _ROUTES:
                match = pattern.match(path)
                if match is None or verb != method:
                    continue
                self._version = match.group("v")
                groups = {k: v for k, v in match.groupdict().items() if k != "v"}
                self._authorise(groups.get("p"))
                getattr(self, op)(**groups)
                return
            raise ApiError(404, "NOT_FOUND", f"The requested URL {method} {path} was not found.")
        except ApiError as e:
            self._drain()
            self._send_error(e.code, e.status, e.message, details=e.details)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.close_connection = True
        except Exception as e:
            self._drain()
            self._send_error(500, "INTERNAL", f"Emulator internal error: {type(e).__name__}: {e}")

    def _authorise(self, project: str | None) -> None:
        auth = self.headers.get("Authorization") or ""
        if not auth.startswith("Bearer ") or not auth[7:].strip():
            raise ApiError(401, "UNAUTHENTICATED", "Request is missing required authentication "
                           "credential. Expected OAuth 2 access token, login cookie or other "
                           "valid authentication credential.")
        if project is not None and project not in self.emu.projects:
            location = re.search(r"/locations/([^/]+)", self.path)
            where = f"projects/{project}/locations/{location.group(1) if location else '-'}"
            raise ApiError(403, "PERMISSION_DENIED", "Permission 'aiplatform.batchPredictionJobs"
                           f".create' denied on resource '//aiplatform.googleapis.com/{where}' "
                           "(or it may not exist).", details=[{
                               "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                               "reason": "IAM_PERMISSION_DENIED",
                               "domain": "aiplatform.googleapis.com",
                               "metadata": {"permission": "aiplatform.batchPredictionJobs.create",
                                            "resource": where}}])

    def _job(self, p: str, l: str, id: str) -> Any:  # noqa: E741 (the path's own name)
        job = self.emu.jobs.get(id)
        if job is None or job.project != p or job.location != l:
            raise ApiError(404, "NOT_FOUND", f"The BatchPredictionJob "
                           f"projects/{p}/locations/{l}/batchPredictionJobs/{id} does not exist.")
        return job

    # -- operations -----------------------------------------------------------------------
    def op_create(self, p: str, l: str) -> None:  # noqa: E741
        body = self._read_json(required=True)
        for need in ("displayName", "model", "inputConfig"):
            if not body.get(need):
                raise ApiError(400, "INVALID_ARGUMENT", f"BatchPredictionJob.{need} is required.")
        model = str(body["model"]).rsplit("/", 1)[-1]
        if model not in self.emu.models:
            raise ApiError(404, "NOT_FOUND", f"Publisher Model `publishers/google/models/{model}`"
                           " was not found or your project does not have access to it.")
        if not body.get("outputConfig"):
            raise ApiError(400, "INVALID_ARGUMENT", "BatchPredictionJob.outputConfig is required.")
        for k, v in (body.get("labels") or {}).items():
            if not re.fullmatch(r"[a-z][a-z0-9_-]{0,62}", str(k)) or not re.fullmatch(
                    r"[a-z0-9_-]{0,63}", str(v)):
                raise ApiError(400, "INVALID_ARGUMENT", f"Invalid label {k!r}: {v!r}: keys and "
                               "values are lowercase letters, digits, '_' and '-', at most 63.")
        job = self.emu.create(p, l, body)
        if self.emu.draw_drop():
            # The "ambiguous create": persisted, but the client never hears back.
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        self._send_json(job.resource())

    def op_list(self, p: str, l: str) -> None:  # noqa: E741
        try:
            jobs = self.emu.listing(p, l, self._query.get("filter"))
        except ValueError as exc:
            raise ApiError(400, "INVALID_ARGUMENT", f"Invalid filter: {exc}") from None
        size = self._page_size(100)
        token = self._query.get("pageToken") or "0"
        if not token.isdigit():
            raise ApiError(400, "INVALID_ARGUMENT", f"Invalid pageToken {token!r}.")
        start = int(token)
        page = jobs[start:start + size]
        doc: dict[str, Any] = {"batchPredictionJobs": [j.resource() for j in page]}
        if start + size < len(jobs):
            doc["nextPageToken"] = str(start + size)
        self._send_json(doc)

    def op_get(self, p: str, l: str, id: str) -> None:  # noqa: E741
        self._send_json(self._job(p, l, id).resource())

    def op_cancel(self, p: str, l: str, id: str) -> None:  # noqa: E741
        self._drain()
        job = self._job(p, l, id)
        if job.state in ("SUCCEEDED", "FAILED", "CANCELLED", "EXPIRED", "PARTIALLY_SUCCEEDED"):
            raise ApiError(400, "FAILED_PRECONDITION", f"Cannot cancel {job.name}: it is "
                           f"already JOB_STATE_{job.state}.")
        self.emu.cancel(job)
        self._send_json({})

    def op_delete(self, p: str, l: str, id: str) -> None:  # noqa: E741
        job = self._job(p, l, id)
        if job.state not in ("SUCCEEDED", "FAILED", "CANCELLED", "EXPIRED",
                             "PARTIALLY_SUCCEEDED"):
            raise ApiError(400, "FAILED_PRECONDITION", f"{job.name} is still "
                           f"JOB_STATE_{job.state}: cancel it before deleting it.")
        with self.emu.lock:
            self.emu.jobs.pop(id, None)
        self._send_json({"name": f"projects/{p}/locations/{l}/operations/{id}", "done": True,
                         "metadata": {"@type": "type.googleapis.com/google.cloud.aiplatform."
                                      "v1beta1.DeleteOperationMetadata"}})

    def op_model(self, m: str) -> None:
        if m not in self.emu.models:
            raise ApiError(404, "NOT_FOUND", f"Publisher Model `publishers/google/models/{m}` "
                           "was not found.")
        self._send_json({"name": f"publishers/google/models/{m}", "versionId": "001"})

    # -- admin ----------------------------------------------------------------------------
    def _admin(self, method: str, path: str) -> None:
        if path == "/_emulator/health":
            self._send_json({"ok": True})
        elif method == "POST" and path == "/_emulator/vertex/inject":
            body = self._read_json(required=True)
            try:
                self.emu.inject(str(body.get("outcome")), int(body.get("count", 1)))
            except ValueError as exc:
                raise ApiError(400, "INVALID_ARGUMENT", str(exc)) from None
            self._send_json({})
        elif method == "POST" and path == "/_emulator/vertex/drop":
            body = self._read_json(required=True)
            try:
                self.emu.set_drop_rate(body.get("rate", 0.0))
            except (TypeError, ValueError) as exc:
                raise ApiError(400, "INVALID_ARGUMENT", str(exc)) from None
            self._send_json({})
        elif method == "POST" and path == "/_emulator/vertex/release":
            self._drain()
            self.emu.release()
            self._send_json({})
        else:
            raise ApiError(404, "NOT_FOUND", f"Unknown emulator admin route {method} {path}.")


def make_server(addr: tuple[str, int], emulator: Any) -> HttpServer:
    """Bind ``addr`` for ``emulator``; serve it with ``serve_forever``."""
    return HttpServer(addr, emulator, False, VertexApi)
