"""Namespace catalog, version 1 (normative spec: docs/formats/catalog.md): the objects that make
listing an org's namespaces cost one LIST per page, and its namespace limit one small CAS.

Two kinds of objects, both under the cluster prefix (no org or namespace name can reach them):

    _lagoon/catalog/{org}/ns/{namespace}    marker: the namespace exists (one per namespace)
    _lagoon/catalog/{org}/count.json        org record: how many markers, and whether every
                                            namespace of the org has one

Both are one JSON document ``{"magic", "format_version", "min_reader_version", "crc32c", <body>}``
with ``crc32c`` over the canonical body (keys sorted, no whitespace): the compact layout of
format/envelope.py. A listing
reads only the markers' *keys*; their bodies (who created the namespace, when) are for operators
and ``lagoon repair``. Unknown body fields are kept by readers that rewrite the org record.
Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lagoon.errors import DataCorruption
from lagoon.format.envelope import EnvelopeKind, decode_envelope, encode_envelope

MARKER_MAGIC = "lagoon-namespace-marker"  # DO NOT CHANGE: persisted
ORG_MAGIC = "lagoon-org-catalog"  # DO NOT CHANGE: persisted
FORMAT_VERSION = 1
MIN_READER_VERSION = 1
READER_VERSION = 1


MARKER_ENVELOPE = EnvelopeKind(MARKER_MAGIC, "marker", "namespace marker", READER_VERSION)
ORG_ENVELOPE = EnvelopeKind(ORG_MAGIC, "catalog", "org catalog", READER_VERSION)


def _encode(kind: EnvelopeKind, body: dict[str, Any]) -> bytes:
    return encode_envelope(kind, body, format_version=FORMAT_VERSION, min_reader_version=MIN_READER_VERSION)


@dataclass(frozen=True, slots=True)
class Marker:
    """``_lagoon/catalog/{org}/ns/{namespace}``: the namespace was created (and not deleted since)."""

    org: str
    namespace: str
    created_at_ms: int
    writer: str

    def to_json(self) -> dict[str, Any]:
        return {
            "org": self.org,
            "namespace": self.namespace,
            "created_at_ms": self.created_at_ms,
            "writer": self.writer,
        }


def encode_marker(m: Marker) -> bytes:
    return _encode(MARKER_ENVELOPE, m.to_json())


def decode_marker(data: bytes, *, what: str = "namespace marker") -> Marker:
    body = decode_envelope(MARKER_ENVELOPE, data, what).body
    try:
        return Marker(
            org=str(body["org"]),
            namespace=str(body["namespace"]),
            created_at_ms=int(body["created_at_ms"]),
            writer=str(body["writer"]),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise DataCorruption(f"{what}: malformed marker ({e!r})") from None


@dataclass(frozen=True, slots=True)
class OrgCatalog:
    """``_lagoon/catalog/{org}/count.json``.

    ``count``: namespaces of the org (markers), kept by compare-and-swap on every creation and
    deletion; it may be off by the few creations that crashed between their two steps, and is
    recounted by the worker's sweep and by ``lagoon repair``. ``complete``: every namespace of the
    org has a marker (true for an org whose first namespace was created with the catalog; set by a
    sweep or repair for older orgs), so listings may read the markers alone.
    """

    count: int = 0
    complete: bool = False
    updated_ms: int = 0
    nonce: str = ""
    extra: tuple[tuple[str, Any], ...] = field(default=())

    _KNOWN = ("count", "complete", "updated_ms", "nonce")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.extra)
        out.update(count=self.count, complete=self.complete, updated_ms=self.updated_ms, nonce=self.nonce)
        return out


def encode_org(c: OrgCatalog) -> bytes:
    return _encode(ORG_ENVELOPE, c.to_json())


def decode_org(data: bytes, *, what: str = "org catalog") -> OrgCatalog:
    body = decode_envelope(ORG_ENVELOPE, data, what).body
    try:
        count = body["count"]
        complete = body["complete"]
        if (
            not isinstance(count, int)
            or isinstance(count, bool)
            or count < 0
            or not isinstance(complete, bool)
        ):
            raise ValueError("count must be a non-negative integer and complete a boolean")
        return OrgCatalog(
            count=count,
            complete=complete,
            updated_ms=int(body.get("updated_ms", 0)),
            nonce=str(body.get("nonce", "")),
            extra=tuple((k, v) for k, v in body.items() if k not in OrgCatalog._KNOWN),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise DataCorruption(f"{what}: malformed org catalog ({e})") from None


__all__ = [
    "FORMAT_VERSION",
    "MARKER_MAGIC",
    "ORG_MAGIC",
    "Marker",
    "OrgCatalog",
    "decode_marker",
    "decode_org",
    "encode_marker",
    "encode_org",
]
