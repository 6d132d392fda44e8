"""What a conditional or by-filter write reads of the current documents, on a namespace whose
documents carry a large text attribute: `python bench/condition_bench.py --n 2000 --text-kb 20`.

The namespace holds N documents ``{"id", "v": int, "body": <text-kb KB>}``, indexed into one
segment. Each case is one write of 1,000 ids (or one filter) whose condition reads ``v`` only;
every case is built so that it changes nothing (the condition fails), so it can be repeated.
Reported per case: the bytes of document columns the resolver fetched from the snapshot (the
Arrow size of every ``fetch_rows`` result) and the median time of ``--rounds`` writes."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from typing import Any

import numpy as np

from lagoon.config import Settings
from lagoon.engine.components import Components
from lagoon.engine.database import Database
from lagoon.engine.indexer import index_namespace
from lagoon.format.keys import NamespaceKeys
from lagoon.index.sources.composite import CompositeSource
from lagoon.storage.fs import FsStore

FETCHED = [0]


def _counting(original: Any) -> Any:
    def fetch_rows(self: CompositeSource, positions: np.ndarray, attributes: Any) -> Any:
        table = original(self, positions, attributes)
        FETCHED[0] += table.nbytes
        return table

    return fetch_rows


CompositeSource.fetch_rows = _counting(CompositeSource.fetch_rows)  # type: ignore[method-assign]


def cases(n: int) -> dict[str, dict[str, Any]]:
    ids = list(range(min(n, 1000)))
    return {
        "upsert_condition": {
            "upsert_rows": [{"id": i, "v": 0} for i in ids],
            "upsert_condition": ["v", "Lt", 0],
        },
        "patch_condition": {
            "patch_rows": [{"id": i, "v": 0} for i in ids],
            "patch_condition": ["v", "Lt", 0],
        },
        "delete_condition": {"deletes": ids, "delete_condition": ["v", "Lt", 0]},
        "patch_by_filter": {"patch_by_filter": {"filters": ["v", "Lt", 0], "patch": {"v": 0}}},
        "delete_by_filter": {"delete_by_filter": ["v", "Lt", 0]},
    }


async def main(n: int, text_kb: int, rounds: int) -> None:
    root = tempfile.mkdtemp(prefix="condition-bench-")
    store = FsStore(root, fsync=False)
    settings = Settings(indexer={"gc_grace_secs": 3600})  # type: ignore[arg-type]
    db = Database(store, settings, Components(node_id="bench"))
    words = np.random.default_rng(1).integers(0, 50_000, size=(text_kb * 1024) // 6)
    text = " ".join(f"w{w}" for w in words)[: text_kb * 1024]
    for lo in range(0, n, 200):
        rows = [{"id": i, "v": i, "body": text} for i in range(lo, min(n, lo + 200))]
        await db.write(
            "docs", {"upsert_rows": rows, "schema": {"body": {"type": "string", "full_text_search": True}}}
        )
    await index_namespace(
        store, NamespaceKeys.of("default", "docs"), settings, Components(node_id="ix"), force=True
    )
    print(f"{n} documents of {text_kb} KB text, one segment; {rounds} rounds per case")
    for name, body in cases(n).items():
        await db.write("docs", body)  # warm
        FETCHED[0] = 0
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            out = await db.write("docs", body)
            times.append(time.perf_counter() - t0)
            assert out["rows_affected"] == 0, out
        print(
            f"{name:18s} fetched {FETCHED[0] / rounds / 1e6:10.3f} MB/write  p50 {statistics.median(times) * 1e3:8.1f} ms"
        )
    await db.close()
    await store.close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--text-kb", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    asyncio.run(main(a.n, a.text_kb, a.rounds))
