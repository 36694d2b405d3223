"""Fault injection: HTTP 429/503, dropped creates, and client retries."""

from __future__ import annotations

import io

import pytest
from google import genai
from google.genai import errors, types

from gemini_batch_magic.emulator import Emulator

from .conftest import make_client, raw, wait_done

_FAST_RETRY = types.HttpRetryOptions(attempts=20, initial_delay=0.01, max_delay=0.05)


def test_sdk_retries_complete_a_workflow_under_faults(make_emu) -> None:  # type: ignore[no-untyped-def]
    emu: Emulator = make_emu(http_fault_rate=0.3, seed=11)
    client = make_client(emu, retry_options=_FAST_RETRY)
    job = client.batches.create(
        model="m", src=[{"contents": f"p{i}", "metadata": {"key": str(i)}} for i in range(5)]
    )
    done = wait_done(client, job.name or "")
    assert done.state is not None and done.state.name == "JOB_STATE_SUCCEEDED"
    assert done.dest is not None and done.dest.inlined_responses is not None
    assert len(done.dest.inlined_responses) == 5
    assert len(list(client.batches.list())) == 1
    # faults really happened and were retried: more calls than a fault-free run needs
    gets = [c for c in emu.calls if c[0] == "GET"]
    assert len(gets) >= 2


def test_faults_are_429_or_503_json_and_reproducible(make_emu) -> None:  # type: ignore[no-untyped-def]
    runs = []
    for _ in range(2):
        emu = make_emu(http_fault_rate=0.5, seed=5)
        statuses = []
        for _ in range(30):
            r = raw(emu, "GET", "/v1/batches")
            statuses.append(r.status)
            if r.status != 200:
                assert r.headers["Content-Type"].startswith("application/json")
                assert r.json()["error"]["status"] in ("RESOURCE_EXHAUSTED", "UNAVAILABLE")
        runs.append(statuses)
    assert runs[0] == runs[1]
    assert {429, 503, 200} == set(runs[0])


def test_without_retry_options_a_fault_reaches_the_caller(make_emu) -> None:  # type: ignore[no-untyped-def]
    emu = make_emu(http_fault_rate=1.0)
    client = make_client(emu)
    with pytest.raises(errors.APIError) as e:
        client.batches.list()
    assert e.value.code in (429, 503)
    assert emu.batches() == []


def test_upload_chunk_faults_are_resent_by_the_sdk(make_emu) -> None:  # type: ignore[no-untyped-def]
    # seed 5: the start call succeeds and the single chunk faults once, then succeeds
    # (the SDK's chunk loop sleeps 1 s before resending).
    emu = make_emu(http_fault_rate=0.3, seed=5)
    client = make_client(emu, retry_options=_FAST_RETRY)
    f = client.files.upload(file=io.BytesIO(b"chunked"), config={"mime_type": "text/plain"})
    assert f.size_bytes == 7
    uploads = [c for c in emu.calls if c == ("POST", "/upload/v1/files")]
    assert len(uploads) == 3  # start + faulted chunk + resent chunk
    assert client.files.download(file=f.name or "") == b"chunked"


def test_drop_after_create_leaves_exactly_one_batch(make_emu) -> None:  # type: ignore[no-untyped-def]
    emu = make_emu(drop_after_create_rate=1.0)
    client = make_client(emu)
    with pytest.raises(Exception) as e:  # the connection closes with no response
        client.batches.create(model="m", src=[{"contents": "x"}], config={"display_name": "amb"})
    assert not isinstance(e.value, errors.APIError)
    jobs = list(client.batches.list())
    assert len(jobs) == 1
    assert jobs[0].display_name == "amb"
    assert wait_done(client, jobs[0].name or "").state.name == "JOB_STATE_SUCCEEDED"  # type: ignore[union-attr]


def test_fault_options_are_validated() -> None:
    for bad in (
        {"http_fault_rate": 1.5},
        {"fail_rate": -0.1},
        {"rate": -1},
        {"pending_seconds": float("nan")},
        {"drop_after_create_rate": 2},
    ):
        with pytest.raises(ValueError):
            Emulator(**bad)  # type: ignore[arg-type]


def test_client_sees_429_as_client_error(make_emu) -> None:  # type: ignore[no-untyped-def]
    emu = make_emu(http_fault_rate=1.0, seed=0)
    client: genai.Client = make_client(emu)
    codes = set()
    for _ in range(10):
        try:
            client.batches.list()
        except errors.ClientError as e:
            codes.add((e.code, e.status))
        except errors.ServerError as e:
            codes.add((e.code, e.status))
    assert codes <= {(429, "RESOURCE_EXHAUSTED"), (503, "UNAVAILABLE")}
    assert len(codes) == 2
