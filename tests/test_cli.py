"""The gembatch command, run as users run it: in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd


def gembatch(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gemini_batch_magic.cli", *args],
                          capture_output=True, text=True, env=env, timeout=120)


def sent(emu: Any) -> list[tuple[str, str]]:
    """The calls that would send or store something: all but looking up models."""
    return [(m, p) for m, p in emu.calls if not (m == "GET" and "/models" in p)]


def test_demo_prints_answers_aligned_to_keys(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("GEMBATCH_HOME",)}
    proc = gembatch("demo", "--home", str(tmp_path / "demo"), env=env)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    row = next(line for line in lines if line.startswith("paris"))
    assert "What is the capital of France?" in row
    assert any(line.startswith("french") and "Écris une phrase" in line for line in lines)
    assert "SYNTHETIC" in proc.stderr


def test_submit_wait_out_then_list_status_results(emu: Any, tmp_path: Path) -> None:
    src = tmp_path / "rows.csv"
    pd.DataFrame({"id": [3, 1, 2], "text": ["three", "one", "two"]}).to_csv(src, index=False)
    out = tmp_path / "answers.parquet"
    env = dict(os.environ)
    proc = gembatch("submit", str(src), "--template", "Say {text}", "--wait", "--out", str(out),
                    env=env)
    assert proc.returncode == 0, proc.stderr
    answers = pd.read_parquet(out)
    assert answers["response"].tolist() == ["Say three", "Say one", "Say two"]
    run_id = proc.stdout.split()[0]

    listing = gembatch("list", env=env)
    assert run_id in listing.stdout and "SUCCEEDED" in listing.stdout
    status = gembatch("status", run_id, env=env)
    assert "3/3 answered" in status.stdout and "shard 0: batches/" in status.stdout
    results = gembatch("results", run_id[:5], env=env)
    assert "Say three" in results.stdout


def test_bad_input_exits_2_with_one_line_and_sends_nothing(emu: Any, tmp_path: Path) -> None:
    src = tmp_path / "rows.csv"
    pd.DataFrame({"text": ["a"]}).to_csv(src, index=False)
    proc = gembatch("submit", str(src), "--prompt", "txt", env=dict(os.environ))
    assert proc.returncode == 2
    assert proc.stderr.startswith("gembatch: ") and "text" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert sent(emu) == []


def test_a_template_without_a_placeholder_exits_2_and_sends_nothing(emu: Any,
                                                                     tmp_path: Path) -> None:
    src = tmp_path / "rows.csv"
    pd.DataFrame({"text": ["a", "b"]}).to_csv(src, index=False)
    proc = gembatch("submit", str(src), "--template", "Say hello", env=dict(os.environ))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("gembatch: the template has no {column} placeholder")
    assert len(proc.stderr.strip().splitlines()) == 1 and sent(emu) == []


def test_above_confirm_above_submit_needs_yes(emu: Any, tmp_path: Path) -> None:
    src = tmp_path / "rows.csv"
    pd.DataFrame({"text": [f"t{i}" for i in range(20)]}).to_csv(src, index=False)
    costly = ("submit", str(src), "--template", "Say {text}", "-m", "gemini-2.5-pro",
              "--max-output-tokens", "65536")  # estimated $6.55; confirm_above is $5
    env = dict(os.environ)
    proc = gembatch(*costly, env=env)
    assert proc.returncode == 2
    assert proc.stderr == ("gembatch: this run is estimated at $6.55 (20 requests to "
                           "gemini-2.5-pro), above confirm_above=$5.00, so nothing was "
                           "sent: add --yes to send it (--max-cost still refuses)\n")
    assert sent(emu) == []
    assert gembatch(*costly, "--yes", "--max-cost", "6", env=env).returncode == 2
    assert sent(emu) == []
    proc = gembatch(*costly, "--yes", "--keep-inputs", env=env)
    assert proc.returncode == 0, proc.stderr
    import gemini_batch_magic as gbm

    run = gbm.attach(proc.stdout.split()[0])
    assert run.n_rows == 20 and run.record.config["keep_inputs"] is True
    assert len(emu.batches()) == 1


def test_estimate_and_backend_and_unknown_run(emu: Any, tmp_path: Path) -> None:
    src = tmp_path / "rows.jsonl"
    pd.DataFrame({"text": ["a", "b"]}).to_json(src, orient="records", lines=True)
    env = dict(os.environ)
    est = gembatch("estimate", str(src), "--prompt", "text", env=env)
    assert est.returncode == 0 and "2 requests" in est.stdout and "estimated cost $" in est.stdout
    assert "external endpoint" in gembatch("backend", env=env).stdout
    keyed = gembatch("backend", env={**env, "GOOGLE_API_KEY": "not-a-real-one-0123"}).stdout
    assert "API key from $GOOGLE_API_KEY" in keyed and "not-a-real" not in keyed
    missing = gembatch("status", "nope", env=env)
    assert missing.returncode == 2 and "no run 'nope'" in missing.stderr


def test_gembatch_emulator_serves_and_prints_its_url_first() -> None:
    import signal
    import urllib.request

    proc = subprocess.Popen(
        [sys.executable, "-m", "gemini_batch_magic.cli", "emulator", "--port", "0",
         "--pending-seconds", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        req = urllib.request.Request(f"{url}/v1beta/batches", headers={"x-goog-api-key": "k"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)  # also closes the pipes
    assert proc.returncode == 0, err
    assert "Traceback" not in err


def test_options_are_never_abbreviated_and_nothing_is_sent(emu: Any, tmp_path: Path) -> None:
    src = tmp_path / "rows.csv"
    pd.DataFrame({"text": ["a"]}).to_csv(src, index=False)
    proc = gembatch("submit", str(src), "--prompt", "text", "--temp", "0.2",
                    env=dict(os.environ))
    assert proc.returncode == 2
    assert "unrecognized arguments: --temp 0.2" in proc.stderr
    assert "did you mean --template or --temperature?" in proc.stderr
    assert list(emu.calls) == []
    proc = gembatch("submit", str(src), "--prompt", "text", "--ye", env=dict(os.environ))
    assert proc.returncode == 2 and "did you mean --yes?" in proc.stderr
    proc = gembatch("results", "x", "--ou", "a.csv", env=dict(os.environ))
    assert proc.returncode == 2 and "did you mean --out?" in proc.stderr
    assert list(emu.calls) == []


def test_the_emulator_takes_no_abbreviations_either() -> None:
    """``--pending 0`` would have meant --pending-seconds: an error, not a server."""
    proc = gembatch("emulator", "--port", "0", "--pending", "0")
    assert proc.returncode == 2
    assert "unrecognized arguments: --pending 0" in proc.stderr


def test_submit_options_reach_the_run(emu: Any, tmp_path: Path) -> None:
    src = tmp_path / "rows.csv"
    pd.DataFrame({"id": ["a", "b"], "text": ["x", ""]}).to_csv(src, index=False)
    env = dict(os.environ)
    proc = gembatch("submit", str(src), "--prompt", "text", "--key", "id", "--temperature",
                    "0.3", "--max-output-tokens", "20", "--system", "Be brief.", "--name",
                    "cli-run", "--on-empty", "skip", env=env)
    assert proc.returncode == 0, proc.stderr
    import gemini_batch_magic as gbm

    run = gbm.attach(proc.stdout.split()[0])
    assert run.display_name == "cli-run" and run.n_rows == 1  # the empty prompt was skipped
    assert run.record.config["generation_config"] == {"temperature": 0.3,
                                                      "max_output_tokens": 20}
    assert run.record.config["system_instruction"] == "Be brief."


def test_config_shows_environment_defaults_and_refuses_bad_ones(tmp_path: Path) -> None:
    env = {**os.environ, "GEMBATCH_MODEL": "gemini-2.5-flash-lite",
           "GEMBATCH_HOME": str(tmp_path / "h")}
    proc = gembatch("config", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "model = gemini-2.5-flash-lite" in proc.stdout
    assert f"home = {tmp_path / 'h'}" in proc.stdout
    bad = gembatch("config", env={**env, "GEMBATCH_BACKEND": "cloud"})
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "$GEMBATCH_BACKEND" in bad.stderr and "choose one of auto, local, gemini" in bad.stderr


def test_status_of_a_failed_run_shows_the_services_reason(
    emulator_factory: Any, tmp_path: Path
) -> None:
    emulator_factory(fail_batch_rate=1.0, fail_batch_message="the model is overloaded today")
    src = tmp_path / "rows.csv"
    pd.DataFrame({"text": ["a", "b"]}).to_csv(src, index=False)
    env = dict(os.environ)
    proc = gembatch("submit", str(src), "--prompt", "text", "--wait", env=env)
    run_id = proc.stdout.split()[0]
    status = gembatch("status", run_id, env=env)
    assert "FAILED" in status.stdout
    assert "error:" in status.stdout and "the model is overloaded today" in status.stdout


def test_submit_reads_each_format_a_batch_at_a_time_and_streams_out(emu: Any,
                                                                    tmp_path: Path) -> None:
    env = dict(os.environ)
    df = pd.DataFrame({"ticket_id": ["t3", "t1", "t2"], "body": ["three", "one", "two"]})
    writers = {"parquet": lambda p: df.to_parquet(p),
               "csv": lambda p: df.to_csv(p, index=False),
               "jsonl": lambda p: df.to_json(p, orient="records", lines=True)}
    for ext, write in writers.items():
        src = tmp_path / f"rows.{ext}"
        write(src)
        out = tmp_path / f"answers-{ext}.{ext}"
        proc = gembatch("submit", str(src), "--template", f"{ext}: {{body}}", "--key",
                        "ticket_id", "--wait", "--out", str(out), env=env)
        assert proc.returncode == 0, proc.stderr
        assert f"wrote 3 rows to {out}" in proc.stdout
        got = (pd.read_parquet(out) if ext == "parquet" else pd.read_csv(out) if ext == "csv"
               else pd.read_json(out, lines=True))
        assert got["ticket_id"].tolist() == ["t3", "t1", "t2"]
        assert got["response"].tolist() == [f"{ext}: three", f"{ext}: one", f"{ext}: two"]
        import gemini_batch_magic as gbm

        run = gbm.attach(proc.stdout.split()[0])
        assert run.record.config["input"] == "files"  # the file path, not a DataFrame


def test_submit_a_glob_prints_results_and_estimate_a_folder(emu: Any, tmp_path: Path) -> None:
    env = dict(os.environ)
    folder = tmp_path / "parts"
    folder.mkdir()
    pd.DataFrame({"id": [1, 2], "text": ["a", "b"]}).to_parquet(folder / "p0.parquet")
    pd.DataFrame({"id": [3], "text": ["c"]}).to_parquet(folder / "p1.parquet")
    est = gembatch("estimate", str(folder), "--prompt", "text", "--key", "id", env=env)
    assert est.returncode == 0, est.stderr
    assert "3 requests" in est.stdout and sent(emu) == []
    proc = gembatch("submit", str(folder / "*.parquet"), "--prompt", "text", "--key", "id",
                    "--wait", env=env)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines()[3:]]  # id, header, index name
    assert [r[:2] for r in rows] == [["1", "a"], ["2", "b"], ["3", "c"]]
    results = gembatch("results", proc.stdout.split()[0], "--out", str(tmp_path / "r.csv"),
                       env=env)
    assert results.returncode == 0 and pd.read_csv(tmp_path / "r.csv")["id"].tolist() == [1, 2, 3]


def test_duplicate_keys_in_a_file_exit_2_naming_both_rows(emu: Any, tmp_path: Path) -> None:
    src = tmp_path / "rows.csv"
    pd.DataFrame({"id": [7, 8, 7], "text": ["a", "b", "c"]}).to_csv(src, index=False)
    proc = gembatch("submit", str(src), "--prompt", "text", "--key", "id", env=dict(os.environ))
    assert proc.returncode == 2
    assert "row 0 of" in proc.stderr and "row 2 of" in proc.stderr and "7" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and sent(emu) == []
