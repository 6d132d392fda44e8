"""The unindexed WAL tail folded into live documents, and the immutable snapshots queries read.

``Tail`` is the mutable fold owned by one namespace's state on one node: entries are applied in
seq order; a newer row for an id hides every older one (upsert or delete); a truncating entry
(namespace deleted) voids everything before it. ``snapshot()`` captures an immutable ``Snapshot``
(copy-on-write masks), so queries running while new entries arrive keep a consistent view.

For queries the tail is cut into *runs*: blocks of consecutive entries aligned on powers of two
of their seq (like a binary counter), each folded once into a table with derived data (vector
matrices, text postings) cached across snapshots. A snapshot with h unindexed entries has
O(log h) runs, and a new entry only rebuilds the small newest runs. Segments (from the manifest)
come first, runs after; ``CompositeSource`` merges them (lagoon/index/sources/composite.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lagoon.errors import InternalError
from lagoon.format.manifest import SegmentRef
from lagoon.format.wal import OP_COLUMN, OP_UPSERT, WalEntry
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
_RUN_CACHE_LIMIT = 64


class SegmentLike(Protocol):
    ref: SegmentRef

    def ids(self) -> pa.Array: ...

    def tombstones(self) -> np.ndarray: ...


@dataclass(frozen=True, slots=True)
class Chunk:
    seq: int
    table: pa.Table  # id, $op, attributes (as written in the entry)
    ids: list[Id]


@dataclass(frozen=True)
class Run:
    """Entries [lo, hi] folded: the last row of each id within the block."""

    lo: int
    hi: int
    base: LiveDocs  # all kept rows, tombstones included (with null attributes)
    picks: tuple[tuple[int, np.ndarray], ...]  # per chunk seq: the chunk rows kept, in order


class Tail:
    def __init__(self, schema: Schema | None = None, settings: dict[str, Any] | None = None) -> None:
        self.schema = schema or Schema()
        self.settings: dict[str, Any] = dict(settings or {})
        self.chunks: list[Chunk] = []
        self.masks: list[np.ndarray] = []
        self.index: dict[Id, tuple[int, int]] = {}
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
        self._shared: set[int] = set()  # masks referenced by a snapshot: copy before writing
        self._runs: dict[tuple[int, int, int], Run] = {}

    def apply(self, entry: WalEntry, encoded_size: int = 0) -> None:
        if entry.truncate:
            self.chunks, self.masks, self.index = [], [], {}
            self._shared = set()
            self._runs = {}
            self.schema = Schema()
            self.settings = {}
            self.created_at_ms = None
            self.truncated_at = entry.seq
            self.branch_fence_ms = None
        if entry.branch is not None:
            self.branch_fence_ms = entry.created_at_ms
        if entry.schema is not None:
            self.schema = Schema.from_storage(entry.schema)
        if entry.settings is not None:
            self.settings = dict(entry.settings)
        docs = entry.docs
        if docs is not None and docs.num_rows:
            ids = docs.column("id").to_pylist()
            ops = docs.column(OP_COLUMN).to_numpy(zero_copy_only=False)
            mask = np.asarray(ops == OP_UPSERT)
            ci = len(self.chunks)
            for row, ident in enumerate(ids):
                prev = self.index.get(ident)
                if prev is not None:
                    c, r = prev
                    if c in self._shared:
                        self.masks[c] = self.masks[c].copy()
                        self._shared.discard(c)
                    self.masks[c][r] = False
                self.index[ident] = (ci, row)
            self.chunks.append(Chunk(entry.seq, docs, ids))
            self.masks.append(mask)
        self.head = entry.seq
        self.updated_at_ms = entry.created_at_ms
        if self.created_at_ms is None and self.schema.id_type is not None:
            self.created_at_ms = entry.created_at_ms
        self.unindexed_bytes += encoded_size
        self.unindexed_rows += entry.num_docs
        if self.oldest_unindexed_ms is None:
            self.oldest_unindexed_ms = entry.created_at_ms

    # -- runs ------------------------------------------------------------------------------------

    def _blocks(self) -> list[tuple[int, int]]:
        """Aligned [lo, hi] chunk-index blocks covering every chunk (binary-counter layout)."""
        out = []
        n = len(self.chunks)
        start = 0
        while start < n:
            size = 1
            while start % (size * 2) == 0 and start + size * 2 <= n:
                size *= 2
            out.append((start, start + size - 1))
            start += size
        return out

    def _run(self, lo: int, hi: int) -> Run:
        key = (lo, hi, id(self.schema))
        run = self._runs.get(key)
        if run is not None:
            return run
        last: dict[Id, tuple[int, int]] = {}
        for c in range(lo, hi + 1):
            for r, ident in enumerate(self.chunks[c].ids):
                last[ident] = (c, r)
        per_chunk: dict[int, list[int]] = {}
        for c, r in last.values():
            per_chunk.setdefault(c, []).append(r)
        pieces, picks = [], []
        for c in sorted(per_chunk):
            rows = np.asarray(sorted(per_chunk[c]), dtype=np.int64)
            table = self.chunks[c].table
            if rows.shape[0] != table.num_rows:
                table = table.take(pa.array(rows))
            pieces.append(_conform(table.drop_columns([OP_COLUMN]), self.schema))
            picks.append((c, rows))
        base = LiveDocs(self.schema, pa.concat_tables(pieces).combine_chunks())
        run = Run(lo, hi, base, tuple(picks))
        if len(self._runs) >= _RUN_CACHE_LIMIT:
            self._runs.clear()
        self._runs[key] = run
        return run

    def snapshot(
        self,
        *,
        manifest_version: int,
        indexed_through: int,
        segments: tuple[SegmentLike, ...] = (),
        damage: tuple[str, ...] = (),
    ) -> Snapshot:
        self._shared = set(range(len(self.masks)))
        runs = tuple(self._run(lo, hi) for lo, hi in self._blocks())
        return Snapshot(
            manifest_version=manifest_version,
            indexed_through=indexed_through,
            head=self.head,
            schema=self.schema,
            settings=dict(self.settings),
            chunks=tuple(self.chunks),
            masks=tuple(self.masks),
            runs=runs,
            segments=segments if self.truncated_at is None else (),
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
    masks: tuple[np.ndarray, ...]
    runs: tuple[Run, ...]
    segments: tuple[SegmentLike, ...]
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

    def tail_ids(self) -> pa.Array | None:
        """Every id with a row in the unindexed tail (upserts and deletes)."""
        cols = [c.table.column("id").combine_chunks() for c in self.chunks]
        if not cols:
            return None
        return _id_array(pa.chunked_array([_id_array(c) for c in cols]))

    def segment_live_masks(self) -> list[np.ndarray]:
        """Per segment (oldest first): rows that are not tombstones and not shadowed by a newer
        segment or by any row of the tail."""
        masks: list[np.ndarray] = []
        newer: list[pa.Array] = []
        tail = self.tail_ids()
        if tail is not None:
            newer.append(tail)
        for seg in reversed(self.segments):
            ids = _id_array(seg.ids())
            live = ~np.asarray(seg.tombstones(), dtype=bool)
            for other in newer:
                hit = pc.is_in(ids, value_set=other).to_numpy(zero_copy_only=False)
                live &= ~np.asarray(hit, dtype=bool)
            masks.append(live)
            newer.append(ids)
        masks.reverse()
        return masks

    @property
    def recall_target(self) -> float:
        """The namespace's ANN recall target (setting ``ann_recall_target``; default 0.95)."""
        v = self.settings.get("ann_recall_target")
        return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else DEFAULT_RECALL_TARGET

    def source(self) -> CompositeSource:
        """The live documents as one DocSource (segments first, then the tail's runs)."""
        if self._source is None:
            parts: list[DocSource] = []
            for seg, live in zip(self.segments, self.segment_live_masks(), strict=True):
                if not isinstance(seg, SegmentReader):
                    raise InternalError(f"segment {seg.ref.id} is not opened; it cannot be queried")
                parts.append(SegmentSource(seg, live))
            for run in self.runs:
                live = np.concatenate([self.masks[c][rows] for c, rows in run.picks])
                parts.append(MaskedSource(run.base, live))
            self._source = CompositeSource(self.schema, parts, recall_target=self.recall_target)
        return self._source

    # Kept for callers that need one table (copy_from, tests, the writer's by-filter ops).
    def live_table(self) -> pa.Table:
        src = self.source()
        attrs = list(self.schema.attributes)
        return src.fetch_rows(np.arange(src.num_docs, dtype=np.int64), attrs)

    def lookup(self, ids: list[Id], attributes: list[str] | None = None) -> dict[Id, Doc]:
        """The live documents (canonical values) for the ids that exist in this snapshot, with
        ``attributes`` (None: all; ``[]``: existence only, which reads no column but ``id``)."""
        if not ids or not self.exists:
            return {}
        src = self.source()
        if src.num_docs == 0:
            return {}
        from lagoon.values import ids_to_arrow

        wanted = _id_array(ids_to_arrow(ids, self.schema.id_type or "uint"))
        hit = pc.is_in(_id_array(src.column("id")), value_set=wanted).to_numpy(zero_copy_only=False)
        positions = np.flatnonzero(np.asarray(hit, dtype=bool))
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
