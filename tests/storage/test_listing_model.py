"""Property test: fs and memory listings equal a plain-Python model of S3 listing semantics."""

from __future__ import annotations

import asyncio
import tempfile

from hypothesis import given, settings
from hypothesis import strategies as st

from lagoon.storage import FsStore, MemoryStore, ObjectStore

segment = st.text(alphabet="ab-0_ä", min_size=1, max_size=3)
key = st.lists(segment, min_size=1, max_size=3).map("/".join)
probe = st.text(alphabet="ab-0_ä/", max_size=6).filter(lambda p: not p.startswith("/") and "//" not in p)


def storable(keys: set[str]) -> list[str]:
    """Drop keys that are also a folder of other keys (the fs backend cannot hold both)."""
    return sorted(k for k in keys if not any(other.startswith(k + "/") for other in keys))


def model_list(keys: list[str], prefix: str, start_after: str | None) -> list[str]:
    return [k for k in sorted(keys) if k.startswith(prefix) and (start_after is None or k > start_after)]


def model_prefixes(keys: list[str], prefix: str, start_after: str | None) -> list[str]:
    found = {prefix + k[len(prefix) :].split("/")[0] + "/" for k in keys if k.startswith(prefix)}
    found = {p for p in found if any(k.startswith(p) for k in keys)}
    return sorted(p for p in found if start_after is None or p > start_after)


async def check(store: ObjectStore, keys: list[str], probes: list[tuple[str, str | None]]) -> None:
    for k in keys:
        await store.put(k, k.encode())
    for prefix, start_after in probes:
        got = [m.key async for m in store.list(prefix, start_after)]
        assert got == model_list(keys, prefix, start_after), (prefix, start_after)
        assert await store.list_prefixes(prefix, start_after) == model_prefixes(keys, prefix, start_after)
    await store.close()


@settings(max_examples=40, deadline=None, database=None)
@given(
    keys=st.sets(key, max_size=12),
    probes=st.lists(st.tuples(probe, st.one_of(st.none(), probe)), min_size=1, max_size=5),
)
def test_listings_match_the_model(keys: set[str], probes: list[tuple[str, str | None]]) -> None:
    kept = storable(keys)
    asyncio.run(check(MemoryStore(), kept, probes))
    with tempfile.TemporaryDirectory() as root:
        asyncio.run(check(FsStore(root), kept, probes))
