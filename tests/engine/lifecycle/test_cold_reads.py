"""Cold queries: a node with empty caches answers a vector query over a large segment in at most
three sequential object-store round trips, reading only the head of the vector file and the
probed cluster blocks; the rest of the file arrives in the background and later queries read
nothing from the store."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from lagoon.config import Settings
from lagoon.engine import manifest_store
from lagoon.engine.database import Database
from lagoon.engine.indexer import index_namespace
from lagoon.engine.segment_io import resolve_cache_dir
from lagoon.format.keys import NamespaceKeys
from lagoon.storage.base import ObjectStore
from lagoon.storage.memory import MemoryStore
from tests.index.segment.data import exact_topk, queries, vectors

from .cold import TimedStore, cold_node, hydrated, round_trips
from .helpers import KEYS, NS, components, make_settings

pytestmark = pytest.mark.anyio

DIM = 48
N = 16_000


async def indexed_store() -> tuple[MemoryStore, np.ndarray]:
    store = MemoryStore()
    settings = make_settings()
    db = Database(store, settings, components("writer"))
    base = vectors(N, DIM)
    for lo in range(0, N, 4000):
        rows = [{"id": i, "vector": base[i].tolist(), "tag": i % 10} for i in range(lo, min(N, lo + 4000))]
        await db.write(NS, {"upsert_rows": rows, "distance_metric": "euclidean_squared"})
    await index_namespace(store, KEYS, settings, components("indexer"), force=True)
    await db.close()
    return store, base


async def test_a_cold_vector_query_needs_three_round_trips_and_the_probed_blocks() -> None:
    store, base = await indexed_store()
    seg_files = [k async for k in _keys(store, KEYS.root + "seg/")]
    vec_key = next(k for k in seg_files if k.endswith("/vec.vector"))
    vec_size = len(await store.get(vec_key))
    q = queries(1, DIM)[0]
    writer = Database(store, make_settings(), components("writer2"))
    for i in (N, N + 1):  # an unindexed WAL tail of two entries; doc N is the query itself
        await writer.write(
            NS, {"upsert_rows": [{"id": i, "vector": (q if i == N else -q).tolist(), "tag": 0}]}
        )
    await writer.close()
    db, timed = cold_node(store, hydrate=False)
    res = await db.query(NS, {"rank_by": ["vector", "ANN", q.tolist()], "top_k": 10})
    assert res["rows"][0]["id"] == N  # from the WAL tail
    truth = exact_topk(base, q[None, :], 9)[0]
    assert len(set(r["id"] for r in res["rows"][1:]) & set(truth.tolist())) >= 8
    assert round_trips(timed.calls) <= 3, [(c.op, c.key.rsplit("/", 2)[-2:]) for c in timed.calls]
    vec_reads = [c for c in timed.calls if c.key == vec_key]
    assert {c.op for c in vec_reads} <= {"get_range", "get_ranges"}
    assert sum(c.nbytes for c in vec_reads) < 0.25 * vec_size

    # a filtered query on the same node (half the rows pass: probing): more ranged reads only
    before = len(timed.calls)
    flt = ["tag", "Lt", 5]
    res = await db.query(NS, {"rank_by": ["vector", "ANN", q.tolist()], "top_k": 10, "filters": flt})
    assert all(r["id"] % 10 < 5 for r in res["rows"]) and len(res["rows"]) == 10
    assert all(c.op != "get" for c in timed.calls[before:] if c.key == vec_key)
    await db.close()


async def test_explain_on_a_lazily_opened_segment() -> None:
    """Explain runs in a query thread (blocking block fetches are refused on the event loop) and
    counts a segment's vectors from its row map, without reading them."""
    store, _ = await indexed_store()
    db, timed = cold_node(store, hydrate=False)
    q = queries(1, DIM)[0].tolist()
    plan = await db.explain(NS, {"rank_by": ["vector", "ANN", q], "top_k": 3})
    assert f"over {N} vectors" in plan["plan_text"]
    vec_reads = [c for c in timed.calls if c.key.endswith("/vec.vector")]
    assert [c.op for c in vec_reads] == ["get_range"]  # the head only: counting reads no vectors
    await db.close()


async def test_the_whole_vector_file_arrives_in_the_background() -> None:
    store, _ = await indexed_store()
    db, timed = cold_node(store)
    q = queries(2, DIM)
    first = await db.query(NS, {"rank_by": ["vector", "ANN", q[0].tolist()], "top_k": 10})
    await hydrated(db)
    before = len(timed.calls)
    again = await db.query(NS, {"rank_by": ["vector", "ANN", q[0].tolist()], "top_k": 10})
    await db.query(
        NS, {"rank_by": ["vector", "ANN", q[1].tolist()], "top_k": 10, "filters": ["tag", "Lt", 5]}
    )
    assert first["rows"] == again["rows"]
    assert all("/seg/" not in c.key for c in timed.calls[before:])
    await db.close()


async def _keys(store: ObjectStore, prefix: str) -> AsyncIterator[str]:
    async for m in store.list(prefix):
        yield m.key


async def test_an_older_decimal_current_costs_one_more_round_trip() -> None:
    store, base = await indexed_store()
    version, copy = manifest_store.parse_hint(await store.get(KEYS.current))
    assert copy is not None and copy.version == version  # CURRENT holds the manifest itself
    await store.put(KEYS.current, str(version).encode())  # the form older writers left
    db, timed = cold_node(store, hydrate=False)
    q = queries(1, DIM, seed=4)[0]
    res = await db.query(NS, {"rank_by": ["vector", "ANN", q.tolist()], "top_k": 10})
    truth = exact_topk(base, q[None, :], 10)[0]
    assert len(set(r["id"] for r in res["rows"]) & set(truth.tolist())) >= 9
    assert round_trips(timed.calls) == 4
    assert manifest_store.parse_hint(b"garbage") == (0, None)
    await db.close()


async def test_a_pinned_namespace_stays_on_disk(tmp_path: Path) -> None:
    """PATCH pinning: the node fetches every segment file into its disk cache in the background,
    and eviction of other segments never removes them (within cache.max_pinned_bytes)."""
    store, _ = await indexed_store()
    seg_bytes = sum([len(await store.get(k)) async for k in _keys(store, KEYS.root + "seg/")])
    settings = Settings(
        cache={"dir": str(tmp_path), "disk_bytes": 64 * 1024, "max_pinned_bytes": seg_bytes + 1},  # type: ignore[arg-type]
        manifest={"poll_interval_ms": 20},  # type: ignore[arg-type]
    )
    db = Database(store, settings, components("pinned"))
    meta = await db.update_metadata(NS, {"pinning": True})
    assert meta["pinning"] == {"replicas": 1}
    await hydrated(db)
    cached = {p.name: p.stat().st_size for p in tmp_path.rglob("*") if p.is_file()}
    assert "vec.vector" in cached and "docs" in cached and sum(cached.values()) == seg_bytes

    disk = db.segment_io.disk
    assert disk is not None
    for i in range(20):  # other segments fill the (small) unpinned budget many times over
        disk.store(("default", "other", f"seg{i}"), "docs", bytes(16 * 1024))
    kept = {p.name for p in tmp_path.rglob("*") if p.is_file() and "/docs/" in str(p)}
    assert {"vec.vector", "docs"} <= kept
    others = sum(p.stat().st_size for p in tmp_path.rglob("*") if p.is_file() and "/other/" in str(p))
    assert others <= 64 * 1024

    await db.update_metadata(NS, {"pinning": False})  # unpinned: ordinary LRU entries again
    for i in range(20, 40):
        disk.store(("default", "other", f"seg{i}"), "docs", bytes(16 * 1024))
    assert not any(
        p.is_file() for p in tmp_path.rglob("*") if "/docs/seg/" in str(p) or "/default/docs/" in str(p)
    )
    await db.close()


def test_default_disk_cache_folder() -> None:
    assert resolve_cache_dir(Settings(cache={"dir": "/x"})) == "/x"  # type: ignore[arg-type]
    assert resolve_cache_dir(Settings()) is None  # fs: already local
    s3 = Settings(storage={"backend": "s3", "bucket": "b"})  # type: ignore[arg-type]
    assert resolve_cache_dir(s3) == str(Path(tempfile.gettempdir()) / "lagoon-cache")


async def test_listing_namespaces_reads_no_segment() -> None:
    """A fresh node lists namespaces from manifests and WAL entries only; deleted ones (deletion
    still in the WAL, or folded into a manifest) are skipped, re-created ones listed."""
    store, _ = await indexed_store()  # "docs": one segment
    settings = make_settings()
    writer = Database(store, settings, components("w"))
    for name in ("gone", "folded", "back", "fresh"):
        await writer.write(name, {"upsert_rows": [{"id": 1, "tag": 1}]})
    await writer.delete_namespace("gone")
    await writer.delete_namespace("folded")
    await writer.delete_namespace("back")
    await writer.write("back", {"upsert_rows": [{"id": 2, "tag": 2}]})
    folded = NamespaceKeys.of("default", "folded")
    await index_namespace(store, folded, settings, components("i"), force=True)
    version, copy = await manifest_store.read_hint_manifest(store, folded)
    assert version >= 1 and copy is not None and copy.indexed_through >= 2  # the delete is folded
    await writer.close()
    timed = TimedStore(store)
    db = Database(timed, settings, components("lister"))
    listed = await db.list_namespaces()
    assert [n["id"] for n in listed["namespaces"]] == ["back", NS, "fresh"]
    assert not [c.key for c in timed.calls if "/seg/" in c.key]
    # a namespace the node has loaded answers from its own view
    await db.query(NS, {"rank_by": ["id", "asc"], "top_k": 1})
    assert [n["id"] for n in (await db.list_namespaces())["namespaces"]] == ["back", NS, "fresh"]
    await db.close()
