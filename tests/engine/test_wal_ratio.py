"""WAL bytes stay a small multiple of request bytes, for every kind of write a client may send.

Each case is a write the server accepts, at the limits of the refused-request catalogue
(tests/server/refused.py refuses one past each) or of a kind that used to be expensive: a
schema change in a namespace of many attributes stored the whole schema again (4,339× for a
one-row write adding an attribute next to 1,023 attributes with 128-byte names; now a schema
patch, docs/rfcs/0009-wal-schema-patches.md), and a column few documents set was stored dense.
The bound is ``RATIO`` × the request's JSON bytes + ``ENTRY_BYTES`` (an entry's fixed part: frame,
nonce, the Arrow stream's schema and batch headers), and the test prints every ratio.

Patches (``patch_rows``, ``patch_by_filter``) are the exception: a WAL entry holds the documents
it changes whole (docs/formats/wal.md), so a patch costs what the documents it rewrites cost, not
what the request does (a one-attribute patch of a document with 1,023 others rewrites all of
them). For those the bound is on the rewritten documents' JSON bytes instead.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from lagoon.config import Settings
from lagoon.engine.components import Components
from lagoon.engine.database import Database
from lagoon.format.keys import NamespaceKeys
from lagoon.format.wal import decode_entry
from lagoon.schema import MAX_ATTR_NAME_BYTES, MAX_ATTRIBUTES, MAX_DIMS, MAX_SPARSE_DIMS
from lagoon.storage.memory import MemoryStore
from lagoon.values import MAX_STRING_ID_BYTES
from tests.server.refused import BASE_SCHEMA, base_doc

pytestmark = pytest.mark.anyio
RATIO = 12
ENTRY_BYTES = 1024

BASE = [{"schema": BASE_SCHEMA, "upsert_rows": [base_doc(i) for i in range(20)]}]
WIDE_NAMES = [f"a{i:04d}".ljust(MAX_ATTR_NAME_BYTES, "x") for i in range(MAX_ATTRIBUTES - 1)]
WIDE = [{"upsert_rows": [{"id": 0, **{n: 1 for n in WIDE_NAMES}}]}]
ATTRS = range(MAX_ATTRIBUTES)

REWRITES = {"base-patch", "base-patch-by-filter", "wide-patch"}
"""Cases measured against the documents they rewrite (see the module docstring)."""

# (name, writes before, the measured write)
CASES: list[tuple[str, list[dict[str, Any]], dict[str, Any]]] = [
    ("one-id", [], {"upsert_rows": [{"id": 1}]}),
    ("base-one-doc", BASE, {"upsert_rows": [base_doc(30)]}),
    ("base-hundred-docs", BASE, {"upsert_rows": [base_doc(i) for i in range(100, 200)]}),
    ("base-columns", BASE, {"upsert_columns": {"id": [7, 8], "n": [1, 2], "title": ["a", "b"]}}),
    ("base-patch", BASE, {"patch_rows": [{"id": 3, "n": 5}]}),
    ("base-delete", BASE, {"deletes": [3]}),
    ("base-delete-by-filter", BASE, {"delete_by_filter": ["n", "Lt", 5]}),
    ("base-patch-by-filter", BASE, {"patch_by_filter": {"filters": ["n", "Lt", 5], "patch": {"f": 0.5}}}),
    ("base-condition", BASE, {"upsert_rows": [base_doc(4)], "upsert_condition": ["n", "Eq", 4]}),
    ("base-new-attribute", BASE, {"upsert_rows": [{"id": 1, "z": 1}]}),
    ("base-schema-change", BASE, {"schema": {"n": {"type": "int", "filterable": False}}}),
    ("wide-new-attribute", WIDE, {"upsert_rows": [{"id": 1, "z": 1}]}),
    ("wide-patch", WIDE, {"patch_rows": [{"id": 0, WIDE_NAMES[5]: 2}]}),
    ("wide-schema-change", WIDE, {"schema": {WIDE_NAMES[5]: {"type": "int", "filterable": False}}}),
    ("attributes-at-limit", [], {"upsert_rows": [{"id": 1, **{f"a{i}": i for i in ATTRS}}]}),
    ("attributes-spread-at-limit", [], {"upsert_rows": [{"id": i, f"a{i}": i} for i in ATTRS]}),
    ("schema-at-limit", [], {"schema": {f"a{i}": "int" for i in ATTRS}, "upsert_rows": [{"id": 1}]}),
    ("few-sparse-attributes", [], {"upsert_rows": [{"id": r, f"c{r % 100}": r} for r in range(10_000)]}),
    ("string-id-at-limit", [], {"upsert_rows": [{"id": "x" * MAX_STRING_ID_BYTES}]}),
    ("name-at-limit", [], {"upsert_rows": [{"id": 1, "a" * MAX_ATTR_NAME_BYTES: 1}]}),
    (
        "dims-at-limit",
        [],
        {"distance_metric": "cosine_distance", "upsert_rows": [{"id": 1, "vector": [0.5] * MAX_DIMS}]},
    ),
    (
        "sparse-at-limit",
        [],
        {
            "schema": {"sp": "{}f16"},
            "upsert_rows": [{"id": 1, "sp": {str(i): 1.0 for i in range(MAX_SPARSE_DIMS)}}],
        },
    ),
]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def wal_sizes(store: MemoryStore) -> dict[str, int]:
    return {m.key: m.size async for m in store.list(NamespaceKeys.of("default", "ns").wal_prefix)}


async def written(setup: list[dict[str, Any]], body: dict[str, Any]) -> tuple[int, list[bytes]]:
    """WAL bytes the write adds, and the entries it added."""
    store = MemoryStore()
    db = Database(store, Settings(), Components(node_id="n1"))
    try:
        for b in setup:
            await db.write("ns", b)
        before = await wal_sizes(store)
        await db.write("ns", body)
        after = await wal_sizes(store)
        new = sorted(set(after) - set(before))
        return sum(after[k] for k in new), [await store.get(k) for k in new]
    finally:
        await db.close()


def rewritten_bytes(entries: list[bytes]) -> int:
    """JSON bytes of the documents the entries hold (what a patch rewrites)."""
    docs = [decode_entry(raw).docs for raw in entries]
    rows = [row for d in docs if d is not None for row in d.drop_columns(["$op"]).to_pylist()]
    return len(
        json.dumps([{k: v for k, v in r.items() if v is not None} for r in rows], default=str).encode()
    )


async def test_wal_bytes_stay_a_small_multiple_of_request_bytes() -> None:
    ratios, over = [], []
    for name, setup, body in CASES:
        wal, entries = await written(setup, body)
        reference = rewritten_bytes(entries) if name in REWRITES else len(json.dumps(body).encode())
        ratios.append((wal / reference, name, reference, wal))
        if wal > RATIO * reference + ENTRY_BYTES:
            over.append(name)
    for ratio, name, reference, wal in sorted(ratios, reverse=True):
        of = "documents" if name in REWRITES else "request"
        print(f"{name:28s} {of:9s} {reference:9,d} B  WAL {wal:9,d} B  {ratio:6.2f}x")
    assert not over, f"over {RATIO}x + {ENTRY_BYTES} B: {over}"


async def test_a_schema_change_in_a_wide_namespace_stores_a_patch_not_the_schema() -> None:
    wal, [raw] = await written(WIDE, {"upsert_rows": [{"id": 1, "z": 1}]})
    entry = decode_entry(raw)
    assert entry.schema is None and entry.schema_patch is not None
    assert sorted(entry.schema_patch["attributes"]) == ["z"] and wal < ENTRY_BYTES
