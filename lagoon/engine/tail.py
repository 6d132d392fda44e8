"""The unindexed WAL tail folded into live documents, and the immutable snapshots queries read.

``Tail`` is the mutable fold owned by one namespace's state on one node: entries are applied in
seq order; a newer row for an id hides every older one (upsert or delete); a truncating entry
(namespace deleted) voids everything before it. ``snapshot()`` captures an immutable ``Snapshot``,
so queries running while new entries arrive keep a consistent view.

The fold is incremental: a commit or a strong read after one costs what the new entries hold
(amortised), not what the tail holds (``bench/tail_bench.py``, ``bench/fold_bench.py``); and it
is numpy work over the new rows, no Python per row (the runs: lagoon/engine/runs.py).

- ``apply`` appends the entry's documents as a chunk; nothing else.
- ``snapshot`` folds the chunks applied since the last snapshot into one new *run*: the rows
  that are their id's newest and an upsert (one stable sort of the chunks' id keys), and hides
  the rows of older runs those ids write again (one binary search per run). It then merges the
  newest runs while the older of the last two holds at most twice the newer's live rows,
  dropping the rows hidden meanwhile: O(log n) runs, a row's key copied O(log n) times over its
  life in the tail. A run's documents are gathered into one table only when a query needs them
  (``Run.base``: once per run; what queries derive from it, vector matrices, postings, id
  order, is built once and kept for every later snapshot); a snapshot holds each run's rows
  live at that moment (``RunView``: copied only when a row was hidden since the previous one).
- Which segment rows the tail hides (``SegmentShadow``) is advanced by the ids of the new entries
  only (``SegmentReader.lookup``), on the first source built after them.
- A new schema keeps the runs (their documents are gathered again, conformed to it, when
  needed); a new manifest, a truncate or a bucket that went back starts a new ``Tail``
  (lagoon/engine/state.py).

Segments (from the manifest) come first in a snapshot's source, runs after; ``CompositeSource``
merges them (lagoon/index/sources/composite.py). tests/engine/test_tail_fold.py checks the
incremental fold against a fold from scratch over random entry sequences.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lagoon.engine.runs import Chunk, Keys, Run, RunView, keys_for, merge_runs, new_run
from lagoon.engine.segment_handle import SegmentHandle
from lagoon.errors import InternalError
from lagoon.format.manifest import SegmentRef
from lagoon.format.schema_patch import schema_after
from lagoon.format.wal import OP_COLUMN, OP_UPSERT, WalEntry
from lagoon.index.segment.read import SegmentReader
from lagoon.index.sources.composite import CompositeSource
from lagoon.index.sources.masked import MaskedSource
from lagoon.index.sources.protocol import DocSource
from lagoon.index.sources.segment import SegmentSource
from lagoon.index.vector.plan import DEFAULT_RECALL_TARGET
from lagoon.schema import AttrType, Schema, id_arrow_type
from lagoon.values import Id, canonical_from_arrow

Doc = dict[str, Any]


class SegmentLike(Protocol):
    ref: SegmentRef

    def ids(self) -> pa.Array: ...

    def tombstones(self) -> np.ndarray: ...

    def lookup(self, ids: pa.Array | pa.ChunkedArray) -> np.ndarray: ...


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
        self._runs_schema = self.schema  # the schema the runs' documents are conformed to
        self._keys: Keys | None = None  # id -> uint64 key, for every chunk since the last truncate
        self._shadow = SegmentShadow(())

    def apply(self, entry: WalEntry, encoded_size: int = 0) -> None:
        """Append the entry (in seq order). Which rows it replaces is worked out by the next
        snapshot, for every entry applied since the one before, at once."""
        if entry.truncate:
            self.chunks = []
            self._runs, self._built, self._keys = [], 0, None
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
            ops = docs.column(OP_COLUMN).to_numpy(zero_copy_only=False)
            self.chunks.append(Chunk(entry.seq, docs, np.asarray(ops == OP_UPSERT)))
        self.head = entry.seq
        self.updated_at_ms = entry.created_at_ms
        if self.created_at_ms is None and self.schema.id_type is not None:
            self.created_at_ms = entry.created_at_ms
        self.unindexed_bytes += encoded_size
        self.unindexed_rows += entry.num_docs
        if self.oldest_unindexed_ms is None:
            self.oldest_unindexed_ms = entry.created_at_ms

    # -- runs ------------------------------------------------------------------------------------

    def _fold(self) -> None:
        """Fold the chunks added since the last snapshot into one new run (hiding the rows of
        older runs that they write again), then merge the newest runs while the older of the
        last two is at most twice the newer's size: live sizes at least halve from run to run
        (O(log n) runs), and a row's key is copied O(log n) times over its life in the tail, so
        a commit costs its own rows, amortised, not the tail's. A new schema keeps the runs (it
        changes no row's liveness); their documents are gathered again for it when needed."""
        if self._runs_schema != self.schema:
            self._runs = [run.rebased(self.schema) for run in self._runs]
            self._runs_schema = self.schema
        if self._built == len(self.chunks):
            return
        lo, hi = self._built, len(self.chunks) - 1
        if self._keys is None:
            first = self.chunks[lo].table.column("id").type
            self._keys = keys_for(id_arrow_type(self.schema.id_type) if self.schema.id_type else first)
        keys = [self._keys.of(self.chunks[c].table.column("id")) for c in range(lo, hi + 1)]
        run, written = new_run(self.chunks, self.schema, lo, hi, keys)
        for older in self._runs:
            if older.keys.shape[0] and written[0] <= older.keys[-1] and written[-1] >= older.keys[0]:
                older.hide(older.find(written))
        self._runs.append(run)
        self._built = hi + 1
        while len(self._runs) >= 2 and self._runs[-2].size <= 2 * self._runs[-1].size:
            newer = self._runs.pop()
            self._runs[-1] = merge_runs(self._runs[-1], newer)

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
            runs=tuple(run.view() for run in self._runs if run.size),
            segments=segments,
            shadow=self._shadow,
            created_at_ms=self.created_at_ms,
            updated_at_ms=self.updated_at_ms,
            unindexed_bytes=self.unindexed_bytes,
            unindexed_rows=self.unindexed_rows,
            oldest_unindexed_ms=self.oldest_unindexed_ms,
            damage=damage,
            keys=self._keys,
        )


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
    runs: tuple[RunView, ...]  # the tail's runs with their live rows, oldest first
    segments: tuple[SegmentLike, ...]
    shadow: SegmentShadow = field(repr=False)  # of these segments
    created_at_ms: int | None
    updated_at_ms: int | None
    unindexed_bytes: int
    unindexed_rows: int
    oldest_unindexed_ms: int | None = None
    damage: tuple[str, ...] = ()  # damaged WAL entries folded as empty (messages name each one)
    keys: Keys | None = field(default=None, repr=False)  # the runs' id keys
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
        parts.extend(view.part() for view in self.runs)
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
        part by binary search (segments: ``SegmentReader.lookup``; runs: ``Run.find``, by key)."""
        src = self.source()
        views = {id(view.part()): view for view in self.runs}
        keys = self.keys.known(wanted) if self.keys is not None and views else None
        found: list[np.ndarray] = []
        for start, part in zip(src.offsets[:-1], src.parts, strict=True):
            if isinstance(part, SegmentSource):
                rows = part.reader.lookup(wanted)
                rows, live = rows[rows >= 0], part.live_rows
            elif isinstance(part, MaskedSource) and keys is not None and id(part) in views:
                rows, live = views[id(part)].run.find(keys), part.rows
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
        at = table.column_names.index("id")
        columns = [
            (name, _canonical_column(col, attr.type))
            for i, (name, col) in enumerate(zip(table.column_names, table.columns, strict=True))
            if i != at and (attr := self.schema.attributes.get(name)) is not None
        ]
        ids_found = table.column(at).to_pylist()
        return {
            ident: {name: values[r] for name, values in columns if values[r] is not None}
            for r, ident in enumerate(ids_found)
        }


def _canonical_column(col: pa.ChunkedArray, atype: AttrType) -> list[Any]:
    """A column's values in canonical form (``canonical_from_arrow`` of each): a vector column
    without nulls as rows of one float32 matrix (no Python float per element)."""
    if atype.is_vector and col.null_count == 0 and pa.types.is_fixed_size_list(col.type) and len(col):
        arr = col.combine_chunks()
        flat = np.array(arr.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)
        return list(flat.reshape(len(arr), col.type.list_size))
    return [canonical_from_arrow(v, atype) for v in col.to_pylist()]
