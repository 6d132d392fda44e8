"""The content of the committed segment golden files: ``tests/index/segment/golden/v1/`` (the first
v1 layout), ``v1-head/`` (v1 with the additive vec-file head, ``row_cluster`` and ``sq_min`` /
``sq_max``), ``v2/`` (``fts`` files in format version 2: docs/formats/fts-v2.md) and ``v2-docs/``
(the ``docs`` file in format version 2 too: docs/formats/docs-v2.md). Run this
module to write a directory ONLY when adding a new format version or layout;
committed files are never rewritten (every later Lagoon must still open them)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa

from lagoon.format.wal import OP_COLUMN
from lagoon.index.segment.build import SEQ_COLUMN, BuiltSegment, build_segment
from lagoon.schema import Schema

SCHEMA = Schema.from_storage(
    {
        "id_type": "string",
        "distance_metric": "cosine_distance",
        "attributes": {
            "title": {"type": "string", "filterable": False, "full_text_search": {"stemming": True}},
            "year": {"type": "int", "filterable": True},
            "price": {"type": "float", "filterable": True},
            "tags": {"type": "[]string", "filterable": True},
            "vector": {"type": "[3]f32", "ann": {}},
            "half": {"type": "[2]f16", "ann": {"distance_metric": "euclidean_squared"}},
        },
    }
)
SEGMENT_ID = "1764000000000-00000000000000ab"


def table() -> pa.Table:
    """Rows in insertion order (the segment sorts them by id); "d" is a tombstone."""
    return pa.table(
        {
            "id": pa.array(["c", "a", "d", "b", "e"]),
            SEQ_COLUMN: pa.array([5, 3, 7, 4, 6], pa.uint64()),
            OP_COLUMN: pa.array([0, 0, 1, 0, 0], pa.uint8()),
            "title": pa.array(["the lagoon runs deep", "a quiet river", None, "river and lagoon", ""]),
            "year": pa.array([2021, 2019, None, 2021, None], pa.int64()),
            "price": pa.array([9.5, -0.0, None, 3.25, 12.0], pa.float64()),
            "tags": pa.array([["x", "y"], [], None, ["y"], None], pa.list_(pa.string())),
            "vector": pa.FixedSizeListArray.from_arrays(
                pa.array(np.array([1, 0, 0, 0, 1, 0, 0, 0, 0, 0.6, 0.8, 0, 0, 0, 1], np.float32)),
                type=pa.list_(pa.float32(), 3),
                mask=pa.array([False, False, True, False, False]),
            ),
            "half": pa.FixedSizeListArray.from_arrays(
                pa.array(np.array([1, 2, 0.5, 0.25, 0, 0, -1, 4, 0, 0], np.float16)),
                type=pa.list_(pa.float16(), 2),
                mask=pa.array([False, False, True, False, True]),
            ),
        }
    )


def build() -> BuiltSegment:
    return build_segment(table(), SCHEMA, segment_id=SEGMENT_ID, level=0, seq_from=3, seq_to=7)


def write(directory: Path) -> None:
    built = build()
    directory.mkdir(parents=True, exist_ok=False)
    for name, data in built.files.items():
        (directory / name).write_bytes(data)
    (directory / "ref.json").write_bytes(orjson.dumps(built.ref.to_json(), option=orjson.OPT_INDENT_2))


# ``golden/v1-i8/``: the v1 (head) layout with an ``[N]i8`` vector column (vec dtype "i8").
I8_SCHEMA = Schema.from_storage(
    {
        "id_type": "uint",
        "distance_metric": None,
        "attributes": {"q": {"type": "[2]i8", "ann": {"distance_metric": "euclidean_squared"}}},
    }
)
I8_SEGMENT_ID = "1764000000000-00000000000000i8"


def i8_table() -> pa.Table:
    return pa.table(
        {
            "id": pa.array([3, 1, 2, 4], pa.uint64()),
            SEQ_COLUMN: pa.array([1, 1, 1, 1], pa.uint64()),
            OP_COLUMN: pa.array([0, 0, 0, 0], pa.uint8()),
            "q": pa.FixedSizeListArray.from_arrays(
                pa.array(np.array([-128, 127, 1, 2, 0, 0, 5, 5], np.int8)),
                type=pa.list_(pa.int8(), 2),
                mask=pa.array([False, False, False, True]),
            ),
        }
    )


def write_i8(directory: Path) -> None:
    built = build_segment(i8_table(), I8_SCHEMA, segment_id=I8_SEGMENT_ID, level=0, seq_from=1, seq_to=1)
    directory.mkdir(parents=True, exist_ok=False)
    for name, data in built.files.items():
        (directory / name).write_bytes(data)
    (directory / "ref.json").write_bytes(orjson.dumps(built.ref.to_json(), option=orjson.OPT_INDENT_2))


# ``golden/v1-sparse/``: a ``{}f16`` sparse vector column (in ``docs``) and its ``spv`` file.
SPARSE_SCHEMA = Schema.from_storage(
    {
        "id_type": "uint",
        "distance_metric": None,
        "attributes": {"s": {"type": "{}f16", "sparse_knn": {"distance_metric": "dot_product"}}},
    }
)
SPARSE_SEGMENT_ID = "1764000000000-000000000000005a"
SPARSE_VALUES = {1: [(0, 0.5), (4_000_000_000, 2.0)], 2: [(3, 1.25)], 3: None, 4: [(0, -1.0), (3, 0.75)]}


def sparse_table() -> pa.Table:
    ids = [4, 2, 1, 3]
    return pa.table(
        {
            "id": pa.array(ids, pa.uint64()),
            SEQ_COLUMN: pa.array([2, 2, 2, 2], pa.uint64()),
            OP_COLUMN: pa.array([0, 0, 0, 0], pa.uint8()),
            "s": pa.array([SPARSE_VALUES[i] for i in ids], pa.map_(pa.uint32(), pa.float16())),
        }
    )


def write_sparse(directory: Path) -> None:
    built = build_segment(
        sparse_table(), SPARSE_SCHEMA, segment_id=SPARSE_SEGMENT_ID, level=0, seq_from=2, seq_to=2
    )
    directory.mkdir(parents=True, exist_ok=False)
    for name, data in built.files.items():
        (directory / name).write_bytes(data)
    (directory / "ref.json").write_bytes(orjson.dumps(built.ref.to_json(), option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    kind = sys.argv[2] if len(sys.argv) > 2 else ""
    {"i8": write_i8, "sparse": write_sparse}.get(kind, write)(Path(sys.argv[1]))
