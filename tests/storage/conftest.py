"""Fixtures of the storage tests: the anyio backend and one ``store`` per backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from lagoon.storage import FsStore, MemoryStore, ObjectStore, S3Store
from tests.conftest import S3Server

BACKENDS = ["memory", "fs", pytest.param("s3", marks=pytest.mark.s3)]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def make_s3_store(s3: S3Server, prefix: str, **kwargs: object) -> S3Store:
    return S3Store(s3.bucket, prefix=prefix, region=s3.region, endpoint=s3.endpoint, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ObjectStore]:
    """A fresh, empty store of each backend (s3: SeaweedFS, under a prefix of its own)."""
    backend: ObjectStore
    if request.param == "memory":
        backend = MemoryStore()
    elif request.param == "fs":
        backend = FsStore(tmp_path / "store")
    else:
        s3: S3Server = request.getfixturevalue("s3_server")
        backend = make_s3_store(s3, request.getfixturevalue("s3_prefix"))
    yield backend
    await backend.close()
