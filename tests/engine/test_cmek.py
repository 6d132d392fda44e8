"""``encryption`` on writes: customer-managed keys (CMEK) as SSE-KMS.

A namespace may name a KMS key only when the server already writes every object with SSE-KMS under
that key (storage.sse = "aws:kms", storage.sse_kms_key_id = the key): then every object of the
namespace is encrypted with it. That the store sends those headers on every PUT (plain, conditional,
multipart) is checked on the wire in tests/storage/test_s3.py::test_aws_kms_headers_reach_the_store_on_every_put
(no local S3 server has a KMS). Here: the engine's decision, the 400s (nothing written) and the
namespace metadata, which reports the key."""

from __future__ import annotations

from typing import Any

import pytest

from lagoon.config import Settings
from lagoon.engine.database import Database
from lagoon.errors import InvalidRequest
from lagoon.storage.memory import MemoryStore
from tests.engine.lifecycle.helpers import NS, components

KEY = "arn:aws:kms:us-east-1:123456789012:key/c71a6a43-9ab8-4c3e-aed5-b0a724a326e8"
CMEK = {"mode": "customer-managed", "key_name": KEY}
pytestmark = pytest.mark.anyio


def _db(**storage: Any) -> tuple[Database, MemoryStore]:
    store = MemoryStore()
    settings = Settings(storage=storage, manifest={"poll_interval_ms": 20})  # type: ignore[arg-type]
    return Database(store, settings, components("writer")), store


async def _keys(store: MemoryStore) -> list[str]:
    return [m.key async for m in store.list("")]


@pytest.mark.parametrize("backend", ["fs", "memory"])
async def test_backends_without_kms_refuse_a_customer_managed_key(backend: str) -> None:
    db, store = _db(backend=backend, root="/tmp/unused")
    for enc in (CMEK, {"cmek": {"key_name": KEY}}):
        with pytest.raises(InvalidRequest, match=f"needs the s3 storage backend.*{backend} backend"):
            await db.write(NS, {"upsert_rows": [{"id": 1}], "encryption": enc})
    assert await _keys(store) == []
    await db.write(NS, {"upsert_rows": [{"id": 1}], "encryption": {"mode": "default"}})
    assert (await db.metadata(NS))["encryption"] == {"mode": "default"}
    await db.close()


async def test_s3_with_the_servers_kms_key_accepts_it_and_reports_it() -> None:
    db, store = _db(backend="s3", bucket="b", sse="aws:kms", sse_kms_key_id=KEY)
    await db.write(NS, {"upsert_rows": [{"id": 1}]})
    assert (await db.metadata(NS))["encryption"] == {"mode": "default"}
    await db.write(NS, {"upsert_rows": [{"id": 2}], "encryption": {"cmek": {"key_name": KEY}}})
    assert (await db.metadata(NS))["encryption"] == CMEK
    await db.write(NS, {"upsert_rows": [{"id": 3}]})  # later writes keep it
    assert (await db.metadata(NS))["encryption"] == CMEK
    restarted = Database(store, db.settings, components("reader"))  # persisted with the namespace
    assert (await restarted.metadata(NS))["encryption"] == CMEK
    await db.write(NS, {"upsert_rows": [{"id": 4}], "encryption": {"mode": "default"}})
    assert (await db.metadata(NS))["encryption"] == {"mode": "default"}
    await restarted.close()
    await db.close()


@pytest.mark.parametrize(
    ("storage", "message"),
    [
        ({"sse": "aws:kms", "sse_kms_key_id": "another-key"}, "SSE-KMS with key 'another-key'"),
        ({"sse": "AES256"}, "SSE AES256"),
        ({}, "no server-side encryption"),
    ],
)
async def test_s3_with_another_key_refuses_it(storage: dict[str, str], message: str) -> None:
    db, store = _db(backend="s3", bucket="b", **storage)
    with pytest.raises(
        InvalidRequest, match=f"cannot be used.*{message}.*per-namespace keys are not implemented"
    ):
        await db.write(NS, {"upsert_rows": [{"id": 1}], "encryption": CMEK})
    assert await _keys(store) == []
    await db.close()


async def test_malformed_encryption_is_a_400() -> None:
    db, _ = _db(backend="s3", bucket="b", sse="aws:kms", sse_kms_key_id=KEY)
    for enc, message in [
        ("kms", "expected"),
        ({"mode": "customer-managed"}, "key_name"),
        ({"mode": "other"}, "expected"),
        ({**CMEK, "encryption_context": {"a": "b"}}, "encryption_context"),
    ]:
        with pytest.raises(InvalidRequest, match=message):
            await db.write(NS, {"upsert_rows": [{"id": 1}], "encryption": enc})
    await db.close()
