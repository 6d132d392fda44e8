"""Cold full-text queries: a node with empty caches answers a BM25 query (and a phrase filter)
over a segment + WAL tail in at most three sequential object-store round trips, reading the
``fts`` file's head and only its query terms' pages by range; answers equal a warm node's."""

from __future__ import annotations

import pytest

from lagoon.engine.database import Database

from .cold import TEXT_N as N
from .cold import cold_node, hydrated, indexed_text_store, round_trips
from .helpers import KEYS, NS, components, make_settings

pytestmark = pytest.mark.anyio


async def test_a_cold_bm25_query_needs_three_round_trips_and_the_terms_pages() -> None:
    store, texts = await indexed_text_store()
    seg_keys = [m.key async for m in store.list(KEYS.root + "seg/")]
    fts_key = next(k for k in seg_keys if k.endswith("/fts.text"))
    fts_size = len(await store.get(fts_key))
    assert fts_size > 256 << 10
    words = [w for w in texts[5].split() if len(w) > 3][:3]
    body = {"rank_by": ["text", "BM25", " ".join(words)], "top_k": 10, "include_attributes": ["tag"]}

    warm = Database(store, make_settings(), components("warm"))
    expected = await warm.query(NS, body)
    await warm.close()
    assert expected["rows"] and expected["rows"][0]["id"] in (5, N)

    db, timed = cold_node(store, hydrate=False, lazy_text=True)
    got = await db.query(NS, body)
    assert got["rows"] == expected["rows"]  # same documents, same scores
    assert round_trips(timed.calls) <= 3, [(c.op, c.key.rsplit("/", 2)[-2:]) for c in timed.calls]
    fts_reads = [c for c in timed.calls if c.key == fts_key]
    assert fts_reads and {c.op for c in fts_reads} <= {"get_range", "get_ranges"}
    assert sum(c.nbytes for c in fts_reads) < 0.5 * fts_size

    # a phrase filter on the same node reads the positions of its terms by range only
    before = len(timed.calls)
    phrase = " ".join(texts[11].split()[2:4])
    flt = {"rank_by": ["id", "asc"], "top_k": 50, "filters": ["text", "ContainsTokenSequence", phrase]}
    rows = (await db.query(NS, flt))["rows"]
    assert 11 in [r["id"] for r in rows]
    later = timed.calls[before:]
    # one round trip for the strong read's refresh (the WAL probe and the check that the bucket
    # still holds the node's head, in parallel), one for the ranges
    assert round_trips(later) <= 2 and all(c.op != "get" for c in later if c.key == fts_key)
    await db.close()


async def test_the_whole_text_file_arrives_in_the_background() -> None:
    store, texts = await indexed_text_store()
    db, timed = cold_node(store, lazy_text=True)
    q = " ".join(texts[100].split()[:4])
    first = await db.query(NS, {"rank_by": ["text", "BM25", q], "top_k": 5})
    await hydrated(db)
    before = len(timed.calls)
    again = await db.query(NS, {"rank_by": ["text", "BM25", q], "top_k": 5})
    other = " ".join(texts[200].split()[:3])
    await db.query(NS, {"rank_by": ["text", "BM25", other], "top_k": 5, "filters": ["tag", "Eq", 3]})
    assert first["rows"] == again["rows"]
    assert all("/seg/" not in c.key for c in timed.calls[before:])
    await db.close()
