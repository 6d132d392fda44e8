"""The unindexed WAL tail folded into live documents, and the immutable snapshots queries read.

``Tail`` is the mutable fold owned by one namespace's state on one node: entries are applied in
seq order; a newer row for an id hides every older one (upsert or delete); a truncating entry
(namespace deleted) voids everything before it. Each ``apply`` returns nothing; ``snapshot()``
captures an immutable ``Snapshot`` (copy-on-write masks), so queries running while new entries
arrive keep a consistent view.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from lagoon.format.wal import OP_COLUMN, OP_UPSERT, WalEntry
from lagoon.query.live import LiveDocs
from lagoon.schema import Schema, id_arrow_type
from lagoon.values import Id

Doc = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Chunk:
    seq: int
    table: pa.Table  # id, $op, attributes (as written in the entry)
    ids: list[Id]


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
        self._shared: set[int] = set()  # masks referenced by a snapshot: copy before writing

    def apply(self, entry: WalEntry, encoded_size: int = 0) -> None:
        if entry.truncate:
            self.chunks, self.masks, self.index = [], [], {}
            self._shared = set()
            self.schema = Schema()
            self.settings = {}
            self.created_at_ms = None
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

    def snapshot(self, *, manifest_version: int, indexed_through: int) -> Snapshot:
        self._shared = set(range(len(self.masks)))
        return Snapshot(
            manifest_version=manifest_version,
            indexed_through=indexed_through,
            head=self.head,
            schema=self.schema,
            settings=dict(self.settings),
            chunks=tuple(self.chunks),
            masks=tuple(self.masks),
            index=self.index,
            created_at_ms=self.created_at_ms,
            updated_at_ms=self.updated_at_ms,
            unindexed_bytes=self.unindexed_bytes,
            unindexed_rows=self.unindexed_rows,
        )


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
    index: dict[Id, tuple[int, int]]  # shared with the Tail: only read entries for ids of own chunks
    created_at_ms: int | None
    updated_at_ms: int | None
    unindexed_bytes: int
    unindexed_rows: int
    _live: LiveDocs | None = field(default=None, repr=False)

    @property
    def exists(self) -> bool:
        return self.schema.id_type is not None

    def live_table(self) -> pa.Table:
        return self.live_docs().table

    def live_docs(self) -> LiveDocs:
        if self._live is None:
            self._live = LiveDocs(schema=self.schema, table=self._build_live_table())
        return self._live

    def _build_live_table(self) -> pa.Table:
        schema = self.schema
        id_type = id_arrow_type(schema.id_type or "uint")
        fields = [pa.field("id", id_type)] + [
            pa.field(name, attr.type.arrow_type()) for name, attr in schema.attributes.items()
        ]
        target = pa.schema(fields)
        parts = []
        for chunk, mask in zip(self.chunks, self.masks, strict=True):
            if not mask.any():
                continue
            t = chunk.table.filter(pa.array(mask))
            cols = []
            for f in target:
                if f.name in t.column_names:
                    col = t.column(f.name)
                    cols.append(col if col.type == f.type else col.cast(f.type))
                else:
                    cols.append(pa.nulls(t.num_rows, f.type))
            parts.append(pa.Table.from_arrays(cols, schema=target))
        if not parts:
            return target.empty_table()
        return pa.concat_tables(parts).combine_chunks()

    def lookup(self, ids: list[Id]) -> dict[Id, Doc]:
        """The live documents (canonical values) for the ids that exist in this snapshot."""
        out: dict[Id, Doc] = {}
        n = len(self.chunks)
        for ident in ids:
            loc = self.index.get(ident)
            if loc is None:
                continue
            c, r = loc
            # The shared index may point at a chunk newer than this snapshot; then scan back.
            if c >= n or self.chunks[c].ids[r] != ident:
                loc = self._scan(ident)
                if loc is None:
                    continue
                c, r = loc
            if self.masks[c][r]:
                out[ident] = row_to_doc(self.chunks[c].table, r, self.schema)
        return out

    def _scan(self, ident: Id) -> tuple[int, int] | None:
        for c in range(len(self.chunks) - 1, -1, -1):
            ids = self.chunks[c].ids
            for r in range(len(ids) - 1, -1, -1):
                if ids[r] == ident:
                    return c, r
        return None


def row_to_doc(table: pa.Table, row: int, schema: Schema) -> Doc:
    """One row of a document table as canonical values (attributes the schema knows only)."""
    from lagoon.values import canonical_from_arrow

    out: Doc = {}
    for name in table.column_names:
        if name in ("id", OP_COLUMN):
            continue
        attr = schema.attributes.get(name)
        if attr is None:
            continue
        value = table.column(name)[row].as_py()
        if value is not None:
            out[name] = canonical_from_arrow(value, attr.type)
    return out
