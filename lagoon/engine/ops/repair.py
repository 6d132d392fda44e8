"""``lagoon repair``: a file-system check of each namespace in the bucket, and the fixes that are safe.

It reads what is there and trusts nothing it has not verified. Per namespace (``{org}/{ns}/``),
in this order (docs/operations.md has the operator's version, with every finding and its fix):

1. Inventory: one LIST of the namespace's folder. Every object is of a known kind (WAL entry,
   manifest version, CURRENT, segment file) or a stray.
2. Manifest chain: every version is fetched and decoded (magic, format version, CRC-32C, version
   number, ``format/invariants.py``); the versions from the oldest to the latest must be dense and
   each must name its predecessor's nonce as parent.
3. CURRENT hint: missing, garbled, ahead of the latest version, below the oldest, or lagging.
4. Segments: every file of every segment the latest manifest lists is fetched and checked (size
   and CRC-32C against the manifest, then the segment is opened: frames, sections, meta).
5. WAL: the entries after ``indexed_through`` are dense up to the head, each decodes and passes
   ``check_entry`` against the schema in effect before it.
6. Strays: objects under the namespace that are of no Lagoon kind (junk folders, editor files,
   a file in a live segment's folder that the manifest does not list).
7. Orphans: segment folders nothing references (reported; GC removes them after the grace period).
8. Branch references: a reference marker in every other namespace whose segments or WAL a present
   manifest version reads (without it, that owner's GC may delete them); a missing one is written.

Fixes (not with ``dry_run``), each safe while servers and workers run:

- a missing or corrupt manifest version that CURRENT holds a verified copy of is restored from it
  (create-if-absent, or If-Match on the corrupt bytes' etag);
- a corrupt latest version (no copy) is moved aside: the namespace falls back to the version
  before it, whose WAL entries are read again (nothing lost while they exist);
- a hole in the chain: the versions below it are moved aside (readers start from CURRENT; every
  version above the hole supersedes them);
- CURRENT: advanced with the committers' monotonic compare-and-swap, or rewritten with If-Match
  when garbled or ahead;
- a damaged segment is rebuilt under a new id, from its own intact files (an ``fts``/``flt``
  index is derived from ``docs``), else row by row from the WAL entries its rows came from, else
  its rows are lost: they become tombstones (older versions of those documents do not come back)
  and the report names the WAL seqs and the number of documents. The new segment replaces the old
  in a new manifest version (create-if-absent: a concurrent commit makes repair look again); the
  old files go to ``pending_delete`` like any replaced segment, so GC removes them later;
- a torn or corrupt WAL entry in the unindexed tail is copied to the quarantine and its slot is
  replaced (If-Match) by an empty entry, which readers fold as nothing and writers see as taken;
  a missing entry in the tail is filled with an empty entry (create-if-absent). The report says
  what the damaged entry held, as far as it can be read;
- strays are moved to the quarantine.

Per org, once its namespaces are checked (``check_catalog``): the namespace catalog
(engine/catalog.py) against the namespaces that exist: a marker for each, none for a name that
does not exist (unless younger than ``YOUNG_MARKER_SECS``: a creation may be committing), the
org's count equal to the markers. The fix is ``Catalog.reconcile`` (create-if-absent markers,
deletes each followed by a fresh existence read, the count by compare-and-swap).

"Moved aside" means copied to ``_lagoon/quarantine/{org}/{ns}/{store time ms}/{relative key}``,
then deleted. Nothing a retained manifest references is ever deleted. After fixing, the namespace
is inspected again (up to ``MAX_ROUNDS`` rounds of fixes), so the report ends with its true state;
a second run finds nothing to fix (idempotent).
"""

from __future__ import annotations

import asyncio
import dataclasses
import struct
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import msgspec
import numpy as np
import pyarrow as pa

from lagoon.config import Settings
from lagoon.engine import manifest_store, refs
from lagoon.engine.catalog import YOUNG_MARKER_SECS, Catalog, CatalogPlan, namespace_exists
from lagoon.engine.components import Components
from lagoon.engine.indexer import (
    align,
    fold_entries,
    newest_per_id,
    segment_record,
    store_time_ms,
    target_schema,
)
from lagoon.engine.manifest_store import ManifestConflict, advance_hint, read_version
from lagoon.engine.segment_io import SegmentIO, verify_file
from lagoon.errors import DataCorruption, LagoonError
from lagoon.format.framing import HEADER_LEN, TRAILER_LEN
from lagoon.format.invariants import manifest_problems, successor_problems
from lagoon.format.keys import (
    CATALOG_PREFIX,
    CLUSTER_PREFIX,
    NAMESPACE_RE,
    ORG_RE,
    NamespaceKeys,
    namespace_from_prefix,
    org_prefix,
    parse_manifest_version,
    parse_wal_seq,
    quarantine_key,
)
from lagoon.format.manifest import Manifest, SegmentRef, decode_manifest, encode_manifest
from lagoon.format.schema_patch import schema_after
from lagoon.format.segment import DOCS_FILE, fts_file
from lagoon.format.wal import (
    OP_COLUMN,
    OP_DELETE,
    WalEntry,
    check_entry,
    decode_entry,
    encode_entry,
    recover_schema,
    seal_entry,
)
from lagoon.index.segment.build import SEQ_COLUMN, build_segment, new_segment_id
from lagoon.index.segment.read import SegmentReader
from lagoon.index.text.bm25 import Postings
from lagoon.schema import Schema, unstored
from lagoon.storage.base import (
    AlreadyExists,
    IfMatch,
    ObjectMeta,
    ObjectNotFound,
    ObjectStore,
    PreconditionFailed,
    PutMode,
    StorageError,
)

Severity = Literal["error", "warning", "info"]
T = TypeVar("T")
Action = Callable[[], Awaitable[str]]

_PARALLELISM = 16
MAX_PASSES = 3
MAX_ROUNDS = 5
_SHOWN = 10
REPAIR_WRITER = "lagoon-repair"
DOCS_WHOLE = "segment"  # how a problem of the segment as a whole (not one file) is named


class FixFailed(Exception):
    """A fix could not be applied (the message says why); the next round or run retries."""


@dataclass
class Finding:
    check: str
    """``manifests`` | ``current`` | ``segments`` | ``wal`` | ``strays`` | ``orphans`` | ``references``
    | ``namespace``."""
    severity: Severity
    message: str
    fix: str = ""
    """What repair does about it ("" = nothing it may do)."""
    fixed: bool = False
    fix_error: str = ""
    lost_documents: int = 0
    """Documents no object in the bucket holds any more (set by segment and WAL fixes)."""
    action: Action | None = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "severity": self.severity,
            "message": self.message,
            "fix": self.fix,
            "fixed": self.fixed,
            "fix_error": self.fix_error,
            "lost_documents": self.lost_documents,
        }


class _Verdict:
    """``errors`` and ``ok`` of a report with ``findings`` and ``remaining``."""

    findings: list[Finding]
    remaining: list[Finding] | None

    @property
    def errors(self) -> list[Finding]:
        if self.remaining is not None:
            return [f for f in self.remaining if f.severity == "error" and not f.fixed]
        return [f for f in self.findings if f.severity == "error" and not f.fixed]

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass
class NamespaceReport(_Verdict):
    org: str
    namespace: str
    latest_version: int = 0
    oldest_version: int = 0
    indexed_through: int = 0
    wal_head: int = 0
    segments: int = 0
    passes: int = 1
    rounds: int = 0
    findings: list[Finding] = field(default_factory=list)
    remaining: list[Finding] | None = None
    """Errors of the final inspection after fixing (None: nothing was fixed, ``findings`` tells)."""

    @property
    def lost_documents(self) -> int:
        return sum(f.lost_documents for f in self.findings if f.fixed)

    def to_json(self) -> dict[str, Any]:
        return {
            "org": self.org,
            "namespace": self.namespace,
            "ok": self.ok,
            "latest_version": self.latest_version,
            "oldest_version": self.oldest_version,
            "indexed_through": self.indexed_through,
            "wal_head": self.wal_head,
            "segments": self.segments,
            "passes": self.passes,
            "rounds": self.rounds,
            "lost_documents": self.lost_documents,
            "findings": [f.to_json() for f in self.findings],
            "remaining": [f.to_json() for f in self.errors],
        }


@dataclass
class CatalogReport(_Verdict):
    """The namespace catalog of one org (markers and count, engine/catalog.py) against the
    namespaces that exist."""

    org: str
    namespaces: int = 0
    """Namespaces of the org that exist."""
    markers: int = 0
    count: int | None = None
    """The org record's count (None: no readable record)."""
    findings: list[Finding] = field(default_factory=list)
    remaining: list[Finding] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "org": self.org,
            "ok": self.ok,
            "namespaces": self.namespaces,
            "markers": self.markers,
            "count": self.count,
            "findings": [f.to_json() for f in self.findings],
            "remaining": [f.to_json() for f in self.errors],
        }


def _finding_lines(findings: Sequence[Finding], dry_run: bool) -> list[str]:
    lines = []
    for f in findings:
        label = "FIXED" if f.fixed else f.severity.upper()
        line = f"  {label:<7} {f.check}: {f.message}"
        if f.fixed:
            line += f" -> {f.fix}"
        elif f.fix:
            line += f" [{'would ' if dry_run else ''}fix: {f.fix}]"
            if f.fix_error:
                line += f" (fix failed: {f.fix_error})"
        lines.append(line)
    return lines


def _verdict(errors: int, remain: bool, problems: Sequence[Finding]) -> str:
    if errors:
        return _n(errors, "error") + (" remain" if remain else "")
    if not problems:
        return "OK"
    if all(f.fixed for f in problems):
        return "repaired"
    return "OK with warnings"


@dataclass
class RepairReport:
    dry_run: bool
    namespaces: list[NamespaceReport] = field(default_factory=list)
    catalogs: list[CatalogReport] = field(default_factory=list)

    def _all_findings(self) -> list[Finding]:
        return [f for r in [*self.namespaces, *self.catalogs] for f in r.findings]

    @property
    def ok(self) -> bool:
        return all(n.ok for n in self.namespaces) and all(c.ok for c in self.catalogs)

    @property
    def fixes_applied(self) -> int:
        return sum(f.fixed for f in self._all_findings())

    @property
    def fixes_possible(self) -> int:
        return sum(bool(f.fix) and not f.fixed for f in self._all_findings())

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "ok": self.ok,
            "fixes_applied": self.fixes_applied,
            "lost_documents": sum(n.lost_documents for n in self.namespaces),
            "namespaces": [n.to_json() for n in self.namespaces],
            "catalogs": [c.to_json() for c in self.catalogs],
        }

    def _render_catalog(self, c: CatalogReport) -> list[str]:
        count = "no org record" if c.count is None else f"count {c.count}"
        problems = [f for f in c.findings if f.severity != "info"]
        verdict = _verdict(len(c.errors), c.remaining is not None, problems)
        head = f"{c.org} (namespace catalog): {verdict} ({c.namespaces} namespaces, {c.markers} markers, {count})"
        return [head, *_finding_lines(c.findings, self.dry_run)]

    def render(self) -> str:
        lines = []
        for n in self.namespaces:
            manifest = f"manifest v{n.latest_version}" if n.latest_version else "no manifest yet"
            state = f"{manifest}, indexed through {n.indexed_through}, WAL head {n.wal_head}, {n.segments} segments"
            problems = [f for f in n.findings if f.severity != "info"]
            verdict = _verdict(len(n.errors), n.remaining is not None, problems)
            lines.append(f"{n.org}/{n.namespace}: {verdict} ({state})")
            lines += _finding_lines(n.findings, self.dry_run)
            if n.remaining is not None:
                for f in n.errors:
                    if f not in n.findings:
                        lines.append(f"  {'ERROR':<7} {f.check}: {f.message} (after repair)")
            if n.lost_documents:
                lines.append(f"  documents no object in the bucket holds any more: {n.lost_documents}")
        for c in self.catalogs:
            lines += self._render_catalog(c)
        bad = sum(not n.ok for n in self.namespaces)
        summary = f"Checked {_n(len(self.namespaces), 'namespace')}: {bad} with errors"
        if self.catalogs:
            summary += f"; {_n(len(self.catalogs), 'namespace catalog')}: {sum(not c.ok for c in self.catalogs)} with errors"
        if self.dry_run:
            summary += f"; dry run, nothing changed ({_n(self.fixes_possible, 'fix', 'fixes')} available)."
        else:
            summary += f"; {_n(self.fixes_applied, 'fix', 'fixes')} applied."
        lines.append(summary)
        return "\n".join(lines) + "\n"


# --- helpers ---------------------------------------------------------------------------------


async def _bounded(coros: Iterable[Awaitable[T]]) -> list[T]:
    sem = asyncio.Semaphore(_PARALLELISM)

    async def run(c: Awaitable[T]) -> T:
        async with sem:
            return await c

    return list(await asyncio.gather(*(run(c) for c in coros)))


async def _exists(store: ObjectStore, key: str) -> ObjectMeta | None:
    try:
        return await store.head(key)
    except ObjectNotFound:
        return None


async def _get(store: ObjectStore, key: str) -> tuple[bytes, str | None] | None:
    """The object's bytes and etag (None when it is missing)."""
    try:
        meta = await store.head(key)
        return await store.get(key), meta.etag
    except ObjectNotFound:
        return None


def _schema_of(m: Manifest | None) -> Schema:
    """The schema a manifest holds (an empty one before the first write, or with no manifest)."""
    return Schema.from_storage(m.schema) if m is not None and m.schema else Schema()


def _n(count: int, singular: str, plural: str = "") -> str:
    return f"{count} {singular if count == 1 else (plural or singular + 's')}"


def _spans(numbers: Iterable[int]) -> str:
    """[3, 4, 5, 9] -> "3..5, 9"."""
    out: list[str] = []
    nums = sorted(set(numbers))
    i = 0
    while i < len(nums):
        j = i
        while j + 1 < len(nums) and nums[j + 1] == nums[j] + 1:
            j += 1
        out.append(str(nums[i]) if i == j else f"{nums[i]}..{nums[j]}")
        i = j + 1
    if len(out) > _SHOWN:
        out = [*out[:_SHOWN], f"... ({len(out) - _SHOWN} more ranges)"]
    return ", ".join(out)


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def _age(secs: float) -> str:
    if secs < 120:
        return f"{max(secs, 0):.0f} s"
    if secs < 7200:
        return f"{secs / 60:.0f} min"
    if secs < 172800:
        return f"{secs / 3600:.0f} h"
    return f"{secs / 86400:.0f} d"


def _parse_hint(raw: bytes) -> int | None:
    """The version CURRENT names (it holds a copy of that manifest, or the older decimal form);
    None when it is garbled."""
    if raw.lstrip().startswith(b"{"):
        try:
            return decode_manifest(raw, what="CURRENT").version
        except DataCorruption:
            return None
    try:
        value = int(raw.decode("ascii").strip())
    except (ValueError, UnicodeDecodeError):
        return None
    return value if value >= 0 else None


def _hint_copy(raw: bytes) -> Manifest | None:
    if not raw.lstrip().startswith(b"{"):
        return None
    try:
        return decode_manifest(raw, what="CURRENT")
    except DataCorruption:
        return None


async def _quarantine(store: ObjectStore, keys: NamespaceKeys, key: str, data: bytes | None = None) -> str:
    """Copy ``key`` to the quarantine (its bytes, read now unless given); returns the copy's key."""
    if data is None:
        data = await store.get(key)
    stamp = await store_time_ms(store)
    target = quarantine_key(keys, key[len(keys.root) :], stamp)
    await store.put(target, data, PutMode.OVERWRITE)
    return target


async def _move_aside(store: ObjectStore, keys: NamespaceKeys, key: str) -> str:
    target = await _quarantine(store, keys, key)
    await store.delete(key)
    return target


def _void_entry(seq: int, components: Components, schema: Schema | None = None) -> bytes:
    """An entry that changes no documents: what readers fold for a quarantined or lost slot
    (with ``schema``: the schema the entries after it were written under)."""
    return encode_entry(
        seal_entry(
            WalEntry(
                seq=seq,
                nonce=components.nonce(),
                created_at_ms=components.clock.now_ms(),
                writer=REPAIR_WRITER,
                requests=0,
                schema=schema.to_storage() if schema is not None else None,
            )
        )
    )


class _LooseBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    seq: int = 0
    writer: str = ""
    created_at_ms: int = 0
    requests: int = 0
    truncate: bool = False
    docs: bytes = b""


def describe_entry(raw: bytes) -> str:
    """What a damaged WAL entry held, as far as its bytes still tell (no checksum trusted)."""
    if len(raw) < HEADER_LEN:
        return f"{len(raw)} bytes, not even a frame header"
    magic, _fmt, _min_reader, _min_writer, _flags, header_len, body_len, _ = struct.unpack_from(
        "<4sHHHHIQQ", raw
    )
    whole = header_len + body_len + TRAILER_LEN
    parts = [f"{len(raw)} of {whole} bytes" if len(raw) != whole else f"{len(raw)} bytes"]
    if magic != b"LGWL":
        parts.append(f"magic {magic!r}")
        return ", ".join(parts)
    body = raw[header_len : header_len + body_len]
    try:
        loose = msgspec.msgpack.decode(body, type=_LooseBody)
    except (msgspec.DecodeError, msgspec.ValidationError):
        parts.append("body unreadable")
        return ", ".join(parts)
    parts.append(f"seq {loose.seq}, {_n(loose.requests, 'request')} by {loose.writer or '?'}")
    if loose.truncate:
        parts.append("a namespace deletion")
    if loose.docs:
        try:
            with pa.ipc.open_stream(pa.py_buffer(loose.docs)) as reader:
                table = reader.read_all()
            ids = table.column("id").to_pylist() if "id" in table.column_names else []
            shown = ", ".join(str(i) for i in ids[:_SHOWN]) + (" ..." if len(ids) > _SHOWN else "")
            parts.append(f"{_n(table.num_rows, 'document row')} (ids {shown})")
        except (pa.ArrowException, ValueError, OSError):
            parts.append("document table unreadable")
    else:
        parts.append("no documents")
    return ", ".join(parts)


def _entry_rows(raw: bytes) -> int:
    """Document rows a damaged entry held, if its table still reads (else 0: unknown)."""
    try:
        body = raw[HEADER_LEN:-TRAILER_LEN] if len(raw) > HEADER_LEN + TRAILER_LEN else b""
        loose = msgspec.msgpack.decode(body, type=_LooseBody)
        if not loose.docs:
            return 0
        with pa.ipc.open_stream(pa.py_buffer(loose.docs)) as reader:
            return int(reader.read_all().num_rows)
    except (msgspec.DecodeError, msgspec.ValidationError, pa.ArrowException, ValueError, OSError):
        return 0


# --- one inspection --------------------------------------------------------------------------


@dataclass
class _Hint:
    present: bool = False
    raw: bytes = b""
    value: int | None = None
    etag: str | None = None
    copy: Manifest | None = None


@dataclass
class _Context:
    store: ObjectStore
    keys: NamespaceKeys
    grace_secs: float
    components: Components
    dry_run: bool


@dataclass
class _Pass:
    ctx: _Context
    report: NamespaceReport
    inventory: dict[str, ObjectMeta] = field(default_factory=dict)
    manifests: dict[int, Manifest] = field(default_factory=dict)
    latest: Manifest | None = None
    top: int = 0
    oldest: int = 0
    hint: _Hint = field(default_factory=_Hint)

    def add(
        self, check: str, severity: Severity, message: str, fix: str = "", action: Action | None = None
    ) -> Finding:
        f = Finding(check, severity, message, fix, action=action)
        self.report.findings.append(f)
        return f

    @property
    def store(self) -> ObjectStore:
        return self.ctx.store

    @property
    def keys(self) -> NamespaceKeys:
        return self.ctx.keys


async def _take_inventory(p: _Pass) -> None:
    async for meta in p.store.list(p.keys.root):
        p.inventory[meta.key] = meta


async def _read_hint(p: _Pass) -> None:
    got = await _get(p.store, p.keys.current)
    hint = p.hint
    if got is not None:
        hint.present, (hint.raw, hint.etag) = True, got
        hint.value = _parse_hint(hint.raw)
        hint.copy = _hint_copy(hint.raw)


async def _check_manifests(p: _Pass) -> None:
    store, keys = p.store, p.keys
    versions = {v for k in p.inventory if (v := parse_manifest_version(k)) is not None}
    top = max(versions, default=0)
    while await _exists(store, keys.manifest(top + 1)) is not None:
        top += 1
        versions.add(top)
        p.add("manifests", "warning", f"LIST did not show manifest v{top}, a probe found it (listing lag?)")
    copy = p.hint.copy
    if copy is not None and copy.version > top and not manifest_problems(copy):
        # CURRENT holds a verified copy of a version that no longer exists: restore it.
        p.add(
            "manifests",
            "error",
            f"manifest v{copy.version} is missing, but CURRENT names it and holds a verified copy",
            f"restore manifest v{copy.version} from CURRENT's copy",
            _restore_action(p, copy, None),
        )
    p.top, p.oldest = top, min(versions, default=0)
    p.report.latest_version, p.report.oldest_version = top, p.oldest
    if not versions:
        return

    async def load(v: int) -> tuple[int, Manifest | None, str, str | None]:
        meta = await _exists(store, keys.manifest(v))
        if meta is None:
            return v, None, "deleted while being checked", None
        try:
            return v, await read_version(store, keys, v), "", meta.etag
        except ObjectNotFound:
            return v, None, "deleted while being checked", None
        except LagoonError as e:  # DataCorruption, IncompatibleFormat
            return v, None, str(e), meta.etag

    corrupt: list[int] = []
    for v, m, problem, etag in await _bounded(load(v) for v in sorted(versions)):
        if m is not None:
            p.manifests[v] = m
            for broken in manifest_problems(m):
                p.add("manifests", "error", f"manifest v{v} breaks an invariant: {broken}")
            continue
        if problem == "deleted while being checked":
            continue
        corrupt.append(v)
        if copy is not None and copy.version == v and not manifest_problems(copy):
            p.add(
                "manifests",
                "error",
                f"manifest v{v} is unreadable: {problem}",
                f"restore manifest v{v} from CURRENT's verified copy",
                _restore_action(p, copy, etag),
            )
        elif v == top and v > 1:
            p.add(
                "manifests",
                "error",
                f"manifest v{v} is unreadable: {problem} (the namespace cannot be read)",
                f"move v{v} aside; the namespace falls back to v{v - 1} and re-reads the WAL after it",
                _move_manifest_action(p, v, etag),
            )
        elif v == top:
            p.add(
                "manifests",
                "error",
                f"manifest v{v} is unreadable: {problem} (the namespace cannot be read)",
                f"move v{v} aside; the namespace is read from its WAL",
                _move_manifest_action(p, v, etag),
            )
        else:
            p.add(
                "manifests",
                "error",
                f"manifest v{v} is unreadable: {problem} (readers of this version fail)",
                f"move v{v} aside (v{top} supersedes it)",
                _move_manifest_action(p, v, etag),
            )
    holes = [v for v in range(p.oldest, top + 1) if v not in versions]
    if holes:
        below = [v for v in sorted(versions) if v < max(holes)]
        p.add(
            "manifests",
            "error",
            f"manifest versions {_spans(holes)} are missing between v{p.oldest} and v{top}: readers "
            "probing forward stop at the first hole and miss every later version",
            f"move the versions below the hole aside ({_spans(below)}; v{top} supersedes them)",
            _move_below_hole_action(p, max(holes)),
        )
    for v in range(p.oldest, top):
        older, newer = p.manifests.get(v), p.manifests.get(v + 1)
        if older is None or newer is None:
            continue
        for broken in successor_problems(older, newer):
            if "parent nonce" not in broken and broken not in manifest_problems(newer):
                p.add("manifests", "error", f"manifest v{v + 1} does not follow v{v}: {broken}")
        parent = newer.parent_nonce
        if parent and parent != older.nonce:
            # v+1 was built on another v: this v is a re-creation of a version GC had deleted (a
            # zombie committer's), below the chain readers follow. v+1 supersedes it and
            # everything below it, as GC would have decided.
            p.add(
                "manifests",
                "error",
                f"manifest v{v + 1} names parent nonce {str(parent)[:16]}, not v{v}'s {older.nonce[:16]}: "
                f"the chain forks (v{v} was re-created after GC deleted it, by a zombie committer)",
                f"move v{v} and the versions below it aside (v{v + 1} supersedes them)",
                _move_below_hole_action(p, v + 1),
            )
    p.latest = p.manifests.get(top)


def _restore_action(p: _Pass, copy: Manifest, etag: str | None) -> Action:
    async def run() -> str:
        key = p.keys.manifest(copy.version)
        mode = IfMatch(etag) if etag is not None else PutMode.CREATE
        try:
            if etag is not None:
                await _quarantine(p.store, p.keys, key)
            await p.store.put(key, encode_manifest(copy), mode)
        except (AlreadyExists, PreconditionFailed):
            raise FixFailed(f"{key} changed meanwhile") from None
        return f"manifest v{copy.version} restored from CURRENT's copy"

    return run


def _move_manifest_action(p: _Pass, version: int, etag: str | None) -> Action:
    async def run() -> str:
        key = p.keys.manifest(version)
        if version == p.top and await _exists(p.store, p.keys.manifest(version + 1)) is not None:
            raise FixFailed(f"manifest v{version + 1} appeared meanwhile")
        meta = await _exists(p.store, key)
        if meta is None or (etag is not None and meta.etag != etag):
            raise FixFailed(f"{key} changed meanwhile")
        target = await _move_aside(p.store, p.keys, key)
        return f"moved to {target}"

    return run


def _move_below_hole_action(p: _Pass, hole: int) -> Action:
    async def run() -> str:
        moved = []
        for v in sorted(x for x in p.manifests.keys() | set(range(p.oldest, hole)) if x < hole):
            key = p.keys.manifest(v)
            if await _exists(p.store, key) is None:
                continue
            await _move_aside(p.store, p.keys, key)
            moved.append(v)
        return f"versions {_spans(moved)} moved to the quarantine" if moved else "nothing left below the hole"

    return run


async def _check_hint(p: _Pass) -> None:
    hint = p.hint
    if (
        hint.present
        and hint.value is not None
        and hint.copy is not None
        and hint.value in p.manifests
        and hint.copy.nonce != p.manifests[hint.value].nonce
    ):
        hint.value = None  # a foreign copy: readers would use it instead of the stored version
    top, oldest = p.top, p.oldest
    if hint.copy is not None and hint.copy.version > top and not manifest_problems(hint.copy):
        return  # the manifest check restores the version from this copy first
    if not hint.present:
        if top:
            p.add(
                "current",
                "warning",
                f"CURRENT is missing (latest manifest v{top})",
                f"create CURRENT = {top}",
                _advance_hint_action(p),
            )
        return
    if hint.value is None:
        p.add(
            "current",
            "error",
            f"CURRENT is garbled ({hint.raw[:40]!r}); readers then probe from v1",
            f"rewrite CURRENT to {top}",
            _rewrite_hint_action(p),
        )
    elif hint.value > top:
        latest = f"the latest manifest is v{top}" if top else "there is no manifest"
        p.add(
            "current",
            "error",
            f"CURRENT names v{hint.value} but {latest}: committers take every new version for an "
            "unreachable fork, so indexing stalls",
            f"rewrite CURRENT to {top}",
            _rewrite_hint_action(p),
        )
    elif top and hint.value < oldest:
        p.add(
            "current",
            "error",
            f"CURRENT names v{hint.value}, below the oldest surviving version v{oldest}: readers "
            "starting from it find no manifest",
            f"advance CURRENT to {top}",
            _advance_hint_action(p),
        )
    elif hint.value < top:
        p.add(
            "current",
            "info",
            f"CURRENT lags (v{hint.value}, latest v{top}); readers probe forward",
            f"advance CURRENT to {top}",
            _advance_hint_action(p),
        )


def _latest_or_top(p: _Pass) -> Manifest | int:
    return p.latest if p.latest is not None and p.latest.version == p.top else p.top


async def _hint_healthy(p: _Pass) -> str:
    after = _parse_hint(await p.store.get(p.keys.current))
    if (
        after is not None
        and after >= p.top
        and (after == 0 or await _exists(p.store, p.keys.manifest(after)))
    ):
        return f"CURRENT now names v{after}"
    raise FixFailed(f"CURRENT reads {after!r} afterwards; re-run repair")


def _advance_hint_action(p: _Pass) -> Action:
    async def run() -> str:
        await advance_hint(p.store, p.keys, _latest_or_top(p))
        return await _hint_healthy(p)

    return run


def _rewrite_hint_action(p: _Pass) -> Action:
    async def run() -> str:
        top, hint = p.top, p.hint
        # Replace exactly the bytes judged bad, and only while no newer version exists.
        if await _exists(p.store, p.keys.manifest(top + 1)) is not None:
            raise FixFailed(f"manifest v{top + 1} appeared meanwhile; re-run repair")
        mode = IfMatch(hint.etag) if hint.etag is not None else PutMode.OVERWRITE
        latest = _latest_or_top(p)
        data = encode_manifest(latest) if isinstance(latest, Manifest) else str(top).encode()
        try:
            await p.store.put(p.keys.current, data, mode)
        except PreconditionFailed:
            raise FixFailed("CURRENT changed while repairing; re-run repair") from None
        return await _hint_healthy(p)

    return run


# --- segments --------------------------------------------------------------------------------


@dataclass
class _BadSegment:
    ref: SegmentRef
    bad: dict[str, str]  # file name -> what is wrong ("" key: the segment as a whole)


async def _verify_segment(
    store: ObjectStore, keys: NamespaceKeys, ref: SegmentRef, schema: Schema
) -> _BadSegment | None:
    keys = keys.sibling(ref.owner)  # a branch's segment may be its parent's
    names = sorted(ref.files)
    blobs = await _bounded(_get(store, keys.segment_file(ref.id, n)) for n in names)
    bad: dict[str, str] = {}
    files: dict[str, bytes] = {}
    for name, got in zip(names, blobs, strict=True):
        spec = ref.files[name]
        if got is None:
            bad[name] = "missing"
            continue
        data = got[0]
        if "size" in spec and len(data) != spec["size"]:
            bad[name] = f"{len(data)} bytes, the manifest says {spec['size']}"
        elif not verify_file(ref, name, data):
            bad[name] = "checksum mismatch"
        else:
            files[name] = data
    if DOCS_FILE not in ref.files:
        bad[""] = f"the manifest lists no {DOCS_FILE!r} file"
    if not bad:
        try:
            await asyncio.to_thread(SegmentReader.from_files, ref, files, schema)
        except LagoonError as e:
            bad[""] = f"does not open: {e}"
    return _BadSegment(ref, bad) if bad else None


async def _check_segments(p: _Pass) -> None:
    m = p.latest
    if m is None:
        return
    p.report.segments = len(m.segments)
    for ref in m.segments:
        if ref.seq_to > m.indexed_through:
            p.add(
                "segments",
                "error",
                f"segment {ref.id} covers WAL seqs up to {ref.seq_to}, beyond indexed_through {m.indexed_through}",
            )
    schema = _schema_of(m)
    damaged: list[_BadSegment] = []
    for ref in m.segments:  # one segment in memory at a time
        bad = await _verify_segment(p.store, p.keys, ref, schema)
        if bad is not None:
            damaged.append(bad)
    if not damaged:
        return
    what = "; ".join(
        f"{b.ref.id} ({', '.join(f'{n or DOCS_WHOLE}: {why}' for n, why in sorted(b.bad.items()))})"
        for b in damaged[:_SHOWN]
    )
    finding = p.add(
        "segments",
        "error",
        f"{_n(len(damaged), 'damaged segment')} in manifest v{m.version}: {what}; queries that need them fail",
        "rebuild each from its intact files or the WAL entries it covers (else its lost rows become "
        "tombstones) and commit a new manifest version",
    )
    finding.action = _rebuild_action(p, m, schema, damaged, finding)


async def _wal_entry(store: ObjectStore, keys: NamespaceKeys, seq: int) -> WalEntry | None:
    """A WAL entry if it exists and reads (a damaged one is not a source: None)."""
    try:
        entry = decode_entry(await store.get(keys.wal(seq)), what=keys.wal(seq))
    except (ObjectNotFound, LagoonError):
        return None
    return entry if entry.seq == seq else None


@dataclass
class _Salvage:
    table: pa.Table | None  # rows of the replacement segment (None: drop the segment)
    source: str
    lost_rows: int = 0
    lost_seqs: tuple[int, ...] = ()
    postings: dict[str, Postings] = dataclasses.field(default_factory=dict)  # of store: false attributes


async def _salvage(store: ObjectStore, keys: NamespaceKeys, bad: _BadSegment, schema: Schema) -> _Salvage:
    """The rows of a damaged segment, from the best source still in the bucket (module docstring)."""
    ref = bad.ref
    target = target_schema(schema)
    derived = {n for n in bad.bad if n.startswith(("fts.", "flt."))}
    vec_bad = {n for n in bad.bad if n.startswith("vec.")}
    docs_ok = DOCS_FILE not in bad.bad and "" not in bad.bad and not (set(bad.bad) - derived - vec_bad)
    reader: SegmentReader | None = None
    if docs_ok:
        good = {n: s for n, s in ref.files.items() if n not in bad.bad}
        sub = dataclasses.replace(ref, files=good)
        owner = keys.sibling(ref.owner)
        blobs = await _bounded(store.get(owner.segment_file(ref.id, n)) for n in sorted(good))
        try:
            reader = await asyncio.to_thread(
                SegmentReader.from_files, sub, dict(zip(sorted(good), blobs, strict=True)), schema
            )
        except LagoonError:
            reader = None
    if reader is not None:
        lost_vec_attrs = {
            a for a, at in schema.attributes.items() if at.type.is_vector and _vec_name(a) in vec_bad
        }
        # store: false (RFC 0008): the value is only in the fts file; a damaged one comes from the WAL
        lost_vec_attrs |= {a for a in unstored(schema) if fts_file(a) in derived}
        keep = [a for a in schema.attributes if a not in lost_vec_attrs]
        table = align(reader.table(keep), target)
        if not lost_vec_attrs:
            kept = {a: reader.plain_postings(a) for a in unstored(schema)}
            return _Salvage(table, "its intact files (derived indexes rebuilt)", postings=kept)
        # Upserts lost a vector: take each such row from the WAL entry it came from.
        ops = np.asarray(table.column(OP_COLUMN).to_numpy(zero_copy_only=False))
        seqs = np.asarray(table.column(SEQ_COLUMN).to_numpy(zero_copy_only=False))
        need = np.flatnonzero(ops != OP_DELETE)
        ids = table.column("id").to_pylist()
        keep_mask = np.ones(table.num_rows, dtype=bool)
        keep_mask[need] = False
        parts = [table.filter(pa.array(keep_mask))]
        lost_ids: list[Any] = []
        lost_row_seqs: list[int] = []
        lost_seqs: set[int] = set()
        by_seq: dict[int, list[int]] = {}
        for row in need:
            by_seq.setdefault(int(seqs[row]), []).append(int(row))
        for seq, rows in sorted(by_seq.items()):
            entry = await _wal_entry(store, keys, seq)
            wanted = {ids[r] for r in rows}
            found: set[Any] = set()
            if entry is not None and entry.docs is not None:
                docs = entry.docs
                mask = [i in wanted for i in docs.column("id").to_pylist()]
                picked = align(docs.filter(pa.array(mask)), target, seq=seq)
                found = set(picked.column("id").to_pylist())
                parts.append(picked)
            missing = [i for i in wanted if i not in found]
            if missing:
                lost_ids += missing
                lost_row_seqs += [seq] * len(missing)
                lost_seqs.add(seq)
        if lost_ids:
            # tombstones: the older versions of these documents (other segments) must not return
            parts.append(_tombstones(lost_ids, lost_row_seqs, target, schema))
        merged = newest_per_id(pa.concat_tables(parts)) if parts else target.empty_table()
        source = "its docs file, vectors from the WAL entries of its rows"
        return _Salvage(merged, source, len(lost_ids), tuple(sorted(lost_seqs)))
    entries = [await _wal_entry(store, keys, s) for s in range(ref.seq_from, ref.seq_to + 1)]
    if all(e is not None for e in entries):
        fold = fold_entries([e for e in entries if e is not None], schema, older_data=True)
        return _Salvage(fold.table, f"WAL entries {ref.seq_from}..{ref.seq_to}")
    missing = [s for s, e in zip(range(ref.seq_from, ref.seq_to + 1), entries, strict=True) if e is None]
    upserts = ref.info.get("counts", {}).get("upserts", ref.rows) if isinstance(ref.info, dict) else ref.rows
    return _Salvage(None, "nothing (its docs file and WAL entries are gone)", int(upserts), tuple(missing))


@dataclass(frozen=True)
class SegmentRebuild:
    """A damaged segment as repair would rebuild it, opened in memory (nothing written)."""

    segment: SegmentReader | None
    """None: no object holds its rows any more (the segment is dropped)."""
    source: str
    """Where its rows came from."""
    lost_rows: int
    lost_seqs: tuple[int, ...]


async def rebuild_in_memory(
    store: ObjectStore, keys: NamespaceKeys, ref: SegmentRef, schema: Schema
) -> SegmentRebuild:
    """The rows of the damaged segment ``ref`` from the best source still in the bucket, as
    ``lagoon repair`` rebuilds it (its intact files, else the WAL entries it covers while they
    are retained), built and opened in memory: ``lagoon export --salvage`` reads through it
    without changing the bucket."""
    bad = await _verify_segment(store, keys, ref, schema) or _BadSegment(ref, {"": "damaged"})
    s = await _salvage(store, keys, bad, schema)
    if s.table is None or s.table.num_rows == 0:
        return SegmentRebuild(None, s.source, s.lost_rows, s.lost_seqs)

    def build() -> SegmentReader:
        built = build_segment(
            s.table,
            schema,
            segment_id=ref.id,
            level=ref.level,
            seq_from=ref.seq_from,
            seq_to=ref.seq_to,
            postings=s.postings,
        )
        return SegmentReader.from_files(built.ref, built.files, schema)

    return SegmentRebuild(await asyncio.to_thread(build), s.source, s.lost_rows, s.lost_seqs)


def _vec_name(attr: str) -> str:
    from lagoon.format.segment import vec_file

    return vec_file(attr)


def _tombstones(ids: list[Any], seqs: list[int], target: pa.Schema, schema: Schema) -> pa.Table:
    from lagoon.values import ids_to_arrow

    table = pa.table(
        {
            "id": ids_to_arrow(ids, schema.id_type or "uint"),
            SEQ_COLUMN: pa.array(np.asarray(seqs, dtype=np.uint64)),
            OP_COLUMN: pa.array(np.full(len(ids), OP_DELETE, dtype=np.uint8)),
        }
    )
    return align(table, target)


def _rebuild_action(
    p: _Pass, m: Manifest, schema: Schema, damaged: list[_BadSegment], finding: Finding
) -> Action:
    async def run() -> str:
        store, keys, comps = p.store, p.keys, p.ctx.components
        seg_io = SegmentIO(store)
        started = comps.clock.monotonic()
        replaced: dict[str, SegmentRef | None] = {}
        notes: list[str] = []
        lost = 0
        for bad in damaged:
            ref = bad.ref
            s = await _salvage(p.store, p.keys, bad, schema)
            if s.table is None or s.table.num_rows == 0:
                replaced[ref.id] = None
                note = f"{ref.id}: dropped (rows from {s.source})"
            else:
                built = await asyncio.to_thread(
                    build_segment,
                    s.table,
                    schema,
                    segment_id=new_segment_id(comps.clock.now_ms(), comps.rng),
                    level=ref.level,
                    seq_from=ref.seq_from,
                    seq_to=ref.seq_to,
                    postings=s.postings,
                )
                await seg_io.upload(keys, built)
                replaced[ref.id] = built.ref
                note = f"{ref.id}: rebuilt as {built.ref.id} from {s.source}"
            if s.lost_rows:
                note += (
                    f"; {_n(s.lost_rows, 'document')} lost (WAL seqs {_spans(s.lost_seqs)} are gone)"
                    if s.lost_seqs
                    else f"; {_n(s.lost_rows, 'document')} lost"
                )
            lost += s.lost_rows
            notes.append(note)
        grace = p.ctx.grace_secs
        if grace > 0 and comps.clock.monotonic() - started >= grace / 2:
            raise FixFailed("the rebuild took longer than half the GC grace period; re-run repair")
        removed_at = await store_time_ms(store)
        version = m.version + 1
        segments = tuple(new for s in m.segments if (new := replaced.get(s.id, s)) is not None)
        new_manifest = manifest_store.next_version(
            m,
            comps,
            segments=segments,
            pending_delete=(
                *m.pending_delete,
                *(segment_record(sid, version, removed_at) for sid in replaced),
            ),
        )
        try:
            await manifest_store.commit(store, keys, new_manifest)
        except ManifestConflict as e:
            raise FixFailed(
                f"manifest v{version} was committed meanwhile ({e}); the next round looks again"
            ) from None
        finding.lost_documents = lost
        return f"manifest v{version}: " + "; ".join(notes)

    return run


# --- WAL -------------------------------------------------------------------------------------


async def _check_wal(p: _Pass) -> None:
    if p.latest is None and p.top:
        # the latest manifest is unreadable: the tail it starts after is unknown
        p.report.indexed_through = 0
        return
    through = p.latest.indexed_through if p.latest is not None else 0
    p.report.indexed_through = through
    span = await _wal_span(p, through)
    p.report.wal_head = span.head
    gap_schemas: dict[int, _Recovery] = {}
    gap = _gap_finding(p, span, gap_schemas)
    walk = _WalWalk(p, span, _schema_of(p.latest), gap, gap_schemas)
    for seq in span.walked():
        await walk.visit(seq)
    for r in walk.recoveries:
        r.report()
    if folded := span.awaiting_gc():
        p.add(
            "wal",
            "info",
            f"{_n(folded, 'WAL entry', 'WAL entries')} at or below indexed_through {through} awaiting GC",
        )


@dataclass(frozen=True)
class _WalSpan:
    """The WAL entries a pass checks: every seq after ``through`` up to the head."""

    through: int
    listed: frozenset[int]
    """The seqs the inventory lists under the namespace's own WAL prefix (folded ones too)."""
    located: dict[int, str]
    """A branch's fork range: each seq by the namespace whose WAL holds it."""
    tail: frozenset[int]
    """The namespace's own seqs after ``through``, with those a probe found past the listing."""
    head: int
    missing: list[int]
    """The seqs up to ``head`` that nothing holds (a gap readers stop at)."""

    def walked(self) -> list[int]:
        return sorted(self.tail | set(self.located) | set(self.missing))

    def awaiting_gc(self) -> int:
        return sum(1 for s in self.listed if s <= self.through)


async def _wal_span(p: _Pass, through: int) -> _WalSpan:
    keys = p.keys
    listed = {s for k in p.inventory if (s := parse_wal_seq(k)) is not None and k.startswith(keys.wal_prefix)}
    # A branch reads its fork range from other namespaces' WALs (docs/rfcs/0007-branches.md); its
    # own entry in that range is the creation's fence, which no reader folds.
    fork = p.latest.branch.wal if p.latest is not None and p.latest.branch is not None else ()
    located = {q: r.namespace for r in fork for q in range(max(r.first, through + 1), r.last + 1)}
    tail = {s for s in listed if s > through and s not in located}
    head = max(tail | set(located), default=through)
    while await _exists(p.store, keys.wal(head + 1)) is not None:
        head += 1
        tail.add(head)
    missing = [s for s in range(through + 1, head + 1) if s not in tail and s not in located]
    return _WalSpan(through, frozenset(listed), located, frozenset(tail), head, missing)


def _gap_finding(p: _Pass, span: _WalSpan, gap_schemas: dict[int, _Recovery]) -> Finding | None:
    """The finding for the span's missing seqs, if any; its fix fills them, the first of each run
    after which the schema changed with the schema recovered into ``gap_schemas`` by the walk."""
    if not span.missing:
        return None
    missing, through, head = span.missing, span.through, span.head
    return p.add(
        "wal",
        "error",
        f"WAL entries {_spans(missing)} are missing between indexed_through {through} and head {head}: "
        f"readers stop at seq {missing[0] - 1}, so the entries after the gap are invisible, and the next "
        "write would take the missing seq and resurrect the stranded entries out of order",
        "fill the missing seqs with empty entries (nothing holds them any more)",
        _fill_gaps_action(p, missing, gap_schemas),
    )


@dataclass
class _WalWalk:
    """The span's entries in seq order, each checked against the schema in effect before it.
    After a missing or damaged entry the schema it may have changed is unknown: ``recovery``
    stays open (later entries may declare it by their own tables) until an entry states the
    schema again."""

    p: _Pass
    span: _WalSpan
    schema: Schema
    gap: Finding | None
    gap_schemas: dict[int, _Recovery]
    recovery: _Recovery | None = None
    recoveries: list[_Recovery] = field(default_factory=list)

    async def visit(self, seq: int) -> None:
        if self.gap is not None and seq in self.span.missing:
            if self.recovery is None:  # a lost entry may have changed the schema
                self.recovery = self.gap_schemas[seq] = _Recovery(self.gap, self.schema)
                self.recoveries.append(self.recovery)
            return
        located = seq in self.span.located
        key = self.p.keys.sibling(self.span.located.get(seq)).wal(seq)
        got = await _get(self.p.store, key)
        if got is None and located:
            self.p.add("wal", "error", f"WAL entry {seq} of the branch's fork range is missing ({key})")
        elif got is not None:  # None: deleted while being checked, or part of the gap
            self._check(seq, key, *got)

    def _check(self, seq: int, key: str, raw: bytes, etag: str | None) -> None:
        try:
            entry = decode_entry(raw, what=key)
            if entry.seq != seq:
                raise DataCorruption(f"{key}: holds seq {entry.seq}")
            self.schema = _check_recovering(entry, self.schema, self.recovery)
        except LagoonError as e:
            self._unreadable(seq, key, raw, etag, e)
            return
        if entry.truncate or entry.schema is not None:
            self.recovery = None  # from here on the schema is known again
        self.schema = _schema_after(entry, self.schema)

    def _unreadable(self, seq: int, key: str, raw: bytes, etag: str | None, e: LagoonError) -> None:
        p = self.p
        if seq in self.span.located:  # the owner's entry: its own repair quarantines it
            p.add("wal", "error", f"WAL entry {seq} of the branch's fork range ({key}) is unreadable: {e}")
            return
        finding = p.add(
            "wal",
            "error",
            f"WAL entry {seq} is unreadable: {e} (it held: {describe_entry(raw)}); queries skip it (its "
            "documents are not served) and the indexer stops at it",
            f"quarantine entry {seq} and mark its seq as empty",
        )
        opened = self.recovery is None
        self.recovery = self.recovery or _Recovery(finding, self.schema)
        if opened:
            self.recoveries.append(self.recovery)
        finding.action = _quarantine_entry_action(
            p, seq, raw, etag, finding, self.recovery if opened else None
        )


@dataclass
class _Recovery:
    """A damaged WAL entry may have changed the schema (a change travels only in the entry that
    made it): the entries after it then use attributes no readable entry declares. Their own
    tables declare the types (``recover_schema``, as readers do), so they stay valid, and the
    empty entry repair puts in the damaged slot carries the recovered schema."""

    finding: Finding
    before: Schema
    schema: Schema | None = None
    """The schema the later entries were written under, as recovered (None: they fit ``before``)."""

    def recovered(self) -> list[str]:
        after = self.schema.attributes if self.schema is not None else {}
        return [f"{n} ({a.type})" for n, a in sorted(after.items()) if n not in self.before.attributes]

    def report(self) -> None:
        if self.schema is None:
            return
        created = "the namespace was created and " if self.before.id_type is None else ""
        self.finding.message += (
            f"; {created}the schema changed there: the entries after it use {', '.join(self.recovered())}, "
            "recovered by type from their own data (options set there, such as full-text search, "
            "filterable or a distance metric, are lost: set them again with a schema update)"
        )


def _check_recovering(entry: WalEntry, schema: Schema, recovery: _Recovery | None) -> Schema:
    """``check_entry`` against the schema in effect before ``entry``; after a damaged entry
    (``recovery``), under the schema the entry's own table declares when only that fits.
    Returns the schema in effect before ``entry`` as it was written."""
    try:
        check_entry(entry, Schema() if entry.truncate else schema)
        return schema
    except DataCorruption:
        recovered = recover_schema(schema, entry) if recovery is not None else None
        if recovery is None or recovered is None:
            raise
    check_entry(entry, recovered)
    recovery.schema = recovered
    return recovered


def _schema_after(entry: WalEntry, schema: Schema) -> Schema:
    """The schema in effect after ``entry`` (``schema``: the one before it)."""
    if entry.truncate:
        schema = Schema()
    return schema_after(entry.schema, entry.schema_patch, schema) or schema


@dataclass(frozen=True)
class TailRebuild:
    """The unindexed WAL entries as repair leaves them, folded into one segment in memory."""

    segment: SegmentReader | None
    """Their documents (None: no entry after ``indexed_through`` holds any)."""
    truncated: bool
    """An entry deleted the namespace: the segments of the manifest are void."""
    missing: list[int]
    """Seqs with no object (a hole), folded as empty."""
    head: int
    schema: Schema
    """In effect after the last entry (with what was recovered past a lost entry)."""


async def tail_in_memory(store: ObjectStore, keys: NamespaceKeys, m: Manifest | None) -> TailRebuild:
    """Every WAL entry after ``m``'s ``indexed_through`` that still reads, folded the way the
    tail reads once repair has run: a missing seq (a hole, which stops readers until repair
    fills it) or a damaged entry as an empty entry, later entries under the schema their own
    tables declare. ``lagoon export --salvage`` reads through it when a hole hides entries."""
    through = m.indexed_through if m is not None else 0
    schema = _schema_of(m)
    listed = [
        q
        async for meta in store.list(keys.wal_prefix, start_after=keys.wal(through))
        if (q := parse_wal_seq(meta.key))
    ]
    head = max(listed, default=through)
    entries: list[WalEntry] = []
    present = set(listed)
    missing = [q for q in range(through + 1, head + 1) if q not in present]
    recovery: _Recovery | None = None
    for seq in range(through + 1, head + 1):
        entry = None if seq in missing else await _wal_entry(store, keys, seq)
        if entry is not None:
            try:
                schema = _check_recovering(entry, schema, recovery)
            except LagoonError:
                entry = None
        if entry is None:  # folded as empty; the entries after it may use what it declared
            recovery = recovery or _Recovery(Finding("wal", "info", ""), schema)
            continue
        if entry.truncate or entry.schema is not None:
            recovery = None
        schema = _schema_after(entry, schema)
        entries.append(entry)
    fold = fold_entries(entries, schema, older_data=True)
    if not fold.table.num_rows:
        return TailRebuild(None, fold.truncated_at is not None, missing, head, schema)

    def build() -> SegmentReader:
        built = build_segment(
            fold.table, schema, segment_id="tail", level=0, seq_from=through + 1, seq_to=head
        )
        return SegmentReader.from_files(built.ref, built.files, schema)

    return TailRebuild(await asyncio.to_thread(build), fold.truncated_at is not None, missing, head, schema)


def _fill_gaps_action(p: _Pass, missing: list[int], schemas: dict[int, _Recovery]) -> Action:
    """Empty entries in the missing seqs; the first of a run after which the schema had changed
    (``schemas``) carries the schema the entries after it were written under."""

    async def run() -> str:
        filled = []
        for seq in missing:
            recovered = schemas[seq].schema if seq in schemas else None
            try:
                await p.store.put(
                    p.keys.wal(seq), _void_entry(seq, p.ctx.components, recovered), PutMode.CREATE
                )
                filled.append(seq)
            except AlreadyExists:
                pass  # a writer or a restore filled it meanwhile
        return f"seqs {_spans(filled)} hold empty entries" if filled else "filled meanwhile"

    return run


def _quarantine_entry_action(
    p: _Pass, seq: int, raw: bytes, etag: str | None, finding: Finding, recovery: _Recovery | None
) -> Action:
    async def run() -> str:
        key = p.keys.wal(seq)
        target = await _quarantine(p.store, p.keys, key, raw)
        mode = IfMatch(etag) if etag is not None else PutMode.OVERWRITE
        schema = recovery.schema if recovery is not None else None
        try:
            await p.store.put(key, _void_entry(seq, p.ctx.components, schema), mode)
        except PreconditionFailed:
            raise FixFailed(f"{key} changed meanwhile") from None
        finding.lost_documents = _entry_rows(raw)
        kept = (
            f" with the recovered schema ({', '.join(recovery.recovered())})" if recovery and schema else ""
        )
        return f"copied to {target}; seq {seq} now holds an empty entry{kept}"

    return run


# --- strays and orphans ----------------------------------------------------------------------


def _classify(p: _Pass, key: str) -> str:
    """``known`` | ``segment`` (under seg/) | ``stray``."""
    keys = p.keys
    if key == keys.current:
        return "known"
    if key.startswith(keys.manifest_prefix):
        return "known" if parse_manifest_version(key) is not None and key.count("/") == 3 else "stray"
    if key.startswith(keys.wal_prefix):
        return "known" if parse_wal_seq(key) is not None and key.count("/") == 3 else "stray"
    if key.startswith(keys.segment_prefix):
        return "segment" if key.count("/") == 4 else "stray"
    return "stray"


async def _check_strays(p: _Pass) -> None:
    live = {r.id: r for r in (p.latest.segments if p.latest is not None else ())}
    strays = []
    for key in sorted(p.inventory):
        kind = _classify(p, key)
        if kind == "segment":
            sid, name = key[len(p.keys.segment_prefix) :].split("/", 1)
            if sid in live and name not in live[sid].files:
                strays.append(key)
        elif kind == "stray":
            strays.append(key)
    if not strays:
        return
    shown = ", ".join(k[len(p.keys.root) :] for k in strays[:_SHOWN]) + (
        " ..." if len(strays) > _SHOWN else ""
    )
    p.add(
        "strays",
        "warning",
        f"{_n(len(strays), 'object')} of no Lagoon kind under {p.keys.root}: {shown}",
        "move them to the quarantine",
        _move_strays_action(p, strays),
    )


def _move_strays_action(p: _Pass, strays: list[str]) -> Action:
    async def run() -> str:
        moved = 0
        for key in strays:
            try:
                await _move_aside(p.store, p.keys, key)
                moved += 1
            except ObjectNotFound:
                pass
        return f"{_n(moved, 'object')} moved to the quarantine"

    return run


def _pending(m: Manifest | None, keys: NamespaceKeys) -> tuple[set[str], list[str]]:
    exact: set[str] = set()
    prefixes: list[str] = []
    for item in m.pending_delete if m is not None else ():
        for value, sink in ((item.key, exact), (item.prefix, None)):
            if not isinstance(value, str) or not value:
                continue
            full = value if value.startswith(keys.root) else keys.root + value
            if sink is None:
                prefixes.append(full)
            else:
                sink.add(full)
    return exact, prefixes


async def _check_orphans(p: _Pass) -> None:
    m, keys = p.latest, p.keys
    if m is None and p.top:
        return  # the latest manifest is unreadable: cannot tell orphans from live files
    live = {r.id for r in (m.segments if m else ())}
    older = {r.id for v, om in p.manifests.items() if v != p.top for r in om.segments}
    exact, prefixes = _pending(m, keys)
    groups: dict[str, list[ObjectMeta]] = {}
    pending = 0
    for key, meta in sorted(p.inventory.items()):
        if _classify(p, key) != "segment":
            continue
        segment = key[len(keys.segment_prefix) :].split("/", 1)[0]
        if segment in live:
            continue
        if key in exact or any(key.startswith(pre) for pre in prefixes):
            pending += 1
            continue
        groups.setdefault(segment, []).append(meta)
    if pending:
        p.add(
            "orphans",
            "info",
            f"{_n(pending, 'object')} under seg/ pending deletion (GC after the grace period)",
        )
    if not groups:
        return
    now = await p.store.now()
    shown = []
    young = 0
    total = 0
    for segment, metas in sorted(groups.items()):
        size = sum(x.size for x in metas)
        total += size
        newest = max(x.last_modified for x in metas)
        age = (now - newest).total_seconds()
        young += age < p.ctx.grace_secs
        note = ", referenced by an older manifest" if segment in older else ""
        shown.append(f"{segment} ({_n(len(metas), 'file')}, {_size(size)}, {_age(age)} old{note})")
    count = sum(len(v) for v in groups.values())
    text = (
        f"{_n(count, 'object')} in {_n(len(groups), 'segment folder')} ({_size(total)}) referenced neither by "
        f"manifest v{p.top} nor by its pending deletions: {'; '.join(shown[:_SHOWN])}"
        + (f"; ... {len(shown) - _SHOWN} more" if len(shown) > _SHOWN else "")
        + "; GC removes them once they are older than indexer.gc_grace_secs"
    )
    if young:
        text += f". {_n(young, 'segment folder')} younger than indexer.gc_grace_secs ({p.ctx.grace_secs:g} s): uploads in progress?"
    p.add("orphans", "warning", text)


def _referenced_owners(p: _Pass) -> list[str]:
    """The other namespaces whose objects a present manifest version of this one reads (a
    branch's parent, grandparent...), sorted."""
    ns = p.keys.namespace
    out: set[str] = set()
    for m in p.manifests.values():
        out |= {s.owner for s in m.segments if s.owner and s.owner != ns}
        out |= {r.namespace for r in (m.branch.wal if m.branch else ()) if r.namespace != ns}
    return sorted(out)


async def _check_references(p: _Pass) -> None:
    """A branch's reference markers (docs/rfcs/0007-branches.md): the owner's GC keeps only what
    the branches named by its markers read, so a lost marker lets it delete this namespace's data
    once the owner compacts past it. The manifests say what the marker protected: write it again."""
    for owner in _referenced_owners(p):
        segs, first = refs.reads_from(p.manifests.values(), owner)
        marked = await refs.list_markers(p.store, p.keys.sibling(owner))
        if not any(mk.branch == p.keys.namespace for mk in marked):
            what = [_n(len(segs), "segment")] if segs else []
            what += [f"its WAL from seq {first}"] if first is not None else []
            p.add(
                "references",
                "error",
                f"the branch reference marker in '{owner}' is missing: this namespace reads "
                f"{' and '.join(what)} of '{owner}', which its garbage collector may delete once "
                "they are no longer its own",
                f"write the reference marker in '{owner}' again",
                _write_marker_action(p, owner),
            )


def _write_marker_action(p: _Pass, owner: str) -> Action:
    async def run() -> str:
        stamp = await store_time_ms(p.store)
        key = await refs.write_marker(
            p.store, p.keys.sibling(owner), p.keys.namespace, stamp, p.ctx.components.nonce().hex()
        )
        return f"wrote {key}"

    return run


async def _inspect(ctx: _Context) -> _Pass:
    p = _Pass(ctx, NamespaceReport(ctx.keys.org, ctx.keys.namespace))
    await _take_inventory(p)
    await _read_hint(p)
    await _check_manifests(p)
    await _check_hint(p)
    if p.latest is None and p.top:
        p.add("segments", "info", "skipped: the latest manifest is unreadable")
    await _check_segments(p)
    await _check_wal(p)
    await _check_strays(p)
    await _check_orphans(p)
    await _check_references(p)
    return p


async def _inspect_settled(ctx: _Context) -> _Pass:
    """An inspection, repeated (up to ``MAX_PASSES``) while a concurrent commit moved the manifest."""
    p = await _inspect(ctx)
    passes = 1
    while passes < MAX_PASSES and any(f.severity == "error" for f in p.report.findings):
        if await _exists(ctx.store, ctx.keys.manifest(p.top + 1)) is None:
            break  # nothing moved: the problems are real
        p = await _inspect(ctx)
        passes += 1
    p.report.passes = passes
    return p


# Fixes run in this order within a round: the chain first (a segment fix commits on top of it).
_FIX_ORDER = {"manifests": 0, "current": 1, "segments": 2, "wal": 3, "strays": 4, "references": 5}


async def _apply(findings: Sequence[Finding]) -> bool:
    """Run the fixes; True if any was applied. When the manifest chain or CURRENT changed, the
    rest waits for the next inspection (a segment fix commits on top of the chain)."""
    applied = False
    chain = ("manifests", "current")
    for phase in (chain, None):
        for f in sorted(findings, key=lambda f: _FIX_ORDER.get(f.check, 9)):
            if f.action is None or f.fixed or (phase is not None) != (f.check in chain):
                continue
            try:
                f.fix = await f.action()
                f.fixed, f.fix_error = True, ""
                applied = True
            except FixFailed as e:
                f.fix_error = str(e)
            except (StorageError, LagoonError) as e:
                f.fix_error = f"{type(e).__name__}: {e}"
        if applied:
            return True
    return applied


# --- entry points ----------------------------------------------------------------------------


async def check_namespace(
    store: ObjectStore,
    org: str,
    namespace: str,
    *,
    dry_run: bool = True,
    grace_secs: float = 3600.0,
    components: Components | None = None,
) -> NamespaceReport:
    """Verify one namespace (see the module docstring) and, unless ``dry_run``, fix what is safe."""
    ctx = _Context(store, NamespaceKeys.of(org, namespace), grace_secs, components or Components(), dry_run)
    p = await _inspect_settled(ctx)
    report = p.report
    if dry_run:
        return report
    seen = {(f.check, f.message) for f in report.findings}
    current = p
    for round_no in range(1, MAX_ROUNDS + 1):
        fixable = [f for f in current.report.findings if f.action is not None]
        if not fixable:
            break
        applied = await _apply(fixable)
        report.rounds = round_no
        current = await _inspect_settled(ctx)
        for f in current.report.findings:
            if (f.check, f.message) not in seen and f.action is not None:
                seen.add((f.check, f.message))
                report.findings.append(f)  # found once the earlier fixes were made
        if not applied:
            break
    final = current.report
    for name in ("latest_version", "oldest_version", "indexed_through", "wal_head", "segments"):
        setattr(report, name, getattr(final, name))
    if report.rounds:
        report.remaining = [f for f in final.findings if f.severity == "error"]
        # the findings of the final inspection that are also listed above are the same object now
        listed = {(f.check, f.message): f for f in report.findings}
        report.remaining = [listed.get((f.check, f.message), f) for f in report.remaining]
    return report


def _catalog_findings(plan: CatalogPlan, young_secs: float) -> list[Finding]:
    """What an org's catalog plan shows, one finding per problem."""
    r = plan.record
    out: list[Finding] = []
    if r is None and not plan.markers and not plan.add:
        return out  # an org without namespaces, never catalogued: nothing to keep in step
    if r is None or not r.complete:
        why = "there is no org record" if r is None else "the org record is not complete"
        out.append(
            Finding(
                "catalog",
                "warning",
                f"{why} ({_n(len(plan.add), 'namespace')} without a marker): listings read every namespace folder",
                "markers created, the org recounted and marked complete",
            )
        )
    else:
        out += [
            Finding(
                "catalog",
                "error",
                f"namespace '{n}' has no marker: listings do not show it",
                "marker created",
            )
            for n in plan.add
        ]
        if r.count != plan.markers:
            out.append(
                Finding(
                    "catalog",
                    "error",
                    f"the org record counts {r.count} namespaces, there are {plan.markers} markers "
                    "(limits.max_namespaces counts on it)",
                    f"count set to {plan.count_after}",
                )
            )
    out += [
        Finding(
            "catalog",
            "error",
            f"marker of '{n}', which does not exist: listings show it, its reads answer 404",
            "marker removed",
        )
        for n in plan.remove
    ]
    out += [
        Finding(
            "catalog",
            "info",
            f"marker of '{n}', which does not exist, is younger than {_age(young_secs)}: kept "
            "(its creation may still be committing)",
        )
        for n in plan.young
    ]
    return out


async def check_catalog(
    store: ObjectStore,
    org: str,
    names: Sequence[str],
    *,
    dry_run: bool = True,
    settings: Settings | None = None,
    components: Components | None = None,
    young_marker_secs: float = YOUNG_MARKER_SECS,
) -> CatalogReport:
    """Compare the namespace catalog of ``org`` (engine/catalog.py) with which of the namespace
    folders ``names`` hold a namespace that exists, and unless ``dry_run`` reconcile it: markers
    created (create-if-absent) and removed, each followed by a fresh existence read, the count
    set by compare-and-swap. Safe while servers and workers run; a second run finds nothing."""
    settings, components = settings or Settings(), components or Components()
    catalog = Catalog(store, components)

    async def exists(name: str) -> bool:
        return await namespace_exists(store, settings, components, NamespaceKeys.of(org, name))

    async def inspect() -> tuple[list[str], CatalogPlan]:
        alive = await _bounded(exists(n) for n in names)
        existing = [n for n, ok in zip(names, alive, strict=True) if ok]
        return existing, await catalog.plan(org, existing, young_secs=young_marker_secs)

    existing, plan = await inspect()
    report = CatalogReport(org, len(existing), plan.markers, plan.record.count if plan.record else None)
    report.findings = _catalog_findings(plan, young_marker_secs)
    if dry_run or not any(f.fix for f in report.findings):
        return report
    await catalog.reconcile(org, existing, still_exists=exists, young_secs=young_marker_secs)
    for f in report.findings:
        f.fixed = bool(f.fix)
    existing, plan = await inspect()
    report.namespaces, report.markers = len(existing), plan.markers
    report.count = plan.record.count if plan.record else None
    report.remaining = [f for f in _catalog_findings(plan, young_marker_secs) if f.severity == "error"]
    return report


async def list_orgs(store: ObjectStore) -> list[str]:
    """Every org with objects in the store (top-level prefixes that are valid org names), or
    with a namespace catalog (an org whose namespaces are gone may keep stray markers)."""
    prefixes = [*await store.list_prefixes(""), *await store.list_prefixes(CATALOG_PREFIX)]
    orgs = {p.rstrip("/").rsplit("/", 1)[-1] for p in prefixes if p != CLUSTER_PREFIX}
    return sorted(o for o in orgs if ORG_RE.fullmatch(o))


async def list_namespace_dirs(store: ObjectStore, org: str) -> list[str]:
    """Every namespace folder of ``org`` in the store, deleted (truncated) namespaces included."""
    prefixes = await store.list_prefixes(org_prefix(org))
    names = [namespace_from_prefix(p) for p in prefixes]
    return [n for n in names if NAMESPACE_RE.fullmatch(n) and n not in (".", "..")]


def repair_for_delete(
    settings: Settings, components: Components | None = None
) -> Callable[[ObjectStore, str, str], Awaitable[int]]:
    """What ``Database(repair=...)`` runs before deleting a namespace whose manifest chain cannot
    be read: ``check_namespace`` with fixes, as ``lagoon repair --namespace`` does; returns the
    number of findings."""

    async def run(store: ObjectStore, org: str, namespace: str) -> int:
        report = await check_namespace(
            store,
            org,
            namespace,
            dry_run=False,
            grace_secs=settings.indexer.gc_grace_secs,
            components=components,
        )
        return len(report.findings)

    return run


async def repair(
    store: ObjectStore,
    *,
    orgs: Sequence[str] | None,
    namespace: str | None = None,
    dry_run: bool = True,
    grace_secs: float = 3600.0,
    components: Components | None = None,
    settings: Settings | None = None,
    young_marker_secs: float = YOUNG_MARKER_SECS,
) -> RepairReport:
    """Check (and unless ``dry_run`` fix) ``namespace`` of each org, or every namespace and then
    the org's namespace catalog (``check_catalog``, once its namespaces are repaired).

    ``orgs`` None = every org in the store.
    """
    report = RepairReport(dry_run=dry_run)
    for org in orgs if orgs is not None else await list_orgs(store):
        names = [namespace] if namespace is not None else await list_namespace_dirs(store, org)
        await _repair_namespaces(report, store, org, names, grace_secs, components)
        if namespace is None:
            report.catalogs.append(
                await check_catalog(
                    store,
                    org,
                    names,
                    dry_run=dry_run,
                    settings=settings,
                    components=components,
                    young_marker_secs=young_marker_secs,
                )
            )
    return report


async def _repair_namespaces(
    report: RepairReport,
    store: ObjectStore,
    org: str,
    names: Sequence[str],
    grace_secs: float,
    components: Components | None,
) -> None:
    """Check (and unless the report is a dry run, fix) each namespace folder ``names`` of ``org``."""
    for name in names:
        keys = NamespaceKeys.of(org, name)
        has_objects = False
        async for _ in store.list(keys.root):
            has_objects = True
            break
        if not has_objects:
            r = NamespaceReport(org, name)
            r.findings.append(
                Finding("namespace", "error", "no objects under this namespace (wrong name or org?)")
            )
            report.namespaces.append(r)
            continue
        report.namespaces.append(
            await check_namespace(
                store, org, name, dry_run=report.dry_run, grace_secs=grace_secs, components=components
            )
        )


__all__ = [
    "MAX_PASSES",
    "MAX_ROUNDS",
    "CatalogReport",
    "Finding",
    "NamespaceReport",
    "RepairReport",
    "SegmentRebuild",
    "TailRebuild",
    "check_catalog",
    "check_namespace",
    "describe_entry",
    "list_namespace_dirs",
    "list_orgs",
    "rebuild_in_memory",
    "repair",
    "repair_for_delete",
    "tail_in_memory",
]
