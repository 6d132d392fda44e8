"""The binary container every Lagoon binary object uses (WAL entries, segment files).

    offset  size  field
    0       4     magic                 e.g. b"LGWL" for WAL entries
    4       2     format_version        u16 little-endian
    6       2     min_reader_version    u16: readers older than this must refuse the object
    8       2     min_writer_version    u16: writers older than this must not extend the namespace
    10      2     flags                 u16, 0 in version 1 (reserved)
    12      4     header_length         u32, 32 in version 1 (readers skip unknown header bytes)
    16      8     body_length           u64
    24      8     reserved              0
    32      n     body
    32+n    4     crc32c                of bytes [0, 32+n), u32 little-endian

Readers check magic, lengths and checksum before looking at the body, and raise DataCorruption
on any mismatch (IncompatibleFormat when min_reader_version is above what they support), so
random or truncated bytes never reach a decoder. Pure: no I/O.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import google_crc32c

from lagoon.errors import DataCorruption, IncompatibleFormat

_HEADER = struct.Struct("<4sHHHHIQQ")
HEADER_LEN = _HEADER.size  # 32
TRAILER_LEN = 4


def crc32c(data: bytes | memoryview) -> int:
    return int(google_crc32c.value(bytes(data)))


@dataclass(frozen=True, slots=True)
class Frame:
    magic: bytes
    format_version: int
    min_reader_version: int
    min_writer_version: int
    body: bytes


def encode_frame(
    magic: bytes, body: bytes, *, format_version: int, min_reader_version: int, min_writer_version: int
) -> bytes:
    header = _HEADER.pack(
        magic, format_version, min_reader_version, min_writer_version, 0, HEADER_LEN, len(body), 0
    )
    out = header + body
    return out + struct.pack("<I", crc32c(out))


def decode_frame(data: bytes, *, magic: bytes, reader_version: int, what: str) -> Frame:
    """Verify and unwrap a frame. ``what`` names the object in error messages (e.g. a key)."""
    if len(data) < HEADER_LEN + TRAILER_LEN:
        raise DataCorruption(f"{what}: truncated ({len(data)} bytes)")
    got_magic, fmt, min_reader, min_writer, _flags, header_len, body_len, _ = _HEADER.unpack_from(data)
    if got_magic != magic:
        raise DataCorruption(f"{what}: bad magic {got_magic!r}, expected {magic!r}")
    if header_len < HEADER_LEN or header_len + body_len + TRAILER_LEN != len(data):
        raise DataCorruption(
            f"{what}: length mismatch (header says {header_len}+{body_len}+4, object has {len(data)})"
        )
    (stored_crc,) = struct.unpack_from("<I", data, len(data) - TRAILER_LEN)
    if crc32c(memoryview(data)[: len(data) - TRAILER_LEN]) != stored_crc:
        raise DataCorruption(f"{what}: checksum mismatch")
    if min_reader > reader_version:
        raise IncompatibleFormat(
            f"{what}: written in format version {fmt}, which needs a reader of version {min_reader} "
            f"or newer; this Lagoon reads version {reader_version}. Upgrade Lagoon."
        )
    return Frame(got_magic, fmt, min_reader, min_writer, bytes(data[header_len : header_len + body_len]))
