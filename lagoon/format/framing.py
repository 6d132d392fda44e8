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
class FrameHeader:
    """The fixed header of a frame, its magic and lengths already checked (``read_header``)."""

    magic: bytes
    format_version: int
    min_reader_version: int
    min_writer_version: int
    header_length: int
    body_length: int


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


def read_header(data: bytes, *, magic: bytes | None, what: str, size: int | None) -> FrameHeader:
    """Parse the header at the start of ``data`` (at least ``HEADER_LEN`` bytes) and check the
    magic (unless None) and that header, body and trailer make up ``size`` bytes (unless None: a
    head read by range). The reader version is for ``check_reader_version``, once the caller
    has checked what it checks first (the checksum, for a whole object)."""
    got_magic, fmt, min_reader, min_writer, _flags, header_len, body_len, _ = _HEADER.unpack_from(data)
    if magic is not None and got_magic != magic:
        raise DataCorruption(f"{what}: bad magic {got_magic!r}, expected {magic!r}")
    if header_len < HEADER_LEN or (size is not None and header_len + body_len + TRAILER_LEN != size):
        raise DataCorruption(
            f"{what}: length mismatch (header says {header_len}+{body_len}+4, object has {size})"
        )
    return FrameHeader(got_magic, fmt, min_reader, min_writer, header_len, body_len)


def check_reader_version(header: FrameHeader, reader_version: int, *, what: str, kind: str = "") -> None:
    """IncompatibleFormat when the object needs a newer reader; ``kind`` names its format in the
    message (``"segment "``)."""
    if header.min_reader_version > reader_version:
        raise IncompatibleFormat(
            f"{what}: written in {kind}format version {header.format_version}, which needs a reader of "
            f"version {header.min_reader_version} or newer; this Lagoon reads version {reader_version}. "
            "Upgrade Lagoon."
        )


def decode_frame(data: bytes, *, magic: bytes, reader_version: int, what: str) -> Frame:
    """Verify and unwrap a frame. ``what`` names the object in error messages (e.g. a key)."""
    if len(data) < HEADER_LEN + TRAILER_LEN:
        raise DataCorruption(f"{what}: truncated ({len(data)} bytes)")
    header = read_header(data, magic=magic, what=what, size=len(data))
    (stored_crc,) = struct.unpack_from("<I", data, len(data) - TRAILER_LEN)
    if crc32c(memoryview(data)[: len(data) - TRAILER_LEN]) != stored_crc:
        raise DataCorruption(f"{what}: checksum mismatch")
    check_reader_version(header, reader_version, what=what)
    start = header.header_length
    return Frame(
        header.magic,
        header.format_version,
        header.min_reader_version,
        header.min_writer_version,
        bytes(data[start : start + header.body_length]),
    )
