"""EmulatorConfig (validated once, wherever it is built) and Emulator.configure() on a
running emulator, observed through the unmodified SDK."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from google.genai import errors

from gemini_batch_magic.emulator import Emulator, EmulatorConfig
from gemini_batch_magic.emulator.__main__ import _build_parser, config_from_args

from .conftest import make_client, raw, wait_done

_OTHER_KEY = "second-test-key"


def _inline(client: Any, n: int = 4) -> str:
    job = client.batches.create(
        model="gemini-2.5-flash",
        src=[{"contents": f"prompt {i}", "metadata": {"key": str(i)}} for i in range(n)],
    )
    return str(job.name)


def _errors_of(client: Any, name: str) -> list[Any]:
    done = wait_done(client, name)
    assert done.state is not None and done.state.name == "JOB_STATE_SUCCEEDED"
    assert done.dest is not None and done.dest.inlined_responses is not None
    return [r.error for r in done.dest.inlined_responses]


# -- EmulatorConfig ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"pending_seconds": -1}, "pending_seconds must be a finite number >= 0, got -1.0"),
        ({"rate": math.inf}, "rate must be a finite number >= 0, got inf"),
        ({"expire_after": math.nan}, "expire_after must be a finite number >= 0"),
        ({"fail_rate": 1.5}, "fail_rate must be between 0 and 1, got 1.5"),
        ({"http_fault_rate": -0.1}, "http_fault_rate must be between 0 and 1"),
        ({"drop_after_create_rate": math.nan}, "drop_after_create_rate must be between 0 and 1"),
        ({"seed": 1.5}, "seed must be an integer, got 1.5"),
        ({"seed": True}, "seed must be an integer, got True"),
        ({"port": 70000}, "port must be between 0 and 65535, got 70000"),
        ({"host": ""}, "host must not be empty"),
        ({"host": "192.0.2.1"}, "allow_remote=True"),
        ({"processes": -1}, r"processes must be an integer >= 0 \(0 = answer in-thread\)"),
        ({"responder": "echo"}, "responder must be callable"),
        ({"api_key": "  "}, "api_key must not be blank"),
        ({"api_key": 42}, "api_key must be a string, got int"),
    ],
)
def test_a_bad_option_is_refused_the_same_way_everywhere(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        EmulatorConfig(**options)
    with pytest.raises(ValueError, match=message):
        Emulator(**options)
    with pytest.raises(ValueError, match=message):
        EmulatorConfig().replace(**options)
    with Emulator() as emu:  # and on a running emulator, leaving it as it was
        before = emu.config
        with pytest.raises(ValueError, match=message):
            emu.configure(**options)
        assert emu.config == before


def test_config_normalises_values_and_hides_the_key(tmp_path: Path) -> None:
    cfg = EmulatorConfig(
        pending_seconds=2, fail_rate=0, data_dir=str(tmp_path), api_key=f" {_OTHER_KEY} "
    )
    assert cfg.pending_seconds == 2.0 and isinstance(cfg.pending_seconds, float)
    assert cfg.data_dir == tmp_path and isinstance(cfg.data_dir, Path)
    assert cfg.api_key == _OTHER_KEY
    assert _OTHER_KEY not in repr(cfg)
    assert isinstance(cfg.processes, int) and cfg.processes >= 1  # None = the default
    assert EmulatorConfig(host="192.0.2.1", allow_remote=True).host == "192.0.2.1"
    with pytest.raises(AttributeError):
        cfg.rate = 5.0  # type: ignore[misc]


def test_unknown_option_names_suggest_the_close_ones() -> None:
    with pytest.raises(TypeError, match=r"unknown emulator option 'fail_rat'.*'fail_rate'"):
        Emulator(fail_rat=0.5)
    with pytest.raises(TypeError, match="Valid options: allow_remote, api_key, batch_id_length, data_dir"):
        EmulatorConfig().replace(colour="blue")
    with Emulator() as emu, pytest.raises(TypeError, match="'pending_seconds'"):
        emu.configure(pending_second=1)


def test_the_constructor_takes_a_config_and_overrides() -> None:
    base = EmulatorConfig(pending_seconds=5, seed=3)
    emu = Emulator(base, seed=4)
    assert emu.config == base.replace(seed=4)
    assert (emu.pending_seconds, emu.seed, emu.rate, emu.shuffle) == (5.0, 4, 0.0, True)
    assert Emulator(base).config is base
    with pytest.raises(TypeError, match="config must be an EmulatorConfig, got float"):
        Emulator(2.0)  # type: ignore[arg-type]


def test_options_are_read_only_attributes() -> None:
    emu = Emulator(fail_rate=0.25, port=0)
    assert emu.fail_rate == 0.25 and emu.port == 0 and emu.expire_after is None
    with pytest.raises(AttributeError, match=r"read-only: use emu.configure\(fail_rate=...\)"):
        emu.fail_rate = 0.5
    assert emu.fail_rate == 0.25


def test_the_command_line_builds_the_same_config(tmp_path: Path) -> None:
    args = _build_parser().parse_args(
        ["--pending-seconds", "0.5", "--rate", "10", "--fail-rate", "0.1", "--seed", "7",
         "--no-shuffle", "--data-dir", str(tmp_path), "--processes", "0",
         "--api-key", _OTHER_KEY, "--expire-after", "30"]
    )
    assert config_from_args(args) == EmulatorConfig(
        pending_seconds=0.5, rate=10, fail_rate=0.1, seed=7, shuffle=False,
        data_dir=tmp_path, processes=0, api_key=_OTHER_KEY, expire_after=30,
    )
    defaults = config_from_args(_build_parser().parse_args([]))
    assert defaults.pending_seconds == 2.0 and defaults.host == "127.0.0.1"
    assert not defaults.allow_remote


# -- configure() on a running emulator ----------------------------------------------------


def test_fail_rate_takes_effect_on_the_next_batch(emu: Emulator) -> None:
    client = make_client(emu)
    before = _inline(client)
    assert _errors_of(client, before) == [None] * 4
    emu.configure(fail_rate=1.0)
    assert emu.fail_rate == 1.0
    failed = _errors_of(client, _inline(client))
    assert [(e.code, e.message) for e in failed] == [
        (13, "Simulated failure (fail_rate).")
    ] * 4
    assert _errors_of(client, before) == [None] * 4  # an existing batch keeps its options
    emu.configure(fail_rate=0.0)
    assert _errors_of(client, _inline(client)) == [None] * 4


def test_pending_seconds_takes_effect_on_the_next_batch(emu: Emulator) -> None:
    client = make_client(emu)
    emu.configure(pending_seconds=3600)
    waiting = _inline(client)
    emu.configure(pending_seconds=0)
    assert _errors_of(client, _inline(client)) == [None] * 4
    job = client.batches.get(name=waiting)
    assert job.state is not None and job.state.name == "JOB_STATE_PENDING"


def test_http_faults_and_the_api_key_change_at_once(emu: Emulator) -> None:
    client = make_client(emu)
    assert list(client.batches.list()) == []
    emu.configure(http_fault_rate=1.0)
    with pytest.raises(errors.APIError) as e:
        client.batches.list()
    assert e.value.code in (429, 503)
    emu.configure(http_fault_rate=0.0, api_key=_OTHER_KEY)
    with pytest.raises(errors.APIError, match="API key not valid") as e:
        client.batches.list()
    assert e.value.code == 400
    assert raw(emu, "GET", "/v1beta/batches", key=_OTHER_KEY).status == 200
    emu.configure(api_key=None)  # any key again
    assert list(client.batches.list()) == []


def test_a_new_seed_restarts_the_fault_stream(make_emu: Any) -> None:
    def statuses(emu: Emulator) -> list[int]:
        return [raw(emu, "GET", "/v1/batches").status for _ in range(30)]

    fresh = statuses(make_emu(http_fault_rate=0.5, seed=5))
    changed = make_emu(seed=1)
    statuses(changed)
    changed.configure(http_fault_rate=0.5, seed=5)
    assert statuses(changed) == fresh
    assert set(fresh) == {200, 429, 503}


@pytest.mark.parametrize(
    ("name", "value", "why"),
    [
        ("port", 1, "the socket is already bound"),
        ("host", "localhost", "the socket is already bound"),
        ("allow_remote", True, "which host may be bound"),
        ("data_dir", "/elsewhere", "the store is open on it"),
        ("processes", 3, "sized when the emulator starts"),
        ("responder", lambda request, model: {}, "pure function of it"),
    ],
)
def test_options_fixed_at_start_are_refused_on_a_running_emulator(
    emu: Emulator, name: str, value: Any, why: str
) -> None:
    before = emu.config
    with pytest.raises(ValueError, match=rf"{name} cannot change on a running emulator \(.*{why}"):
        emu.configure(**{name: value}, fail_rate=0.5)
    assert emu.config == before  # nothing changed, fail_rate included
    emu.configure(**{name: getattr(before, name)})  # the current value is no change


def test_every_option_is_either_live_or_fixed_with_a_reason() -> None:
    from gemini_batch_magic.emulator._config import FIXED_OPTIONS, LIVE_OPTIONS, OPTION_NAMES

    assert LIVE_OPTIONS.isdisjoint(FIXED_OPTIONS)
    assert LIVE_OPTIONS | set(FIXED_OPTIONS) == set(OPTION_NAMES)


def test_before_start_every_option_can_change_and_after_close_none(tmp_path: Path) -> None:
    emu = Emulator()
    emu.configure(data_dir=tmp_path / "d", pending_seconds=0.5, processes=0)
    with emu:
        assert emu.data_dir == tmp_path / "d"
        assert emu.pending_seconds == 0.5 and emu.workers()["processes"] == []
        assert emu.port != 0  # the bound port
    with pytest.raises(RuntimeError, match="closed"):
        emu.configure(fail_rate=0.1)
