"""The Vertex AI test bed: gcp-storage-emulator, bqemulator and our Vertex AI emulator.

``bed`` starts the three once per session (bounded start-up, always stopped); ``vertex``
points the engine at them for one test (backend ``vertex``, project, location, staging and
the emulators' endpoints in the environment) and gives the bed. Tests use the unmodified
google-genai SDK, google-cloud-storage and google-cloud-bigquery against it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from gemini_batch_magic.emulator._bed import TestBed


@pytest.fixture(scope="session")
def bed() -> Iterator[TestBed]:
    with TestBed(pending_seconds=0.05) as running:
        yield running


@pytest.fixture
def vertex(bed: TestBed, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestBed]:
    from gemini_batch_magic import _backend, _config

    for name, value in bed.env().items():
        monkeypatch.setenv(name, value)
    _config.configure(backend="vertex", project=bed.project, location=bed.location,
                      staging=bed.staging)
    _backend.reset()
    assert bed.vertex is not None
    bed.vertex._outcomes.clear()
    bed.vertex.drop_after_create_rate = 0.0
    yield bed
    bed.vertex.drop_after_create_rate = 0.0
    bed.vertex.release()
    _backend.reset()


def storage_client() -> Any:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(project=os.environ["GOOGLE_CLOUD_PROJECT"],
                          credentials=AnonymousCredentials())


def bigquery_client() -> Any:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    return bigquery.Client(project=os.environ["GOOGLE_CLOUD_PROJECT"],
                           credentials=AnonymousCredentials())
