"""Deterministic synthetic model used by the emulator.

Everything here is a pure function of its inputs: the same request always gets the same
answer, on every machine and in every process. See the package docstring for the rules.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import random
import re
import zlib
from collections.abc import Callable
from typing import Any

import orjson

Responder = Callable[[dict[str, Any], str], dict[str, Any]]

FAIL_MARKER = "[[fail]]"
FAIL_MARKER_MESSAGE = "Simulated failure ([[fail]] in prompt)."
FAIL_RATE_MESSAGE = "Simulated failure (fail_rate)."
DEFAULT_EMBEDDING_DIMENSIONS = 768
_MAX_SCHEMA_DEPTH = 12


#: The google.rpc codes by name (``google/rpc/code.proto``).
RPC_CODES = {
    "OK": 0,
    "CANCELLED": 1,
    "UNKNOWN": 2,
    "INVALID_ARGUMENT": 3,
    "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9,
    "ABORTED": 10,
    "OUT_OF_RANGE": 11,
    "UNIMPLEMENTED": 12,
    "INTERNAL": 13,
    "UNAVAILABLE": 14,
    "DATA_LOSS": 15,
    "UNAUTHENTICATED": 16,
}
#: The google.rpc code of an HTTP status (the mapping of ``google/rpc/code.proto``).
_HTTP_TO_RPC = {400: 3, 401: 16, 403: 7, 404: 5, 409: 10, 412: 9, 416: 11, 429: 8, 499: 1,
                500: 13, 501: 12, 503: 14, 504: 4}


class RequestError(Exception):
    """A per-request error: becomes a google.rpc.Status ``{"code", "message"}`` in the
    batch output, ``code`` being the google.rpc code of ``status`` (``INTERNAL`` is 13).

    A custom ``responder`` may raise this (or any exception with integer ``code`` and string
    ``status`` attributes) to control the error; other exceptions become 13 ``INTERNAL``.
    ``code`` may be given as an HTTP status (500) or a google.rpc code (13): the output
    always carries the google.rpc code, as the service's results do.
    """

    def __init__(self, message: str, code: int = 500, status: str = "INTERNAL") -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.message = message


def field(d: dict[str, Any], camel: str, snake: str) -> Any:
    """Reads a field that may be spelled in camelCase or snake_case."""
    v = d.get(camel)
    if v is None:
        v = d.get(snake)
    return v


def token_count(text: str) -> int:
    """The documented token rule: ``ceil(len(text.encode("utf-8")) / 4)``."""
    n = len(text) if text.isascii() else len(text.encode("utf-8"))
    return (n + 3) // 4


def _content_text(content: Any) -> str:
    if type(content) is not dict:
        return ""
    parts = content.get("parts")
    if type(parts) is not list:
        return ""
    if len(parts) == 1:
        p = parts[0]
        t = p.get("text") if type(p) is dict else None
        return t if type(t) is str else ""
    out = []
    for p in parts:
        if type(p) is dict:
            t = p.get("text")
            if type(t) is str:
                out.append(t)
    return "".join(out)


def prompt_texts(request: dict[str, Any]) -> tuple[str, str]:
    """Returns ``(last_user_text, all_text)`` for a GenerateContentRequest dict.

    ``last_user_text`` joins the text parts of the last content whose role is ``user`` (or has
    no role); ``all_text`` joins the text of every content plus ``systemInstruction``.
    """
    contents = request.get("contents")
    last_user = ""
    all_text = ""
    if type(contents) is list:
        if len(contents) == 1:
            c = contents[0]
            all_text = _content_text(c)
            if type(c) is dict and c.get("role", "user") in ("user", None):
                last_user = all_text
        else:
            texts = [_content_text(c) for c in contents]
            all_text = "".join(texts)
            for c, t in zip(reversed(contents), reversed(texts), strict=False):
                if type(c) is dict and c.get("role", "user") in ("user", None):
                    last_user = t
                    break
    elif type(contents) is dict:
        last_user = all_text = _content_text(contents)
    elif type(contents) is str:
        last_user = all_text = contents
    si = request.get("systemInstruction")
    if si is None:
        si = request.get("system_instruction")
    if si is not None:
        all_text += _content_text(si) if type(si) is dict else str(si)
    return last_user, all_text


def response_id(model: str, index: int, text: str) -> str:
    """A deterministic 16-character ``responseId`` (checksum based; not a security hash)."""
    h = zlib.adler32(text.encode("utf-8"), zlib.crc32(model.encode()))
    return ((h << 32) | (index & 0xFFFFFFFF)).to_bytes(8, "big").hex()


def _schema_hash(*parts: object) -> int:
    data = "\x00".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


class _SchemaGen:
    """Builds a JSON value valid against an OpenAPI-style ``responseSchema`` or a JSON Schema.

    Supported: ``type`` (any case, or a list of types), ``properties``, ``required``,
    ``items`` / ``prefixItems``, ``minItems`` / ``maxItems``, ``enum``, ``const``, ``anyOf`` /
    ``oneOf`` / ``allOf``, ``$ref`` into ``$defs`` / ``definitions``, ``nullable``,
    ``minimum`` / ``maximum`` / ``exclusiveMinimum`` / ``exclusiveMaximum``, ``minLength`` /
    ``maxLength``, common string ``format`` values. ``pattern`` is not honoured.
    """

    def __init__(self, root: dict[str, Any], prompt: str) -> None:
        self.root = root
        self.prompt = " ".join(prompt.split())[:60] or "text"
        self._refs: list[str] = []  # $refs being expanded (to stop optional recursion)

    def _is_recursive(self, schema: Any) -> bool:
        """True when ``schema`` (or one of its anyOf/oneOf options) re-enters a $ref."""
        if not isinstance(schema, dict):
            return False
        if schema.get("$ref") in self._refs:
            return True
        for key in ("anyOf", "oneOf"):
            opts = schema.get(key)
            if isinstance(opts, list) and any(
                isinstance(o, dict) and o.get("$ref") in self._refs for o in opts
            ):
                return True
        return False

    def _resolve(self, schema: Any) -> dict[str, Any]:
        seen = 0
        while isinstance(schema, dict) and "$ref" in schema and seen < 32:
            ref = schema["$ref"]
            seen += 1
            if not isinstance(ref, str) or not ref.startswith("#"):
                return {}
            node: Any = self.root
            for part in ref[1:].split("/"):
                if not part:
                    continue
                part = part.replace("~1", "/").replace("~0", "~")
                if not isinstance(node, dict) or part not in node:
                    return {}
                node = node[part]
            # Sibling keywords next to $ref (allowed in 2020-12) are merged in.
            extra = {k: v for k, v in schema.items() if k != "$ref"}
            schema = {**node, **extra} if extra and isinstance(node, dict) else node
        return schema if isinstance(schema, dict) else {}

    def gen(self, schema: Any, path: str, depth: int = 0) -> Any:
        ref = schema.get("$ref") if isinstance(schema, dict) else None
        if isinstance(ref, str):
            self._refs.append(ref)
            try:
                return self._gen(schema, path, depth)
            finally:
                self._refs.pop()
        return self._gen(schema, path, depth)

    def _gen(self, schema: Any, path: str, depth: int) -> Any:
        s = self._resolve(schema)
        if "const" in s:
            return s["const"]
        enum = s.get("enum")
        if isinstance(enum, list) and enum:
            return enum[_schema_hash(self.prompt, path) % len(enum)]
        all_of = s.get("allOf")
        if isinstance(all_of, list) and all_of:
            merged: dict[str, Any] = {k: v for k, v in s.items() if k != "allOf"}
            for sub in all_of:
                sub_r = self._resolve(sub)
                for k, v in sub_r.items():
                    if k == "properties" and isinstance(v, dict):
                        merged["properties"] = {**merged.get("properties", {}), **v}
                    elif k == "required" and isinstance(v, list):
                        merged["required"] = [*merged.get("required", []), *v]
                    else:
                        merged.setdefault(k, v)
            return self.gen(merged, path, depth)
        for key in ("anyOf", "oneOf"):
            options = s.get(key)
            if isinstance(options, list) and options:
                non_null = [
                    o for o in options if str(self._resolve(o).get("type", "")).lower() != "null"
                ]
                choice = non_null[0] if non_null else options[0]
                nullable = len(non_null) < len(options)
                if nullable and (depth >= _MAX_SCHEMA_DEPTH or self._is_recursive(s)):
                    return None
                return self.gen(choice, path, depth + 1)
        t = s.get("type")
        if isinstance(t, list):
            non_null_types = [x for x in t if str(x).lower() != "null"]
            if not non_null_types:
                return None
            t = non_null_types[0]
        t = str(t).lower() if t is not None else ""
        if not t:
            if "properties" in s:
                t = "object"
            elif "items" in s or "prefixItems" in s:
                t = "array"
            else:
                t = "string"
        if depth >= _MAX_SCHEMA_DEPTH and (s.get("nullable") is True):
            return None
        if t == "object":
            return self._object(s, path, depth)
        if t == "array":
            return self._array(s, path, depth)
        if t == "integer":
            return self._integer(s, path)
        if t == "number":
            return self._number(s, path)
        if t == "boolean":
            return _schema_hash(self.prompt, path) % 2 == 0
        if t == "null":
            return None
        return self._string(s, path)

    def _object(self, s: dict[str, Any], path: str, depth: int) -> dict[str, Any]:
        props = s.get("properties")
        out: dict[str, Any] = {}
        if not isinstance(props, dict):
            return out
        req_raw = s.get("required")
        required: list[Any] = req_raw if isinstance(req_raw, list) else []
        ordering = s.get("propertyOrdering")
        names = list(ordering) if isinstance(ordering, list) else list(props)
        names += [n for n in props if n not in names]
        for name in names:
            if name not in props:
                continue
            if name not in required and (
                depth >= _MAX_SCHEMA_DEPTH or self._is_recursive(props[name])
            ):
                continue
            out[name] = self.gen(props[name], f"{path}.{name}", depth + 1)
        return out

    def _array(self, s: dict[str, Any], path: str, depth: int) -> list[Any]:
        lo = _as_int(s.get("minItems"), 0)
        hi = _as_int(s.get("maxItems"), max(lo, 2))
        n = max(lo, min(2, hi))
        if depth >= _MAX_SCHEMA_DEPTH:
            n = lo
        prefix = s.get("prefixItems")
        items = s.get("items")
        out = []
        for i in range(n):
            if isinstance(prefix, list) and i < len(prefix):
                sub = prefix[i]
            else:
                sub = items if isinstance(items, dict) else {}
            out.append(self.gen(sub, f"{path}[{i}]", depth + 1))
        return out

    def _bounds(self, s: dict[str, Any]) -> tuple[float | None, float | None, bool, bool]:
        lo = _as_float(s.get("minimum"))
        hi = _as_float(s.get("maximum"))
        lo_x = hi_x = False
        emin, emax = s.get("exclusiveMinimum"), s.get("exclusiveMaximum")
        if isinstance(emin, bool):
            lo_x = emin
        elif _as_float(emin) is not None:
            lo, lo_x = _as_float(emin), True
        if isinstance(emax, bool):
            hi_x = emax
        elif _as_float(emax) is not None:
            hi, hi_x = _as_float(emax), True
        return lo, hi, lo_x, hi_x

    def _integer(self, s: dict[str, Any], path: str) -> int:
        lo_f, hi_f, lo_x, hi_x = self._bounds(s)
        lo = None if lo_f is None else (math.floor(lo_f) + 1 if lo_x else math.ceil(lo_f))
        hi = None if hi_f is None else (math.ceil(hi_f) - 1 if hi_x else math.floor(hi_f))
        h = _schema_hash(self.prompt, path)
        if lo is None and hi is None:
            lo, hi = 0, 100
        elif lo is None:
            assert hi is not None
            lo = hi - 100
        elif hi is None:
            hi = lo + 100
        if hi < lo:
            return lo
        return lo + h % (hi - lo + 1)

    def _number(self, s: dict[str, Any], path: str) -> float:
        lo, hi, lo_x, hi_x = self._bounds(s)
        frac = (_schema_hash(self.prompt, path) % 1000) / 1000.0
        if lo is None and hi is None:
            return round(frac * 100, 3)
        if lo is None:
            assert hi is not None
            lo = hi - 100
            lo_x = False
        if hi is None:
            hi = lo + 100
            hi_x = False
        if hi <= lo:
            return lo
        value = lo + (hi - lo) * (0.05 + 0.9 * frac)
        if (lo_x and value <= lo) or (hi_x and value >= hi):
            value = (lo + hi) / 2
        return value

    def _string(self, s: dict[str, Any], path: str) -> str:
        fmt = str(s.get("format", "")).lower()
        h = _schema_hash(self.prompt, path)
        if fmt == "date-time":
            value = f"2026-01-{1 + h % 28:02d}T{h % 24:02d}:00:00Z"
        elif fmt == "date":
            value = f"2026-01-{1 + h % 28:02d}"
        elif fmt == "time":
            value = f"{h % 24:02d}:00:00Z"
        elif fmt == "email":
            value = f"user{h % 1000}@example.com"
        elif fmt in ("uri", "url"):
            value = f"https://example.com/{h % 1000}"
        elif fmt == "uuid":
            x = f"{h:016x}{h:016x}"
            value = f"{x[:8]}-{x[8:12]}-4{x[13:16]}-8{x[17:20]}-{x[20:32]}"
        else:
            idx = re.findall(r"\[(\d+)\]", path)
            suffix = f" ({int(idx[-1]) + 1})" if idx and idx[-1] != "0" else ""
            value = self.prompt + suffix
        lo = _as_int(s.get("minLength"), 0)
        hi = _as_int(s.get("maxLength"), -1)
        if len(value) < lo:
            value = value + "x" * (lo - len(value))
        if hi >= 0 and len(value) > hi:
            value = value[:hi]
        return value


def _as_int(v: Any, default: int) -> int:
    try:
        return int(v) if v is not None and not isinstance(v, bool) else default
    except (TypeError, ValueError):
        return default


def _as_float(v: Any) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _camel(key: str) -> str:
    if "_" not in key or key.startswith(("$", "_")):
        return key
    head, *rest = key.split("_")
    return head + "".join(w[:1].upper() + w[1:] for w in rest)


_SCHEMA_MAPS = frozenset({"properties", "$defs", "defs", "definitions", "patternProperties"})
_SCHEMA_ONE = frozenset({"items", "not", "additionalProperties", "if", "then", "else"})
_SCHEMA_LISTS = frozenset({"anyOf", "allOf", "oneOf", "prefixItems"})


def normalize_schema(schema: Any) -> Any:
    """Renames snake_case schema keywords (``max_length``, ``any_of``, ...) to camelCase,
    leaving property names untouched, so both spellings are understood."""
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for k, v in schema.items():
        ck = _camel(k) if isinstance(k, str) else k
        if ck in _SCHEMA_MAPS and isinstance(v, dict):
            out[ck] = {name: normalize_schema(sub) for name, sub in v.items()}
        elif ck in _SCHEMA_ONE and isinstance(v, dict):
            out[ck] = normalize_schema(v)
        elif ck in _SCHEMA_LISTS and isinstance(v, list):
            out[ck] = [normalize_schema(x) for x in v]
        else:
            out[ck] = v
    return out


def json_for_schema(schema: dict[str, Any], prompt: str) -> Any:
    """Returns a JSON-compatible value, valid against ``schema``, derived from ``prompt``."""
    schema = normalize_schema(schema)
    return _SchemaGen(schema, prompt).gen(schema, "$")


def answer_text(request: dict[str, Any], last_user: str) -> str:
    """The default model's answer text for a request (see the package docstring)."""
    gc = field(request, "generationConfig", "generation_config")
    if not isinstance(gc, dict):
        return last_user
    mime = field(gc, "responseMimeType", "response_mime_type")
    if not mime:
        return last_user
    mime = str(mime).lower()
    json_schema = field(gc, "responseJsonSchema", "response_json_schema")
    if json_schema is None:
        json_schema = field(gc, "_responseJsonSchema", "_response_json_schema")
    schema = field(gc, "responseSchema", "response_schema")
    if mime == "application/json":
        if isinstance(json_schema, dict):
            return orjson.dumps(json_for_schema(json_schema, last_user)).decode()
        if isinstance(schema, dict):
            return orjson.dumps(json_for_schema(schema, last_user)).decode()
        return orjson.dumps({"text": last_user}).decode()
    if mime == "text/x.enum":
        chosen = json_schema if isinstance(json_schema, dict) else schema
        if isinstance(chosen, dict):
            value = json_for_schema(chosen, last_user)
            return value if isinstance(value, str) else orjson.dumps(value).decode()
    return last_user


#: What the emulator knows of the File API files a batch names: file id -> (mime type,
#: size in bytes, SHA-256 in hex, the gs:// URI of a registered file or None).
Files = dict[str, tuple[str, int, str, "str | None"]]
#: Input tokens counted for each media part (an image's documented rate).
MEDIA_PART_TOKENS = 258
#: A File API file's URI (``https://host/v1beta/files/<id>``), or its name.
_FILE_URI = re.compile(
    r"^(?:https?://[^/]+(?:/[^?#]*)?/v\d+[a-z0-9]*/)?files/([a-z0-9][a-z0-9-]*)$")


def missing_file_error(file_id: str) -> RequestError:
    """The service's answer to a part naming a file it does not have (or not any more)."""
    return RequestError(
        f"You do not have permission to access the File {file_id} or it may not exist.",
        403, "PERMISSION_DENIED")


def media_tags(request: dict[str, Any], files: Files | None) -> list[str]:
    """One tag per media part of the request's last user content, in order:
    ``[image/png 1234 bytes sha256:<hex>]`` for inline data and uploaded files (hashed from
    their bytes), ``[image/png registered gs://b/o]`` for a registered file,
    ``[image/png url https://...]`` for an external URL (not fetched). A part naming an
    unknown, deleted or expired file raises the service's 403 PERMISSION_DENIED."""
    contents = request.get("contents")
    if type(contents) is not list:
        return []
    last: Any = None
    for c in reversed(contents):
        if type(c) is dict and c.get("role", "user") in ("user", None):
            last = c
            break
    parts = last.get("parts") if type(last) is dict else None
    if type(parts) is not list or (len(parts) == 1 and "text" in parts[0]):
        return []
    tags = []
    for p in parts:
        if type(p) is not dict:
            continue
        inline = field(p, "inlineData", "inline_data")
        if isinstance(inline, dict):
            mime = field(inline, "mimeType", "mime_type") or "application/octet-stream"
            try:
                # proto3 JSON takes standard and URL-safe base64 (the SDK sends the latter)
                text = str(inline.get("data") or "").replace("-", "+").replace("_", "/")
                raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
            except (binascii.Error, ValueError):
                raise RequestError("Invalid value at 'contents.parts.inline_data.data': "
                                   "not base64.", 400, "INVALID_ARGUMENT") from None
            tags.append(f"[{mime} {len(raw)} bytes sha256:{hashlib.sha256(raw).hexdigest()}]")
            continue
        fd = field(p, "fileData", "file_data")
        if not isinstance(fd, dict):
            continue
        uri = str(field(fd, "fileUri", "file_uri") or "")
        mime = field(fd, "mimeType", "mime_type")
        if uri.startswith("gs://"):
            raise RequestError(f"{uri} must be registered with the File API first "
                               "(files.register_files), then named by the file's uri.",
                               400, "INVALID_ARGUMENT")
        found = _FILE_URI.match(uri)
        if found is None:
            tags.append(f"[{mime or 'unknown'} url {uri}]")
            continue
        entry = (files or {}).get(found.group(1))
        if entry is None:
            raise missing_file_error(found.group(1))
        f_mime, size, sha, source = entry
        if source:
            tags.append(f"[{mime or f_mime} registered {source}]")
        else:
            tags.append(f"[{mime or f_mime} {size} bytes sha256:{sha}]")
    return tags


def echo_fields(request: dict[str, Any], model: str, index: int, files: Files | None = None
                ) -> tuple[str, int, int, str]:
    """The default model's ``(text, prompt_tokens, answer_tokens, response_id)``.

    Media parts are named before the text (:func:`media_tags`). Raises
    :class:`RequestError` for a ``[[fail]]`` prompt or a part naming a missing file.
    """
    last_user, all_text = prompt_texts(request)
    if FAIL_MARKER in all_text:
        raise RequestError(FAIL_MARKER_MESSAGE)
    tags = media_tags(request, files)
    if tags:
        last_user = " ".join(tags) + " " + last_user
    gc = request.get("generationConfig")
    if gc is None:
        gc = request.get("generation_config")
    text = answer_text(request, last_user) if gc else last_user
    prompt_tokens = token_count(all_text) + MEDIA_PART_TOKENS * len(tags)
    answer_tokens = prompt_tokens if text is all_text else token_count(text)
    return text, prompt_tokens, answer_tokens, response_id(model, index, all_text)


def default_generate(request: dict[str, Any], model: str, index: int = 0,
                     files: Files | None = None) -> dict[str, Any]:
    """The default responder: echoes the last user text (or schema-valid JSON), its media
    parts named first."""
    text, prompt_tokens, answer_tokens, rid = echo_fields(request, model, index, files)
    return {
        "candidates": [
            {
                "content": {"parts": [{"text": text}], "role": "model"},
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": {
            "promptTokenCount": prompt_tokens,
            "candidatesTokenCount": answer_tokens,
            "totalTokenCount": prompt_tokens + answer_tokens,
        },
        "modelVersion": model,
        "responseId": rid,
    }


def embedding_values(text: str, dimensions: int = DEFAULT_EMBEDDING_DIMENSIONS) -> list[float]:
    """A deterministic unit-length vector of ``dimensions`` floats derived from ``text``."""
    seed = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=16).digest(), "big")
    rng = random.Random(seed)
    values = [rng.gauss(0.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [round(v / norm, 7) for v in values]


def default_embed(request: dict[str, Any]) -> dict[str, Any]:
    """Answers one EmbedContentRequest: ``{"embedding": {"values": [...]}, "tokenCount"}``."""
    content = request.get("content")
    text = _content_text(content)
    if FAIL_MARKER in text:
        raise RequestError(FAIL_MARKER_MESSAGE)
    dims = field(request, "outputDimensionality", "output_dimensionality")
    n = _as_int(dims, DEFAULT_EMBEDDING_DIMENSIONS)
    if n <= 0 or n > 65536:
        raise RequestError(
            f"outputDimensionality must be between 1 and 65536, got {dims!r}.",
            400,
            "INVALID_ARGUMENT",
        )
    return {
        "embedding": {"values": embedding_values(text, n)},
        "tokenCount": str(token_count(text)),
    }


def rpc_status(code: int | None, status: str | None, message: str) -> dict[str, Any]:
    """A google.rpc.Status ``{"code", "message"}`` (the shape of a per-request error in the
    service's results: a google.rpc code, no HTTP status text)."""
    rpc = RPC_CODES.get(status.upper()) if isinstance(status, str) else None
    if rpc is None and isinstance(code, int) and not isinstance(code, bool):
        rpc = _HTTP_TO_RPC.get(code, code if 0 <= code <= 16 else 2)
    return {"code": 13 if rpc is None else rpc, "message": message}


def error_dict(exc: BaseException) -> dict[str, Any]:
    """Converts an exception raised while answering into a google.rpc.Status dict."""
    code = getattr(exc, "code", None)
    status = getattr(exc, "status", None)
    if not isinstance(code, int) or isinstance(code, bool):
        code = None
    if not isinstance(status, str):
        status = None
    if code is None and status is None:
        status = "INTERNAL"
    message = getattr(exc, "message", None)
    if not isinstance(message, str):
        message = str(exc) or type(exc).__name__
    return rpc_status(code, status, message)
