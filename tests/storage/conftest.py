"""Fixtures of the storage tests: the anyio backend and one ``store`` per backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from lagoon.storage import FsStore, MemoryStore, ObjectStore, S3Store
from tests.conftest import MotoS3

BACKENDS = ["memory", "fs", pytest.param("s3", marks=pytest.mark.s3)]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def make_s3_store(moto: MotoS3, prefix: str, **kwargs: object) -> S3Store:
    return S3Store(moto.bucket, prefix=prefix, region=moto.region, endpoint=moto.endpoint, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ObjectStore]:
    """A fresh, empty store of each backend (s3: moto, under a prefix of its own)."""
    backend: ObjectStore
    if request.param == "memory":
        backend = MemoryStore()
    elif request.param == "fs":
        backend = FsStore(tmp_path / "store")
    else:
        moto: MotoS3 = request.getfixturevalue("moto_s3")
        backend = make_s3_store(moto, request.getfixturevalue("s3_prefix"))
    yield backend
    await backend.close()
