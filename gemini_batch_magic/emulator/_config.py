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
        "expire_after",
        "fail_rate",
        "seed",
        "shuffle",
        # read by every API call
        "http_fault_rate",
        "drop_after_create_rate",
        "api_key",
    }
)

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
    #: When set, only this key is accepted (never printed, logged or shown in the repr).
    api_key: str | None = field(default=None, repr=False)
    #: Seconds after creation at which an unfinished batch becomes ``EXPIRED`` (None = never).
    expire_after: float | None = None
    #: Allow a non-loopback ``host`` (it exposes the emulator to the network).
    allow_remote: bool = False
    #: Worker processes answering with the built-in model (None = one per CPU, at most 4;
    #: 0 = answer in the emulator's threads). Always an ``int`` once the config is built.
    processes: int | None = None

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        put("pending_seconds", _check_non_negative("pending_seconds", self.pending_seconds))
        put("rate", _check_non_negative("rate", self.rate))
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
        if self.api_key is not None:
            if not isinstance(self.api_key, str):
                raise ValueError(f"api_key must be a string, got {type(self.api_key).__name__}.")
            if not self.api_key.strip():
                raise ValueError("api_key must not be blank.")
            put("api_key", self.api_key.strip())
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

    def batch_options(self) -> dict[str, Any]:
        """The options stored with each new batch, as columns of its row.

        A batch's visible state and its results are a pure function of these and of its
        timestamps, so changing them later (or restarting with other options) never
        changes a batch that already exists.
        """
        return {
            "pending_seconds": self.pending_seconds,
            "rate": self.rate,
            "expire_after": self.expire_after,
            "fail_rate": self.fail_rate,
            "seed": self.seed,
            "shuffle": 1 if self.shuffle else 0,
        }


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
