"""The one place that builds the ``google-genai`` client: the real Gemini API, or an emulator.

Which backend (``settings.backend``, from ``GEMBATCH_BACKEND``):

* ``auto`` (default): ``GOOGLE_GEMINI_BASE_URL`` set -> that endpoint (an external emulator);
  else an API key in ``GEMINI_API_KEY`` / ``GOOGLE_API_KEY`` -> the real Gemini API;
  else -> the embedded local emulator, with a one-time notice that answers are synthetic.
* ``local``: always the embedded emulator (its state persists under ``$GEMBATCH_HOME/emulator``,
  so runs survive kernel restarts).
* ``gemini``: always the real service; a missing key is an error.

The SDK does not expose ``batchStats`` (request counts) of a batch. We add it without
re-implementing any call: an httpx response hook on the SDK's own client records the
``batchStats`` of every batch resource the SDK receives; :func:`batch_stats` reads them.
The API key is passed to the SDK and never stored, logged or shown; :func:`backend_info`
tells only where it came from.
"""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass
from typing import Any

import orjson

from ._config import settings
from .exceptions import ConfigError

__all__ = ["BackendInfo", "backend_info", "batch_stats", "get_client", "reset"]

_KEY_VARS = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
_PLACEHOLDER_KEY = "local-emulator"  # sent to emulators, which accept any key

_lock = threading.RLock()
_client: Any = None
_info: BackendInfo | None = None
_emulator: Any = None
_notice_shown = False
_stats: dict[str, dict[str, int]] = {}


@dataclass(frozen=True)
class BackendInfo:
    """Where requests go. Never holds the key itself."""

    kind: str  #: ``gemini``, ``local`` (embedded emulator) or ``external`` (base URL)
    base_url: str | None  #: None for the real service's default endpoint
    key_source: str | None  #: the environment variable the key came from, if any
    synthetic: bool  #: True when answers come from an emulator, not a model

    def describe(self) -> str:
        """One line for humans, e.g. for ``%gembatch backend``."""
        if self.kind == "gemini":
            where = self.base_url or "the Gemini API"
            return f"Gemini API ({where}); API key from ${self.key_source}"
        if self.kind == "local":
            return f"embedded local emulator at {self.base_url} (synthetic answers, no API key)"
        src = f"; API key from ${self.key_source}" if self.key_source else ""
        return f"external endpoint {self.base_url} (GOOGLE_GEMINI_BASE_URL){src}"


def _api_key() -> tuple[str | None, str | None]:
    for var in _KEY_VARS:
        value = os.environ.get(var, "").strip()
        if value:
            return value, var
    return None, None


def _resolve() -> tuple[str, str | None, str | None, str | None]:
    """(kind, base_url, key, key_source) from settings and the environment."""
    key, source = _api_key()
    base = os.environ.get("GOOGLE_GEMINI_BASE_URL", "").strip() or None
    mode = settings.backend
    if mode == "local":
        return "local", None, None, None
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
            try:
                stats[ours] = int(raw.get(wire) or 0)
            except (TypeError, ValueError):
                stats[ours] = 0
        _stats[str(name)] = stats


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
    return _stats.get(name)


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
    global _emulator, _notice_shown
    if _emulator is None:
        from .emulator import Emulator

        data_dir = settings.home / "emulator"
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        _emulator = Emulator(
            data_dir=data_dir,
            pending_seconds=settings.emulator_pending_seconds,
            rate=settings.emulator_rate,
        )
        _emulator.start()
    if not _notice_shown:
        _notice_shown = True
        print(
            "gemini_batch_magic: no GEMINI_API_KEY set, so batches run on the embedded local "
            f"emulator ({_emulator.url}). Its answers are SYNTHETIC (each prompt echoed back), "
            "and nothing is billed. Set GEMINI_API_KEY to use Gemini.",
            file=sys.stderr,
        )
    return str(_emulator.url)


def get_client() -> Any:
    """The ``google.genai.Client`` for the current settings, built once and cached."""
    global _client, _info
    with _lock:
        if _client is not None:
            return _client
        from google import genai

        kind, base, key, source = _resolve()
        if kind == "local":
            base = _start_embedded()
        _client = genai.Client(api_key=key or _PLACEHOLDER_KEY, http_options=_http_options(base))
        _info = BackendInfo(kind=kind, base_url=base, key_source=source, synthetic=kind != "gemini")
        return _client


def backend_info() -> BackendInfo:
    """Which backend :func:`get_client` uses (building the client if needed)."""
    get_client()
    assert _info is not None
    return _info


def backend_id() -> str:
    """A stable label of the backend, stored with each run: ``gemini``, ``local`` or the URL."""
    info = backend_info()
    if info.kind == "external":
        return str(info.base_url)
    if info.kind == "gemini" and info.base_url:
        return str(info.base_url)
    return info.kind


def reset() -> None:
    """Forget the cached client and stop the embedded emulator (settings or env changed)."""
    global _client, _info, _emulator
    with _lock:
        _client = None
        _info = None
        if _emulator is not None:
            try:
                _emulator.close()
            finally:
                _emulator = None
        _stats.clear()


settings.observe(lambda change: reset(), names=["home", "backend"])
