"""The async client (``client.aio``) against the emulator: same wire format, other transport."""

from __future__ import annotations

import asyncio
import io
import warnings

import pytest
from google import genai
from google.genai import errors, types

from gemini_batch_magic.emulator import Emulator

from .conftest import gen_line, jsonl, make_client


def _run(client: genai.Client, coro_fn) -> None:  # type: ignore[no-untyped-def]
    """Runs ``coro_fn()`` and closes the async transport inside the same event loop."""

    async def main() -> None:
        try:
            await coro_fn()
        finally:
            await client.aio.aclose()

    asyncio.run(main())


async def _wait(client: genai.Client, name: str) -> types.BatchJob:
    for _ in range(1500):
        job = await client.aio.batches.get(name=name)
        if job.done:
            return job
        await asyncio.sleep(0.02)
    return job


def test_async_file_batch_end_to_end(make_emu) -> None:  # type: ignore[no-untyped-def]
    # batch ids of 20 characters: files.get takes the 26-character results file id
    client = make_client(make_emu(batch_id_length=20))

    async def run() -> None:
        src = await client.aio.files.upload(
            file=io.BytesIO(jsonl([gen_line("a", "async one"), gen_line("b", "async two")])),
            config={"mime_type": "jsonl"},
        )
        assert src.source == types.FileSource.UPLOADED
        job = await client.aio.batches.create(model="gemini-2.5-flash", src=src.name or "")
        assert job.state is not None and job.state.name == "JOB_STATE_PENDING"
        done = await _wait(client, job.name or "")
        assert done.state is not None and done.state.name == "JOB_STATE_SUCCEEDED"
        assert done.dest is not None and done.dest.file_name is not None
        data = await client.aio.files.download(file=done.dest.file_name)
        assert b'"async one"' in data and b'"async two"' in data
        fetched = await client.aio.files.get(name=done.dest.file_name)
        assert fetched.source == types.FileSource.GENERATED

    _run(client, run)


def test_async_inline_list_cancel_delete_and_errors(make_emu) -> None:  # type: ignore[no-untyped-def]
    emu: Emulator = make_emu(pending_seconds=3600)
    client = make_client(emu, api_version="v1beta")

    async def run() -> None:
        names = []
        for i in range(3):
            job = await client.aio.batches.create(
                model="m", src=[{"contents": f"x{i}", "metadata": {"key": str(i)}}]
            )
            names.append(job.name)
        pager = await client.aio.batches.list(config={"page_size": 1})
        listed = [j.name async for j in pager]
        assert listed == list(reversed(names))
        await client.aio.batches.cancel(name=names[0] or "")
        got = await client.aio.batches.get(name=names[0] or "")
        assert got.state is not None and got.state.name == "JOB_STATE_CANCELLED"
        await client.aio.batches.delete(name=names[1] or "")
        with pytest.raises(errors.ClientError) as e:
            await client.aio.batches.get(name=names[1] or "")
        assert e.value.code == 404 and e.value.status == "NOT_FOUND"
        with pytest.raises(errors.ClientError) as e2:
            await client.aio.files.get(name="files/nope")
        assert e2.value.code == 403

    _run(client, run)
    assert ("GET", "/v1beta/batches") in emu.calls


def test_async_inline_results_and_embeddings(client: genai.Client) -> None:
    async def run() -> None:
        job = await client.aio.batches.create(
            model="m", src=[{"contents": "hi async", "metadata": {"key": "k"}}]
        )
        done = await _wait(client, job.name or "")
        assert done.dest is not None and done.dest.inlined_responses is not None
        item = done.dest.inlined_responses[0]
        assert item.metadata == {"key": "k"}
        assert item.response is not None and item.response.text == "hi async"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            emb = await client.aio.batches.create_embeddings(
                model="gemini-embedding-001",
                src={
                    "inlined_requests": {"contents": ["a"], "config": {"output_dimensionality": 4}}
                },
            )
        edone = await _wait(client, emb.name or "")
        assert edone.dest is not None and edone.dest.inlined_embed_content_responses is not None
        vec = edone.dest.inlined_embed_content_responses[0].response
        assert vec is not None and vec.embedding is not None
        assert vec.embedding.values is not None and len(vec.embedding.values) == 4

    _run(client, run)
