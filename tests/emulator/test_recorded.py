"""The emulator's defaults follow the recorded real service (issue 11, items 1-7), and each
friendlier behaviour is one option away. Through the unmodified SDK, and raw httpx where
the SDK hides a field (``batchStats``, the operation ``error``, ``details``, timestamps)."""

from __future__ import annotations

import io
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest
from google import genai
from google.genai import errors, types

from gemini_batch_magic.emulator import Emulator, EmulatorConfig
from gemini_batch_magic.emulator.__main__ import _build_parser, config_from_args

from .conftest import API_KEY, gen_line, jsonl, make_client, wait_done

_OTHER_KEY = "another-test-key"
_NANOS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$")


@pytest.fixture
def recorded() -> Iterator[Callable[..., Emulator]]:
    """``recorded(**options)``: an emulator with the defaults (the recorded behaviour),
    changed only by ``options``; closed after the test."""
    started: list[Emulator] = []

    def make(**options: Any) -> Emulator:
        e = Emulator(**options).start()
        started.append(e)
        return e

    yield make
    for e in started:
        e.close()


def _get(emu: Emulator, path: str, key: str | None = API_KEY, **kw: Any) -> httpx.Response:
    headers = {"x-goog-api-key": key} if key is not None else {}
    return httpx.request(kw.pop("method", "GET"), emu.url + path, headers=headers, **kw)


def _inline(n: int, fail: int | None = None) -> list[dict[str, Any]]:
    return [
        {"contents": f"prompt {i}" + (" [[fail]]" if i == fail else ""),
         "metadata": {"key": f"k{i}"}}
        for i in range(n)
    ]


def _upload(client: genai.Client, lines: list[dict[str, Any]]) -> str:
    f = client.files.upload(file=io.BytesIO(jsonl(lines)), config={"mime_type": "jsonl"})
    return str(f.name)


# -- 1. progress counts -------------------------------------------------------------------


def test_counts_arrive_at_the_end_and_zero_counts_are_left_out(recorded) -> None:  # type: ignore[no-untyped-def]
    emu = recorded(rate=25)  # 25 requests: about a second of RUNNING
    client = make_client(emu)
    job = client.batches.create(model="gemini-2.5-flash", src=_inline(25, fail=3))
    first = _get(emu, f"/v1beta/{job.name}").json()["metadata"]
    running: list[dict[str, Any]] = []
    while True:
        meta = _get(emu, f"/v1beta/{job.name}").json()["metadata"]
        if meta["state"] != "BATCH_STATE_RUNNING" and meta["state"] != "BATCH_STATE_PENDING":
            break
        if meta["state"] == "BATCH_STATE_RUNNING":
            running.append(meta)
        time.sleep(0.05)
    assert first["batchStats"] == {"requestCount": "25", "pendingRequestCount": "25"}
    assert len(running) >= 3
    for seen in running:  # no progress while it runs, and updateTime stands still
        assert seen["batchStats"] == {"requestCount": "25", "pendingRequestCount": "25"}
        assert seen["updateTime"] == running[0]["updateTime"]
    assert meta["state"] == "BATCH_STATE_SUCCEEDED"
    assert meta["batchStats"] == {
        "requestCount": "25", "successfulRequestCount": "24", "failedRequestCount": "1"
    }
    clean = client.batches.create(model="gemini-2.5-flash", src=_inline(2))
    wait_done(client, clean.name or "")
    stats = _get(emu, f"/v1beta/{clean.name}").json()["metadata"]["batchStats"]
    assert stats == {"requestCount": "2", "successfulRequestCount": "2"}


def test_progress_live_and_zero_counts_restore_the_advancing_counts(recorded) -> None:  # type: ignore[no-untyped-def]
    emu = recorded(rate=25, progress="live", zero_counts=True)
    client = make_client(emu)
    job = client.batches.create(model="gemini-2.5-flash", src=_inline(25))
    seen = set()
    while True:
        meta = _get(emu, f"/v1beta/{job.name}").json()["metadata"]
        stats = meta["batchStats"]
        assert set(stats) == {"requestCount", "successfulRequestCount", "failedRequestCount",
                              "pendingRequestCount"}
        seen.add(int(stats["successfulRequestCount"]))
        if meta["state"] == "BATCH_STATE_SUCCEEDED":
            break
        time.sleep(0.05)
    assert len(seen - {0, 25}) >= 2  # counts moved while it ran
    assert stats["failedRequestCount"] == "0" and stats["pendingRequestCount"] == "0"
    with pytest.raises(ValueError, match="progress must be one of 'end', 'live', got 'fast'"):
        Emulator(progress="fast")


# -- 2. identifiers and timestamps --------------------------------------------------------


def test_ids_are_as_long_as_the_service_s_and_stamps_carry_nanoseconds(recorded) -> None:  # type: ignore[no-untyped-def]
    emu = recorded()
    client = make_client(emu)
    src = _upload(client, [gen_line("a", "one"), gen_line("b", "two")])
    assert len(src.removeprefix("files/")) == 12  # uploaded file ids stay short
    job = client.batches.create(model="gemini-2.5-flash", src=src)
    batch_id = (job.name or "").removeprefix("batches/")
    assert len(batch_id) == 36 and re.fullmatch(r"[a-z0-9]+", batch_id)
    done = wait_done(client, job.name or "")
    assert done.dest is not None and done.dest.file_name == f"files/batch-{batch_id}"
    assert len(done.dest.file_name.removeprefix("files/")) == 42
    # files.get and files.delete refuse an id over 40 characters; the download works
    for call in (client.files.get, client.files.delete):
        with pytest.raises(errors.ClientError) as e:
            call(name=done.dest.file_name)
        assert e.value.code == 400 and e.value.status == "INVALID_ARGUMENT"
        assert "File ID (name excluding 'files/') cannot be more than 40 characters" in (
            e.value.message or ""
        )
    assert b'"one"' in client.files.download(file=done.dest.file_name)
    meta = _get(emu, f"/v1beta/{job.name}").json()["metadata"]
    for stamp in ("createTime", "updateTime", "endTime"):
        assert _NANOS.match(meta[stamp]), meta[stamp]
    assert meta["updateTime"] != meta["endTime"]
    assert done.end_time is not None and done.create_time is not None  # the SDK parses them


def test_shorter_batch_ids_bring_results_files_within_reach_of_files_get(recorded) -> None:  # type: ignore[no-untyped-def]
    emu = recorded(batch_id_length=20)
    client = make_client(emu)
    job = client.batches.create(model="gemini-2.5-flash", src=_upload(client, [gen_line("a", "x")]))
    done = wait_done(client, job.name or "")
    assert done.dest is not None and done.dest.file_name is not None
    assert client.files.get(name=done.dest.file_name).source == types.FileSource.GENERATED
    with pytest.raises(ValueError, match="batch_id_length must be an integer from 8 to 63"):
        EmulatorConfig(batch_id_length=100)


# -- 3. keys and errors --------------------------------------------------------------------


def test_missing_and_wrong_keys_get_the_service_s_errors(recorded) -> None:  # type: ignore[no-untyped-def]
    anyone = recorded()
    missing = _get(anyone, "/v1beta/batches", key=None)
    assert missing.status_code == 403
    assert missing.json() == {"error": {
        "code": 403,
        "message": "Method doesn't allow unregistered callers (callers without established "
        "identity). Please use API Key or other form of API consumer identity to call this API.",
        "status": "PERMISSION_DENIED",
    }}
    assert _get(anyone, "/v1beta/batches", key="local-emulator").status_code == 200
    strict = recorded(api_key=[API_KEY, "second-valid-key"])
    assert _get(strict, "/v1beta/batches", key="second-valid-key").status_code == 200
    wrong = _get(strict, "/v1beta/batches", key="not-the-key")
    assert wrong.status_code == 400
    assert wrong.json() == {"error": {  # as recorded (continuedev/continue#8516)
        "code": 400,
        "message": "API key not valid. Please pass a valid API key.",
        "status": "INVALID_ARGUMENT",
        "details": [
            {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
             "domain": "googleapis.com",
             "metadata": {"service": "generativelanguage.googleapis.com"}},
            {"@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US",
             "message": "API key not valid. Please pass a valid API key."},
        ],
    }}
    assert b"not-the-key" not in wrong.content and API_KEY.encode() not in wrong.content
    bad = genai.Client(api_key="not-the-key", http_options=types.HttpOptions(base_url=strict.url))
    with pytest.raises(errors.ClientError) as e:
        bad.batches.list()
    assert e.value.code == 400
    assert e.value.details["error"]["details"][0]["reason"] == "API_KEY_INVALID"


def test_batches_and_files_are_visible_only_to_the_key_that_made_them(recorded) -> None:  # type: ignore[no-untyped-def]
    emu = recorded(pending_seconds=3600)
    mine = make_client(emu)
    other = genai.Client(api_key=_OTHER_KEY, http_options=types.HttpOptions(base_url=emu.url))
    src = _upload(mine, [gen_line("a", "x")])
    job = mine.batches.create(model="gemini-2.5-flash", src=src)
    name = job.name or ""
    for call in (other.batches.get, other.batches.cancel, other.batches.delete):
        with pytest.raises(errors.ClientError) as e:
            call(name=name)
        assert e.value.code == 404 and e.value.status == "NOT_FOUND"
    assert list(other.batches.list()) == [] and list(other.files.list()) == []
    for fcall in (
        lambda: other.files.get(name=src),
        lambda: other.files.delete(name=src),
        lambda: other.files.download(file=src),
    ):
        with pytest.raises(errors.ClientError) as e:
            fcall()
        assert e.value.code == 403
    with pytest.raises(errors.ClientError) as e:
        other.batches.create(model="gemini-2.5-flash", src=src)
    assert e.value.code == 403
    assert [b.name for b in mine.batches.list()] == [name]
    mine.batches.cancel(name=name)  # the owner still can
    # the store keeps a fingerprint of the key, never the key
    with sqlite3.connect(emu.data_dir / "emulator.sqlite3") as c:
        dump = "\n".join(c.iterdump())
    assert API_KEY not in dump and _OTHER_KEY not in dump
    shared = recorded(scope_by_key=False)
    c1 = make_client(shared)
    c2 = genai.Client(api_key=_OTHER_KEY, http_options=types.HttpOptions(base_url=shared.url))
    j = c1.batches.create(model="gemini-2.5-flash", src=_inline(1))
    assert c2.batches.get(name=j.name or "").name == j.name


def test_unsupported_mime_types_are_refused_at_upload(recorded) -> None:  # type: ignore[no-untyped-def]
    emu = recorded()
    client = make_client(emu)
    for ok in ("jsonl", "application/jsonl", "application/json", "text/plain",
               "text/csv; charset=utf-8", "image/png", "application/pdf", "audio/mpeg"):
        client.files.upload(file=io.BytesIO(b"{}\n"), config={"mime_type": ok})
    with pytest.raises(errors.ClientError) as e:
        client.files.upload(file=io.BytesIO(b"x"), config={"mime_type": "application/cu-seeme"})
    assert e.value.code == 400 and e.value.status == "INVALID_ARGUMENT"
    assert (e.value.message or "").startswith("Unsupported MIME type: application/cu-seeme.")
    lenient = make_client(recorded(mime_types=None))
    lenient.files.upload(file=io.BytesIO(b"x"), config={"mime_type": "application/cu-seeme"})
    narrow = make_client(recorded(mime_types=["jsonl", "image/*"]))
    narrow.files.upload(file=io.BytesIO(b"x"), config={"mime_type": "image/gif"})
    with pytest.raises(errors.ClientError):
        narrow.files.upload(file=io.BytesIO(b"x"), config={"mime_type": "text/plain"})


def test_per_request_errors_are_google_rpc_status(recorded) -> None:  # type: ignore[no-untyped-def]
    emu = recorded(batch_id_length=20)
    client = make_client(emu)
    src = _upload(client, [gen_line("ok", "fine"), gen_line("bad", "no [[fail]]")])
    done = wait_done(client, client.batches.create(model="gemini-2.5-flash", src=src).name or "")
    assert done.dest is not None and done.dest.file_name is not None
    lines = [orjson.loads(x) for x in client.files.download(file=done.dest.file_name).splitlines()]
    (bad,) = [x for x in lines if x["key"] == "bad"]
    assert bad["error"] == {"code": 13, "message": "Simulated failure ([[fail]] in prompt)."}
    inline = client.batches.create(model="gemini-2.5-flash", src=_inline(2, fail=1))
    done = wait_done(client, inline.name or "")
    assert done.dest is not None and done.dest.inlined_responses is not None
    (err,) = [r.error for r in done.dest.inlined_responses if r.error is not None]
    assert err.code == 13


def test_failed_batches_carry_the_operation_error(recorded) -> None:  # type: ignore[no-untyped-def]
    emu = recorded()
    client = make_client(emu)
    emu.configure(fail_batch_rate=1.0, fail_batch_message="Batch quota exceeded (test).")
    job = client.batches.create(model="gemini-2.5-flash", src=_inline(3))
    assert job.state is not None and job.state.name == "JOB_STATE_PENDING"
    done = wait_done(client, job.name or "")
    assert done.state is not None and done.state.name == "JOB_STATE_FAILED"
    assert done.dest is None and done.error is None  # the SDK drops it on the Developer API
    op = _get(emu, f"/v1beta/{job.name}").json()
    assert op["error"] == {"code": 13, "message": "Batch quota exceeded (test)."}
    assert op["done"] is True and "output" not in op["metadata"]
    emu.configure(fail_batch_rate=0.0)
    ok = client.batches.create(model="gemini-2.5-flash", src=_inline(1))
    assert wait_done(client, ok.name or "").state == types.JobState.JOB_STATE_SUCCEEDED
    slow = recorded(pending_seconds=3600)
    slow_client = make_client(slow)
    one = slow_client.batches.create(model="gemini-2.5-flash", src=_inline(1))
    slow.set_state(one.name or "", "FAILED", message="Input file is malformed.", code=3)
    assert _get(slow, f"/v1beta/{one.name}").json()["error"] == {
        "code": 3, "message": "Input file is malformed."
    }
    other = slow_client.batches.create(model="gemini-2.5-flash", src=_inline(1))
    r = _get(slow, f"/_emulator/{other.name}:setState", method="POST",
             json={"state": "FAILED", "message": "From the admin route."})
    assert r.status_code == 200
    assert _get(slow, f"/v1beta/{other.name}").json()["error"]["message"] == "From the admin route."


# -- 4. models -----------------------------------------------------------------------------


def test_models_get_and_list_and_unknown_models_are_not_found(recorded) -> None:  # type: ignore[no-untyped-def]
    emu = recorded()
    client = make_client(emu, api_version="v1beta")
    model = client.models.get(model="gemini-2.5-flash")
    assert model.name == "models/gemini-2.5-flash" and model.display_name
    assert model.supported_actions is not None and "batchGenerateContent" in model.supported_actions
    emb = client.models.get(model="models/gemini-embedding-001")
    assert emb.supported_actions is not None and "asyncBatchEmbedContent" in emb.supported_actions
    names = [m.name for m in client.models.list(config={"page_size": 4})]
    assert len(names) == len(EmulatorConfig().models or ()) and len(set(names)) == len(names)
    assert {"models/gemini-2.5-pro", "models/gemini-2.5-flash-lite", "models/gemini-2.0-flash",
            "models/gemini-embedding-001"} <= set(names)
    assert _get(emu, "/v1/models?pageSize=4").json()["nextPageToken"]
    with pytest.raises(errors.ClientError) as e:
        client.models.get(model="gemini-2.5-flsh")
    assert e.value.code == 404 and e.value.status == "NOT_FOUND"
    assert (e.value.message or "").startswith(
        "models/gemini-2.5-flsh is not found for API version v1beta, or is not supported for"
    )
    with pytest.raises(errors.ClientError) as e:
        client.batches.create(model="gemini-2.5-flsh", src=_inline(1))
    assert e.value.code == 404
    assert "models/gemini-2.5-flsh is not found for API version v1beta" in (e.value.message or "")
    with pytest.raises(errors.ClientError) as e:  # an embedding model cannot generate
        client.batches.create(model="gemini-embedding-001", src=_inline(1))
    assert e.value.code == 404
    assert emu.batches() == []  # nothing was created
    mine = make_client(recorded(models=["my-model"]))
    assert mine.models.get(model="my-model").name == "models/my-model"
    mine.batches.create(model="my-model", src=_inline(1))
    anything = make_client(recorded(models=None))
    anything.batches.create(model="whatever-model", src=_inline(1))
    assert anything.models.get(model="whatever-model").name == "models/whatever-model"


# -- 5. lifetimes and quotas ---------------------------------------------------------------


def test_uploaded_files_expire_after_file_ttl(recorded) -> None:  # type: ignore[no-untyped-def]
    emu = recorded(file_ttl=0.5)
    client = make_client(emu)
    name = _upload(client, [gen_line("a", "x")])
    raw_file = _get(emu, f"/v1beta/{name}").json()
    assert _NANOS.match(raw_file["expirationTime"])
    assert [f.name for f in client.files.list()] == [name]
    time.sleep(0.7)
    with pytest.raises(errors.ClientError) as e:
        client.files.get(name=name)
    assert e.value.code == 403  # gone: as for a file that never existed
    with pytest.raises(errors.ClientError):
        client.files.download(file=name)
    with pytest.raises(errors.ClientError):
        client.batches.create(model="gemini-2.5-flash", src=name)
    assert list(client.files.list()) == [] and emu.files() == []
    default_client = make_client(recorded())
    f = default_client.files.upload(file=io.BytesIO(b"{}\n"), config={"mime_type": "jsonl"})
    assert f.expiration_time is not None and f.create_time is not None
    assert 47.9 * 3600 < (f.expiration_time - f.create_time).total_seconds() <= 48 * 3600


def test_results_files_are_deleted_results_ttl_after_the_end(recorded) -> None:  # type: ignore[no-untyped-def]
    emu = recorded(results_ttl=0.5)
    client = make_client(emu)
    done = wait_done(client, client.batches.create(
        model="gemini-2.5-flash", src=_upload(client, [gen_line("a", "x")])).name or "")
    assert done.dest is not None and done.dest.file_name is not None
    assert client.files.download(file=done.dest.file_name)
    time.sleep(0.7)
    with pytest.raises(errors.ClientError) as e:
        client.files.download(file=done.dest.file_name)
    assert e.value.code == 403
    again = client.batches.get(name=done.name or "")  # the batch still names it
    assert again.dest is not None and again.dest.file_name == done.dest.file_name


def test_uploads_beyond_the_file_quota_are_resource_exhausted(recorded) -> None:  # type: ignore[no-untyped-def]
    emu = recorded(file_quota_bytes=100)
    client = make_client(emu)
    first = client.files.upload(file=io.BytesIO(b"x" * 60), config={"mime_type": "jsonl"})
    with pytest.raises(errors.ClientError) as e:
        client.files.upload(file=io.BytesIO(b"y" * 60), config={"mime_type": "jsonl"})
    assert e.value.code == 429 and e.value.status == "RESOURCE_EXHAUSTED"
    message = e.value.message or ""
    assert "quota of 100 bytes" in message and "client.files.delete" in message
    other = genai.Client(api_key=_OTHER_KEY, http_options=types.HttpOptions(base_url=emu.url))
    other.files.upload(file=io.BytesIO(b"z" * 60), config={"mime_type": "jsonl"})  # its own
    client.files.delete(name=first.name or "")
    client.files.upload(file=io.BytesIO(b"y" * 60), config={"mime_type": "jsonl"})
    assert EmulatorConfig().file_quota_bytes == 20 * 1000**3


# -- 6. cancel ------------------------------------------------------------------------------


def _slow(request: dict[str, Any], model: str) -> dict[str, Any]:
    time.sleep(0.004)
    text = request["contents"][0]["parts"][0]["text"]
    return {"candidates": [{"content": {"role": "model", "parts": [{"text": text}]},
                            "finishReason": "STOP"}]}


def _processed(emu: Emulator, name: str) -> int:
    with sqlite3.connect(emu.data_dir / "emulator.sqlite3") as c:
        (n,) = c.execute("SELECT processed FROM batches WHERE id = ?",
                         (name.removeprefix("batches/"),)).fetchone()
    return int(n)


@pytest.mark.parametrize("mode", ["inline", "file"])
def test_a_cancelled_batch_keeps_the_answers_it_had(recorded, mode: str) -> None:  # type: ignore[no-untyped-def]
    emu = recorded(responder=_slow, batch_id_length=20)
    client = make_client(emu)
    n = 640  # ten blocks of 64 requests, ~0.25 s each
    src: Any = _inline(n) if mode == "inline" else _upload(
        client, [gen_line(f"k{i}", f"prompt {i}") for i in range(n)])
    job = client.batches.create(model="gemini-2.5-flash", src=src)
    name = job.name or ""
    deadline = time.monotonic() + 30
    while _processed(emu, name) == 0:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    client.batches.cancel(name=name)
    got = client.batches.get(name=name)
    assert got.state is not None and got.state.name == "JOB_STATE_CANCELLED"
    stats = _get(emu, f"/v1beta/{name}").json()["metadata"]["batchStats"]
    answered = int(stats["successfulRequestCount"])
    assert 0 < answered < n and int(stats["pendingRequestCount"]) == n - answered
    assert got.dest is not None
    if mode == "inline":
        rows = got.dest.inlined_responses or []
        keys = [r.metadata["key"] for r in rows if r.metadata]
    else:
        assert got.dest.file_name == f"files/batch-{name.removeprefix('batches/')}"
        data = client.files.download(file=got.dest.file_name)
        keys = [orjson.loads(x)["key"] for x in data.splitlines()]
    assert len(keys) == answered and len(set(keys)) == answered
    assert all(r.response is not None for r in (got.dest.inlined_responses or []))
    time.sleep(0.4)  # the answering thread let go: the output does not change any more
    assert client.batches.get(name=name).dest == got.dest
    early = recorded(pending_seconds=3600)
    ec = make_client(early)
    pending = ec.batches.create(model="gemini-2.5-flash", src=_inline(3))
    ec.batches.cancel(name=pending.name or "")
    assert ec.batches.get(name=pending.name or "").dest is None  # nothing answered: no output


# -- 7. order -------------------------------------------------------------------------------


def test_results_are_shuffled_by_default_and_in_submission_order_without_shuffle(recorded) -> None:  # type: ignore[no-untyped-def]
    def keys(emu: Emulator) -> list[str]:
        client = make_client(emu)
        done = wait_done(client, client.batches.create(
            model="gemini-2.5-flash", src=_inline(30)).name or "")
        assert done.dest is not None and done.dest.inlined_responses is not None
        return [r.metadata["key"] for r in done.dest.inlined_responses if r.metadata]

    submitted = [f"k{i}" for i in range(30)]
    shuffled = keys(recorded())
    assert shuffled != submitted and sorted(shuffled) == sorted(submitted)
    assert keys(recorded(shuffle=False)) == submitted


# -- options everywhere ---------------------------------------------------------------------


def test_the_command_line_sets_every_new_option() -> None:
    args = _build_parser().parse_args(
        ["--progress", "live", "--zero-counts", "--no-key-scope", "--batch-id-length", "20",
         "--models", "gemini-2.5-flash,my-model", "--any-mime-type", "--file-ttl", "60",
         "--results-ttl", "30", "--file-quota-bytes", "1000", "--fail-batch-rate", "0.5",
         "--fail-batch-message", "nope", "--api-key", "a-key", "--api-key", "b-key"]
    )
    cfg = config_from_args(args)
    assert (cfg.progress, cfg.zero_counts, cfg.scope_by_key, cfg.batch_id_length) == (
        "live", True, False, 20)
    assert cfg.models == ("gemini-2.5-flash", "my-model") and cfg.mime_types is None
    assert (cfg.file_ttl, cfg.results_ttl, cfg.file_quota_bytes) == (60.0, 30.0, 1000)
    assert (cfg.fail_batch_rate, cfg.fail_batch_message) == (0.5, "nope")
    assert cfg.api_key == ("a-key", "b-key") and "a-key" not in repr(cfg)
    default = config_from_args(_build_parser().parse_args([]))
    assert default.replace(pending_seconds=0) == EmulatorConfig(processes=default.processes)
    forever = config_from_args(_build_parser().parse_args(
        ["--models", "any", "--file-ttl", "0", "--results-ttl", "0", "--file-quota-bytes", "0"]))
    assert (forever.models, forever.file_ttl, forever.results_ttl, forever.file_quota_bytes) == (
        None, None, None, None)
    with pytest.raises(SystemExit):  # no abbreviations: --prog is not --progress
        _build_parser().parse_args(["--prog", "live"])


def test_every_new_option_changes_on_a_running_emulator(recorded) -> None:  # type: ignore[no-untyped-def]
    emu = recorded()
    emu.configure(progress="live", zero_counts=True, scope_by_key=False, batch_id_length=20,
                  models=None, mime_types=None, file_ttl=None, results_ttl=None,
                  file_quota_bytes=None, fail_batch_rate=0.5, fail_batch_message="x")
    assert (emu.progress, emu.batch_id_length, emu.models, emu.fail_batch_rate) == (
        "live", 20, None, 0.5)
    client = make_client(emu)
    job = client.batches.create(model="anything", src=_inline(1))
    assert len((job.name or "").removeprefix("batches/")) == 20
    for bad, message in (({"file_ttl": 0}, "file_ttl must be a finite number of seconds > 0"),
                         ({"models": "gemini-2.5-flash"}, "models must be a list"),
                         ({"file_quota_bytes": -1}, "file_quota_bytes must be an integer >= 0"),
                         ({"fail_batch_rate": 2}, "fail_batch_rate must be between 0 and 1")):
        with pytest.raises(ValueError, match=message):
            emu.configure(**bad)
