"""A local emulator of the Gemini Batch API and File API.

It speaks the wire protocol of the Gemini Developer API closely enough that the
**unmodified** ``google-genai`` SDK works against it, so notebooks and CI can rehearse batch
jobs with no network and no API key::

    from google import genai
    from google.genai import types
    from gemini_batch_magic.emulator import Emulator

    with Emulator() as emu:
        client = genai.Client(api_key="test-key",
                              http_options=types.HttpOptions(base_url=emu.url))
        job = client.batches.create(model="gemini-2.5-flash",
                                    src=[{"contents": "hello", "metadata": {"key": "a"}}])
        ...

By default it behaves as the real service was **recorded** behaving (see "Recorded
behaviour" below: counts only at the end, zero counts left out, 36-character batch ids,
key errors, per-key visibility, model checks, file lifetimes and quota); each of those has
an option that restores a friendlier behaviour for tests that need it.

From a shell (the first line on stdout is the base URL, printed once the socket accepts
connections; SIGINT/SIGTERM stop it cleanly with exit code 0)::

    python -m gemini_batch_magic.emulator --port 8765 --pending-seconds 2 --rate 50

Configuration
-------------
Every option below is a field of one frozen dataclass, :class:`EmulatorConfig`, validated
once when it is built: a bad value raises ``ValueError`` naming the option, the value and
the fix, and an unknown name raises ``TypeError`` suggesting the closest ones. The same
object is built by the keyword constructor, by the command line and by ``configure()``::

    cfg = EmulatorConfig(pending_seconds=1, fail_rate=0.05, seed=7)
    emu = Emulator(cfg)                     # or Emulator(cfg, seed=8), or Emulator(seed=8)
    emu.config                              # the options now in force (frozen)
    emu.fail_rate                           # each option is also a read-only attribute

``emu.configure(**changes)`` changes options, on a **running** emulator too, validated like
the constructor's; if any change is refused, nothing changes:

* ``http_fault_rate``, ``drop_after_create_rate``, ``api_key``, ``scope_by_key``,
  ``zero_counts``, ``models``, ``mime_types``, ``file_quota_bytes`` and ``file_ttl`` (for
  files uploaded from then on) apply from the next API call;
* ``pending_seconds``, ``rate``, ``expire_after``, ``fail_rate``, ``seed``, ``shuffle``,
  ``progress``, ``results_ttl``, ``batch_id_length``, ``fail_batch_rate`` and
  ``fail_batch_message`` apply to batches created from then on: each batch stores the
  options it was created with, so a batch's state and results never change under it. A
  new ``seed`` also restarts the random streams of HTTP faults, dropped creates and failed
  batches (from then on, the same outcomes as an emulator started with that seed);
* ``host``, ``port``, ``allow_remote``, ``data_dir``, ``processes`` and ``responder`` are
  fixed once the emulator has started: changing them raises ``ValueError`` saying why
  (passing the current value is fine). Before ``start()`` every option can change.

For example, to see a client cope with failures mid-run::

    emu.configure(fail_rate=1.0)          # every request of the next batch fails
    emu.configure(http_fault_rate=0.3)    # and 30% of API calls get 429/503
    emu.configure(fail_batch_rate=1.0, fail_batch_message="Quota exceeded.")  # FAILED batches

Options (Python keyword / CLI flag)
-----------------------------------
``pending_seconds`` / ``--pending-seconds``
    How long a new batch stays ``PENDING`` (Python default 0; CLI default 2).
``rate`` / ``--rate``
    Requests answered per second while ``RUNNING``; 0 (default) answers all at once.
    With ``progress="live"``, ``metadata.batchStats`` advances accordingly.
``progress`` / ``--progress {end,live}``
    ``"end"`` (default, as recorded): a ``RUNNING`` batch keeps ``pendingRequestCount ==
    requestCount`` and its ``updateTime`` (the moment it started running) does not move
    until it ends; the counts arrive with the end. ``"live"``: the counts and
    ``updateTime`` advance while it runs, at ``rate``.
``zero_counts`` / ``--zero-counts``
    ``batchStats`` leaves out every count that is zero, as the service does (a ``PENDING``
    batch shows only ``requestCount`` and ``pendingRequestCount``, a ``SUCCEEDED`` one only
    ``requestCount``, ``successfulRequestCount`` and, when some failed,
    ``failedRequestCount``). ``True`` sends all four counts, zeros included.
``expire_after`` / ``--expire-after``
    A batch not finished this many seconds after creation becomes ``EXPIRED`` and publishes
    no results. Default: never.
``fail_rate`` / ``--fail-rate``
    Fraction of requests answered with a per-request error
    ``{"code": 13, "message": "Simulated failure (fail_rate)."}`` (a google.rpc.Status:
    13 is ``INTERNAL``).
``fail_batch_rate`` / ``--fail-batch-rate``, ``fail_batch_message`` / ``--fail-batch-message``
    Fraction of new batches (seeded) that end ``FAILED`` when they would start running,
    with no output and the operation error ``{"code": 13, "message":
    fail_batch_message}`` on the batch resource (top-level ``error``; the SDK drops it, so
    read it from the raw body). ``emu.configure(fail_batch_rate=1.0,
    fail_batch_message="...")`` makes every batch created from then on fail with that
    message; ``emu.set_state(name, "FAILED", message=..., code=...)`` fails one batch.
``seed`` / ``--seed``
    Seeds every random choice (faults, per-request failures, result order). Same seed, same
    sequence of client calls: same outcome. (Batch and file ids are random, not seeded.)
``shuffle`` / ``--no-shuffle``
    Results come back in a deterministic shuffled order (within windows of 1024 requests,
    seeded), inline and file output alike, so clients must match results by ``metadata`` /
    ``key``. ``shuffle=False`` keeps submission order. Inline *embedding* batches are never
    shuffled: their requests carry no key or metadata, so order is the only link.
    Every recording of the real service returned results in submission order, but the
    service documents no order (and big batches are answered in parallel), so the
    emulator shuffles by default: code that matched by position would pass against the
    recordings and fail on the day the service reorders.
``http_fault_rate`` / ``--http-fault-rate``
    Fraction of API calls (every endpoint: create, get, list, cancel, delete, upload start,
    upload chunks, download) answered ``429 RESOURCE_EXHAUSTED`` or ``503 UNAVAILABLE``
    before doing anything. Faults on upload *chunks* are sent **without**
    ``X-Goog-Upload-Status``, so the SDK's own chunk loop resends the chunk (it waits 1 s, 2 s,
    4 s between tries). Use ``HttpOptions(retry_options=HttpRetryOptions(...))`` for the
    other calls.
``drop_after_create_rate`` / ``--drop-after-create-rate``
    Fraction of batch creates that are accepted and persisted, after which the connection is
    closed with no response: the "ambiguous create" a client must reconcile by listing.
    (With ``retry_options`` the SDK retries the dropped connection and creates a second
    batch, exactly as it would against the real service.)
``data_dir`` / ``--data-dir``
    Where state lives: SQLite metadata (WAL) plus file bytes, files 0600 and directories
    0700. ``None`` uses a private temporary directory deleted on close (one left behind by a
    killed emulator process is removed when the next emulator starts). An emulator
    restarted on the same directory continues every batch where it was; two emulator
    processes may share one directory.
``api_key`` / ``--api-key`` (repeatable)
    When set (a key, or a list of keys), only those are accepted; another key gets the
    service's ``400 INVALID_ARGUMENT`` "API key not valid. Please pass a valid API key."
    with ``details`` holding a ``google.rpc.ErrorInfo`` (reason ``API_KEY_INVALID``, domain
    ``googleapis.com``) and a ``LocalizedMessage``. Without it any non-empty key is
    accepted. A missing key always gets ``403 PERMISSION_DENIED`` "Method doesn't allow
    unregistered callers ...". The key is never printed, logged or stored.
``scope_by_key`` / ``--no-key-scope``
    ``True`` (default, as the service): a batch, an uploaded file and a batch's results
    file are visible only to the key that created them. With another key, batch get,
    cancel and delete answer ``404 NOT_FOUND`` and ``batches.list`` leaves them out; file
    get, delete, download and use as a batch source answer the service's ``403
    PERMISSION_DENIED`` for a file that does not exist, and ``files.list`` leaves them out.
    What is stored is a SHA-256 fingerprint of the key, never the key. ``False``: every key
    sees everything.
``batch_id_length`` / ``--batch-id-length``
    Characters of a new batch id: 36 (default, as the service). A file batch's results
    file is ``files/batch-<id>``, 42 characters, and ``files.get`` / ``files.delete`` refuse
    a file id over 40 characters with the service's ``400 INVALID_ARGUMENT`` "* GetFileRequest
    .name: File ID (name excluding 'files/') cannot be more than 40 characters."; its
    download works. 28 or less keeps results files within reach of ``files.get``. Uploaded
    file ids stay 12 characters.
``models`` / ``--models ID,ID,...`` (``any``)
    The models that exist (ids without ``models/``; default :data:`DEFAULT_MODELS
    <._config.DEFAULT_MODELS>`: gemini-2.5-pro, gemini-2.5-flash, gemini-2.5-flash-lite,
    gemini-2.0-flash, gemini-2.0-flash-lite, the 3.x previews, gemini-3.5-flash, the
    ``-latest`` aliases, gemini-embedding-001 and text-embedding-004). ``models.get`` of
    another model, and a batch on it (or a generate batch on an embedding model, and the
    reverse), answer ``404 NOT_FOUND`` "models/x is not found for API version v1beta, or is
    not supported for batchGenerateContent. Call ListModels ...". ``None`` (``--models
    any``): every model name exists (``models.list`` then shows the default list).
``mime_types`` / ``--any-mime-type``
    MIME types an upload may declare (``type/*`` matches a family; case and ``;``
    parameters ignored). Default :data:`DEFAULT_MIME_TYPES <._config.DEFAULT_MIME_TYPES>`:
    ``jsonl``, ``json``, ``text`` (bare, as Google's examples send them and the service was
    recorded accepting), ``application/jsonl``, ``application/json``,
    ``application/x-ndjson``, ``application/pdf``, every ``text/*``, and the image (png,
    jpeg, webp, heic, heif), audio (wav, mp3, mpeg, aiff, aac, ogg, flac) and video types
    Gemini reads. Another type gets ``400 INVALID_ARGUMENT`` "Unsupported MIME type: x. ..."
    at the upload start. ``None``: any type.
``file_ttl`` / ``--file-ttl``
    Seconds an uploaded file lives (default 172800 = 48 h, as the service; its
    ``expirationTime`` says when). After that it is gone: get, download and use as a
    batch source answer as for a file that never existed (403), ``files.list`` leaves it
    out, and its bytes are deleted. ``None`` (CLI 0): forever.
``results_ttl`` / ``--results-ttl``
    Seconds a batch's results file (``files/batch-<id>``) lives after the batch ends
    (default 172800 = 48 h; the service deletes it "some time" after the end). Then its
    download answers 403 while the batch still names it. ``None`` (CLI 0): forever.
``file_quota_bytes`` / ``--file-quota-bytes``
    Bytes of uploaded files one key (the emulator's "project") may hold: default 20 GB
    (20,000,000,000 bytes), as the service. An upload that would go beyond answers ``429
    RESOURCE_EXHAUSTED`` at its start (declared size) or its last chunk, saying how much is
    used and how to free it. Results files do not count. ``None`` (CLI 0): no limit.
``host`` / ``--host``, ``port`` / ``--port``
    Defaults ``127.0.0.1`` and 0 (a free port); the environment cannot change them. The
    emulator binds only the host it is given. A non-loopback address is refused unless it is
    named explicitly: on the command line by ``--host`` (a warning is printed), in Python by
    also passing ``allow_remote=True`` (otherwise ``ValueError``).
``processes`` / ``--processes N``
    Worker processes that answer requests with the synthetic model. Answering is pure
    Python: in the emulator's own process it would hold the GIL, and every API call (a
    ``batches.get``, a results download) would wait for it while a big batch is answered.
    Default: one per CPU, at most 4. ``0`` answers in the emulator's threads
    (no extra processes). The workers start with the first batch of more than 1024
    requests (smaller batches are answered in-thread), are plain ``python -c`` subprocesses
    that import only this emulator (never your ``__main__``, so scripts need no
    ``if __name__ == "__main__":`` guard and notebooks work), run at a lower priority
    (niceness +5: the API and your client come first), and exit with the emulator.
    A ``responder`` is always called in-thread (it may be any closure). If the workers
    cannot start or die, answering falls back to threads. Results are byte-identical in
    every case.
``--quiet``
    CLI only: print nothing but the URL (otherwise one human-readable line goes to stderr).
``responder``
    ``responder(request: dict, model: str) -> dict`` replaces the synthetic model for
    generate-content batches. ``request`` is the GenerateContentRequest as sent (camelCase
    or snake_case keys), ``model`` the model id (``gemini-2.5-flash``); return a
    GenerateContentResponse dict (camelCase). Raising an exception makes that request a
    per-request error with the exception's message (google.rpc code 13 ``INTERNAL``, or
    the code of the exception's ``status`` / ``code`` attributes when it has them, e.g.
    :class:`RequestError`).

Synthetic model rules
---------------------
* The answer text is the text of the request's **last user content** (all its text parts
  joined), ``finishReason: STOP``, ``index: 0``, ``role: model``.
* With ``generationConfig.responseMimeType == "application/json"`` and a ``responseSchema``
  (OpenAPI style, types in any case) or ``responseJsonSchema`` (JSON Schema, incl.
  ``$defs``/``$ref``, ``anyOf``, ``enum``, ``required``, arrays, nested objects, as produced
  by pydantic's ``model_json_schema()``), the text is a JSON document valid against it,
  derived deterministically from the prompt (strings repeat the prompt, shortened to at most
  60 characters; ``pattern`` is not honoured). Without a schema the text is
  ``{"text": <prompt>}``. ``text/x.enum`` returns one of the enum values.
* Media parts of the last user content are named, in order, before its text, so a client
  can prove each row got its own file: ``inlineData`` as ``[image/png 1234 bytes
  sha256:<hex of the decoded bytes>]`` (standard or URL-safe base64), a ``fileData`` naming
  an uploaded file (its ``uri``, or ``files/<id>``) as ``[<mimeType> <size> bytes
  sha256:<hex of its bytes>]``, a registered one as ``[<mimeType> registered gs://...]``,
  any other URL as ``[<mimeType> url <uri>]`` (never fetched). E.g. ``[image/png 1234
  bytes sha256:9f2c...] What is this?``. With a schema, the JSON is derived from that same
  text (so strings start with the first tag). A ``fileData`` naming a file that does not
  exist, was deleted, has expired or belongs to another key when the batch is created
  (the emulator answers then) gets the service's error ``{"code": 7, "message": "You do
  not have permission to access the File <id> or it may not exist."}``; a bare ``gs://``
  URI gets code 3 (register it first). Each media part adds 258 prompt tokens.
* ``POST /{v}/files:register`` (``client.files.register_files(auth=..., uris=[...])``,
  any ``Authorization: Bearer`` token) makes each ``gs://`` URI a file with ``source:
  REGISTERED``, its MIME type guessed from the name and no bytes; it expires like uploads.
* Token counts: ``tokens(s) = ceil(len(s.encode("utf-8")) / 4)``. ``promptTokenCount`` is
  ``tokens`` of all request text (every content's text parts plus ``systemInstruction``),
  ``candidatesTokenCount`` is ``tokens`` of the answer, ``totalTokenCount`` their sum.
* ``modelVersion`` is the batch's model id; ``responseId`` is a hash of model, request
  position and prompt.
* A request whose text contains ``[[fail]]`` gets the per-request error
  ``{"code": 13, "message": "Simulated failure ([[fail]] in prompt)."}``.
* Embedding batches: each request gets a deterministic unit-length vector derived from a
  hash of its text (equal texts, equal vectors), of length ``outputDimensionality``
  (default 768), plus ``tokenCount``; ``taskType`` and ``title`` are accepted and ignored.
* Per-request errors are google.rpc.Status objects, ``{"code": <google.rpc code>,
  "message"}``, as in the service's results: no HTTP status, no status text, no
  ``details``. A ``responder``'s exception with ``code``/``status`` attributes is mapped to
  the google.rpc code of its status (``RequestError("x", 429, "RESOURCE_EXHAUSTED")``
  gives code 8). Inline ``metadata`` is echoed with string values (non-strings are
  JSON-encoded).

Batch lifecycle
---------------
``PENDING`` for ``pending_seconds``, then ``RUNNING`` while ``rate`` requests per second are
answered, then ``SUCCEEDED`` with inline results (``metadata.output.inlinedResponses`` and
the top-level ``response``) or a generated results file ``files/batch-<id>`` (``source:
GENERATED``, ``application/jsonl``, one ``{"key", "response"|"error"}`` line per request).
Cancelling a live batch makes it ``CANCELLED``; cancelling a finished one is ``400
FAILED_PRECONDITION``. A cancelled batch keeps the answers it had produced: its counts say
how many, and its output (inline, or the results file ``files/batch-<id>``, in both
``metadata.output`` and ``response``) holds exactly those rows; cancelled before any answer,
it has no output. ``FAILED`` and ``CANCELLED`` batches carry a top-level Operation
``error`` (``{"code", "message"}``: 13 for a failure, 1 for a cancel).
Timestamps of batches carry nanoseconds (``2026-01-06T11:09:11.943530657Z``); a finished
batch's ``updateTime`` is a few nanoseconds off its ``endTime``, as recorded. Files carry
microseconds in ``createTime``/``updateTime`` and nanoseconds in ``expirationTime``. Answers are computed by background threads and streamed to disk; visible progress
is a pure function of the stored timestamps and the configuration stored with each batch.
Big batches are answered in worker processes (see ``processes``), blocks of 1024 requests
at a time, each block checkpointed once written.
Malformed lines in a file batch: the first 1000 lines are checked at create time (``400
INVALID_ARGUMENT``); later malformed lines become per-request ``INVALID_ARGUMENT`` errors.

Supported wire protocol
-----------------------
Any version segment (``v1``, ``v1beta``, ...); camelCase and snake_case request bodies.

* Models: ``GET /{v}/models/{id}`` (the Model resource: ``name``, ``version``,
  ``displayName``, ``inputTokenLimit``, ``outputTokenLimit``,
  ``supportedGenerationMethods``, ...) and ``GET /{v}/models`` (``{"models": [...],
  "nextPageToken"}``, ``pageSize`` default 50); an unknown model is ``404 NOT_FOUND``.
* Files: resumable upload (``POST /upload/{v}/files`` + chunks on the returned
  ``X-Goog-Upload-URL``, which needs no key), ``GET /{v}/files/{id}``, ``GET /{v}/files``
  (``pageSize``/``pageToken``, newest first), ``DELETE /{v}/files/{id}``, and downloads at
  ``GET /{v}/files/{id}:download?alt=media`` and ``/download/{v}/files/{id}:download``.
  Unknown files are ``403 PERMISSION_DENIED``; a requested name that exists is ``409``;
  ``files.get``/``files.delete`` of an id over 40 characters is ``400 INVALID_ARGUMENT``.
* Batches: ``POST /{v}/models/{m}:batchGenerateContent`` and ``:asyncBatchEmbedContent``
  (also ``tunedModels/{m}``; inline ``inputConfig.requests.requests[]`` or
  ``inputConfig.fileName``), ``GET /{v}/batches/{id}``, ``GET /{v}/batches`` (list key
  ``operations``, newest first, never an empty page with a ``nextPageToken``),
  ``POST /{v}/batches/{id}:cancel``, ``DELETE /{v}/batches/{id}``. Unknown batches and routes
  are ``404 NOT_FOUND``.
* Every success is exactly HTTP 200; every error is ``{"error": {"code", "message",
  "status"}}`` (plus ``details`` for a wrong key) with ``Content-Type: application/json``.
  A missing key is ``403 PERMISSION_DENIED``, a wrong one ``400 INVALID_ARGUMENT``.

Recorded behaviour
------------------
The defaults follow bodies of the real service recorded by other projects (VCR cassettes,
notebook outputs, SDK replay files, error bodies in issue threads), option by option:
``progress="end"`` and ``zero_counts=False`` (a RUNNING batch's ``batchStats`` kept
``pendingRequestCount == requestCount`` for minutes; zero counts are absent),
``batch_id_length=36`` (ids like ``batches/31u18uq6dr4ods3957z38i1mbfa581k01xcq``),
``api_key`` errors (403 without a key, 400 ``API_KEY_INVALID`` with a wrong one),
``scope_by_key=True``, ``models`` (404 for an unknown model), ``file_ttl`` (48 h),
``file_quota_bytes`` (20 GB), ``mime_types``. Per-request errors are google.rpc.Status,
cancelled batches keep their answers, timestamps carry nanoseconds. One default departs
from the recordings on purpose: ``shuffle=True`` (see ``shuffle``).

Limitations
-----------
* Only the Gemini Developer API surface above (no Vertex AI, no ``generateContent``).
* A ``base_url`` with a path prefix is not supported; uploads must use the resumable
  protocol (the SDK always does).
* The synthetic model ignores tools, images and safety settings; JSON-schema ``pattern``
  and ``multipleOf`` are not honoured.
* ``--api-key`` on a command line is visible to other local users (e.g. in ``ps``).
* Throughput of the built-in model is roughly 70k-100k requests per second per worker
  process (blocks of one batch are spread over all of them); memory stays flat because
  input and output are streamed in blocks of 1024.

Test helpers and admin routes
-----------------------------
Python: ``emu.url``, ``emu.port`` (the bound port once started), ``emu.data_dir`` (the
directory in use, temporary or not), ``emu.config`` and ``emu.configure(...)`` (see
Configuration), ``emu.calls`` (``(method, path)`` of every API call),
``emu.reset_calls()``, ``emu.batches()``, ``emu.files()``,
``emu.set_state(name, "FAILED" | "EXPIRED" | "CANCELLED", message=None, code=13)``, ``emu.workers()`` (where
blocks were answered: ``{"processes": [pid, ...], "blocksAnsweredInProcesses": n,
"blocksAnsweredInThreads": m}``), ``emu.answering_batches()`` (names of the batches a
thread of this emulator is answering right now: empty once a cancelled batch has been let
go).

HTTP (never need a key, never recorded in ``calls``):

* ``GET /_emulator/calls`` -> ``{"calls": [["GET", "/v1/batches/x"], ...]}``
* ``POST /_emulator/reset-calls`` -> ``{}``
* ``GET /_emulator/batches`` -> ``{"batches": [...]}`` (same dicts as ``emu.batches()``)
* ``GET /_emulator/files`` -> ``{"files": [...]}``
* ``GET /_emulator/workers`` -> same dict as ``emu.workers()``
* ``POST /_emulator/batches/{id}:setState`` with ``{"state": "EXPIRED"}`` (or
  ``{"state": "FAILED", "message": "...", "code": 13}`` for a given operation error)
* ``GET /_emulator/health`` -> ``{"ok": true}``
"""

from __future__ import annotations

from typing import Any

from ._config import EmulatorConfig
from ._emulator import Emulator
from ._model import RequestError

__all__ = ["Emulator", "EmulatorConfig", "RequestError", "main"]


def __getattr__(name: str) -> Any:
    # ``main`` lives in ``__main__.py``; importing it lazily keeps ``python -m`` free of
    # runpy's "found in sys.modules" warning.
    if name == "main":
        from .__main__ import main

        return main
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
