"""Random document tables covering every attribute type, builders for segment tests, and a
recording block source to open a segment file from its head (the cold path)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lagoon.format.segment import head_length
from lagoon.format.wal import OP_COLUMN
from lagoon.index.segment.build import SEQ_COLUMN, BuiltSegment, build_segment, new_segment_id
from lagoon.index.segment.read import LazyFile, SegmentReader
from lagoon.schema import Schema, apply_schema_update

WORDS = [
    "lagoon", "river", "ocean", "search", "vector", "index", "segment", "filter", "query", "bucket",
    "storage", "object", "cluster", "probe", "recall", "token", "phrase", "stem", "running", "runs",
]  # fmt: skip
UUIDS = [bytes([i]) * 16 for i in (1, 2, 3, 200)] + [bytes(range(16))]


def rich_schema(id_type: str = "uint", metric: str = "cosine_distance") -> Schema:
    return apply_schema_update(
        Schema(distance_metric=metric),
        {
            "id": id_type,
            "s": "string",
            "n": "int",
            "u": "uint",
            "f": "float",
            "b": "bool",
            "dt": "datetime",
            "uu": "uuid",
            "tags": "[]string",
            "nums": "[]int",
            "title": {"type": "string", "full_text_search": {"stemming": True}},
            "body": {"type": "[]string", "full_text_search": True},
            "v": "[8]f32",
            "h": "[8]f16",
            "plain": {"type": "[4]f32", "ann": False},
            "weird name/é": "int",
        },
    )


def random_ids(rng: np.random.Generator, n: int, id_type: str) -> pa.Array:
    if id_type == "uint":
        return pa.array(rng.choice(50 * n + 10, n, replace=False).astype(np.uint64))
    if id_type == "string":
        nums = rng.choice(50 * n + 10, n, replace=False)
        return pa.array([f"doc-{x}" + "z" * int(x % 3) for x in nums.tolist()], pa.string())
    raw = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    raw[:, 0] = np.arange(n) % 256  # few collisions: then make unique below
    vals = list({bytes(r) for r in raw})
    while len(vals) < n:
        vals.append(bytes(rng.integers(0, 256, 16, dtype=np.uint8)))
    return pa.array(vals[:n], pa.binary(16))


def random_table(
    rng: np.random.Generator,
    n: int,
    schema: Schema,
    *,
    tombstones: float = 0.1,
    nulls: float = 0.2,
    seq_base: int = 1,
) -> pa.Table:
    """``n`` rows (unique ids, random order) with every attribute of ``rich_schema``."""
    id_type = schema.id_type or "uint"

    def some(values: list[Any]) -> list[Any]:
        return [None if rng.random() < nulls else v for v in values]

    ops = (rng.random(n) < tombstones).astype(np.uint8)
    cols: dict[str, Any] = {
        "id": random_ids(rng, n, id_type),
        SEQ_COLUMN: pa.array(seq_base + rng.permutation(n).astype(np.uint64)),
        OP_COLUMN: pa.array(ops),
    }
    floats = np.round(rng.normal(size=n), 1).tolist()
    floats[: min(n, 3)] = [-0.0, 0.0, 1.5][: min(n, 3)]
    cols["s"] = pa.array(some([f"c{int(x)}" for x in rng.integers(0, 10, n)]), pa.string())
    cols["n"] = pa.array(some(rng.integers(-50, 50, n).tolist()), pa.int64())
    cols["u"] = pa.array(some(rng.integers(0, 2**63, n, dtype=np.uint64).tolist()), pa.uint64())
    cols["f"] = pa.array(some(floats), pa.float64())
    cols["b"] = pa.array(some((rng.random(n) < 0.5).tolist()), pa.bool_())
    cols["dt"] = pa.array(
        some((1_700_000_000_000 + rng.integers(0, 10, n) * 86_400_000).tolist()), pa.timestamp("ms", tz="UTC")
    )
    cols["uu"] = pa.array(some([UUIDS[i] for i in rng.integers(0, len(UUIDS), n)]), pa.binary(16))
    cols["tags"] = pa.array(
        some([[WORDS[j] for j in rng.integers(0, 6, rng.integers(0, 4))] for _ in range(n)]),
        pa.list_(pa.string()),
    )
    cols["nums"] = pa.array(
        some([rng.integers(0, 5, rng.integers(0, 3)).tolist() for _ in range(n)]), pa.list_(pa.int64())
    )
    cols["title"] = pa.array(
        some([" ".join(WORDS[j] for j in rng.integers(0, len(WORDS), rng.integers(0, 9))) for _ in range(n)]),
        pa.string(),
    )
    cols["body"] = pa.array(
        some([[WORDS[j] for j in rng.integers(0, len(WORDS), rng.integers(0, 3))] for _ in range(n)]),
        pa.list_(pa.string()),
    )
    for name, dims, dt in (("v", 8, np.float32), ("h", 8, np.float16), ("plain", 4, np.float32)):
        mat = rng.normal(size=(n, dims)).astype(dt)
        valid = rng.random(n) >= nulls
        t = schema.attributes[name].type.arrow_type()
        cols[name] = pa.FixedSizeListArray.from_arrays(
            pa.array(mat.reshape(-1)), type=t, mask=pa.array(~valid)
        )
    cols["weird name/é"] = pa.array(some(rng.integers(0, 3, n).tolist()), pa.int64())
    table = pa.table(cols)
    # tombstones carry no attributes
    dead = pa.array(ops.astype(bool))
    for name in schema.attributes:
        col = table.column(name)
        table = table.set_column(
            table.column_names.index(name), name, pc.if_else(dead, pa.nulls(n, col.type), col)
        )
    return table


def by_id(table: pa.Table) -> pa.Table:
    """``table`` sorted by id the way segments order rows (uuid by bytes)."""
    ids = table.column("id")
    key = ids.cast(pa.binary()) if pa.types.is_fixed_size_binary(ids.type) else ids
    return table.take(pc.sort_indices(key))


def build(table: pa.Table, schema: Schema, seed: int = 0) -> BuiltSegment:
    return build_segment(
        table,
        schema,
        segment_id=new_segment_id(1_764_000_000_000, random.Random(seed)),
        level=0,
        seq_from=1,
        seq_to=max(1, table.num_rows),
    )


def open_built(built: BuiltSegment, schema: Schema) -> SegmentReader:
    return SegmentReader.from_files(built.ref, dict(built.files), schema)


class RecordingBlocks:
    """A BlockSource over a file's bytes that records what was asked for; ``corrupt_at`` flips a
    bit of that byte in every range that covers it."""

    def __init__(self, data: bytes, corrupt_at: int | None = None) -> None:
        self.data, self.corrupt_at = data, corrupt_at
        self.calls: list[list[tuple[int, int]]] = []
        self.whole_calls = 0

    def ranges(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        self.calls.append(list(ranges))
        out = []
        for s, e in ranges:
            b = bytearray(self.data[s:e])
            if self.corrupt_at is not None and s <= self.corrupt_at < e:
                b[self.corrupt_at - s] ^= 0x40
            out.append(bytes(b))
        return out

    def whole(self) -> bytes:
        self.whole_calls += 1
        return self.data

    @property
    def ranged_bytes(self) -> int:
        return sum(e - s for call in self.calls for s, e in call)


def open_cold(built: BuiltSegment, schema: Schema, name: str, blocks: RecordingBlocks) -> SegmentReader:
    """``built`` opened with its file ``name`` read from the head the manifest names; the rest of
    that file comes through ``blocks``."""
    data = built.files[name]
    head_bytes = built.ref.info["files"][name]["head_bytes"]
    assert head_length(data[:65536], what=name) == head_bytes
    return SegmentReader.from_files(
        built.ref, {**built.files, name: LazyFile(data[:head_bytes], blocks)}, schema
    )
