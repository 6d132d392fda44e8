"""Runs of the unindexed WAL tail: which rows of which entries are live, as numpy arrays.

A ``Run`` covers chunks (decoded WAL entries) ``lo..hi`` of a ``Tail`` (engine/tail.py). It holds,
per row it keeps, the chunk and row the row comes from and a uint64 *key* of its id, sorted once
(``keys`` ascending, ``by_key`` the run row of each), plus a ``live`` flag a newer entry clears.
Nothing in it is per-row Python:

- a new run of chunks is one stable argsort of their keys: the last row of each key is the id's
  newest version (``new_run``); a newer run hides the rows of older runs holding its ids with one
  binary search per run (``Run.find``);
- merging two runs concatenates and sorts their live rows' keys (numpy's stable sort finds the
  two ascending runs: linear), copying no document (``merge_runs``);
- the documents themselves are gathered into one table (``Run.base``, a ``LiveDocs``) only when a
  query, a lookup or a conditional write first needs them: one ``take`` over the chunks' tables,
  or over the two merged runs' tables when both were built. A write-only stream never copies a
  document into a run.

Keys: a ``uint`` id is its own key. A string or uuid id gets a dense code from ``DictKeys`` (a
dictionary of the tail's ids, one lookup per row: still exact; a hashed key would need collision
handling that this module does not have).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pyarrow as pa

from lagoon.format.wal import OP_COLUMN
from lagoon.index.sources.masked import MaskedSource
from lagoon.index.sources.table import LiveDocs
from lagoon.schema import Schema, id_arrow_type

ABSENT = np.uint64(2**64 - 1)  # the key of an id the keys have never seen (DictKeys: no code is that)


@dataclass(eq=False)
class Chunk:
    """One WAL entry's documents as the tail holds them."""

    seq: int
    table: pa.Table  # id, $op, attributes (as written in the entry)
    upsert: np.ndarray  # bool per row: the row is an upsert ($op), not a delete
    _conformed: tuple[Schema, pa.Table] | None = field(default=None, repr=False)

    def conformed(self, schema: Schema) -> pa.Table:
        """The rows as columns id + every attribute of ``schema`` (the last one asked for kept)."""
        got = self._conformed
        if got is None or (got[0] is not schema and got[0] != schema):
            got = self._conformed = (schema, conform(self.table.drop_columns([OP_COLUMN]), schema))
        return got[1]


class Keys(Protocol):
    def of(self, ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """uint64 key per id (new ids get one)."""
        ...

    def known(self, ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """uint64 key per id; ``ABSENT`` for an id never given one."""
        ...


class UintKeys:
    """A uint64 id is its own key."""

    def of(self, ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
        if ids.type != pa.uint64():
            ids = ids.cast(pa.uint64())
        return np.asarray(ids.to_numpy(), dtype=np.uint64)

    def known(self, ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
        return self.of(ids)


class DictKeys:
    """Dense codes for string and uuid ids, in order of first sight (a code never changes)."""

    def __init__(self, arrow_type: pa.DataType) -> None:
        self.type = arrow_type
        self._codes: dict[object, int] = {}
        self._lock = threading.Lock()  # codes are given on the event loop, read by query threads

    def _values(self, ids: pa.Array | pa.ChunkedArray) -> list[object]:
        values: list[object] = (ids if ids.type == self.type else ids.cast(self.type)).to_pylist()
        return values

    def of(self, ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
        values = self._values(ids)
        codes = self._codes
        with self._lock:
            new = [v for v in dict.fromkeys(values) if v not in codes]
            codes.update(zip(new, range(len(codes), len(codes) + len(new)), strict=True))
        return np.fromiter(map(codes.__getitem__, values), dtype=np.uint64, count=len(values))

    def known(self, ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
        get, absent = self._codes.get, int(ABSENT)
        values = self._values(ids)
        return np.fromiter((get(v, absent) for v in values), dtype=np.uint64, count=len(values))


def keys_for(arrow_type: pa.DataType) -> Keys:
    return UintKeys() if pa.types.is_uint64(arrow_type) else DictKeys(arrow_type)


class RunView:
    """A run's live rows as one snapshot holds them (``live`` never changes); its document
    source is built on first use and shared by every snapshot holding the view."""

    __slots__ = ("_lock", "_part", "live", "run", "size")

    def __init__(self, run: Run) -> None:
        self.run = run
        self.live = run.live.copy()
        self.live.setflags(write=False)
        self.size = run.size
        self._part: MaskedSource | None = None
        self._lock = threading.Lock()

    def part(self) -> MaskedSource:
        with self._lock:
            if self._part is None:
                self._part = MaskedSource(self.run.base(), self.live)
            return self._part


class Run:
    """Rows ``chunk[i]``, ``row[i]`` of the tail's chunks ``lo..hi`` (ascending by chunk, then
    row), each the newest version of its id and an upsert when the run was made; ``keys`` are
    their ids' keys ascending and ``by_key`` the run row of each. A newer entry writing one of
    those ids clears the row in ``live``; the row is dropped when the run is merged."""

    __slots__ = (
        "_base",
        "_lock",
        "_parents",
        "_view",
        "by_key",
        "chunk",
        "chunks",
        "hi",
        "keys",
        "live",
        "lo",
        "row",
        "schema",
        "size",
    )

    def __init__(
        self,
        chunks: Sequence[Chunk],
        schema: Schema,
        lo: int,
        hi: int,
        chunk: np.ndarray,
        row: np.ndarray,
        keys: np.ndarray,
        by_key: np.ndarray,
        parents: tuple[Run, Run, np.ndarray] | None = None,
    ) -> None:
        self.chunks, self.schema, self.lo, self.hi = chunks, schema, lo, hi
        self.chunk, self.row, self.keys, self.by_key = chunk, row, keys, by_key
        self.live = np.ones(chunk.shape[0], dtype=bool)
        self.size = int(chunk.shape[0])  # rows still live
        # (older, newer, rows of their tables concatenated): both built when this run was made
        self._parents = parents
        self._base: LiveDocs | None = None
        self._view: RunView | None = None
        self._lock = threading.Lock()

    @property
    def num_rows(self) -> int:
        return int(self.chunk.shape[0])

    def find(self, wanted: np.ndarray) -> np.ndarray:
        """Rows holding the ids of keys ``wanted`` (absent ones left out; hidden rows included):
        one binary search."""
        keys = self.keys
        if keys.shape[0] == 0 or wanted.shape[0] == 0:
            return np.zeros(0, dtype=np.int64)
        at = np.searchsorted(keys, wanted)
        inside = at < keys.shape[0]
        at = at[inside]
        rows: np.ndarray = self.by_key[at[keys[at] == wanted[inside]]]
        return rows

    def hide(self, rows: np.ndarray) -> None:
        """Newer entries wrote the ids of ``rows``: they are no longer live."""
        if rows.shape[0] == 0:
            return
        rows = rows[self.live[rows]]
        if rows.shape[0]:
            self.live[rows] = False
            self.size = int(np.count_nonzero(self.live))
            self._view = None

    def view(self) -> RunView:
        """The live rows now, for a snapshot (the same object while nothing is hidden)."""
        if self._view is None:
            self._view = RunView(self)
        return self._view

    def rebased(self, schema: Schema) -> Run:
        """The same rows for a new schema (their documents gathered again, conformed to it)."""
        out = Run(self.chunks, schema, self.lo, self.hi, self.chunk, self.row, self.keys, self.by_key)
        out.live, out.size = self.live.copy(), self.size
        return out

    def base(self) -> LiveDocs:
        """Every row of the run as one table (conformed to the run's schema), built once."""
        with self._lock:
            if self._base is None:
                self._base = LiveDocs(self.schema, self._gather())
                self._parents = None
            return self._base

    def built(self) -> bool:
        return self._base is not None

    def _gather(self) -> pa.Table:
        parents = self._parents
        if parents is not None:
            older, newer, rows = parents
            both = pa.concat_tables([older.base().table, newer.base().table])
            if rows.shape[0] == both.num_rows:  # nothing hidden: one contiguous copy
                return both.combine_chunks()
            return both.take(pa.array(rows))
        if self.num_rows == 0:
            return conform(
                pa.table({"id": pa.array([], id_arrow_type(self.schema.id_type or "uint"))}), self.schema
            )
        starts = np.flatnonzero(np.diff(self.chunk, prepend=-1))  # first run row of each chunk it holds
        held = self.chunk[starts]
        tables = [self.chunks[int(c)].conformed(self.schema) for c in held]
        sizes = np.array([t.num_rows for t in tables], dtype=np.int64)
        if int(sizes.sum()) == self.num_rows:  # every row of those chunks
            return tables[0] if len(tables) == 1 else pa.concat_tables(tables).combine_chunks()
        offset = np.cumsum(sizes) - sizes
        counts = np.diff(np.append(starts, self.num_rows))
        rows = np.repeat(offset, counts) + self.row
        return pa.concat_tables(tables).take(pa.array(rows))


def new_run(
    chunks: Sequence[Chunk], schema: Schema, lo: int, hi: int, keys: Sequence[np.ndarray]
) -> tuple[Run, np.ndarray]:
    """A run of chunks ``lo..hi`` (``keys``: each chunk's id keys): the rows that are their id's
    newest and an upsert. Also returns the keys of every id the chunks write (upsert or delete),
    ascending: the rows of older runs they replace."""
    sizes = np.array([k.shape[0] for k in keys], dtype=np.int64)
    allkeys = np.concatenate(keys) if len(keys) > 1 else keys[0]
    upsert = np.concatenate([chunks[c].upsert for c in range(lo, hi + 1)]) if hi > lo else chunks[lo].upsert
    order = np.argsort(allkeys, kind="stable")
    ordered = allkeys[order]
    last = np.ones(ordered.shape[0], dtype=bool)
    last[:-1] = ordered[1:] != ordered[:-1]  # the last (newest) row of each key
    newest, written = order[last], ordered[last]
    kept = newest[upsert[newest]]  # ascending by key
    positions = np.sort(kept)
    by_key = np.searchsorted(positions, kept)
    starts = np.cumsum(sizes) - sizes
    chunk = np.searchsorted(starts, positions, side="right") - 1
    row = positions - starts[chunk]
    run = Run(chunks, schema, lo, hi, chunk + lo, row, allkeys[kept], by_key)
    return run, written


def merge_runs(older: Run, newer: Run) -> Run:
    """One run of the live rows of two adjacent runs (the rows hidden meanwhile are dropped).
    Copies no document: when both runs' tables were built, the merged one is gathered from them
    on first use, else from the chunks."""
    lo_live, hi_live = older.live, newer.live
    chunk = np.concatenate([older.chunk[lo_live], newer.chunk[hi_live]])
    row = np.concatenate([older.row[lo_live], newer.row[hi_live]])
    parts_keys, parts_rows = [], []
    base = 0
    for run, live in ((older, lo_live), (newer, hi_live)):
        at = live[run.by_key]  # key order, live only
        renumber = np.cumsum(live) - 1 + base
        parts_keys.append(run.keys[at])
        parts_rows.append(renumber[run.by_key[at]])
        base += run.size
    keys = np.concatenate(parts_keys)
    rows = np.concatenate(parts_rows)
    order = np.argsort(keys, kind="stable")  # two ascending runs: a linear merge
    parents = None
    if older.built() and newer.built() and older.schema == newer.schema:
        taken = np.concatenate([np.flatnonzero(lo_live), older.num_rows + np.flatnonzero(hi_live)])
        parents = (older, newer, taken)
    return Run(older.chunks, older.schema, older.lo, newer.hi, chunk, row, keys[order], rows[order], parents)


_fields_lock = threading.Lock()
_fields: tuple[Schema, pa.Schema] | None = None  # the last schema's Arrow fields (a tail keeps one)


def arrow_schema(schema: Schema) -> pa.Schema:
    """id + every schema attribute, as Arrow fields."""
    global _fields
    with _fields_lock:
        got = _fields
        if got is None or got[0] is not schema:
            fields = [pa.field("id", id_arrow_type(schema.id_type or "uint"))] + [
                pa.field(n, a.type.arrow_type()) for n, a in schema.attributes.items()
            ]
            got = _fields = (schema, pa.schema(fields))
        return got[1]


def conform(table: pa.Table, schema: Schema) -> pa.Table:
    """Columns id + every schema attribute, typed as the schema says (missing = null)."""
    target = arrow_schema(schema)
    if table.schema.equals(target):
        return table
    names = set(table.column_names)
    cols = []
    for f in target:
        if f.name in names:
            col = table.column(f.name)
            cols.append(col if col.type == f.type else col.cast(f.type))
        else:
            cols.append(pa.nulls(table.num_rows, f.type))
    return pa.Table.from_arrays(cols, schema=target)
