"""``%%gembatch`` / ``%gembatch`` / ``%config GemBatch`` through a real IPython shell."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.testing.globalipapp import start_ipython
from traitlets import TraitError

import gemini_batch_magic as gbm
from gemini_batch_magic import _monitor
from gemini_batch_magic._config import settings


@pytest.fixture(scope="module")
def ip() -> InteractiveShell:
    shell = start_ipython() or InteractiveShell.instance()
    return shell


@pytest.fixture(autouse=True)
def loaded(ip: InteractiveShell) -> Iterator[InteractiveShell]:
    ip.run_line_magic("load_ext", "gemini_batch_magic")
    yield ip
    ip.run_line_magic("unload_ext", "gemini_batch_magic")
    ip.config.pop("GemBatch", None)  # %config persists in the shell's config: forget it
    for name in ("out", "df", "run", "res", "answers", "est", "Review", "big"):
        ip.user_ns.pop(name, None)
    _monitor.reset()
    deadline = time.monotonic() + 60
    while _monitor.monitor_running():
        assert time.monotonic() < deadline
        time.sleep(0.02)


def _sent(emu: Any) -> list[tuple[str, str]]:
    """The calls that would send or store something: all but looking up models."""
    return [(m, p) for m, p in emu.calls if not (m == "GET" and "/models" in p)]


#: 20 rows to gemini-2.5-pro with room for 65,536 output tokens each: estimated $6.55,
#: above the default confirm_above of $5
EXPENSIVE = "--df big -m gemini-2.5-pro --max-output-tokens 65536"


def _big() -> pd.DataFrame:
    return pd.DataFrame({"text": [f"t{i}" for i in range(20)]})


def _fails_short(ip: InteractiveShell, cell: str, capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``cell``: it must fail (so nbclient would stop) with a short UsageError message."""
    capsys.readouterr()
    result = ip.run_cell(cell)
    captured = capsys.readouterr()
    assert not result.success, "the cell should fail"
    assert isinstance(result.error_in_exec, UsageError), repr(result.error_in_exec)
    text = captured.out + captured.err
    assert "Traceback" not in text and len(text.strip().splitlines()) <= 3, text
    assert "UsageError" in text
    return str(result.error_in_exec)


# ------------------------------------------------------------------ %config GemBatch
def test_config_sets_the_package_settings(ip: InteractiveShell) -> None:
    ip.run_line_magic("config", "GemBatch.model = 'gemini-2.5-pro'")
    assert settings.model == "gemini-2.5-pro"
    assert ip.run_line_magic("config", "GemBatch.model") == "gemini-2.5-pro"
    ip.run_line_magic("config", "GemBatch.poll_interval = 0.5")
    assert settings.poll_interval == 0.5
    gbm.configure(max_poll_interval=7)  # Python and magics share one source of truth
    assert ip.run_line_magic("config", "GemBatch.max_poll_interval") == 7


def test_config_refuses_bad_values_and_names_them(
    ip: InteractiveShell, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        ip.run_line_magic("config", "GemBatch.model = 'Not A Model!'")
    assert settings.model == "gemini-2.5-flash"
    assert "'Not A Model!'" in caplog.text  # %config logs the TraitError, naming the value
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        ip.run_line_magic("config", "GemBatch.poll_interval = -1")
    assert "poll_interval must be at least" in caplog.text and "got -1" in caplog.text
    configurable = next(c for c in ip.configurables if type(c).__name__ == "GemBatch")
    assert configurable is settings  # %config GemBatch is the package settings object
    with pytest.raises(TraitError, match="'Not A Model!'"):
        configurable.model = "Not A Model!"
    with pytest.raises(TraitError, match="-3"):
        configurable.poll_interval = -3
    with pytest.raises(TraitError, match="'fast'"):
        configurable.backend = "fast"
    assert settings.poll_interval == 0.05 and settings.backend == "auto"


def test_config_lists_the_options(ip: InteractiveShell, capsys: pytest.CaptureFixture[str]) -> None:
    ip.run_line_magic("config", "GemBatch")
    out = capsys.readouterr().out
    for name in ("model", "poll_interval", "max_poll_interval", "home", "inline_limit_bytes",
                 "max_file_bytes", "max_requests_per_shard", "backend"):
        assert f"GemBatch.{name}" in out
    # every engine setting is an option, with its help, default and current value
    for name in gbm.Settings.names():
        assert f"GemBatch.{name}=" in out
    assert "First delay (seconds) between status polls of a live run" in out
    assert "Default: 2.0." in out and "Current: 0.05" in out
    assert "$GEMBATCH_MODEL" in out


# ------------------------------------------------------------------ %%gembatch
def test_lines_are_prompts_keyed_by_line_number(ip: InteractiveShell, emu: Any) -> None:
    result = ip.run_cell("%%gembatch out --wait\nfirst question\n\nsecond question\n")
    assert result.success, result.error_in_exec
    out = ip.user_ns["out"]
    assert isinstance(out, pd.DataFrame)
    assert out.index.tolist() == [1, 3]
    assert out["response"].tolist() == ["first question", "second question"]
    assert result.result is None  # OUT receives the value; nothing else is returned


def test_df_template_wait_aligns_to_the_index(ip: InteractiveShell, emu: Any) -> None:
    df = pd.DataFrame({"text": ["good", "bad", "fine"], "lang": ["fr", "de", "it"]},
                      index=["c", "a", "b"])
    ip.user_ns["df"] = df
    ip.user_ns["name"] = "df"
    result = ip.run_cell("%%gembatch out --df $name --wait --temperature 0.1 "
                         "--max-output-tokens 50\nTranslate {text} into {lang}.")
    assert result.success, result.error_in_exec
    out = ip.user_ns["out"]
    assert out.index.equals(df.index)
    assert out["response"].tolist() == [f"Translate {t} into {g}." for t, g in
                                        zip(df["text"], df["lang"], strict=True)]
    run = gbm.attach(gbm.runs()["run_id"][0])
    assert run.record.config["generation_config"] == {"temperature": 0.1,
                                                      "max_output_tokens": 50}


def test_col_with_body_as_system_instruction_and_key(ip: InteractiveShell, emu: Any) -> None:
    ip.user_ns["df"] = pd.DataFrame({"id": ["x1", "x2"], "q": ["one", "two"]})
    result = ip.run_cell("%%gembatch --df df --col q --key id --name mine\nBe brief.\n")
    assert result.success, result.error_in_exec
    run = result.result
    assert isinstance(run, gbm.BatchRun)  # no OUT and no --wait: the run is the value
    assert run.display_name == "mine"
    assert run.record.config["system_instruction"] == "Be brief."
    assert run.record.config["key"] == "id"
    assert run.wait(progress=False).result()["response"].tolist() == ["one", "two"]


def test_without_wait_out_gets_the_run_at_once(ip: InteractiveShell, emulator_factory: Any,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    emulator_factory(pending_seconds=60)
    result = ip.run_cell("%%gembatch run -m gemini-2.5-flash-lite\nhello\n")
    assert result.success, result.error_in_exec
    run = ip.user_ns["run"]
    assert isinstance(run, gbm.BatchRun) and run.state == "PENDING"
    assert run.model == "gemini-2.5-flash-lite"
    assert run.run_id in capsys.readouterr().out  # the terminal shows the run


def test_dry_run_sends_nothing(ip: InteractiveShell, emu: Any,
                               capsys: pytest.CaptureFixture[str]) -> None:
    ip.user_ns["df"] = pd.DataFrame({"text": [f"t{i}" for i in range(5)]})
    result = ip.run_cell("%%gembatch est --df df --dry-run\nSummarise: {text}")
    assert result.success, result.error_in_exec
    assert emu.calls == []
    assert gbm.runs().empty
    est = ip.user_ns["est"]
    assert isinstance(est, gbm.Estimate) and est.requests == 5
    out = capsys.readouterr().out
    assert "dry run, nothing sent" in out and "Summarise: t0" in out


def test_schema_from_a_pydantic_model(ip: InteractiveShell, emu: Any) -> None:
    ip.run_cell("from pydantic import BaseModel\n"
                "class Review(BaseModel):\n    sentiment: str\n    score: int\n")
    ip.user_ns["df"] = pd.DataFrame({"text": ["great", "awful"]})
    result = ip.run_cell("%%gembatch out --df df --schema Review --wait\nRate: {text}")
    assert result.success, result.error_in_exec
    out = ip.user_ns["out"]
    assert {"parsed", "sentiment", "score"} <= set(out.columns)
    assert out["error"].isna().all()
    assert type(out["parsed"].iloc[0]).__name__ == "Review"


def test_user_mistakes_fail_with_one_short_line(
    ip: InteractiveShell, emu: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    ip.user_ns["df"] = pd.DataFrame({"text": ["a"]})
    msg = _fails_short(ip, "%%gembatch --df df\nSay {missing}", capsys)
    assert "missing" in msg
    msg = _fails_short(ip, "%%gembatch --df nope\nx {text}", capsys)
    assert "'nope' is not defined" in msg
    msg = _fails_short(ip, "%%gembatch --bogus\nhello", capsys)
    assert "unrecognized arguments: --bogus" in msg
    msg = _fails_short(ip, "%%gembatch -m 'Bad Model'\nhello", capsys)
    assert "'Bad Model'" in msg
    msg = _fails_short(ip, "%%gembatch\n\n", capsys)
    assert "empty" in msg
    msg = _fails_short(ip, "%%gembatch --max-cost 0\nhello", capsys)
    assert "max_cost" in msg
    msg = _fails_short(ip, "%gembatch frobnicate", capsys)
    assert "valid subcommands: list, status, wait, results, cancel, retry" in msg
    msg = _fails_short(ip, "%gembatch status zzzz", capsys)
    assert "no run 'zzzz'" in msg
    msg = _fails_short(ip, "%gembatch wait", capsys)
    assert "needs a run id" in msg and "--all" in msg
    assert _sent(emu) == [] and gbm.runs().empty


def test_options_are_never_abbreviated(ip: InteractiveShell, emu: Any,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    ip.user_ns["df"] = pd.DataFrame({"text": ["a"]})
    msg = _fails_short(ip, "%%gembatch --df df --temp 0.2\nSay {text}", capsys)
    assert "unrecognized arguments: --temp" in msg
    assert "did you mean --temperature?" in msg  # the error names the option meant
    msg = _fails_short(ip, "%%gembatch --df df --dry\nSay {text}", capsys)
    assert "did you mean --dry-run?" in msg  # not a dry run: an error
    msg = _fails_short(ip, "%gembatch wait --time 3 x", capsys)
    assert "unrecognized arguments: --time" in msg and "--timeout" in msg
    msg = _fails_short(ip, "%%gembatch --df df --yess\nSay {text}", capsys)
    assert "did you mean --yes?" in msg
    assert emu.calls == [] and gbm.runs().empty  # nothing was even looked up


def test_a_template_without_a_placeholder_is_refused(
    ip: InteractiveShell, emu: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    ip.user_ns["df"] = pd.DataFrame({"text": ["a", "b", "c"]})
    msg = _fails_short(ip, "%%gembatch --df df --wait\nSummarise this review.", capsys)
    assert "no {column} placeholder" in msg and "3 times" in msg
    assert "To send one constant prompt per row on purpose" in msg
    assert _sent(emu) == [] and gbm.runs().empty


# ------------------------------------------------------------------ spend safety
def test_above_confirm_above_a_terminal_refuses_naming_yes(
    ip: InteractiveShell, emu: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """A terminal (and any shell without a person behind the request) cannot click."""
    ip.user_ns["big"] = _big()
    msg = _fails_short(ip, f"%%gembatch run {EXPENSIVE}\nSay {{text}}", capsys)
    assert "estimated at $6.55 (20 requests to gemini-2.5-pro)" in msg
    assert "above confirm_above=$5.00, so nothing was sent" in msg
    assert "add --yes to the %%gembatch line" in msg
    assert _sent(emu) == [] and gbm.runs().empty and "run" not in ip.user_ns
    # max_cost still refuses outright, confirmed or not
    msg = _fails_short(ip, f"%%gembatch run {EXPENSIVE} --yes --max-cost 1\nSay {{text}}",
                       capsys)
    assert "exceeds max_cost=$1.0000" in msg
    assert _sent(emu) == [] and gbm.runs().empty
    # --yes sends
    result = ip.run_cell(f"%%gembatch run {EXPENSIVE} --yes\nSay {{text}}")
    assert result.success, result.error_in_exec
    assert ip.user_ns["run"].n_rows == 20 and len(emu.batches()) == 1


def test_confirm_above_is_a_setting_none_turns_it_off(
    ip: InteractiveShell, emu: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    ip.user_ns["big"] = _big()
    ip.run_line_magic("config", "GemBatch.confirm_above = 10.0")
    result = ip.run_cell(f"%%gembatch run {EXPENSIVE}\nSay {{text}}")
    assert result.success, result.error_in_exec  # $6.55 is below $10
    ip.run_line_magic("config", "GemBatch.confirm_above = 0.5")
    ip.user_ns["big"] = _big().head(2)
    msg = _fails_short(ip, f"%%gembatch run {EXPENSIVE}\nSay {{text}}", capsys)
    assert "$0.66" in msg and "confirm_above=$0.50" in msg
    ip.run_line_magic("config", "GemBatch.confirm_above = None")
    result = ip.run_cell(f"%%gembatch run {EXPENSIVE}\nSay {{text}}")
    assert result.success, result.error_in_exec
    assert len(emu.batches()) == 2


def test_keep_inputs_keeps_the_uploaded_request_file(ip: InteractiveShell, emu: Any) -> None:
    """A file batch's uploaded requests are deleted once it ends, unless --keep-inputs."""
    ip.user_ns["df"] = pd.DataFrame({"text": [f"row {i}" for i in range(150)]})  # a file
    for flag in ("", "--keep-inputs"):
        result = ip.run_cell(f"%%gembatch out --df df --wait {flag}\nSay {{text}} {flag}")
        assert result.success, result.error_in_exec
    uploaded = [f["name"] for f in emu.files() if f["source"] == "UPLOADED"]
    kept, dropped = (gbm.attach(r) for r in gbm.runs()["run_id"])  # newest first
    assert kept.record.config["keep_inputs"] and not dropped.record.config["keep_inputs"]
    assert uploaded == [kept.shards[0].upload_name]


# ------------------------------------------------------------------ %gembatch
def test_every_subcommand(ip: InteractiveShell, emu: Any,
                          capsys: pytest.CaptureFixture[str]) -> None:
    ip.run_cell("%%gembatch run\nok line\nbad line [[fail]]\n")
    run = ip.user_ns["run"]
    listed = ip.run_line_magic("gembatch", "list")
    assert listed.frame["run_id"].tolist() == [run.run_id]
    text = repr(listed)
    assert text.split("\n")[0].split() == ["id", "name", "state", "progress", "rows", "model",
                                           "age", "cost"]
    assert run.run_id in text and max(map(len, text.splitlines())) <= 100
    assert "backend" in repr(ip.run_line_magic("gembatch", "list --all"))
    assert ip.run_line_magic("gembatch", f"wait {run.run_id}") is None
    assert run.state == "SUCCEEDED"
    status = ip.run_line_magic("gembatch", "status run")  # a variable holding the run
    assert status is run
    res = ip.run_line_magic("gembatch", f"results {run.run_id[:5]}")
    assert res["response"].tolist()[0] == "ok line" and pd.isna(res["response"].iloc[1])
    assert ip.run_line_magic("gembatch", f"results {run.run_id} -o res") is None
    assert ip.user_ns["res"]["error"].notna().tolist() == [False, True]
    child = ip.run_line_magic("gembatch", f"retry {run.run_id}")
    assert isinstance(child, gbm.BatchRun) and child.parent_id == run.run_id
    attached = ip.run_line_magic("gembatch", f"attach {run.batch_names[0]}")
    assert attached.run_id == run.run_id
    ip.run_line_magic("gembatch", f"attach {run.run_id} -o answers")
    assert ip.user_ns["answers"] is run
    panel = ip.run_line_magic("gembatch", "panel")
    assert type(panel).__name__ == "JobsPanel" and len(panel.rows) == 2
    capsys.readouterr()
    ip.run_line_magic("gembatch", "backend")
    out = capsys.readouterr().out
    assert "external endpoint" in out and "API key from: no key" in out
    ip.run_line_magic("gembatch", "help")
    manual = capsys.readouterr().out
    assert "%%gembatch [OUT] [options]" in manual  # plain text in a terminal: no markup
    assert "``" not in manual and ":class:" not in manual


def test_wait_all_waits_for_every_run_and_widget(ip: InteractiveShell,
                                                 emulator_factory: Any,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    emulator_factory(pending_seconds=0.2, rate=10)
    ip.run_cell("%%gembatch one\na\nb\n")
    ip.run_cell("%%gembatch two\nc\n")
    from gemini_batch_magic.widgets import ProgressWidget

    widget = ProgressWidget(ip.user_ns["one"], display_now=False)
    capsys.readouterr()
    assert ip.run_line_magic("gembatch", "wait --all") is None
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2, lines  # one summary line per run, nothing else
    assert {line.split()[0] for line in lines} == {ip.user_ns["one"].run_id,
                                                   ip.user_ns["two"].run_id}
    assert all(" SUCCEEDED " in line and "answered (100%)" in line for line in lines)
    assert widget.percent == 100.0 and widget.tone == "success"
    assert not _monitor.monitor_running()
    for name in ("one", "two"):
        ip.user_ns.pop(name)


def test_cancel_subcommand(ip: InteractiveShell, emulator_factory: Any) -> None:
    emu = emulator_factory(pending_seconds=60)
    ip.run_cell("%%gembatch run\nwait for me\n")
    run = ip.user_ns["run"]
    ip.run_line_magic("gembatch", f"cancel {run.run_id}")
    assert run.state == "CANCELLED"
    assert emu.batches()[0]["state"] == "BATCH_STATE_CANCELLED"


def test_backend_never_shows_the_key(ip: InteractiveShell, emulator_factory: Any,
                                     monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", "fake-secret-0123456789")
    emulator_factory()
    capsys.readouterr()
    ip.run_line_magic("gembatch", "backend")
    out = capsys.readouterr().out
    assert "$GEMINI_API_KEY" in out and "fake-secret" not in out


def test_backend_says_the_key_came_from_the_colab_secret(
    ip: InteractiveShell, emulator_factory: Any, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str]
) -> None:
    """In Colab with no key in the environment, the notebook's secret is used, and said."""
    import types

    secret = "colab-secret-for-tests"
    colab = types.ModuleType("google.colab")
    userdata = types.ModuleType("google.colab.userdata")
    userdata.get = {"GEMINI_API_KEY": secret}.__getitem__  # type: ignore[attr-defined]
    colab.userdata = userdata  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.setitem(sys.modules, "google.colab.userdata", userdata)
    emu = emulator_factory()
    capsys.readouterr()
    ip.run_line_magic("gembatch", "backend")
    out = capsys.readouterr().out
    assert "API key from Colab secret GEMINI_API_KEY" in out
    assert "API key from: Colab secret GEMINI_API_KEY" in out and secret not in out
    ip.run_cell("%%gembatch run --wait\nhello\n")
    assert emu.batches()[0]["state"] == "BATCH_STATE_SUCCEEDED"  # the secret was the key


def test_unload_removes_the_magics(ip: InteractiveShell) -> None:
    ip.run_line_magic("unload_ext", "gemini_batch_magic")
    assert "gembatch" not in ip.magics_manager.magics["line"]
    assert settings not in ip.configurables
    ip.run_line_magic("load_ext", "gemini_batch_magic")
    assert "gembatch" in ip.magics_manager.magics["cell"]


def test_help_and_missing_subcommand(ip: InteractiveShell, capsys: pytest.CaptureFixture[str]
                                     ) -> None:
    ip.run_cell_magic("gembatch", "--help", "anything")
    assert "--dry-run" in capsys.readouterr().out
    msg = _fails_short(ip, "%gembatch", capsys)
    assert "needs a subcommand" in msg and "list" in msg
    msg = _fails_short(ip, "%gembatch results", capsys)
    assert "the following arguments are required: run" in msg


def test_profile_config_is_applied_on_load(ip: InteractiveShell) -> None:
    """``c.GemBatch.model = ...`` in ipython_config.py reaches the settings at load time."""
    from traitlets.config import Config

    ip.run_line_magic("unload_ext", "gemini_batch_magic")
    cfg = Config()
    cfg.GemBatch.model = "gemini-2.5-flash-lite"
    cfg.GemBatch.max_poll_interval = 9.0
    ip.config.merge(cfg)
    ip.run_line_magic("load_ext", "gemini_batch_magic")
    assert settings.model == "gemini-2.5-flash-lite" and settings.max_poll_interval == 9.0


# ------------------------------------------------------------------ in a real kernel
@pytest.fixture
def jupyter_dirs(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Kernel connection files, IPython profile and Jupyter data stay in ``tmp_path``."""
    for var, sub in (("JUPYTER_RUNTIME_DIR", "runtime"), ("JUPYTER_DATA_DIR", "data"),
                     ("JUPYTER_CONFIG_DIR", "config"), ("IPYTHONDIR", "ipython")):
        monkeypatch.setenv(var, str(tmp_path / sub))
    return tmp_path


_SETUP = ("%load_ext gemini_batch_magic\nimport pandas as pd\n"
          "big = pd.DataFrame({'text': [f't{i}' for i in range(20)]})")
_COSTLY_CELL = f"%%gembatch run {EXPENSIVE}\nSay {{text}}"


def _widget_models(messages: list[Any]) -> dict[str, dict[str, Any]]:
    """Each widget model's state as a front end holds it after ``messages``."""
    models: dict[str, dict[str, Any]] = {}
    for m in messages:
        if m["msg_type"] in ("comm_open", "comm_msg"):
            state = m["content"].get("data", {}).get("state")
            if state is not None:
                models.setdefault(m["content"]["comm_id"], {}).update(state)
    return models


@pytest.mark.slow
def test_nbclient_stops_at_a_costly_cell_naming_yes(jupyter_dirs: Any, emu: Any) -> None:
    """papermill and nbclient send allow_stdin=False: no one can click, so the cell fails."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(_SETUP),
                                         nbformat.v4.new_code_cell(_COSTLY_CELL),
                                         nbformat.v4.new_code_cell("print('not reached')")])
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3")
    with pytest.raises(nbclient.exceptions.CellExecutionError) as err:
        client.execute()
    assert err.value.ename == "UsageError"
    assert "above confirm_above=$5.00, so nothing was sent" in err.value.evalue
    assert "add --yes to the %%gembatch line" in err.value.evalue
    assert not nb.cells[2].outputs  # the notebook stopped there
    assert _sent(emu) == [] and gbm.runs().empty


@pytest.mark.slow
def test_jupyterlab_shows_submit_and_a_click_sends(jupyter_dirs: Any, emu: Any) -> None:
    """A front end that lets the cell ask (allow_stdin=True, as JupyterLab, Notebook and
    VS Code send) gets the estimate and a Submit button; the button's click message, as the
    front end sends it, sends the run."""
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3")
    try:
        def execute(code: str, allow_stdin: bool = True) -> tuple[list[Any], Any]:
            seen: list[Any] = []
            reply = kc.execute_interactive(code, allow_stdin=allow_stdin, timeout=120,
                                           output_hook=seen.append, stdin_hook=lambda m: None)
            return seen, reply["content"]

        assert execute(_SETUP)[1]["status"] == "ok"
        seen, reply = execute(_COSTLY_CELL)
        assert reply["status"] == "ok", reply
        shown_before = seen
        opened = {m["content"]["comm_id"]: m["content"]["data"]["state"]
                  for m in seen if m["msg_type"] == "comm_open"}
        submit = [cid for cid, st in opened.items() if st.get("_model_name") == "ButtonModel"
                  and st.get("description", "").startswith("Submit")]
        assert [opened[c]["description"] for c in submit] == ["Submit ($6.55)"]
        shown = [m["content"]["data"] for m in seen if m["msg_type"] == "display_data"]
        assert len(shown) == 1 and "application/vnd.jupyter.widget-view+json" in shown[0]
        assert "estimated $6.55 for 20 requests" in shown[0]["text/plain"]
        assert _sent(emu) == [] and gbm.runs().empty  # shown, not sent

        # the same cell where no one can answer (allow_stdin=False) fails instead
        seen, reply = execute(_COSTLY_CELL, allow_stdin=False)
        assert reply["status"] == "error" and "add --yes" in reply["evalue"]

        # click, as the front end does: a comm message to the button's model
        click = kc.session.msg("comm_msg", {"comm_id": submit[0], "data": {
            "method": "custom", "content": {"event": "click"}}})
        kc.shell_channel.send(click)
        after: list[Any] = []
        while not (after and after[-1]["msg_type"] == "status"
                   and after[-1]["content"]["execution_state"] == "idle"):
            msg = kc.get_iopub_msg(timeout=120)
            if msg["parent_header"].get("msg_id") == click["header"]["msg_id"]:
                after.append(msg)
        runs = gbm.runs()
        assert len(runs) == 1 and len(emu.batches()) == 1
        assert emu.batches()[0]["requestCount"] == 20
        # what the front end now draws: the button says so, the run's progress is shown
        models = _widget_models(shown_before + after)
        assert models[submit[0]]["description"] == "Submitted"
        box = shown[0]["application/vnd.jupyter.widget-view+json"]["model_id"]
        assert "gembatch-confirm" in models[box]["_dom_classes"]
        progress = [c.removeprefix("IPY_MODEL_") for c in models[box]["children"]]
        assert models[progress[-1]]["run_id"]  # the run's live progress widget, under it
        # OUT holds the run in the kernel
        seen, reply = execute("print(run.run_id, run.n_rows)")
        printed = "".join(m["content"].get("text", "") for m in seen if m["msg_type"] == "stream")
        assert printed.split() == [runs["run_id"][0], "20"]
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
