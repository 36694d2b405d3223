"""Settings shared by the Python API, the magics (``%config GemBatch.x``) and the CLI.

There is one :data:`settings` object per process. Defaults come from the environment when the
package is imported; :func:`configure` (and ``%config GemBatch.<name> = value`` in IPython)
changes them for the rest of the process.

Environment variables read at import:

================================  ==================================================
``GEMBATCH_HOME``                 where the run registry and cached results live
``GEMBATCH_MODEL``                the default model
``GEMBATCH_BACKEND``              ``auto`` (default), ``local`` or ``gemini``
``GEMINI_API_KEY``                the API key (``GOOGLE_API_KEY`` is read too)
``GOOGLE_GEMINI_BASE_URL``        an external endpoint, e.g. ``gembatch emulator``
================================  ==================================================
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .exceptions import ConfigError

__all__ = ["BACKENDS", "Settings", "configure", "default_home", "settings", "validate_model"]

BACKENDS = ("auto", "local", "gemini")

#: Model ids look like ``gemini-2.5-flash`` or ``models/gemini-2.5-flash`` or ``tunedModels/x``.
_MODEL_RE = re.compile(r"^(models/|tunedModels/)?[a-z0-9][a-z0-9.\-_]{0,127}$")


def default_home() -> Path:
    """``$GEMBATCH_HOME``, else the user's data directory for ``gemini_batch_magic``."""
    env = os.environ.get("GEMBATCH_HOME")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("gemini_batch_magic", appauthor=False))


def validate_model(model: str) -> str:
    """Return ``model`` if it is a well-formed model id, else raise :class:`ConfigError`."""
    if not isinstance(model, str) or not _MODEL_RE.match(model):
        raise ConfigError(
            f"invalid model name {model!r}: expected an id such as 'gemini-2.5-flash' "
            "(lowercase letters, digits, '.', '-', '_'; optionally prefixed with 'models/' "
            "or 'tunedModels/')"
        )
    return model


@dataclass
class Settings:
    """Every option, with its default. Change them with :func:`configure`."""

    #: Model used when a call names none.
    model: str = "gemini-2.5-flash"
    #: Folder of the SQLite run registry, request files and cached results.
    home: Path = field(default_factory=default_home)
    #: ``auto``: the key decides (no key: the embedded emulator); ``local``: always the
    #: embedded emulator; ``gemini``: always the real service (a key is required).
    backend: str = "auto"
    #: First delay (seconds) between status polls of a live run; it backs off from here.
    poll_interval: float = 2.0
    #: Longest delay (seconds) between polls once a run has been quiet for a while.
    max_poll_interval: float = 60.0
    #: Runs whose request file is at most this many bytes go inline (service limit: 20 MB).
    inline_limit_bytes: int = 19_000_000
    #: Largest JSONL file per shard (service limit: 2 GB).
    max_file_bytes: int = 1_900_000_000
    #: Most requests per shard (one batch job); larger runs are split.
    max_requests_per_shard: int = 500_000
    #: How many shards upload and submit at the same time.
    max_concurrent_shards: int = 4
    #: Attempts per API call on 408/429/5xx and connection errors (1 = no retry).
    retry_attempts: int = 6
    #: First retry delay in seconds (doubles each attempt, with jitter).
    retry_initial_delay: float = 1.0
    #: Seconds the embedded emulator keeps a new batch PENDING.
    emulator_pending_seconds: float = 2.0
    #: Requests per second the embedded emulator answers while RUNNING (0 = all at once).
    emulator_rate: float = 20.0

    def __post_init__(self) -> None:
        self.home = Path(self.home).expanduser()

    @classmethod
    def from_env(cls) -> Settings:
        """Defaults, overridden by ``GEMBATCH_MODEL`` and ``GEMBATCH_BACKEND``."""
        s = cls()
        if os.environ.get("GEMBATCH_MODEL"):
            s.model = validate_model(os.environ["GEMBATCH_MODEL"])
        if os.environ.get("GEMBATCH_BACKEND"):
            s.backend = _check_backend(os.environ["GEMBATCH_BACKEND"].strip().lower())
        return s

    def as_dict(self) -> dict[str, Any]:
        """All settings as a plain dict (``home`` as a string)."""
        d = dataclasses.asdict(self)
        d["home"] = str(self.home)
        return d


def _check_backend(value: str) -> str:
    if value not in BACKENDS:
        raise ConfigError(f"invalid backend {value!r}: choose one of {', '.join(BACKENDS)}")
    return value


_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}


def _coerce(name: str, value: Any) -> Any:
    """Validate one setting, converting strings from the CLI or %config where sensible."""
    f = _FIELDS[name]
    if name == "model":
        return validate_model(value)
    if name == "backend":
        return _check_backend(str(value).strip().lower())
    if name == "home":
        return Path(value).expanduser()
    kind = {"float": float, "int": int}.get(str(f.type))
    if kind is None:
        return value
    try:
        num = kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a {kind.__name__}, got {value!r}") from None
    minimum = 1 if kind is int else 0.0
    if num < minimum or (name == "poll_interval" and num <= 0):
        raise ConfigError(f"{name} must be at least {minimum}, got {value!r}")
    return num


def configure(**options: Any) -> Settings:
    """Change settings for this process, e.g. ``configure(model="gemini-2.5-pro")``.

    Unknown names raise :class:`ConfigError` listing the valid ones. Returns the settings.
    """
    unknown = sorted(set(options) - set(_FIELDS))
    if unknown:
        raise ConfigError(
            f"unknown setting(s) {', '.join(unknown)}; valid settings: {', '.join(_FIELDS)}"
        )
    checked = {k: _coerce(k, v) for k, v in options.items()}
    if "home" in checked or "backend" in checked:
        from . import _backend

        _backend.reset()
    for k, v in checked.items():
        setattr(settings, k, v)
    return settings


#: The process-wide settings.
settings: Settings = Settings.from_env()
