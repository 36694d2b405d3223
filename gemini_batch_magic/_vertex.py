"""The Vertex AI pieces of the seam: credentials, Cloud Storage staging, prediction files.

With ``backend="vertex"`` the google-genai client is built with ``vertexai=True`` (by
:mod:`._backend`, which asks this module for the target and the credentials), and:

* each shard's request file is uploaded (resumable, streamed from disk) to
  ``<staging>/<run id>/requests-<shard>.jsonl``, each line's key also put in the request's
  ``labels`` (``gembatch_key``): the prediction files echo the request, and the request is
  the only part of an input line the service documents as echoed, so the key survives
  whatever else it drops (:func:`stage_requests`);
* the job writes its predictions under ``<staging>/<run id>/out-<shard>/``;
  :func:`read_predictions` streams every ``predictions*.jsonl`` of the job's output
  directory and hands them on as ordinary results lines (``{"key", "response"}`` or
  ``{"key", "error"}``), so parsing and alignment by key are the same as on Gemini;
* the staged request file is deleted once its job has ended (:func:`delete_object`).

Credentials are Application Default Credentials (google-auth), never stored. When
``GOOGLE_VERTEX_BASE_URL`` points at a local emulator (127.0.0.1), an access token is sent
instead (``GEMBATCH_VERTEX_TOKEN``, default a placeholder) and Cloud Storage and BigQuery
are reached through ``STORAGE_EMULATOR_HOST`` / ``BIGQUERY_EMULATOR_HOST`` anonymously.
Cloud Storage and BigQuery need the ``vertex`` extra: ``pip install
'gemini_batch_magic[vertex]'``. This module imports nothing of the engine.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from ._config import settings
from ._state import state
from .exceptions import BackendError, ConfigError

__all__ = [
    "KEY_LABEL",
    "RUN_LABEL",
    "Target",
    "bigquery_client",
    "check_staging",
    "credentials",
    "delete_object",
    "emulated",
    "prediction_line",
    "prediction_records",
    "read_predictions",
    "split_gs",
    "stage_requests",
    "staging_uri",
    "storage_client",
    "target",
    "upload_file",
]

#: The job label naming a run (how a second machine finds it, and a create is reconciled).
RUN_LABEL = "gembatch_run"
#: The request label carrying a row's key through the service.
KEY_LABEL = "gembatch_key"
_EXTRA = "pip install 'gemini_batch_magic[vertex]'"
_CHUNK = 8 * 1024 * 1024  # resumable upload chunk (a multiple of 256 KiB)
_LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


@dataclass(frozen=True)
class Target:
    """Where Vertex AI requests go."""

    project: str
    location: str
    base_url: str | None  #: None for the real service


class _Clients:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.storage: Any = None
        self.bigquery: Any = None


_clients = _Clients()


def _forget() -> None:
    with _clients.lock:
        _clients.storage = None
        _clients.bigquery = None


state.on_reset(_forget)
settings.observe(lambda change: _forget(), names=["project", "backend"])


def emulated() -> bool:
    """Whether ``GOOGLE_VERTEX_BASE_URL`` names a local emulator."""
    base = os.environ.get("GOOGLE_VERTEX_BASE_URL", "").strip()
    return bool(base) and (urlsplit(base).hostname or "") in _LOCAL_HOSTS


def target() -> Target:
    """The project, location and endpoint of the vertex backend; a missing project is an
    error that says how to set one."""
    project = settings.project.strip()
    if not project:
        raise ConfigError(
            "backend 'vertex' needs a Google Cloud project: gbm.configure(project='my-proj') "
            "(or %config GemBatch.project, or set GOOGLE_CLOUD_PROJECT)"
        )
    base = os.environ.get("GOOGLE_VERTEX_BASE_URL", "").strip() or None
    return Target(project=project, location=settings.location.strip() or "us-central1",
                  base_url=base)


def credentials() -> Any:
    """Application Default Credentials (an emulator gets a token of its own instead)."""
    if emulated():
        from google.oauth2.credentials import Credentials

        return Credentials(token=os.environ.get("GEMBATCH_VERTEX_TOKEN") or "local-emulator")
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        creds, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
    except DefaultCredentialsError as exc:
        raise ConfigError(
            "backend 'vertex' found no Application Default Credentials: run "
            "'gcloud auth application-default login' (on a laptop), or attach a service "
            "account (on Google Cloud), or set GOOGLE_APPLICATION_CREDENTIALS to a key file. "
            f"({exc})"
        ) from exc
    return creds


def _cloud_credentials() -> Any:
    if emulated() or os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        return AnonymousCredentials()  # type: ignore[no-untyped-call]
    return credentials()


def storage_client() -> Any:
    """The google-cloud-storage client (built once)."""
    with _clients.lock:
        if _clients.storage is None:
            try:
                from google.cloud import storage  # type: ignore[attr-defined]
            except ImportError as exc:
                raise ConfigError(f"backend 'vertex' needs google-cloud-storage: {_EXTRA}"
                                  ) from exc
            _clients.storage = storage.Client(project=target().project,
                                              credentials=_cloud_credentials())
        return _clients.storage


def bigquery_client() -> Any:
    """The google-cloud-bigquery client (built once; ``BIGQUERY_EMULATOR_HOST`` is honoured
    by the library itself)."""
    with _clients.lock:
        if _clients.bigquery is None:
            try:
                from google.cloud import bigquery  # type: ignore[attr-defined]
            except ImportError as exc:
                raise ConfigError(f"tables need google-cloud-bigquery: {_EXTRA}") from exc
            creds = (_cloud_credentials() if os.environ.get("BIGQUERY_EMULATOR_HOST")
                     else credentials())
            _clients.bigquery = bigquery.Client(project=target().project, credentials=creds,
                                                location=settings.location or None)
        return _clients.bigquery


# --------------------------------------------------------------------------- staging
def split_gs(uri: str) -> tuple[str, str]:
    """``gs://bucket/a/b`` -> ``("bucket", "a/b")``."""
    if not uri.startswith("gs://") or len(uri) <= 5:
        raise ConfigError(f"not a Cloud Storage URI: {uri!r}; expected gs://bucket/prefix")
    bucket, _, name = uri[5:].partition("/")
    return bucket, name


def staging_uri(run_id: str, name: str) -> str:
    """``<staging>/<run_id>/<name>``; a missing staging setting says how to set one."""
    base = settings.staging.rstrip("/")
    if not base:
        raise ConfigError(
            "backend 'vertex' stages request files in Cloud Storage: set a prefix in a bucket "
            "you can write, gbm.configure(staging='gs://my-bucket/gembatch') (or set "
            "GEMBATCH_STAGING)"
        )
    return f"{base}/{run_id}/{name}"


def check_staging() -> None:
    """Refuse, before anything is sent, a vertex run with no staging prefix."""
    staging_uri("-", "-")


def _storage_error(action: str, uri: str, exc: BaseException) -> Exception:
    """What went wrong with ``uri`` and how to fix it (``google.api_core`` errors)."""
    code = getattr(exc, "code", None)
    bucket = split_gs(uri)[0]
    if code == 404:
        return ConfigError(
            f"{action} {uri} failed: bucket {bucket!r} does not exist (or is not visible to "
            f"these credentials). Create it in {settings.location or 'your region'}: gcloud "
            f"storage buckets create gs://{bucket} --location={settings.location}, or point "
            "staging at a bucket you own (gbm.configure(staging='gs://.../gembatch'))"
        )
    if code in (401, 403):
        err = BackendError(
            f"{action} {uri} failed: {code} permission denied on bucket {bucket!r}. Grant "
            "the account of your Application Default Credentials roles/storage.objectAdmin "
            f"on it (gcloud storage buckets add-iam-policy-binding gs://{bucket} "
            "--member=user:YOU --role=roles/storage.objectAdmin), or use another bucket",
            code=code, status="PERMISSION_DENIED",
        )
        err.retryable = False
        return err
    err = BackendError(f"{action} {uri} failed: {exc}", code=code if isinstance(code, int)
                       else None)
    err.retryable = code in (408, 429, 500, 502, 503, 504) or isinstance(exc, OSError)
    return err


def stage_requests(path: Path, uri: str) -> str:
    """Upload a request file to ``uri`` (resumable, streamed), each key also a label."""
    labelled = path.with_name(path.name + ".vertex")
    with open(path, "rb") as src, open(labelled, "wb") as out:
        os.chmod(labelled, 0o600)
        for line in src:
            if not line.strip():
                continue
            item = orjson.loads(line)
            request = item["request"]
            request["labels"] = {**(request.get("labels") or {}), KEY_LABEL: str(item["key"])}
            out.write(orjson.dumps({"key": item["key"], "request": request}) + b"\n")
    try:
        return upload_file(labelled, uri)
    finally:
        labelled.unlink(missing_ok=True)


def upload_file(path: Path, uri: str, *, what: str = "requests") -> str:
    """Upload a local JSONL file to ``uri`` as it is (resumable, streamed from disk);
    ``what`` it holds names it in an error."""
    bucket, name = split_gs(uri)
    try:
        blob = storage_client().bucket(bucket).blob(name, chunk_size=_CHUNK)
        blob.upload_from_filename(str(path), content_type="application/jsonl")
    except Exception as exc:
        if isinstance(exc, (ConfigError, BackendError)):
            raise
        raise _storage_error(f"uploading {what} to", uri, exc) from exc
    return uri


def delete_object(uri: str) -> bool:
    """Delete a staged object; False (never an error) if gone or refused."""
    try:
        bucket, name = split_gs(uri)
        storage_client().bucket(bucket).blob(name).delete()
    except Exception:
        return False
    return True


# --------------------------------------------------------------------------- predictions
def _line_key(obj: dict[str, Any]) -> Any:
    """A prediction line's key: its own ``key`` when the service kept it, else the request's
    ``labels.gembatch_key``; None if it has neither."""
    key = obj.get("key")
    if key is None:
        request = obj.get("request")
        labels = request.get("labels") if isinstance(request, dict) else None
        key = labels.get(KEY_LABEL) if isinstance(labels, dict) else None
    return key


def prediction_line(obj: Any) -> dict[str, Any] | None:
    """One prediction line as a results line: ``{"key", "response"}`` / ``{"key", "error"}``.

    The key is the line's own ``key`` when the service kept it, else the request's
    ``labels.gembatch_key``; a line with neither is dropped (its row reads "no result").
    """
    if not isinstance(obj, dict):
        return None
    key = _line_key(obj)
    if key is None:
        return None
    response = obj.get("response")
    status = obj.get("status")
    if isinstance(response, str):  # a BigQuery JSON column read as text
        response = orjson.loads(response)
    if status or response is None:
        return {"key": str(key), "error": {"message": str(status or "no response")}}
    return {"key": str(key), "response": response}


def _prediction_objects(directory: str) -> Iterator[tuple[dict[str, Any], bytes]]:
    """Every JSON object line of the ``predictions*.jsonl`` under ``directory`` (in name
    order), streamed with its bytes; lines that are not JSON objects are skipped."""
    bucket, prefix = split_gs(directory.rstrip("/") + "/")
    try:
        blobs = [b for b in storage_client().list_blobs(bucket, prefix=prefix)
                 if b.name.rsplit("/", 1)[-1].startswith("predictions")
                 and b.name.endswith(".jsonl")]
        for blob in sorted(blobs, key=lambda b: str(b.name)):
            with blob.open("rb", chunk_size=_CHUNK) as fh:
                for raw in fh:
                    if not raw.strip():
                        continue
                    try:
                        obj = orjson.loads(raw)
                    except orjson.JSONDecodeError:
                        continue
                    if isinstance(obj, dict):
                        yield obj, raw
    except (ConfigError, BackendError):
        raise
    except Exception as exc:
        raise _storage_error("reading predictions from", directory, exc) from exc


def prediction_records(directory: str) -> Iterator[tuple[str, bool, bytes]]:
    """Every keyed line of the ``predictions*.jsonl`` under ``directory``, streamed as
    ``(key, answered, line)``: ``answered`` when it has a response and no ``status``,
    ``line`` the bytes as the service wrote them (newline-terminated). Lines that are not
    JSON objects or carry no key are skipped (their rows read "no result")."""
    for obj, raw in _prediction_objects(directory):
        key = _line_key(obj)
        if key is not None:
            answered = not obj.get("status") and obj.get("response") is not None
            yield str(key), answered, raw.rstrip(b"\r\n") + b"\n"


def read_predictions(directory: str, write: Callable[[bytes], Any]) -> int:
    """Stream every ``predictions*.jsonl`` under ``directory`` as results lines into
    ``write``; returns the number of lines."""
    n = 0
    out: list[bytes] = []
    for obj, _raw in _prediction_objects(directory):
        try:
            line = prediction_line(obj)
        except orjson.JSONDecodeError:  # a response column that is not JSON
            line = None
        if line is None:
            continue
        out.append(orjson.dumps(line) + b"\n")
        n += 1
        if len(out) >= 1000:
            write(b"".join(out))
            out.clear()
    if out:
        write(b"".join(out))
    return n
