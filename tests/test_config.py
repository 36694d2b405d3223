"""Settings: one object shared by the Python API, %config and the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

import gemini_batch_magic as gbm
from gemini_batch_magic._config import Settings


def test_configure_changes_settings_and_validates() -> None:
    gbm.configure(model="gemini-2.5-pro", poll_interval="3.5", max_requests_per_shard=10)
    assert gbm.settings.model == "gemini-2.5-pro"
    assert gbm.settings.poll_interval == 3.5
    assert gbm.settings.max_requests_per_shard == 10


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"modle": "x"}, "unknown setting(s) modle; valid settings: model"),
        ({"model": "Gemini Pro!"}, "invalid model name 'Gemini Pro!'"),
        ({"backend": "cloud"}, "choose one of auto, local, gemini"),
        ({"poll_interval": 0}, "poll_interval must be at least"),
        ({"max_requests_per_shard": "many"}, "must be a int, got 'many'"),
    ],
)
def test_bad_settings_say_which_value_and_what_is_valid(options: dict, message: str) -> None:
    before = gbm.settings.as_dict()
    with pytest.raises(gbm.ConfigError) as info:
        gbm.configure(**options)
    assert message in str(info.value)
    assert gbm.settings.as_dict() == before  # nothing half-applied


def test_environment_sets_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GEMBATCH_MODEL", "gemini-2.5-flash-lite")
    monkeypatch.setenv("GEMBATCH_BACKEND", "LOCAL")
    monkeypatch.setenv("GEMBATCH_HOME", str(tmp_path / "h"))
    s = Settings.from_env()
    assert (s.model, s.backend, s.home) == ("gemini-2.5-flash-lite", "local", tmp_path / "h")
