"""The emulator's options: one :class:`EmulatorConfig`, validated once where it is built.

Every option of the emulator is a field here (the manual in ``emulator/__init__.py``
describes each one). The Python constructor ``Emulator(config=None, **options)``, the
command line (``python -m gemini_batch_magic.emulator``) and
:meth:`Emulator.configure <._emulator.Emulator.configure>` all build one, so a bad value
gets the same error wherever it comes from.

Which options a running emulator can change is part of the configuration too:
:data:`LIVE_OPTIONS` take effect at once (the fault rates on the next API call; the
batch options on the next batch created), :data:`FIXED_OPTIONS` say why they cannot.
"""

from __future__ import annotations

import dataclasses
import difflib
import hmac
import ipaddress
import math
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ._model import Responder
from ._processes import default_processes

#: Options a running emulator takes at once (:meth:`Emulator.configure`). The batch
#: options are stored with each batch at creation, so batches created earlier keep theirs.
LIVE_OPTIONS = frozenset(
    {
        # stored with each new batch
        "pending_seconds",
        "rate",
        "max_running_seconds",
        "expire_after",
        "fail_rate",
        "seed",
        "shuffle",
        "progress",
        "results_ttl",
        "fail_batch_rate",
        "fail_batch_message",
        "batch_id_length",
        # read by every API call
        "http_fault_rate",
        "drop_after_create_rate",
        "api_key",
        "scope_by_key",
        "zero_counts",
        "models",
        "mime_types",
        "file_ttl",
        "file_quota_bytes",
    }
)

#: The values of ``progress``: ``"end"`` reports counts only when a batch ends (as the
#: service was recorded doing), ``"live"`` advances them while it runs.
PROGRESS_MODES = ("end", "live")

#: Models the emulator knows by default (``models``): current Gemini text models and the
#: embedding model, as ``models.list`` of the service shows them (ids without ``models/``).
DEFAULT_MODELS: tuple[str, ...] = (
    "gemini-2.5-pro",
    "gemini-2.5-flash",
    "gemini-2.5-flash-lite",
    "gemini-2.5-flash-preview-09-2025",
    "gemini-2.5-flash-lite-preview-09-2025",
    "gemini-2.0-flash",
    "gemini-2.0-flash-001",
    "gemini-2.0-flash-lite",
    "gemini-2.0-flash-lite-001",
    "gemini-3-pro-preview",
    "gemini-3-flash-preview",
    "gemini-3.5-flash",
    "gemini-flash-latest",
    "gemini-flash-lite-latest",
    "gemini-pro-latest",
    "gemini-embedding-001",
    "text-embedding-004",
)

#: MIME types an upload may declare by default (``mime_types``): JSON Lines and JSON in
#: every spelling the SDK's users send (``"jsonl"`` bare, as Google's own examples do and
#: the service was recorded accepting), every ``text/*`` type, and the document, image,
#: audio and video types Gemini reads. A trailing ``/*`` matches a whole family.
DEFAULT_MIME_TYPES: tuple[str, ...] = (
    "jsonl",
    "json",
    "text",
    "application/jsonl",
    "application/json",
    "application/x-ndjson",
    "application/pdf",
    "application/x-javascript",
    "application/x-python",
    "application/rtf",
    "text/*",
    "image/png",
    "image/jpeg",
    "image/webp",
    "image/heic",
    "image/heif",
    "audio/wav",
    "audio/mp3",
    "audio/mpeg",
    "audio/aiff",
    "audio/aac",
    "audio/ogg",
    "audio/flac",
    "video/mp4",
    "video/mpeg",
    "video/mov",
    "video/quicktime",
    "video/avi",
    "video/x-flv",
    "video/mpg",
    "video/webm",
    "video/wmv",
    "video/3gpp",
)

#: 48 hours: how long the service keeps an uploaded file (``file_ttl``) and, by default
#: here, a batch's results file after the batch ends (``results_ttl``).
TWO_DAYS = 48 * 3600.0
#: 20 GB (decimal): the file storage of one project (``file_quota_bytes``).
DEFAULT_FILE_QUOTA_BYTES = 20 * 1000**3
#: The message of a batch made to fail by ``fail_batch_rate``.
DEFAULT_FAIL_BATCH_MESSAGE = "The batch failed (simulated by the emulator: fail_batch_rate)."

#: Options fixed once the emulator has started, and why.
FIXED_OPTIONS: Mapping[str, str] = MappingProxyType(
    {
        "host": "the socket is already bound to it",
        "port": "the socket is already bound to it",
        "allow_remote": "it only decides which host may be bound, and the socket is already bound",
        "data_dir": "the store is open on it",
        "processes": "the pool of worker processes is sized when the emulator starts",
        "responder": "batches already claimed are answered by the responder they started with, "
        "and their results must be a pure function of it",
    }
)


def is_loopback_host(host: str) -> bool:
    """True when every address ``host`` resolves to is a loopback address."""
    candidate = host.strip("[]")
    try:
        return ipaddress.ip_address(candidate).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(candidate, None)
    except socket.gaierror:
        return False
    addrs = {info[4][0] for info in infos}
    return bool(addrs) and all(
        ipaddress.ip_address(str(a).split("%")[0]).is_loopback for a in addrs
    )


def _check_fraction(name: str, value: float) -> float:
    value = float(value)
    if not (0.0 <= value <= 1.0) or math.isnan(value):
        raise ValueError(f"{name} must be between 0 and 1, got {value!r}.")
    return value


def _check_ttl(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    if not value > 0 or math.isinf(value):
        raise ValueError(
            f"{name} must be a finite number of seconds > 0 (None = never), got {value!r}."
        )
    return value


def _check_names(name: str, value: Any, example: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ValueError(
            f"{name} must be a list of non-empty strings (e.g. {example}) or None, "
            f"got {value!r}."
        )
    return tuple(v.strip() for v in value)


def _check_non_negative(name: str, value: float) -> float:
    value = float(value)
    if value < 0 or math.isnan(value) or math.isinf(value):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}.")
    return value


@dataclass(frozen=True)
class EmulatorConfig:
    """Every option of an emulator, validated when the object is built (``ValueError``).

    Frozen: change options with :meth:`replace` (a new, validated config) or, on a running
    emulator, with :meth:`Emulator.configure <._emulator.Emulator.configure>`. Numbers are
    stored as ``float``, ``data_dir`` as a :class:`~pathlib.Path`, ``api_key`` stripped
    (and never shown in the repr), and ``processes=None`` as the default it stands for.
    """

    #: Seconds a new batch stays ``PENDING`` before it runs.
    pending_seconds: float = 0.0
    #: Requests answered per second while ``RUNNING`` (0 = all at once).
    rate: float = 0.0
    #: Longest a batch stays ``RUNNING`` under ``rate`` (None = no limit): a batch too
    #: large to be answered at ``rate`` within this many seconds is answered faster, so a
    #: paced emulator (the embedded one: 20 per second) still ends a 2,000,000-request
    #: batch in seconds, not days.
    max_running_seconds: float | None = None
    #: Fraction of requests answered with a per-request error.
    fail_rate: float = 0.0
    #: Seed for every random choice (faults, failures, result order).
    seed: int = 0
    #: Fraction of API calls answered 429/503 before doing anything.
    http_fault_rate: float = 0.0
    #: Fraction of batch creates persisted but answered by a dropped connection.
    drop_after_create_rate: float = 0.0
    #: Where metadata and bytes live; ``None`` = a private temporary directory.
    data_dir: Path | None = None
    #: Address to listen on; a non-loopback one needs ``allow_remote=True``.
    host: str = "127.0.0.1"
    #: Port to listen on (0 = a free port).
    port: int = 0
    #: ``responder(request, model) -> GenerateContentResponse dict`` replacing the echo model.
    responder: Responder | None = None
    #: Return results in a deterministic shuffled order (``False`` = submission order).
    shuffle: bool = True
    #: When set, only this key (or, given a list, these keys) is accepted; other keys get
    #: ``400 API_KEY_INVALID``. Never printed, logged or shown in the repr.
    api_key: str | tuple[str, ...] | None = field(default=None, repr=False)
    #: Seconds after creation at which an unfinished batch becomes ``EXPIRED`` (None = never).
    expire_after: float | None = None
    #: Allow a non-loopback ``host`` (it exposes the emulator to the network).
    allow_remote: bool = False
    #: Worker processes answering with the built-in model (None = one per CPU, at most 4;
    #: 0 = answer in the emulator's threads). Always an ``int`` once the config is built.
    processes: int | None = None
    #: ``"end"``: a running batch reports no progress (``pendingRequestCount ==
    #: requestCount``, ``updateTime`` still) until it ends, as recorded; ``"live"``: counts
    #: advance while it runs.
    progress: str = "end"
    #: Send every ``batchStats`` count, zeros included (``False``: zero counts are left
    #: out, as the service does).
    zero_counts: bool = False
    #: A batch, an uploaded file and a batch's results are visible only to the API key
    #: that created them (another key gets 404 / 403). ``False``: every key sees everything.
    scope_by_key: bool = True
    #: Characters of a new batch id (36, as the service's; its results file is then
    #: ``files/batch-<id>``, 42 characters, which ``files.get``/``files.delete`` refuse).
    batch_id_length: int = 36
    #: Model ids ``models.get``/``models.list`` know and batches may use (without
    #: ``models/``; ``tunedModels/<id>`` entries allowed). ``None``: every model exists.
    models: tuple[str, ...] | None = DEFAULT_MODELS
    #: MIME types an upload may declare (``type/*`` matches a family; case and parameters
    #: ignored). ``None``: any type is accepted.
    mime_types: tuple[str, ...] | None = DEFAULT_MIME_TYPES
    #: Seconds an uploaded file lives (then it is gone). ``None``: forever.
    file_ttl: float | None = TWO_DAYS
    #: Seconds a batch's results file lives after the batch ends. ``None``: forever.
    results_ttl: float | None = TWO_DAYS
    #: Bytes of uploaded files one API key may hold; beyond, uploads get 429. ``None``:
    #: no limit.
    file_quota_bytes: int | None = DEFAULT_FILE_QUOTA_BYTES
    #: Fraction of new batches that end ``FAILED`` (with ``fail_batch_message`` as the
    #: operation ``error``) instead of running; 1.0 fails every batch created from now on.
    fail_batch_rate: float = 0.0
    #: The operation error message of a batch failed by ``fail_batch_rate``.
    fail_batch_message: str = DEFAULT_FAIL_BATCH_MESSAGE

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        put("pending_seconds", _check_non_negative("pending_seconds", self.pending_seconds))
        put("rate", _check_non_negative("rate", self.rate))
        if self.max_running_seconds is not None:
            put("max_running_seconds",
                _check_non_negative("max_running_seconds", self.max_running_seconds))
        put("fail_rate", _check_fraction("fail_rate", self.fail_rate))
        put("http_fault_rate", _check_fraction("http_fault_rate", self.http_fault_rate))
        put(
            "drop_after_create_rate",
            _check_fraction("drop_after_create_rate", self.drop_after_create_rate),
        )
        if self.expire_after is not None:
            put("expire_after", _check_non_negative("expire_after", self.expire_after))
        seed = self.seed
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an integer, got {seed!r}.")
        port, host = self.port, self.host
        if not isinstance(port, int) or not (0 <= port <= 65535):
            raise ValueError(f"port must be between 0 and 65535, got {port!r}.")
        if not host:
            raise ValueError("host must not be empty.")
        if not self.allow_remote and not is_loopback_host(host):
            raise ValueError(
                f"Refusing to listen on non-loopback host {host!r}: the emulator has no real "
                "authentication. Pass allow_remote=True (on the CLI, naming --host does) if you "
                "really want to expose it."
            )
        processes = self.processes
        if processes is None:
            processes = default_processes()
        if isinstance(processes, bool) or not isinstance(processes, int) or processes < 0:
            raise ValueError(
                f"processes must be an integer >= 0 (0 = answer in-thread), got {processes!r}."
            )
        put("processes", processes)
        if self.responder is not None and not callable(self.responder):
            raise ValueError("responder must be callable: responder(request, model) -> dict.")
        key = self.api_key
        if key is not None:
            keys = [key] if isinstance(key, str) else key
            if not isinstance(keys, (list, tuple, set, frozenset)) or not keys:
                raise ValueError(
                    f"api_key must be a string, got {type(key).__name__} (or give a non-empty "
                    "list of strings to accept several keys)."
                )
            for k in keys:
                if not isinstance(k, str):
                    raise ValueError(f"api_key must be a string, got {type(k).__name__}.")
                if not k.strip():
                    raise ValueError("api_key must not be blank.")
            put("api_key", key.strip() if isinstance(key, str) else tuple(k.strip() for k in keys))
        if self.progress not in PROGRESS_MODES:
            raise ValueError(
                f"progress must be one of {', '.join(map(repr, PROGRESS_MODES))}, got "
                f"{self.progress!r}: 'end' reports counts when a batch ends (as the service "
                "does), 'live' advances them while it runs."
            )
        length = self.batch_id_length
        if isinstance(length, bool) or not isinstance(length, int) or not 8 <= length <= 63:
            raise ValueError(
                f"batch_id_length must be an integer from 8 to 63, got {length!r} (36 is the "
                "service's; 28 or less keeps files/batch-<id> within the 40-character limit "
                "of files.get)."
            )
        put("models", _check_names("models", self.models, '["gemini-2.5-flash"]'))
        if self.models is not None:
            put("models", tuple(m.removeprefix("models/") for m in self.models))
        put("mime_types", _check_names("mime_types", self.mime_types, '["jsonl", "image/*"]'))
        if self.mime_types is not None:
            put("mime_types", tuple(m.lower() for m in self.mime_types))
        put("file_ttl", _check_ttl("file_ttl", self.file_ttl))
        put("results_ttl", _check_ttl("results_ttl", self.results_ttl))
        quota = self.file_quota_bytes
        if quota is not None:
            if isinstance(quota, bool) or not isinstance(quota, int) or quota < 0:
                raise ValueError(
                    f"file_quota_bytes must be an integer >= 0 (None = no limit), got {quota!r}."
                )
        put("fail_batch_rate", _check_fraction("fail_batch_rate", self.fail_batch_rate))
        if not isinstance(self.fail_batch_message, str) or not self.fail_batch_message.strip():
            raise ValueError(
                f"fail_batch_message must be a non-empty string, got {self.fail_batch_message!r}."
            )
        put("zero_counts", bool(self.zero_counts))
        put("scope_by_key", bool(self.scope_by_key))
        put("shuffle", bool(self.shuffle))
        put("allow_remote", bool(self.allow_remote))
        if self.data_dir is not None:
            put("data_dir", Path(self.data_dir))

    def replace(self, **changes: Any) -> EmulatorConfig:
        """A new config with ``changes`` applied, validated like the constructor's.

        An unknown option raises ``TypeError`` naming the closest valid ones.
        """
        check_option_names(changes, "EmulatorConfig.replace()")
        return dataclasses.replace(self, **changes)

    def batch_options(self, request_count: int) -> dict[str, Any]:
        """The options stored with each new batch of ``request_count`` requests, as
        columns of its row.

        A batch's visible state and its results are a pure function of these and of its
        timestamps, so changing them later (or restarting with other options) never
        changes a batch that already exists.
        """
        return {
            "pending_seconds": self.pending_seconds,
            "rate": self.paced_rate(request_count),
            "expire_after": self.expire_after,
            "fail_rate": self.fail_rate,
            "seed": self.seed,
            "shuffle": 1 if self.shuffle else 0,
            "progress": self.progress,
            "results_ttl": self.results_ttl,
        }

    def paced_rate(self, request_count: int) -> float:
        """The rate a batch of ``request_count`` requests is answered at: ``rate``, raised
        where needed to end within ``max_running_seconds``."""
        cap = self.max_running_seconds
        if self.rate <= 0 or cap is None:
            return self.rate
        if cap == 0:
            return 0.0  # all at once
        return max(self.rate, request_count / cap)

    def accepts_key(self, key: str) -> bool:
        """Whether ``key`` is valid: any non-empty key without ``api_key``, else one of them."""
        if self.api_key is None:
            return True
        keys = (self.api_key,) if isinstance(self.api_key, str) else self.api_key
        ok = False
        for k in keys:  # compare with every key: the time taken says nothing
            ok |= hmac.compare_digest(key.encode(), k.encode())
        return ok

    def knows_model(self, name: str) -> bool:
        """Whether ``name`` (``models/<id>`` or ``tunedModels/<id>``) exists."""
        if self.models is None:
            return True
        return name.removeprefix("models/") in self.models

    def accepts_mime_type(self, mime: str) -> bool:
        """Whether an upload may declare ``mime`` (case and ``;`` parameters ignored)."""
        if self.mime_types is None:
            return True
        m = mime.split(";", 1)[0].strip().lower()
        return any(
            m == t or (t.endswith("/*") and m.startswith(t[:-1])) for t in self.mime_types
        )


#: Every option's name, in declaration order.
OPTION_NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(EmulatorConfig))


def check_option_names(options: dict[str, Any], where: str) -> None:
    """Raises ``TypeError`` for a name that is not an option, suggesting the closest ones."""
    unknown = [name for name in options if name not in OPTION_NAMES]
    if not unknown:
        return
    name = unknown[0]
    close = difflib.get_close_matches(name, OPTION_NAMES, n=3)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise TypeError(
        f"{where} got an unknown emulator option {name!r}.{hint} "
        f"Valid options: {', '.join(sorted(OPTION_NAMES))}."
    )
