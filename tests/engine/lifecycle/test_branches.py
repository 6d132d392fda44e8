"""Copy-on-write branches (docs/rfcs/0007-branches.md): a branch writes one manifest and small
markers whatever the source's size, both sides stay independent, branches of branches work, and
the source's GC keeps every object a branch reads, also after the source is deleted."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from lagoon.engine import manifest_store
from lagoon.engine.compactor import compact_namespace
from lagoon.engine.database import Database
from lagoon.engine.gc import collect_garbage
from lagoon.engine.indexer import index_namespace
from lagoon.errors import InvalidRequest, LagoonError, NotFound
from lagoon.format.keys import REFS_PREFIX, NamespaceKeys
from lagoon.format.wal import decode_entry
from lagoon.storage.base import ObjectNotFound, ObjectStore
from lagoon.storage.memory import MemoryStore

from .helpers import KEYS, NS, ManualStoreClock, Model, components, db_on, make_settings, random_writes
from .test_workers import Bucket, bucket

__all__ = ["bucket"]  # the fs / SeaweedFS bucket fixture of the multi-worker suite

pytestmark = pytest.mark.anyio
GRACE = 10.0


def keys(ns: str) -> NamespaceKeys:
    return NamespaceKeys.of("default", ns)


async def docs(db: Database, ns: str, **extra: Any) -> dict[int, dict[str, Any]]:
    body = {"rank_by": ["id", "asc"], "top_k": 1000, "include_attributes": True, **extra}
    rows = (await db.query(ns, body))["rows"]
    return {r["id"]: {k: r[k] for k in ("v", "tag") if r.get(k) is not None} for r in rows}


async def keys_under(store: ObjectStore, prefix: str) -> list[str]:
    return sorted([m.key async for m in store.list(prefix)])


async def missing_objects(store: ObjectStore, ns: str) -> list[str]:
    """Objects the branch's latest manifest needs that are not in the bucket, found without the
    engine: each segment file where its owner keeps it, each WAL entry after indexed_through up
    to the head where the branch's ranges (or its own WAL) hold it."""
    k = keys(ns)
    m = await manifest_store.read_latest(store, k)
    assert m is not None
    out = []
    for ref in m.segments:
        for name in ref.files:
            key = k.sibling(ref.owner).segment_file(ref.id, name)
            try:
                await store.head(key)
            except ObjectNotFound:
                out.append(key)
    for r in m.branch.wal if m.branch else ():
        for seq in range(r.first, r.last + 1):
            try:
                entry = decode_entry(await store.get(k.sibling(r.namespace).wal(seq)))
                assert entry.seq == seq
            except ObjectNotFound:
                out.append(k.sibling(r.namespace).wal(seq))
    return out


async def _source(store: MemoryStore, settings: Any, rounds: int = 3) -> tuple[Database, Model]:
    """``docs`` with indexed segments (compacted once) and an unindexed tail."""
    db = db_on(store, settings)
    model = Model()
    rng = random.Random(7)
    for _ in range(rounds):
        await random_writes(db, model, rng, 6, id_range=40)
        await index_namespace(store, KEYS, settings, components("i"), force=True)
    await random_writes(db, model, rng, 4, id_range=40)  # the unindexed tail
    return db, model


async def test_branch_writes_one_manifest_and_reads_the_source_in_place() -> None:
    store = MemoryStore()
    settings = make_settings(gc_grace_secs=GRACE)
    db, model = await _source(store, settings)
    before = {m.key: m.size async for m in store.list("default/docs/")}
    head = (await db.metadata(NS))["version"]
    r = await db.branch("b", NS)
    assert r["version"] == head and r["rows_affected"] == len(model.docs)
    # Nothing of the source changed or was copied: the branch holds its manifest (and CURRENT's
    # copy) and the fence of its wal/1, and one marker names it under the source's references.
    assert {m.key: m.size async for m in store.list("default/docs/")} == before
    assert await keys_under(store, "default/b/") == [
        "default/b/manifest/00000000000000000001.json",
        "default/b/manifest/CURRENT",
        "default/b/wal/00000000000000000001.wal",
    ]
    assert [k.rsplit("/", 2)[-2] for k in await keys_under(store, REFS_PREFIX)] == ["b"]
    m = await manifest_store.read_latest(store, keys("b"))
    assert m is not None and m.segments and all(s.owner == NS for s in m.segments)
    assert await docs(db, "b") == model.docs
    meta = await db.metadata("b")
    assert meta["branching"] == {"parent": NS, "at_version": head} and meta["version"] == head
    assert "branching" not in await db.metadata(NS)
    # A cold node (nothing cached) reads the branch the same.
    cold = db_on(store, settings, node="cold")
    assert await docs(cold, "b") == model.docs
    await cold.close()
    await db.close()


async def test_writes_after_branching_stay_on_their_side() -> None:
    store = MemoryStore()
    settings = make_settings(gc_grace_secs=GRACE)
    db, model = await _source(store, settings)
    at = (await db.branch("b", NS))["version"]
    snapshot = dict(model.docs)
    await db.write(NS, {"upsert_rows": [{"id": 1000, "v": 1}], "deletes": [next(iter(snapshot))]})
    w = await db.write("b", {"upsert_rows": [{"id": 2000, "v": 2}]})
    assert w["version"] == at + 1  # the branch's versions continue from the fork point
    src, br = await docs(db, NS), await docs(db, "b")
    assert 1000 in src and 2000 not in src and next(iter(snapshot)) not in src
    assert 2000 in br and 1000 not in br and next(iter(snapshot)) in br
    assert {i: d for i, d in br.items() if i != 2000} == snapshot
    # Indexing and compacting both sides keeps them apart; the branch's fork range is folded.
    for ns in (NS, "b"):
        await index_namespace(store, keys(ns), settings, components("i"), force=True)
        await compact_namespace(store, keys(ns), settings, components("c"))
    m = await manifest_store.read_latest(store, keys("b"))
    assert m is not None and m.branch is not None and m.branch.wal == ()
    cold = db_on(store, settings, node="cold")
    assert await docs(cold, NS) == src and await docs(cold, "b") == br
    await cold.close()
    await db.close()


async def test_branch_of_a_branch_reads_each_owner_in_place() -> None:
    store = MemoryStore()
    settings = make_settings(gc_grace_secs=GRACE)
    db, model = await _source(store, settings)
    await db.branch("b", NS)
    await db.write("b", {"upsert_rows": [{"id": 3000, "v": 3}]})
    await db.branch("c", "b")
    want = {**model.docs, 3000: {"v": 3}}
    assert await docs(db, "c") == want
    m = await manifest_store.read_latest(store, keys("c"))
    assert m is not None and m.branch is not None and m.branch.parent == "b"
    assert {s.owner for s in m.segments} == {NS}  # the owner that holds the files, not "b"
    assert {r.namespace for r in m.branch.wal} == {NS, "b"}  # the source's tail, then b's entry
    refs = await keys_under(store, REFS_PREFIX)
    assert {tuple(k.split("/")[3:5]) for k in refs} == {(NS, "b"), (NS, "c"), ("b", "c")}
    assert await missing_objects(store, "c") == []
    await db.close()


async def test_branch_refusals_write_nothing() -> None:
    store = MemoryStore()
    settings = make_settings(gc_grace_secs=GRACE)
    db, _ = await _source(store, settings, rounds=1)
    await db.write("taken", {"upsert_rows": [{"id": 1}]})
    before = await keys_under(store, "")
    head = (await db.metadata(NS))["version"]
    cases = [
        (("b", "missing"), NotFound, "missing"),
        (("taken", NS), InvalidRequest, "must not exist"),
        ((NS, NS), InvalidRequest, "itself"),
    ]
    for (dest, src), err, text in cases:
        with pytest.raises(err, match=text):
            await db.branch(dest, src)
    with pytest.raises(InvalidRequest, match=f"is at version {head}"):
        await db.branch("b", NS, at_version=head + 1)
    # Refusals after the source was read leave only a marker the GC reclaims after grace.
    assert [k for k in await keys_under(store, "") if k not in before and not k.startswith(REFS_PREFIX)] == []
    await db.close()


async def test_parent_deleted_keeps_what_branches_read_until_the_last_one_goes() -> None:
    clock = ManualStoreClock()
    store = MemoryStore(clock=clock)
    settings = make_settings(gc_grace_secs=GRACE, compaction_fanin=2)
    db, model = await _source(store, settings)
    await db.branch("b", NS)
    await db.branch("c", "b")
    await db.delete_namespace(NS)

    async def churn() -> None:
        for ns in (NS, "b", "c"):
            await index_namespace(store, keys(ns), settings, components("i"), force=True)
            await compact_namespace(store, keys(ns), settings, components("c"))
            await collect_garbage(store, keys(ns), settings, components("g"), retain_versions=1)
        clock.advance(GRACE + 1)

    for _ in range(4):
        await churn()
    assert await missing_objects(store, "b") == [] and await missing_objects(store, "c") == []
    cold = db_on(store, settings, node="cold")
    assert await docs(cold, "b") == model.docs and await docs(cold, "c") == model.docs
    with pytest.raises(NotFound):
        await docs(cold, NS)
    await cold.close()
    await db.delete_namespace("c")
    await db.delete_namespace("b")
    for _ in range(5):
        await churn()
    left = [k for k in await keys_under(store, "default/docs/seg/")]
    assert left == []  # the last branch went: the parent's segments are reclaimed
    assert await keys_under(store, REFS_PREFIX) == []
    await db.close()


async def test_a_write_creating_the_destination_races_a_branch_safely() -> None:
    """The branch fences the destination's wal/1 before its manifest: a write that comes after
    the fence gets a 503 while the creation may still commit, then lands on the branch; one that
    came first makes the branch refuse. Nothing acknowledged is ever hidden."""
    store = MemoryStore()
    settings = make_settings(gc_grace_secs=GRACE)
    db, model = await _source(store, settings, rounds=1)
    other = db_on(store, settings, node="other")
    assert not (await other.handle("default", "b").state.snapshot()).exists  # other's view: empty
    await db.branch("b", NS)
    w = await other.write("b", {"upsert_rows": [{"id": 5000, "v": 5}]})
    assert w["version"] > (await db.metadata(NS))["version"]
    assert await docs(db, "b") == {**model.docs, 5000: {"v": 5}}
    await other.write("first", {"upsert_rows": [{"id": 1}]})
    with pytest.raises(InvalidRequest, match="must not exist"):
        await db.branch("first", NS)
    assert await docs(db, "first") == {1: {}}
    await other.close()
    await db.close()


async def test_query_at_a_past_version_and_when_it_is_gone() -> None:
    clock = ManualStoreClock()
    store = MemoryStore(clock=clock)
    settings = make_settings(gc_grace_secs=GRACE)
    db = db_on(store, settings)
    history: dict[int, dict[int, dict[str, Any]]] = {}
    model = Model()
    rng = random.Random(11)
    for step in range(6):
        await random_writes(db, model, rng, 3, id_range=20)
        history[(await db.metadata(NS))["version"]] = dict(model.docs)
        if step % 2:
            await index_namespace(store, KEYS, settings, components("i"), force=True)
            await compact_namespace(store, KEYS, settings, components("c"))
    for version, want in history.items():
        assert await docs(db, NS, at_version=version) == want, version
    first = min(history)
    await db.branch("old", NS, at_version=first)
    assert await docs(db, "old") == history[first]
    assert (await db.metadata("old"))["branching"] == {"parent": NS, "at_version": first}
    for _ in range(3):
        clock.advance(GRACE + 1)
        await db.write(NS, {"upsert_rows": [{"id": 99, "v": 1}]})
        await index_namespace(store, KEYS, settings, components("i"), force=True)
        await collect_garbage(store, KEYS, settings, components("g"), retain_versions=1)
    with pytest.raises(InvalidRequest, match="no longer retains") as gone:
        await docs(db, NS, at_version=first + 1)
    assert gone.value.status == 400
    with pytest.raises(LagoonError, match="no longer retains"):
        await db.branch("older", NS, at_version=first + 1)
    assert await docs(db, "old") == history[first]  # the branch still reads what it needs
    await db.close()


@pytest.mark.slow
async def test_branches_survive_workers_and_gc_running_concurrently(bucket: Bucket) -> None:
    """Three workers (indexer, compactor, GC) on one bucket while the source takes a stream of
    writes (and is deleted once) and branches are created from it, from past versions and from
    other branches: every branch's latest manifest always names only objects that exist, and
    every branch reads exactly what its source held at the version it was created from."""
    from lagoon.engine.scheduler import IndexerLoop

    from .test_workers import write_stream

    grace = 1.5
    settings = make_settings(gc_grace_secs=grace, compaction_fanin=2, poll_interval_secs=0.03)
    store = bucket.open()
    db = db_on(store, settings)
    loops = [
        IndexerLoop(bucket.open(), settings, components(f"w{i}", seed=i), concurrency=2) for i in range(3)
    ]
    for loop in loops:
        loop.start()
    model, rng = Model(), random.Random(5)
    expected: dict[str, dict[int, dict[str, Any]]] = {}
    problems: list[str] = []

    async def check_all() -> None:
        for name in list(expected):
            problems.extend(await missing_objects(store, name))

    try:
        await write_stream(db, model, rng, 10)
        for k in range(8):
            await write_stream(db, model, rng, 8, truncate_at=3 if k == 4 else -1)
            if not model.docs:
                await write_stream(db, model, rng, 2)
            name = f"br{k}"
            if k % 3 == 2:  # a branch of an earlier branch, which then moves on by itself
                src = f"br{k - 2}"
                await db.branch(name, src)
                expected[name] = dict(expected[src])
                await db.write(src, {"upsert_rows": [{"id": 900 + k, "v": k}]})
                expected[src][900 + k] = {"v": k}
            else:
                await db.branch(name, NS)
                expected[name] = dict(model.docs)
            await check_all()
        await asyncio.sleep(grace * 2.5)  # workers index, compact and collect past the grace period
        await check_all()
        assert problems == []
        cold = db_on(bucket.open(), settings, node="cold")
        for name, want in expected.items():
            assert await docs(cold, name) == want, name
        await cold.close()
    finally:
        await asyncio.gather(*(loop.stop() for loop in loops))
        await db.close()


async def test_repair_finds_nothing_to_fix_in_branches_and_their_source() -> None:
    """``lagoon repair`` reads a branch's segments and fork range where its owners keep them: a
    healthy branch (and its source) are reported clean, and fixing changes no byte."""
    from lagoon.engine.ops.repair import repair

    store = MemoryStore()
    settings = make_settings(gc_grace_secs=GRACE)
    db, _ = await _source(store, settings)
    await db.write(NS, {"schema": {"extra": "string"}, "upsert_rows": [{"id": 1, "extra": "x"}]})
    await db.branch("b", NS)
    await db.write("b", {"upsert_rows": [{"id": 7000, "extra": "y"}]})
    await db.branch("c", "b")
    before = {m.key: m.size async for m in store.list("default/")}
    for dry_run in (True, False):
        report = await repair(store, orgs=["default"], dry_run=dry_run, components=components("r"))
        assert {n.namespace: [f.message for f in n.errors] for n in report.namespaces} == {
            NS: [],
            "b": [],
            "c": [],
        }
    assert {m.key: m.size async for m in store.list("default/")} == before
    await db.close()


async def test_a_lost_reference_marker_is_named_and_restored_by_repair() -> None:
    """A branch's reference marker deleted by hand (or lost with a bucket-level incident): the
    branch's manifest still says which of the source's segments and WAL entries it reads, so
    ``lagoon repair`` names the missing marker and writes it again; the source's GC then keeps
    what the branch reads, through compaction and past the grace period."""
    from lagoon.engine.ops.repair import repair

    clock = ManualStoreClock()
    store = MemoryStore(clock=clock)
    settings = make_settings(gc_grace_secs=GRACE, compaction_fanin=2)
    db, model = await _source(store, settings)
    await db.branch("b", NS)
    markers = await keys_under(store, REFS_PREFIX)
    assert markers
    for key in markers:
        await store.delete(key)

    dry = await repair(store, orgs=["default"], dry_run=True, components=components("r"))
    errors = {n.namespace: [f.message for f in n.errors] for n in dry.namespaces}
    assert any("reference marker" in m and "'docs'" in m for m in errors["b"]), errors
    assert await keys_under(store, REFS_PREFIX) == []  # a dry run changes nothing
    fixed = await repair(store, orgs=["default"], dry_run=False, components=components("r"))
    assert [f.message for n in fixed.namespaces for f in n.errors if n.namespace == "b"] == []
    assert [k.rsplit("/", 2)[-2] for k in await keys_under(store, REFS_PREFIX)] == ["b"]
    again = await repair(store, orgs=["default"], dry_run=True, components=components("r"))
    assert all(not n.errors for n in again.namespaces)

    rng = random.Random(11)
    for _ in range(4):  # the source moves on: every segment the branch reads is replaced
        await random_writes(db, model, rng, 4, id_range=40)
        await index_namespace(store, KEYS, settings, components("i"), force=True)
        await compact_namespace(store, KEYS, settings, components("c"))
        clock.advance(GRACE + 1)
        await collect_garbage(store, KEYS, settings, components("g"), retain_versions=1)
    assert await missing_objects(store, "b") == []
    await db.close()
