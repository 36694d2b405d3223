"""The one seam to the service: every ``google-genai`` call, its retries and its errors.

Which backend (``settings.backend``, from ``GEMBATCH_BACKEND``):

* ``auto`` (default): ``GOOGLE_GEMINI_BASE_URL`` set -> that endpoint (an external emulator);
  else an API key in ``GEMINI_API_KEY`` / ``GOOGLE_API_KEY`` -> the real Gemini API;
  else -> the embedded local emulator, with a one-time notice that answers are synthetic.
* ``local``: always the embedded emulator (its state persists under ``$GEMBATCH_HOME/emulator``,
  so runs survive kernel restarts).
* ``gemini``: always the real service; a missing key is an error.
* ``vertex``: Vertex AI batch prediction (``vertexai=True``, ``settings.project`` /
  ``location``, Application Default Credentials; ``GOOGLE_VERTEX_BASE_URL`` for an
  emulator). Requests are staged in Cloud Storage and predictions read back from it
  (:mod:`._vertex`); jobs carry the label ``gembatch_run=<run id>``.

The client is built once (:func:`get_client`) and rebuilt when ``home`` or ``backend``
changes. The engine calls the service only through the functions here: :func:`get_batch`,
:func:`list_batches`, :func:`find_batch`, :func:`create_batch`, :func:`cancel_batch`,
:func:`upload_file`, :func:`download_file`, and for media parts :func:`upload_media`,
:func:`get_file`, :func:`register_files`. Calls the SDK does not retry itself go through
:func:`with_retries`; every refusal becomes a :class:`BackendError` whose ``code``,
``status`` and ``batch_name`` fields say what happened (the SDK error stays ``__cause__``).

The SDK does not expose ``batchStats`` (request counts) of a batch. We add it without
re-implementing any call: an httpx response hook on the SDK's own client records the
``batchStats`` of every batch resource the SDK receives, and :func:`get_batch` returns them
with the job as a :class:`BatchStatus`. The API key is passed to the SDK and never stored,
logged or shown; :func:`backend_info` tells only where it came from.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from . import _vertex
from ._config import settings
from ._secrets import KEY_VARS, api_key, fingerprint
from ._state import state
from .exceptions import BackendError, ConfigError

__all__ = [
    "BackendInfo",
    "BatchStatus",
    "backend_id",
    "backend_info",
    "batch_stats",
    "cancel_batch",
    "check_key",
    "check_model",
    "create_batch",
    "delete_file",
    "download_file",
    "find_batch",
    "find_run_batches",
    "get_batch",
    "get_client",
    "get_file",
    "is_retryable",
    "is_vertex",
    "job_state",
    "key_fingerprint",
    "list_batches",
    "register_files",
    "reset",
    "upload_file",
    "upload_media",
    "with_retries",
]

_log = logging.getLogger(__name__)

_PLACEHOLDER_KEY = "local-emulator"  # sent to emulators, which accept any key
#: HTTP codes worth another try: timeouts, rate limits, server errors.
_RETRYABLE_CODES = {408, 429, 500, 502, 503, 504}
#: How many batches' counts are remembered (oldest forgotten first).
_MAX_STATS = 10_000


class _Seam:
    """The cached client and what was seen on the wire (one per process)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.client: Any = None
        self.info: BackendInfo | None = None
        self.emulator: Any = None
        self.notice_shown = False
        #: batch name -> its latest batchStats (the newest _MAX_STATS batches)
        self.stats: dict[str, dict[str, int]] = {}
        #: batch name -> the operation ``error`` of a failed batch (the SDK drops it)
        self.errors: dict[str, str] = {}
        #: models the service confirmed (``models.get``), per client
        self.models: set[str] = set()


_seam = _Seam()


@dataclass(frozen=True)
class BackendInfo:
    """Where requests go. Never holds the key itself."""

    kind: str  #: ``gemini``, ``local`` (embedded emulator), ``external`` (base URL), ``vertex``
    base_url: str | None  #: None for the real service's default endpoint
    #: where the key came from: an environment variable, or ``Colab secret GEMINI_API_KEY``
    key_source: str | None
    synthetic: bool  #: True when answers come from an emulator, not a model

    def describe(self) -> str:
        """One line for humans, e.g. for ``%gembatch backend``."""
        if self.kind == "gemini":
            where = self.base_url or "the Gemini API"
            return f"Gemini API ({where}); API key from {_origin(self.key_source)}"
        if self.kind == "local":
            return f"embedded local emulator at {self.base_url} (synthetic answers, no API key)"
        if self.kind == "vertex":
            t = _vertex.target()
            where = f"emulator at {self.base_url}" if self.base_url else "Vertex AI"
            return (f"Vertex AI batch prediction ({where}), project {t.project}, location "
                    f"{t.location}, staging {settings.staging or '(not set)'}; "
                    "Application Default Credentials")
        src = f"; API key from {_origin(self.key_source)}" if self.key_source else ""
        return f"external endpoint {self.base_url} (GOOGLE_GEMINI_BASE_URL){src}"


@dataclass(frozen=True)
class BatchStatus:
    """What the service said about one batch job."""

    name: str
    state: str  #: e.g. ``PENDING``, ``RUNNING``, ``SUCCEEDED`` (prefixes removed)
    #: ``total``/``succeeded``/``failed``/``pending`` from ``batchStats``; None if not sent
    counts: dict[str, int] | None
    job: Any  #: the SDK's ``BatchJob``
    #: the service's own reason for a failed batch (``error.message``), None otherwise
    error: str | None = None


# --------------------------------------------------------------------------- the client
def _resolve() -> tuple[str, str | None, str | None, str | None]:
    """(kind, base_url, key, key_source) from settings and the environment."""
    key, source = api_key()
    base = os.environ.get("GOOGLE_GEMINI_BASE_URL", "").strip() or None
    mode = settings.backend
    if mode == "local":
        return "local", None, None, None
    if mode == "vertex":
        return "vertex", _vertex.target().base_url, None, None
    if mode == "gemini":
        if not key:
            raise ConfigError(
                "backend 'gemini' needs an API key: set GEMINI_API_KEY (or GOOGLE_API_KEY), "
                "or use backend 'local' for the offline emulator"
            )
        return "gemini", base, key, source
    if base:
        return "external", base, key, source
    if key:
        return "gemini", None, key, source
    return "local", None, None, None


def _record_stats(body: bytes) -> None:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return
    if not isinstance(doc, dict):
        return
    ops = doc.get("operations")
    for op in ops if isinstance(ops, list) else [doc]:
        if not isinstance(op, dict):
            continue
        meta = op.get("metadata") or {}
        name = op.get("name") or meta.get("name")
        if name and isinstance(op.get("error"), dict):
            err = op["error"]
            code = f"{err.get('code')} " if err.get("code") is not None else ""
            _seam.errors[str(name)] = f"{code}{err.get('message') or 'no message'}".strip()
            while len(_seam.errors) > _MAX_STATS:
                del _seam.errors[next(iter(_seam.errors))]
        raw = meta.get("batchStats") if isinstance(meta, dict) else None
        if not name or not isinstance(raw, dict):
            continue
        stats = {}
        for wire, ours in (
            ("requestCount", "total"),
            ("successfulRequestCount", "succeeded"),
            ("failedRequestCount", "failed"),
            ("pendingRequestCount", "pending"),
        ):
            try:  # the service leaves out zero counts
                stats[ours] = int(raw.get(wire) or 0)
            except (TypeError, ValueError):
                stats[ours] = 0
        _seam.stats.pop(str(name), None)  # newest last
        _seam.stats[str(name)] = stats
        while len(_seam.stats) > _MAX_STATS:
            del _seam.stats[next(iter(_seam.stats))]


def _response_hook(response: Any) -> None:
    """httpx response hook: remember ``batchStats`` from batch resources the SDK receives."""
    request = response.request
    path = request.url.path
    if response.status_code != 200 or ("/batches" not in path and ":batch" not in path):
        return
    response.read()
    _record_stats(response.content)


def batch_stats(name: str) -> dict[str, int] | None:
    """The latest ``batchStats`` seen for batch ``name``: total/succeeded/failed/pending."""
    return _seam.stats.get(name)


def _http_options(base_url: str | None) -> Any:
    from google.genai import types

    retry = types.HttpRetryOptions(
        attempts=settings.retry_attempts,
        initial_delay=settings.retry_initial_delay,
        max_delay=30.0,
    )
    return types.HttpOptions(
        base_url=base_url,
        retry_options=retry,
        client_args={"event_hooks": {"response": [_response_hook]}},
    )


def _start_embedded() -> str:
    if _seam.emulator is None:
        from .emulator import Emulator

        data_dir = settings.home / "emulator"
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        _seam.emulator = Emulator(
            data_dir=data_dir,
            pending_seconds=settings.emulator_pending_seconds,
            rate=settings.emulator_rate,
            max_running_seconds=settings.emulator_max_running_seconds,
        )
        _seam.emulator.start()
    if not _seam.notice_shown:
        _seam.notice_shown = True
        from .widgets import notice  # the one door to the views: a notice, not an error

        notice(__name__,
               "no GEMINI_API_KEY set, so batches run on the embedded local emulator "
               f"({_seam.emulator.url}). Its answers are SYNTHETIC (each prompt echoed back), "
               "and nothing is billed. Set GEMINI_API_KEY to use Gemini.")
    return str(_seam.emulator.url)


def get_client() -> Any:
    """The ``google.genai.Client`` for the current settings, built once and cached."""
    with _seam.lock:
        if _seam.client is not None:
            return _seam.client
        from google import genai

        kind, base, key, source = _resolve()
        if kind == "vertex":
            t = _vertex.target()
            client = genai.Client(vertexai=True, project=t.project, location=t.location,
                                  credentials=_vertex.credentials(),
                                  http_options=_http_options(base))
        else:
            if kind == "local":
                base = _start_embedded()
            client = genai.Client(api_key=key or _PLACEHOLDER_KEY,
                                  http_options=_http_options(base))
        _seam.client = client
        _seam.info = BackendInfo(kind=kind, base_url=base, key_source=source,
                                 synthetic=kind not in ("gemini", "vertex") or (
                                     kind == "vertex" and _vertex.emulated()))
        return _seam.client


def is_vertex() -> bool:
    """Whether the current backend is Vertex AI (no client is built to tell)."""
    return settings.backend == "vertex"


def backend_info() -> BackendInfo:
    """Which backend :func:`get_client` uses (building the client if needed)."""
    get_client()
    assert _seam.info is not None
    return _seam.info


def backend_id() -> str:
    """A stable label of the backend, stored with each run: ``gemini``, ``local`` or the URL."""
    info = backend_info()
    if info.kind == "vertex":
        t = _vertex.target()
        return f"vertex:{t.project}/{t.location}"
    if info.kind == "external":
        return str(info.base_url)
    if info.kind == "gemini" and info.base_url:
        return str(info.base_url)
    return info.kind


def reset() -> None:
    """Forget the cached client and stop the embedded emulator (settings or env changed)."""
    with _seam.lock:
        _seam.client = None
        _seam.info = None
        _seam.models.clear()
        if _seam.emulator is not None:
            try:
                _seam.emulator.close()
            finally:
                _seam.emulator = None
        _seam.stats.clear()
        _seam.errors.clear()


# the client depends on where the registry lives (the embedded emulator's data) and on the
# backend chosen: rebuild it when either changes, and whenever the engine's state is reset
settings.observe(lambda change: reset(), names=["home", "backend", "project", "location"])


def _fresh_process() -> None:
    reset()
    _seam.notice_shown = False  # a fresh process tells its user once again


state.on_reset(_fresh_process)
# stop the embedded emulator while its threads still run (not from a finaliser at exit)
atexit.register(reset)


# --------------------------------------------------------------------------- errors, retries
def is_retryable(exc: BaseException) -> bool:
    """True for a transient failure: 408/429/5xx, or the connection broke or timed out."""
    if isinstance(exc, BackendError):
        return exc.retryable
    from google.genai import errors

    if isinstance(exc, errors.APIError):
        return int(getattr(exc, "code", 0) or 0) in _RETRYABLE_CODES
    name = type(exc).__name__
    return isinstance(exc, (OSError, ConnectionError, TimeoutError)) or any(
        n in name for n in ("Timeout", "Connect", "Network", "Protocol", "Transport", "ReadError")
    )


def backend_error(action: str, exc: BaseException, *, batch_name: str | None = None
                  ) -> BackendError:
    """A :class:`BackendError` for a failed ``action``, its fields read from the SDK error."""
    if isinstance(exc, BackendError):
        return exc
    msg = getattr(exc, "message", None) or str(exc)
    code = getattr(exc, "code", None)
    status = getattr(exc, "status", None)
    reason = _error_reason(getattr(exc, "details", None))
    head = f"{code} " if code else ""
    text = f"{action} failed: {head}{msg}"
    if reason == "API_KEY_INVALID":
        text = (f"the API key was rejected: API_KEY_INVALID: {msg} ({action}; the key comes "
                f"from {_key_origin()}). Check it, or create a new one, and set it again")
    elif code in (401, 403) and is_vertex():
        t = _vertex.target()
        text = (f"Vertex AI refused {action}: {head}{status or ''} {msg} The Application "
                f"Default Credentials in use lack permission in project {t.project} "
                f"({t.location}), or the project is wrong: grant them roles/aiplatform.user "
                f"(gcloud projects add-iam-policy-binding {t.project} --member=user:YOU "
                "--role=roles/aiplatform.user), check gbm.settings.project and location, or "
                "run 'gcloud auth application-default login' again")
    elif code == 403 and status == "PERMISSION_DENIED" and not api_key()[0]:
        text = (f"the service refused the call because no API key was sent ({action}): set "
                "GEMINI_API_KEY (or GOOGLE_API_KEY), or use backend 'local' for the emulator")
    elif code == 429 and action.startswith("uploading"):
        text = (f"{action} failed: 429 RESOURCE_EXHAUSTED: {msg}. If the project's File API "
                "storage (20 GB) is full: request files of finished runs are deleted once their "
                "batch ends (unless keep_inputs=True); list the others with "
                "client.files.list() and delete those you no longer need with "
                "client.files.delete(name=...), or wait: uploads expire after 48 hours")
    err = BackendError(
        text,
        code=int(code) if isinstance(code, int) else None,
        status=str(status) if status else None,
        batch_name=batch_name,
    )
    err.reason = reason
    err.retryable = is_retryable(exc) and reason is None
    return err


def _error_reason(details: Any) -> str | None:
    """The ``reason`` of a ``google.rpc.ErrorInfo`` in an error body, if it has one."""
    body = details.get("error", details) if isinstance(details, dict) else None
    for item in (body or {}).get("details") or []:
        if isinstance(item, dict) and item.get("reason"):
            return str(item["reason"])
    return None


def _key_origin() -> str:
    return _origin(api_key()[1])


def _origin(source: str | None) -> str:
    """``$GEMINI_API_KEY`` for a variable, the Colab secret as it is named."""
    return f"${source}" if source in KEY_VARS else (source or "nowhere")


def key_fingerprint() -> str | None:
    """The fingerprint of the key requests go with (None for an emulator without a key, and
    for Vertex AI, which takes no key)."""
    if is_vertex():
        return None
    return fingerprint(api_key()[0])


def check_key(made_with: str | None, run_id: str) -> None:
    """Refuse to follow a run made with another API key: the service shows a batch only to
    the key that created it, so every call would answer 404."""
    now = key_fingerprint()
    if made_with and now != made_with:
        raise BackendError(
            f"run {run_id} was created with another API key (fingerprint {made_with}; this "
            f"kernel's key: {now or 'none'}). The service shows a batch only to the key that "
            "created it: set that key (GEMINI_API_KEY) and try again",
            run_id=run_id, status="PERMISSION_DENIED",
        )


def with_retries(action: str, fn: Callable[[], Any], attempts: int | None = None, *,
                 batch_name: str | None = None) -> Any:
    """Call ``fn`` retrying transient failures (for calls the SDK itself does not retry)."""
    attempts = attempts or settings.retry_attempts
    delay = settings.retry_initial_delay
    for i in range(attempts):
        try:
            return fn()
        except Exception as exc:
            if not is_retryable(exc) or i == attempts - 1:
                raise backend_error(action, exc, batch_name=batch_name) from exc
            _pause(delay)
            delay = min(delay * 2, 30.0)
    raise AssertionError("unreachable")


def _pause(delay: float) -> None:
    time.sleep(delay * (1 + secrets.randbelow(1000) / 1000))


# --------------------------------------------------------------------------- batches
def job_state(job: Any) -> str:
    """A batch job's state without the ``JOB_STATE_`` / ``BATCH_STATE_`` prefix."""
    st = getattr(job, "state", None)
    name = getattr(st, "name", None) or str(st or "JOB_STATE_UNSPECIFIED")
    return name.removeprefix("JOB_STATE_").removeprefix("BATCH_STATE_")


def _status(job: Any) -> BatchStatus:
    name = str(job.name)
    error = _seam.errors.get(name)
    sdk_error = getattr(job, "error", None)  # Vertex AI's jobs carry it; the Developer API not
    if error is None and sdk_error is not None and getattr(sdk_error, "message", None):
        error = str(sdk_error.message)
    counts = _seam.stats.get(name)
    cs = getattr(job, "completion_stats", None)  # Vertex AI's counts
    if counts is None and cs is not None:
        ok, bad = int(cs.successful_count or 0), int(cs.failed_count or 0)
        left = max(0, int(cs.incomplete_count or 0))
        counts = {"total": ok + bad + left, "succeeded": ok, "failed": bad, "pending": left}
    return BatchStatus(name=name, state=job_state(job), counts=counts, job=job, error=error)


def get_batch(name: str) -> BatchStatus:
    """The batch job ``name`` now (the SDK retries transient failures itself).

    Raises :class:`BackendError` (``retryable`` True for a transient failure).
    """
    try:
        job = get_client().batches.get(name=name)
    except Exception as exc:
        raise backend_error(f"checking {name}", exc, batch_name=name) from exc
    return _status(job)


def _newest_batches(limit: int, flt: str | None = None) -> Iterator[Any]:
    """The service's batch jobs, newest first (the SDK pages them, 100 a page), at most
    ``limit`` of them; ``flt``: a Vertex AI list filter (ignored elsewhere)."""
    config: dict[str, Any] = {"page_size": 100}
    if flt and is_vertex():
        config["filter"] = flt
    return itertools.islice(get_client().batches.list(config=config), limit)


def find_run_batches(run_id: str) -> list[BatchStatus]:
    """The Vertex AI jobs labelled ``gembatch_run=<run_id>`` (how another machine finds a
    run), oldest shard first; empty elsewhere."""
    if not is_vertex():
        return []
    flt = f'labels.{_vertex.RUN_LABEL}="{run_id}"'
    jobs = with_retries("listing batches", lambda: list(_newest_batches(1000, flt)))
    return [_status(j) for j in reversed(jobs)]


def list_batches(names: set[str], max_items: int = 1000) -> dict[str, BatchStatus]:
    """The batch jobs named ``names``, from one listing (newest first, 100 per page).

    One ``batches.list`` page answers for up to 100 live batches, where polling each costs a
    ``batches.get``: the background monitor uses it when several runs are due. Stops once all
    are found or after ``max_items``; gives what it found (possibly nothing) on any error,
    and callers fetch the rest one by one.
    """
    found: dict[str, BatchStatus] = {}
    if not names:
        return found
    try:
        for job in _newest_batches(max_items):
            if job.name in names:
                found[str(job.name)] = _status(job)
                if len(found) == len(names):
                    break
    except Exception:  # transient or not, the per-run gets that follow will say
        _log.debug("listing batches failed", exc_info=True)
    return found


def find_batch(display: str, *, run_id: str | None = None) -> str | None:
    """The batch with this display name among the newest ones, if the service has it.

    Raises :class:`BackendError` when the service cannot be asked: "cannot tell" must
    never read as "not there", or the caller would create (and pay for) it twice.
    """
    def look() -> str | None:
        for job in _newest_batches(501, f'display_name="{display}"'):
            if getattr(job, "display_name", None) == display:
                return str(job.name)
        return None

    try:
        return with_retries("listing batches", look)  # type: ignore[no-any-return]
    except BackendError as exc:
        again = f"gbm.attach({run_id!r}).wait()" if run_id else "run.wait()"
        raise BackendError(
            f"could not confirm whether batch {display} was created ({exc}); nothing is "
            f"sent again until it can be checked: call run.wait() or {again} later",
            code=exc.code, status=exc.status, run_id=run_id,
        ) from exc


def create_batch(model: str, src: Any, display: str, *, reconcile_first: bool,
                 run_id: str | None = None, dest: str | None = None,
                 labels: dict[str, str] | None = None, embed: bool = False) -> str:
    """Create one batch job, never twice: an ambiguous failure is reconciled by listing.

    ``embed=True`` creates an embedding batch (``batches.create_embeddings``, from a file).
    ``reconcile_first=False`` only for a run's very first create (nothing was sent before,
    so nothing can exist yet); every other attempt first looks for the batch by its display
    name. Returns the batch name. ``dest`` (a ``gs://`` prefix or ``bq://`` table) and
    ``labels`` are for Vertex AI (the SDK has no labels field: they go in the body).
    """
    from google.genai import types

    client = get_client()
    no_retry = types.HttpOptions(retry_options=types.HttpRetryOptions(attempts=1),
                                 extra_body={"labels": labels} if labels else None)
    config: dict[str, Any] = {"display_name": display, "http_options": no_retry}
    if dest:
        config["dest"] = dest
    delay = settings.retry_initial_delay
    last: BaseException | None = None
    for attempt in range(settings.retry_attempts):
        if attempt or reconcile_first:
            found = find_batch(display, run_id=run_id)
            if found:
                return found
        try:
            if embed:
                import warnings

                # experimental in the SDK (it warns on every call); we pin the wire format
                warnings.filterwarnings("ignore", message=r"batches\.create_embeddings")
                job = client.batches.create_embeddings(model=model, src={"file_name": src},
                                                       config=config)
            else:
                job = client.batches.create(model=model, src=src, config=config)
            return str(job.name)
        except Exception as exc:
            if not is_retryable(exc):
                raise backend_error(f"creating batch {display}", exc) from exc
            last = exc
        _pause(delay)
        delay = min(delay * 2, 30.0)
    found = find_batch(display, run_id=run_id)
    if found:
        return found
    assert last is not None
    raise backend_error(f"creating batch {display}", last) from last


def cancel_batch(name: str) -> None:
    """Ask the service to cancel ``name``; a batch that already ended is no error."""
    client = get_client()
    try:
        with_retries(f"cancelling {name}", lambda: client.batches.cancel(name=name),
                     batch_name=name)
    except BackendError as exc:
        if exc.status != "FAILED_PRECONDITION" and exc.code != 400:
            raise


# --------------------------------------------------------------------------- models
def check_model(model: str) -> None:
    """Raise :class:`ConfigError` unless the service knows ``model`` (``models.get``, once
    per model and client), naming close matches among the models it lists."""
    name = model.removeprefix("models/")
    if name in _seam.models or model.startswith("tunedModels/"):
        return
    client = get_client()
    try:
        with_retries(f"looking up model {name}", lambda: client.models.get(model=name))
    except BackendError as exc:
        if exc.retryable:  # cannot tell now: the create will say if the model is unknown
            _log.debug("could not look up model %s: %s", name, exc)
            return
        if exc.code != 404:
            raise
        import difflib

        known = _model_names()
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
        hint = (f"did you mean {' or '.join(close)}?" if close
                else f"models it offers include {', '.join(known[:8])}" if known
                else "check the model name")
        raise ConfigError(
            f"unknown model {name!r}: the service does not offer it ({exc.status or 404}); "
            f"{hint} Nothing was uploaded or created."
        ) from exc
    _seam.models.add(name)


def _model_names() -> list[str]:
    try:
        return sorted(str(m.name).removeprefix("models/")
                      for m in itertools.islice(get_client().models.list(), 1000) if m.name)
    except Exception:  # the listing is only for the hint
        _log.debug("listing models failed", exc_info=True)
        return []


# --------------------------------------------------------------------------- files
def upload_file(path: Any, display: str) -> str:
    """Upload a JSONL request file with the File API; returns its ``files/...`` name."""
    client = get_client()
    uploaded = with_retries(
        f"uploading {os.path.basename(str(path))}",
        lambda: client.files.upload(
            file=str(path), config={"mime_type": "jsonl", "display_name": display},
        ),
    )
    return str(uploaded.name)


#: The File API refuses ``files.get``/``files.delete`` on longer ids (a batch's output file,
#: ``files/batch-<36 characters>``, is one), while it serves their download.
MAX_FILE_ID = 40


def delete_file(file_name: str) -> bool:
    """Delete an uploaded file; False (never an error) if it is gone already or refused.

    Never called for ids the service will refuse (longer than :data:`MAX_FILE_ID`).
    """
    if file_name.startswith("gs://"):  # a request file staged for Vertex AI
        return _vertex.delete_object(file_name)
    if len(file_name.removeprefix("files/")) > MAX_FILE_ID:
        return False
    client = get_client()
    try:
        with_retries(f"deleting {file_name}", lambda: client.files.delete(name=file_name))
    except BackendError as exc:
        _log.debug("could not delete %s: %s", file_name, exc)
        return False
    return True


def download_file(file_name: str, open_destination: Callable[[], Any]) -> None:
    """Download ``file_name`` into ``with open_destination() as writer`` (anew per attempt)."""
    client = get_client()

    def once() -> None:
        with open_destination() as writer:
            client.files.download(file=file_name, destination=writer)

    with_retries(f"downloading {file_name}", once)


# --------------------------------------------------------------------------- media files
@dataclass(frozen=True)
class RemoteFile:
    """A File API file as the service describes it."""

    name: str  #: ``files/...``
    uri: str  #: what a ``fileData.fileUri`` names
    mime_type: str | None
    size_bytes: int | None
    created: float | None  #: POSIX seconds
    expires: float | None  #: POSIX seconds; None: not said
    state: str | None


def _remote(f: Any) -> RemoteFile:
    def ts(value: Any) -> float | None:
        return value.timestamp() if value is not None else None

    st = getattr(f, "state", None)
    return RemoteFile(name=str(f.name), uri=str(f.uri or ""), mime_type=f.mime_type,
                      size_bytes=f.size_bytes, created=ts(f.create_time),
                      expires=ts(f.expiration_time),
                      state=getattr(st, "name", None) or (str(st) if st else None))


def upload_media(source: Any, mime: str, display: str) -> RemoteFile:
    """Upload one media file (a path, or a binary file object) with the File API."""
    client = get_client()
    what = os.path.basename(str(source)) if isinstance(source, (str, os.PathLike)) else display

    def once() -> Any:
        if hasattr(source, "seek"):
            source.seek(0)
        return client.files.upload(file=source, config={"mime_type": mime,
                                                        "display_name": display})

    return _remote(with_retries(f"uploading {what}", once))


def get_file(name: str) -> RemoteFile | None:
    """The File API file ``name``; None when the service does not have it (403 or 404)."""
    client = get_client()
    try:
        got = with_retries(f"looking up {name}", lambda: client.files.get(name=name))
    except BackendError as exc:
        if exc.code in (403, 404):
            return None
        raise
    return _remote(got)


def register_files(uris: list[str]) -> list[RemoteFile]:
    """Register ``gs://`` objects with the File API (``files.register_files``); the service
    reads them with the caller's Google Cloud credentials (application default credentials,
    ``gcloud auth application-default login``). An emulator takes any token."""
    client = get_client()
    info = backend_info()
    if info.kind == "gemini":
        try:
            import google.auth

            creds, _ = google.auth.default(
                scopes=["https://www.googleapis.com/auth/cloud-platform"])
        except Exception as exc:
            raise ConfigError(
                f"gs:// media need Google Cloud credentials to register them with the File "
                f"API ({exc}); run `gcloud auth application-default login` (or set "
                "GOOGLE_APPLICATION_CREDENTIALS), or upload the files instead") from exc
    else:
        from google.oauth2.credentials import Credentials

        creds = Credentials(token="emulator-token")  # an emulator checks no token
    got = with_retries(f"registering {len(uris)} gs:// file(s)",
                       lambda: client.files.register_files(auth=creds, uris=uris))
    return [_remote(f) for f in (got.files or [])]
