"""Segment files, version 1: names, the common frame, and the sectioned body (normative spec:
docs/formats/segment.md).

Every segment file is one object wrapped in the common Lagoon frame (``lagoon.format.framing``:
magic, format versions, body length, CRC-32C trailer), with a magic per kind of file:

    docs          b"LGSD"   id, $seq, $op and the non-vector attributes, by id (v1: an Arrow IPC file;
                            v2: a sectioned body, attributes in batches read by range)
    vec.<attr>    b"LGSV"   IVF index + every vector of one vector attribute, cluster by cluster
    fts.<attr>    b"LGST"   postings of one full-text attribute (terms, docs, tfs, positions)
    flt.<attr>    b"LGSF"   sorted values -> rows of one filterable scalar attribute
    spv.<attr>    b"LGSP"   inverted index (dimension -> rows, weights) of one sparse vector attribute

The binary bodies (vec, fts, flt) share one layout: ``u32 meta_length``, ``u32 meta_crc32c``, the
meta (UTF-8 JSON object), zero padding up to a multiple of 64 bytes counted from the start of the
file (``data_start``), then raw little-endian sections. ``meta["sections"][name]`` gives each
section's ``offset`` (relative to ``data_start``), ``length``, ``dtype`` (numpy notation) and
``shape``. Sections start on 64-byte boundaries. The meta has its own checksum so that a reader
doing ranged reads (head first, then only the blocks it needs) can trust it without the frame's.

The manifest records each file's size and its frame checksum (``crc32c`` of every byte but the
4-byte trailer; it equals the trailer). Readers verify both before decoding anything and raise
``DataCorruption`` on any mismatch; verification is zero-copy (numpy views over the bytes).
Attribute names become file names through ``attr_file_suffix`` (safe names kept, others encoded),
so any attribute name gives one flat, portable object name. Pure: no I/O.
"""

from __future__ import annotations

import base64
import re
import struct
from dataclasses import dataclass
from typing import Any

import google_crc32c
import numpy as np
import orjson

from lagoon.errors import DataCorruption
from lagoon.format.framing import (
    HEADER_LEN,
    TRAILER_LEN,
    FrameHeader,
    check_reader_version,
    encode_frame,
    read_header,
)

FORMAT_VERSION = 1
MIN_READER_VERSION = 1
MIN_WRITER_VERSION = 1
READER_VERSION = 2  # highest segment format this build reads
FTS_FORMAT_VERSION = 2  # fts files are written in version 2 (docs/formats/fts-v2.md)
DOCS_FORMAT_VERSION = 2  # the docs file is written in version 2 (docs/formats/docs-v2.md); others in 1

MAGIC_DOCS = b"LGSD"
MAGIC_VEC = b"LGSV"
MAGIC_FTS = b"LGST"
MAGIC_FLT = b"LGSF"
MAGIC_SPV = b"LGSP"

DOCS_FILE = "docs"
ALIGN = 64

_META_PREFIX = struct.Struct("<II")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,100}$")


def attr_file_suffix(attr: str) -> str:
    """The file-name form of an attribute name: the name itself when it is 1-100 characters of
    ``[A-Za-z0-9_.-]``, else ``~`` + lowercase unpadded base32 of its UTF-8 bytes."""
    if _SAFE_NAME.fullmatch(attr):
        return attr
    return "~" + base64.b32encode(attr.encode()).decode().rstrip("=").lower()


def vec_file(attr: str) -> str:
    return f"vec.{attr_file_suffix(attr)}"


def fts_file(attr: str) -> str:
    return f"fts.{attr_file_suffix(attr)}"


def flt_file(attr: str) -> str:
    return f"flt.{attr_file_suffix(attr)}"


def spv_file(attr: str) -> str:
    return f"spv.{attr_file_suffix(attr)}"


def align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def gather_runs(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``concat(arange(s, s + n) for s, n in zip(starts, lengths))``, vectorised (n >= 0; a run of
    length 0 adds nothing, as ``np.repeat`` repeats its start 0 times)."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    offsets = np.zeros(lengths.shape[0], np.int64)
    np.cumsum(lengths[:-1], out=offsets[1:])
    return np.repeat(starts - offsets, lengths) + np.arange(total, dtype=np.int64)


def crc32c_of(data: bytes | np.ndarray) -> int:
    """CRC-32C of bytes or of a (contiguous) numpy array's memory, without copying."""
    return int(google_crc32c.value(data))


def frame(magic: bytes, body: bytes, *, version: int = FORMAT_VERSION) -> bytes:
    """Wrap a body; a file of format ``version`` needs a reader of that version."""
    return encode_frame(
        magic,
        body,
        format_version=version,
        min_reader_version=max(MIN_READER_VERSION, version),
        min_writer_version=MIN_WRITER_VERSION,
    )


def file_checksum(data: bytes) -> int:
    """The checksum the manifest records for a framed file: its trailer (CRC-32C of the rest)."""
    return int(struct.unpack_from("<I", data, len(data) - TRAILER_LEN)[0])


# --------------------------------------------------------------------------------------------- verify


@dataclass(frozen=True, slots=True)
class FrameView:
    """A verified frame: ``data[body_start : body_start + body_length]`` is the body."""

    data: bytes
    format_version: int
    body_start: int
    body_length: int

    def body(self) -> memoryview:
        return memoryview(self.data)[self.body_start : self.body_start + self.body_length]


def open_frame(
    data: bytes, *, magic: bytes, what: str, size: int | None = None, crc32c: int | None = None
) -> FrameView:
    """Verify a framed file (lengths, magic, checksum, versions; ``size``/``crc32c`` as the manifest
    records them when given) without copying it. Raises DataCorruption / IncompatibleFormat."""
    if not isinstance(data, bytes):
        raise DataCorruption(f"{what}: expected bytes, got {type(data).__name__}")
    if size is not None and len(data) != size:
        raise DataCorruption(f"{what}: size {len(data)} differs from the manifest's {size}")
    if len(data) < HEADER_LEN + TRAILER_LEN:
        raise DataCorruption(f"{what}: truncated ({len(data)} bytes)")
    header = read_header(data, magic=magic, what=what, size=len(data))
    stored = file_checksum(data)
    if crc32c is not None and stored != crc32c:
        raise DataCorruption(f"{what}: checksum {stored} differs from the manifest's {crc32c}")
    if crc32c_of(np.frombuffer(data, np.uint8, count=len(data) - TRAILER_LEN)) != stored:
        raise DataCorruption(f"{what}: checksum mismatch")
    check_reader_version(header, READER_VERSION, what=what, kind="segment ")
    return FrameView(data, header.format_version, header.header_length, header.body_length)


# --------------------------------------------------------------------------------------------- sections


class SectionWriter:
    """Assembles a sectioned body: add arrays (or raw bytes) in order, then ``finish``."""

    def __init__(self) -> None:
        self._parts: list[tuple[str, bytes | np.ndarray, str, list[int]]] = []
        self._size = 0
        self.sections: dict[str, dict[str, Any]] = {}
        self.data_start = 0  # set by ``finish``: the absolute file offset of the data area

    @property
    def size(self) -> int:
        """Bytes of the data area so far (the next section's offset relative to ``data_start``)."""
        return self._size

    def add(self, name: str, array: np.ndarray) -> None:
        arr = np.ascontiguousarray(array)
        if arr.dtype.byteorder == ">":  # pragma: no cover - big-endian hosts
            arr = arr.astype(arr.dtype.newbyteorder("<"))
        self._add(name, arr, arr.dtype.str, list(arr.shape))

    def add_bytes(self, name: str, data: bytes) -> None:
        self._add(name, data, "|u1", [len(data)])

    def add_raw(self, data: np.ndarray) -> int:
        """Append an already-laid-out region (e.g. cluster blocks) that the meta describes itself;
        returns its offset relative to ``data_start``."""
        off = self._size
        buf = np.ascontiguousarray(data).view(np.uint8).reshape(-1)
        self._parts.append(("", buf, "", []))
        self._size = align(self._size + buf.nbytes)
        return off

    def area_crc32c(self) -> int:
        """CRC-32C of the data area written so far, padding included (as ``finish`` lays it out)."""
        crc = 0
        for _name, data, _dtype, _shape in self._parts:
            raw = data if isinstance(data, bytes) else np.ascontiguousarray(data).view(np.uint8).reshape(-1)
            n = len(raw) if isinstance(raw, bytes) else int(raw.nbytes)
            crc = int(google_crc32c.extend(crc, raw))
            crc = int(google_crc32c.extend(crc, bytes(align(n) - n)))
        return crc

    def _add(self, name: str, data: bytes | np.ndarray, dtype: str, shape: list[int]) -> None:
        nbytes = len(data) if isinstance(data, bytes) else int(data.nbytes)
        self.sections[name] = {"offset": self._size, "length": nbytes, "dtype": dtype, "shape": shape}
        self._parts.append((name, data, dtype, shape))
        self._size = align(self._size + nbytes)

    def finish(self, magic: bytes, meta: dict[str, Any], *, version: int = FORMAT_VERSION) -> bytes:
        meta = {**meta, "sections": self.sections}
        meta_bytes = orjson.dumps(meta, option=orjson.OPT_SORT_KEYS)
        head = _META_PREFIX.pack(len(meta_bytes), crc32c_of(meta_bytes)) + meta_bytes
        data_start = align(HEADER_LEN + len(head))
        self.data_start = data_start
        chunks: list[bytes | memoryview] = [head, bytes(data_start - HEADER_LEN - len(head))]
        for _name, data, _dtype, _shape in self._parts:
            raw = (
                data
                if isinstance(data, bytes)
                else np.ascontiguousarray(data).view(np.uint8).reshape(-1).data
            )
            n = len(raw) if isinstance(raw, bytes) else raw.nbytes
            chunks.append(raw)
            chunks.append(bytes(align(n) - n))
        return frame(magic, b"".join(chunks), version=version)


@dataclass(frozen=True)
class SectionFile:
    """A verified sectioned file: ``meta`` (JSON) and zero-copy, read-only section arrays."""

    what: str
    data: bytes
    meta: dict[str, Any]
    data_start: int  # absolute file offset of the data area
    end: int | None = None  # readable bytes end here (a head read); None: the whole frame
    version: int = FORMAT_VERSION  # the frame's format_version

    @property
    def limit(self) -> int:
        return len(self.data) - TRAILER_LEN if self.end is None else self.end

    def has(self, name: str) -> bool:
        return name in self.meta["sections"]

    def array(self, name: str, dtype: str | None = None) -> np.ndarray:
        """Section ``name`` as a read-only numpy array over the file bytes (no copy)."""
        try:
            s = self.meta["sections"][name]
            dt = np.dtype(s["dtype"])
            shape = tuple(int(x) for x in s["shape"])
            off, length = int(s["offset"]), int(s["length"])
        except (KeyError, TypeError, ValueError) as e:
            raise DataCorruption(f"{self.what}: section {name!r} missing or malformed ({e!r})") from None
        if dtype is not None and dt != np.dtype(dtype):
            raise DataCorruption(f"{self.what}: section {name!r} has dtype {dt}, expected {np.dtype(dtype)}")
        count = int(np.prod(shape, dtype=np.int64))
        start = self.data_start + off
        if off < 0 or length != count * dt.itemsize or start + length > self.limit:
            raise DataCorruption(f"{self.what}: section {name!r} lies outside the file or has a bad length")
        return np.frombuffer(self.data, dtype=dt, count=count, offset=start).reshape(shape)

    def raw(self, name: str) -> bytes:
        return self.array(name, "|u1").tobytes()

    def region(self, rel_offset: int, length: int) -> np.ndarray:
        """Bytes ``[data_start + rel_offset, +length)`` as a read-only uint8 view."""
        start = self.data_start + rel_offset
        if rel_offset < 0 or length < 0 or start + length > self.limit:
            raise DataCorruption(f"{self.what}: region lies outside the file")
        return np.frombuffer(self.data, dtype=np.uint8, count=length, offset=start)


def open_sections(
    data: bytes, *, magic: bytes, what: str, size: int | None = None, crc32c: int | None = None
) -> SectionFile:
    """Verify a framed sectioned file and parse its meta."""
    fv = open_frame(data, magic=magic, what=what, size=size, crc32c=crc32c)
    meta, data_start = _parse_meta(data, fv.body_start, fv.body_start + fv.body_length, what)
    return SectionFile(what, data, meta, data_start, version=fv.format_version)


def _parse_meta(data: bytes, start: int, body_end: int, what: str) -> tuple[dict[str, Any], int]:
    """The verified meta of a sectioned body starting at ``start`` and its ``data_start``."""
    if body_end - start < _META_PREFIX.size or len(data) < start + _META_PREFIX.size:
        raise DataCorruption(f"{what}: body too short")
    meta_len, meta_crc = _META_PREFIX.unpack_from(data, start)
    meta_start = start + _META_PREFIX.size
    if meta_start + meta_len > body_end:
        raise DataCorruption(f"{what}: meta length {meta_len} exceeds the body")
    if meta_start + meta_len > len(data):
        raise DataCorruption(f"{what}: meta length {meta_len} exceeds the bytes read")
    meta_bytes = data[meta_start : meta_start + meta_len]
    if crc32c_of(meta_bytes) != meta_crc:
        raise DataCorruption(f"{what}: meta checksum mismatch")
    try:
        meta = orjson.loads(meta_bytes)
    except orjson.JSONDecodeError as e:
        raise DataCorruption(f"{what}: meta is not valid JSON ({e})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("sections"), dict):
        raise DataCorruption(f"{what}: meta lacks its section table")
    return meta, align(meta_start + meta_len)


def head_length(head: bytes, *, what: str) -> int | None:
    """From the first bytes of a sectioned file (enough to hold its meta), the length of its
    checksummed head (``meta["head"]``), or None when the file has no such head. Raises
    DataCorruption when the bytes are not a sectioned file's start."""
    _check_header(head, what=what, magic=None, size=None)
    meta, data_start = _parse_meta(head, HEADER_LEN, 1 << 62, what)
    h = meta.get("head")
    if not isinstance(h, dict) or not isinstance(h.get("length"), int):
        return None
    return data_start + int(h["length"])


def open_head(head: bytes, *, magic: bytes, what: str, size: int) -> SectionFile:
    """Verify the head of a sectioned file of ``size`` bytes that carries ``meta["head"]``: the
    frame header, the meta (own checksum) and the data area up to ``head.length`` (checksum
    ``head.crc32c``). The sections inside the head can then be used; bytes after it are fetched
    and verified separately by the caller (e.g. cluster blocks with their own checksums)."""
    header = _check_header(head, what=what, magic=magic, size=size)
    header_len, body_len = header.header_length, header.body_length
    meta, data_start = _parse_meta(head, header_len, header_len + body_len, what)
    h = meta.get("head")
    try:
        length, crc = int(h["length"]), int(h["crc32c"])  # type: ignore[index]
    except (KeyError, TypeError, ValueError):
        raise DataCorruption(f"{what}: meta has no head length and checksum") from None
    end = data_start + length
    if length < 0 or end > header_len + body_len:
        raise DataCorruption(f"{what}: head length {length} exceeds the body")
    if len(head) < end:
        raise DataCorruption(f"{what}: {len(head)} bytes read, the head needs {end}")
    if crc32c_of(np.frombuffer(head, np.uint8, count=length, offset=data_start)) != crc:
        raise DataCorruption(f"{what}: head checksum mismatch")
    return SectionFile(what, head, meta, data_start, end, version=header.format_version)


def _check_header(data: bytes, *, what: str, magic: bytes | None, size: int | None) -> FrameHeader:
    """Check a frame header on its own (for ranged reads): magic, lengths against ``size``,
    reader version."""
    if len(data) < HEADER_LEN + _META_PREFIX.size:
        raise DataCorruption(f"{what}: truncated head ({len(data)} bytes)")
    header = read_header(data, magic=magic, what=what, size=size)
    check_reader_version(header, READER_VERSION, what=what, kind="segment ")
    return header
