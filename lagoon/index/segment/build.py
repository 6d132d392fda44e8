"""Segment builder: one Arrow table of document versions -> the immutable files of a segment.

``build_segment`` is what the indexer and the compactor call. Input: a table with ``id``,
``$seq`` (uint64: the WAL seq of the row's version), ``$op`` (uint8: 0 upsert, 1 delete, the
values of ``lagoon.format.wal``) and attribute columns typed as the schema says (absent ones are
null); at most one row per id. Output: the files (name -> framed bytes) and the ``SegmentRef``
the manifest will list (sizes, checksums, counts). The caller uploads each file to
``NamespaceKeys.segment_file(ref.id, name)`` and commits the manifest.

Invariants of a built segment (docs/formats/segment.md is the normative spec):
- rows are sorted by id (uint numerically, string by UTF-8 bytes, uuid by its 16 bytes), so row
  order is id order in every file and id lookups are binary searches;
- ``docs`` holds id, $seq, $op and every non-vector attribute (version 2: keys in the head, the
  attributes in batches of 1,024 rows; lagoon/index/segment/docs.py); each vector attribute has a
  ``vec.<attr>`` file (IVF, cluster by cluster), each full-text attribute an ``fts.<attr>`` file
  (postings with positions, document ordinal = row), each filterable ordered scalar a
  ``flt.<attr>`` file (sorted values -> rows) unless the column is entirely null, each sparse
  vector attribute with ``sparse_knn`` an ``spv.<attr>`` file (dimension -> rows and weights);
- tombstones are rows like the others (null attributes, ``$op`` = 1): they shadow older versions
  until compaction drops them.

CPU heavy (k-means, tokenisation), pure (no I/O, no clock): callers run it in a worker thread.
The segment id comes from ``new_segment_id`` with the caller's clock and rng.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lagoon.errors import InternalError
from lagoon.format.manifest import SegmentRef
from lagoon.format.segment import (
    DOCS_FILE,
    DOCS_FORMAT_VERSION,
    file_checksum,
    flt_file,
    fts_file,
    spv_file,
    vec_file,
)
from lagoon.format.wal import OP_COLUMN, OP_DELETE, OP_UPSERT
from lagoon.index.filters.filterindex import build_filter_index, indexable
from lagoon.index.segment.docs import SEQ_COLUMN, encode_docs  # SEQ_COLUMN: uint64 WAL seq of the row
from lagoon.index.sparse import build_sparse_index, encode_spv
from lagoon.index.text.analyze import Analyzer
from lagoon.index.text.bm25 import Postings, build_postings
from lagoon.index.text.postings_v2 import encode_postings_v2
from lagoon.index.vector.build import build_vec_file
from lagoon.schema import AttrType, FtsConfig, Schema, id_arrow_type

__all__ = [
    "OP_COLUMN",
    "SEQ_COLUMN",
    "BuiltSegment",
    "build_segment",
    "fts_config",
    "new_segment_id",
    "sort_by_id",
    "vector_metric",
]

MAX_ROWS = 2**32 - 1  # row ordinals are u32 in the vec, fts and flt files
DEFAULT_METRIC = "cosine_distance"


@dataclass(frozen=True)
class BuiltSegment:
    ref: SegmentRef
    files: dict[str, bytes]


def new_segment_id(now_ms: int, rng: random.Random) -> str:
    """A sortable id that is never reused: creation time (ms, 13 digits) and 64 random bits."""
    return f"{now_ms:013d}-{rng.getrandbits(64):016x}"


def vector_metric(schema: Schema, attr: str) -> str:
    """The distance metric a vector attribute is indexed with."""
    a = schema.attributes[attr]
    metric = (a.ann or {}).get("distance_metric") or schema.distance_metric or DEFAULT_METRIC
    return str(metric)


def fts_config(schema: Schema, attr: str) -> FtsConfig:
    a = schema.attributes[attr]
    config = FtsConfig.from_json(a.full_text_search or False, attribute=attr)
    if config is None:
        raise InternalError(f"attribute {attr!r} has no full-text index")
    return config


def build_segment(
    table: pa.Table,
    schema: Schema,
    *,
    segment_id: str,
    level: int,
    seq_from: int,
    seq_to: int,
    postings: Mapping[str, Postings] | None = None,
) -> BuiltSegment:
    """Build every file of a segment from ``table`` (see the module docstring). ``postings``:
    full-text postings already built over the rows in id order (compaction and repair pass those
    of attributes with ``store: false``, whose values ``table`` no longer holds)."""
    docs = sort_by_id(_conform(table, schema))
    n = docs.num_rows
    if n > MAX_ROWS:
        raise InternalError(f"build_segment: {n} rows; a segment holds at most {MAX_ROWS}")
    files: dict[str, bytes] = {}
    summaries: dict[str, dict[str, Any]] = {}

    plain = [  # attributes with store: false are indexed below but not kept (RFC 0008)
        name for name, a in sorted(schema.attributes.items()) if not a.type.is_vector and a.store
    ]
    docs_table = docs.select(["id", SEQ_COLUMN, OP_COLUMN, *plain])
    files[DOCS_FILE], summaries[DOCS_FILE] = encode_docs(docs_table, schema)

    for name in sorted(schema.vector_columns()):
        a = schema.attributes[name]
        matrix, valid = _vector_matrix(docs.column(name), a.type)
        built = build_vec_file(
            name,
            matrix,
            valid,
            dtype=a.type.dtype,
            metric=vector_metric(schema, name),
            index=a.ann is not None,
        )
        files[vec_file(name)] = built.data
        summaries[vec_file(name)] = built.summary

    for name in sorted(schema.fts_columns()):
        files[fts_file(name)], summaries[fts_file(name)] = _fts_file(
            docs, schema, name, (postings or {}).get(name)
        )

    for name in sorted(schema.sparse_columns()):
        if schema.attributes[name].sparse_knn is None:
            continue
        index = build_sparse_index(docs.column(name), n)
        files[spv_file(name)], summaries[spv_file(name)] = encode_spv(name, index)

    for name in sorted(schema.attributes):
        a = schema.attributes[name]
        if not indexable(a):
            continue
        built_flt = build_filter_index(name, a.type, docs.column(name))
        if built_flt is not None:
            files[flt_file(name)], summaries[flt_file(name)] = built_flt

    ops = np.asarray(docs.column(OP_COLUMN).to_numpy(zero_copy_only=False))
    tombstones = int(np.count_nonzero(ops == OP_DELETE))
    info = {
        "format_version": DOCS_FORMAT_VERSION,
        "id_type": schema.id_type,
        "counts": {"rows": n, "upserts": n - tombstones, "tombstones": tombstones},
        "files": summaries,
    }
    ref = SegmentRef(
        id=segment_id,
        level=level,
        seq_from=seq_from,
        seq_to=seq_to,
        rows=n,
        bytes=sum(len(b) for b in files.values()),
        files={name: {"size": len(b), "crc32c": file_checksum(b)} for name, b in sorted(files.items())},
        info=info,
    )
    return BuiltSegment(ref, files)


# --------------------------------------------------------------------------------------------- helpers


def _fts_file(
    docs: pa.Table, schema: Schema, name: str, postings: Postings | None
) -> tuple[bytes, dict[str, Any]]:
    """The ``fts`` file of ``name``: from ``postings`` when given, else tokenised from the column."""
    config = fts_config(schema, name)
    n = docs.num_rows
    if postings is None:
        values = docs.column(name).to_pylist()
        postings = build_postings(Analyzer(config).analyze_many(values), with_positions=True)
    elif postings.n_docs != n:
        raise InternalError(f"build_segment: postings of {name!r} cover {postings.n_docs} rows, not {n}")
    return encode_postings_v2(name, config.to_json(), postings, k1=config.k1, b=config.b)


def _conform(table: pa.Table, schema: Schema) -> pa.Table:
    """id, $seq, $op and one column per schema attribute, typed as the schema says."""
    missing = [c for c in ("id", SEQ_COLUMN, OP_COLUMN) if c not in table.column_names]
    if missing:
        raise InternalError(f"build_segment: the table lacks column(s) {', '.join(missing)}")
    n = table.num_rows
    ids = table.column("id")
    if schema.id_type is not None:
        ids = _cast(ids, id_arrow_type(schema.id_type), "id")
    elif ids.type not in (pa.uint64(), pa.string(), pa.binary(16)):
        raise InternalError(f"build_segment: id column of type {ids.type}")
    seqs = _cast(table.column(SEQ_COLUMN), pa.uint64(), SEQ_COLUMN)
    ops = _cast(table.column(OP_COLUMN), pa.uint8(), OP_COLUMN)
    if ids.null_count or seqs.null_count or ops.null_count:
        raise InternalError("build_segment: id, $seq and $op may not be null")
    op_values = np.asarray(ops.to_numpy())
    if np.any((op_values != OP_UPSERT) & (op_values != OP_DELETE)):
        raise InternalError("build_segment: $op must be 0 (upsert) or 1 (delete)")
    columns: dict[str, pa.ChunkedArray | pa.Array] = {"id": ids, SEQ_COLUMN: seqs, OP_COLUMN: ops}
    for name, a in schema.attributes.items():
        t = a.type.arrow_type()
        if name in table.column_names:
            columns[name] = _cast(table.column(name), t, name)
        else:
            columns[name] = pa.nulls(n, t)
    return pa.table(columns)


def _cast(col: pa.ChunkedArray, t: pa.DataType, name: str) -> pa.ChunkedArray:
    if col.type == t:
        return col
    try:
        return col.cast(t)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as e:
        raise InternalError(f"build_segment: column {name!r} of type {col.type} is not {t}: {e}") from e


def id_sort_indices(ids: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Row order by id: uint numerically, string by UTF-8 bytes, uuid by its 16 bytes."""
    key = ids.cast(pa.binary()) if pa.types.is_fixed_size_binary(ids.type) else ids
    return np.asarray(pc.sort_indices(key).to_numpy(zero_copy_only=False), dtype=np.int64)


def sort_by_id(table: pa.Table) -> pa.Table:
    """``table`` sorted by id; raises InternalError when an id occurs twice."""
    order = id_sort_indices(table.column("id"))
    out = table.take(pa.array(order)).combine_chunks()
    ids = out.column("id")
    if out.num_rows > 1:
        key = ids.cast(pa.binary()) if pa.types.is_fixed_size_binary(ids.type) else ids
        same = pc.equal(key.slice(1), key.slice(0, out.num_rows - 1))
        if pc.any(same).as_py():
            raise InternalError("build_segment: an id occurs more than once")
    return out


def _vector_matrix(col: pa.ChunkedArray, atype: AttrType) -> tuple[np.ndarray, np.ndarray]:
    """(values (n, dims) in the column dtype, bool valid) of a fixed-size-list vector column."""
    arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    n, dims = len(arr), atype.dims
    np_dtype = {"f32": np.float32, "f16": np.float16, "i8": np.int8}[atype.dtype]
    if n == 0 or arr.null_count == n:
        return np.zeros((n, dims), np_dtype), np.zeros(n, dtype=bool)
    child = arr.values.slice(arr.offset * dims, n * dims)
    flat = np.asarray(child.to_numpy(zero_copy_only=False), dtype=np_dtype)
    valid = np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    matrix = flat.reshape(n, dims)
    if matrix.dtype.kind == "f" and not np.isfinite(matrix).all() and not np.isfinite(matrix[valid]).all():
        raise InternalError("build_segment: a vector holds NaN or infinity")
    return matrix, valid
