"""The ``docs`` file of a segment: the row keys (id, $seq, $op) and the non-vector attribute columns.

Version 2 (docs/formats/docs-v2.md, RFC 0006) is a sectioned body whose head holds the keys (an
Arrow IPC stream, ZSTD buffers), the Arrow schema of the attribute columns, per-column summaries
and a directory of batches; the attribute columns follow as an Arrow IPC stream of record batches
of ``BATCH_ROWS`` rows, each checksummed on its own. ``DocsStore`` serves a file opened whole
(version 1: an Arrow IPC file; or version 2) or from its head (version 2): then ``take`` fetches
only the batches holding the requested rows, through the caller's ``BlockSource``, and whole
columns fetch the whole file. Thread-safe; the keys are always in memory. Pure: I/O only through
the ``BlockSource`` the caller passes.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from lagoon.errors import DataCorruption
from lagoon.format.segment import (
    DOCS_FORMAT_VERSION,
    MAGIC_DOCS,
    SectionFile,
    SectionWriter,
    crc32c_of,
    open_frame,
    open_sections,
)
from lagoon.format.wal import OP_COLUMN
from lagoon.index.vector.ivf import BlockSource
from lagoon.schema import Schema, id_arrow_type

SEQ_COLUMN = "$seq"  # uint64: the WAL seq of the row's version
KEY_COLUMNS = ("id", SEQ_COLUMN, OP_COLUMN)
BATCH_ROWS = 1024
COMPRESSION = "zstd"
WHOLE_FILE_FRACTION = 0.5  # a request for more of the batch bytes fetches the whole file
SCHEMA_METADATA_KEY = b"lagoon.schema"
V1_BATCH_ROWS = 65_536  # record batches of a version 1 file (informational)

__all__ = ["BATCH_ROWS", "DocsStore", "encode_docs", "encode_docs_v1", "open_docs", "open_docs_head"]


# --------------------------------------------------------------------------------------------- write


def _ipc_stream(
    table: pa.Table | pa.Schema, max_rows: int, compression: str | None
) -> tuple[bytes, list[int]]:
    """An Arrow IPC stream of ``table`` in batches of ``max_rows`` and the stream offset where
    each batch message ends, preceded by the end of the schema message."""
    schema = table if isinstance(table, pa.Schema) else table.schema
    opts = pa.ipc.IpcWriteOptions(compression=compression)
    empty = pa.BufferOutputStream()
    pa.ipc.new_stream(empty, schema, options=opts).close()
    ends = [len(empty.getvalue()) - 8]  # schema message (an empty stream is it + the 8-byte EOS)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema, options=opts) as writer:
        if isinstance(table, pa.Table):
            for batch in table.to_batches(max_chunksize=max_rows):
                writer.write_batch(batch)
                ends.append(sink.tell())
    return bytes(sink.getvalue()), ends


def _column_summaries(attrs: pa.Table) -> list[dict[str, Any]]:
    return [
        {"name": name, "nbytes": int(col.nbytes), "null_count": int(col.null_count)}
        for name, col in zip(attrs.column_names, attrs.columns, strict=True)
    ]


def encode_docs(table: pa.Table, schema: Schema) -> tuple[bytes, dict[str, Any]]:
    """The version 2 ``docs`` file of ``table`` (id, $seq, $op, then the attribute columns, rows
    sorted by id) and its manifest summary."""
    n = table.num_rows
    keys = table.select(list(KEY_COLUMNS)).combine_chunks()
    attrs = table.drop_columns(list(KEY_COLUMNS)).combine_chunks()
    keys_ipc, _ = _ipc_stream(keys, max(n, 1), COMPRESSION)
    # no attribute columns: no batches (the region is the schema and the end-of-stream marker)
    region, ends = _ipc_stream(attrs if attrs.num_columns else attrs.schema, BATCH_ROWS, COMPRESSION)
    w = SectionWriter()
    w.add_bytes("keys", keys_ipc)
    w.add_bytes("schema", region[: ends[0]])
    w.add("batch_offset", np.asarray(ends, dtype="<u8"))
    w.add("batch_crc32c", np.asarray([crc32c_of(region[s:e]) for s, e in itertools.pairwise(ends)], "<u4"))
    head = {"length": w.size, "crc32c": w.area_crc32c()}
    meta = {
        "n_rows": n,
        "batch_rows": BATCH_ROWS,
        "n_batches": len(ends) - 1,
        "compression": COMPRESSION,
        "columns": _column_summaries(attrs),
        "lagoon_schema": orjson.loads(_schema_json(schema)),
        "head": head,
        "batches": {"offset": w.add_raw(np.frombuffer(region, np.uint8)), "length": len(region)},
    }
    data = w.finish(MAGIC_DOCS, meta, version=DOCS_FORMAT_VERSION)
    summary = {
        "kind": "docs",
        "format": DOCS_FORMAT_VERSION,
        "columns": table.num_columns,
        "head_bytes": w.data_start + head["length"],
        "batches": len(ends) - 1,
        "batch_rows": BATCH_ROWS,
        "batch_bytes": len(region),
    }
    return data, summary


def _schema_json(schema: Schema) -> bytes:
    return orjson.dumps(schema.to_storage(), option=orjson.OPT_SORT_KEYS)


def encode_docs_v1(table: pa.Table, schema: Schema) -> bytes:
    """The version 1 body (an Arrow IPC file): only for golden files and compatibility tests."""
    table = table.replace_schema_metadata({SCHEMA_METADATA_KEY: _schema_json(schema)})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=V1_BATCH_ROWS)
    return bytes(sink.getvalue())


# --------------------------------------------------------------------------------------------- read


@dataclass(frozen=True)
class _Layout:
    """The batch directory of a version 2 file (absolute file offsets)."""

    schema: pa.Schema
    batch_rows: int
    starts: np.ndarray  # int64 [n_batches]
    ends: np.ndarray  # int64 [n_batches]
    crcs: np.ndarray  # uint32 [n_batches]
    region: tuple[int, int]  # absolute [start, end) of the batches region
    nbytes: dict[str, int]
    null_counts: dict[str, int]


class DocsStore:
    """The keys and attribute columns of one segment (see the module docstring)."""

    def __init__(
        self,
        what: str,
        keys: pa.Table,
        attrs: pa.Table | None,
        layout: _Layout | None = None,
        blocks: BlockSource | None = None,
    ) -> None:
        self.what = what
        self.keys = keys
        self.num_rows = int(keys.num_rows)
        self._attrs = attrs
        self._layout = layout
        self._blocks = blocks
        self._batches: dict[int, pa.RecordBatch] = {}
        self._lock = threading.Lock()
        # decoded bytes held beyond the file's (resident_bytes), kept up to date as batches decode
        self._decoded = self._whole_decoded()
        schema = attrs.schema if attrs is not None else layout.schema if layout is not None else pa.schema([])
        self._types = {f.name: f.type for f in schema}

    @property
    def lazy(self) -> bool:
        """Opened from its head and not whole yet."""
        return self._attrs is None

    def resident_bytes(self) -> int:
        """Bytes of decoded data held beyond the file's bytes (Arrow ``nbytes``): a version 2
        file's keys and the columns or batches decompressed from it so far. A version 1 file's
        columns are views over its bytes: 0."""
        return self._decoded

    def _whole_decoded(self) -> int:
        """``resident_bytes`` without any batch: the keys and, once whole, the columns."""
        if self._layout is None:
            return 0
        return int(self.keys.nbytes + (self._attrs.nbytes if self._attrs is not None else 0))

    def column_type(self, name: str) -> pa.DataType | None:
        """The stored type of attribute column ``name``, None when the file has no such column."""
        return self._types.get(name)

    def nbytes(self, name: str) -> int:
        """Logical (uncompressed) bytes of a stored attribute column over every row (version 2:
        as the writer counted them, so the figure does not depend on how the file was read)."""
        if self._layout is not None:
            return self._layout.nbytes.get(name, 0)
        assert self._attrs is not None
        return int(self._attrs.column(name).nbytes)

    def null_count(self, name: str) -> int:
        if self._layout is not None:
            return self._layout.null_counts.get(name, self.num_rows)
        assert self._attrs is not None
        return int(self._attrs.column(name).null_count)

    def column(self, name: str) -> pa.ChunkedArray:
        """A stored attribute column over every row (fetches the whole file when opened lazily)."""
        return self._whole().column(name)

    def take(self, rows: np.ndarray, names: Sequence[str]) -> list[pa.ChunkedArray | pa.Array]:
        """Stored attribute columns ``names`` at ``rows`` (any order, repeats allowed)."""
        rows = np.asarray(rows, dtype=np.int64)
        whole = self._attrs
        if not names:  # ids only: nothing to fetch
            return []
        if whole is not None:
            table, local = whole, rows
        elif not rows.size:
            return [pa.array([], type=self._types[n]) for n in names]
        else:
            table = self._take_table(rows)
            # the batches holding the rows (rows renumbered into them), or the whole file's columns
            local = rows if table is self._attrs else self._local_rows(rows)
        return [_gather(table.column(n), local) for n in names]

    def hydrate(self, data: bytes) -> None:
        """Hand the whole (verified) file to a store opened from its head."""
        if self._attrs is not None:
            return
        whole = open_docs(data, what=self.what, rows=self.num_rows)
        if whole._types != self._types:
            raise DataCorruption(f"{self.what}: the whole file's columns differ from its head's")
        self._attrs = whole._attrs
        with self._lock:
            self._batches.clear()
            self._decoded = self._whole_decoded()

    # ------------------------------------------------------------------------------- lazy reads

    def _whole(self) -> pa.Table:
        if self._attrs is None:
            assert self._blocks is not None
            self.hydrate(self._blocks.whole())
        assert self._attrs is not None
        return self._attrs

    def _take_table(self, rows: np.ndarray) -> pa.Table:
        """The batches holding ``rows`` as one table (in batch order), or the whole file's
        columns when they are more than ``WHOLE_FILE_FRACTION`` of the batch bytes."""
        layout, blocks = self._layout, self._blocks
        assert layout is not None and blocks is not None
        if rows.min() < 0 or rows.max() >= self.num_rows:
            raise DataCorruption(f"{self.what}: row {int(rows.max())} outside the segment's {self.num_rows}")
        wanted = np.unique(rows // layout.batch_rows)
        with self._lock:
            missing = [int(b) for b in wanted if int(b) not in self._batches]
        need = int(sum(layout.ends[b] - layout.starts[b] for b in missing))
        if need > WHOLE_FILE_FRACTION * (layout.region[1] - layout.region[0]):
            return self._whole()
        if missing:
            got = blocks.ranges([(int(layout.starts[b]), int(layout.ends[b])) for b in missing])
            decoded = {b: self._decode_batch(b, data) for b, data in zip(missing, got, strict=True)}
            with self._lock:
                fresh = {b: batch for b, batch in decoded.items() if b not in self._batches}
                self._batches.update(fresh)
                self._decoded += sum(batch.nbytes for batch in fresh.values())
        with self._lock:
            batches = [self._batches[int(b)] for b in wanted]
        return pa.Table.from_batches(batches, schema=layout.schema).combine_chunks()

    def _local_rows(self, rows: np.ndarray) -> np.ndarray:
        """``rows`` as positions in the table of the batches ``_take_table`` returned."""
        layout = self._layout
        assert layout is not None
        wanted = np.unique(rows // layout.batch_rows)
        batch = rows // layout.batch_rows
        local: np.ndarray = np.searchsorted(wanted, batch) * layout.batch_rows + (
            rows - batch * layout.batch_rows
        )
        return local

    def _decode_batch(self, b: int, data: bytes) -> pa.RecordBatch:
        layout = self._layout
        assert layout is not None
        what = f"{self.what} batch {b}"
        if len(data) != layout.ends[b] - layout.starts[b] or crc32c_of(data) != int(layout.crcs[b]):
            raise DataCorruption(f"{what}: checksum mismatch")
        expected = min(layout.batch_rows, self.num_rows - b * layout.batch_rows)
        try:
            batch = pa.ipc.read_record_batch(pa.ipc.read_message(pa.py_buffer(data)), layout.schema)
            batch.validate(full=True)
        except (pa.ArrowException, ValueError, OSError) as e:
            raise DataCorruption(f"{what}: unreadable Arrow record batch ({e})") from None
        if batch.num_rows != expected:
            raise DataCorruption(f"{what}: {batch.num_rows} rows, expected {expected}")
        return batch


def _gather(col: pa.ChunkedArray, rows: np.ndarray) -> pa.Array:
    """``col.take(rows)`` in O(len(rows) + chunks): Arrow's take on a column of many chunks
    concatenates them first (a version 1 file is zero-copy, in chunks of 65,536 rows)."""
    if col.num_chunks == 1:
        return col.chunk(0).take(pa.array(rows))
    if col.num_chunks == 0 or not rows.size:
        return pa.array([], type=col.type)
    starts = np.cumsum([0, *(len(c) for c in col.chunks)])
    which = np.searchsorted(starts, rows, side="right") - 1
    order = np.argsort(which, kind="stable")
    chunks, first = np.unique(which[order], return_index=True)
    ends = [*first[1:].tolist(), rows.size]
    pieces = [
        col.chunk(int(c)).take(pa.array(rows[order[a:b]] - starts[c]))
        for c, a, b in zip(chunks, first.tolist(), ends, strict=True)
    ]
    inverse = np.empty_like(order)
    inverse[order] = np.arange(order.size)
    return pa.concat_arrays(pieces).take(pa.array(inverse))


def open_docs(
    data: bytes, *, what: str, rows: int, size: int | None = None, crc32c: int | None = None
) -> DocsStore:
    """A whole ``docs`` file of either version, verified (frame, then content)."""
    fv = open_frame(data, magic=MAGIC_DOCS, what=what, size=size, crc32c=crc32c)
    if fv.format_version < 2:
        table = _read_ipc(lambda: pa.ipc.open_file(pa.py_buffer(fv.body())).read_all(), what)
        keys = _check_keys(table.select(list(KEY_COLUMNS)) if table.num_columns >= 3 else table, what, rows)
        return DocsStore(what, keys, table.drop_columns(list(KEY_COLUMNS)))
    sf = open_sections(data, magic=MAGIC_DOCS, what=what, size=size, crc32c=crc32c)
    keys, layout = _open_head_sections(sf, rows)
    start, end = layout.region
    region = pa.py_buffer(data)[start:end]
    attrs = _read_ipc(lambda: pa.ipc.open_stream(region).read_all(), what)
    if attrs.schema != layout.schema or (attrs.num_columns and attrs.num_rows != rows):
        raise DataCorruption(f"{what}: the batches do not match the head's schema and row count")
    attrs = attrs.combine_chunks()  # decoded anyway: one chunk per column, so takes are O(rows taken)
    return DocsStore(what, keys, attrs, layout)


def open_docs_head(head: SectionFile, blocks: BlockSource, *, rows: int) -> DocsStore:
    """A version 2 ``docs`` file opened from its verified head (``open_head``): keys in memory,
    batches fetched through ``blocks`` when asked for."""
    keys, layout = _open_head_sections(head, rows)
    return DocsStore(head.what, keys, None, layout, blocks)


def _read_ipc(read: Any, what: str) -> pa.Table:
    try:
        table: pa.Table = read()
        table.validate(full=True)
    except (pa.ArrowException, ValueError, OSError) as e:
        raise DataCorruption(f"{what}: unreadable Arrow IPC data ({e})") from None
    return table


def _check_keys(keys: pa.Table, what: str, rows: int) -> pa.Table:
    if keys.column_names != list(KEY_COLUMNS):
        raise DataCorruption(f"{what}: the first columns are not id, $seq, $op")
    if keys.column(SEQ_COLUMN).type != pa.uint64() or keys.column(OP_COLUMN).type != pa.uint8():
        raise DataCorruption(f"{what}: $seq or $op has the wrong type")
    if keys.column("id").type not in (id_arrow_type("uint"), id_arrow_type("string"), id_arrow_type("uuid")):
        raise DataCorruption(f"{what}: id column of type {keys.column('id').type}")
    if keys.num_rows != rows:
        raise DataCorruption(f"{what}: {keys.num_rows} rows, the manifest says {rows}")
    return keys.combine_chunks()


def _open_head_sections(sf: SectionFile, rows: int) -> tuple[pa.Table, _Layout]:
    """The keys and the batch directory of a version 2 file's head."""
    what, meta = sf.what, sf.meta
    keys = _check_keys(
        _read_ipc(lambda: pa.ipc.open_stream(pa.py_buffer(sf.raw("keys"))).read_all(), what), what, rows
    )
    try:
        schema = pa.ipc.read_schema(pa.py_buffer(sf.raw("schema")))
        batch_rows, n_batches = int(meta["batch_rows"]), int(meta["n_batches"])
        rel, length = int(meta["batches"]["offset"]), int(meta["batches"]["length"])
        columns = {str(c["name"]): (int(c["nbytes"]), int(c["null_count"])) for c in meta["columns"]}
    except (pa.ArrowException, KeyError, TypeError, ValueError, OSError) as e:
        raise DataCorruption(f"{what}: malformed docs head ({e!r})") from None
    offsets = sf.array("batch_offset", "<u8").astype(np.int64)
    crcs = sf.array("batch_crc32c", "<u4")
    expected = -(-rows // batch_rows) if schema.names and batch_rows > 0 else 0
    if n_batches != expected or offsets.shape != (n_batches + 1,) or crcs.shape != (n_batches,):
        raise DataCorruption(f"{what}: batch directory of {n_batches} batches for {rows} rows")
    if offsets.size and (
        offsets[0] != len(sf.raw("schema")) or np.any(np.diff(offsets) <= 0) or offsets[-1] > length
    ):
        raise DataCorruption(f"{what}: batch directory points outside the batches region")
    if set(columns) != set(schema.names):
        raise DataCorruption(f"{what}: column summaries do not match the schema")
    start = sf.data_start + rel
    layout = _Layout(
        schema,
        batch_rows,
        start + offsets[:-1],
        start + offsets[1:],
        crcs,
        (start, start + length),
        {k: v[0] for k, v in columns.items()},
        {k: v[1] for k, v in columns.items()},
    )
    return keys, layout
