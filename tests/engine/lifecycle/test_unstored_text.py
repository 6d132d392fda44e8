"""``store: false`` on a full-text attribute (RFC 0008): indexed for BM25 and the token operators
but not kept in segments. Answers equal a stored twin's over segments + tail, before and after
compaction; requests that need the value are 400s that write nothing; patches must set it."""

from __future__ import annotations

from typing import Any

import pytest

from lagoon.engine import manifest_store
from lagoon.engine.compactor import compact_namespace
from lagoon.engine.database import Database
from lagoon.engine.indexer import index_namespace
from lagoon.errors import InvalidRequest
from lagoon.format.keys import NamespaceKeys
from lagoon.index.text.corpus import corpus
from lagoon.storage.memory import MemoryStore

from .helpers import components, make_settings

pytestmark = pytest.mark.anyio

N = 900
TWIN, BARE = "stored", "bare"
SCHEMAS = {
    TWIN: {"text": {"type": "string", "full_text_search": True}, "tag": {"type": "int"}},
    BARE: {"text": {"type": "string", "full_text_search": True, "store": False}, "tag": {"type": "int"}},
}


async def _load(store: MemoryStore) -> tuple[Database, list[str]]:
    settings = make_settings()
    db = Database(store, settings, components("writer"))
    texts = [d["text"] for d in corpus(N, seed=5)]
    for ns, schema in SCHEMAS.items():
        for lo in range(0, N, 300):  # three segments, then a tail
            rows = [{"id": i, "text": texts[i], "tag": i % 5} for i in range(lo, lo + 300)]
            await db.write(ns, {"upsert_rows": rows, "schema": schema})
            await index_namespace(
                store, NamespaceKeys.of("default", ns), settings, components("idx"), force=True
            )
        await db.write(ns, {"upsert_rows": [{"id": 3, "text": texts[10] + " tail", "tag": 9}]})
        await db.write(ns, {"deletes": [4]})
    return db, texts


async def _same_answers(db: Database, texts: list[str]) -> None:
    for i in (3, 10, 250, 777):
        q = " ".join(texts[i].split()[:3])
        bodies: list[dict[str, Any]] = [
            {"rank_by": ["text", "BM25", q], "top_k": 10, "include_attributes": ["tag"]},
            {"rank_by": ["id", "asc"], "top_k": 20, "filters": ["text", "ContainsAllTokens", q]},
            {"rank_by": ["text", "BM25", q], "top_k": 5, "include_attributes": True},
        ]
        for body in bodies:
            want = await db.query(TWIN, body)
            got = await db.query(BARE, body)
            if body.get("include_attributes") is True:  # the twin returns the text; the bare one cannot
                want = {**want, "rows": [{k: v for k, v in r.items() if k != "text"} for r in want["rows"]]}
                assert all("text" not in r for r in got["rows"])
            assert got["rows"] == want["rows"], body


async def _docs_columns(store: MemoryStore, ns: str) -> list[str]:
    from lagoon.format.segment import MAGIC_DOCS, open_sections

    keys = NamespaceKeys.of("default", ns)
    out = []
    async for m in store.list(keys.root + "seg/"):
        if m.key.endswith("/docs"):
            sf = open_sections(await store.get(m.key), magic=MAGIC_DOCS, what=m.key)
            out += [c["name"] for c in sf.meta["columns"]]
    return out


async def test_unstored_text_answers_like_a_stored_twin_and_is_not_kept() -> None:
    store = MemoryStore()
    db, texts = await _load(store)
    await _same_answers(db, texts)
    assert "text" in await _docs_columns(store, TWIN)
    assert set(await _docs_columns(store, BARE)) == {"tag"}
    settings = make_settings()
    for ns in SCHEMAS:
        out = await compact_namespace(
            store, NamespaceKeys.of("default", ns), settings, components("c"), full=True
        )
        assert out.status == "committed"
    db2 = Database(store, settings, components("reader"))  # a fresh node: segments from the bucket
    await _same_answers(db2, texts)
    assert set(await _docs_columns(store, BARE)) == {"tag"}
    schema = await db2.get_schema(BARE)
    assert schema["text"]["store"] is False and "store" not in schema["tag"]
    await db.close()
    await db2.close()


async def _bucket(store: MemoryStore) -> dict[str, bytes]:
    return {m.key: await store.get(m.key) async for m in store.list("")}


@pytest.mark.parametrize(
    "body",
    [
        {"rank_by": ["text", "BM25", "x"], "include_attributes": ["text"]},
        {"rank_by": ["text", "asc"]},
        {"rank_by": ["id", "asc"], "filters": ["text", "Eq", "x"]},
        {"rank_by": ["id", "asc"], "filters": ["text", "Glob", "x*"]},
        {"aggregate_by": {"n": ["Count"]}, "group_by": ["text"]},
        {"rank_by": ["text", "BM25", "x"], "top_k": 3, "compute_attributes": {"h": ["Highlight", "text"]}},
    ],
)
async def test_requests_that_need_the_value_are_refused(body: dict[str, Any]) -> None:
    store = MemoryStore()
    db = Database(store, make_settings(), components("w"))
    await db.write(
        BARE, {"upsert_rows": [{"id": 1, "text": "hello lagoon", "tag": 1}], "schema": SCHEMAS[BARE]}
    )
    with pytest.raises(InvalidRequest, match="store: false"):
        await db.query(BARE, {"top_k": 3, **body})
    await db.close()


@pytest.mark.parametrize(
    "write",
    [
        {"patch_rows": [{"id": 1, "tag": 2}]},
        {"patch_by_filter": {"filters": ["tag", "Eq", 1], "patch": {"tag": 3}}},
        {"schema": {"text": {"type": "string", "full_text_search": True, "store": True}}},
        {"schema": {"text": {"type": "string", "full_text_search": {"stemming": True}}}},
        {"schema": {"text": {"type": "string", "full_text_search": False}}},
        {"schema": {"other": {"type": "string", "store": False}}},
        {
            "schema": {
                "other": {"type": "string", "full_text_search": True, "store": False, "filterable": True}
            }
        },
        {"schema": {"tag": {"type": "int", "store": False}}},
        {"copy_from_namespace": BARE},
    ],
)
async def test_writes_that_would_lose_or_need_the_value_are_refused(write: dict[str, Any]) -> None:
    store = MemoryStore()
    db = Database(store, make_settings(), components("w"))
    await db.write(
        BARE, {"upsert_rows": [{"id": 1, "text": "hello lagoon", "tag": 1}], "schema": SCHEMAS[BARE]}
    )
    await index_namespace(
        store, NamespaceKeys.of("default", BARE), make_settings(), components("i"), force=True
    )
    before = await _bucket(store)
    target = "copy" if "copy_from_namespace" in write else BARE
    with pytest.raises(InvalidRequest, match=r"store|full_text_search"):
        await db.write(target, write)
    assert await _bucket(store) == before
    ok = await db.write(BARE, {"patch_rows": [{"id": 1, "tag": 2, "text": "hello again"}]})  # sets it: fine
    assert ok["rows_patched"] == 1
    res = await db.query(BARE, {"rank_by": ["text", "BM25", "again"], "top_k": 3, "include_attributes": True})
    assert [{k: v for k, v in r.items() if not k.startswith("$")} for r in res["rows"]] == [
        {"id": 1, "tag": 2}
    ]
    await db.close()


@pytest.mark.parametrize("damaged", ["fts.text", "flt.tag"])
async def test_repair_keeps_the_index_of_an_unstored_attribute(damaged: str) -> None:
    """A damaged fts file of an unstored attribute is rebuilt from the WAL entries of its rows; a
    segment rebuilt for another file keeps its intact postings (its docs hold no value to re-index)."""
    from lagoon.engine.ops.repair import check_namespace

    store = MemoryStore()
    db, texts = await _load(store)
    await db.close()
    keys = NamespaceKeys.of("default", BARE)
    victim = sorted([m.key async for m in store.list(keys.root + "seg/") if m.key.endswith("/" + damaged)])[0]
    data = bytearray(await store.get(victim))
    data[len(data) // 2] ^= 0x40
    await store.put(victim, bytes(data))
    report = await check_namespace(store, "default", BARE, dry_run=False, grace_secs=0.0)
    assert report is not None
    latest = await manifest_store.read_latest(store, keys)
    assert latest is not None and victim.rsplit("/", 2)[-2] not in {s.id for s in latest.segments}  # rebuilt
    fresh = Database(store, make_settings(), components("after-repair"))
    await _same_answers(fresh, texts)
    await fresh.close()
