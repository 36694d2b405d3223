"""Batch Mode through the unmodified SDK and raw HTTP."""

from __future__ import annotations

import io
import time
import warnings

import pytest
from google import genai
from google.genai import errors, types

from gemini_batch_magic.emulator import Emulator

from .conftest import gen_line, jsonl, make_client, raw, wait_done


def _inline(n: int, prefix: str = "prompt") -> list[dict[str, object]]:
    return [{"contents": f"{prefix} {i}", "metadata": {"key": f"k{i}"}} for i in range(n)]


def test_inline_batch_lifecycle_and_typed_results(client: genai.Client) -> None:
    job = client.batches.create(
        model="gemini-2.5-flash",
        src=[
            {
                "contents": "Tell me a joke",
                "metadata": {"key": "a"},
                "config": {"system_instruction": "be brief", "temperature": 0.5},
            },
            {"contents": "please [[fail]]", "metadata": {"key": "b"}},
            {"contents": "plain"},
        ],
        config={"display_name": "inline-job"},
    )
    assert job.state is not None and job.state.name == "JOB_STATE_PENDING"
    assert job.done is False and job.dest is None
    assert job.display_name == "inline-job"
    assert job.model == "models/gemini-2.5-flash"
    done = wait_done(client, job.name or "")
    assert done.state is not None and done.state.name == "JOB_STATE_SUCCEEDED"
    assert done.end_time is not None and done.create_time is not None
    assert done.dest is not None and done.dest.inlined_responses is not None
    by_key = {(r.metadata or {}).get("key"): r for r in done.dest.inlined_responses}
    assert set(by_key) == {"a", "b", None}
    ok = by_key["a"].response
    assert ok is not None and ok.text == "Tell me a joke"
    assert ok.candidates is not None
    assert ok.candidates[0].finish_reason == types.FinishReason.STOP
    usage = ok.usage_metadata
    assert usage is not None
    # ceil(utf8 bytes / 4): "Tell me a joke"+"be brief" = 22 bytes -> 6; answer 14 -> 4
    assert (usage.prompt_token_count, usage.candidates_token_count) == (6, 4)
    assert usage.total_token_count == 10
    assert ok.model_version == "gemini-2.5-flash"
    failed = by_key["b"]
    assert failed.response is None and failed.error is not None
    assert failed.error.code == 13  # a google.rpc code (INTERNAL), as the service's results
    assert failed.error.message == "Simulated failure ([[fail]] in prompt)."
    assert by_key[None].response is not None and by_key[None].response.text == "plain"


def test_inline_results_are_shuffled_deterministically(make_emu) -> None:  # type: ignore[no-untyped-def]
    orders = []
    for _ in range(2):
        emu = make_emu(seed=7)
        c = make_client(emu)
        job = c.batches.create(model="m", src=_inline(20))
        done = wait_done(c, job.name or "")
        assert done.dest is not None and done.dest.inlined_responses is not None
        orders.append([(r.metadata or {})["key"] for r in done.dest.inlined_responses])
    assert orders[0] == orders[1]
    assert sorted(orders[0]) == sorted(f"k{i}" for i in range(20))
    assert orders[0] != [f"k{i}" for i in range(20)]
    emu = make_emu(seed=7, shuffle=False)
    c = make_client(emu)
    done = wait_done(c, c.batches.create(model="m", src=_inline(20)).name or "")
    assert done.dest is not None and done.dest.inlined_responses is not None
    assert [(r.metadata or {})["key"] for r in done.dest.inlined_responses] == [
        f"k{i}" for i in range(20)
    ]


def test_file_batch_produces_generated_results_file(make_emu) -> None:  # type: ignore[no-untyped-def]
    # batch ids of 20 characters: files.get takes the 26-character results file id
    client = make_client(make_emu(batch_id_length=20))
    lines = [gen_line(f"req-{i}", f"hello {i}") for i in range(50)]
    lines.append(gen_line("bad", "x [[fail]]"))
    src = client.files.upload(file=io.BytesIO(jsonl(lines)), config={"mime_type": "jsonl"})
    job = client.batches.create(
        model="gemini-2.5-flash", src=src.name or "", config={"display_name": "file-job"}
    )
    done = wait_done(client, job.name or "")
    assert done.state is not None and done.state.name == "JOB_STATE_SUCCEEDED"
    assert done.dest is not None and done.dest.file_name is not None
    assert done.dest.file_name == f"files/batch-{(job.name or '').split('/')[1]}"
    meta = client.files.get(name=done.dest.file_name)
    assert meta.source == types.FileSource.GENERATED
    assert meta.mime_type == "application/jsonl"
    assert meta.download_uri is not None and meta.download_uri.endswith(":download?alt=media")
    body = client.files.download(file=meta)  # by File object: needs downloadUri
    import orjson

    out = [orjson.loads(x) for x in body.splitlines()]
    assert len(out) == 51
    keys = [o["key"] for o in out]
    assert sorted(keys) == sorted(x["key"] for x in lines)
    assert keys != [x["key"] for x in lines]  # shuffled
    by_key = {o["key"]: o for o in out}
    assert by_key["req-3"]["response"]["candidates"][0]["content"]["parts"][0]["text"] == "hello 3"
    assert by_key["bad"]["error"] == {  # a google.rpc.Status, as the service's results
        "code": 13,
        "message": "Simulated failure ([[fail]] in prompt).",
    }
    assert "details" not in by_key["bad"]["error"]
    assert done.dest.file_name in [f.name for f in client.files.list()]


def test_file_batch_accepts_snake_case_and_src_dict(emu: Emulator, client: genai.Client) -> None:
    src = client.files.upload(
        file=io.BytesIO(jsonl([gen_line("k", "snake", generation_config={"temperature": 0})])),
        config={"mime_type": "jsonl"},
    )
    job = client.batches.create(model="gemini-2.5-flash", src={"file_name": src.name})
    assert wait_done(client, job.name or "").state.name == "JOB_STATE_SUCCEEDED"  # type: ignore[union-attr]
    r = raw(
        emu,
        "POST",
        "/v1beta/models/m:batchGenerateContent",
        {"batch": {"display_name": "snake", "input_config": {"file_name": src.name}}},
    )
    assert r.status == 200
    assert r.json()["metadata"]["displayName"] == "snake"
    assert r.json()["metadata"]["inputConfig"] == {"fileName": src.name}


def test_embeddings_inline_and_file(client: genai.Client) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        job = client.batches.create_embeddings(
            model="gemini-embedding-001",
            src={
                "inlined_requests": {
                    "contents": ["emb one", "emb two"],
                    "config": {"output_dimensionality": 3},
                }
            },
            config={"display_name": "emb-job"},
        )
    done = wait_done(client, job.name or "")
    assert done.state is not None and done.state.name == "JOB_STATE_SUCCEEDED"
    assert done.dest is not None and done.dest.inlined_embed_content_responses is not None
    vectors = [r.response.embedding.values for r in done.dest.inlined_embed_content_responses]  # type: ignore[union-attr]
    assert all(v is not None and len(v) == 3 for v in vectors)
    assert abs(sum(x * x for x in vectors[0]) - 1.0) < 1e-5  # type: ignore[union-attr]

    line = {
        "key": "e1",
        "request": {"content": {"parts": [{"text": "emb one"}]}, "output_dimensionality": 3},
    }
    src = client.files.upload(file=io.BytesIO(jsonl([line])), config={"mime_type": "jsonl"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fjob = client.batches.create_embeddings(
            model="gemini-embedding-001", src={"file_name": src.name}
        )
    fdone = wait_done(client, fjob.name or "")
    assert fdone.dest is not None and fdone.dest.file_name is not None
    import orjson

    out = orjson.loads(client.files.download(file=fdone.dest.file_name))
    assert out["key"] == "e1"
    assert sorted(out["response"]["embedding"]["values"]) == sorted(vectors[0])  # type: ignore[arg-type]


def test_tuned_model_and_v1beta(emu: Emulator) -> None:
    client = make_client(emu, api_version="v1beta")
    job = client.batches.create(model="tunedModels/my-tune", src=_inline(1))
    assert job.model == "tunedModels/my-tune"
    assert ("POST", "/v1beta/tunedModels/my-tune:batchGenerateContent") in emu.calls
    done = wait_done(client, job.name or "")
    assert done.dest is not None and done.dest.inlined_responses is not None
    resp = done.dest.inlined_responses[0].response
    assert resp is not None and resp.model_version == "my-tune"


def test_list_newest_first_paged_without_empty_pages(client: genai.Client) -> None:
    names = [client.batches.create(model="m", src=_inline(1)).name for _ in range(5)]
    pager = client.batches.list(config={"page_size": 2})
    assert len(pager.page) == 2
    assert [j.name for j in pager] == list(reversed(names))
    # an exact multiple of the page size: the last page must not announce another
    pager4 = client.batches.list(config={"page_size": 5})
    assert len(pager4.page) == 5 and not pager4.config.get("page_token")  # type: ignore[union-attr]
    assert [j.name for j in client.batches.list(config={"page_size": 5})] == list(reversed(names))


def test_cancel_live_batch_then_cancel_finished_is_failed_precondition(make_emu) -> None:  # type: ignore[no-untyped-def]
    emu = make_emu(pending_seconds=3600)
    client = make_client(emu)
    job = client.batches.create(model="m", src=_inline(2))
    assert client.batches.cancel(name=job.name or "") is None
    got = client.batches.get(name=job.name or "")
    assert got.state is not None and got.state.name == "JOB_STATE_CANCELLED" and got.done
    assert got.dest is None
    r = raw(emu, "GET", f"/v1/{job.name}")
    assert r.json()["error"]["code"] == 1
    assert r.json()["done"] is True
    with pytest.raises(errors.ClientError) as e:
        client.batches.cancel(name=job.name or "")
    assert e.value.code == 400 and e.value.status == "FAILED_PRECONDITION"


def test_delete_and_unknown_batch_is_not_found(client: genai.Client) -> None:
    job = client.batches.create(model="m", src=_inline(1))
    deleted = client.batches.delete(name=job.name or "")
    assert isinstance(deleted, types.DeleteResourceJob)
    for call in (client.batches.get, client.batches.delete, client.batches.cancel):
        with pytest.raises(errors.ClientError) as e:
            call(name=job.name or "")
        assert e.value.code == 404 and e.value.status == "NOT_FOUND"


def test_set_state_in_python_and_admin_route(emu: Emulator, client: genai.Client) -> None:
    a = client.batches.create(model="m", src=_inline(1))
    b = client.batches.create(model="m", src=_inline(1))
    emu.set_state(a.name or "", "FAILED")
    got = client.batches.get(name=a.name or "")
    assert got.state is not None and got.state.name == "JOB_STATE_FAILED" and got.dest is None
    assert raw(emu, "GET", f"/v1/{a.name}").json()["error"]["code"] == 13
    r = raw(
        emu,
        "POST",
        f"/_emulator/batches/{(b.name or '').split('/')[1]}:setState",
        {"state": "EXPIRED"},
        key=None,
    )
    assert r.status == 200 and r.json()["state"] == "BATCH_STATE_EXPIRED"
    got_b = client.batches.get(name=b.name or "")
    assert got_b.state is not None and got_b.state.name == "JOB_STATE_EXPIRED"
    with pytest.raises(ValueError):
        emu.set_state(a.name or "", "SUCCEEDED")
    with pytest.raises(KeyError):
        emu.set_state("batches/nope", "FAILED")
    assert raw(emu, "POST", "/_emulator/batches/nope:setState", {"state": "FAILED"}).status == 404
    assert all(not p.startswith("/_emulator") for _, p in emu.calls)


def test_expire_after_expires_unfinished_batch_without_results(make_emu) -> None:  # type: ignore[no-untyped-def]
    emu = make_emu(pending_seconds=0.2, rate=1, expire_after=0.3)
    client = make_client(emu)
    job = client.batches.create(model="m", src=_inline(50))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        got = client.batches.get(name=job.name or "")
        if got.done:
            break
        time.sleep(0.05)
    assert got.state is not None and got.state.name == "JOB_STATE_EXPIRED"
    assert got.dest is None


def test_batch_stats_progress_with_rate(make_emu) -> None:  # type: ignore[no-untyped-def]
    emu = make_emu(pending_seconds=0.3, rate=40, progress="live", zero_counts=True)
    r = raw(
        emu,
        "POST",
        "/v1/models/m:batchGenerateContent",
        {
            "batch": {
                "inputConfig": {
                    "requests": {
                        "requests": [
                            {"request": {"contents": [{"parts": [{"text": f"p{i}"}]}]}}
                            for i in range(40)
                        ]
                    }
                }
            }
        },
    )
    assert r.status == 200
    op = r.json()
    assert op["metadata"]["state"] == "BATCH_STATE_PENDING"
    assert op["metadata"]["batchStats"]["requestCount"] == "40"
    assert op["metadata"]["batchStats"]["pendingRequestCount"] == "40"
    assert "done" not in op and "response" not in op
    seen_states = []
    seen_done = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        cur = raw(emu, "GET", f"/v1/{op['name']}").json()
        stats = cur["metadata"]["batchStats"]
        seen_states.append(cur["metadata"]["state"])
        seen_done.append(int(stats["successfulRequestCount"]))
        assert int(stats["successfulRequestCount"]) + int(stats["pendingRequestCount"]) == 40
        if cur.get("done"):
            break
        time.sleep(0.05)
    assert seen_states[0] == "BATCH_STATE_PENDING"
    assert "BATCH_STATE_RUNNING" in seen_states
    assert seen_states[-1] == "BATCH_STATE_SUCCEEDED"
    assert seen_done == sorted(seen_done)  # monotonic progress
    assert any(0 < n < 40 for n in seen_done)  # observed partial progress
    final = cur
    assert final["done"] is True
    assert final["metadata"]["endTime"].endswith("Z")
    assert final["metadata"]["@type"].endswith("GenerateContentBatch")
    items = final["metadata"]["output"]["inlinedResponses"]["inlinedResponses"]
    assert final["response"]["inlinedResponses"]["inlinedResponses"] == items
    assert final["response"]["@type"].endswith("GenerateContentBatchOutput")
    assert len(items) == 40


def test_fail_rate_marks_some_requests_failed(make_emu) -> None:  # type: ignore[no-untyped-def]
    emu = make_emu(fail_rate=0.5, seed=3)
    client = make_client(emu)
    done = wait_done(client, client.batches.create(model="m", src=_inline(40)).name or "")
    assert done.dest is not None and done.dest.inlined_responses is not None
    errs = [r for r in done.dest.inlined_responses if r.error is not None]
    assert 5 < len(errs) < 35
    assert all(r.error.message == "Simulated failure (fail_rate)." for r in errs)  # type: ignore[union-attr]
    stats = raw(emu, "GET", f"/v1/{done.name}").json()["metadata"]["batchStats"]
    assert stats["failedRequestCount"] == str(len(errs))
    assert stats["successfulRequestCount"] == str(40 - len(errs))


def test_inline_metadata_values_are_echoed_as_strings(emu: Emulator, client: genai.Client) -> None:
    r = raw(
        emu,
        "POST",
        "/v1/models/m:batchGenerateContent",
        {
            "batch": {
                "inputConfig": {
                    "requests": {
                        "requests": [
                            {
                                "request": {"contents": [{"parts": [{"text": "x"}]}]},
                                "metadata": {"n": 3, "obj": {"a": 1}, "s": "x"},
                            }
                        ]
                    }
                }
            }
        },
    )
    done = wait_done(client, r.json()["name"])
    assert done.dest is not None and done.dest.inlined_responses is not None
    assert done.dest.inlined_responses[0].metadata == {"n": "3", "obj": '{"a":1}', "s": "x"}


def test_bad_requests_are_invalid_argument_json_errors(emu: Emulator, client: genai.Client) -> None:
    r = raw(emu, "POST", "/v1/models/m:batchGenerateContent", b"{not json")
    assert r.status == 400
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert raw(emu, "POST", "/v1/models/m:batchGenerateContent", {"batch": {}}).status == 400
    bad = client.files.upload(
        file=io.BytesIO(b'{"key": "a"}\nnot json\n'), config={"mime_type": "jsonl"}
    )
    with pytest.raises(errors.ClientError) as e:
        client.batches.create(model="m", src=bad.name or "")
    assert e.value.code == 400 and e.value.status == "INVALID_ARGUMENT"
    assert "Line 2" in (e.value.message or "")
    with pytest.raises(errors.ClientError) as e2:
        client.batches.create(model="m", src="files/doesnotexist")
    assert e2.value.code == 403
    unknown = raw(emu, "GET", "/v1/nothing/here")
    assert unknown.status == 404 and unknown.json()["error"]["status"] == "NOT_FOUND"


def test_api_key_rules(make_emu) -> None:  # type: ignore[no-untyped-def]
    emu = make_emu(api_key="test-key")
    missing = raw(emu, "GET", "/v1/batches", key=None)
    assert missing.status == 403 and missing.json()["error"]["status"] == "PERMISSION_DENIED"
    wrong = raw(emu, "GET", "/v1/batches", key="other-key")
    assert wrong.status == 400
    assert wrong.json()["error"]["message"] == "API key not valid. Please pass a valid API key."
    assert b"other-key" not in wrong.body and b"test-key" not in wrong.body
    bad_client = genai.Client(api_key="nope", http_options=types.HttpOptions(base_url=emu.url))
    with pytest.raises(errors.ClientError) as e:
        bad_client.batches.list()
    assert e.value.code == 400 and e.value.status == "INVALID_ARGUMENT"
    assert list(make_client(emu).batches.list()) == []
    assert raw(emu, "GET", "/_emulator/batches", key=None).status == 200
    assert "test-key" not in repr(emu) and "test-key" not in str(emu.calls)


def test_observability_helpers(emu: Emulator, client: genai.Client) -> None:
    job = client.batches.create(
        model="gemini-2.5-flash", src=_inline(3), config={"display_name": "obs"}
    )
    wait_done(client, job.name or "")
    [b] = emu.batches()
    assert b["name"] == job.name and b["state"] == "BATCH_STATE_SUCCEEDED"
    assert b["model"] == "models/gemini-2.5-flash" and b["displayName"] == "obs"
    assert b["requestCount"] == 3 and b["createTime"].endswith("Z")
    assert raw(emu, "GET", "/_emulator/batches").json()["batches"] == [b]
    assert emu.calls[0] == ("POST", "/v1/models/gemini-2.5-flash:batchGenerateContent")
    calls = raw(emu, "GET", "/_emulator/calls").json()["calls"]
    assert [tuple(c) for c in calls] == emu.calls
    assert raw(emu, "POST", "/_emulator/reset-calls").status == 200
    assert emu.calls == []
    client.files.upload(file=io.BytesIO(b"x"), config={"mime_type": "text/plain"})
    assert [f["sizeBytes"] for f in emu.files()] == [1]


def test_progress_counts_failures_in_answer_order(make_emu) -> None:  # type: ignore[no-untyped-def]
    emu = make_emu(rate=30, fail_rate=0.3, seed=1, progress="live", zero_counts=True)
    client = make_client(emu)
    job = client.batches.create(model="m", src=_inline(30))
    failed_seen = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        cur = raw(emu, "GET", f"/v1/{job.name}").json()
        stats = {k: int(v) for k, v in cur["metadata"]["batchStats"].items()}
        assert (
            stats["successfulRequestCount"]
            + stats["failedRequestCount"]
            + stats["pendingRequestCount"]
            == 30
        )
        failed_seen.append(stats["failedRequestCount"])
        if cur.get("done"):
            break
        time.sleep(0.03)
    assert failed_seen == sorted(failed_seen)
    done = client.batches.get(name=job.name or "")
    assert done.dest is not None and done.dest.inlined_responses is not None
    errors_in_output = sum(1 for r in done.dest.inlined_responses if r.error is not None)
    assert failed_seen[-1] == errors_in_output > 0


def test_keep_alive_survives_error_responses_with_bodies(emu: Emulator) -> None:
    import http.client

    host, port = emu.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        headers = {"x-goog-api-key": "test-key", "Content-Type": "application/json"}
        conn.request(
            "POST", "/v1/unknown/route", body=b'{"big": "' + b"x" * 100_000 + b'"}', headers=headers
        )
        r1 = conn.getresponse()
        assert r1.status == 404 and r1.read()
        half_bad = b'{"batch": {"inputConfig": {"requests": {"requests": [{"request": {}}, 5]}}}}'
        conn.request("POST", "/v1/models/m:batchGenerateContent", body=half_bad, headers=headers)
        r2 = conn.getresponse()
        assert r2.status == 400 and r2.read()
        conn.request("GET", "/v1/batches", headers=headers)
        r3 = conn.getresponse()
        assert r3.status == 200 and r3.read() == b"{}"
    finally:
        conn.close()
    assert emu.batches() == []
    assert not any((emu.data_dir / "batches").iterdir())  # nothing half-created


def test_max_running_seconds_ends_a_batch_too_large_for_its_rate(make_emu) -> None:  # type: ignore[no-untyped-def]
    """A paced emulator (the embedded one answers 20 a second) still ends a big batch soon:
    400 requests at 1 a second would take 400 s; capped at 0.5 s, it ends at once, with
    every answer; a small batch keeps the pace it was given."""
    emu = make_emu(pending_seconds=0, rate=1, max_running_seconds=0.5)
    client = make_client(emu)
    job = client.batches.create(model="m", src=_inline(400))
    got = wait_done(client, job.name or "")  # gives up after 30 s: at 1 a second, 400 s
    assert got.state is not None and got.state.name == "JOB_STATE_SUCCEEDED"
    assert len(got.dest.inlined_responses or []) == 400  # type: ignore[union-attr]
    assert emu.config.paced_rate(400) == 800.0  # 400 requests in 0.5 s
    assert emu.config.paced_rate(0) == 1.0  # never slower than the rate given
    unpaced = Emulator(rate=1).config  # the standalone emulator: no limit unless asked
    assert unpaced.max_running_seconds is None and unpaced.paced_rate(400) == 1.0
