"""The filter index answers exactly like a column scan: random Eq/In/range leaves (and their
negations) on every indexed type, with literals inside, between and outside the stored values."""

from __future__ import annotations

import os
import uuid
from typing import Any

import numpy as np
import pyarrow as pa

from lagoon.format.wal import OP_COLUMN
from lagoon.index.filters.filterindex import FilterIndex
from lagoon.index.filters.parse import parse_filter
from lagoon.index.sources.segment import SegmentSource
from lagoon.index.sources.table import LiveDocs
from tests.index.segment.helpers import UUIDS, build, by_id, open_built, random_table, rich_schema

OPS = ["Eq", "NotEq", "In", "NotIn", "Lt", "Lte", "Gt", "Gte"]


def pick(rng: np.random.Generator, options: list[Any]) -> Any:
    return options[int(rng.integers(0, len(options)))]


def literal(rng: np.random.Generator, attr: str, present: list[Any]) -> Any:
    choice = rng.random()
    if choice < 0.1:
        return None
    if choice < 0.6 and present:
        v = present[int(rng.integers(0, len(present)))]
    elif attr in ("n", "weird name/é"):
        v = pick(rng, [-(2**63), -51, -1, 0, 7, 49, 50, 2**63 - 1])
    elif attr == "u":
        v = pick(rng, [0, 1, 2**62, 2**63, 2**64 - 1])
    elif attr == "f":
        v = pick(rng, [-1e300, -0.05, -0.0, 0.0, 0.05, 1e300, 3])
    elif attr == "s":
        v = pick(rng, ["", "c", "c5", "c55", "d", "é"])
    elif attr == "dt":
        v = pick(rng, [0, 1_700_000_000_000, 1_700_000_000_001, 2**45])
    else:
        v = bytes(rng.integers(0, 256, 16, dtype=np.uint8)) if rng.random() < 0.5 else UUIDS[0]
    if attr == "uu" and isinstance(v, bytes):
        return str(uuid.UUID(bytes=v))
    if attr == "dt" and isinstance(v, int):
        return v
    return v


def test_random_leaves_match_scan() -> None:
    schema = rich_schema()
    rng = np.random.default_rng(42)
    table = random_table(rng, 800, schema, nulls=0.3)
    reader = open_built(build(table, schema), schema)
    live = ~reader.tombstones() & (rng.random(800) < 0.7)
    src = SegmentSource(reader, live)
    ref = LiveDocs(schema, by_id(table).filter(pa.array(live)).drop_columns(["$seq", OP_COLUMN]))
    attrs = ["n", "u", "f", "s", "dt", "uu", "weird name/é"]
    present = {}
    for a in attrs:
        values = [v for v in ref.column(a).to_pylist() if v is not None]
        if a == "dt":
            values = [int(v.timestamp() * 1000) for v in values]
        if a == "uu":
            values = [str(uuid.UUID(bytes=v)) for v in values]
        present[a] = values
    checked = 0
    for _ in range(int(os.environ.get("FLT_CASES", 600))):  # raise locally for a longer run
        a = attrs[int(rng.integers(0, len(attrs)))]
        op = OPS[int(rng.integers(0, len(OPS)))]
        if op in ("In", "NotIn"):
            value: Any = [literal(rng, a, present[a]) for _ in range(int(rng.integers(0, 5)))]
        else:
            value = literal(rng, a, present[a])
        flt = parse_filter([a, op, value], schema)
        got, want = src.filter_mask(flt), ref.filter_mask(flt)
        assert np.array_equal(got, want), (a, op, value)
        checked += 1
    assert checked > 0
    for a in attrs:
        assert isinstance(reader.filter_index(a), FilterIndex), a


def test_complement_and_direct_match() -> None:
    schema = rich_schema()
    table = random_table(np.random.default_rng(1), 300, schema, nulls=0.0, tombstones=0.0)
    reader = open_built(build(table, schema), schema)
    fi = reader.filter_index("n")
    assert fi is not None
    rows, complement = fi.match("Gte", -50)  # every row: returned as an empty complement
    assert complement and rows.size == 0
    rows, complement = fi.match("Lt", -50)
    assert not complement and rows.size == 0
    assert fi.match("Eq", "not an int") is None  # a literal of another type: scan instead
    assert fi.match("Glob", "x") is None
