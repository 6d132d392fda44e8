"""The tail's runs (lagoon/engine/runs.py) against a dict of the documents.

Random entries (upserts and deletes, ids repeated inside an entry too, uint and string ids) are
applied to a ``Tail``, with snapshots after one entry or after several (a catch-up folds many at
once), some read at once (their documents gathered, so later merges gather from them), some
only later. Every snapshot holds exactly the model's documents as of its entries, each id in one
run at most; ``lookup`` finds each id's newest version; each run's keys are ascending and say
which row holds which id.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lagoon.engine.runs import DictKeys, UintKeys, merge_runs, new_run
from lagoon.engine.tail import Snapshot, Tail
from lagoon.format.wal import OP_COLUMN, OP_DELETE, OP_UPSERT, WalEntry
from lagoon.schema import Schema, apply_schema_update

ROW = st.tuples(st.integers(0, 30), st.booleans())  # (id, upsert?)
ENTRY = st.lists(ROW, min_size=1, max_size=12)  # ids may repeat: the last row of an id wins
STEP = st.tuples(ENTRY, st.sampled_from(["none", "snapshot", "read"]))


def _key(id_type: str, i: int) -> Any:
    return i if id_type == "uint" else f"doc-{i:02d}"


def _entry(schema: Schema, seq: int, rows: list[tuple[int, bool]]) -> WalEntry:
    id_type = schema.id_type or "uint"
    ids = pa.array([_key(id_type, i) for i, _ in rows], pa.uint64() if id_type == "uint" else pa.string())
    docs = pa.table(
        {
            "id": ids,
            OP_COLUMN: pa.array([OP_UPSERT if up else OP_DELETE for _, up in rows], pa.uint8()),
            "n": pa.array([seq * 100 + i if up else None for i, up in rows], pa.int64()),
        }
    )
    return WalEntry(seq=seq, nonce=b"n", created_at_ms=seq, writer="w", docs=docs)


def _held(snap: Snapshot) -> dict[Any, int]:
    """id -> n of every live row of the snapshot's runs (an id twice fails)."""
    out: dict[Any, int] = {}
    for view in snap.runs:
        table = view.run.base().table
        for ident, n, live in zip(
            table.column("id").to_pylist(), table.column("n").to_pylist(), view.live, strict=True
        ):
            if live:
                assert ident not in out, f"id {ident} live in two runs"
                out[ident] = n
    return out


def _check_keys(snap: Snapshot) -> None:
    """Each run's keys ascend and name the key of the row ``by_key`` points at."""
    assert snap.keys is not None
    for view in snap.runs:
        run = view.run
        assert np.all(run.keys[1:] > run.keys[:-1])
        assert sorted(run.by_key.tolist()) == list(range(run.num_rows))
        ids = run.base().table.column("id")
        assert np.array_equal(snap.keys.known(ids)[run.by_key], run.keys)


def _check(id_type: str, steps: list[tuple[list[tuple[int, bool]], str]]) -> None:
    schema = apply_schema_update(Schema(), {"id": id_type, "n": "int"})
    tail = Tail(schema)
    model: dict[Any, int] = {}
    later: list[tuple[Snapshot, dict[Any, int]]] = []
    for seq, (rows, when) in enumerate(steps, start=1):
        tail.apply(_entry(schema, seq, rows))
        for i, up in rows:
            if up:
                model[_key(id_type, i)] = seq * 100 + i
            else:
                model.pop(_key(id_type, i), None)
        if when == "none" and seq < len(steps):
            continue
        snap = tail.snapshot(manifest_version=1, indexed_through=0)
        if when == "read":
            assert _held(snap) == model
            _check_keys(snap)
        later.append((snap, dict(model)))
    for snap, expected in later:
        assert _held(snap) == expected
        wanted = [_key(id_type, i) for i in range(32)]
        got = {k: d["n"] for k, d in snap.lookup(wanted).items()}
        assert got == expected


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["uint", "string"]), st.lists(STEP, min_size=1, max_size=40))
def test_runs_hold_the_newest_upsert_of_every_id(id_type: str, steps: list[Any]) -> None:
    _check(id_type, steps)


def test_an_id_written_twice_in_one_entry_keeps_its_last_row() -> None:
    _check("uint", [([(1, True), (2, True), (1, False), (2, True), (3, False), (3, True)], "read")])
    _check("string", [([(5, True)], "read"), ([(5, False), (5, True), (6, True), (6, False)], "read")])


def test_merged_runs_gathered_from_built_runs_or_from_chunks_agree() -> None:
    """Two runs merged after their documents were gathered (the merge gathers from them) or
    before (it gathers from the chunks): the same table, the hidden row dropped."""
    schema = apply_schema_update(Schema(), {"id": "uint", "n": "int"})
    tables = []
    for built in (True, False):
        tail = Tail(schema)
        tail.apply(_entry(schema, 1, [(1, True), (2, True), (3, True), (4, True)]))
        older = tail.snapshot(manifest_version=1, indexed_through=0).runs[0].run
        keys = UintKeys()
        chunk = tail.chunks
        tail.apply(_entry(schema, 2, [(2, True), (9, True)]))
        newer, written = new_run(chunk, schema, 1, 1, [keys.of(chunk[1].table.column("id"))])
        older.hide(older.find(written))
        if built:
            older.base(), newer.base()
        merged = merge_runs(older, newer)
        tables.append(merged.base().table.to_pylist())
    assert tables[0] == tables[1]
    assert [r["id"] for r in tables[0]] == [1, 3, 4, 2, 9]
    assert [r["n"] for r in tables[0]] == [101, 103, 104, 202, 209]


def test_dict_keys_are_stable_and_unknown_ids_absent() -> None:
    keys = DictKeys(pa.string())
    first = keys.of(pa.array(["a", "b", "a"]))
    assert first.tolist() == [0, 1, 0]
    assert keys.of(pa.array(["c", "b"])).tolist() == [2, 1]
    known = keys.known(pa.array(["b", "zz"]))
    assert known[0] == 1 and known[1] == np.uint64(2**64 - 1)


def test_lookup_gives_vectors_as_float32_arrays_and_leaves_absent_ones_out() -> None:
    """Vectors of f32 and i8 attributes, with and without absent (null) ones in the column."""
    schema = apply_schema_update(Schema(), {"id": "uint", "v": "[2]f32", "q": "[3]i8", "n": "int"})
    tail = Tail(schema)
    for seq, v in ((1, [[1.5, -2.0], None, [0.25, 4.0]]), (2, [[7.0, 8.0], [9.0, -0.5], [1.0, 2.0]])):
        ids = [10 * seq, 10 * seq + 1, 10 * seq + 2]
        docs = pa.table(
            {
                "id": pa.array(ids, pa.uint64()),
                OP_COLUMN: pa.array([OP_UPSERT] * 3, pa.uint8()),
                "v": pa.array(v, pa.list_(pa.float32(), 2)),
                "q": pa.array([[1, -2, 3]] * 3, pa.list_(pa.int8(), 3)),
                "n": pa.array([seq, None, seq], pa.int64()),
            }
        )
        tail.apply(WalEntry(seq=seq, nonce=b"n", created_at_ms=seq, writer="w", docs=docs))
    snap = tail.snapshot(manifest_version=1, indexed_through=0)
    got = snap.lookup([10, 11, 12, 20, 21, 99])
    assert sorted(got) == [10, 11, 12, 20, 21]
    whole = snap.lookup([20, 21, 22])  # no null vector among them: one matrix per column
    assert {k: np.asarray(d["v"]).tolist() for k, d in whole.items()} == {
        20: [7.0, 8.0],
        21: [9.0, -0.5],
        22: [1.0, 2.0],
    }
    for doc in [*got.values(), *whole.values()]:
        for name in ("v", "q"):
            if name in doc:
                assert isinstance(doc[name], np.ndarray) and doc[name].dtype == np.float32
    plain = {k: {a: np.asarray(x).tolist() for a, x in d.items()} for k, d in got.items()}
    assert plain[10] == {"v": [1.5, -2.0], "q": [1.0, -2.0, 3.0], "n": 1}
    assert plain[11] == {"q": [1.0, -2.0, 3.0]}
    assert plain[21] == {"v": [9.0, -0.5], "q": [1.0, -2.0, 3.0]}
