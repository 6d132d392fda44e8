"""Sparse vectors (``{}f16``) and ``SparseKNN`` ranking over index segments plus the WAL tail.

Expected scores are dot products worked out by hand (every weight is exactly representable in
f16, so the sums are exact); the index itself is checked against a brute-force dot product on
random data, with and without masks and top-k pruning."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from lagoon.engine.database import Database
from lagoon.engine.indexer import index_namespace
from lagoon.errors import InvalidRequest
from lagoon.format.segment import MAGIC_SPV, open_sections
from lagoon.index.sparse import BLOCK, build_sparse_index, encode_spv, open_spv
from lagoon.schema import AttrType
from lagoon.storage.memory import MemoryStore
from tests.engine.lifecycle.helpers import KEYS, NS, components, make_settings, segment_and_tail

SCHEMA = {"sv": {"type": "{}f16", "sparse_knn": {"distance_metric": "dot_product"}}, "cat": "string"}
DOCS = [
    {"id": 1, "sv": {"1": 0.5, "7": 2.0}, "cat": "a"},
    {"id": 2, "sv": {"7": 1.0, "9": 0.25}, "cat": "b"},
    {"id": 3, "sv": {"3": 4.0}, "cat": "a"},
    {"id": 4, "sv": {"1": 1.5, "9": 1.0}, "cat": "b"},  # WAL tail
    {"id": 5, "sv": None, "cat": "a"},  # WAL tail
    {"id": 6, "sv": {"7": 0.5, "1": 0.25}, "cat": "a"},  # WAL tail
]
Q = {"1": 2.0, "7": 1.0, "9": 4.0}
# dot products with Q: 1: 0.5·2 + 2·1 = 3; 2: 1·1 + 0.25·4 = 2; 3: no shared dimension;
# 4: 1.5·2 + 1·4 = 7; 5: null; 6: 0.5·1 + 0.25·2 = 1
EXPECTED = [(4, 7.0), (1, 3.0), (2, 2.0), (6, 1.0)]


@pytest.fixture
async def db() -> Any:
    """Ids 1–3 in an index segment (with its spv file), 4–6 in the WAL tail."""
    store = MemoryStore()
    database = await segment_and_tail(store, DOCS[:3], DOCS[3:], schema=SCHEMA)
    files = [m.key.rsplit("/", 1)[-1] async for m in store.list(KEYS.segment_prefix)]
    assert "spv.sv" in files  # the segment carries the sparse index
    yield database
    await database.close()


async def _rows(db: Database, body: dict[str, Any]) -> list[tuple[Any, Any]]:
    res = await db.query(NS, body)
    return [(r["id"], r.get("$dist")) for r in res["rows"]]


@pytest.mark.anyio
async def test_sparse_knn_over_segment_and_tail(db: Database) -> None:
    assert await _rows(db, {"rank_by": ["sv", "SparseKNN", Q], "top_k": 10}) == EXPECTED
    assert await _rows(db, {"rank_by": ["sv", "SparseKNN", Q], "top_k": 2}) == EXPECTED[:2]
    assert await _rows(db, {"rank_by": ["sv", "SparseKNN", Q], "top_k": 2, "offset": 1}) == EXPECTED[1:3]
    filtered = await _rows(db, {"rank_by": ["sv", "SparseKNN", Q], "filters": ["cat", "Eq", "a"]})
    assert filtered == [(1, 3.0), (6, 1.0)]
    assert await _rows(db, {"rank_by": ["sv", "SparseKNN", {"3": 0.5}]}) == [(3, 2.0)]
    assert await _rows(db, {"rank_by": ["sv", "SparseKNN", {"42": 1.0}]}) == []
    res = await db.query(NS, {"rank_by": ["sv", "SparseKNN", {"3": 1}], "include_attributes": ["sv"]})
    assert res["rows"] == [{"id": 3, "$dist": 4.0, "sv": {"3": 4.0}}]


@pytest.mark.anyio
async def test_sparse_overwrite_and_delete_shadow_the_segment(db: Database) -> None:
    await db.write(NS, {"upsert_rows": [{"id": 1, "sv": {"9": 0.5}, "cat": "a"}], "deletes": [2]})
    await asyncio.sleep(0.05)
    # 1 now: 0.5·4 = 2
    assert await _rows(db, {"rank_by": ["sv", "SparseKNN", Q]}) == [(4, 7.0), (1, 2.0), (6, 1.0)]


@pytest.mark.anyio
async def test_sparse_schema_and_errors(db: Database) -> None:
    schema = await db.get_schema(NS)
    assert schema["sv"] == {"type": "{}f16", "sparse_knn": {"distance_metric": "dot_product"}}
    bad_writes = [
        ({"id": 9, "sv": {"x": 1.0}}, "not an integer"),
        ({"id": 9, "sv": {"-1": 1.0}}, "not an integer"),
        ({"id": 9, "sv": {"4294967296": 1.0}}, "not an integer"),
        ({"id": 9, "sv": {"1": "a"}}, "finite number"),
        ({"id": 9, "sv": {"1": 70000.0}}, "f16 range"),
        ({"id": 9, "sv": [1.0, 2.0]}, "sparse vector object"),
        ({"id": 9, "sv": {str(i): 1.0 for i in range(1025)}}, "at most 1024"),
    ]
    for doc, message in bad_writes:
        with pytest.raises(InvalidRequest, match=message):
            await db.write(NS, {"upsert_rows": [doc]})
    bad_queries = [
        ({"rank_by": ["cat", "SparseKNN", {"1": 1.0}]}, "needs a sparse vector attribute"),
        ({"rank_by": ["nope", "SparseKNN", {"1": 1.0}]}, "unknown sparse vector attribute"),
        ({"rank_by": ["sv", "SparseKNN", [1.0]]}, "sparse vector object"),
        ({"rank_by": ["sv", "ANN", [1.0]]}, "not a vector type"),
        ({"rank_by": ["sv", "asc"]}, "cannot order"),
        ({"rank_by": ["id", "asc"], "filters": ["sv", "Eq", None]}, "cannot be filtered"),
    ]
    for body, message in bad_queries:
        with pytest.raises(InvalidRequest, match=message):
            await db.query(NS, body)
    for spec, message in [
        ({"type": "{}f16", "sparse_knn": {"distance_metric": "cosine_distance"}}, "dot_product"),
        ({"type": "{}f16", "ann": True}, "only vector attributes"),
        ({"type": "string", "sparse_knn": True}, "only sparse vector attributes"),
    ]:
        with pytest.raises(InvalidRequest, match=message):
            await db.write(NS, {"upsert_rows": [{"id": 9}], "schema": {"z": spec}})


@pytest.mark.anyio
async def test_sparse_without_index_is_scored_from_the_column() -> None:
    store = MemoryStore()
    settings = make_settings()
    database = Database(store, settings, components("writer"))
    schema = {"sv": {"type": "{}f16", "sparse_knn": False}, "cat": "string"}
    await database.write(NS, {"upsert_rows": DOCS, "schema": schema})
    await index_namespace(store, KEYS, settings, components("indexer"), force=True)
    assert (await database.get_schema(NS))["sv"] == {"type": "{}f16", "sparse_knn": False}
    assert await _rows(database, {"rank_by": ["sv", "SparseKNN", Q]}) == EXPECTED
    await database.close()


def _random_column(rng: np.random.Generator, n: int, universe: int) -> list[Any]:
    out: list[Any] = []
    for i in range(n):
        if i % 17 == 0:
            out.append(None)
            continue
        dims = rng.choice(universe, size=int(rng.integers(0, 30)), replace=False)
        out.append(sorted((int(d), float(np.float16(rng.random()))) for d in dims))
    return out


def test_index_matches_brute_force_dot_products() -> None:
    rng = np.random.default_rng(7)
    n, universe = 2_000, 300
    values = _random_column(rng, n, universe)
    column = pa.array(values, AttrType.parse("{}f16").arrow_type())
    data, summary = encode_spv("sv", build_sparse_index(column, n))
    index = open_spv(open_sections(data, magic=MAGIC_SPV, what="spv.sv"), n)
    assert summary["postings"] == sum(len(v) for v in values if v)
    assert index.block_max.shape[0] == int(((np.diff(index.offsets) + BLOCK - 1) // BLOCK).sum())
    for t in range(40):
        qd = np.unique(rng.choice(universe, size=int(rng.integers(1, 25))).astype(np.uint32))
        qw = rng.random(qd.size) + 0.01
        mask = rng.random(n) < 0.6 if t % 2 else None
        ref: dict[int, float] = {}
        for row, v in enumerate(values):
            if v is None or (mask is not None and not mask[row]):
                continue
            d = dict(v)
            shared = [j for j, x in enumerate(qd.tolist()) if x in d]
            if shared:
                ref[row] = sum(d[int(qd[j])] * float(qw[j]) for j in shared)
        rows, scores = index.search(qd, qw, mask)
        assert rows.tolist() == sorted(ref)
        np.testing.assert_allclose(scores, [ref[r] for r in rows.tolist()], rtol=1e-12)
        k = 10
        rows_k, scores_k = index.search(qd, qw, mask, k, maxscore_min_postings=0)  # always prune
        got = dict(zip(rows_k.tolist(), scores_k.tolist(), strict=True))
        for r in sorted(ref, key=lambda r: (-ref[r], r))[:k]:
            assert got[r] == pytest.approx(ref[r], rel=1e-12)
        assert set(got) <= set(ref)


def test_corrupt_spv_file_is_refused() -> None:
    from lagoon.errors import DataCorruption

    values = [[(1, 0.5), (2, 1.0)], [(1, 0.25)]]
    index = build_sparse_index(pa.array(values, AttrType.parse("{}f16").arrow_type()), 2)
    data, _ = encode_spv("sv", index)
    with pytest.raises(DataCorruption):
        open_spv(open_sections(data, magic=MAGIC_SPV, what="spv.sv"), 3)  # another row count
    sf = open_sections(data, magic=MAGIC_SPV, what="spv.sv")
    tampered = bytearray(data)
    off = sf.data_start + sf.meta["sections"]["rows"]["offset"]
    tampered[off : off + 4] = (7).to_bytes(4, "little")  # a row beyond the segment
    with pytest.raises(DataCorruption):
        open_sections(bytes(tampered), magic=MAGIC_SPV, what="spv.sv")  # the frame checksum
