"""Branch creation time and bytes written against a physical copy (copy_from_namespace) of the
same source, in the same run: `python bench/branch_bench.py 10000 100000 [--no-copy-above N]`.

The source holds N flat documents (an integer and a short string each), indexed into segments.
Reported: branch time and bytes written (every PUT the store takes), the copy's, and the ratios."""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from typing import Any

from lagoon.config import Settings
from lagoon.engine.components import Components
from lagoon.engine.database import Database
from lagoon.engine.indexer import index_namespace
from lagoon.format.keys import NamespaceKeys
from lagoon.storage.fs import FsStore


class CountingStore(FsStore):
    """An fs store that counts the bytes of every PUT."""

    put_bytes = 0
    puts = 0

    async def put(self, key: str, data: bytes, mode: Any = "overwrite") -> Any:
        CountingStore.put_bytes += len(data)
        CountingStore.puts += 1
        return await super().put(key, data, mode)


async def run(n: int, copy: bool) -> dict[str, float]:
    root = tempfile.mkdtemp(prefix="branch-bench-")
    store = CountingStore(root, fsync=False)
    settings = Settings(indexer={"gc_grace_secs": 3600})  # type: ignore[arg-type]
    db = Database(store, settings, Components(node_id="bench"))
    for lo in range(0, n, 10_000):
        rows = [{"id": i, "n": i, "s": f"doc {i}"} for i in range(lo, min(n, lo + 10_000))]
        await db.write("src", {"upsert_rows": rows})
    await index_namespace(
        store, NamespaceKeys.of("default", "src"), settings, Components(node_id="i"), force=True
    )
    out: dict[str, float] = {"docs": n}
    for kind in ("branch", "copy") if copy else ("branch",):
        before, puts = CountingStore.put_bytes, CountingStore.puts
        t0 = time.perf_counter()
        if kind == "branch":
            await db.branch(f"b{n}", "src")
        else:
            await db.write(f"c{n}", {"copy_from_namespace": "src"})
        out[f"{kind}_s"] = time.perf_counter() - t0
        out[f"{kind}_bytes"] = CountingStore.put_bytes - before
        out[f"{kind}_puts"] = CountingStore.puts - puts
    await db.close()
    return out


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    no_copy_above = 10**12
    if "--no-copy-above" in sys.argv:
        no_copy_above = int(sys.argv[sys.argv.index("--no-copy-above") + 1])
        args = [a for a in args if a != str(no_copy_above)]
    for n in [int(a) for a in args] or [10_000]:
        r = asyncio.run(run(n, n <= no_copy_above))
        line = f"{n:>9} docs: branch {r['branch_s'] * 1000:8.1f} ms, {int(r['branch_bytes']):>9} B in {int(r['branch_puts'])} PUTs"
        if "copy_s" in r:
            line += (
                f" | copy {r['copy_s'] * 1000:9.1f} ms, {int(r['copy_bytes']):>11} B"
                f" | branch/copy time {r['branch_s'] / r['copy_s']:.4f}, bytes {r['branch_bytes'] / r['copy_bytes']:.5f}"
            )
        print(line, flush=True)


if __name__ == "__main__":
    main()
