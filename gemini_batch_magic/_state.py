"""The process-wide state of the engine, in one object with a public :meth:`reset`.

Everything the engine keeps for the life of the process and that is not a setting lives on
:data:`state`: the open registries (one per ``home``), the identity map of run objects (one
object per run, so one lock per run), the pydantic classes given to ``submit`` in this
process, and which runs this process is submitting. Modules that hold process-wide
resources of their own (the backend's client and embedded emulator, the monitor's thread)
register a reset hook, so ``state.reset()`` puts the whole engine back to a fresh process's
state: what tests do between tests, and what a user does after changing the environment.

A leaf module: it imports nothing of the package.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["ProcessState", "state"]


class ProcessState:
    """The engine's process-wide caches and in-flight sets."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        #: home folder -> its open Registry
        self.registries: dict[Path, Any] = {}
        #: (home, run id) -> the one BatchRun object of this process (while anything holds it)
        self.runs: weakref.WeakValueDictionary[tuple[Path, str], Any] = (
            weakref.WeakValueDictionary())
        #: run id -> the pydantic class given as response_schema in this process
        self.schema_classes: dict[str, Any] = {}
        #: run ids this process is submitting right now
        self.submitting: set[str] = set()
        #: run ids created by this process and never sent: only their first create may
        #: skip the reconciling listing (any other create may follow one the service took)
        self.fresh: set[str] = set()
        #: (run id, state) pairs already logged once (states this version does not know)
        self.told: set[tuple[str, str]] = set()
        self._hooks: list[Callable[[], None]] = []

    def on_reset(self, hook: Callable[[], None]) -> None:
        """Call ``hook()`` on every :meth:`reset` (backend client, monitor thread, ...)."""
        if hook not in self._hooks:
            self._hooks.append(hook)

    def reset(self) -> None:
        """Forget every cache and in-flight mark, and reset every registered resource."""
        for hook in list(self._hooks):
            hook()
        with self.lock:
            self.registries.clear()
            self.runs.clear()
            self.schema_classes.clear()
            self.submitting.clear()
            self.fresh.clear()
            self.told.clear()


#: The one process-wide state.
state = ProcessState()
