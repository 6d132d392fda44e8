"""The unindexed WAL tail folded into live documents, and the immutable snapshots queries read.

``Tail`` is the mutable fold owned by one namespace's state on one node: entries are applied in
seq order; a newer row for an id hides every older one (upsert or delete); a truncating entry
(namespace deleted) voids everything before it. ``snapshot()`` captures an immutable ``Snapshot``,
so queries running while new entries arrive keep a consistent view.

The fold is incremental: a commit or a strong read after one costs what the new entries hold
(amortised), not what the tail holds (``bench/tail_bench.py``).

- ``apply`` indexes the entry's ids (id -> newest chunk and row) and clears the rows they replace
  in the runs (``Run.hide``: one vectorised binary search per run over its (chunk, row) keys,
  not a Python call per replaced row).
- ``snapshot`` folds the chunks applied since the last snapshot into one new *run*, a table of
  the rows that are their id's newest and an upsert, then merges the newest runs while the older
  of the last two holds at most twice the newer's live rows, dropping the rows hidden meanwhile.
  Live sizes at least halve from run to run, so there are O(log n) runs and a row is copied
  O(log n) times over its life in the tail. A run's table never changes, so what queries derive
  from it (vector matrices, postings, id order) is built once for every later snapshot; a
  snapshot holds each run's rows live at that moment (``Run.part``: copied only when a row was
  hidden since the previous snapshot).
- Which segment rows the tail hides (``SegmentShadow``) is advanced by the ids of the new entries
  only (``SegmentReader.lookup``), on the first source built after them.
- Rebuilt from the entries only when the tail's base changes: a new schema refolds every chunk
  (the runs' tables are conformed to the schema), and a new manifest, a truncate or a bucket that
  went back starts a new ``Tail`` (lagoon/engine/state.py).

Segments (from the manifest) come first in a snapshot's source, runs after; ``CompositeSource``
merges them (lagoon/index/sources/composite.py). tests/engine/test_tail_fold.py checks the
incremental fold against a fold from scratch over random entry sequences.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lagoon.engine.segment_handle import SegmentHandle
from lagoon.errors import InternalError
from lagoon.format.manifest import SegmentRef
from lagoon.format.schema_patch import schema_after
from lagoon.format.wal import OP_COLUMN, OP_UPSERT, WalEntry
from lagoon.index.filters.kernels import search_sorted, single
from lagoon.index.segment.read import SegmentReader
from lagoon.index.sources.composite import CompositeSource
from lagoon.index.sources.masked import MaskedSource
from lagoon.index.sources.protocol import DocSource
from lagoon.index.sources.segment import SegmentSource
from lagoon.index.sources.table import LiveDocs
from lagoon.index.vector.plan import DEFAULT_RECALL_TARGET
from lagoon.schema import Schema, id_arrow_type
from lagoon.values import Id, canonical_from_arrow

Doc = dict[str, Any]


class SegmentLike(Protocol):
    ref: SegmentRef

    def ids(self) -> pa.Array: ...

    def tombstones(self) -> np.ndarray: ...

    def lookup(self, ids: pa.Array | pa.ChunkedArray) -> np.ndarray: ...


@dataclass(frozen=True, slots=True, eq=False)
class Chunk:
    seq: int
    table: pa.Table  # id, $op, attributes (as written in the entry)
    ids: list[Id]
    upsert: np.ndarray  # bool per row: the row is an upsert ($op), not a delete


class Run:
    """Chunks ``lo..hi`` folded into one table, a part of every snapshot's source.

    ``base`` holds the rows that were the newest version of their id, and an upsert, when the run
    was built (chunk order, then row order); ``kept[c - lo]`` says which rows of chunk c those
    are. A newer entry that writes or deletes one of those ids clears the row in ``live``; the
    row is dropped when the run is merged. ``base`` never changes, so what queries derive from it
    (vector matrices, postings, id order) is built once and kept for every later snapshot."""

    __slots__ = ("_by_id", "_part", "_row_keys", "base", "hi", "kept", "live", "lo", "size", "starts")

    def __init__(self, lo: int, hi: int, base: LiveDocs, kept: list[np.ndarray]) -> None:
        self.lo, self.hi, self.base, self.kept = lo, hi, base, kept
        self.starts = np.cumsum([0, *(k.shape[0] for k in kept)], dtype=np.int64)
        self.live = np.ones(base.num_docs, dtype=bool)
        self.size = base.num_docs  # rows still live
        self._part: MaskedSource | None = None
        self._by_id: tuple[np.ndarray, pa.Array] | None = None  # id order, ids in that order
        self._row_keys: np.ndarray | None = None

    def find(self, wanted: pa.Array) -> np.ndarray:
        """Rows of ``base`` holding the ``wanted`` ids (absent ones left out): a binary search
        over the ids sorted once per run, not a scan of the run."""
        if self._by_id is None:
            order = self.base.id_order()
            self._by_id = order, single(self.base.column("id")).take(pa.array(order))
        order, ids = self._by_id
        at = search_sorted(ids, wanted.cast(ids.type) if wanted.type != ids.type else wanted)
        return np.asarray(order[at[at >= 0]], dtype=np.int64)

    def hide(self, chunks: np.ndarray, rows: np.ndarray) -> None:
        """Newer entries wrote the ids of rows ``rows`` of chunks ``chunks`` (pairwise): those
        rows are no longer live. Pairs the run does not hold (a delete, or a row hidden before
        the run was built) are ignored. One binary search over the run's (chunk, row) keys."""
        keys = self._keys()
        wanted = (chunks.astype(np.int64) << 32) | rows.astype(np.int64)
        at = np.searchsorted(keys, wanted)
        held = at < keys.shape[0]
        at = at[held]
        at = at[keys[at] == wanted[held]]
        at = np.unique(at[self.live[at]])
        if at.shape[0]:
            self.live[at] = False
            self.size -= int(at.shape[0])
            self._part = None

    def _keys(self) -> np.ndarray:
        """``chunk << 32 | row`` of every row of ``base``, in its order (ascending: chunk order,
        then row order), built once per run."""
        if self._row_keys is None:
            parts = [(np.int64(self.lo + i) << 32) | k.astype(np.int64) for i, k in enumerate(self.kept)]
            self._row_keys = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        return self._row_keys

    def part(self) -> MaskedSource:
        """The live rows as a document source; the same object while nothing is hidden (the
        source copies ``live``, so later hides never change what a snapshot holds)."""
        if self._part is None:
            self._part = MaskedSource(self.base, self.live)
        return self._part

    def live_table(self) -> pa.Table:
        table = self.base.table
        return table if self.size == table.num_rows else table.filter(pa.array(self.live))

    def live_kept(self) -> list[np.ndarray]:
        return [k[self.live[self.starts[i] : self.starts[i + 1]]] for i, k in enumerate(self.kept)]


def merge_runs(older: Run, newer: Run, schema: Schema) -> Run:
    """One run of the live rows of two adjacent runs (the rows hidden meanwhile are dropped)."""
    table = pa.concat_tables([older.live_table(), newer.live_table()]).combine_chunks()
    return Run(older.lo, newer.hi, LiveDocs(schema, table), older.live_kept() + newer.live_kept())


class SegmentShadow:
    """Which rows of one manifest's segments a snapshot serves: not tombstones, not shadowed by a
    newer segment, and not written again (upsert or delete) by an entry of the tail.

    The segments' part is computed once; the tail's part is advanced entry by entry, so a strong
    read after a commit looks up only the new entry's ids in the segments (``SegmentReader.lookup``)
    instead of matching every segment row against the whole tail. A snapshot older than what was
    advanced (rare: its source was built late) computes its own from the segments' part."""

    def __init__(self, segments: tuple[SegmentLike, ...]) -> None:
        self.segments = segments
        self._lock = threading.Lock()
        self._base: list[np.ndarray] | None = None
        self._live: list[np.ndarray] = []
        self._through: tuple[Chunk, ...] = ()  # the chunks whose ids are hidden in _live

    def masks(self, chunks: tuple[Chunk, ...]) -> list[np.ndarray]:
        """Per segment (oldest first): bool per row, live in the snapshot of ``chunks``."""
        with self._lock:
            if self._base is None:
                self._base = _segment_masks(self.segments)
                self._live = self._base
            done = len(self._through)  # chunks only grow (a truncate starts a new shadow)
            if len(chunks) < done or (done and chunks[done - 1] is not self._through[-1]):
                return _hide_rows_of(self.segments, self._base, chunks)
            self._live = _hide_rows_of(self.segments, self._live, chunks[done:])
            self._through = chunks
            return list(self._live)


def _segment_masks(segments: tuple[SegmentLike, ...]) -> list[np.ndarray]:
    """Per segment: rows that are not tombstones and not shadowed by a newer segment."""
    masks: list[np.ndarray] = []
    newer: list[pa.Array] = []
    for seg in reversed(segments):
        ids = _id_array(seg.ids())
        live = ~np.asarray(seg.tombstones(), dtype=bool)
        for other in newer:
            hit = pc.is_in(ids, value_set=other).to_numpy(zero_copy_only=False)
            live &= ~np.asarray(hit, dtype=bool)
        masks.append(live)
        newer.append(ids)
    masks.reverse()
    return masks


def _hide_rows_of(
    segments: tuple[SegmentLike, ...], masks: list[np.ndarray], chunks: Sequence[Chunk]
) -> list[np.ndarray]:
    """``masks`` with the segment rows of every id the chunks hold cleared (new arrays where
    anything changes: the old ones may be in use)."""
    if not chunks or not segments:
        return masks
    ids = pa.chunked_array([a for c in chunks for a in c.table.column("id").chunks])
    out = []
    for seg, live in zip(segments, masks, strict=True):
        rows = seg.lookup(ids)
        rows = rows[rows >= 0]
        if rows.shape[0] and live[rows].any():
            live = live.copy()
            live[rows] = False
        out.append(live)
    return out


class Tail:
    def __init__(self, schema: Schema | None = None, settings: dict[str, Any] | None = None) -> None:
        self.schema = schema or Schema()
        self.settings: dict[str, Any] = dict(settings or {})
        self.chunks: list[Chunk] = []
        self.index: dict[Id, tuple[int, int]] = {}  # id -> (chunk, row) of its newest row
        self.head = 0
        self.created_at_ms: int | None = None
        self.updated_at_ms: int | None = None
        self.unindexed_bytes = 0
        self.unindexed_rows = 0
        self.oldest_unindexed_ms: int | None = None
        self.truncated_at: int | None = None  # seq of a truncate inside the tail, if any
        # created_at_ms of a branch creation's fence (wal/1 of a new branch) whose manifest this
        # view does not have yet: writers must not build on it (docs/rfcs/0007-branches.md).
        self.branch_fence_ms: int | None = None
        self._runs: list[Run] = []  # oldest first; together they cover chunks[:_built]
        self._built = 0
        self._runs_schema = self.schema  # the schema the runs' tables are conformed to
        self._shadow = SegmentShadow(())

    def apply(self, entry: WalEntry, encoded_size: int = 0) -> None:
        if entry.truncate:
            self.chunks, self.index = [], {}
            self._runs, self._built = [], 0
            self._shadow = SegmentShadow(())
            self.schema = Schema()
            self.settings = {}
            self.created_at_ms = None
            self.truncated_at = entry.seq
            self.branch_fence_ms = None
        if entry.branch is not None:
            self.branch_fence_ms = entry.created_at_ms
        after = schema_after(entry.schema, entry.schema_patch, self.schema)
        if after is not None:
            self.schema = after
        if entry.settings is not None:
            self.settings = dict(entry.settings)
        docs = entry.docs
        if docs is not None and docs.num_rows:
            self._add_chunk(entry.seq, docs)
        self.head = entry.seq
        self.updated_at_ms = entry.created_at_ms
        if self.created_at_ms is None and self.schema.id_type is not None:
            self.created_at_ms = entry.created_at_ms
        self.unindexed_bytes += encoded_size
        self.unindexed_rows += entry.num_docs
        if self.oldest_unindexed_ms is None:
            self.oldest_unindexed_ms = entry.created_at_ms

    def _add_chunk(self, seq: int, docs: pa.Table) -> None:
        """Index the entry's rows (newest row per id) and hide the rows they replace in the runs
        (rows of chunks not folded into a run yet are chosen when they are)."""
        ids = docs.column("id").to_pylist()
        ops = docs.column(OP_COLUMN).to_numpy(zero_copy_only=False)
        ci, built = len(self.chunks), self._built
        replaced = [prev for prev in map(self.index.get, ids) if prev is not None and prev[0] < built]
        self.index.update(zip(ids, zip(repeat(ci), range(len(ids))), strict=True))  # last row of an id wins
        if replaced:
            self._hide(np.array(replaced, dtype=np.int64).reshape(-1, 2))
        self.chunks.append(Chunk(seq, docs, ids, np.asarray(ops == OP_UPSERT)))

    def _hide(self, pairs: np.ndarray) -> None:
        """Hide rows ``pairs`` ((chunk, row) of folded chunks) in the runs holding them."""
        los = np.fromiter((run.lo for run in self._runs), dtype=np.int64, count=len(self._runs))
        owner = np.searchsorted(los, pairs[:, 0], side="right") - 1
        for r in np.unique(owner):
            mine = pairs[owner == r]
            self._runs[int(r)].hide(mine[:, 0], mine[:, 1])

    # -- runs ------------------------------------------------------------------------------------

    def _fold(self) -> None:
        """Fold the chunks added since the last snapshot into one new run, then merge the newest
        runs while the older of the last two is at most twice the newer's size: live sizes at
        least halve from run to run (O(log n) runs), and a row is copied O(log n) times over its
        life in the tail, so a commit costs its own rows, amortised, not the tail's. A new schema
        refolds every chunk (the runs' tables are conformed to it)."""
        if self._runs_schema != self.schema:
            self._runs, self._built, self._runs_schema = [], 0, self.schema
        if self._built == len(self.chunks):
            return
        self._runs.append(self._new_run(self._built, len(self.chunks) - 1))
        self._built = len(self.chunks)
        while len(self._runs) >= 2 and self._runs[-2].size <= 2 * self._runs[-1].size:
            newer = self._runs.pop()
            self._runs[-1] = merge_runs(self._runs[-1], newer, self.schema)

    def _new_run(self, lo: int, hi: int) -> Run:
        """A run of chunks lo..hi: the rows that are their id's newest and an upsert."""
        pieces, kept = [], []
        for c in range(lo, hi + 1):
            chunk = self.chunks[c]
            index = self.index
            rows = np.fromiter(
                (r for r, ident in enumerate(chunk.ids) if index[ident] == (c, r) and chunk.upsert[r]),
                dtype=np.int64,
            )
            table = chunk.table if rows.shape[0] == chunk.table.num_rows else chunk.table.take(rows)
            pieces.append(_conform(table.drop_columns([OP_COLUMN]), self.schema))
            kept.append(rows)
        return Run(lo, hi, LiveDocs(self.schema, pa.concat_tables(pieces).combine_chunks()), kept)

    def snapshot(
        self,
        *,
        manifest_version: int,
        indexed_through: int,
        segments: tuple[SegmentLike, ...] = (),
        damage: tuple[str, ...] = (),
    ) -> Snapshot:
        self._fold()
        segments = segments if self.truncated_at is None else ()
        if self._shadow.segments != segments:
            self._shadow = SegmentShadow(segments)
        return Snapshot(
            manifest_version=manifest_version,
            indexed_through=indexed_through,
            head=self.head,
            schema=self.schema,
            settings=dict(self.settings),
            chunks=tuple(self.chunks),
            runs=tuple((run, run.part()) for run in self._runs if run.size),
            segments=segments,
            shadow=self._shadow,
            created_at_ms=self.created_at_ms,
            updated_at_ms=self.updated_at_ms,
            unindexed_bytes=self.unindexed_bytes,
            unindexed_rows=self.unindexed_rows,
            oldest_unindexed_ms=self.oldest_unindexed_ms,
            damage=damage,
        )


def _conform(table: pa.Table, schema: Schema) -> pa.Table:
    """Columns id + every schema attribute, typed as the schema says (missing = null)."""
    fields = [pa.field("id", id_arrow_type(schema.id_type or "uint"))] + [
        pa.field(n, a.type.arrow_type()) for n, a in schema.attributes.items()
    ]
    cols = []
    for f in fields:
        if f.name in table.column_names:
            col = table.column(f.name)
            cols.append(col if col.type == f.type else col.cast(f.type))
        else:
            cols.append(pa.nulls(table.num_rows, f.type))
    return pa.Table.from_arrays(cols, schema=pa.schema(fields))


def _id_array(values: pa.ChunkedArray | pa.Array) -> pa.Array:
    arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    return arr.cast(pa.binary()) if pa.types.is_fixed_size_binary(arr.type) else arr


@dataclass(eq=False)
class Snapshot:
    """One consistent view of a namespace: manifest version + WAL entries through ``head``."""

    manifest_version: int
    indexed_through: int
    head: int
    schema: Schema
    settings: dict[str, Any]
    chunks: tuple[Chunk, ...]
    runs: tuple[tuple[Run, MaskedSource], ...]  # the tail's runs with their live rows, oldest first
    segments: tuple[SegmentLike, ...]
    shadow: SegmentShadow = field(repr=False)  # of these segments
    created_at_ms: int | None
    updated_at_ms: int | None
    unindexed_bytes: int
    unindexed_rows: int
    oldest_unindexed_ms: int | None = None
    damage: tuple[str, ...] = ()  # damaged WAL entries folded as empty (messages name each one)
    _source: CompositeSource | None = field(default=None, repr=False)

    @property
    def exists(self) -> bool:
        return self.schema.id_type is not None

    def segment_live_masks(self) -> list[np.ndarray]:
        """Per segment (oldest first): rows that are not tombstones and not shadowed by a newer
        segment or by any row of the tail."""
        shadow = self.shadow
        if shadow.segments != self.segments:  # a copy with other segments (a salvage's readable part)
            shadow = SegmentShadow(self.segments)
        return shadow.masks(self.chunks)

    @property
    def recall_target(self) -> float:
        """The namespace's ANN recall target (setting ``ann_recall_target``; default 0.95)."""
        v = self.settings.get("ann_recall_target")
        return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else DEFAULT_RECALL_TARGET

    def source(self) -> CompositeSource:
        """The live documents as one DocSource (segments first, then the tail's runs). Kept for
        the next call while the memory cache holds every segment reader it uses (a segment
        evicted meanwhile drops it: ``drop_source``, engine/segment_handle.py)."""
        src = self._source
        if src is not None:
            return src
        parts: list[DocSource] = []
        readers: list[tuple[SegmentHandle, SegmentReader]] = []
        for seg, live in zip(self.segments, self.segment_live_masks(), strict=True):
            if isinstance(seg, SegmentHandle):
                readers.append((seg, seg.reader()))
                reader = readers[-1][1]
            elif isinstance(seg, SegmentReader):
                reader = seg
            else:
                raise InternalError(f"segment {seg.ref.id} is not opened; it cannot be queried")
            parts.append(SegmentSource(reader, live))
        parts.extend(part for _, part in self.runs)
        src = self._source = CompositeSource(self.schema, parts, recall_target=self.recall_target)
        if not all([handle.hold(reader, self) for handle, reader in readers]):
            self._source = None  # a reader the cache does not hold: built again on the next call
        return src

    def drop_source(self) -> None:
        """A segment reader of the source left the memory cache: let it go."""
        self._source = None

    # Kept for callers that need one table (copy_from, tests, the writer's by-filter ops).
    def live_table(self) -> pa.Table:
        src = self.source()
        attrs = list(self.schema.attributes)
        return src.fetch_rows(np.arange(src.num_docs, dtype=np.int64), attrs)

    def _positions(self, wanted: pa.Array) -> np.ndarray:
        """Positions in ``source()`` of the live documents with the ``wanted`` ids, found in each
        part by binary search (segments: ``SegmentReader.lookup``; runs: ``Run.find``)."""
        src = self.source()
        found: list[np.ndarray] = []
        for start, part in zip(src.offsets[:-1], src.parts, strict=True):
            if isinstance(part, SegmentSource):
                rows = part.reader.lookup(wanted)
                rows, live = rows[rows >= 0], part.live_rows
            elif isinstance(part, MaskedSource):
                rows, live = next(r for r, p in self.runs if p is part).find(wanted), part.rows
            else:
                raise InternalError(f"snapshot part {type(part).__name__} cannot look ids up")
            rows = rows[live.live[rows]]
            found.append(int(start) + live.positions(rows))
        return np.sort(np.concatenate(found)) if found else np.zeros(0, dtype=np.int64)

    def lookup(self, ids: list[Id], attributes: list[str] | None = None) -> dict[Id, Doc]:
        """The live documents (canonical values) for the ids that exist in this snapshot, with
        ``attributes`` (None: all; ``[]``: existence only, which reads no column but ``id``)."""
        if not ids or not self.exists:
            return {}
        src = self.source()
        if src.num_docs == 0:
            return {}
        from lagoon.values import ids_to_arrow

        positions = self._positions(ids_to_arrow(ids, self.schema.id_type or "uint"))
        if positions.shape[0] == 0:
            return {}
        names = list(self.schema.attributes) if attributes is None else attributes
        table = src.fetch_rows(positions, names)
        out: dict[Id, Doc] = {}
        for row in table.to_pylist():
            ident = row.pop("id")
            doc: Doc = {}
            for name, value in row.items():
                attr = self.schema.attributes.get(name)
                if attr is not None and value is not None:
                    doc[name] = canonical_from_arrow(value, attr.type)
            out[ident] = doc
        return out
