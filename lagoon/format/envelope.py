"""The checksummed JSON envelope of Lagoon's JSON objects: manifests, catalog objects and
operation records (their specs in docs/formats/ describe the envelope each uses).

    {"magic": <str>, "format_version": <int>, "min_reader_version": <int>,
     ["min_writer_version": <int>,] "crc32c": <u32>, <body key>: {...}}

``crc32c`` is the CRC-32C of the canonical encoding of the body (UTF-8 JSON, keys sorted, no
whitespace), so the object stays readable with any JSON tool while any changed byte of the body
is detected. The header fields are outside the checksum; a reader checks them by value.

Two layouts, both persisted (DO NOT CHANGE either: golden files pin them byte for byte):
``indented`` keeps the header and body fields in the order written with a two-space indent
(manifests, which operators read); otherwise the object is compact with every key sorted
(catalog objects, operation records).

A reader checks, in this order: valid JSON; an object with the expected magic; integer version
fields; a body that is an object whose checksum matches; a ``min_reader_version`` this build
reads. The first four raise DataCorruption, the last IncompatibleFormat, so random or damaged
bytes never reach a body decoder. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from lagoon.errors import DataCorruption, IncompatibleFormat
from lagoon.format.framing import crc32c


@dataclass(frozen=True, slots=True)
class EnvelopeKind:
    """One kind of enveloped object."""

    magic: str  # persisted
    body_key: str  # the top-level key holding the body; persisted
    noun: str  # names the kind in error messages ("manifest", "namespace marker")
    reader_version: int  # the newest format version this build reads
    indented: bool = False  # the layout (see the module docstring)


@dataclass(frozen=True, slots=True)
class Envelope:
    """A verified envelope: its header versions and its body (checksum already matched)."""

    format_version: int
    min_reader_version: int
    body: dict[str, Any]


def canonical(value: Any) -> bytes:
    """The bytes the checksum covers: UTF-8 JSON, keys sorted, no whitespace."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def encode_envelope(
    kind: EnvelopeKind,
    body: dict[str, Any],
    *,
    format_version: int,
    min_reader_version: int,
    min_writer_version: int | None = None,
) -> bytes:
    """``body`` wrapped in ``kind``'s envelope; ``min_writer_version`` only where the format has it."""
    doc: dict[str, Any] = {
        "magic": kind.magic,
        "format_version": format_version,
        "min_reader_version": min_reader_version,
    }
    if min_writer_version is not None:
        doc["min_writer_version"] = min_writer_version
    doc["crc32c"] = crc32c(canonical(body))
    doc[kind.body_key] = body
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2 if kind.indented else orjson.OPT_SORT_KEYS)


def decode_envelope(kind: EnvelopeKind, data: bytes, what: str) -> Envelope:
    """Verify ``data`` as ``kind``'s envelope. ``what`` names the object in error messages."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise DataCorruption(f"{what}: not valid JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("magic") != kind.magic:
        raise DataCorruption(f"{what}: not a Lagoon {kind.noun} (bad magic)")
    format_version, min_reader = doc.get("format_version"), doc.get("min_reader_version")
    if not isinstance(format_version, int) or not isinstance(min_reader, int):
        raise DataCorruption(f"{what}: missing format version")
    body = doc.get(kind.body_key)
    if not isinstance(body, dict) or crc32c(canonical(body)) != doc.get("crc32c"):
        raise DataCorruption(f"{what}: checksum mismatch")
    if min_reader > kind.reader_version:
        raise IncompatibleFormat(
            f"{what}: written in format version {format_version}, which needs a reader of version "
            f"{min_reader} or newer; this Lagoon reads version {kind.reader_version}. Upgrade Lagoon."
        )
    return Envelope(format_version, min_reader, body)


__all__ = ["Envelope", "EnvelopeKind", "canonical", "decode_envelope", "encode_envelope"]
