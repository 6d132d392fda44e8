"""``lagoon repair``: verify each namespace's objects in the bucket, and fix what is safe to fix.

Like LevelDB's ``RepairDB``, it reads what is there and trusts nothing it has not verified; unlike
it, it rewrites nothing but the one object that is only ever a hint. Per namespace
(``{org}/{ns}/``), in this order (docs/operations.md has the operator's version):

1. Manifest chain (``manifest/``): every listed version, plus any a forward probe finds past the
   listing, is fetched and decoded (magic, format version, CRC-32C, version number); the versions
   from the oldest surviving one to the latest must be dense (GC deletes oldest first) and each
   must name its predecessor's nonce as parent (``stats.parent_nonce``) when it records one.
2. CURRENT hint: missing (while versions exist), garbled, ahead of the latest version, below the
   oldest surviving version, or lagging. Ahead is harmful: committers would take every new version
   for an unreachable fork, so indexing stalls; below the oldest surviving version, readers
   starting from it find no manifest at all.
3. Segments: every file the latest manifest lists exists (HEAD) with the listed size.
4. WAL: the entries after the latest manifest's ``indexed_through`` are dense up to the head
   (LIST, then a forward probe) and each decodes (frame checksum, seq matches its key).
5. Orphans: objects under ``seg/`` that the latest manifest neither references nor lists as
   pending deletion, grouped by segment, with their age (younger than ``indexer.gc_grace_secs``
   may be an upload in progress).

A namespace that shows a problem is inspected again (up to three times) if its latest manifest
version moved meanwhile: an indexer, compactor or GC running concurrently can make a single pass
see a half-updated picture, never two consistent ones.

Fixes (not with ``dry_run``): only CURRENT. Missing, lagging or below-oldest hints are advanced
with the committers' own monotonic compare-and-swap (``manifest_store.advance_hint``); garbled or
ahead hints are rewritten to the latest version with If-Match on the etag just read, after probing
once more that no newer version appeared. Never touched: manifests, WAL entries, segment files,
orphans, anything outside ``manifest/CURRENT``. Problems there are reported with what they mean.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from lagoon.engine.manifest_store import advance_hint, read_version
from lagoon.errors import DataCorruption, LagoonError
from lagoon.format.invariants import manifest_problems, successor_problems
from lagoon.format.keys import (
    CLUSTER_PREFIX,
    NAMESPACE_RE,
    ORG_RE,
    NamespaceKeys,
    namespace_from_prefix,
    org_prefix,
    parse_manifest_version,
    parse_wal_seq,
)
from lagoon.format.manifest import Manifest, decode_manifest, encode_manifest
from lagoon.format.wal import decode_entry
from lagoon.storage.base import (
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

_PARALLELISM = 16
MAX_PASSES = 3
_SHOWN = 10


@dataclass
class Finding:
    check: str
    """``manifests`` | ``current`` | ``segments`` | ``wal`` | ``orphans`` | ``namespace``."""
    severity: Severity
    message: str
    fix: str = ""
    """What repair does about it ("" = nothing it may do)."""
    fixed: bool = False
    fix_error: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "severity": self.severity,
            "message": self.message,
            "fix": self.fix,
            "fixed": self.fixed,
            "fix_error": self.fix_error,
        }


@dataclass
class NamespaceReport:
    org: str
    namespace: str
    latest_version: int = 0
    oldest_version: int = 0
    indexed_through: int = 0
    wal_head: int = 0
    segments: int = 0
    passes: int = 1
    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error" and not f.fixed]

    @property
    def ok(self) -> bool:
        return not self.errors

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
            "findings": [f.to_json() for f in self.findings],
        }


@dataclass
class RepairReport:
    dry_run: bool
    namespaces: list[NamespaceReport] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(n.ok for n in self.namespaces)

    @property
    def fixes_applied(self) -> int:
        return sum(f.fixed for n in self.namespaces for f in n.findings)

    @property
    def fixes_possible(self) -> int:
        return sum(bool(f.fix) and not f.fixed for n in self.namespaces for f in n.findings)

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "ok": self.ok,
            "fixes_applied": self.fixes_applied,
            "namespaces": [n.to_json() for n in self.namespaces],
        }

    def render(self) -> str:
        lines = []
        for n in self.namespaces:
            manifest = f"manifest v{n.latest_version}" if n.latest_version else "no manifest yet"
            state = f"{manifest}, indexed through {n.indexed_through}, WAL head {n.wal_head}, {n.segments} segments"
            problems = [f for f in n.findings if f.severity != "info"]
            errors = n.errors
            verdict = "OK" if not problems else (_n(len(errors), "error") if errors else "OK with warnings")
            lines.append(f"{n.org}/{n.namespace}: {verdict} ({state})")
            for f in n.findings:
                label = "FIXED" if f.fixed else f.severity.upper()
                line = f"  {label:<7} {f.check}: {f.message}"
                if f.fixed:
                    line += f" -> {f.fix}"
                elif f.fix:
                    line += f" [{'would ' if self.dry_run else ''}fix: {f.fix}]"
                    if f.fix_error:
                        line += f" (fix failed: {f.fix_error})"
                lines.append(line)
        bad = sum(not n.ok for n in self.namespaces)
        summary = f"Checked {_n(len(self.namespaces), 'namespace')}: {bad} with errors"
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


def _n(count: int, singular: str, plural: str = "") -> str:
    return f"{count} {singular if count == 1 else (plural or singular + 's')}"


def _spans(numbers: Sequence[int]) -> str:
    """[3, 4, 5, 9] -> "3..5, 9"."""
    out: list[str] = []
    nums = sorted(numbers)
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


async def _copy_differs(store: ObjectStore, keys: NamespaceKeys, raw: bytes, version: int) -> bool:
    """Does CURRENT hold a manifest copy other than the stored version (readers would use it)?"""
    if not raw.lstrip().startswith(b"{"):
        return False
    try:
        stored = await read_version(store, keys, version)
    except (ObjectNotFound, DataCorruption):
        return False  # reported by the manifest checks
    return decode_manifest(raw, what="CURRENT").nonce != stored.nonce


# --- one pass over a namespace ---------------------------------------------------------------


@dataclass
class _Hint:
    present: bool = False
    raw: bytes = b""
    value: int | None = None
    etag: str | None = None


@dataclass
class _Pass:
    report: NamespaceReport
    latest: Manifest | None = None
    top: int = 0
    oldest: int = 0
    hint: _Hint = field(default_factory=_Hint)

    def add(self, check: str, severity: Severity, message: str, fix: str = "") -> Finding:
        f = Finding(check, severity, message, fix)
        self.report.findings.append(f)
        return f


async def _check_manifests(store: ObjectStore, keys: NamespaceKeys, p: _Pass) -> dict[int, Manifest]:
    versions: set[int] = set()
    unknown: list[str] = []
    async for meta in store.list(keys.manifest_prefix):
        v = parse_manifest_version(meta.key)
        if v is not None:
            versions.add(v)
        elif meta.key != keys.current:
            unknown.append(meta.key)
    top = max(versions, default=0)
    while await _exists(store, keys.manifest(top + 1)) is not None:
        top += 1
        versions.add(top)
        p.add("manifests", "warning", f"LIST did not show manifest v{top}, a probe found it (listing lag?)")
    if unknown:
        p.add("manifests", "warning", f"unexpected objects under manifest/: {', '.join(unknown[:_SHOWN])}")
    p.top, p.oldest = top, min(versions, default=0)
    p.report.latest_version, p.report.oldest_version = top, p.oldest
    if not versions:
        return {}

    async def load(v: int) -> tuple[int, Manifest | None, str]:
        try:
            return v, await read_version(store, keys, v), ""
        except ObjectNotFound:
            return v, None, "deleted while being checked"
        except LagoonError as e:  # DataCorruption, IncompatibleFormat
            return v, None, str(e)

    manifests: dict[int, Manifest] = {}
    for v, m, problem in await _bounded(load(v) for v in sorted(versions)):
        if m is not None:
            manifests[v] = m
            for broken in manifest_problems(m):
                p.add("manifests", "error", f"manifest v{v} breaks an invariant: {broken}")
        else:
            meaning = "the namespace cannot be read" if v == top else "readers of this version fail"
            p.add("manifests", "error", f"manifest v{v} is unreadable: {problem} ({meaning})")
    holes = [v for v in range(p.oldest, top + 1) if v not in versions]
    if holes:
        p.add(
            "manifests",
            "error",
            f"manifest versions {_spans(holes)} are missing between v{p.oldest} and v{top}: readers "
            "probing forward stop at the first hole and miss every later version",
        )
    for v in range(p.oldest, top):
        older, newer = manifests.get(v), manifests.get(v + 1)
        if older is None or newer is None:
            continue
        for broken in successor_problems(older, newer):
            if "parent nonce" not in broken and broken not in manifest_problems(newer):
                p.add("manifests", "error", f"manifest v{v + 1} does not follow v{v}: {broken}")
        parent = newer.parent_nonce
        if parent and parent != older.nonce:
            p.add(
                "manifests",
                "error",
                f"manifest v{v + 1} names parent nonce {str(parent)[:16]}, not v{v}'s {older.nonce[:16]}: "
                "the chain forks (a zombie committer re-created a deleted version?)",
            )
    p.latest = manifests.get(top)
    return manifests


async def _check_hint(store: ObjectStore, keys: NamespaceKeys, p: _Pass) -> None:
    hint = p.hint
    meta = await _exists(store, keys.current)
    if meta is not None:
        try:
            hint.raw = await store.get(keys.current)
            hint.present, hint.etag = True, meta.etag
        except ObjectNotFound:
            pass
    hint.value = _parse_hint(hint.raw) if hint.present else None
    if hint.value is not None and await _copy_differs(store, keys, hint.raw, hint.value):
        hint.value = None  # treated as garbled: rewritten from the stored version
    top, oldest = p.top, p.oldest
    if not hint.present:
        if top:
            p.add(
                "current",
                "warning",
                f"CURRENT is missing (latest manifest v{top})",
                f"create CURRENT = {top}",
            )
        return
    if hint.value is None:
        p.add(
            "current",
            "error",
            f"CURRENT is garbled ({hint.raw[:40]!r}); readers then probe from v1",
            f"rewrite CURRENT to {top}",
        )
    elif hint.value > top:
        latest = f"the latest manifest is v{top}" if top else "there is no manifest"
        p.add(
            "current",
            "error",
            f"CURRENT names v{hint.value} but {latest}: committers take every new version for an "
            "unreachable fork, so indexing stalls",
            f"rewrite CURRENT to {top}",
        )
    elif top and hint.value < oldest:
        p.add(
            "current",
            "error",
            f"CURRENT names v{hint.value}, below the oldest surviving version v{oldest}: readers "
            "starting from it find no manifest",
            f"advance CURRENT to {top}",
        )
    elif hint.value < top:
        p.add(
            "current",
            "info",
            f"CURRENT lags (v{hint.value}, latest v{top}); readers probe forward",
            f"advance CURRENT to {top}",
        )


async def _check_segments(store: ObjectStore, keys: NamespaceKeys, p: _Pass) -> None:
    m = p.latest
    if m is None:
        return
    p.report.segments = len(m.segments)
    files = [(ref.id, name, spec) for ref in m.segments for name, spec in sorted(ref.files.items())]
    for ref in m.segments:
        if not ref.files:
            p.add("segments", "warning", f"segment {ref.id} lists no files")
        if ref.seq_to > m.indexed_through:
            p.add(
                "segments",
                "error",
                f"segment {ref.id} covers WAL seqs up to {ref.seq_to}, beyond indexed_through {m.indexed_through}",
            )
    metas = await _bounded(_exists(store, keys.segment_file(sid, name)) for sid, name, _ in files)
    missing = [f"{sid}/{name}" for (sid, name, _), meta in zip(files, metas, strict=True) if meta is None]
    wrong = [
        f"{sid}/{name} ({meta.size} bytes, manifest says {spec['size']})"
        for (sid, name, spec), meta in zip(files, metas, strict=True)
        if meta is not None and "size" in spec and meta.size != spec["size"]
    ]
    if missing:
        p.add(
            "segments",
            "error",
            f"{_n(len(missing), 'file')} referenced by manifest v{m.version} missing (dangling): "
            f"{', '.join(missing[:_SHOWN])}{' ...' if len(missing) > _SHOWN else ''}; queries fail until "
            "they are restored (bucket versioning) or the namespace is re-imported",
        )
    if wrong:
        p.add(
            "segments",
            "error",
            f"{_n(len(wrong), 'segment file')} with the wrong size: {', '.join(wrong[:_SHOWN])}",
        )


async def _check_wal(store: ObjectStore, keys: NamespaceKeys, p: _Pass) -> None:
    through = p.latest.indexed_through if p.latest is not None else 0
    p.report.indexed_through = through
    seqs: set[int] = set()
    unknown: list[str] = []
    async for meta in store.list(keys.wal_prefix):
        seq = parse_wal_seq(meta.key)
        if seq is None:
            unknown.append(meta.key)
        else:
            seqs.add(seq)
    tail = {s for s in seqs if s > through}
    head = max(tail, default=through)
    while await _exists(store, keys.wal(head + 1)) is not None:
        head += 1
        tail.add(head)
    p.report.wal_head = head
    if unknown:
        p.add("wal", "warning", f"unexpected objects under wal/: {', '.join(unknown[:_SHOWN])}")
    missing = [s for s in range(through + 1, head + 1) if s not in tail]
    if missing:
        p.add(
            "wal",
            "error",
            f"WAL entries {_spans(missing)} are missing between indexed_through {through} and head {head}: "
            f"readers stop at seq {missing[0] - 1}, so the entries after the gap are invisible, and the next "
            "write would take the missing seq and resurrect the stranded entries out of order; restore the "
            "missing entries (bucket versioning) before writing again",
        )

    async def verify(seq: int) -> str:
        key = keys.wal(seq)
        try:
            entry = decode_entry(await store.get(key), what=key)
        except ObjectNotFound:
            return ""  # deleted while being checked; the next pass decides
        except LagoonError as e:
            return str(e)
        return "" if entry.seq == seq else f"{key}: holds seq {entry.seq}"

    problems = [msg for msg in await _bounded(verify(s) for s in sorted(tail)) if msg]
    if problems:
        p.add(
            "wal",
            "error",
            f"{_n(len(problems), 'unindexed WAL entry', 'unindexed WAL entries')} unreadable: "
            f"{'; '.join(problems[:_SHOWN])}; reads of "
            "the namespace fail",
        )
    folded = len(seqs) - len({s for s in seqs if s > through})
    if folded:
        p.add(
            "wal",
            "info",
            f"{_n(folded, 'WAL entry', 'WAL entries')} at or below indexed_through {through} awaiting GC",
        )


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


async def _check_orphans(
    store: ObjectStore, keys: NamespaceKeys, p: _Pass, manifests: dict[int, Manifest], grace_secs: float
) -> None:
    m = p.latest
    if m is None and p.top:
        return  # the latest manifest is unreadable: cannot tell orphans from live files
    referenced = {keys.segment_file(r.id, n) for r in (m.segments if m else ()) for n in r.files}
    older = {
        keys.segment_file(r.id, n)
        for v, om in manifests.items()
        if v != p.top
        for r in om.segments
        for n in r.files
    }
    exact, prefixes = _pending(m, keys)
    groups: dict[str, list[ObjectMeta]] = {}
    pending = 0
    async for meta in store.list(keys.segment_prefix):
        if meta.key in referenced:
            continue
        if meta.key in exact or any(meta.key.startswith(pre) for pre in prefixes):
            pending += 1
            continue
        segment = meta.key[len(keys.segment_prefix) :].split("/", 1)[0]
        groups.setdefault(segment, []).append(meta)
    if pending:
        p.add(
            "orphans",
            "info",
            f"{_n(pending, 'object')} under seg/ pending deletion (GC after the grace period)",
        )
    if not groups:
        return
    now = await store.now()
    shown = []
    young = 0
    total = 0
    for segment, metas in sorted(groups.items()):
        size = sum(x.size for x in metas)
        total += size
        newest = max(x.last_modified for x in metas)
        age = (now - newest).total_seconds()
        young += age < grace_secs
        note = ", referenced by an older manifest" if any(x.key in older for x in metas) else ""
        shown.append(f"{segment} ({_n(len(metas), 'file')}, {_size(size)}, {_age(age)} old{note})")
    count = sum(len(v) for v in groups.values())
    text = (
        f"{_n(count, 'object')} in {_n(len(groups), 'segment folder')} ({_size(total)}) referenced neither by "
        f"manifest v{p.top} nor by its pending deletions: {'; '.join(shown[:_SHOWN])}"
        + (f"; ... {len(shown) - _SHOWN} more" if len(shown) > _SHOWN else "")
    )
    if young:
        text += f". {_n(young, 'segment folder')} younger than indexer.gc_grace_secs ({grace_secs:g} s): uploads in progress?"
    p.add("orphans", "warning", text)


def _age(secs: float) -> str:
    if secs < 120:
        return f"{max(secs, 0):.0f} s"
    if secs < 7200:
        return f"{secs / 60:.0f} min"
    if secs < 172800:
        return f"{secs / 3600:.0f} h"
    return f"{secs / 86400:.0f} d"


async def _inspect(store: ObjectStore, keys: NamespaceKeys, grace_secs: float) -> _Pass:
    p = _Pass(NamespaceReport(keys.org, keys.namespace))
    manifests = await _check_manifests(store, keys, p)
    await _check_hint(store, keys, p)
    if p.latest is None and p.top:
        p.add("segments", "info", "skipped: the latest manifest is unreadable")
    await _check_segments(store, keys, p)
    await _check_wal(store, keys, p)
    await _check_orphans(store, keys, p, manifests, grace_secs)
    return p


# --- fixing ----------------------------------------------------------------------------------


async def _fix_hint(store: ObjectStore, keys: NamespaceKeys, p: _Pass) -> None:
    finding = next((f for f in p.report.findings if f.check == "current" and f.fix), None)
    if finding is None:
        return
    top, hint = p.top, p.hint
    try:
        if hint.present and (hint.value is None or hint.value > top):
            # Replace exactly the bytes judged bad, and only while no newer version exists.
            if await _exists(store, keys.manifest(top + 1)) is not None:
                finding.fix_error = f"manifest v{top + 1} appeared meanwhile; re-run repair"
                return
            mode = IfMatch(hint.etag) if hint.etag is not None else PutMode.OVERWRITE
            latest = p.latest if p.latest is not None and p.latest.version == top else None
            data = encode_manifest(latest) if latest is not None else str(top).encode()
            await store.put(keys.current, data, mode)
        else:
            # missing, lagging, below the oldest: the committers' monotonic CAS
            await advance_hint(
                store, keys, p.latest if p.latest is not None and p.latest.version == top else top
            )
        after = _parse_hint(await store.get(keys.current))
    except PreconditionFailed:
        finding.fix_error = "CURRENT changed while repairing; re-run repair"
        return
    except StorageError as e:
        finding.fix_error = f"{type(e).__name__}: {e}"
        return
    healthy = (
        after is not None
        and after >= top
        and (after == 0 or await _exists(store, keys.manifest(after)) is not None)
    )
    if healthy:
        finding.fixed = True
        finding.fix = f"CURRENT now names v{after}"
    else:
        finding.fix_error = f"CURRENT reads {after!r} afterwards; re-run repair"


# --- entry points ----------------------------------------------------------------------------


async def check_namespace(
    store: ObjectStore,
    org: str,
    namespace: str,
    *,
    dry_run: bool = True,
    grace_secs: float = 3600.0,
) -> NamespaceReport:
    """Verify one namespace (see the module docstring); fix CURRENT unless ``dry_run``."""
    keys = NamespaceKeys.of(org, namespace)
    p = await _inspect(store, keys, grace_secs)
    passes = 1
    while passes < MAX_PASSES and any(f.severity == "error" for f in p.report.findings):
        if await _exists(store, keys.manifest(p.top + 1)) is None:
            break  # nothing moved: the problems are real
        p = await _inspect(store, keys, grace_secs)
        passes += 1
    p.report.passes = passes
    if not dry_run:
        await _fix_hint(store, keys, p)
    return p.report


async def list_orgs(store: ObjectStore) -> list[str]:
    """Every org with objects in the store (top-level prefixes that are valid org names)."""
    prefixes = await store.list_prefixes("")
    return [p.rstrip("/") for p in prefixes if p != CLUSTER_PREFIX and ORG_RE.fullmatch(p.rstrip("/"))]


async def list_namespace_dirs(store: ObjectStore, org: str) -> list[str]:
    """Every namespace folder of ``org`` in the store, deleted (truncated) namespaces included."""
    prefixes = await store.list_prefixes(org_prefix(org))
    names = [namespace_from_prefix(p) for p in prefixes]
    return [n for n in names if NAMESPACE_RE.fullmatch(n) and n not in (".", "..")]


async def repair(
    store: ObjectStore,
    *,
    orgs: Sequence[str] | None,
    namespace: str | None = None,
    dry_run: bool = True,
    grace_secs: float = 3600.0,
) -> RepairReport:
    """Check (and unless ``dry_run`` fix) ``namespace`` of each org, or every namespace.

    ``orgs`` None = every org in the store.
    """
    report = RepairReport(dry_run=dry_run)
    for org in orgs if orgs is not None else await list_orgs(store):
        names = [namespace] if namespace is not None else await list_namespace_dirs(store, org)
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
                await check_namespace(store, org, name, dry_run=dry_run, grace_secs=grace_secs)
            )
    return report


__all__ = [
    "MAX_PASSES",
    "Finding",
    "NamespaceReport",
    "RepairReport",
    "check_namespace",
    "list_namespace_dirs",
    "list_orgs",
    "repair",
]
