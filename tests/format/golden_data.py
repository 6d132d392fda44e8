"""The content of the committed golden files (tests/format/golden/v1/, v2/). Run this module to
write them ONLY when adding a new format version's file; committed files are never rewritten."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyarrow as pa

from lagoon.format.catalog import Marker, OrgCatalog, encode_marker, encode_org
from lagoon.format.manifest import Branch, Manifest, PendingDelete, SegmentRef, WalRange, encode_manifest
from lagoon.format.operation import COPY, FINISHED, Operation, encode_operation
from lagoon.format.wal import OP_COLUMN, WalEntry, encode_entry, seal_entry
from lagoon.schema import AttrType, Schema
from lagoon.values import column_to_arrow

SCHEMA = {
    "id_type": "uint",
    "distance_metric": "cosine_distance",
    "attributes": {
        "title": {"type": "string", "filterable": False, "full_text_search": {"language": "english"}},
        "year": {"type": "int", "filterable": True},
        "tags": {"type": "[]string", "filterable": True},
        "vector": {"type": "[3]f32", "ann": {}},
    },
}


def wal_entry() -> WalEntry:
    docs = pa.table(
        {
            "id": pa.array([1, 2, 3], pa.uint64()),
            OP_COLUMN: pa.array([0, 0, 1], pa.uint8()),
            "title": pa.array(["hello world", "lagoon", None]),
            "year": pa.array([2020, None, None], pa.int64()),
            "tags": pa.array([["a", "b"], [], None], pa.list_(pa.string())),
            "vector": column_to_arrow(
                [np.array([0.1, 0.2, 0.3], np.float32), np.array([1, 0, 0], np.float32), None],
                AttrType("vector", dims=3, dtype="f32"),
            ),
        }
    )
    return WalEntry(
        seq=7,
        nonce=bytes(range(16)),
        created_at_ms=1_764_000_000_000,
        writer="node-golden",
        requests=2,
        schema=SCHEMA,
        settings={"read_only": False},
        docs=docs,
    )


def patched_wal_entry() -> WalEntry:
    """Format 2: an entry that adds ``rating`` to ``SCHEMA`` and drops ``tags``, as a schema
    patch (docs/rfcs/0009-wal-schema-patches.md), with a document that sets ``rating`` and
    ``year`` (both restated in the patch: the entry describes its own columns)."""
    docs = pa.table(
        {
            "id": pa.array([4], pa.uint64()),
            OP_COLUMN: pa.array([0], pa.uint8()),
            "year": pa.array([2021], pa.int64()),
            "rating": pa.array([4.5], pa.float64()),
        }
    )
    return WalEntry(
        seq=8,
        nonce=bytes(range(16, 32)),
        created_at_ms=1_764_000_001_000,
        writer="node-golden",
        requests=1,
        schema_patch={
            "id_type": "uint",
            "distance_metric": "cosine_distance",
            "attributes": {
                "rating": {"type": "float", "filterable": True},
                "year": {"type": "int", "filterable": True},
            },
            "drop": ["tags"],
        },
        docs=docs,
    )


def manifest() -> Manifest:
    return Manifest(
        version=3,
        nonce="00112233445566778899aabbccddeeff",
        created_at_ms=1_764_000_000_000,
        writer="node-golden",
        indexed_through=7,
        schema=SCHEMA,
        settings={"pinning": {"replicas": 1}},
        segments=(
            SegmentRef(
                id="seg-0001",
                level=0,
                seq_from=1,
                seq_to=7,
                rows=2,
                bytes=1234,
                files={"docs.arrow": {"size": 1000, "crc32c": 42}, "vector.ivf": {"size": 234, "crc32c": 7}},
            ),
        ),
        pending_delete=(
            PendingDelete(key="default/ns/wal/00000000000000000001.wal", removed_at_version=3, removed_at=5),
        ),
        created_at_namespace_ms=1_763_000_000_000,
        stats={"rows": 2},
    )


def branch_manifest() -> Manifest:
    """Format 2: a branch of ``docs`` at version 12 whose first segment is the parent's and whose
    WAL entries 8..12 are read from the parent's WAL (docs/rfcs/0007-branches.md)."""
    base = manifest()
    parent_seg = SegmentRef(**{**base.segments[0].to_json(), "owner": "docs"})
    return Manifest(
        version=1,
        nonce="ffeeddccbbaa99887766554433221100",
        created_at_ms=1_764_000_100_000,
        writer="node-golden",
        indexed_through=7,
        schema=SCHEMA,
        settings={},
        segments=(parent_seg,),
        created_at_namespace_ms=1_763_000_000_000,
        parent_nonce="",
        branch=Branch(
            parent="docs",
            at_version=12,
            created_at_ms=1_764_000_100_000,
            wal=(WalRange("docs", 8, 12),),
        ),
    )


def catalog_marker() -> Marker:
    return Marker(org="default", namespace="docs", created_at_ms=1_764_000_000_000, writer="node-golden")


def catalog_org() -> OrgCatalog:
    return OrgCatalog(
        count=3, complete=True, updated_ms=1_764_000_000_000, nonce="00112233445566778899aabbccddeeff"
    )


def operation() -> Operation:
    """A finished copy, with a field of a newer writer that a rewrite must keep."""
    return Operation(
        token="0123456789abcdef0123456789abcdef",
        kind=COPY,
        org="default",
        namespace="docs-copy",
        source_namespace="docs",
        start_ms=1_764_000_000_000,
        node="node-golden",
        heartbeat_ms=1_764_000_002_000,
        status=FINISHED,
        finish_ms=1_764_000_003_000,
        documents_copied=3,
        documents_total=3,
        result={"success": {"rows_affected": 3, "rows_upserted": 3}},
        extra={"future": [1, 2]},
    )


if __name__ == "__main__" and sys.argv[1:2] == ["--v2"]:
    (Path(sys.argv[2]) / "manifest.json").write_bytes(encode_manifest(branch_manifest()))
elif __name__ == "__main__" and sys.argv[1:2] == ["--v2-wal"]:
    (Path(sys.argv[2]) / "wal.bin").write_bytes(
        encode_entry(seal_entry(patched_wal_entry(), Schema.from_storage(SCHEMA)))
    )
elif __name__ == "__main__":
    out = Path(sys.argv[1])
    (out / "wal.bin").write_bytes(encode_entry(seal_entry(wal_entry())))
    (out / "manifest.json").write_bytes(encode_manifest(manifest()))
    (out / "catalog-marker.json").write_bytes(encode_marker(catalog_marker()))
    (out / "catalog-org.json").write_bytes(encode_org(catalog_org()))
    (out / "operation.json").write_bytes(encode_operation(operation()))
