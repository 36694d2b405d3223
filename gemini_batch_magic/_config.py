"""Settings shared by the Python API, the magics (``%config GemBatch.x``) and the CLI.

There is one settings object per process, :data:`settings`, an instance of the traitlets
``Configurable`` :class:`GemBatch` (as jupysql's ``SqlMagic`` is). Every setting is a trait
declared once below, with its default and its help; all the ways of changing one go through
that trait and its validator:

* Python: ``gbm.configure(model="gemini-2.5-pro")`` or ``gbm.settings.model = ...``;
* IPython: ``%config GemBatch.model = "gemini-2.5-pro"``, ``%config GemBatch`` lists them;
  ``c.GemBatch.model = ...`` in a profile's ``ipython_config.py`` applies at
  ``%load_ext gemini_batch_magic``;
* the environment, for the defaults (read the first time a setting is used):

================================  ==================================================
``GEMBATCH_HOME``                 where the run registry and cached results live
``GEMBATCH_MODEL``                the default model
``GEMBATCH_BACKEND``              ``auto`` (default), ``local``, ``gemini`` or ``vertex``
``GEMINI_API_KEY``                the API key (``GOOGLE_API_KEY`` is read too)
``GOOGLE_GEMINI_BASE_URL``        an external endpoint, e.g. ``gembatch emulator``
``GOOGLE_GENAI_USE_VERTEXAI``     ``true``: backend ``vertex`` unless GEMBATCH_BACKEND says
``GOOGLE_CLOUD_PROJECT``          the Vertex AI project
``GOOGLE_CLOUD_LOCATION``         the Vertex AI region (default ``us-central1``)
``GEMBATCH_STAGING``              the Cloud Storage prefix runs are staged under (Vertex)
================================  ==================================================

A refused value raises :class:`SettingError`, which is both our :class:`ConfigError` and
traitlets' ``TraitError`` (so ``%config`` shows it), and carries the setting's name, the
value and what is valid. Code that must act on a change observes the settings
(``settings.observe(callback, names=["home"])``); this module imports nothing else of the
package but its exceptions.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from traitlets import TraitError, TraitType, Undefined, default, validate
from traitlets.config import Configurable

from .exceptions import ConfigError

__all__ = [
    "BACKENDS",
    "GemBatch",
    "SettingError",
    "Settings",
    "configure",
    "default_home",
    "settings",
    "validate_model",
]

BACKENDS = ("auto", "local", "gemini", "vertex")

#: Model ids look like ``gemini-2.5-flash`` or ``models/gemini-2.5-flash`` or ``tunedModels/x``.
_MODEL_RE = re.compile(r"^(models/|tunedModels/)?[a-z0-9][a-z0-9.\-_]{0,127}$")
_MODEL_HINT = ("expected an id such as 'gemini-2.5-flash' (lowercase letters, digits, '.', "
               "'-', '_'; optionally prefixed with 'models/' or 'tunedModels/')")


def default_home() -> Path:
    """``$GEMBATCH_HOME``, else the user's data directory for ``gemini_batch_magic``."""
    env = os.environ.get("GEMBATCH_HOME")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("gemini_batch_magic", appauthor=False))


def _bad_model(model: object) -> str | None:
    """Why ``model`` is not a well-formed model id, or None when it is."""
    if isinstance(model, str) and _MODEL_RE.match(model):
        return None
    return f"invalid model name {model!r}: {_MODEL_HINT}"


def validate_model(model: str) -> str:
    """Return ``model`` if it is a well-formed model id, else raise :class:`ConfigError`."""
    problem = _bad_model(model)
    if problem is not None:
        raise ConfigError(problem)
    return model


class SettingError(ConfigError, TraitError):
    """A setting refused a value: ``ConfigError`` for Python, ``TraitError`` for traitlets.

    ``setting`` is its name, ``value`` the refused value, ``valid`` what it accepts (the
    choices as a tuple, or a short description such as ``"an int, at least 1"``).
    """

    def __init__(self, setting: str, value: Any, valid: str | tuple[str, ...], message: str
                 ) -> None:
        super().__init__(message)
        self.setting = setting
        self.value = value
        self.valid = valid


# -- trait types: each converts what the CLI, a profile or %config may hand it ------------
# (their class names show in ``%config GemBatch``: ``--GemBatch.poll_interval=<Float>``)
G = TypeVar("G")


class _Setting(TraitType[G, Any], Generic[G]):
    """A ``config=True`` trait whose help ends with its default, so it is written once."""

    kind = "a value"

    def __init__(self, default_value: Any, help: str, *, shown_default: str | None = None,
                 env: str | None = None) -> None:
        shown = shown_default if shown_default is not None else repr(default_value)
        text = f"{help} Default: {shown}" + (f", or ${env} when set." if env else ".")
        super().__init__(default_value, help=text, config=True)

    def refuse(self, value: Any, valid: str | tuple[str, ...], problem: str) -> SettingError:
        """The error for ``value``, naming this setting."""
        return SettingError(str(self.name), value, valid, problem)


class Str(_Setting[str]):
    """Text."""

    kind = "a str"

    def validate(self, obj: Any, value: Any) -> str:
        if not isinstance(value, str):
            raise self.refuse(value, self.kind,
                              f"{self.name} must be a str, got {value!r}")
        return value


class _Number(_Setting[G]):
    """An int or a float; numbers written as text (``"3.5"``) are converted."""

    convert: type

    def validate(self, obj: Any, value: Any) -> G:
        name = self.convert.__name__
        if isinstance(value, bool):
            raise self.refuse(value, self.kind, f"{self.name} must be a {name}, got {value!r}")
        try:
            number: G = self.convert(value)
        except (TypeError, ValueError):
            raise self.refuse(value, self.kind,
                              f"{self.name} must be a {name}, got {value!r}") from None
        return number


class Int(_Number[int]):
    """A whole number (``"10"`` is converted)."""

    kind = "an int"
    convert = int


class Float(_Number[float]):
    """A number (``"3.5"`` and ``7`` are converted)."""

    kind = "a float"
    convert = float


class OptionalFloat(Float):
    """A number, or None to turn the setting off (``"None"`` from the command line too)."""

    kind = "a float or None"

    def validate(self, obj: Any, value: Any) -> Any:
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "")):
            return None
        return super().validate(obj, value)


class Bool(_Setting[bool]):
    """True or False (``"false"``, ``"0"``, ``"no"``, ``"off"`` and their opposites too)."""

    kind = "a bool"
    _WORDS: ClassVar[dict[str, bool]] = {"true": True, "1": True, "yes": True, "on": True,
                                         "false": False, "0": False, "no": False,
                                         "off": False}

    def validate(self, obj: Any, value: Any) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in self._WORDS:
            return self._WORDS[value.strip().lower()]
        raise self.refuse(value, self.kind, f"{self.name} must be True or False, got {value!r}")


class Folder(_Setting[Path]):
    """A folder, read as a :class:`pathlib.Path` with ``~`` expanded."""

    kind = "a folder path (str or pathlib.Path)"

    def validate(self, obj: Any, value: Any) -> Path:
        if not isinstance(value, (str, os.PathLike)) or not str(value).strip():
            raise self.refuse(value, self.kind, f"{self.name} must be {self.kind}, got {value!r}")
        return Path(value).expanduser()


class GemBatch(Configurable):
    """Every setting, with its default. Change them with :func:`configure` or ``%config``."""

    model = Str("gemini-2.5-flash", "Model used when a call or cell names none.",
                  env="GEMBATCH_MODEL")
    home = Folder(Undefined, "Folder of the SQLite run registry, request files and cached "
                   "results.", shown_default="the user data folder of gemini_batch_magic",
                   env="GEMBATCH_HOME")
    backend = Str("auto", "auto: the key decides (no key: the embedded emulator); local: "
                    "always the embedded emulator; gemini: always the real service (a key is "
                    "required); vertex: Vertex AI batch prediction (project, location and "
                    "staging; Application Default Credentials).", env="GEMBATCH_BACKEND")
    project = Str("", "Google Cloud project of the vertex backend.",
                  shown_default="''", env="GOOGLE_CLOUD_PROJECT")
    location = Str("us-central1", "Vertex AI region of the vertex backend (where jobs run; "
                   "BigQuery datasets must be in the same region).",
                   env="GOOGLE_CLOUD_LOCATION")
    staging = Str("", "Cloud Storage prefix (gs://bucket/prefix) where the vertex backend "
                  "stages request files and collects predictions, under <run id>/.",
                  shown_default="''", env="GEMBATCH_STAGING")
    poll_interval = Float(2.0, "First delay (seconds) between status polls of a live run; it "
                           "backs off from here.").tag(above=0.0)
    max_poll_interval = Float(60.0, "Longest delay (seconds) between polls once a run has "
                               "been quiet for a while.").tag(minimum=0.0)
    inline_limit_bytes = Int(19_000_000, "Runs whose request file is at most this many bytes "
                              "go inline (service limit: 20 MB).").tag(minimum=1)
    max_file_bytes = Int(1_900_000_000, "Largest JSONL file per shard (service limit: "
                          "2 GB).").tag(minimum=1)
    max_requests_per_shard = Int(500_000, "Most requests per shard (one batch job); larger "
                                  "runs are split.").tag(minimum=1)
    max_concurrent_shards = Int(4, "How many shards upload and submit at the same "
                                 "time.").tag(minimum=1)
    retry_attempts = Int(6, "Attempts per API call on 408/429/5xx and connection errors "
                          "(1 = no retry).").tag(minimum=1)
    retry_initial_delay = Float(1.0, "First retry delay in seconds (doubles each attempt, "
                                 "with jitter).").tag(minimum=0.0)
    emulator_pending_seconds = Float(2.0, "Seconds the embedded emulator keeps a new batch "
                                      "PENDING.").tag(minimum=0.0)
    emulator_rate = Float(20.0, "Requests per second the embedded emulator answers while "
                           "RUNNING (0 = all at once).").tag(minimum=0.0)
    emulator_max_running_seconds = OptionalFloat(
        30.0, "Longest a batch of the embedded emulator stays RUNNING: a batch too large "
        "for emulator_rate is answered faster (None: no limit).").tag(minimum=0.0)
    confirm_above = OptionalFloat(5.0, "A run estimated above this many USD is not sent "
                                  "without a confirmation: a Submit button in an interactive "
                                  "notebook, else confirm=True (Python) or --yes (magic, "
                                  "CLI). None turns the check off; max_cost still refuses "
                                  "outright.").tag(minimum=0.0)
    push_updates = Bool(True, "The background monitor updates widgets from its thread after "
                        "each poll. False: it only polls, and every widget is kept live by its "
                        "front end asking the kernel for fresh state on a timer (the way it "
                        "stays live in Colab and marimo, where messages from a thread do not "
                        "render).")
    # -- media parts (issue 12) -------------------------------------------------------------
    media_inline_bytes = Int(1_000_000, "A media file goes inline (base64 in the request) "
                              "when its bytes times the rows using it are at most this; "
                              "larger or much-repeated files are uploaded once with the "
                              "File API (0 = upload every file).").tag(minimum=0)
    media_max_file_bytes = Int(2_000_000_000, "Largest media file accepted (File API limit: "
                                "2 GB a file).").tag(minimum=1)
    media_max_total_bytes = Int(20_000_000_000, "Most bytes of media one run may upload "
                                 "(File API limit: 20 GB a project).").tag(minimum=1)
    max_concurrent_uploads = Int(8, "How many media files upload at the same "
                                  "time.").tag(minimum=1)

    # -- defaults from the environment ------------------------------------------------------
    @default("model")
    def _model_from_env(self) -> str:
        value = os.environ.get("GEMBATCH_MODEL", "").strip()
        if not value:
            return str(GemBatch.model.default_value)
        problem = _bad_model(value)
        if problem is not None:
            raise GemBatch.model.refuse(value, "a model id",
                                        f"model setting from $GEMBATCH_MODEL: {problem}")
        return value

    @default("backend")
    def _backend_from_env(self) -> str:
        value = os.environ.get("GEMBATCH_BACKEND", "").strip().lower()
        if not value:
            vertex = os.environ.get("GOOGLE_GENAI_USE_VERTEXAI", "").strip().lower()
            return "vertex" if vertex in ("1", "true", "yes") else str(
                GemBatch.backend.default_value)
        if value not in BACKENDS:
            raise GemBatch.backend.refuse(
                value, BACKENDS,
                f"backend setting from $GEMBATCH_BACKEND: invalid backend {value!r}: "
                f"choose one of {', '.join(BACKENDS)}")
        return value

    @default("home")
    def _home_from_env(self) -> Path:
        return default_home()

    @default("project")
    def _project_from_env(self) -> str:
        return os.environ.get("GOOGLE_CLOUD_PROJECT", "").strip()

    @default("location")
    def _location_from_env(self) -> str:
        return (os.environ.get("GOOGLE_CLOUD_LOCATION", "").strip()
                or str(GemBatch.location.default_value))

    @default("staging")
    def _staging_from_env(self) -> str:
        return os.environ.get("GEMBATCH_STAGING", "").strip().rstrip("/")

    @validate("staging")
    def _check_staging(self, proposal: Any) -> str:
        value = str(proposal["value"]).strip().rstrip("/")
        if value and (not value.startswith("gs://") or len(value) <= 5
                      or value[5:].startswith("/")):
            raise GemBatch.staging.refuse(
                proposal["value"], "a gs://bucket/prefix URI",
                f"staging must be a Cloud Storage prefix such as 'gs://my-bucket/gembatch', "
                f"got {proposal['value']!r}")
        return value

    # -- what each value means --------------------------------------------------------------
    @validate("model")
    def _check_model(self, proposal: Any) -> str:
        value = proposal["value"]
        problem = _bad_model(value)
        if problem is not None:
            raise GemBatch.model.refuse(value, "a model id", f"model setting: {problem}")
        return str(value)

    @validate("backend")
    def _check_backend(self, proposal: Any) -> str:
        value = str(proposal["value"]).strip().lower()
        if value not in BACKENDS:
            raise GemBatch.backend.refuse(
                proposal["value"], BACKENDS,
                f"invalid backend {proposal['value']!r}: choose one of {', '.join(BACKENDS)}")
        return value

    @validate("poll_interval", "max_poll_interval", "inline_limit_bytes", "max_file_bytes",
              "max_requests_per_shard", "max_concurrent_shards", "retry_attempts",
              "retry_initial_delay", "emulator_pending_seconds", "emulator_rate",
              "emulator_max_running_seconds", "confirm_above", "media_inline_bytes",
              "media_max_file_bytes",
              "media_max_total_bytes", "max_concurrent_uploads")
    def _check_range(self, proposal: Any) -> Any:
        trait, value = proposal["trait"], proposal["value"]
        if value is None:  # an optional setting turned off
            return value
        if "above" in trait.metadata:
            if value <= trait.metadata["above"]:
                raise trait.refuse(
                    value, f"{trait.kind}, more than {trait.metadata['above']}",
                    f"{trait.name} must be at least just above {trait.metadata['above']} "
                    f"(a positive number of seconds), got {value!r}")
        elif value < trait.metadata["minimum"]:
            raise trait.refuse(
                value, f"{trait.kind}, at least {trait.metadata['minimum']}",
                f"{trait.name} must be at least {trait.metadata['minimum']}, got {value!r}")
        return value

    # -- plain views ------------------------------------------------------------------------
    @classmethod
    def names(cls) -> tuple[str, ...]:
        """Every setting's name, in the order declared above."""
        return tuple(n for n, v in vars(GemBatch).items() if isinstance(v, _Setting))

    @classmethod
    def from_env(cls) -> GemBatch:
        """A new settings object with the defaults (the environment's where set)."""
        return cls()

    def as_dict(self) -> dict[str, Any]:
        """All settings as a plain dict (``home`` as a string)."""
        values = {name: getattr(self, name) for name in self.names()}
        values["home"] = str(values["home"])
        return values

    def __repr__(self) -> str:
        return "GemBatch(" + ", ".join(f"{k}={v!r}" for k, v in self.as_dict().items()) + ")"


#: The public name of the settings class (``gbm.Settings``).
Settings = GemBatch


def configure(**options: Any) -> GemBatch:
    """Change settings for this process, e.g. ``configure(model="gemini-2.5-pro")``.

    All values are checked before any applies. Unknown names raise :class:`ConfigError`
    listing the valid ones; a bad value raises :class:`SettingError`. Returns the settings.
    """
    names = GemBatch.names()
    unknown = sorted(set(options) - set(names))
    if unknown:
        close = list(dict.fromkeys(m for u in unknown for m in difflib.get_close_matches(u, names)))
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        raise ConfigError(
            f"unknown setting(s) {', '.join(unknown)}; valid settings: {', '.join(names)}{hint}"
        )
    # traitlets rolls every change of the block back when one value is refused, and
    # observers (the backend's reset) hear of the changes once, after the block
    with settings.hold_trait_notifications():
        for name, value in options.items():
            setattr(settings, name, value)
    return settings


#: The process-wide settings.
settings: GemBatch = GemBatch()
