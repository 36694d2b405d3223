"""The File API: resumable uploads, get, list, delete and download of files."""

from __future__ import annotations

import base64
import hashlib
import mimetypes
import os
import re
import time
from typing import Any

import orjson

from . import _store
from ._http import COPY_CHUNK, ID, VERSION, ApiError, HttpHandler, Route
from ._model import field
from ._state import UploadProgress

_FILE_ID_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$")
#: Chunk size the upload session announces (``X-Goog-Upload-Chunk-Granularity``).
UPLOAD_GRANULARITY = 8 * 1024 * 1024
#: The longest file id ``files.get`` and ``files.delete`` take (a batch's results file,
#: ``files/batch-<36 characters>``, is longer: only its download works).
MAX_FILE_ID = 40


def _check_id_length(file_id: str, request: str) -> None:
    """The service's refusal of a file id over 40 characters (googleapis/python-genai#1613)."""
    if len(file_id) > MAX_FILE_ID:
        raise ApiError(
            400,
            "INVALID_ARGUMENT",
            f"* {request}.name: File ID (name excluding 'files/') cannot be more than "
            f"{MAX_FILE_ID} characters.\n",
        )


def _human_bytes(n: int) -> str:
    for unit, size in (("GB", 1000**3), ("MB", 1000**2), ("kB", 1000)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


class FilesApi(HttpHandler):
    """The operations on ``files/*`` and ``upload/*`` (see :data:`ROUTES`)."""

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
                "createTime": _store.rfc3339_micros(row["create_time"]),
                "updateTime": _store.rfc3339_micros(row["create_time"]),
            }
        )
        if row["expire_time"] is not None:
            out["expirationTime"] = _store.rfc3339(row["expire_time"])
        out.update(
            {
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
        """The file's row, if this request's key may see it (else the service's 403)."""
        scope = self._scope()
        row = self.state.store.get_file(file_id, scope)
        if row is None and file_id.startswith("batch-"):
            self.state.settle_all()
            row = self.state.store.get_file(file_id, scope)
        if row is None:
            raise ApiError(
                403,
                "PERMISSION_DENIED",
                f"You do not have permission to access the File {file_id} or it may not exist.",
            )
        return row

    def op_file_get(self, id: str) -> None:
        self._drain()
        _check_id_length(id, "GetFileRequest")
        self._send_json(self._file_json(self._file_row(id)))

    def op_file_delete(self, id: str) -> None:
        self._drain()
        _check_id_length(id, "DeleteFileRequest")
        self._file_row(id)
        self.state.store.delete_file(id)
        self._send_json({})

    def op_file_list(self) -> None:
        self._drain()
        self.state.settle_all()
        try:
            rows, token = self.state.store.list_files(
                self._page_size(100), self._query.get("pageToken") or None, self._scope()
            )
        except ValueError as exc:
            raise ApiError(400, "INVALID_ARGUMENT", str(exc)) from None
        out: dict[str, Any] = {}
        if rows:
            out["files"] = [self._file_json(r) for r in rows]
        if token:
            out["nextPageToken"] = token
        self._send_json(out)

    def op_file_download(self, id: str) -> None:
        self._drain()
        row = self._file_row(id)
        path = self.state.store.file_path(id)
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

    def op_file_register(self) -> None:
        """``files:register``: gs:// objects become files (``source: REGISTERED``) that
        ``fileData`` parts may name; the emulator stores no bytes (it cannot read a bucket)."""
        if not (self.headers.get("Authorization") or "").lower().startswith("bearer "):
            raise ApiError(401, "UNAUTHENTICATED", "Registering gs:// files needs OAuth "
                           "credentials (Authorization: Bearer ...).")
        body = self._read_json(required=True)
        uris = body.get("uris")
        if not isinstance(uris, list) or not uris or not all(isinstance(u, str) for u in uris):
            raise ApiError(400, "INVALID_ARGUMENT", "uris must be a non-empty list of gs:// URIs.")
        bad = [u for u in uris if not re.match(r"^gs://[a-z0-9][a-z0-9._-]{1,220}/.+", u)]
        if bad:
            raise ApiError(400, "INVALID_ARGUMENT", f"Not a gs://bucket/object URI: {bad[0]}.")
        out = []
        ttl = self.state.config.file_ttl
        for uri in uris:
            file_id = _store.new_id(12)
            mime = mimetypes.guess_type(uri)[0] or "application/octet-stream"
            sha = base64.b64encode(hashlib.sha256(uri.encode()).hexdigest().encode()).decode()
            self.state.store.insert_file(
                file_id, None, mime, 0, sha, "REGISTERED",
                expire_time=time.time() + ttl if ttl else None, owner_key=self._scope(),
                source_uri=uri)
            out.append(self._file_json(self.state.store.get_file(file_id)))
        self._send_json({"files": out})

    def _check_quota(self, scope: str | None, name: str, size: int) -> None:
        """Refuses an upload that would take the key's files over ``file_quota_bytes``."""
        quota = self.state.config.file_quota_bytes
        if quota is None:
            return
        used, count = self.state.store.uploaded_bytes(scope)
        if used + size <= quota:
            return
        ttl = self.state.config.file_ttl
        expiry = f"they expire {ttl / 3600:g} hours after upload" if ttl else "they never expire"
        raise ApiError(
            429,
            "RESOURCE_EXHAUSTED",
            f"Resource has been exhausted: uploading {name} ({_human_bytes(size)}) would exceed "
            f"the project's file storage quota of {_human_bytes(quota)} ({quota} bytes); "
            f"{count} uploaded files already use {_human_bytes(used)} ({used} bytes). Delete "
            "the files you no longer need (client.files.list(), then "
            f"client.files.delete(name=...)), or wait: {expiry}.",
        )

    def op_upload_start(self) -> None:
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
        display_name = field(meta, "displayName", "display_name")
        mime = (
            field(meta, "mimeType", "mime_type")
            or self.headers.get("X-Goog-Upload-Header-Content-Type")
            or "application/octet-stream"
        )
        if not self.state.config.accepts_mime_type(str(mime)):
            raise ApiError(
                400,
                "INVALID_ARGUMENT",
                f"Unsupported MIME type: {mime}. Upload JSON Lines as 'jsonl' or "
                "'application/jsonl', or another type Gemini reads (text/*, application/pdf, "
                "image/png, ...). (Emulator: the accepted types are its mime_types option; "
                "mime_types=None accepts any.)",
            )
        size_raw = self.headers.get("X-Goog-Upload-Header-Content-Length")
        if size_raw is None:
            size_raw = field(meta, "sizeBytes", "size_bytes")
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
            if self.state.store.get_file(file_id) is not None:
                raise ApiError(409, "ALREADY_EXISTS", f"File files/{file_id} already exists.")
        else:
            file_id = _store.new_id(12)
        scope = self._scope()
        if size is not None:
            self._check_quota(scope, f"files/{file_id}", size)
        upload_id = _store.new_id(32)
        part = self.state.store.upload_path(upload_id)
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.close(fd)
        self.state.store.insert_upload(
            upload_id,
            file_id,
            display_name,
            str(mime),
            size,
            ttl=self.state.config.file_ttl,
            owner_key=scope,
        )
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

    def op_upload_chunk(self) -> None:
        state = self.state
        upload_id = self._query.get("upload_id", "")
        up = state.store.get_upload(upload_id) if re.fullmatch(r"[a-z0-9]+", upload_id) else None
        if up is None:
            raise ApiError(404, "NOT_FOUND", "Unknown or finished upload session.")
        command = {
            c.strip() for c in (self.headers.get("X-Goog-Upload-Command") or "").lower().split(",")
        }
        part = state.store.upload_path(upload_id)
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
        progress = state.uploads.pop(upload_id, None)
        if progress is None and offset == 0:
            progress = UploadProgress()
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
                state.uploads[upload_id] = progress
            self._send_bytes(b"", headers={"X-Goog-Upload-Status": "active"})
            return
        total = offset + written
        if up["size_bytes"] is not None and total != int(up["size_bytes"]):
            state.store.delete_upload(upload_id)
            raise ApiError(
                400,
                "INVALID_ARGUMENT",
                f"The upload declared {up['size_bytes']} bytes but {total} were received.",
            )
        if progress is None:
            progress = UploadProgress()
            with open(part, "rb") as f:
                while chunk := f.read(COPY_CHUNK):
                    progress.update(chunk)
        file_id = up["file_id"]
        try:
            self._check_quota(up["owner_key"], f"files/{file_id}", total)
        except ApiError:
            state.store.delete_upload(upload_id)
            raise
        sha = base64.b64encode(progress.hasher.hexdigest().encode()).decode()
        dest = state.store.file_path(file_id)
        if not state.store.insert_file(
            file_id,
            up["display_name"],
            up["mime_type"],
            total,
            sha,
            "UPLOADED",
            line_count=progress.line_count(),
            expire_time=up["expire_time"],
            owner_key=up["owner_key"],
        ):
            state.store.delete_upload(upload_id)
            raise ApiError(409, "ALREADY_EXISTS", f"File files/{file_id} already exists.")
        os.replace(part, dest)
        state.store.delete_upload(upload_id)
        row = state.store.get_file(file_id)
        if row is None:
            raise ApiError(
                404,
                "NOT_FOUND",
                f"files/{file_id} expired before its upload finished: its lifetime (file_ttl) "
                "is shorter than the upload took.",
            )
        self._send_bytes(
            orjson.dumps({"file": self._file_json(row)}),
            headers={"X-Goog-Upload-Status": "final"},
        )


#: The File API's routes, in the order they are tried.
ROUTES: tuple[Route, ...] = (
    Route("POST", re.compile(rf"^/upload/{VERSION}/files$"), FilesApi.op_upload_start),
    Route(
        "GET", re.compile(rf"^/download/{VERSION}/files/{ID}:download$"), FilesApi.op_file_download
    ),
    Route("GET", re.compile(rf"^/{VERSION}/files$"), FilesApi.op_file_list),
    Route("POST", re.compile(rf"^/{VERSION}/files:register$"), FilesApi.op_file_register),
    Route("GET", re.compile(rf"^/{VERSION}/files/{ID}:download$"), FilesApi.op_file_download),
    Route("GET", re.compile(rf"^/{VERSION}/files/{ID}$"), FilesApi.op_file_get),
    Route("DELETE", re.compile(rf"^/{VERSION}/files/{ID}$"), FilesApi.op_file_delete),
)
#: Chunks go to the session URL of an upload (``?upload_id=...``), which needs no key.
UPLOAD_CHUNK_ROUTE = Route(
    "POST", re.compile(rf"^/upload/{VERSION}/files$"), FilesApi.op_upload_chunk, needs_key=False
)
