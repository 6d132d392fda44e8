"""Segment reader: the verified, in-memory view of one segment. ``lagoon.index.sources.segment``
serves its live rows to queries.

``SegmentReader.from_files`` checks every file the ``SegmentRef`` lists (size, frame, checksum
against the manifest) before decoding anything; any mismatch is ``DataCorruption``. The reader is
immutable and thread-safe: derived structures (postings, filter indexes, columns conformed to the
current schema) are built at most once, lazily, under a per-key lock. Memory: the ``docs`` Arrow
table, postings and filter indexes are zero-copy views over the file bytes; the vectors are copied
once into float32 cluster order (``VectorIndex``), so the ``vec`` file bytes are not retained.

Schema evolution: the reader is opened with the namespace's *current* schema. An attribute the
segment lacks, or holds with another type (dropped and re-added), reads as null; a full-text
attribute whose analysis options changed since the build is re-tokenised from the ``docs`` column
instead of using the stale postings; a vector attribute whose dims/dtype changed reads as null.

Rows are in id order; a reader knows nothing of snapshots (``SegmentSource(reader, live)`` does).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import pyarrow as pa

from lagoon.errors import DataCorruption, InternalError
from lagoon.format.manifest import SegmentRef
from lagoon.format.segment import (
    DOCS_FILE,
    MAGIC_DOCS,
    MAGIC_FLT,
    MAGIC_FTS,
    MAGIC_SPV,
    MAGIC_VEC,
    SectionFile,
    flt_file,
    fts_file,
    open_frame,
    open_head,
    open_sections,
    spv_file,
    vec_file,
)
from lagoon.format.wal import OP_COLUMN, OP_DELETE
from lagoon.index.cache import OnceCache
from lagoon.index.filters.filterindex import FilterIndex, indexable
from lagoon.index.filters.kernels import search_sorted, single
from lagoon.index.segment.build import SEQ_COLUMN, fts_config
from lagoon.index.segment.docs import DocsStore, open_docs, open_docs_head
from lagoon.index.sparse import SparseIndex, build_sparse_index, open_spv
from lagoon.index.text.analyze import Analyzer
from lagoon.index.text.blockpostings import BlockPostings
from lagoon.index.text.bm25 import (
    Postings,
    build_postings,
)
from lagoon.index.text.postings import decode_postings, same_stopwords
from lagoon.index.text.postings_v2 import hydrate_postings_v2, open_postings_v2
from lagoon.index.text.textindex import TextIndex
from lagoon.index.vector.ivf import BlockSource, VectorIndex
from lagoon.schema import FtsConfig, Schema

T = TypeVar("T")

_NEGATIVE = {"NotEq": "Eq", "NotIn": "In"}
_INDEX_OPS = ("Eq", "In", "Lt", "Lte", "Gt", "Gte")


@dataclass(frozen=True)
class SegmentText:
    """One full-text attribute of a segment: postings over every row (ordinal = row)."""

    attr: str
    config: FtsConfig
    analyzer: Analyzer
    postings: Postings | BlockPostings
    persisted: bool  # False: re-tokenised because the file was missing or built differently


def _read_only(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


@dataclass(frozen=True)
class LazyFile:
    """A ``vec`` or v2 ``fts`` file opened from its head: the verified-on-open head bytes and the
    source of the rest (cluster blocks, see ``VectorIndex``; postings pages, see
    ``postings_v2``)."""

    head: bytes
    blocks: BlockSource


class SegmentReader:
    """An immutable, thread-safe, in-memory view of one segment (see the module docstring)."""

    def __init__(
        self,
        ref: SegmentRef,
        schema: Schema,
        docs: DocsStore,
        vectors: dict[str, VectorIndex],
        fts: dict[str, SectionFile],
        flt: dict[str, SectionFile],
        fts_sources: dict[str, BlockSource] | None = None,
        spv: dict[str, SectionFile] | None = None,
    ) -> None:
        self.ref = ref
        self._spv = spv or {}
        self._fts_sources = fts_sources or {}
        self.schema = schema
        self.num_rows = docs.num_rows
        self._docs = docs
        self._vectors = vectors
        self._fts = fts
        self._flt = flt
        self._cache = OnceCache()

    def with_schema(self, schema: Schema) -> SegmentReader:
        """The same segment read under a schema that evolved since it was opened (an attribute
        it lacks reads as null): the files are shared, the derived caches start empty."""
        if schema == self.schema:
            return self
        return SegmentReader(
            self.ref, schema, self._docs, self._vectors, self._fts, self._flt, self._fts_sources, self._spv
        )

    # ----------------------------------------------------------------------------------- open

    @staticmethod
    def from_files(ref: SegmentRef, files: Mapping[str, bytes | LazyFile], schema: Schema) -> SegmentReader:
        """Verify and open the files of ``ref`` (file name -> bytes as stored, or for a ``vec``,
        v2 ``fts`` or v2 ``docs`` file a ``LazyFile``: its head and where to fetch the rest)."""
        seg = f"segment {ref.id}"
        if DOCS_FILE not in ref.files:
            raise DataCorruption(f"{seg}: the manifest lists no {DOCS_FILE!r} file")
        docs: DocsStore | None = None
        vectors: dict[str, VectorIndex] = {}
        fts: dict[str, SectionFile] = {}
        flt: dict[str, SectionFile] = {}
        spv: dict[str, SectionFile] = {}
        fts_sources: dict[str, BlockSource] = {}
        sections: list[tuple[str, bytes, SectionFile]] = []
        lazy: dict[str, LazyFile] = {}
        for name, expected in sorted(ref.files.items()):
            what = f"{seg} file {name}"
            data = files.get(name)
            if data is None:
                raise DataCorruption(f"{what}: missing")
            size, crc = expected.get("size"), expected.get("crc32c")
            if isinstance(data, LazyFile):
                if name.split(".", 1)[0] not in ("vec", "fts", DOCS_FILE) or not isinstance(size, int):
                    raise InternalError(f"{what}: only vec, fts and docs files with a known size open lazily")
                lazy_magic = _LAZY_MAGIC[name.split(".", 1)[0]]
                head = open_head(data.head, magic=lazy_magic, what=what, size=size)
                if name == DOCS_FILE:
                    docs = open_docs_head(head, data.blocks, rows=ref.rows)
                    continue
                lazy[name] = data
                sections.append((name, lazy_magic, head))
                continue
            if name == DOCS_FILE:
                docs = open_docs(data, what=what, rows=ref.rows, size=size, crc32c=crc)
            else:
                kind = name.split(".", 1)[0]
                magic = {"vec": MAGIC_VEC, "fts": MAGIC_FTS, "flt": MAGIC_FLT, "spv": MAGIC_SPV}.get(kind)
                if magic is None:  # a kind this version does not know: verify the frame, ignore it
                    open_frame(data, magic=data[:4], what=what, size=size, crc32c=crc)
                    continue
                sections.append(
                    (name, magic, open_sections(data, magic=magic, what=what, size=size, crc32c=crc))
                )
        if docs is None:  # pragma: no cover - guarded above
            raise DataCorruption(f"{seg}: no docs file")
        n = docs.num_rows
        for name, magic, sf in sections:
            attr = sf.meta.get("attr")
            if not isinstance(attr, str):
                raise DataCorruption(f"{sf.what}: meta names no attribute")
            if magic == MAGIC_VEC:
                if name != vec_file(attr):
                    raise DataCorruption(f"{sf.what}: holds attribute {attr!r}, not the file's")
                a = schema.attributes.get(attr)
                if a is not None and a.type.is_vector:  # dropped attributes: verified, not loaded
                    source = lazy[name].blocks if name in lazy else None
                    vectors[attr] = VectorIndex(sf, n, blocks=source)
            elif magic == MAGIC_FTS:
                if name != fts_file(attr):
                    raise DataCorruption(f"{sf.what}: holds attribute {attr!r}, not the file's")
                fts[attr] = sf
                if name in lazy:
                    fts_sources[attr] = lazy[name].blocks
            elif magic == MAGIC_SPV:
                if name != spv_file(attr):
                    raise DataCorruption(f"{sf.what}: holds attribute {attr!r}, not the file's")
                spv[attr] = sf
            else:
                if name != flt_file(attr):
                    raise DataCorruption(f"{sf.what}: holds attribute {attr!r}, not the file's")
                flt[attr] = sf
        return SegmentReader(ref, schema, docs, vectors, fts, flt, fts_sources, spv)

    # ----------------------------------------------------------------------------------- rows

    def ids(self) -> pa.Array:
        """The id column in row order (ascending id)."""
        return self._cache.get("ids", "", lambda: single(self._docs.keys.column("id")))

    def seqs(self) -> np.ndarray:
        """uint64 WAL seq of each row's version."""
        return self._cache.get(
            "seqs",
            "",
            lambda: _read_only(np.asarray(self._docs.keys.column(SEQ_COLUMN).to_numpy(), dtype=np.uint64)),
        )

    def tombstones(self) -> np.ndarray:
        """bool per row: the row is a delete ($op == 1)."""
        return self._cache.get(
            "tombstones",
            "",
            lambda: _read_only(np.asarray(self._docs.keys.column(OP_COLUMN).to_numpy()) == OP_DELETE),
        )

    def lookup(self, ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """int64 row of each id, or -1 when the segment has no row for it."""
        wanted = single(ids) if isinstance(ids, pa.ChunkedArray) else ids
        mine = self.ids()
        if wanted.type != mine.type:
            wanted = wanted.cast(mine.type)
        return search_sorted(mine, wanted)

    def column(self, attr: str) -> pa.ChunkedArray:
        """Column ``attr`` ("id" or a schema attribute) over every row, typed as the current schema
        says (null where the segment has no such column); vectors are rebuilt from the vec file."""

        def build() -> pa.ChunkedArray:
            if attr == "id":
                return pa.chunked_array([self.ids()])
            a = self.schema.attributes.get(attr)
            if a is None:
                raise InternalError(f"segment column: unknown attribute {attr!r}")
            if a.type.is_vector:
                return pa.chunked_array([self._vector_array(attr, None)])
            t = a.type.arrow_type()
            if self._stored(attr):
                return self._docs.column(attr)
            return pa.chunked_array([pa.nulls(self.num_rows, t)])

        return self._cache.get("column", attr, build)

    def take(self, rows: np.ndarray, names: Sequence[str]) -> pa.Table:
        """The named columns ("id" and schema attributes) at ``rows``, in that order. Unsigned
        ids are gathered with numpy (a query's top-k rows: no Arrow compute call); stored
        attributes come from the docs file in one call (a lazily opened file fetches only the
        batches holding ``rows``)."""
        rows = np.asarray(rows, dtype=np.int64)
        cols: dict[str, pa.Array | pa.ChunkedArray] = {}
        stored = [n for n in names if n != "id" and self._stored(n)]
        cols.update(zip(stored, self._docs.take(rows, stored), strict=True))
        for name in names:
            a = self.schema.attributes.get(name)
            if name in cols:
                continue
            if a is not None and a.type.is_vector:
                cols[name] = self._vector_array(name, rows)
            elif name == "id":
                ids = self.uint_ids()
                cols[name] = pa.array(ids[rows]) if ids is not None else self.ids().take(pa.array(rows))
            else:
                cols[name] = self.column(name).take(pa.array(rows))
        return pa.Table.from_arrays([cols[n] for n in names], names=list(names))

    def _stored(self, attr: str) -> bool:
        """Does the docs file hold ``attr`` with the type the current schema gives it?"""
        a = self.schema.attributes.get(attr)
        return a is not None and not a.type.is_vector and self._docs.column_type(attr) == a.type.arrow_type()

    def uint_ids(self) -> np.ndarray | None:
        """The ids as a read-only uint64 view when they are unsigned integers, else None."""

        def build() -> np.ndarray | None:
            ids = self.ids()
            if not pa.types.is_uint64(ids.type) or ids.null_count:
                return None
            return _read_only(np.asarray(ids.to_numpy(zero_copy_only=False), dtype=np.uint64))

        return self._cache.get("uint_ids", "", build)

    def table(self, columns: Sequence[str] | None = None) -> pa.Table:
        """id, $seq, $op and the attribute columns (all schema attributes when ``columns`` is
        None), vectors included, over every row: the input of a compaction."""
        names = list(self.schema.attributes) if columns is None else [c for c in columns if c not in _SYSTEM]
        cols: dict[str, pa.ChunkedArray] = {
            "id": self.column("id"),
            SEQ_COLUMN: self._docs.keys.column(SEQ_COLUMN),
            OP_COLUMN: self._docs.keys.column(OP_COLUMN),
        }
        for name in names:
            cols[name] = self.column(name)
        return pa.table(cols)

    def lazy_vector_files(self) -> dict[str, VectorIndex]:
        """File name -> index of the vector files opened from their head and not complete yet."""
        return {vec_file(a): vi for a, vi in self._vectors.items() if vi.lazy and vi.loaded_fraction < 1.0}

    def vector_index(self, attr: str) -> VectorIndex | None:
        """The attribute's vectors, or None when the segment has none matching the schema."""
        a = self.schema.attributes.get(attr)
        vi = self._vectors.get(attr)
        if a is None or vi is None or not a.type.is_vector:
            return None
        if vi.dims != a.type.dims or vi.dtype != a.type.dtype:
            return None
        return vi

    def text(self, attr: str) -> SegmentText:
        """The attribute's postings over every row (persisted, or re-tokenised; see module doc)."""

        def build() -> SegmentText:
            config = fts_config(self.schema, attr)
            analyzer = Analyzer(config)
            sf = self._fts.get(attr)
            if sf is not None:
                built_with = FtsConfig.from_json(sf.meta.get("config") or False, attribute=attr)
                same = (
                    built_with is not None
                    and built_with.analysis_key() == config.analysis_key()
                    and same_stopwords(sf.meta, config)
                )
                # store: false keeps no values to re-tokenise: the persisted postings are all there is
                if same or not self.schema.attributes[attr].store:
                    postings: Postings | BlockPostings
                    if sf.version >= 2:
                        _, postings = open_postings_v2(sf, self.num_rows, self._fts_sources.get(attr))
                    else:
                        _, postings = decode_postings(sf, self.num_rows)
                    return SegmentText(attr, config, analyzer, postings, True)
            values = self.column(attr).to_pylist()
            rebuilt = build_postings(analyzer.analyze_many(values), with_positions=True)
            return SegmentText(attr, config, analyzer, rebuilt, False)

        return self._cache.get("text", attr, build)

    def plain_postings(self, attr: str) -> Postings:
        """``text(attr)``'s postings uncompressed (compaction and repair merge or reuse those of
        attributes with ``store: false``)."""
        p = self.text(attr).postings
        return p if isinstance(p, Postings) else p.to_postings()

    def resident_bytes(self) -> int:
        """Bytes this reader holds beyond its files' bytes: the documents decoded from a version 2
        ``docs`` file (Arrow ``nbytes``) and the vectors copied into cluster order (numpy
        ``nbytes``). Postings and filter indexes are views over the file bytes."""
        return self._docs.resident_bytes() + sum(vi.nbytes for vi in self._vectors.values())

    @property
    def reads_store(self) -> bool:
        """Are some of its files still served by ranged reads from the store (opened from their
        head and not whole yet)? Queries over several such segments read them at once."""
        return bool(self.lazy_vector_files() or self._fts_sources or self._docs.lazy)

    def lazy_text_files(self) -> list[str]:
        """The ``fts`` files opened from their head whose pages are not all loaded yet."""
        return [fts_file(a) for a in self._fts_sources]

    def hydrate_text(self, name: str, data: bytes) -> None:
        """Hand the whole (verified) file ``name`` to text postings opened from its head."""
        for attr, sf in self._fts.items():
            if fts_file(attr) != name or attr not in self._fts_sources:
                continue
            whole = open_sections(data, magic=MAGIC_FTS, what=sf.what, size=len(data))
            t = self.text(attr)
            if isinstance(t.postings, BlockPostings) and t.persisted:
                hydrate_postings_v2(t.postings, data, whole)
            self._fts[attr] = whole
            del self._fts_sources[attr]

    def text_index(self, attr: str) -> TextIndex:
        """``text(attr)`` as a ``TextIndex`` (scoring and token matching over every row)."""

        def build() -> TextIndex:
            t = self.text(attr)
            return TextIndex(attr, t.config, t.postings, analyzer=t.analyzer)

        return self._cache.get("textindex", attr, build)

    def sparse_index(self, attr: str) -> SparseIndex:
        """The attribute's inverted index over every row: the ``spv`` file's, or built from the
        ``docs`` column when the segment has none (built before ``sparse_knn`` was enabled)."""

        def build() -> SparseIndex:
            sf = self._spv.get(attr)
            a = self.schema.attributes.get(attr)
            if sf is not None and a is not None and a.type.is_sparse:
                return open_spv(sf, self.num_rows)
            return build_sparse_index(self.column(attr), self.num_rows)

        return self._cache.get("spv", attr, build)

    def filter_index(self, attr: str) -> FilterIndex | None:
        """The attribute's filter index, or None (no file, not indexable, or another type now)."""

        def build() -> FilterIndex | None:
            a = self.schema.attributes.get(attr)
            sf = self._flt.get(attr)
            if a is None or sf is None or not indexable(a) or sf.meta.get("type") != str(a.type):
                return None
            return FilterIndex(sf, self.num_rows, a.type)

        return self._cache.get("flt", attr, build)

    def column_nbytes(self, attr: str) -> int:
        """Logical size of a column over every row (vectors: dims × itemsize per vector)."""

        def build() -> int:
            a = self.schema.attributes.get(attr)
            if a is not None and a.type.is_vector:
                vi = self.vector_index(attr)
                itemsize = {"f32": 4, "f16": 2, "i8": 1}[a.type.dtype]
                return 0 if vi is None else vi.n_vectors * a.type.dims * itemsize
            if attr != "id" and self._stored(attr):
                return self._docs.nbytes(attr)
            return int(self.column(attr).nbytes)

        return self._cache.get("nbytes", attr, build)

    def null_count(self, attr: str) -> int:
        """Rows without a value for the non-vector attribute ``attr`` (from the docs file's
        summaries: no column is read)."""
        if attr == "id":
            return 0
        return self._docs.null_count(attr) if self._stored(attr) else self.num_rows

    def lazy_docs(self) -> bool:
        """Was the docs file opened from its head, with batches still to fetch?"""
        return self._docs.lazy

    def hydrate_docs(self, data: bytes) -> None:
        """Hand the whole (verified) docs file to a reader that opened it from its head."""
        self._docs.hydrate(data)

    def _vector_array(self, attr: str, rows: np.ndarray | None) -> pa.Array:
        a = self.schema.attributes[attr]
        t = a.type.arrow_type()
        n = self.num_rows if rows is None else rows.shape[0]
        vi = self.vector_index(attr)
        if vi is None:
            return pa.nulls(n, t)
        all_rows = np.arange(self.num_rows, dtype=np.int64) if rows is None else rows
        matrix, valid = vi.rows_matrix(all_rows)
        stored = {"f32": np.float32, "f16": np.float16, "i8": np.int8}[a.type.dtype]
        flat = matrix.reshape(-1) if a.type.dtype == "f32" else matrix.astype(stored).reshape(-1)
        mask = None if valid.all() else pa.array(~valid)
        return pa.FixedSizeListArray.from_arrays(pa.array(flat), type=t, mask=mask)


_SYSTEM = ("id", SEQ_COLUMN, OP_COLUMN)
_LAZY_MAGIC = {"vec": MAGIC_VEC, "fts": MAGIC_FTS, DOCS_FILE: MAGIC_DOCS}


__all__ = ["SegmentReader", "SegmentText"]
