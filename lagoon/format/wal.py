"""WAL entry format, versions 1 and 2 (normative spec: docs/formats/wal.md).

A WAL entry is the commit unit of a namespace: the net effect of one group of write requests on
the state at the previous entry. It is created once at ``wal/{seq}`` with create-if-absent and
never changed. Body = msgpack map (see ``_Body``) inside the common frame (format/framing.py);
documents travel as one Arrow IPC stream whose columns are ``id``, ``$op`` (0 = upsert of the
whole document, 1 = delete) and one column per attribute present in the entry. Version 2 is an
entry that carries a ``schema_patch`` (format/schema_patch.py, RFC 0009) instead of a whole
``schema``; every other entry is written as version 1, byte for byte as before.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lagoon.errors import DataCorruption, InternalError, LagoonError
from lagoon.format.framing import decode_frame, encode_frame
from lagoon.format.schema_patch import schema_after
from lagoon.schema import AttributeSchema, Schema, id_arrow_type, id_type_of_arrow, type_of_arrow

MAGIC = b"LGWL"
FORMAT_VERSION = 1
MIN_READER_VERSION = 1
MIN_WRITER_VERSION = 1
PATCH_VERSION = 2  # format and min reader version of an entry with a schema patch
READER_VERSION = 2  # highest WAL format this build reads

OP_UPSERT = 0  # DO NOT CHANGE: persisted
OP_DELETE = 1  # DO NOT CHANGE: persisted
OP_COLUMN = "$op"


class _Body(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    seq: int
    nonce: bytes
    created_at_ms: int
    writer: str
    requests: int
    truncate: bool = False
    schema: dict[str, Any] | None = None
    settings: dict[str, Any] | None = None
    docs: bytes = b""


class _FenceBody(_Body, kw_only=True, forbid_unknown_fields=False):
    """A body that also carries ``branch`` (only entries that set it are written with this
    struct, so every other entry keeps its bytes). Readers decode every entry with it."""

    branch: dict[str, Any] | None = None


class _PatchBody(_FenceBody, kw_only=True, forbid_unknown_fields=False):
    """A body that also carries ``schema_patch`` (version 2 entries only). Readers decode every
    entry with it."""

    schema_patch: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class WalEntry:
    """One decoded WAL entry. ``docs`` is None when the entry changes no documents."""

    seq: int
    nonce: bytes
    created_at_ms: int
    writer: str
    requests: int = 1
    truncate: bool = False  # the namespace was deleted: every earlier entry and segment is void
    schema: dict[str, Any] | None = None  # full schema (storage form) after this entry, if changed
    settings: dict[str, Any] | None = None  # full namespace settings after this entry, if changed
    docs: pa.Table | None = None
    # Set on the entry a branch creation fences slot 1 of the new namespace with (no documents):
    # {"parent", "at_version"}; until the branch's manifest is readable, writers must not build on
    # it (docs/rfcs/0007-branches.md).
    branch: dict[str, Any] | None = None
    # The schema change as a patch on the schema in effect before the entry (instead of ``schema``;
    # format/schema_patch.py): version 2 entries only.
    schema_patch: dict[str, Any] | None = None

    @property
    def num_docs(self) -> int:
        return 0 if self.docs is None else self.docs.num_rows


def is_sparse(table: pa.Table) -> bool:
    """Whether most attribute cells of a document table are null (absent). Arrow stores a null
    as a full-width slot, so such a table is compressed: a column that one document in ten
    thousand sets then costs about what its values do, not rows x width."""
    attrs = [c for c in table.column_names if c not in ("id", OP_COLUMN)]
    cells: int = table.num_rows * len(attrs)
    nulls: int = sum(int(table.column(c).null_count) for c in attrs)
    return cells >= SPARSE_MIN_CELLS and 2 * nulls > cells


SPARSE_MIN_CELLS = 256
SPARSE_CODEC = "zstd"  # Arrow IPC body compression (a standard codec, read by any Arrow reader)


def table_to_ipc(table: pa.Table, *, compress: bool = False) -> bytes:
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression=SPARSE_CODEC if compress else None)
    with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue())


def table_from_ipc(data: bytes, *, what: str) -> pa.Table:
    try:
        with pa.ipc.open_stream(pa.py_buffer(data)) as reader:
            return reader.read_all()
    except (pa.ArrowException, ValueError, OSError) as e:
        raise DataCorruption(f"{what}: unreadable document table ({e})") from None


def check_entry(entry: WalEntry, schema: Schema | None) -> None:
    """Raise ``DataCorruption`` unless ``entry`` is one a reader can fold: its schema (if any)
    parses, and its document table has ``id`` and ``$op`` (0 or 1) columns and only columns of
    attributes of the schema in effect after it (``schema``: the entry's own, or the one in
    effect before it; None = not known here, only the structure is checked), each of exactly
    the attribute's type, with every id once. The writer runs it before every PUT and readers
    on every entry they fold, so both sides agree on what a valid entry is."""
    check_structure(entry)
    if schema is not None or entry.schema is not None or entry.schema_patch is not None:
        check_against_schema(entry, schema or Schema())


def check_structure(entry: WalEntry) -> None:
    """The schema-independent half of ``check_entry`` (``decode_entry`` runs it)."""
    docs = entry.docs
    if docs is None:
        return
    names = docs.column_names
    if "id" not in names or OP_COLUMN not in names:
        raise DataCorruption("document table lacks the id or $op column")
    if len(set(names)) != len(names):
        raise DataCorruption("document table has a column twice")
    ops = docs.column(OP_COLUMN)
    if ops.type != pa.uint8() or ops.null_count:
        raise DataCorruption("document table: $op must be a uint8 column without nulls")
    # numpy and pc.unique: a fifth of the pyarrow compute calls' cost on a 350-row entry
    if docs.num_rows and int(np.max(ops.to_numpy())) > OP_DELETE:
        raise DataCorruption("document table: unknown $op value")
    ids = docs.column("id")
    if ids.null_count:
        raise DataCorruption("document table: null id")
    if len(pc.unique(ids)) != docs.num_rows:  # (no null id: each distinct value once)
        raise DataCorruption("document table: an id appears more than once")


def check_against_schema(entry: WalEntry, before: Schema) -> None:
    """The schema half of ``check_entry``: the entry's schema parses and its columns are those
    of the schema in effect after it (its own, else ``before``: the one in effect before it;
    for a truncating entry that is the empty schema), with their exact types. Readers run it on
    every entry they fold, in seq order, with the schema the entries before it left."""
    after = schema_after(entry.schema, entry.schema_patch, before)
    effective = before if after is None else after
    docs = entry.docs
    if docs is None:
        return
    ids = docs.column("id")
    if effective.id_type is None:
        if docs.num_rows:
            raise DataCorruption("document table with rows in a namespace without an id type")
        return
    if ids.type != id_arrow_type(effective.id_type):
        raise DataCorruption(
            f"document table: id column of type {ids.type}, the schema says {effective.id_type}"
        )
    for name in docs.column_names:
        if name in ("id", OP_COLUMN):
            continue
        attr = effective.attributes.get(name)
        if attr is None:
            raise DataCorruption(f"document table: column {name[:80]!r} is not an attribute of the schema")
        want = attr.type.arrow_type()
        if docs.schema.field(name).type != want:
            raise DataCorruption(
                f"document table: column {name[:80]!r} has type {docs.schema.field(name).type}, "
                f"the schema says {attr.type}"
            )


def recover_schema(before: Schema, entry: WalEntry) -> Schema | None:
    """The schema ``entry`` was written under, when an earlier entry that changed it is lost
    (damaged, quarantined): ``before`` plus what the entry's own table declares, the id type
    from its id column when ``before`` has none, and each column ``before`` lacks as an attribute
    of the column's Arrow type, with the options a write infers (filterable; ANN for vectors).
    Options the lost entry set (full-text search, regex, a distance metric...) are not in any
    table: they stay unknown. None when the entry carries its own schema, is truncating, or
    names nothing ``before`` lacks that a type can be read for (nothing to recover)."""
    docs = entry.docs
    if entry.schema is not None or entry.truncate or docs is None:
        return None
    id_type = before.id_type or id_type_of_arrow(docs.schema.field("id").type)
    attrs = dict(before.attributes)
    for name in docs.column_names:
        if name in ("id", OP_COLUMN) or name in attrs:
            continue
        t = type_of_arrow(docs.schema.field(name).type)
        if t is None:
            return None
        attrs[name] = AttributeSchema(type=t, filterable=not t.is_vector, ann={} if t.is_vector else None)
    if id_type == before.id_type and len(attrs) == len(before.attributes):
        return None
    return dataclasses.replace(before, id_type=id_type, attributes=attrs)


_SEAL = object()


class SealedEntry:
    """A WAL entry that ``check_entry`` passed: the only thing ``encode_entry`` accepts, and
    made only by ``seal_entry`` (mypy sees the type; the constructor refuses any other maker).
    So "validate, then encode" is not a convention of each caller but the encoder's signature."""

    __slots__ = ("entry",)

    def __init__(self, entry: WalEntry, seal: object) -> None:
        if seal is not _SEAL:
            raise InternalError("a SealedEntry is made by seal_entry only")
        self.entry = entry


def seal_entry(entry: WalEntry, schema: Schema | None = None) -> SealedEntry:
    """``entry``, checked (``check_entry``) for writing. ``schema``: the schema in effect before
    it, when the entry does not carry its own. A reader would refuse what fails the check, so a
    failure is a bug of the caller (``InternalError``), never bytes in the bucket."""
    try:
        check_entry(entry, schema)
    except LagoonError as e:
        raise InternalError(f"refusing to write an invalid WAL entry: {e.message}") from None
    return SealedEntry(entry, _SEAL)


def encode_entry(sealed: SealedEntry) -> bytes:
    """The bytes of a sealed entry (``seal_entry``)."""
    entry = sealed.entry
    struct = _PatchBody if entry.schema_patch is not None else _Body if entry.branch is None else _FenceBody
    extra: dict[str, Any] = {} if entry.branch is None else {"branch": entry.branch}
    if entry.schema_patch is not None:
        extra["schema_patch"] = entry.schema_patch
    body = struct(
        seq=entry.seq,
        nonce=entry.nonce,
        created_at_ms=entry.created_at_ms,
        writer=entry.writer,
        requests=entry.requests,
        truncate=entry.truncate,
        schema=entry.schema,
        settings=entry.settings,
        docs=b"" if entry.docs is None else table_to_ipc(entry.docs, compress=is_sparse(entry.docs)),
        **extra,
    )
    version = FORMAT_VERSION if entry.schema_patch is None else PATCH_VERSION
    return encode_frame(
        MAGIC,
        msgspec.msgpack.encode(body),
        format_version=version,
        min_reader_version=version,
        min_writer_version=MIN_WRITER_VERSION,
    )


def decode_entry(data: bytes, *, what: str = "wal entry") -> WalEntry:
    frame = decode_frame(data, magic=MAGIC, reader_version=READER_VERSION, what=what)
    try:
        body = msgspec.msgpack.decode(frame.body, type=_PatchBody)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise DataCorruption(f"{what}: unreadable body ({e})") from None
    docs = table_from_ipc(body.docs, what=what) if body.docs else None
    entry = WalEntry(
        seq=body.seq,
        nonce=body.nonce,
        created_at_ms=body.created_at_ms,
        writer=body.writer,
        requests=body.requests,
        truncate=body.truncate,
        schema=body.schema,
        settings=body.settings,
        docs=docs,
        branch=body.branch,
        schema_patch=body.schema_patch,
    )
    try:
        check_structure(entry)
    except DataCorruption as e:
        raise DataCorruption(f"{what}: {e.message}") from None
    return entry
