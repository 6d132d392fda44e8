"""Segments: build -> from_files returns exactly the rows that went in (every type, nulls,
tombstones, all id types), sorted by id, with the manifest entry describing the files."""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pytest

from lagoon.errors import InternalError
from lagoon.format.segment import attr_file_suffix, file_checksum
from lagoon.format.wal import OP_COLUMN
from lagoon.index.segment.build import SEQ_COLUMN, build_segment, new_segment_id
from lagoon.index.sources.segment import SegmentSource
from lagoon.schema import Schema, apply_schema_update
from tests.index.segment.helpers import build, by_id, open_built, random_ids, random_table, rich_schema


@pytest.mark.parametrize("id_type", ["uint", "string", "uuid"])
def test_roundtrip_every_type(id_type: str) -> None:
    schema = rich_schema(id_type)
    table = random_table(np.random.default_rng(3), 400, schema)
    built = build(table, schema)
    reader = open_built(built, schema)
    expected = by_id(table)
    got = reader.table()
    assert got.column_names == ["id", SEQ_COLUMN, OP_COLUMN, *schema.attributes]
    for name in expected.column_names:
        assert got.column(name).type == expected.column(name).type, name
        assert got.column(name).to_pylist() == expected.column(name).to_pylist(), name
    assert reader.num_rows == 400
    assert reader.ids().to_pylist() == expected.column("id").to_pylist()
    assert reader.seqs().dtype == np.uint64
    assert reader.seqs().tolist() == expected.column(SEQ_COLUMN).to_pylist()
    assert reader.tombstones().tolist() == [op == 1 for op in expected.column(OP_COLUMN).to_pylist()]
    sub = reader.table(["n", "v"])
    assert sub.column_names == ["id", SEQ_COLUMN, OP_COLUMN, "n", "v"]


def test_ref_describes_the_files() -> None:
    schema = rich_schema()
    table = random_table(np.random.default_rng(1), 100, schema, tombstones=0.25)
    built = build(table, schema)
    ref = built.ref
    assert set(ref.files) == set(built.files)
    assert ref.bytes == sum(len(b) for b in built.files.values())
    for name, data in built.files.items():
        assert ref.files[name] == {"size": len(data), "crc32c": file_checksum(data)}
    counts = ref.info["counts"]
    tomb = int(np.count_nonzero(table.column(OP_COLUMN).to_numpy()))
    assert counts == {"rows": 100, "upserts": 100 - tomb, "tombstones": tomb}
    assert {"docs", "vec.v", "vec.h", "vec.plain", "fts.title", "fts.body", "flt.n", "flt.s"} <= set(
        ref.files
    )
    assert "flt.b" not in ref.files and "flt.tags" not in ref.files  # bools and arrays scan
    assert f"flt.{attr_file_suffix('weird name/é')}" in ref.files
    assert ref.info["files"]["vec.v"]["vectors"] == int(np.count_nonzero(table.column("v").is_valid()))
    assert ref.rows == 100 and ref.seq_from == 1 and ref.level == 0


def test_file_names_are_flat_and_distinct() -> None:
    assert attr_file_suffix("vector") == "vector"
    assert attr_file_suffix("a.b-c_d") == "a.b-c_d"
    assert attr_file_suffix("..") == ".."  # "vec.." is an ordinary, flat name
    odd = ["a/b", "é", "a b", "x" * 101, "~x", ""]
    suffixes = [attr_file_suffix(a) for a in odd]
    assert all("/" not in s and s.startswith("~") and len(s) < 240 for s in suffixes)
    assert len(set(suffixes)) == len(odd)
    assert attr_file_suffix("x" * 128 * 4)  # long names still map (base32 of <= 512 bytes)


def test_new_segment_id_sorts_by_time() -> None:
    rng = random.Random(7)
    a, b = new_segment_id(5, rng), new_segment_id(1_764_000_000_000, rng)
    assert len(a) == len(b) == 13 + 1 + 16 and a < b and a.startswith("0000000000005-")


def test_empty_and_all_tombstone_segments() -> None:
    schema = rich_schema()
    empty = random_table(np.random.default_rng(0), 0, schema)
    reader = open_built(build(empty, schema), schema)
    assert reader.num_rows == 0 and reader.table().num_rows == 0
    src = SegmentSource(reader, np.zeros(0, bool))
    assert src.num_docs == 0
    assert (
        src.vector_topk("v", np.ones(8, np.float32), "cosine_distance", 5, None, approximate=True)[0].size
        == 0
    )
    dead = random_table(np.random.default_rng(0), 20, schema, tombstones=1.0)
    reader = open_built(build(dead, schema), schema)
    assert reader.tombstones().all()
    assert reader.ref.info["counts"]["tombstones"] == 20


def test_missing_columns_are_null_and_types_are_cast() -> None:
    schema = rich_schema()
    table = pa.table(
        {
            "id": pa.array([3, 1, 2], pa.int64()),  # cast to uint64
            SEQ_COLUMN: pa.array([1, 2, 3], pa.int64()),
            OP_COLUMN: pa.array([0, 0, 1], pa.int32()),
            "n": pa.array([1, None, None], pa.int32()),
        }
    )
    reader = open_built(build(table, schema), schema)
    got = reader.table()
    assert got.column("id").to_pylist() == [1, 2, 3]
    assert got.column("n").to_pylist() == [None, None, 1]
    assert got.column("v").null_count == 3 and got.column("title").null_count == 3


def test_bad_input_is_an_internal_error() -> None:
    schema = rich_schema()
    ok = {"id": pa.array([1, 2], pa.uint64()), SEQ_COLUMN: pa.array([1, 2], pa.uint64())}
    with pytest.raises(InternalError, match=r"\$op"):
        build(pa.table(ok), schema)
    dup = pa.table({**ok, "id": pa.array([1, 1], pa.uint64()), OP_COLUMN: pa.array([0, 0], pa.uint8())})
    with pytest.raises(InternalError, match="more than once"):
        build(dup, schema)
    bad_op = pa.table({**ok, OP_COLUMN: pa.array([0, 2], pa.uint8())})
    with pytest.raises(InternalError, match="upsert"):
        build(bad_op, schema)
    nan = pa.table(
        {
            **ok,
            OP_COLUMN: pa.array([0, 0], pa.uint8()),
            "plain": pa.FixedSizeListArray.from_arrays(pa.array([np.nan] + [0.0] * 7, pa.float32()), 4),
        }
    )
    with pytest.raises(InternalError, match="NaN"):
        build(nan, schema)


def test_lookup_finds_rows_by_id() -> None:
    for id_type in ("uint", "string", "uuid"):
        schema = rich_schema(id_type)
        table = random_table(np.random.default_rng(5), 200, schema)
        reader = open_built(build(table, schema), schema)
        ids = reader.ids()
        probe = pa.concat_arrays([ids.take(pa.array([5, 0, 199])), table.column("id").chunk(0).slice(0, 0)])
        assert reader.lookup(probe).tolist() == [5, 0, 199]
        missing = {"uint": pa.array([10**15], pa.uint64()), "string": pa.array(["nope"])}.get(
            id_type, pa.array([b"\xff" * 16], pa.binary(16))
        )
        assert reader.lookup(missing).tolist() == [-1]


def test_lookup_of_every_id_and_of_absent_ones_matches_a_dict() -> None:
    """Every id of a segment, shuffled, among values below, between and above them."""
    rng = np.random.default_rng(11)
    for id_type in ("uint", "string", "uuid"):
        schema = rich_schema(id_type)
        reader = open_built(build(random_table(rng, 300, schema), schema), schema)
        present = reader.ids().to_pylist()
        others = random_ids(rng, 400, id_type).to_pylist()
        extreme = {"uint": [0, 2**64 - 1], "string": ["", "\uffff"]}.get(id_type, [b"\0" * 16, b"\xff" * 16])
        probe = [*present, *others, *extreme]
        rng.shuffle(probe)  # type: ignore[arg-type]
        where = {v: row for row, v in enumerate(present)}
        wanted = pa.array(probe, reader.ids().type)
        assert reader.lookup(wanted).tolist() == [where.get(v, -1) for v in probe]


def test_schema_evolution_on_read() -> None:
    schema = rich_schema()
    table = random_table(np.random.default_rng(2), 150, schema, tombstones=0.0)
    built = build(table, schema)
    # later: a new attribute, n dropped and re-added as string, v re-declared with other dims,
    # title analysed differently (stemming off): stale postings must not be used
    newer = apply_schema_update(
        schema,
        {"extra": "int", "n": {"drop": True}, "v": {"drop": True}},
    )
    newer = apply_schema_update(
        newer, {"n": "string", "v": "[16]f32", "title": {"type": "string", "full_text_search": True}}
    )
    reader = open_built(built, newer)
    got = reader.table()
    assert got.column("extra").null_count == 150
    assert got.column("n").type == pa.string() and got.column("n").null_count == 150
    assert got.column("v").null_count == 150
    assert reader.filter_index("n") is None
    text = reader.text("title")
    assert not text.persisted
    assert "running" in text.postings.terms or "runs" in text.postings.terms  # not stemmed now
    assert open_built(built, schema).text("title").persisted


def test_ann_disabled_attribute_is_flat() -> None:
    schema = Schema("uint", {}, "euclidean_squared")
    schema = apply_schema_update(schema, {"id": "uint", "p": {"type": "[4]f32", "ann": False}})
    n = 9000  # above the flat threshold, but ANN is off: one cluster
    rng = np.random.default_rng(0)
    table = pa.table(
        {
            "id": pa.array(np.arange(n, dtype=np.uint64)),
            SEQ_COLUMN: pa.array(np.ones(n, np.uint64)),
            OP_COLUMN: pa.array(np.zeros(n, np.uint8)),
            "p": pa.FixedSizeListArray.from_arrays(pa.array(rng.normal(size=4 * n).astype(np.float32)), 4),
        }
    )
    built = build_segment(table, schema, segment_id="s", level=1, seq_from=1, seq_to=1)
    assert built.ref.info["files"]["vec.p"]["clusters"] == 1
