"""The one background poller: live while runs are live, gone when they are done."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest

import gemini_batch_magic as gbm
from gemini_batch_magic import _monitor
from gemini_batch_magic._config import settings


def _wait_for(cond: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


@pytest.fixture(autouse=True)
def clean_monitor() -> Iterator[None]:
    yield
    _monitor.reset()
    _wait_for(lambda: not _monitor.monitor_running(), "monitor did not stop")


def _submit(n: int, tag: str) -> gbm.BatchRun:
    return gbm.submit(pd.DataFrame({"p": [f"{tag} {i}" for i in range(n)]}), "p")


def test_one_thread_follows_every_run_and_stops_when_all_are_done(emulator_factory: Any) -> None:
    emulator_factory(pending_seconds=0.2, rate=20)
    runs = [_submit(6, "a"), _submit(3, "b")]
    calls: dict[str, list[tuple[str, BaseException | None]]] = {r.run_id: [] for r in runs}
    for r in runs:
        _monitor.watch(r, lambda run, err: calls[run.run_id].append((run.state, err)))
    assert _monitor.monitor_running()
    threads = [t for t in threading.enumerate() if t.name == "gembatch-monitor"]
    assert len(threads) == 1
    _wait_for(lambda: not _monitor.monitor_running(), "the monitor never stopped")
    for r in runs:
        assert r.state == "SUCCEEDED"
        states = [s for s, _ in calls[r.run_id]]
        assert states[-1] == "SUCCEEDED", states
        assert all(err is None for _, err in calls[r.run_id])
    assert _monitor.watched_runs() == []
    # a new watch starts a new thread; a finished run is reported once and dropped
    seen: list[str] = []
    _monitor.watch(runs[0], lambda run, err: seen.append(run.state))
    _wait_for(lambda: not _monitor.monitor_running(), "the monitor never stopped again")
    assert seen == ["SUCCEEDED"]


def test_quiet_runs_are_polled_less_and_less_often(emulator_factory: Any) -> None:
    emulator_factory(pending_seconds=120)
    settings.poll_interval = 0.02
    settings.max_poll_interval = 0.1
    run = _submit(2, "slow")
    intervals: list[float] = []
    _monitor.watch(run, lambda r, e: intervals.append(
        _monitor.monitor.entries()[r.run_id].interval))
    _wait_for(lambda: len(intervals) >= 8, "too few polls")
    # each quiet poll waits longer (x1.5) until max_poll_interval, never longer
    assert intervals[:8] == sorted(intervals[:8]) and intervals[0] < 0.1
    assert intervals[7] == pytest.approx(0.1)
    # cancelling changes the state: the run finishes and the thread ends
    run.cancel()
    _monitor.poll_now(run)
    _wait_for(lambda: not _monitor.monitor_running(), "the monitor never stopped")
    assert run.state == "CANCELLED"


def test_unwatch_stops_polling_and_the_thread(emulator_factory: Any) -> None:
    emulator_factory(pending_seconds=120)
    run = _submit(1, "x")
    _monitor.watch(run)
    assert _monitor.watched_runs() == [run.run_id]
    _monitor.unwatch(run)
    _wait_for(lambda: not _monitor.monitor_running(), "the monitor never stopped")
    assert _monitor.watched_runs() == []


def test_a_broken_callback_does_not_stop_the_others(emulator_factory: Any) -> None:
    emulator_factory(pending_seconds=0.1)
    run = _submit(2, "cb")
    seen: list[str] = []

    def broken(r: Any, e: Any) -> None:
        raise RuntimeError("widget bug")

    _monitor.watch(run, broken)
    _monitor.watch(run, lambda r, e: seen.append(r.state))
    _wait_for(lambda: not _monitor.monitor_running(), "the monitor never stopped")
    assert seen and seen[-1] == "SUCCEEDED"


def test_a_run_finished_elsewhere_is_shown_finished_before_it_is_dropped(
    emulator_factory: Any,
) -> None:
    """wait() in the kernel finishes the run between two polls: callbacks still see it done."""
    emulator_factory(pending_seconds=0.3)
    settings.poll_interval = settings.max_poll_interval = 30.0  # the monitor polls once
    run = _submit(3, "elsewhere")
    seen: list[str] = []
    _monitor.watch(run, lambda r, e: seen.append(r.state))
    _wait_for(lambda: seen, "the first poll did not happen")
    run.wait(poll_interval=0.02, progress=False)  # the kernel's own wait finishes the run
    assert run.done and seen[-1] != run.state
    assert _monitor.wait_idle(timeout=60)
    assert seen[-1] == "SUCCEEDED"
    assert not _monitor.monitor_running()


def test_many_due_runs_are_polled_with_one_listing_and_still_finish(
    emulator_factory: Any,
) -> None:
    """Five runs due together cost one batches.list per round, not five gets; their progress
    still reaches the callbacks and finished runs are still fetched (results downloaded)."""
    emu = emulator_factory(pending_seconds=1.0, rate=0)
    settings.poll_interval = 0.2
    settings.max_poll_interval = 0.2
    runs = [_submit(2, f"many-{i}") for i in range(5)]
    emu.calls.clear()
    states: dict[str, list[str]] = {r.run_id: [] for r in runs}
    for r in runs:
        _monitor.watch(r, lambda run, err: states[run.run_id].append(run.state))
    _wait_for(lambda: not _monitor.monitor_running(), "the monitor never stopped")
    calls = list(emu.calls)
    lists = [p for m, p in calls if m == "GET" and p.split("?")[0].endswith("/batches")]
    gets = [p for m, p in calls if m == "GET" and "/batches/" in p]
    assert lists, calls
    # while pending, rounds were answered by the listing: gets are only for finished batches
    # (one each, to read their output), not one per run per round
    assert len(gets) <= 2 * len(runs), (len(gets), len(lists))
    for r in runs:
        assert states[r.run_id][-1] == "SUCCEEDED"
        assert r.result()["response"].notna().all()


def test_listing_that_fails_falls_back_to_one_get_per_run(
    emulator_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator_factory(pending_seconds=0.3, rate=0)
    settings.poll_interval = 0.1
    settings.max_poll_interval = 0.1
    from gemini_batch_magic import _backend

    runs = [_submit(2, f"fallback-{i}") for i in range(4)]
    client = _backend.get_client()

    def broken_list(**kw: Any) -> Any:
        raise RuntimeError("listing is down")

    monkeypatch.setattr(client.batches, "list", broken_list)
    for r in runs:
        _monitor.watch(r)
    _wait_for(lambda: not _monitor.monitor_running(), "the monitor never stopped")
    assert all(r.state == "SUCCEEDED" for r in runs)


def test_a_run_is_watched_through_its_own_methods(emulator_factory: Any) -> None:
    emulator_factory(pending_seconds=120)
    run = _submit(1, "own")
    seen: list[str] = []

    def callback(r: Any, e: Any) -> None:
        seen.append(r.state)

    run.watch(callback)
    entries = _monitor.monitor.entries()
    assert list(entries) == [run.run_id] and entries[run.run_id].callbacks == 1
    _wait_for(lambda: seen, "the first poll did not happen")
    run.unwatch(callback)
    assert _monitor.monitor.entries()[run.run_id].callbacks == 0
    run.unwatch()
    _wait_for(lambda: not _monitor.monitor_running(), "the monitor never stopped")
    assert _monitor.monitor.entries() == {}


def test_the_monitor_knows_runs_by_duck_type_only() -> None:
    """Any object with the run's few attributes can be watched: no engine behind it."""

    class Countdown:
        run_id, error = "duck", None

        def __init__(self) -> None:
            self.polls = 0
            self.batch_names: list[str] = []
            self.live_batch_names: set[str] = set()

        @property
        def state(self) -> str:
            return "SUCCEEDED" if self.polls >= 3 else "RUNNING"

        @property
        def done(self) -> bool:
            return self.state == "SUCCEEDED"

        @property
        def stats(self) -> tuple[int, ...]:
            return (3, min(self.polls, 3), 0, 0)

        def refresh(self, known: Any = None) -> Countdown:
            self.polls += 1
            return self

    own = _monitor.Monitor()  # an instance of its own: the process-wide one stays idle
    duck = Countdown()
    states: list[str] = []
    own.watch(duck, lambda r, e: states.append(r.state))
    assert own.running() and not _monitor.monitor_running()
    _wait_for(lambda: not own.running(), "the monitor never stopped")
    assert states[-1] == "SUCCEEDED" and duck.polls == 3
    assert own.watched_runs() == []
