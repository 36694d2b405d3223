"""Fixtures for the emulator's own tests: a real server and the unmodified SDK."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
from google import genai
from google.genai import types

from gemini_batch_magic.emulator import Emulator

API_KEY = "test-key"


@pytest.fixture(autouse=True)
def gembatch_home() -> Iterator[None]:
    """Overrides the project-wide autouse fixture: the emulator needs no engine state."""
    yield


#: The tests written before the emulator's defaults followed the recorded service use
#: short fake model names ("m"): they run with ``models=None`` (every model exists). The
#: tests of the recorded defaults (``test_recorded.py``) use ``Emulator()`` as it comes.
ANY_MODEL: dict[str, Any] = {"models": None}


@pytest.fixture
def emu() -> Iterator[Emulator]:
    """A fast emulator: no pending time, everything answered at once, any model name."""
    with Emulator(pending_seconds=0.0, rate=0.0, **ANY_MODEL) as e:
        yield e


@pytest.fixture
def make_emu() -> Iterator[Callable[..., Emulator]]:
    """``make_emu(**options)`` starts an emulator that is closed after the test
    (``models=None`` unless the options say otherwise)."""
    started: list[Emulator] = []

    def make(**options: Any) -> Emulator:
        e = Emulator(**{**ANY_MODEL, **options}).start()
        started.append(e)
        return e

    yield make
    for e in started:
        e.close()


def make_client(emu: Emulator, api_version: str | None = None, **http_options: Any) -> genai.Client:
    return genai.Client(
        api_key=API_KEY,
        http_options=types.HttpOptions(base_url=emu.url, api_version=api_version, **http_options),
    )


@pytest.fixture
def client(emu: Emulator) -> genai.Client:
    return make_client(emu)


def wait_done(client: genai.Client, name: str, timeout: float = 30.0) -> types.BatchJob:
    """Polls ``batches.get`` until the job is done (a safety net, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while True:
        job = client.batches.get(name=name)
        if job.done or time.monotonic() > deadline:
            return job
        time.sleep(0.02)


class Raw:
    """A tiny urllib client for raw-HTTP assertions."""

    def __init__(self, status: int, headers: Any, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return orjson.loads(self.body)


def raw(
    emu: Emulator,
    method: str,
    path: str,
    body: Any = None,
    key: str | None = API_KEY,
    headers: dict[str, str] | None = None,
) -> Raw:
    """Sends one request; never raises for HTTP error statuses."""
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else orjson.dumps(body)
    h = {"Content-Type": "application/json", **(headers or {})}
    if key is not None:
        h["x-goog-api-key"] = key
    req = urllib.request.Request(emu.url + path, data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return Raw(r.status, r.headers, r.read())
    except urllib.error.HTTPError as e:
        return Raw(e.code, e.headers, e.read())


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(x) + b"\n" for x in lines)


def gen_line(key: str, text: str, **request: Any) -> dict[str, Any]:
    return {
        "key": key,
        "request": {"contents": [{"parts": [{"text": text}], "role": "user"}], **request},
    }
