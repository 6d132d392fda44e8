"""open_store / store_from_url: the stack and the URL forms."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from lagoon.config import StorageSettings
from lagoon.storage import (
    FsStore,
    InstrumentedStore,
    MemoryStore,
    RetryingStore,
    S3Store,
    open_store,
    settings_from_url,
    store_from_url,
)
from tests.conftest import S3Server

pytestmark = pytest.mark.anyio


async def test_stack_is_retrying_over_instrumented_over_backend(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    store = open_store(
        StorageSettings(backend="fs", root=str(tmp_path), prefix="lagoon/"), metrics_registry=registry
    )
    assert isinstance(store, RetryingStore)
    assert isinstance(store.inner, InstrumentedStore)
    assert isinstance(store.inner.inner, FsStore)
    await store.put("k", b"v")
    assert (tmp_path / "lagoon" / "k").read_bytes() == b"v"  # the prefix is a sub-folder
    assert registry.get_sample_value("lagoon_objstore_requests_total", {"op": "put"}) == 1
    bare = open_store(StorageSettings(backend="memory"), metrics_registry=registry, retry=False)
    assert isinstance(bare, InstrumentedStore) and isinstance(bare.inner, MemoryStore)


@pytest.mark.s3
async def test_s3_from_settings_and_url(s3_server: S3Server, s3_prefix: str) -> None:
    settings = StorageSettings(
        backend="s3",
        bucket=s3_server.bucket,
        prefix=s3_prefix,
        region=s3_server.region,
        endpoint=s3_server.endpoint,
    )
    store = open_store(settings, metrics_registry=CollectorRegistry())
    await store.put("k", b"v")
    url = f"s3://{s3_server.bucket}/{s3_prefix}?endpoint={s3_server.endpoint}&region={s3_server.region}"
    again = store_from_url(url, metrics_registry=CollectorRegistry(), retry=False)
    assert isinstance(again, InstrumentedStore) and isinstance(again.inner, S3Store)
    assert await again.get("k") == b"v"
    await store.close()


def test_settings_from_url() -> None:
    s = settings_from_url("s3://bucket/some/prefix?region=eu-west-1&sse=aws:kms&sse_kms_key_id=kid")
    assert (s.backend, s.bucket, s.prefix, s.region, s.sse, s.sse_kms_key_id) == (
        "s3",
        "bucket",
        "some/prefix/",
        "eu-west-1",
        "aws:kms",
        "kid",
    )
    assert settings_from_url("s3://bucket").prefix == ""
    assert settings_from_url("s3://bucket/").prefix == ""
    assert (
        settings_from_url("file:///var/lib/lagoon").backend,
        settings_from_url("file:///var/lib/lagoon").root,
    ) == (
        "fs",
        "/var/lib/lagoon",
    )
    assert settings_from_url("./data").root == "./data"
    assert settings_from_url("/abs/data").backend == "fs"
    assert settings_from_url("memory://").backend == "memory"
    for bad in ["gs://bucket", "s3://", "s3://bucket?bogus=1", "file://host/path"]:
        with pytest.raises(ValueError):
            settings_from_url(bad)
