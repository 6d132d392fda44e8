"""Cold queries over several segments: the per-segment read stages (posting pages, probed cluster
blocks, document batches) of the segments run at once (``server.segment_fetch_parallelism``), so
the sequential object-store round trips of a cold query do not grow with the number of segments;
with the setting at 1 they do (one more per segment and stage). Answers equal a warm node's.
Round trips are the store's rounds (``cold.TimedStore``): a request issued before another's answer
arrived shares its round, so a fan-out thread that a loaded machine starts late still counts as
parallel."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from lagoon.config import Settings
from lagoon.engine.database import Database
from lagoon.engine.indexer import index_namespace
from lagoon.index.text.corpus import corpus
from lagoon.storage.memory import MemoryStore
from tests.index.segment.data import queries, vectors

from .cold import TimedStore, cold_node, round_trips
from .helpers import KEYS, NS, components, make_settings

pytestmark = pytest.mark.anyio

PER_SEGMENT = 2_500
SEGMENTS = 4
DIM = 32
SCHEMA = {"text": {"type": "string", "full_text_search": True}, "tag": {"type": "int"}}


async def segmented_store() -> tuple[MemoryStore, list[str], np.ndarray]:
    """``SEGMENTS`` segments of ``PER_SEGMENT`` documents (text, tag, vector) and no WAL tail."""
    store = MemoryStore()
    settings = make_settings(compaction_fanin=64)
    db = Database(store, settings, components("writer"))
    n = SEGMENTS * PER_SEGMENT
    texts = [d["text"] for d in corpus(n, seed=5)]
    base = vectors(n, DIM)
    for lo in range(0, n, PER_SEGMENT):
        rows = [
            {"id": i, "text": texts[i], "tag": i % 7, "vector": base[i].tolist()}
            for i in range(lo, lo + PER_SEGMENT)
        ]
        await db.write(NS, {"upsert_rows": rows, "schema": SCHEMA, "distance_metric": "euclidean_squared"})
        await index_namespace(store, KEYS, settings, components("indexer"), force=True)
    await db.close()
    return store, texts, base


def _cold(store: MemoryStore, parallelism: int) -> tuple[Database, TimedStore]:
    settings = Settings(
        indexer=make_settings().indexer,
        manifest={"poll_interval_ms": 20},  # type: ignore[arg-type]
        server={"segment_fetch_parallelism": parallelism},  # type: ignore[arg-type]
    )
    return cold_node(
        store, settings=settings, hydrate=False, lazy_text=True, lazy_docs=True, lazy_bytes=16 << 10
    )


async def _cold_answer(
    store: MemoryStore, body: dict[str, Any], parallelism: int
) -> tuple[dict[str, Any], int]:
    db, timed = _cold(store, parallelism)
    try:
        got = await db.query(NS, body)
        seg_reads = {c.key.rsplit("/", 2)[-2] for c in timed.calls if "/seg/" in c.key}
        assert len(seg_reads) == SEGMENTS  # every segment was read cold
        assert timed.forced == 0  # every round was closed by its requests' structure, not a timeout
        return got, round_trips(timed.calls)
    finally:
        await db.close()


async def test_cold_queries_over_several_segments_read_them_at_once() -> None:
    store, texts, _ = await segmented_store()
    words = [w for w in texts[5].split() if len(w) > 3][:2] + [w for w in texts[7_000].split() if len(w) > 3][
        :2
    ]
    bm25 = {"rank_by": ["text", "BM25", " ".join(words)], "top_k": 10, "include_attributes": ["text", "tag"]}
    ann = {
        "rank_by": ["vector", "ANN", queries(1, DIM)[0].tolist()],
        "top_k": 10,
        "include_attributes": ["tag"],
    }
    warm = Database(store, make_settings(), components("warm"))
    expected = [await warm.query(NS, body) for body in (bm25, ann)]
    await warm.close()
    assert len({r["id"] // PER_SEGMENT for r in expected[0]["rows"]}) >= 2  # hits in several segments

    for body, want in zip((bm25, ann), expected, strict=True):
        got, trips = await _cold_answer(store, body, parallelism=8)
        assert got["rows"] == want["rows"]
        # manifest; heads (and small files); pages or blocks; the result rows' document batches
        assert trips <= 4, body["rank_by"]
        got, one_at_a_time = await _cold_answer(store, body, parallelism=1)
        assert got["rows"] == want["rows"]
        assert one_at_a_time >= trips + SEGMENTS - 1, (trips, one_at_a_time)
