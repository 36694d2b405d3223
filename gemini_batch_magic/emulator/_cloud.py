"""Plain-HTTP clients of the Cloud Storage JSON API and the BigQuery REST API.

The Vertex AI emulator (:mod:`._vertex`) reads a batch's inputs from, and writes its
predictions to, the emulators it is given (``gcp-storage-emulator``, ``bqemulator``) the way
the service reads and writes the real ones. It speaks their public REST protocols with the
standard library only, so the emulator imports no Google client library and nothing of the
product.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlencode

import orjson

#: Seconds one call to an emulated cloud service may take.
TIMEOUT = 60.0


class CloudError(Exception):
    """A call to Cloud Storage or BigQuery failed (``code``: its HTTP status, 0 if none)."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


def _call(method: str, url: str, body: bytes | None = None,
          content_type: str = "application/json") -> bytes:
    req = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
            return bytes(resp.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:500].decode(errors="replace")
        raise CloudError(f"{method} {url} answered {exc.code}: {detail}", exc.code) from None
    except (urllib.error.URLError, OSError) as exc:
        raise CloudError(f"{method} {url} failed: {exc}") from None


def _base(host: str) -> str:
    host = host.rstrip("/")
    return host if "://" in host else f"http://{host}"


def split_gs(uri: str) -> tuple[str, str]:
    """``gs://bucket/some/name`` -> ``("bucket", "some/name")``."""
    if not uri.startswith("gs://"):
        raise CloudError(f"not a Cloud Storage URI: {uri!r} (expected gs://bucket/name)")
    bucket, _, name = uri[5:].partition("/")
    return bucket, name


def split_bq(uri: str) -> tuple[str, str, str]:
    """``bq://project.dataset.table`` -> its three parts."""
    parts = uri.removeprefix("bq://").split(".")
    if len(parts) != 3 or not all(parts):
        raise CloudError(f"not a BigQuery table URI: {uri!r} (expected bq://project.dataset."
                         "table)")
    return parts[0], parts[1], parts[2]


class Storage:
    """The few Cloud Storage calls batch prediction needs."""

    def __init__(self, host: str) -> None:
        self.base = _base(host)

    def names(self, bucket: str, prefix: str) -> list[str]:
        names: list[str] = []
        token = None
        while True:
            query = {"prefix": prefix, **({"pageToken": token} if token else {})}
            doc = orjson.loads(_call("GET", f"{self.base}/storage/v1/b/{quote(bucket)}/o?"
                                     f"{urlencode(query)}"))
            names.extend(str(item["name"]) for item in doc.get("items") or [])
            token = doc.get("nextPageToken")
            if not token:
                return names

    def read(self, bucket: str, name: str) -> bytes:
        return _call("GET", f"{self.base}/download/storage/v1/b/{quote(bucket)}/o/"
                     f"{quote(name, safe='')}?alt=media")

    def write(self, bucket: str, name: str, data: bytes) -> None:
        _call("POST", f"{self.base}/upload/storage/v1/b/{quote(bucket)}/o?"
              f"{urlencode({'uploadType': 'media', 'name': name})}", data,
              "application/octet-stream")

    def read_uris(self, uris: list[str]) -> Iterator[bytes]:
        """The lines of every object the URIs name (a ``*`` matches within a prefix)."""
        for uri in uris:
            bucket, name = split_gs(uri)
            if "*" in name:
                head, _, tail = name.partition("*")
                names = [n for n in self.names(bucket, head) if n.endswith(tail)]
                if not names:
                    raise CloudError(f"no object matches {uri}", 404)
            else:
                names = [name]
            for n in sorted(names):
                for line in self.read(bucket, n).splitlines():
                    if line.strip():
                        yield line


class BigQuery:
    """The few BigQuery REST calls batch prediction needs (rows go in by streaming
    inserts: ``bqemulator`` refuses multipart load jobs)."""

    def __init__(self, host: str) -> None:
        self.base = _base(host)

    def _api(self, project: str) -> str:
        return f"{self.base}/bigquery/v2/projects/{quote(project)}"

    def table(self, project: str, dataset: str, table: str) -> dict[str, Any] | None:
        try:
            return dict(orjson.loads(_call(
                "GET", f"{self._api(project)}/datasets/{quote(dataset)}/tables/{quote(table)}")))
        except CloudError as exc:
            if exc.code == 404:
                return None
            raise

    def rows(self, project: str, dataset: str, table: str
             ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(schema fields, rows as dicts of strings) of a whole table."""
        sql = f"SELECT * FROM `{project}.{dataset}.{table}`"
        doc = orjson.loads(_call("POST", f"{self._api(project)}/queries", orjson.dumps(
            {"query": sql, "useLegacySql": False, "maxResults": 10_000})))
        fields = list(doc.get("schema", {}).get("fields") or [])
        job = (doc.get("jobReference") or {}).get("jobId")
        raw = list(doc.get("rows") or [])
        token = doc.get("pageToken")
        while token and job:
            doc = orjson.loads(_call("GET", f"{self._api(project)}/queries/{quote(job)}?"
                                     f"{urlencode({'pageToken': token})}"))
            raw.extend(doc.get("rows") or [])
            token = doc.get("pageToken")
        names = [f["name"] for f in fields]
        return fields, [{n: cell.get("v") for n, cell in zip(names, r["f"], strict=False)} for r in raw]

    def create_table(self, project: str, dataset: str, table: str,
                     fields: list[dict[str, Any]]) -> None:
        body = {"tableReference": {"projectId": project, "datasetId": dataset,
                                   "tableId": table}, "schema": {"fields": fields}}
        _call("POST", f"{self._api(project)}/datasets/{quote(dataset)}/tables",
              orjson.dumps(body))

    def insert(self, project: str, dataset: str, table: str, rows: list[dict[str, Any]],
               chunk: int = 500) -> None:
        for i in range(0, len(rows), chunk):
            body = {"rows": [{"json": r} for r in rows[i:i + chunk]]}
            doc = orjson.loads(_call(
                "POST", f"{self._api(project)}/datasets/{quote(dataset)}/tables/"
                f"{quote(table)}/insertAll", orjson.dumps(body)))
            if doc.get("insertErrors"):
                raise CloudError(f"inserting into {project}.{dataset}.{table} failed: "
                                 f"{doc['insertErrors'][:3]}")
