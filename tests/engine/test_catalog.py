"""Listing namespaces costs O(page) store requests, and ``limits.max_namespaces`` is enforced
without listing the org: the namespace catalog (engine/catalog.py) kept by the write and delete
paths, reconciled by the worker's sweep for orgs that predate it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from lagoon.config import Settings
from lagoon.engine.catalog import Catalog
from lagoon.engine.components import Components
from lagoon.engine.database import Database
from lagoon.engine.scheduler import IndexerLoop
from lagoon.errors import Forbidden
from lagoon.format.keys import CATALOG_PREFIX
from lagoon.storage.instrumented import InstrumentedStore
from lagoon.storage.memory import MemoryStore

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def create(db: Database, names: list[str], *, concurrency: int = 8) -> None:
    sem = asyncio.Semaphore(concurrency)

    async def one(name: str) -> None:
        async with sem:
            await db.write(name, {"upsert_rows": [{"id": 1, "t": name}]})

    await asyncio.gather(*(one(n) for n in names))


async def list_all(db: Database, page_size: int = 100, **kw: Any) -> list[str]:
    out: list[str] = []
    cursor = None
    while True:
        page = await db.list_namespaces(cursor=cursor, page_size=page_size, **kw)
        out += [n["id"] for n in page["namespaces"]]
        cursor = page.get("next_cursor")
        if not cursor:
            return out


def requests(store: InstrumentedStore) -> int:
    return sum(store.counts.values())


@pytest.mark.parametrize("count", [10, 3000])
async def test_a_page_costs_at_most_three_requests(count: int) -> None:
    store = InstrumentedStore(MemoryStore())
    names = [f"ns-{i:05d}" for i in range(count)]
    writer = Database(store, Settings())
    await create(writer, names)
    reader = Database(store, Settings())  # a node that has loaded none of them
    store.reset_counts()
    page = await reader.list_namespaces(page_size=100)
    assert requests(store) <= 3, store.counts
    assert [n["id"] for n in page["namespaces"]] == names[:100]
    assert ("next_cursor" in page) == (count > 100)
    store.reset_counts()
    later = await reader.list_namespaces(page_size=100, cursor=names[len(names) // 2])
    assert requests(store) <= 3, store.counts
    assert [n["id"] for n in later["namespaces"]] == names[len(names) // 2 + 1 :][:100]
    assert await list_all(reader, page_size=1000) == names
    assert [n["id"] for n in (await reader.list_namespaces(prefix="ns-0000"))["namespaces"]] == names[:10]
    record = await Catalog(store, Components()).read_org("default")
    assert record is not None and record.complete and record.count == count
    await writer.close()
    await reader.close()


async def test_deleted_and_recreated_namespaces() -> None:
    store = MemoryStore()
    db = Database(store, Settings())
    await create(db, ["a", "b", "c"])
    await db.delete_namespace("b")
    other = Database(store, Settings())
    assert await list_all(other) == ["a", "c"]
    await db.write("b", {"upsert_rows": [{"id": 2}]})
    assert await list_all(other) == ["a", "b", "c"]
    record = await Catalog(store, Components()).read_org("default")
    assert record is not None and record.count == 3
    await db.close()
    await other.close()


class ListingLog(InstrumentedStore):
    """Records the prefix of every listing."""

    def __init__(self, inner: MemoryStore) -> None:
        super().__init__(inner)
        self.listed: list[str] = []

    def list(self, prefix: str, start_after: str | None = None) -> Any:
        self.listed.append(prefix)
        return super().list(prefix, start_after)

    async def list_prefixes(
        self, prefix: str, start_after: str | None = None, limit: int | None = None
    ) -> Any:
        self.listed.append(prefix)
        return await super().list_prefixes(prefix, start_after, limit)


async def test_max_namespaces_without_listing_the_org() -> None:
    store = ListingLog(MemoryStore())
    db = Database(store, Settings(limits={"max_namespaces": 3}))
    await create(db, [f"n{i}" for i in range(3)], concurrency=1)
    store.listed.clear()
    with pytest.raises(Forbidden, match="max_namespaces"):
        await db.write("n3", {"upsert_rows": [{"id": 1}]})
    # the only listing is the new namespace's own WAL (loading it), never the org or its catalog
    assert store.listed == ["default/n3/wal/"], store.listed
    assert await list_all(db) == ["n0", "n1", "n2"]  # the refused one left nothing behind
    await db.write("n1", {"upsert_rows": [{"id": 9}]})  # writes to existing namespaces go on
    await db.delete_namespace("n0")
    await db.write("n3", {"upsert_rows": [{"id": 1}]})
    assert await list_all(db) == ["n1", "n2", "n3"]
    # concurrent creations on two nodes cannot both take the last slot
    other = Database(store, Settings(limits={"max_namespaces": 4}))
    mine = Database(store, Settings(limits={"max_namespaces": 4}))
    results = await asyncio.gather(
        other.write("x1", {"upsert_rows": [{"id": 1}]}),
        mine.write("x2", {"upsert_rows": [{"id": 1}]}),
        return_exceptions=True,
    )
    assert sum(isinstance(r, Forbidden) for r in results) == 1, results
    assert len(await list_all(db)) == 4
    for d in (db, other, mine):
        await d.close()


async def test_an_org_that_predates_the_catalog_is_listed_then_reconciled() -> None:
    store = InstrumentedStore(MemoryStore())
    db = Database(store, Settings())
    names = [f"old-{i:03d}" for i in range(30)]
    await create(db, names)
    await db.delete_namespace("old-007")
    async for meta in store.list(CATALOG_PREFIX):  # as if written by a build without the catalog
        await store.delete(meta.key)
    expected = [n for n in names if n != "old-007"]
    assert await list_all(db, page_size=7) == expected  # from the folders meanwhile
    await IndexerLoop(store, Settings(), Components()).run_once()  # its sweep reconciles
    store.reset_counts()
    page = await db.list_namespaces(page_size=100)
    assert requests(store) <= 3, store.counts
    assert [n["id"] for n in page["namespaces"]] == expected
    record = await Catalog(store, Components()).read_org("default")
    assert record is not None and record.complete and record.count == len(expected)
    await db.close()


async def test_a_sweep_that_read_a_namespace_before_its_delete_does_not_bring_it_back() -> None:
    """The sweep reads which namespaces exist, then the markers. A delete in between removes the
    marker; the stale read must not put it back (the namespace would be listed forever)."""
    store = MemoryStore()
    db = Database(store, Settings())
    await create(db, ["keep", "gone"])
    catalog = Catalog(store, Components())
    existing = ["keep", "gone"]  # read by the sweep before the delete
    await db.delete_namespace("gone")

    async def still_exists(name: str) -> bool:
        return name == "keep"

    added, removed = await catalog.reconcile("default", existing, still_exists=still_exists)
    assert added == ["gone"] and removed == []  # it did see a missing marker...
    page = await db.list_namespaces(page_size=100)
    assert [n["id"] for n in page["namespaces"]] == ["keep"]  # ...and took it out again
    record = await catalog.read_org("default")
    assert record is not None and record.complete and record.count == 1
    await db.close()
