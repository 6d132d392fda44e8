"""The damage catalogue: every kind of object damaged (missing, truncated, bit-flipped), CURRENT
ahead, behind and garbled, a missing manifest version, torn and invalid WAL entries, strays.

Each case builds a real namespace on the fs backend (documents written by ``Database.write``,
three segments built by the indexer, a WAL tail of two entries), damages it as an operator's
incident would, runs ``lagoon repair`` (the engine entry point), and checks: repair ends clean, a
second run has nothing to fix, a fresh node reads exactly the documents some object still holds
(0 lost when the WAL covers them), writes and indexing work. The default run takes every
``SAMPLE``-th case; the slow run takes all.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from lagoon.config import Settings
from lagoon.engine.catalog import YOUNG_MARKER_SECS, Catalog
from lagoon.engine.components import Components
from lagoon.engine.database import Database
from lagoon.engine.indexer import index_namespace
from lagoon.engine.ops.repair import check_namespace, repair
from lagoon.engine.ops.transfer import export_namespace
from lagoon.errors import Forbidden
from lagoon.format.catalog import OrgCatalog, encode_org
from lagoon.format.framing import encode_frame
from lagoon.format.keys import CATALOG_PREFIX, NamespaceKeys, catalog_marker, catalog_org
from lagoon.format.wal import MAGIC, decode_entry
from lagoon.storage import FsStore, ObjectStore, S3Store
from lagoon.storage.s3 import CLOCK_PREFIX

pytestmark = pytest.mark.anyio
NS = "docs"
KEYS = NamespaceKeys.of("default", NS)
SCHEMA = {"v": {"type": "[4]f32", "ann": True}, "text": {"type": "string", "full_text_search": True}}

# batches: (seq, ids upserted, ids deleted); seg A = 1..3, B = 4..6, C = 7..8, tail 9..10
BATCHES: list[tuple[list[int], list[int]]] = [
    (list(range(10)), []),
    (list(range(10, 20)), []),
    (list(range(20, 30)), []),
    (list(range(30, 40)), []),
    (list(range(40, 50)), []),
    (list(range(50, 60)), []),
    (list(range(60, 70)), []),
    (list(range(70, 80)), []),
    (list(range(90, 95)), []),
    ([91], [92]),
]
SEGMENT_OF_SEQ = {1: "A", 2: "A", 3: "A", 4: "B", 5: "B", 6: "B", 7: "C", 8: "C"}


def doc(i: int, seq: int) -> dict[str, Any]:
    """The document ``i`` as batch ``seq`` writes it. From seq 9 on it has a ``note``: entry 9
    adds that attribute to the schema, entry 10 uses it without changing the schema, so losing
    entry 9 must not lose entry 10 (readers and repair recover the schema from its own data)."""
    out: dict[str, Any] = {
        "id": i,
        "v": [float(i), 1.0, float(seq), 0.5],
        "text": f"word{i % 7} seq{seq}",
        "tag": f"t{i % 3}",
    }
    if seq >= 9:
        out["note"] = f"n{seq}"
    return out


def expected(lost_seqs: set[int]) -> dict[int, dict[str, Any]]:
    """The documents after applying every batch whose seq is not lost."""
    docs: dict[int, dict[str, Any]] = {}
    for seq, (ups, dels) in enumerate(BATCHES, start=1):
        if seq in lost_seqs:
            continue
        for i in ups:
            docs[i] = doc(i, seq)
        for i in dels:
            docs.pop(i, None)
    return docs


def settings() -> Settings:
    return Settings(indexer={"flush_interval_secs": 0.01, "gc_grace_secs": 3600.0})  # type: ignore[arg-type]


async def build(store: ObjectStore) -> dict[str, str]:
    """The namespace; returns segment letter -> segment id."""
    db = Database(store, settings())
    ids: dict[str, str] = {}
    for seq, (ups, dels) in enumerate(BATCHES, start=1):
        body: dict[str, Any] = {"upsert_rows": [doc(i, seq) for i in ups]}
        if seq == 1:
            body["schema"] = SCHEMA
            body["distance_metric"] = "euclidean_squared"
        if dels:
            body["deletes"] = dels
        await db.write(NS, body)
        if seq in (3, 6, 8):
            out = await index_namespace(store, KEYS, settings(), Components(), force=True)
            assert out.status == "committed" and out.segment_id
            ids["ABC"[(3, 6, 8).index(seq)]] = out.segment_id
    return ids


async def read_all(store: ObjectStore) -> dict[int, dict[str, Any]]:
    db = Database(store, settings())
    res = await db.query(NS, {"rank_by": ["id", "asc"], "top_k": 1000, "include_attributes": True})
    out = {}
    for row in res["rows"]:
        i = row.pop("id")
        row.pop("$dist", None)
        out[i] = {"id": i, **{k: v for k, v in row.items() if v is not None}}
    # every index kind answers too
    await db.query(NS, {"rank_by": ["v", "ANN", [1.0, 1.0, 1.0, 0.5]], "top_k": 5})
    await db.query(NS, {"rank_by": ["text", "BM25", "word3"], "top_k": 5})
    await db.query(NS, {"filters": ["tag", "Eq", "t1"], "rank_by": ["id", "asc"], "top_k": 5})
    return out


Damage = Callable[[FsStore, Path, dict[str, str]], Awaitable[None]]


def _path(root: Path, key: str) -> Path:
    return root / key


def _mutilate(root: Path, key: str, how: str) -> None:
    p = _path(root, key)
    if how == "missing":
        p.unlink()
    elif how == "truncated":
        data = p.read_bytes()
        p.write_bytes(data[: len(data) // 2])
    else:  # bit-flipped, in the middle
        data = bytearray(p.read_bytes())
        data[len(data) // 2] ^= 0x10
        p.write_bytes(bytes(data))


def _gc_wal(root: Path, seqs: range) -> None:
    """What GC does once the grace period has passed: the folded WAL entries are gone."""
    for s in seqs:
        _path(root, KEYS.wal(s)).unlink()


def segment_case(letter: str, file: str, how: str, wal: bool) -> tuple[str, Damage, set[int]]:
    seqs = [s for s, seg in SEGMENT_OF_SEQ.items() if seg == letter]
    derived = file.startswith(("fts.", "flt."))
    lost = set() if wal or derived else set(seqs)

    async def damage(store: FsStore, root: Path, segs: dict[str, str]) -> None:
        if not wal:
            _gc_wal(root, range(1, 9))
        _mutilate(root, KEYS.segment_file(segs[letter], file), how)

    return f"seg{letter}-{file}-{how}-{'wal' if wal else 'nowal'}", damage, lost


def simple(
    name: str, fn: Callable[[Path, dict[str, str]], None], lost: set[int]
) -> tuple[str, Damage, set[int]]:
    async def damage(store: FsStore, root: Path, segs: dict[str, str]) -> None:
        fn(root, segs)

    return name, damage, lost


def _invalid_entry(root: Path, seq: int) -> None:
    """An entry framed correctly whose table an older build wrote wrong (a column of the wrong type)."""
    import msgspec
    import pyarrow as pa

    from lagoon.format.wal import table_to_ipc

    p = _path(root, KEYS.wal(seq))
    entry = decode_entry(p.read_bytes())
    assert entry.docs is not None
    bad = entry.docs.set_column(
        entry.docs.column_names.index("tag"), "tag", pa.array([1] * entry.docs.num_rows)
    )
    body = {
        "seq": seq,
        "nonce": entry.nonce,
        "created_at_ms": entry.created_at_ms,
        "writer": "old-build",
        "requests": 1,
        "docs": table_to_ipc(bad),
    }
    data = encode_frame(
        MAGIC, msgspec.msgpack.encode(body), format_version=1, min_reader_version=1, min_writer_version=1
    )
    p.write_bytes(data)


def _fork(root: Path) -> None:
    """GC deleted v1 and v2; a zombie still holding v1 re-created v2 on top of it (a fork below
    v3, which was built on the real v2)."""
    from lagoon.engine.manifest_store import next_version
    from lagoon.format.manifest import decode_manifest, encode_manifest

    v1 = decode_manifest(_path(root, KEYS.manifest(1)).read_bytes())
    _path(root, KEYS.manifest(1)).unlink()
    _path(root, KEYS.manifest(2)).write_bytes(encode_manifest(next_version(v1, Components())))


def cases() -> list[tuple[str, Damage, set[int]]]:
    out: list[tuple[str, Damage, set[int]]] = []
    for letter in "AC":
        for file in ("docs", "vec.v", "fts.text", "flt.tag"):
            for how in ("missing", "truncated", "flipped"):
                for wal in (True, False):
                    if file.startswith(("fts", "flt")) and not wal:
                        continue
                    out.append(segment_case(letter, file, how, wal))
    for how in ("missing", "truncated", "flipped"):
        out.append(
            simple(f"manifest-latest-{how}", lambda r, s, h=how: _mutilate(r, KEYS.manifest(3), h), set())
        )
        out.append(
            simple(f"manifest-old-{how}", lambda r, s, h=how: _mutilate(r, KEYS.manifest(1), h), set())
        )
        out.append(simple(f"wal-tail-{how}", lambda r, s, h=how: _mutilate(r, KEYS.wal(9), h), {9}))
        out.append(simple(f"wal-head-{how}", lambda r, s, h=how: _mutilate(r, KEYS.wal(10), h), {10}))
        out.append(simple(f"wal-folded-{how}", lambda r, s, h=how: _mutilate(r, KEYS.wal(2), h), set()))
    out += [
        simple("manifest-middle-missing", lambda r, s: _mutilate(r, KEYS.manifest(2), "missing"), set()),
        simple("current-missing", lambda r, s: _mutilate(r, KEYS.current, "missing"), set()),
        simple("current-ahead", lambda r, s: _path(r, KEYS.current).write_bytes(b"9"), set()),
        simple("current-behind", lambda r, s: _path(r, KEYS.current).write_bytes(b"1"), set()),
        simple("current-garbled", lambda r, s: _path(r, KEYS.current).write_bytes(b"\x00garbage{"), set()),
        simple("wal-invalid-old-build", lambda r, s: _invalid_entry(r, 9), {9}),
        simple("manifest-fork", lambda r, s: _fork(r), set()),
    ]

    def strays(root: Path, segs: dict[str, str]) -> None:
        for key in (
            "junk/notes.txt",
            "wal/README",
            f"seg/{segs['A']}/extra.bin",
            ".DS_Store",
            "manifest/tmp",
        ):
            p = _path(root, KEYS.root + key)
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(b"stray")

    out.append(simple("strays", strays, set()))
    return out


CASES = cases()
SAMPLE = 4


def _params() -> list[Any]:
    params = []
    for n, (name, damage, lost) in enumerate(CASES):
        marks = [] if n % SAMPLE == 0 else [pytest.mark.slow]
        params.append(pytest.param(name, damage, lost, id=name, marks=marks))
    return params


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def salvaged(store: ObjectStore, root: Path) -> dict[int, dict[str, Any]]:
    """What ``lagoon export --salvage`` exports of the damaged namespace (nothing of it written;
    the node's indexing queue under ``_lagoon/`` is not the namespace's)."""
    root = root / KEYS.root
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    out = io.BytesIO()
    db = Database(store, settings())
    try:
        await export_namespace(db, NS, out, salvage=True)
    finally:
        await db.close()
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before
    rows = [orjson.loads(line) for line in out.getvalue().splitlines()[1:-1]]
    return {r["id"]: r for r in rows}


@pytest.mark.parametrize(("name", "damage", "lost"), _params())
async def test_damage_is_repaired(tmp_path: Path, name: str, damage: Damage, lost: set[int]) -> None:
    root = tmp_path / "bucket"
    store = FsStore(root)
    segs = await build(store)
    assert await read_all(store) == expected(set())
    await damage(store, root, segs)
    if name.startswith(("seg", "wal-")):  # before repair, a salvage export holds the same
        assert await salvaged(store, root) == expected(lost)
    report = await check_namespace(store, "default", NS, dry_run=False)
    assert report.ok, [f"{f.check}: {f.message} ({f.fix_error})" for f in report.errors]
    again = await check_namespace(store, "default", NS, dry_run=False)
    assert again.ok and again.rounds == 0 and not [f for f in again.findings if f.severity != "info"], [
        f.message for f in again.findings
    ]
    want = expected(lost)
    assert await read_all(store) == want
    if lost and any(s in SEGMENT_OF_SEQ for s in lost):
        assert report.lost_documents == sum(len(BATCHES[s - 1][0]) for s in lost)
    db = Database(store, settings())
    await db.write(NS, {"upsert_rows": [doc(500, 99)]})
    out = await index_namespace(store, KEYS, settings(), Components(), force=True)
    assert out.status == "committed", out
    assert (await read_all(store))[500] == doc(500, 99)
    assert (await check_namespace(store, "default", NS)).ok
    await store.close()


# --- the namespace catalog (markers and org count, engine/catalog.py) -----------------------------

NAMES = ["a", "b", "c"]


async def _drop_marker(store: ObjectStore) -> None:
    await store.delete(catalog_marker("default", "b"))


async def _stray_marker(store: ObjectStore) -> None:
    """A creation that crashed after its marker and count, before its WAL commit."""

    async def none() -> int:
        return len(NAMES)

    await Catalog(store, Components()).before_create("default", "ghost", limit=None, count_existing=none)


async def _wrong_count(store: ObjectStore) -> None:
    await store.put(catalog_org("default"), encode_org(OrgCatalog(count=7, complete=True)))


async def _no_catalog(store: ObjectStore) -> None:
    """As written by a build without the catalog."""
    async for meta in store.list(CATALOG_PREFIX):
        await store.delete(meta.key)


CATALOG_CASES: dict[str, tuple[Callable[[ObjectStore], Awaitable[None]], bool]] = {
    # case -> (damage, an error: --dry-run exits 1)
    "marker-missing": (_drop_marker, True),
    "marker-stray": (_stray_marker, True),
    "count-wrong": (_wrong_count, True),
    "catalog-missing": (_no_catalog, False),
}


async def _bucket(store: ObjectStore) -> dict[str, bytes]:
    """Every object's bytes (the S3 store's clock probe aside: it is the store's, not the data's)."""
    return {m.key: await store.get(m.key) async for m in store.list("") if not m.key.startswith(CLOCK_PREFIX)}


async def _listed(db: Database) -> list[str]:
    return [n["id"] for n in (await db.list_namespaces(page_size=100))["namespaces"]]


@pytest.fixture(params=["fs", pytest.param("s3", marks=pytest.mark.s3)])
async def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ObjectStore]:
    if request.param == "fs":
        store: ObjectStore = FsStore(tmp_path / "bucket")
    else:
        server = request.getfixturevalue("s3_server")
        prefix = request.getfixturevalue("s3_prefix")
        store = S3Store(server.bucket, prefix=prefix, region=server.region, endpoint=server.endpoint)
    yield store
    await store.close()


@pytest.mark.parametrize("case", list(CATALOG_CASES))
async def test_catalog_damage_is_repaired(any_store: ObjectStore, case: str) -> None:
    """The catalog disagrees with the namespaces the bucket holds: ``lagoon repair --dry-run``
    names it and changes nothing; ``lagoon repair`` makes listings and ``limits.max_namespaces``
    right again, with every document still there (0 lost: the catalog holds none), and a second
    run finds nothing."""
    store = any_store
    limited = Settings(limits={"max_namespaces": 4})  # type: ignore[arg-type]
    db = Database(store, limited)
    for name in NAMES:
        await db.write(name, {"upsert_rows": [{"id": 1, "t": name}]})
    damage, is_error = CATALOG_CASES[case]
    await damage(store)
    before = await _bucket(store)

    plan = await repair(store, orgs=["default"], dry_run=True, young_marker_secs=0.0)
    [catalog] = plan.catalogs
    assert catalog.ok is not is_error and plan.fixes_possible >= 1, plan.render()
    assert "would fix" in plan.render() and "namespace catalog" in plan.render()
    assert await _bucket(store) == before  # a dry run changes nothing

    fixed = await repair(store, orgs=["default"], dry_run=False, young_marker_secs=0.0)
    assert fixed.ok and fixed.catalogs[0].findings and all(f.fixed for f in fixed.catalogs[0].findings), (
        fixed.render()
    )
    again = await repair(store, orgs=["default"], dry_run=False, young_marker_secs=0.0)
    assert again.ok and again.fixes_applied == 0 and not again.catalogs[0].findings, again.render()

    fresh = Database(store, limited)
    assert await _listed(fresh) == NAMES
    record = await Catalog(store, Components()).read_org("default")
    assert record is not None and record.complete and record.count == len(NAMES)
    for name in NAMES:  # nothing lost
        rows = (await fresh.query(name, {"rank_by": ["id", "asc"], "top_k": 10, "include_attributes": True}))[
            "rows"
        ]
        assert rows == [{"id": 1, "t": name}]
    await fresh.write("d", {"upsert_rows": [{"id": 1}]})  # the 4th fits: the count is right
    with pytest.raises(Forbidden):
        await fresh.write("e", {"upsert_rows": [{"id": 1}]})
    await db.close()
    await fresh.close()


async def test_a_young_stray_marker_is_kept_until_it_is_old(tmp_path: Path) -> None:
    """A marker without a namespace may be a creation still committing: repair keeps it (and
    says so) while it is younger than the guard, and removes it once it is older."""
    root = tmp_path / "bucket"
    store = FsStore(root)
    db = Database(store, settings())
    await db.write("a", {"upsert_rows": [{"id": 1}]})
    await _stray_marker(store)
    young = await repair(store, orgs=["default"], dry_run=False)
    assert young.ok and "ghost" in young.render() and "kept" in young.render()
    assert await _listed(db) == ["a", "ghost"]
    marker = root / catalog_marker("default", "ghost")
    old = time.time() - YOUNG_MARKER_SECS - 60
    os.utime(marker, (old, old))
    aged = await repair(store, orgs=["default"], dry_run=False)
    assert aged.ok and aged.fixes_applied == 1 and not marker.exists()
    assert await _listed(db) == ["a"]
    await db.close()
    await store.close()
