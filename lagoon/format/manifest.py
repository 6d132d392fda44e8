"""Manifest format, versions 1 and 2 (normative spec: docs/formats/manifest.md).

A manifest version describes a namespace's indexed state completely: schema, settings, the
segment list and ``indexed_through`` (the highest WAL seq folded into segments). Versions are
created once at ``manifest/{ver}`` with create-if-absent by the indexer, compactor or GC, and
never changed. The object is one JSON document:

    {"magic": "lagoon-manifest", "format_version": 1, "min_reader_version": 1,
     "min_writer_version": 1, "crc32c": <u32>, "manifest": {...}}

where ``crc32c`` is computed over the canonical encoding of the ``manifest`` value (UTF-8 JSON,
keys sorted, no whitespace), so the file stays readable with any JSON tool yet any changed byte
is detected (the indented layout of format/envelope.py).

Format 2 (docs/rfcs/0007-branches.md) adds copy-on-write branches: a segment may be owned by
another namespace of the same org (``SegmentRef.owner``), and a ``branch`` record names the parent,
the version the branch forked at and the WAL ranges it reads from other namespaces. A manifest
that uses neither is written in format 1, byte for byte as before.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lagoon.errors import DataCorruption
from lagoon.format.envelope import EnvelopeKind, decode_envelope, encode_envelope

MAGIC = "lagoon-manifest"
FORMAT_VERSION = 1
MIN_READER_VERSION = 1
MIN_WRITER_VERSION = 1
BRANCH_FORMAT_VERSION = 2  # the format (and minimum reader) of a manifest with branch references
READER_VERSION = 2
PARENT_NONCE = "parent_nonce"  # DO NOT CHANGE: persisted key inside stats
ENVELOPE = EnvelopeKind(MAGIC, "manifest", "manifest", READER_VERSION, indented=True)


@dataclass(frozen=True, slots=True)
class SegmentRef:
    """A segment as the manifest lists it. ``files`` maps file name -> {"size", "crc32c"}."""

    id: str
    level: int
    seq_from: int
    seq_to: int
    rows: int
    bytes: int
    files: dict[str, dict[str, int]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    # The namespace (same org) whose ``seg/{id}/`` holds the files; None: this namespace (format 2).
    owner: str | None = None

    def to_json(self) -> dict[str, Any]:
        out = {
            "id": self.id,
            "level": self.level,
            "seq_from": self.seq_from,
            "seq_to": self.seq_to,
            "rows": self.rows,
            "bytes": self.bytes,
            "files": self.files,
            "info": self.info,
        }
        if self.owner is not None:
            out["owner"] = self.owner
        return out

    @staticmethod
    def from_json(d: dict[str, Any]) -> SegmentRef:
        return SegmentRef(
            id=str(d["id"]),
            level=int(d["level"]),
            seq_from=int(d["seq_from"]),
            seq_to=int(d["seq_to"]),
            rows=int(d["rows"]),
            bytes=int(d["bytes"]),
            files={str(k): {str(a): int(b) for a, b in v.items()} for k, v in d.get("files", {}).items()},
            info=dict(d.get("info", {})),
            owner=None if d.get("owner") is None else str(d["owner"]),
        )


@dataclass(frozen=True, slots=True)
class WalRange:
    """WAL entries ``first..last`` (inclusive) that a branch reads from ``namespace``'s WAL."""

    namespace: str
    first: int
    last: int

    def to_json(self) -> dict[str, Any]:
        return {"namespace": self.namespace, "from": self.first, "through": self.last}

    @staticmethod
    def from_json(d: dict[str, Any]) -> WalRange:
        return WalRange(str(d["namespace"]), int(d["from"]), int(d["through"]))


@dataclass(frozen=True, slots=True)
class Branch:
    """The lineage of a branch: created from ``parent`` at its version ``at_version`` (a WAL seq).

    ``wal`` lists the entries after ``indexed_through`` (up to ``at_version``) that live in other
    namespaces' WALs; it shrinks as the branch's own indexer folds them (``clipped``)."""

    parent: str
    at_version: int
    created_at_ms: int
    wal: tuple[WalRange, ...] = ()

    def clipped(self, indexed_through: int) -> Branch:
        """The same lineage with only the WAL ranges (parts) after ``indexed_through``."""
        wal = tuple(
            WalRange(r.namespace, max(r.first, indexed_through + 1), r.last)
            for r in self.wal
            if r.last > indexed_through
        )
        return Branch(self.parent, self.at_version, self.created_at_ms, wal)

    def wal_owner(self, seq: int) -> str | None:
        """The namespace whose WAL holds entry ``seq`` (None: the branch's own)."""
        for r in self.wal:
            if r.first <= seq <= r.last:
                return r.namespace
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "parent": self.parent,
            "at_version": self.at_version,
            "created_at_ms": self.created_at_ms,
            "wal": [r.to_json() for r in self.wal],
        }

    @staticmethod
    def from_json(d: dict[str, Any]) -> Branch:
        return Branch(
            parent=str(d["parent"]),
            at_version=int(d["at_version"]),
            created_at_ms=int(d["created_at_ms"]),
            wal=tuple(WalRange.from_json(dict(r)) for r in d.get("wal", [])),
        )


@dataclass(frozen=True, slots=True)
class PendingDelete:
    """An object (or prefix) out of the live set, deleted by GC once the grace period has passed.

    On disk (``pending_delete`` of the manifest) each record is an object with the fields that are
    set, in this order: ``segment`` + ``prefix`` (a segment and its files, prefix relative to the
    namespace root), or ``key`` (one object), or ``wal_through`` (the WAL entries up to that seq),
    then ``removed_at_version`` and ``removed_at`` (store time, ms). Fields this version does not
    know are kept in ``extra`` and written back as they were read.
    """

    removed_at_version: int | None = None
    removed_at: int | None = None
    segment: str | None = None
    prefix: str | None = None
    key: str | None = None
    wal_through: int | None = None
    extra: tuple[tuple[str, Any], ...] = ()

    _ORDER = ("segment", "prefix", "key", "wal_through", "removed_at_version", "removed_at")

    @property
    def segment_id(self) -> str | None:
        """The segment this record removes (from ``segment``, or a ``seg/<id>/`` prefix)."""
        if isinstance(self.segment, str):
            return self.segment
        if isinstance(self.prefix, str) and self.prefix.startswith("seg/"):
            return self.prefix[4:].strip("/") or None
        return None

    @property
    def wal_seq(self) -> int | None:
        """The last WAL seq this record removes."""
        w = self.wal_through
        return w if isinstance(w, int) and not isinstance(w, bool) else None

    @property
    def removed_at_ms(self) -> int:
        return int(self.removed_at or 0)

    def to_json(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in self._ORDER if getattr(self, name) is not None}
        out.update(self.extra)
        return out

    @staticmethod
    def from_json(d: dict[str, Any]) -> PendingDelete:
        known = {k: d[k] for k in PendingDelete._ORDER if k in d}
        extra = tuple((k, v) for k, v in d.items() if k not in PendingDelete._ORDER)
        return PendingDelete(**known, extra=extra)


@dataclass(frozen=True, slots=True)
class Manifest:
    version: int
    nonce: str
    created_at_ms: int
    writer: str
    indexed_through: int = 0
    schema: dict[str, Any] | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    segments: tuple[SegmentRef, ...] = ()
    # Objects removed from the live set, deleted by GC once the grace period has passed.
    pending_delete: tuple[PendingDelete, ...] = ()
    created_at_namespace_ms: int | None = None
    # The nonce of the version this one was made from ("" for version 1; None in files written
    # before it was recorded). Stored inside ``stats`` as ``stats.parent_nonce``.
    parent_nonce: str | None = None
    stats: dict[str, Any] = field(default_factory=dict)  # informational counters, without parent_nonce
    branch: Branch | None = None  # set on a branch's manifests (format 2)

    @property
    def format_version(self) -> int:
        """2 when the manifest refers to other namespaces' objects (a branch), else 1."""
        if self.branch is not None or any(s.owner is not None for s in self.segments):
            return BRANCH_FORMAT_VERSION
        return FORMAT_VERSION

    def to_json(self) -> dict[str, Any]:
        out = {
            "version": self.version,
            "nonce": self.nonce,
            "created_at_ms": self.created_at_ms,
            "writer": self.writer,
            "indexed_through": self.indexed_through,
            "schema": self.schema,
            "settings": self.settings,
            "segments": [s.to_json() for s in self.segments],
            "pending_delete": [p.to_json() for p in self.pending_delete],
            "created_at_namespace_ms": self.created_at_namespace_ms,
            "stats": self.stats
            if self.parent_nonce is None
            else {**self.stats, PARENT_NONCE: self.parent_nonce},
        }
        if self.branch is not None:
            out["branch"] = self.branch.to_json()
        return out

    @staticmethod
    def from_json(d: dict[str, Any]) -> Manifest:
        stats = dict(d.get("stats") or {})
        parent = stats.pop(PARENT_NONCE, None)
        return Manifest(
            version=int(d["version"]),
            nonce=str(d["nonce"]),
            created_at_ms=int(d["created_at_ms"]),
            writer=str(d["writer"]),
            indexed_through=int(d["indexed_through"]),
            schema=d.get("schema"),
            settings=dict(d.get("settings") or {}),
            segments=tuple(SegmentRef.from_json(s) for s in d.get("segments", [])),
            pending_delete=tuple(PendingDelete.from_json(dict(p)) for p in d.get("pending_delete", [])),
            created_at_namespace_ms=d.get("created_at_namespace_ms"),
            parent_nonce=None if parent is None else str(parent),
            stats=stats,
            branch=None if d.get("branch") is None else Branch.from_json(dict(d["branch"])),
        )


def encode_manifest(m: Manifest) -> bytes:
    version = m.format_version
    return encode_envelope(
        ENVELOPE,
        m.to_json(),
        format_version=version,
        min_reader_version=max(MIN_READER_VERSION, version),
        min_writer_version=MIN_WRITER_VERSION,
    )


def decode_manifest(data: bytes, *, what: str = "manifest") -> Manifest:
    body = decode_envelope(ENVELOPE, data, what).body
    try:
        return Manifest.from_json(body)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise DataCorruption(f"{what}: malformed manifest body ({e!r})") from None
