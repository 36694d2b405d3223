"""The File API: resumable uploads, get, list, delete and download of files."""

from __future__ import annotations

import base64
import os
import re
from typing import Any

import orjson

from . import _store
from ._http import COPY_CHUNK, ID, VERSION, ApiError, HttpHandler, Route
from ._model import field
from ._state import UploadProgress

_FILE_ID_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$")
#: Chunk size the upload session announces (``X-Goog-Upload-Chunk-Granularity``).
UPLOAD_GRANULARITY = 8 * 1024 * 1024


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
        row = self.state.store.get_file(file_id)
        if row is None and file_id.startswith("batch-"):
            self.state.settle_all()
            row = self.state.store.get_file(file_id)
        if row is None:
            raise ApiError(
                403,
                "PERMISSION_DENIED",
                f"You do not have permission to access the File {file_id} or it may not exist.",
            )
        return row

    def op_file_get(self, id: str) -> None:
        self._drain()
        self._send_json(self._file_json(self._file_row(id)))

    def op_file_delete(self, id: str) -> None:
        self._drain()
        self._file_row(id)
        self.state.store.delete_file(id)
        self._send_json({})

    def op_file_list(self) -> None:
        self._drain()
        self.state.settle_all()
        try:
            rows, token = self.state.store.list_files(
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
        upload_id = _store.new_id(32)
        part = self.state.store.upload_path(upload_id)
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.close(fd)
        self.state.store.insert_upload(upload_id, file_id, display_name, str(mime), size)
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
        sha = base64.b64encode(progress.hasher.hexdigest().encode()).decode()
        file_id = up["file_id"]
        dest = state.store.file_path(file_id)
        if not state.store.insert_file(
            file_id,
            up["display_name"],
            up["mime_type"],
            total,
            sha,
            "UPLOADED",
            line_count=progress.line_count(),
        ):
            state.store.delete_upload(upload_id)
            raise ApiError(409, "ALREADY_EXISTS", f"File files/{file_id} already exists.")
        os.replace(part, dest)
        state.store.delete_upload(upload_id)
        row = state.store.get_file(file_id)
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
    Route("GET", re.compile(rf"^/{VERSION}/files/{ID}:download$"), FilesApi.op_file_download),
    Route("GET", re.compile(rf"^/{VERSION}/files/{ID}$"), FilesApi.op_file_get),
    Route("DELETE", re.compile(rf"^/{VERSION}/files/{ID}$"), FilesApi.op_file_delete),
)
#: Chunks go to the session URL of an upload (``?upload_id=...``), which needs no key.
UPLOAD_CHUNK_ROUTE = Route(
    "POST", re.compile(rf"^/upload/{VERSION}/files$"), FilesApi.op_upload_chunk, needs_key=False
)
