"""Queries over segments + WAL tail equal the exhaustive engine over the same live documents.

A real-text corpus with vectors is written in batches with updates and deletes, indexed into
several segments with a tail left over, then compacted to one segment. At each stage every query
form is run twice: through the engine (composite of segment sources and tail runs) and through the
exhaustive executor over one table of the live documents. BM25 scores must agree to 1e-6 (global
statistics over live documents only), exact vector search exactly, filters and order-by exactly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from lagoon.engine.compactor import compact_namespace
from lagoon.engine.database import Database
from lagoon.engine.indexer import index_namespace
from lagoon.index.sources.table import LiveDocs
from lagoon.index.text.corpus import corpus, sample_queries
from lagoon.query.execute import execute_query
from lagoon.storage.memory import MemoryStore
from lagoon.wire.query import parse_request

from .helpers import KEYS, NS, components, make_settings

pytestmark = pytest.mark.anyio
N_DOCS = 3000
DIMS = 16


def _docs() -> list[dict[str, Any]]:
    rng = np.random.default_rng(3)
    vecs = rng.standard_normal((N_DOCS, DIMS)).astype(np.float32)
    return [
        {"id": d["id"], "text": d["text"], "cat": d["cat"], "year": d["year"], "vector": vecs[i].tolist()}
        for i, d in enumerate(corpus(N_DOCS, seed=5))
    ]


async def _compare(db: Database, queries: list[dict[str, Any]]) -> None:
    snap = await db.snapshot("default", NS)
    exhaustive = LiveDocs(snap.schema, snap.live_table())
    assert snap.source().num_docs == exhaustive.num_docs
    for body in queries:
        got = await db.query(NS, body)
        want = execute_query(parse_request(body, snap.schema), exhaustive)
        got_rows, want_rows = got["rows"], want["rows"]
        assert [r["id"] for r in got_rows] == [r["id"] for r in want_rows], body
        for g, w in zip(got_rows, want_rows, strict=True):
            if "$dist" in w:
                assert g["$dist"] == pytest.approx(w["$dist"], abs=1e-6), body
            assert {k: v for k, v in g.items() if k != "$dist"} == {
                k: v for k, v in w.items() if k != "$dist"
            }


async def test_segments_and_tail_equal_the_exhaustive_engine() -> None:
    store = MemoryStore()
    settings = make_settings(compaction_fanin=2)
    db = Database(store, settings, components("writer"))
    docs = _docs()
    schema = {"text": {"type": "string", "full_text_search": {"stemming": True}}}
    rng = np.random.default_rng(9)
    for start in range(0, N_DOCS, 600):
        batch = docs[start : start + 600]
        await db.write(NS, {"upsert_rows": batch, "distance_metric": "cosine_distance", "schema": schema})
        # Updates and deletes of earlier documents, so segments shadow each other.
        olds = rng.choice(start + len(batch), size=40, replace=False).tolist()
        await db.write(NS, {"patch_rows": [{"id": i, "year": 1999} for i in olds[:20]]})
        await db.write(NS, {"deletes": olds[20:]})
        if start < 2400:
            await index_namespace(store, KEYS, settings, components("indexer"), force=True)
    texts = sample_queries([d["text"] for d in docs], 12, seed=4)
    qv = rng.standard_normal(DIMS).astype(np.float32).tolist()
    queries: list[dict[str, Any]] = [
        {"rank_by": ["text", "BM25", t], "top_k": 20, "include_attributes": ["year"]} for t in texts
    ]
    queries += [
        {"rank_by": ["text", "BM25", texts[0]], "top_k": 20, "filters": ["cat", "Eq", "changelog"]},
        {
            "rank_by": ["Sum", [["text", "BM25", texts[1]], ["Product", 2, ["text", "BM25", texts[2]]]]],
            "top_k": 10,
        },
        {"rank_by": ["vector", "kNN", qv], "top_k": 15, "include_attributes": ["cat"]},
        {"rank_by": ["vector", "kNN", qv], "top_k": 15, "filters": ["year", "Gte", 2015]},
        {"rank_by": ["year", "desc"], "top_k": 30, "filters": ["cat", "Eq", "docstring"]},
        {"rank_by": ["id", "asc"], "top_k": 50, "filters": ["year", "Eq", 1999], "include_attributes": True},
    ]
    agg = {"aggregate_by": {"n": ["Count"], "s": ["Sum", "year"]}, "group_by": ["cat"], "top_k": 10}
    manifest = db.handle("default", NS).state
    await manifest.refresh()
    assert manifest.manifest is not None and len(manifest.manifest.segments) >= 3
    assert manifest.current().unindexed_rows > 0
    await _compare(db, queries)
    assert (await db.query(NS, agg))["aggregation_groups"] == execute_query(
        parse_request(agg, manifest.current().schema),
        LiveDocs(manifest.current().schema, manifest.current().live_table()),
    )["aggregation_groups"]

    await index_namespace(store, KEYS, settings, components("indexer"), force=True)
    outcome = await compact_namespace(store, KEYS, settings, components("compactor"), full=True)
    assert outcome.status == "committed"
    await manifest.refresh()
    assert manifest.manifest is not None and len(manifest.manifest.segments) == 1
    assert manifest.current().unindexed_rows == 0
    await _compare(db, queries)
    await db.close()
