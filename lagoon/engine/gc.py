"""The garbage collector: deletes what no manifest within retention needs, a grace period late.

What it deletes (one namespace per call, ``collect_garbage``; the decisions are the pure functions
``plan_versions``, ``plan_deletions`` and ``still_deletable``, the I/O is sequenced around them):

- **Pending objects** — segments and WAL entries the latest manifest lists in ``pending_delete``
  (moved there by the indexer, the compactor, truncation), once ``gc_grace_secs`` have passed
  since their *logical removal*: the later of the record's ``removed_at`` and the store timestamp
  of the manifest version that removed them. A segment still listed by a retained manifest
  version is kept. Afterwards a manifest version without those records is committed.
- **Orphan segments** — files under ``seg/`` of a segment id that no retained manifest version
  lists (live or pending), whose newest file is older than the grace period (store clock). They
  come from crashed workers and from workers that lost the manifest race.
- **Old manifest versions** — all but the newest ``retain_versions``, once superseded for longer
  than the grace period (the latest is never deleted), oldest first. A deleted namespace (its
  latest version holds no segment and no schema: a truncation folded) keeps only its latest
  version: nobody reads the versions before the delete once the grace period has passed, and
  the segments they list would otherwise stay in the bucket for good (no later version comes
  to push them out of retention).
- **WAL entries** up to the highest ``wal_through`` of the eligible WAL records (all at or below
  the latest ``indexed_through``).
- **No WAL entry whose rows a damaged segment held**: WAL entries are kept from the first seq of
  any live segment of the latest manifest whose files the listing shows missing or of another
  size than the manifest records (a warning names them), so ``lagoon repair`` can rebuild the
  segment from them; a bit flip keeps the size and is found only by reading (repair, queries).
- **Nothing a branch still references** (docs/rfcs/0007-branches.md, ``engine/refs.py``): before
  every delete batch the branches named by the namespace's reference markers are re-read; their
  segments and WAL entries stay, and nothing is deleted while a branch creation is in flight.
  Markers older than the grace period whose branch refers to nothing here are deleted.

Why this never deletes anything live, even when run by a zombie (a GC paused for any time at any
point, then resumed with stale decisions):

1. All ages are measured on the store's clock (``store.now()``, object timestamps), never the
   local one, and the clock is read *before* the listings and manifest reads they are compared to.
2. Before every delete batch the latest manifest is read again (from ``max(known, CURRENT)``), and
   only candidates that are still not live are deleted: pending ones must still be pending,
   orphans must be neither live nor pending. A pending object can never become live again (ids are
   never reused; no commit adds a segment it did not upload itself), so a pause between this check
   and the delete changes nothing.
3. Orphans are the only candidates that could still *become* live: a worker that uploaded a segment
   and has not committed yet. Committers refuse to commit (or re-home the segment) unless the
   commit returned within ``grace/2`` of the upload's start (engine/indexer.py). An orphan is
   deleted only if its files are older than ``grace`` at clock reading ``T``; such a commit must
   then have landed before ``T - grace/2``, so the manifest re-read after ``T`` shows it.
4. Pending objects stay for the grace period after the version that removed them became visible,
   so a node whose view is younger than the grace period can still read everything its view names
   (engine/state.py reloads views older than half the grace period from scratch).
5. Manifest versions: before deleting any, CURRENT is advanced to the latest version read; only
   versions below it are deleted, oldest first. So CURRENT never names a deleted version and the
   versions from CURRENT up are contiguous (engine/manifest_store.py relies on both).

``indexer.gc_grace_secs`` must exceed the longest query, upload and pause a node may survive, plus
clock skew; production deployments use an hour, tests a second or two.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from lagoon import metrics
from lagoon.config import Settings
from lagoon.engine import manifest_store, refs
from lagoon.engine.components import Components
from lagoon.engine.indexer import store_time_ms
from lagoon.engine.manifest_store import ManifestConflict
from lagoon.format.keys import NamespaceKeys, parse_manifest_version, parse_wal_seq
from lagoon.format.manifest import Manifest, PendingDelete, SegmentRef
from lagoon.logs import log_event
from lagoon.storage.base import ObjectNotFound, ObjectStore

log = logging.getLogger("lagoon.gc")

DEFAULT_RETAIN_VERSIONS = 10
DELETE_BATCH = 256
DELETE_PARALLELISM = 16
COMMIT_ATTEMPTS = 8


@dataclass
class GcOutcome:
    deleted: int = 0  # objects deleted
    version: int | None = None  # manifest version committed (records dropped), if any
    more_later: bool = False  # something will become deletable later: run again after a while
    pending: int = 0  # pending_delete records left in the latest manifest


def _ms(meta_time: Any) -> int:
    return int(meta_time.timestamp() * 1000)


class ManifestCache:
    """Decoded manifest versions by (namespace root, version): they are immutable."""

    def __init__(self, max_entries: int = 4096) -> None:
        self._items: dict[tuple[str, int], Manifest] = {}
        self.max_entries = max_entries

    async def get(self, store: ObjectStore, keys: NamespaceKeys, version: int) -> Manifest | None:
        hit = self._items.get((keys.root, version))
        if hit is not None:
            return hit
        try:
            m = await manifest_store.read_version(store, keys, version)
        except ObjectNotFound:
            return None
        if len(self._items) >= self.max_entries:
            self._items.clear()
        self._items[(keys.root, version)] = m
        return m

    def forget_below(self, keys: NamespaceKeys, version: int) -> None:
        for k in [k for k in self._items if k[0] == keys.root and k[1] < version]:
            del self._items[k]


async def _delete_all(store: ObjectStore, keys_to_delete: Iterable[str]) -> int:
    sem = asyncio.Semaphore(DELETE_PARALLELISM)
    todo = list(keys_to_delete)

    async def one(key: str) -> None:
        async with sem:
            await store.delete(key)

    await asyncio.gather(*(one(k) for k in todo))
    metrics.GC_DELETED_OBJECTS.inc(len(todo))
    return len(todo)


def _batches(items: list[str], size: int = DELETE_BATCH) -> Iterable[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


@dataclass(frozen=True)
class VersionPlan:
    """Which manifest versions stay (their segments stay referenced) and which may be deleted."""

    retained: frozenset[int]
    old: tuple[int, ...]
    more_later: bool  # a version becomes deletable once its grace period has passed


def deleted(m: Manifest) -> bool:
    """Does ``m`` describe a deleted namespace (a folded truncation: no segment, no schema)?"""
    return not m.segments and not (m.schema or {}).get("id_type")


def plan_versions(
    version_time: dict[int, int], latest: int, now: int, grace_ms: int, retain_versions: int
) -> VersionPlan:
    """Keep the newest ``retain_versions`` and every version superseded less than ``grace_ms`` ago
    (at store time ``now``); the others are old. Pure."""
    newest_kept = latest - retain_versions + 1
    retained: set[int] = set()
    old: list[int] = []
    more_later = False
    for v, created in version_time.items():
        if v >= newest_kept:
            retained.add(v)
            continue
        superseded = version_time.get(v + 1, created)  # no successor: a leftover, age by itself
        if superseded + grace_ms >= now:
            retained.add(v)
            more_later = True
        else:
            old.append(v)
    return VersionPlan(frozenset(retained), tuple(old), more_later)


@dataclass(frozen=True)
class GcPlan:
    """What one pass may delete, decided from one observation of the namespace (pure)."""

    seg_records: tuple[PendingDelete, ...]  # eligible pending records of segments
    wal_records: tuple[PendingDelete, ...]  # eligible pending records of WAL entries
    pending_doomed: frozenset[str]  # pending segments past grace that no retained version lists
    orphans: frozenset[str]  # segment ids nothing lists, with files older than the grace period
    more_later: bool


def plan_deletions(
    latest: Manifest,
    referenced: set[str],
    version_time: dict[int, int],
    newest_file: dict[str, int],
    now: int,
    grace_ms: int,
) -> GcPlan:
    """Pending records past grace (from logical removal: the later of the record's time and the
    store time of the version that removed it) and orphan segments past grace. Pure."""

    def removal_ms(r: PendingDelete) -> int:
        t = r.removed_at_ms
        v = r.removed_at_version
        if isinstance(v, int) and v in version_time:
            t = max(t, version_time[v])
        return t

    more_later = False
    pending_ids = {sid for r in latest.pending_delete if (sid := r.segment_id) is not None}
    eligible = [r for r in latest.pending_delete if removal_ms(r) + grace_ms < now]
    if len(eligible) < len(latest.pending_delete):
        more_later = True
    seg_records = tuple(r for r in eligible if r.segment_id is not None)
    wal_records = tuple(r for r in eligible if r.wal_seq is not None)
    pending_doomed = {sid for r in seg_records if (sid := r.segment_id) not in referenced and sid}
    if any(r.segment_id in referenced for r in seg_records):
        more_later = True  # a retained version still lists it: later
    orphans: set[str] = set()
    for seg_id, newest in newest_file.items():
        if seg_id in referenced or seg_id in pending_ids:
            continue
        if newest + grace_ms < now:
            orphans.add(seg_id)
        else:
            more_later = True
    return GcPlan(seg_records, wal_records, frozenset(pending_doomed), frozenset(orphans), more_later)


def still_deletable(segment_ids: Iterable[str], plan: GcPlan, current: Manifest) -> list[str]:
    """The planned segments that the latest manifest ``current`` still allows deleting: not live,
    and pending ones still pending, orphans still not pending (docs: point 2 above). Pure."""
    live = {s.id for s in current.segments}
    still_pending = {sid for r in current.pending_delete if (sid := r.segment_id) is not None}
    return [
        sid
        for sid in segment_ids
        if sid not in live
        and (
            (sid in plan.pending_doomed and sid in still_pending)
            or (sid in plan.orphans and sid not in still_pending)
        )
    ]


@dataclass
class _Observation:
    now: int
    latest: Manifest
    version_time: dict[int, int]
    files: dict[str, list[str]]
    newest_file: dict[str, int]


async def list_version_times(store: ObjectStore, keys: NamespaceKeys) -> dict[int, int]:
    """Every manifest version present with its store time (ms): one LIST."""
    version_time: dict[int, int] = {}
    async for meta in store.list(keys.manifest_prefix):
        v = parse_manifest_version(meta.key)
        if v is not None:
            version_time[v] = _ms(meta.last_modified)
    return version_time


async def _list_segment_files(
    store: ObjectStore, keys: NamespaceKeys
) -> tuple[dict[str, list[str]], dict[str, int], dict[str, int]]:
    """Segment files by segment id, each segment's newest file time, and every file's size."""
    files: dict[str, list[str]] = {}
    newest_file: dict[str, int] = {}
    sizes: dict[str, int] = {}
    async for meta in store.list(keys.segment_prefix):
        seg_id = meta.key[len(keys.segment_prefix) :].split("/", 1)[0]
        files.setdefault(seg_id, []).append(meta.key)
        newest_file[seg_id] = max(newest_file.get(seg_id, 0), _ms(meta.last_modified))
        sizes[meta.key] = meta.size
    return files, newest_file, sizes


def damaged_below(m: Manifest, keys: NamespaceKeys, sizes: dict[str, int], through: int) -> list[SegmentRef]:
    """The live segments of ``m`` holding rows of WAL entries at or below ``through`` whose
    files (in this namespace's ``seg/``) the listing ``sizes`` shows missing or of another size
    than the manifest records: until repair has rebuilt them, those WAL entries may be the only
    intact copy of their rows. A bit flip keeps the size, so only a read (repair) finds it. Pure."""
    out = []
    for ref in m.segments:
        if ref.owner is not None or ref.seq_from > through:
            continue  # a parent's segment is its own namespace's to check
        prefix = f"{keys.segment_prefix}{ref.id}/"
        if any(sizes.get(prefix + name) != f.get("size") for name, f in ref.files.items()):
            out.append(ref)
    return out


async def collect_garbage(
    store: ObjectStore,
    keys: NamespaceKeys,
    settings: Settings,
    components: Components,
    *,
    retain_versions: int = DEFAULT_RETAIN_VERSIONS,
    cache: ManifestCache | None = None,
) -> GcOutcome:
    """One GC pass over ``keys`` (see the module docstring): observe, plan (pure), delete."""
    if retain_versions < 1:
        raise ValueError("retain_versions must be >= 1")
    cache = cache or ManifestCache()
    grace_ms = int(settings.indexer.gc_grace_secs * 1000)
    out = GcOutcome()

    # 1. The store's clock first: every age below is compared with this earlier reading.
    now = await store_time_ms(store)
    latest = await manifest_store.read_latest(store, keys)
    if latest is None:
        return out

    # 2. Manifest versions: which are retained, and the segments they reference.
    if deleted(latest):
        retain_versions = 1
    version_time = await list_version_times(store, keys)
    versions = plan_versions(version_time, latest.version, now, grace_ms, retain_versions)
    referenced: set[str] = {s.id for s in latest.segments}
    for v in sorted(versions.retained):
        m = latest if v == latest.version else await cache.get(store, keys, v)
        if m is not None:
            referenced.update(s.id for s in m.segments)
    cache.forget_below(keys, min(versions.retained, default=latest.version))

    # 3-4. Pending records and orphan segment files past grace; what branches still reference.
    files, newest_file, sizes = await _list_segment_files(store, keys)
    branch_refs = await refs.read_references(store, keys, now, grace_ms)
    plan = plan_deletions(latest, referenced | branch_refs.segments, version_time, newest_file, now, grace_ms)
    out.more_later = versions.more_later or plan.more_later

    # 5. Delete, re-validating against the latest manifest (and the branches) before every batch.
    run = _Deletion(store, keys, components, latest, out, (now, grace_ms))
    done_records = await run.segments(plan, files)
    done_records += await run.wal(plan, sizes)
    await run.versions(versions, retain_versions)
    out.deleted += await refs.delete_stale(store, branch_refs)

    # 6. Drop the records of what was deleted (a new version; rebasing is fine: it only removes
    #    records of objects that are gone).
    if done_records:
        out.version = await _drop_records(store, keys, components, run.view, done_records)
    out.pending = len(run.view.pending_delete) - (len(done_records) if out.version else 0)
    if out.deleted:
        log_event(
            log,
            "garbage collected",
            namespace=keys.root,
            deleted=out.deleted,
            version=out.version,
            orphans=len(plan.orphans),
        )
    return out


class _Deletion:
    """The deleting half of a pass: each batch re-reads the latest manifest first."""

    def __init__(
        self,
        store: ObjectStore,
        keys: NamespaceKeys,
        components: Components,
        latest: Manifest,
        out: GcOutcome,
        clock: tuple[int, int],
    ) -> None:
        self.store, self.keys, self.out = store, keys, out
        self.failpoints = components.failpoints
        self.view = latest
        self.now, self.grace_ms = clock

    async def branches(self) -> refs.References:
        """What the branches reference, read after the manifest re-read (docs/rfcs/0007): a
        creation whose marker this misses started after it and refuses what it would need."""
        found = await refs.read_references(self.store, self.keys, self.now, self.grace_ms)
        if found.in_flight or found.branches:
            self.out.more_later = True
        return found

    async def revalidate(self) -> Manifest:
        # Ages were judged on the clock reading of step 1, taken before this read: that is the
        # order point 3 of the module docstring needs; a later reading could only add candidates.
        fresh = await manifest_store.read_latest(self.store, self.keys, self.view)
        self.view = fresh or self.view  # the newest versions are never deleted: fresh is never None
        return self.view

    async def segments(self, plan: GcPlan, files: dict[str, list[str]]) -> list[PendingDelete]:
        done: list[PendingDelete] = []
        seg_ids = sorted(plan.pending_doomed | plan.orphans)
        for batch_ids in [seg_ids[i : i + 64] for i in range(0, len(seg_ids), 64)]:
            allowed = still_deletable(batch_ids, plan, await self.revalidate())
            branch_refs = await self.branches()
            allowed = [] if branch_refs.in_flight else [s for s in allowed if s not in branch_refs.segments]
            self.failpoints.hit("gc.before_delete")
            for chunk in _batches([k for sid in allowed for k in files.get(sid, [])]):
                self.out.deleted += await _delete_all(self.store, chunk)
            done += [r for r in plan.seg_records if r.segment_id in allowed]
        # Records of pending segments whose files are all gone already (deleted by an earlier pass,
        # or owned by another namespace: a branch's record of its parent's segment).
        done += [
            r for r in plan.seg_records if r.segment_id in plan.pending_doomed and r.segment_id not in files
        ]
        return done

    async def wal(self, plan: GcPlan, sizes: dict[str, int]) -> list[PendingDelete]:
        if not plan.wal_records:
            return []
        through = max(w for r in plan.wal_records if (w := r.wal_seq) is not None)
        m = await self.revalidate()
        branch_refs = await self.branches()
        if branch_refs.in_flight:
            return []
        through = branch_refs.keeps_wal(min(through, m.indexed_through))
        damaged = damaged_below(m, self.keys, sizes, through)
        if damaged:  # keep the WAL copy of their rows for repair (a segment newer than the
            # listing looks damaged too: its WAL entries then wait for the next pass)
            through = min(ref.seq_from for ref in damaged) - 1
            self.out.more_later = True
            log_event(
                log,
                "WAL entries kept: a segment they were indexed into has a missing or truncated file",
                level=logging.WARNING,
                namespace=self.keys.root,
                segments=[ref.id for ref in damaged],
                wal_kept_from=through + 1,
                fix="run `lagoon repair --dry-run` to see the plan, then `lagoon repair`",
            )
        doomed_wal = []
        async for meta in self.store.list(self.keys.wal_prefix):
            seq = parse_wal_seq(meta.key)
            if seq is None:
                continue
            if seq > through:
                break
            doomed_wal.append(meta.key)
        self.failpoints.hit("gc.before_delete")
        for chunk in _batches(doomed_wal):
            self.out.deleted += await _delete_all(self.store, chunk)
        return [r for r in plan.wal_records if (r.wal_seq or 0) <= through]

    async def versions(self, versions: VersionPlan, retain_versions: int) -> None:
        if not versions.old:
            return
        m = await self.revalidate()
        hint = await manifest_store.advance_hint(self.store, self.keys, m)
        doomed = sorted(v for v in versions.old if v < min(hint, m.version - retain_versions + 1))
        self.failpoints.hit("gc.before_delete")
        for v in doomed:  # oldest first, one at a time: the surviving versions stay contiguous
            await self.store.delete(self.keys.manifest(v))
            metrics.GC_DELETED_OBJECTS.inc()
            self.out.deleted += 1


async def _drop_records(
    store: ObjectStore,
    keys: NamespaceKeys,
    components: Components,
    known: Manifest,
    records: list[PendingDelete],
) -> int | None:
    base: Manifest | None = known
    for _ in range(COMMIT_ATTEMPTS):
        base = await manifest_store.read_latest(store, keys, base)
        if base is None:
            return None
        kept = tuple(r for r in base.pending_delete if r not in records)
        if len(kept) == len(base.pending_delete):
            return None
        new = manifest_store.next_version(base, components, pending_delete=kept)
        try:
            await manifest_store.commit(store, keys, new)
        except ManifestConflict:
            continue
        return new.version
    return None


__all__ = [
    "DEFAULT_RETAIN_VERSIONS",
    "GcOutcome",
    "GcPlan",
    "ManifestCache",
    "VersionPlan",
    "collect_garbage",
    "damaged_below",
    "list_version_times",
    "plan_deletions",
    "plan_versions",
    "still_deletable",
]
