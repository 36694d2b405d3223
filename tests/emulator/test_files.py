"""File API through the unmodified SDK: upload, get, list, delete, download."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest
from google import genai
from google.genai import errors, types

from gemini_batch_magic.emulator import Emulator

from .conftest import make_client, raw


def test_upload_from_stream_returns_typed_active_file(client: genai.Client) -> None:
    data = b'{"key": "a"}\n'
    f = client.files.upload(
        file=io.BytesIO(data), config={"mime_type": "jsonl", "display_name": "my-input"}
    )
    assert f.name is not None and f.name.startswith("files/")
    assert f.display_name == "my-input"
    assert f.mime_type == "jsonl"
    assert f.size_bytes == len(data)
    assert f.state == types.FileState.ACTIVE
    assert f.source == types.FileSource.UPLOADED
    assert f.create_time is not None and f.expiration_time is not None
    assert f.expiration_time > f.create_time
    assert client.files.download(file=f.name) == data


def test_upload_from_path_with_requested_name(client: genai.Client, tmp_path: Path) -> None:
    p = tmp_path / "in.jsonl"
    p.write_bytes(b"line\n")
    f = client.files.upload(file=p, config={"mime_type": "application/jsonl", "name": "myfile1"})
    assert f.name == "files/myfile1"
    assert client.files.get(name="myfile1").size_bytes == 5
    with pytest.raises(errors.ClientError) as e:
        client.files.upload(file=p, config={"mime_type": "jsonl", "name": "myfile1"})
    assert e.value.code == 409
    assert e.value.status == "ALREADY_EXISTS"


def test_multi_chunk_upload_of_20_mib_round_trips(make_emu) -> None:  # type: ignore[no-untyped-def]
    emu = make_emu(mime_types=None)  # application/octet-stream is accepted
    client = make_client(emu)
    data = os.urandom(20 * 1024 * 1024 + 123)
    f = client.files.upload(file=io.BytesIO(data), config={"mime_type": "application/octet-stream"})
    assert f.size_bytes == len(data)
    chunk_posts = [c for c in emu.calls if c == ("POST", "/upload/v1/files")]
    assert len(chunk_posts) == 1 + 3  # start + three 8 MiB chunks
    got = client.files.download(file=f.name)
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    import base64

    assert f.sha256_hash is not None
    assert base64.b64decode(f.sha256_hash).decode() == hashlib.sha256(data).hexdigest()


def test_empty_file_upload(client: genai.Client) -> None:
    f = client.files.upload(file=io.BytesIO(b""), config={"mime_type": "jsonl"})
    assert f.size_bytes == 0
    assert client.files.download(file=f.name) == b""


def test_upload_bytes_go_to_disk_not_to_the_database(emu: Emulator, client: genai.Client) -> None:
    data = b"x" * 100_000
    f = client.files.upload(file=io.BytesIO(data), config={"mime_type": "text/plain"})
    assert f.name is not None
    blob = emu.data_dir / "files" / f"{f.name.split('/')[1]}.bin"
    assert blob.read_bytes() == data
    assert oct(blob.stat().st_mode & 0o777) == "0o600"
    assert oct(emu.data_dir.stat().st_mode & 0o777) == "0o700"


def test_get_list_paginates_newest_first_and_delete(client: genai.Client) -> None:
    names = [
        client.files.upload(file=io.BytesIO(b"%d" % i), config={"mime_type": "text/plain"}).name
        for i in range(5)
    ]
    pager = client.files.list(config={"page_size": 2})
    assert len(pager.page) == 2
    listed = [f.name for f in pager]
    assert listed == list(reversed(names))
    deleted = client.files.delete(name=names[0])
    assert isinstance(deleted, types.DeleteFileResponse)
    with pytest.raises(errors.ClientError) as e:
        client.files.get(name=names[0])
    assert e.value.code == 403
    assert e.value.status == "PERMISSION_DENIED"
    assert names[0] not in [f.name for f in client.files.list()]


def test_unknown_file_is_permission_denied(client: genai.Client) -> None:
    with pytest.raises(errors.ClientError) as e:
        client.files.get(name="files/doesnotexist")
    assert e.value.code == 403
    with pytest.raises(errors.ClientError) as e2:
        client.files.download(file="files/doesnotexist")
    assert e2.value.code == 403
    with pytest.raises(errors.ClientError):
        client.files.delete(name="files/doesnotexist")


def test_v1beta_and_download_prefix_routes(emu: Emulator) -> None:
    client = make_client(emu, api_version="v1beta")
    f = client.files.upload(file=io.BytesIO(b"abc"), config={"mime_type": "text/plain"})
    assert f.uri is not None and "/v1beta/files/" in f.uri
    assert client.files.download(file=f.name) == b"abc"
    assert f.name is not None
    fid = f.name.split("/")[1]
    r = raw(emu, "GET", f"/download/v1beta/files/{fid}:download?alt=media")
    assert r.status == 200 and r.body == b"abc"
    r = raw(emu, "GET", f"/v1/files/{fid}:download?alt=media")
    assert r.status == 200 and r.body == b"abc"
    assert r.headers["Content-Length"] == "3"
    assert ("GET", "/v1beta/files/" + fid + ":download") in emu.calls


def test_raw_file_json_shape(emu: Emulator, client: genai.Client) -> None:
    f = client.files.upload(file=io.BytesIO(b"abc"), config={"mime_type": "text/plain"})
    assert f.name is not None
    r = raw(emu, "GET", f"/v1/{f.name}")
    body = r.json()
    assert r.status == 200
    assert body["sizeBytes"] == "3"  # int64 as string
    assert body["createTime"].endswith("Z")
    assert body["state"] == "ACTIVE"
    assert body["source"] == "UPLOADED"
    assert "downloadUri" not in body


def test_upload_start_accepts_camel_case_body_and_chunks_need_no_key(emu: Emulator) -> None:
    r = raw(
        emu,
        "POST",
        "/upload/v1beta/files",
        {"file": {"displayName": "camel", "mimeType": "text/plain"}},
        headers={
            "X-Goog-Upload-Protocol": "resumable",
            "X-Goog-Upload-Command": "start",
            "X-Goog-Upload-Header-Content-Length": "2",
        },
    )
    assert r.status == 200
    assert r.headers["X-Goog-Upload-Status"] == "active"
    url = r.headers["X-Goog-Upload-URL"]
    assert url.startswith(emu.url + "/upload/v1beta/files?upload_id=")
    path = url[len(emu.url) :]
    done = raw(
        emu,
        "POST",
        path,
        b"hi",
        key=None,
        headers={"X-Goog-Upload-Command": "upload, finalize", "X-Goog-Upload-Offset": "0"},
    )
    assert done.status == 200
    assert done.headers["X-Goog-Upload-Status"] == "final"
    assert done.json()["file"]["displayName"] == "camel"
    assert done.json()["file"]["mimeType"] == "text/plain"


def test_upload_size_mismatch_is_a_final_client_error(emu: Emulator) -> None:
    r = raw(
        emu,
        "POST",
        "/upload/v1/files",
        {"file": {"mime_type": "text/plain"}},
        headers={
            "X-Goog-Upload-Protocol": "resumable",
            "X-Goog-Upload-Command": "start",
            "X-Goog-Upload-Header-Content-Length": "10",
        },
    )
    path = r.headers["X-Goog-Upload-URL"][len(emu.url) :]
    bad = raw(
        emu,
        "POST",
        path,
        b"short",
        key=None,
        headers={"X-Goog-Upload-Command": "upload, finalize", "X-Goog-Upload-Offset": "0"},
    )
    assert bad.status == 400
    assert bad.headers["X-Goog-Upload-Status"] == "final"
    assert bad.headers["Content-Type"].startswith("application/json")
    assert bad.json()["error"]["status"] == "INVALID_ARGUMENT"
    unknown = raw(
        emu,
        "POST",
        "/upload/v1/files?upload_id=nope&upload_protocol=resumable",
        b"x",
        key=None,
        headers={"X-Goog-Upload-Command": "upload, finalize"},
    )
    assert unknown.status == 404
