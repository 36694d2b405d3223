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


def test_a_bad_value_is_both_configerror_and_traiterror_with_fields() -> None:
    from traitlets import TraitError

    with pytest.raises(gbm.ConfigError) as info:
        gbm.configure(retry_attempts=0)
    assert isinstance(info.value, TraitError)  # what traitlets and %config expect
    assert (info.value.setting, info.value.value) == ("retry_attempts", 0)
    assert "retry_attempts must be at least 1, got 0" in str(info.value)
    with pytest.raises(TraitError, match=r"'cloud'.*choose one of auto, local, gemini"):
        gbm.settings.backend = "cloud"  # plain assignment is checked the same way
    assert gbm.settings.backend == "auto"


def test_configure_applies_all_or_nothing_and_suggests_close_names() -> None:
    with pytest.raises(gbm.ConfigError):
        gbm.configure(model="gemini-2.5-pro", max_concurrent_shards=-1)
    assert gbm.settings.model == "gemini-2.5-flash"  # the good value was rolled back
    with pytest.raises(gbm.ConfigError, match="did you mean poll_interval"):
        gbm.configure(pol_interval=1)
    assert gbm.configure(backend=" Local ") is gbm.settings and gbm.settings.backend == "local"


def test_environment_defaults_are_read_by_a_new_settings_object(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GEMBATCH_MODEL", "not a model")
    with pytest.raises(gbm.ConfigError, match=r"\$GEMBATCH_MODEL.*'not a model'"):
        _ = Settings().model
    monkeypatch.delenv("GEMBATCH_MODEL")
    monkeypatch.setenv("GEMBATCH_BACKEND", "cloud")
    with pytest.raises(gbm.ConfigError, match=r"\$GEMBATCH_BACKEND.*choose one of"):
        _ = Settings().backend
    monkeypatch.delenv("GEMBATCH_BACKEND")
    s = Settings(poll_interval="0.5")
    assert (s.model, s.backend, s.poll_interval) == ("gemini-2.5-flash", "auto", 0.5)


def test_home_is_a_path_and_changing_it_moves_the_embedded_emulator(tmp_path: Path) -> None:
    import pandas as pd

    gbm.configure(backend="local", emulator_pending_seconds=0.0, emulator_rate=0.0)
    run = pd.DataFrame({"p": ["a"]}).gembatch.submit("p")
    assert run.wait(progress=False).result()["response"].tolist() == ["a"]
    first = gbm.backend_info().base_url
    gbm.configure(home=gbm.settings.home, backend="local")  # no change: the emulator stays
    assert gbm.backend_info().base_url == first
    gbm.configure(home=str(tmp_path / "elsewhere"))
    assert gbm.settings.home == tmp_path / "elsewhere"  # a Path, whatever was given
    assert gbm.runs().empty  # a new registry ...
    assert gbm.backend_info().base_url != first  # ... and a new embedded emulator
    assert (tmp_path / "elsewhere" / "emulator").is_dir()
    assert gbm.settings.as_dict()["home"] == str(tmp_path / "elsewhere")
