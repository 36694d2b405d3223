"""Where a table run's requests come from: SQL for BigQuery, streaming for Cloud Storage.

* A BigQuery table or query: one ``CREATE OR REPLACE TABLE ... AS SELECT`` makes the staging
  table ``<dest>_gembatch_requests`` (the key column and a ``request`` JSON string); the
  rows never pass through the kernel (:func:`build_bigquery`).
* Cloud Storage JSONL with a template (``gs://bucket/in/*.jsonl``, one JSON object a line):
  the lines are streamed, one at a time, through the template into a local request file
  that is then uploaded (resumable) to ``<staging>/table-<hash>/requests.jsonl``; memory
  stays bounded by one line (:func:`build_jsonl`). The row's key (the ``key=`` field, or
  the line's number when there is none) rides in the request's ``labels.gembatch_key``.
* Cloud Storage JSONL without a template (lines already ``{"request": ...}``): one streamed
  pass counts and sizes the lines for the estimate and checks that each request carries
  its key label (:func:`scan_jsonl`); the lines are sent as they are.
* A retry: the requests of the rows whose answer failed or is missing, and the merged
  answers. In BigQuery, a staging table and a merged table, each made by one query
  (:func:`build_retry`, :func:`merge_retry`); in Cloud Storage, a request file streamed from
  the run's requests and a merged ``predictions.jsonl`` streamed from the prediction files
  (:func:`build_retry_jsonl`, :func:`merge_retry_jsonl`): lines pass one at a time, only
  the keys are held in memory.

This module imports nothing of the run objects (:mod:`._tables` uses it).
"""

from __future__ import annotations

import fnmatch
import math
import re
import string
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from . import _plan, _pricing, _vertex
from .exceptions import ColumnError, InputError, TemplateError

__all__ = ["build_bigquery", "build_jsonl", "build_retry", "build_retry_jsonl", "estimate",
           "merge_retry", "merge_retry_jsonl", "scan_jsonl", "split_bq"]

_TABLE = re.compile(r"^bq://([A-Za-z0-9_.:-]+)\.([A-Za-z0-9_]+)\.([A-Za-z0-9_$-]+)$")
_LABEL = re.compile(r"[a-z0-9_-]{1,63}")
SAMPLE = 100


def split_bq(uri: str, what: str) -> tuple[str, str, str]:
    m = _TABLE.match(uri.strip())
    if not m:
        raise InputError(f"{what} {uri!r} is not a BigQuery table: write "
                         "bq://project.dataset.table")
    return m.group(1), m.group(2), m.group(3)


def _quote(text: str) -> str:
    """A GoogleSQL string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


def _fields(template: str) -> list[tuple[str, str | None]]:
    """``(literal, field or None)`` pieces of a plain ``{name}`` template."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise TemplateError(f"template {template!r} is malformed: {exc}") from None
    out = []
    for literal, name, spec, conv in parsed:
        if name is not None and (spec or conv or not name.isidentifier()):
            raise TemplateError(f"template field {{{name}}} must name a column plainly "
                                "(no attribute, index, conversion or format)")
        out.append((literal, name))
    if not any(lit or name for lit, name in out):
        raise TemplateError("the template is empty")
    return out


def _prompt_sql(template: str, columns: list[str]) -> str:
    """The SQL expression of ``template``: literal pieces and ``CAST(col AS STRING)``."""
    pieces = []
    for literal, name in _fields(template):
        if literal:
            pieces.append(_quote(literal))
        if name is None:
            continue
        if name not in columns:
            raise ColumnError(f"template names column {name!r}, which the source does not "
                              f"have; its columns: {', '.join(columns)}")
        pieces.append(f"IFNULL(CAST(`{name}` AS STRING), '')")
    return pieces[0] if len(pieces) == 1 else f"CONCAT({', '.join(pieces)})"


def _source_sql(source: str) -> str:
    """The FROM clause of a source: a quoted table, or a parenthesised query."""
    text = source.strip()
    if text.startswith("bq://"):
        p, d, t = split_bq(text, "source")
        return f"`{p}.{d}.{t}`"
    if re.match(r"(?is)^\s*(select|with)\b", text):
        return f"({text})"
    raise InputError(f"source {source!r} is neither a BigQuery table (bq://project.dataset."
                     "table), a query (SELECT ...) nor Cloud Storage JSONL (gs://.../*.jsonl)")


def _count(client: Any, table: str) -> int:
    return int(next(iter(client.query(f"SELECT COUNT(*) AS n FROM `{table}`").result()))[0])


def _sampled_size(client: Any, table: str) -> int:
    sample = [len(str(r[0]).encode()) for r in client.query(
        f"SELECT request FROM `{table}` LIMIT {SAMPLE}").result()]
    return int(sum(sample) / len(sample)) if sample else 0


def build_bigquery(source: str, template: str, key: str, dest: str,
                   shared: dict[str, Any]) -> tuple[str, int, int]:
    """Make the staging table of requests with one query; (its bq:// URI, rows, bytes per
    request from a sample)."""
    client = _vertex.bigquery_client()
    from_sql = _source_sql(source)
    columns = [f.name for f in client.query(f"SELECT * FROM {from_sql} LIMIT 0").result()
               .schema]
    if key not in columns:
        raise ColumnError(f"key column {key!r} is not in the source; its columns: "
                          f"{', '.join(columns)}")
    if "request" in columns:
        raise ColumnError("the source has a column named 'request', which the job reads as "
                          "the request: rename it in a query (SELECT request AS ...)")
    prompt = _prompt_sql(template, columns)
    tail = ("," + orjson.dumps(shared).decode()[1:-1]) if shared else ""
    request = (f"""CONCAT('{{"contents":[{{"role":"user","parts":[{{"text":', """
               f"TO_JSON_STRING({prompt}), {_quote('}]}]' + tail + '}')})")
    p, d, t = split_bq(dest, "dest")
    staging = f"{p}.{d}.{t}_gembatch_requests"
    client.query(f"CREATE OR REPLACE TABLE `{staging}` AS SELECT `{key}`, {request} AS "
                 f"request FROM {from_sql}").result()
    # the staging table's own count: exact (a source's num_rows leaves out rows still in
    # its streaming buffer), and free for a table (metadata)
    return f"bq://{staging}", _count(client, staging), _sampled_size(client, staging)


# --------------------------------------------------------------------------- Cloud Storage
def _matching_blobs(pattern: str) -> list[Any]:
    """The objects a ``gs://bucket/prefix*.jsonl`` pattern names, in name order."""
    bucket, name = _vertex.split_gs(pattern)
    literal = re.split(r"[*?\[]", name, maxsplit=1)[0]
    blobs = [b for b in _vertex.storage_client().list_blobs(bucket, prefix=literal)
             if fnmatch.fnmatchcase(b.name, name) and not b.name.endswith("/")]
    if not blobs:
        raise InputError(f"no object in gs://{bucket} matches {pattern!r}: check the bucket "
                         "and the pattern (e.g. gs://bucket/in/*.jsonl)")
    return sorted(blobs, key=lambda b: str(b.name))


def _lines(source: str) -> Iterator[tuple[str, bytes]]:
    """``(where, raw line)`` of every non-blank line of the objects ``source`` matches."""
    for blob in _matching_blobs(source):
        with blob.open("rb", chunk_size=8 * 1024 * 1024) as fh:
            for number, raw in enumerate(fh, 1):
                if raw.strip():
                    yield f"line {number} of gs://{blob.bucket.name}/{blob.name}", raw


def _prompt(pieces: list[tuple[str, str | None]], row: dict[str, Any], where: str) -> str:
    out = []
    for literal, name in pieces:
        out.append(literal)
        if name is None:
            continue
        if name not in row:
            raise ColumnError(f"template names field {name!r}, which {where} does not have; "
                              f"its fields: {', '.join(map(str, row)) or '(none)'}")
        value = row[name]
        out.append("" if value is None else value if isinstance(value, str) else
                   orjson.dumps(value).decode())
    return "".join(out)


def build_jsonl(source: str, template: str, key: str | None, target: str,
                shared: dict[str, Any]) -> tuple[int, int]:
    """Stream every line of the matching JSONL objects through ``template`` into request
    lines, upload them to ``target``; (rows, mean bytes per request)."""
    pieces = _fields(template)
    seen: set[str] = set()
    n = size = 0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "requests.jsonl"
        with open(path, "wb") as out:
            for where, raw in _lines(source):
                row = _json_line(where, raw, "JSON object")
                if not isinstance(row, dict):
                    raise InputError(f"{where} is a JSON {type(row).__name__}, not an "
                                     "object: each line must be one JSON object")
                wire = _wire_key(row, key, n, where, seen)
                request = {"contents": [{"role": "user", "parts": [
                    {"text": _prompt(pieces, row, where)}]}], **shared,
                    "labels": {_vertex.KEY_LABEL: wire}}
                line = orjson.dumps({"request": request}) + b"\n"
                out.write(line)
                n += 1
                size += len(line)
        if n == 0:
            raise InputError(f"the objects matching {source!r} hold no JSON lines")
        _vertex.upload_file(path, target)
    return n, size // n


def _wire_key(row: dict[str, Any], key: str | None, n: int, where: str,
              seen: set[str]) -> str:
    """The row's key as a label value (the line's number without ``key=``)."""
    if key is None:
        return str(n)
    if key not in row:
        raise ColumnError(f"key field {key!r} is missing from {where}; its fields: "
                          f"{', '.join(map(str, row))}")
    wire = str(row[key])
    if not _LABEL.fullmatch(wire):
        raise InputError(f"key {wire!r} ({where}) cannot travel as a Vertex AI label: keys "
                         "must be 1-63 lowercase letters, digits, '_' or '-'; pick another "
                         "key field, or leave key= out to key rows by line number")
    if wire in seen:
        raise InputError(f"key {wire!r} appears twice (again at {where}): keys must be "
                         "unique")
    seen.add(wire)
    return wire


def _request_key(obj: Any) -> str | None:
    """The key label of a ``{"request": ...}`` line (None if it has none)."""
    request = obj.get("request") if isinstance(obj, dict) else None
    labels = request.get("labels") if isinstance(request, dict) else None
    key = labels.get(_vertex.KEY_LABEL) if isinstance(labels, dict) else None
    return None if key is None else str(key)


def _json_line(where: str, raw: bytes, shape: str) -> Any:
    """One JSONL line parsed; an :class:`InputError` naming the line and the ``shape``
    each line must have when it is not JSON."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"{where} is not JSON ({exc}): each line must be one {shape}") from None


def scan_jsonl(source: str) -> tuple[int, int]:
    """Check the ready-made request lines of ``source`` (one ``{"request": {...}}`` a line,
    each request labelled with its unique ``gembatch_key``), streamed; (rows, mean bytes
    per request)."""
    seen: set[str] = set()
    n = size = 0
    for where, raw in _lines(source):
        obj = _json_line(where, raw, '{"request": {...}} object')
        if not isinstance(obj, dict) or not isinstance(obj.get("request"), dict):
            raise InputError(f'{where} has no "request" object: without a template each line '
                             'must be {"request": {...}}; pass template= to format fields')
        key = _request_key(obj)
        if key is None:
            raise InputError(
                f'{where} has no request.labels.{_vertex.KEY_LABEL}: the answers are matched '
                f'to rows by that label; add "labels": {{"{_vertex.KEY_LABEL}": "<unique '
                'key>"}} to every request, or pass template= (and key=) to build them')
        if key in seen:
            raise InputError(f"key {key!r} appears twice (again at {where}): keys must be "
                             "unique")
        seen.add(key)
        n += 1
        size += len(raw)
    if n == 0:
        raise InputError(f"the objects matching {source!r} hold no JSON lines")
    return n, size // n


# --------------------------------------------------------------------------- retries
def _ok(key: str, table: str) -> str:
    return (f"SELECT `{key}` FROM `{table}` WHERE IFNULL(status, '') = '' "
            "AND response IS NOT NULL")


def _exists(client: Any, table: str) -> bool:
    from google.api_core.exceptions import NotFound

    try:
        client.get_table(table)
    except NotFound:
        return False
    return True


def build_retry(requests: str, current: str, key: str, name: str) -> tuple[str, int, int]:
    """The staging table ``name`` of the requests in ``requests`` whose row has no good
    answer in ``current`` (failed, or missing; every row if the job wrote no table); (its
    bq:// URI, rows, bytes per request from a sample)."""
    client = _vertex.bigquery_client()
    where = (f" WHERE `{key}` NOT IN ({_ok(key, current)})" if _exists(client, current)
             else "")
    client.query(f"CREATE OR REPLACE TABLE `{name}` AS SELECT `{key}`, request FROM "
                 f"`{requests}`{where}").result()
    return f"bq://{name}", _count(client, name), _sampled_size(client, name)


def merge_retry(current: str, answers: str, key: str, merged: str) -> int:
    """``merged`` := the rows of ``current`` the retry did not answer, plus its answers (just
    its answers if the first job wrote no table); returns its rows with a good answer."""
    client = _vertex.bigquery_client()
    work = f"{merged}_work"
    keep = (f"SELECT * FROM `{current}` WHERE `{key}` NOT IN (SELECT `{key}` FROM "
            f"`{answers}`) UNION ALL " if _exists(client, current) else "")
    client.query(f"CREATE OR REPLACE TABLE `{work}` AS {keep}SELECT * FROM `{answers}`"
                 ).result()
    client.query(f"CREATE OR REPLACE TABLE `{merged}` AS SELECT * FROM `{work}`").result()
    client.query(f"DROP TABLE IF EXISTS `{work}`").result()
    return _count_where(client, merged, "IFNULL(status, '') = '' AND response IS NOT NULL")


def _count_where(client: Any, table: str, condition: str) -> int:
    return int(next(iter(client.query(f"SELECT COUNT(*) AS n FROM `{table}` WHERE "
                                      f"{condition}").result()))[0])


def build_retry_jsonl(requests: str, current: list[str], target: str) -> tuple[int, int]:
    """Upload to ``target`` the request lines of ``requests`` (the gs:// object or pattern
    the run sent) whose key has no good answer in the prediction folders ``current``
    (failed, or missing); (lines, mean bytes per request). Nothing is uploaded for none."""
    good = {key for folder in current
            for key, answered, _ in _vertex.prediction_records(folder) if answered}
    n = size = 0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "requests.jsonl"
        with open(path, "wb") as out:
            for _where, raw in _lines(requests):
                try:
                    key = _request_key(orjson.loads(raw))
                except orjson.JSONDecodeError:
                    continue  # not a request (the job refused it too): no row to retry
                if key is None or key in good:
                    continue
                line = raw.rstrip(b"\r\n") + b"\n"
                out.write(line)
                n += 1
                size += len(line)
        if n:
            _vertex.upload_file(path, target)
    return n, size // n if n else 0


def merge_retry_jsonl(current: list[str], answers: list[str], merged: str) -> int:
    """``<merged>predictions.jsonl`` := the lines of the prediction folders ``current`` whose
    key the retry (``answers``) did not answer, then the retry's lines, as the service
    wrote them; returns its lines with a good answer."""
    retried = {key for folder in answers for key, _, _ in _vertex.prediction_records(folder)}
    good = 0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "predictions.jsonl"
        with open(path, "wb") as out:
            for folder in current:
                for key, answered, line in _vertex.prediction_records(folder):
                    if key not in retried:
                        out.write(line)
                        good += answered
            for folder in answers:
                for _key, answered, line in _vertex.prediction_records(folder):
                    out.write(line)
                    good += answered
        _vertex.upload_file(path, merged.rstrip("/") + "/predictions.jsonl",
                            what="merged predictions")
    return good


def estimate(model: str, n_rows: int, per_request: int, shared: dict[str, Any]
             ) -> _plan.Estimate:
    """An estimate from the row count and the sampled request size (nothing sent)."""
    in_tokens = math.ceil(per_request / 4) * n_rows
    gen = shared.get("generationConfig") or {}
    per_out = int(gen.get("max_output_tokens") or gen.get("maxOutputTokens")
                  or _pricing.ASSUMED_OUTPUT_TOKENS)
    price = _pricing.price_for(model)
    cost = None if price is None else (in_tokens * price[0] + per_out * n_rows * price[1]) / 1e6
    note = (f"no batch price known for {model}" if price is None else
            f"${price[0]}/1M input, ${price[1]}/1M output; from the row count and a "
            f"sample of {SAMPLE} requests")
    return _plan.Estimate(model=model, rows=n_rows, requests=n_rows, skipped=0,
                          bytes=per_request * n_rows, mode="table", shards=1,
                          input_tokens=in_tokens, output_tokens=per_out * n_rows,
                          cost_usd=cost, price_note=note)
