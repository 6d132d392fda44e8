"""WAL entry format, version 1 (normative spec: docs/formats/wal.md).

A WAL entry is the commit unit of a namespace: the net effect of one group of write requests on
the state at the previous entry. It is created once at ``wal/{seq}`` with create-if-absent and
never changed. Body = msgpack map (see ``_Body``) inside the common frame (format/framing.py);
documents travel as one Arrow IPC stream whose columns are ``id``, ``$op`` (0 = upsert of the
whole document, 1 = delete) and one column per attribute present in the entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
import pyarrow as pa

from lagoon.errors import DataCorruption
from lagoon.format.framing import decode_frame, encode_frame

MAGIC = b"LGWL"
FORMAT_VERSION = 1
MIN_READER_VERSION = 1
MIN_WRITER_VERSION = 1
READER_VERSION = 1  # highest WAL format this build reads

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

    @property
    def num_docs(self) -> int:
        return 0 if self.docs is None else self.docs.num_rows


def table_to_ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue())


def table_from_ipc(data: bytes, *, what: str) -> pa.Table:
    try:
        with pa.ipc.open_stream(pa.py_buffer(data)) as reader:
            return reader.read_all()
    except (pa.ArrowException, ValueError, OSError) as e:
        raise DataCorruption(f"{what}: unreadable document table ({e})") from None


def encode_entry(entry: WalEntry) -> bytes:
    body = _Body(
        seq=entry.seq,
        nonce=entry.nonce,
        created_at_ms=entry.created_at_ms,
        writer=entry.writer,
        requests=entry.requests,
        truncate=entry.truncate,
        schema=entry.schema,
        settings=entry.settings,
        docs=table_to_ipc(entry.docs) if entry.docs is not None else b"",
    )
    return encode_frame(
        MAGIC,
        msgspec.msgpack.encode(body),
        format_version=FORMAT_VERSION,
        min_reader_version=MIN_READER_VERSION,
        min_writer_version=MIN_WRITER_VERSION,
    )


def decode_entry(data: bytes, *, what: str = "wal entry") -> WalEntry:
    frame = decode_frame(data, magic=MAGIC, reader_version=READER_VERSION, what=what)
    try:
        body = msgspec.msgpack.decode(frame.body, type=_Body)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise DataCorruption(f"{what}: unreadable body ({e})") from None
    docs = table_from_ipc(body.docs, what=what) if body.docs else None
    if docs is not None and ("id" not in docs.column_names or OP_COLUMN not in docs.column_names):
        raise DataCorruption(f"{what}: document table lacks the id or $op column")
    return WalEntry(
        seq=body.seq,
        nonce=body.nonce,
        created_at_ms=body.created_at_ms,
        writer=body.writer,
        requests=body.requests,
        truncate=body.truncate,
        schema=body.schema,
        settings=body.settings,
        docs=docs,
    )
