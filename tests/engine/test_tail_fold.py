"""The incremental fold of the WAL tail (lagoon/engine/tail.py) against a fold from scratch.

A node folds each new entry into runs it keeps across snapshots, merges runs as they grow and
advances which segment rows the tail hides entry by entry. Random sequences of upserts, deletes,
schema changes and truncates over a segment check, at random points, that a snapshot of the
incrementally folded tail holds exactly what a tail folded from scratch over the same entries
holds, and what a plain model of the documents says (also ``lookup`` by id); and that every earlier snapshot, read
again after later entries (some for the first time), still holds what it held when it was taken.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lagoon.engine.tail import Snapshot, Tail
from lagoon.format.wal import OP_COLUMN, OP_DELETE, OP_UPSERT, WalEntry
from lagoon.index.segment.build import SEQ_COLUMN, BuiltSegment, build_segment
from lagoon.index.segment.read import SegmentReader
from lagoon.schema import Schema, apply_schema_update

Model = dict[Any, dict[str, Any]]
IDS = st.lists(st.integers(0, 23), min_size=1, max_size=8, unique=True)
OPS = st.one_of(
    st.tuples(st.just("upsert"), IDS, st.integers(0, 9)),
    st.tuples(st.just("delete"), IDS, st.just(0)),
    st.tuples(st.just("attribute"), st.just([]), st.just(0)),
    st.tuples(st.just("truncate"), st.just([]), st.just(0)),
    st.tuples(st.just("snapshot"), st.just([]), st.booleans()),  # read it now, or only at the end
)


def _key(id_type: str, i: int) -> Any:
    return i if id_type == "uint" else f"doc-{i:02d}"


def _ids(id_type: str, ids: list[int]) -> pa.Array:
    keys = [_key(id_type, i) for i in ids]
    return pa.array(keys, pa.uint64() if id_type == "uint" else pa.string())


def _row(schema: Schema, i: int, value: int) -> dict[str, Any]:
    """An upsert's attributes: every attribute of the schema, ``v`` a 2-d vector."""
    out: dict[str, Any] = {}
    for name in schema.attributes:
        out[name] = [float(i), float(value)] if name == "v" else i * 100 + value
    return out


def _docs(schema: Schema, ids: list[int], value: int | None) -> pa.Table:
    id_type = schema.id_type or "uint"
    ops = [OP_DELETE if value is None else OP_UPSERT] * len(ids)
    cols: dict[str, pa.Array] = {"id": _ids(id_type, ids), OP_COLUMN: pa.array(ops, pa.uint8())}
    if value is not None:
        rows = [_row(schema, i, value) for i in ids]
        for name, attr in schema.attributes.items():
            cols[name] = pa.array([r[name] for r in rows], attr.type.arrow_type())
    return pa.table(cols)


def _segment(schema: Schema) -> BuiltSegment:
    """Ids 0..15 (every fourth a tombstone), value 7."""
    ids = list(range(16))
    table = _docs(schema, ids, 7).set_column(
        1, OP_COLUMN, pa.array([OP_DELETE if i % 4 == 3 else OP_UPSERT for i in ids], pa.uint8())
    )
    table = table.append_column(SEQ_COLUMN, pa.array([1] * len(ids), pa.uint64()))
    return build_segment(
        table, schema, segment_id="1764000000000-00000000000000aa", level=0, seq_from=1, seq_to=1
    )


def _rows(snap: Snapshot) -> list[dict[str, Any]]:
    if not snap.exists:
        return []
    return sorted(snap.live_table().to_pylist(), key=lambda r: r["id"])


def _model_rows(model: Model) -> list[dict[str, Any]]:
    return [{"id": k, **v} for k, v in sorted(model.items())]


def _check_lookup(snap: Snapshot, model: Model, id_type: str) -> None:
    """``lookup`` of every id the ops can use (present or not) returns the model's documents."""
    keys = [_key(id_type, i) for i in range(26)]
    want = {k: {a: v for a, v in model[k].items() if v is not None} for k in keys if k in model}
    got = {k: {a: np.asarray(v).tolist() for a, v in doc.items()} for k, doc in snap.lookup(keys).items()}
    assert got == (want if snap.exists else {})


class Run:
    """Entries made from ops, applied to one tail as they come; the model follows them."""

    def __init__(self, id_type: str, segment: bool) -> None:
        self.schema = apply_schema_update(Schema(), {"id": id_type, "n": "int", "v": "[2]f32"})
        self.built = _segment(self.schema) if segment else None
        self.segments: tuple[SegmentReader, ...] = ()
        self._reopen()
        self.model: Model = {}
        if segment:
            self.model = {_key(id_type, i): _row(self.schema, i, 7) for i in range(16) if i % 4 != 3}
        self.base = Schema.from_storage(self.schema.to_storage())
        self.tail = Tail(self.base)
        self.entries: list[WalEntry] = []
        self.truncated = False
        self.attributes = 0

    def _reopen(self) -> None:
        """The segment opened for the current schema (as a node reopens it when the schema changes)."""
        if self.built is not None:
            self.segments = (SegmentReader.from_files(self.built.ref, dict(self.built.files), self.schema),)

    def entry(self, **fields: Any) -> None:
        e = WalEntry(
            seq=len(self.entries) + 1, nonce=b"n", created_at_ms=len(self.entries), writer="w", **fields
        )
        self.entries.append(e)
        self.tail.apply(e)

    def op(self, kind: str, ids: list[int], value: Any) -> None:
        id_type = self.schema.id_type or "uint"
        if kind == "upsert":
            self.entry(docs=_docs(self.schema, ids, value))
            self.model.update({_key(id_type, i): _row(self.schema, i, value) for i in ids})
        elif kind == "delete":
            self.entry(docs=_docs(self.schema, ids, None))
            for i in ids:
                self.model.pop(_key(id_type, i), None)
        elif kind == "attribute":  # a new attribute: absent (null) in every earlier document
            self.attributes += 1
            name = f"a{self.attributes}"
            self.schema = apply_schema_update(self.schema, {name: "int"})
            self.entry(schema=self.schema.to_storage())
            self._reopen()
            for doc in self.model.values():
                doc[name] = None
        elif kind == "truncate":  # the namespace deleted and written again with the same schema
            self.entry(truncate=True, schema=self.schema.to_storage())
            self.truncated, self.model = True, {}

    def snapshot(self, tail: Tail) -> Snapshot:
        return tail.snapshot(manifest_version=1, indexed_through=0, segments=self.segments)

    def from_scratch(self) -> Snapshot:
        tail = Tail(self.base)
        for e in self.entries:
            tail.apply(e)
        return self.snapshot(tail)


def _check(id_type: str, segment: bool, ops: list[tuple[str, list[int], Any]]) -> None:
    run = Run(id_type, segment)
    later: list[tuple[Snapshot, list[dict[str, Any]]]] = []
    for kind, ids, value in [*ops, ("snapshot", [], True)]:
        if kind != "snapshot":
            run.op(kind, ids, value)
            continue
        snap, expected = run.snapshot(run.tail), _model_rows(run.model)
        if value:
            assert _rows(snap) == expected
            _check_lookup(snap, run.model, id_type)
            assert _rows(run.from_scratch()) == expected
        later.append((snap, expected))
    for snap, expected in later:
        assert _rows(snap) == expected
    _check_lookup(later[-1][0], run.model, id_type)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["uint", "string"]), st.booleans(), st.lists(OPS, max_size=40))
def test_incremental_fold_equals_fold_from_scratch(id_type: str, segment: bool, ops: list[Any]) -> None:
    _check(id_type, segment, ops)


def test_long_tail_merges_runs_and_keeps_every_update() -> None:
    """Hundreds of entries, each overwriting earlier ids: many run merges; the runs stay few."""
    rng = np.random.default_rng(3)
    ops: list[tuple[str, list[int], Any]] = []
    for k in range(300):
        ids = sorted({int(x) for x in rng.integers(0, 24, 5)})
        ops.append(("delete" if k % 7 == 0 else "upsert", ids, k % 10))
        if k % 50 == 0:
            ops.append(("snapshot", [], k % 100 == 0))
    _check("uint", True, ops)
    run = Run("uint", False)
    for k in range(1000):
        run.op("upsert", sorted({k, (k * 7) % 1000}), k % 10)
        run.snapshot(run.tail)
    assert len(run.snapshot(run.tail).runs) <= 11  # live sizes at least halve from run to run


def test_commits_that_leave_no_live_rows_do_not_pile_up_runs() -> None:
    """Delete-only commits, a snapshot after each: empty runs merge too, so the runs stay few."""
    run = Run("uint", False)
    run.op("upsert", [1, 2, 3], 1)
    for k in range(2000):
        run.op("delete", [100 + k], 0)
        run.snapshot(run.tail)
    assert len(run.tail._runs) <= 12
    assert _rows(run.snapshot(run.tail)) == _model_rows(run.model)
