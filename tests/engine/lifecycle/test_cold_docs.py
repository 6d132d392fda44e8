"""Cold reads of the documents file (version 2, RFC 0006): a node with empty caches answers a
BM25 top-k that returns attributes by reading the ``docs`` head and only the batches holding its
result rows (bytes bounded by the request, not by the segment); an ids-only answer reads the head
alone; answers equal a warm node's; the whole file arrives in the background."""

from __future__ import annotations

import numpy as np
import pytest

from lagoon.engine.database import Database
from lagoon.format.segment import MAGIC_DOCS, open_head
from lagoon.storage.memory import MemoryStore

from .cold import TEXT_N as N
from .cold import cold_node, hydrated, indexed_text_store, round_trips
from .helpers import KEYS, NS, components, make_settings

pytestmark = pytest.mark.anyio


async def _docs_file(store: MemoryStore) -> tuple[str, bytes, int]:
    """The docs file's key, bytes and its largest batch (from its head's directory)."""
    key = next(m.key for m in [m async for m in store.list(KEYS.root + "seg/")] if m.key.endswith("/docs"))
    data = await store.get(key)
    head = open_head(data, magic=MAGIC_DOCS, what=key, size=len(data))
    return key, data, int(np.diff(head.array("batch_offset")).max())


async def test_a_cold_top_k_reads_the_docs_head_and_its_rows_batches() -> None:
    store, texts = await indexed_text_store()
    docs_key, data, largest = await _docs_file(store)
    words = [w for w in texts[5].split() if len(w) > 3][:3]
    body = {"rank_by": ["text", "BM25", " ".join(words)], "top_k": 3, "include_attributes": ["text", "tag"]}
    warm = Database(store, make_settings(), components("warm"))
    expected = await warm.query(NS, body)
    ids_only = {**body, "include_attributes": False}
    expected_ids = await warm.query(NS, ids_only)
    await warm.close()
    assert len(expected["rows"]) == 3 and expected["rows"][0]["text"]

    db, timed = cold_node(store, hydrate=False, lazy_text=True, lazy_docs=True)
    assert (await db.query(NS, ids_only))["rows"] == expected_ids["rows"]
    docs_reads = [c for c in timed.calls if c.key == docs_key]
    assert [c.op for c in docs_reads] == ["get_range"]  # the head: ids, $seq, $op
    assert round_trips(timed.calls) <= 3
    await db.close()

    db, timed = cold_node(store, hydrate=False, lazy_text=True, lazy_docs=True)
    got = await db.query(NS, body)
    assert got["rows"] == expected["rows"]
    docs_reads = [c for c in timed.calls if c.key == docs_key]
    assert [c.op for c in docs_reads] == ["get_range", "get_ranges"]
    head_bytes = docs_reads[0].nbytes
    assert docs_reads[1].nbytes <= 3 * largest  # at most one batch per result row
    assert head_bytes + docs_reads[1].nbytes < 0.25 * len(data), (head_bytes, docs_reads[1].nbytes, len(data))
    assert round_trips(timed.calls) <= 4  # the batches follow the ranking: one more round
    await db.close()

    # with hydration on (the default), the whole file arrives in the background: later queries
    # (attributes of other rows, a sort by an attribute) read nothing more from the store
    db, timed = cold_node(store, lazy_text=True, lazy_docs=True)
    assert (await db.query(NS, body))["rows"] == expected["rows"]
    await hydrated(db)
    before = len(timed.calls)
    other = {**body, "rank_by": ["text", "BM25", " ".join(texts[100].split()[:4])], "top_k": 5}
    assert len((await db.query(NS, other))["rows"]) == 5
    by_tag = {
        "rank_by": ["tag", "desc"],
        "top_k": 3,
        "filters": ["id", "Lt", N],
        "include_attributes": ["tag"],
    }
    assert (await db.query(NS, by_tag))["rows"][0]["tag"] == 6
    assert all("/seg/" not in c.key for c in timed.calls[before:])
    await db.close()
