"""Shared helpers of the lifecycle tests: settings, a model of the documents, and an independent
reader of the bucket (latest manifest + segments + WAL tail) to compare with the model."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from typing import Any

from lagoon.config import Settings
from lagoon.engine import manifest_store
from lagoon.engine.components import Clock, Components
from lagoon.engine.database import Database
from lagoon.engine.indexer import index_namespace
from lagoon.engine.segment_io import SegmentIO
from lagoon.format.keys import NamespaceKeys, parse_wal_seq
from lagoon.format.manifest import Manifest
from lagoon.format.wal import OP_DELETE, decode_entry
from lagoon.schema import Schema
from lagoon.storage.base import ObjectNotFound, ObjectStore

NS = "docs"
KEYS = NamespaceKeys.of("default", NS)
ATTRS = ("v", "tag")


def make_settings(**indexer: Any) -> Settings:
    values: dict[str, Any] = {
        "flush_interval_secs": 0.01,
        "compaction_fanin": 3,
        "gc_grace_secs": 1.0,
        "poll_interval_secs": 0.05,
    }
    values.update(indexer)
    return Settings(indexer=values, manifest={"poll_interval_ms": 20})  # type: ignore[arg-type]


class JumpClock(Clock):
    """The real clock, plus an offset tests can add to the monotonic clock (a simulated pause)."""

    def __init__(self) -> None:
        self.jump = 0.0

    def monotonic(self) -> float:
        return super().monotonic() + self.jump


class ManualStoreClock:
    """A store clock for MemoryStore that tests move forward by hand."""

    def __init__(self) -> None:
        self.now = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, secs: float) -> None:
        self.now += dt.timedelta(seconds=secs)


def components(node: str, seed: int = 0) -> Components:
    return Components(rng=random.Random(seed), node_id=node)


async def segment_and_tail(
    store: ObjectStore, indexed: list[dict[str, Any]], tail: list[dict[str, Any]], **first_write: Any
) -> Database:
    """A node over namespace ``NS`` whose ``indexed`` rows are in one segment and ``tail`` rows in
    the WAL after it (``first_write``: more fields of the first write, e.g. its schema). Returns
    once the poll interval has passed, so the node's next strong read sees the new manifest."""
    settings = make_settings()
    db = Database(store, settings, components("writer"))
    await db.write(NS, {"upsert_rows": indexed, **first_write})
    await index_namespace(store, KEYS, settings, components("indexer"), force=True)
    await db.write(NS, {"upsert_rows": tail})
    await asyncio.sleep(0.05)
    return db


def db_on(store: ObjectStore, settings: Settings, node: str = "writer") -> Database:
    return Database(store, settings, components(node, seed=hash(node) & 0xFFFF))


class Model:
    """The documents acknowledged writes should have produced."""

    def __init__(self) -> None:
        self.docs: dict[int, dict[str, Any]] = {}

    def upsert_body(self, ids: list[int], v: int) -> dict[str, Any]:
        return {"upsert_rows": [{"id": i, "v": v, "tag": f"t{v % 3}"} for i in ids]}

    def upserted(self, ids: list[int], v: int) -> None:
        for i in ids:
            self.docs[i] = {"v": v, "tag": f"t{v % 3}"}

    def deleted(self, ids: list[int]) -> None:
        for i in ids:
            self.docs.pop(i, None)


async def random_writes(
    db: Database, model: Model, rng: random.Random, n: int, *, id_range: int = 60
) -> None:
    for _ in range(n):
        await random_write(db, model, rng, id_range=id_range)


async def random_write(
    db: Any,
    model: Model,
    rng: random.Random,
    *,
    id_range: int = 60,
    most_ids: int = 5,
    delete_share: float = 0.3,
    top_value: int = 1000,
) -> None:
    """One write of 1..``most_ids`` random ids below ``id_range`` to ``NS``, mirrored in ``model``:
    a delete (a ``delete_share`` of the writes once there are documents) or an upsert of them with
    a value up to ``top_value``."""
    ids = rng.sample(range(id_range), rng.randint(1, most_ids))
    if model.docs and rng.random() < delete_share:
        await db.write(NS, {"deletes": ids})
        model.deleted(ids)
    else:
        v = rng.randint(0, top_value)
        await db.write(NS, model.upsert_body(ids, v))
        model.upserted(ids, v)


def _doc(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in ATTRS if row.get(k) is not None}


async def live_view(store: ObjectStore, keys: NamespaceKeys = KEYS) -> dict[Any, dict[str, Any]]:
    """The live documents as the bucket describes them, folded here independently of the indexer:
    every segment row and WAL row, newest ``$seq`` per id wins, deletes hide, truncation voids."""
    latest = await manifest_store.read_latest(store, keys)
    rows: dict[Any, tuple[int, int, dict[str, Any]]] = {}
    indexed = 0
    if latest is not None:
        indexed = latest.indexed_through
        schema = Schema.from_storage(latest.schema) if latest.schema else Schema()
        seg_io = SegmentIO(store)
        for ref in latest.segments:
            reader = await seg_io.open(keys, ref, schema)
            for row in reader.table().to_pylist():
                old = rows.get(row["id"])
                if old is None or old[0] < row["$seq"]:
                    rows[row["id"]] = (row["$seq"], row["$op"], _doc(row))
    seq = indexed
    while True:
        try:
            entry = decode_entry(await store.get(keys.wal(seq + 1)))
        except ObjectNotFound:
            break
        seq += 1
        if entry.truncate:
            rows.clear()
        if entry.docs is not None:
            for row in entry.docs.to_pylist():
                rows[row["id"]] = (seq, row["$op"], _doc(row))
    return {i: d for i, (_, op, d) in rows.items() if op != OP_DELETE}


async def dangling(store: ObjectStore, keys: NamespaceKeys = KEYS, m: Manifest | None = None) -> list[str]:
    """Files the latest manifest references that do not exist, and missing tail WAL entries."""
    m = m or await manifest_store.read_latest(store, keys)
    if m is None:
        return []
    missing = []
    for ref in m.segments:
        for name in ref.files:
            try:
                await store.head(keys.segment_file(ref.id, name))
            except ObjectNotFound:
                missing.append(keys.segment_file(ref.id, name))
    seqs = await wal_seqs(store, keys)
    tail = [s for s in seqs if s > m.indexed_through]
    if tail and tail != list(range(m.indexed_through + 1, m.indexed_through + 1 + len(tail))):
        missing.append(f"wal gap after {m.indexed_through}: {tail[:5]}")
    return missing


async def segment_ids_in_store(store: ObjectStore, keys: NamespaceKeys = KEYS) -> set[str]:
    return {
        meta.key[len(keys.segment_prefix) :].split("/", 1)[0]
        async for meta in store.list(keys.segment_prefix)
    }


async def wal_seqs(store: ObjectStore, keys: NamespaceKeys = KEYS) -> list[int]:
    seqs = [parse_wal_seq(meta.key) async for meta in store.list(keys.wal_prefix)]
    return sorted(s for s in seqs if s is not None)
