"""Copy-on-write branches and namespaces as of a past version (docs/rfcs/0007-branches.md).

``resolve_version`` finds what a namespace held at a version (a WAL seq): the newest manifest
version whose ``indexed_through`` is at most that version (its segments), plus the WAL entries
after it up to the version, each located in the namespace whose WAL holds it. A past version must
still be retained: its manifest kept by the GC's retention rule, its segments and WAL entries not
about to be deleted; otherwise ``NotRetained`` (a 400 naming what is still readable).

``create_branch`` writes the new namespace's manifest version 1 pointing at those objects, after a
reference marker in every namespace it reads from and a fence at its own ``wal/1``; no segment or
WAL byte is copied. The order, and why a concurrent GC or writer cannot break it, is in the RFC.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from lagoon.config import Settings
from lagoon.engine import manifest_store, refs
from lagoon.engine.components import Components
from lagoon.engine.gc import DEFAULT_RETAIN_VERSIONS, list_version_times, plan_versions
from lagoon.engine.indexer import store_time_ms, upload_fresh
from lagoon.errors import InvalidRequest, Unavailable
from lagoon.format.keys import NamespaceKeys, parse_wal_seq
from lagoon.format.manifest import Branch, Manifest, PendingDelete, SegmentRef, WalRange
from lagoon.format.wal import WalEntry, encode_entry, seal_entry
from lagoon.storage.base import AlreadyExists, ObjectStore, PutMode


class NotRetained(InvalidRequest):
    """The version asked for is no longer retained (or never existed)."""


@dataclass(frozen=True)
class AtVersion:
    """A namespace as of ``version``: ``base``'s segments plus the WAL entries in ``wal``."""

    keys: NamespaceKeys
    version: int
    base: Manifest | None
    wal: tuple[WalRange, ...]  # every entry after base.indexed_through up to version, by owner

    @property
    def indexed_through(self) -> int:
        return self.base.indexed_through if self.base else 0

    def segments(self) -> tuple[SegmentRef, ...]:
        """The base's segments, each naming the namespace that holds its files."""
        own = self.keys.namespace
        return tuple(
            dataclasses.replace(s, owner=s.owner or own) for s in (self.base.segments if self.base else ())
        )

    def owners(self) -> set[str]:
        return {s.owner or self.keys.namespace for s in self.segments()} | {r.namespace for r in self.wal}

    def lineage(self, parent: str, created_at_ms: int) -> Branch:
        return Branch(parent, self.version, created_at_ms, self.wal)

    def manifest(self) -> Manifest:
        """A manifest that reads exactly this state (not committed: the view of a past version)."""
        parent = self.base.branch.parent if self.base and self.base.branch else self.keys.namespace
        base = self.base or Manifest(version=0, nonce="-", created_at_ms=0, writer="")
        return dataclasses.replace(
            base, segments=self.segments(), pending_delete=(), branch=self.lineage(parent, 0)
        )


def _ranges(base: Manifest | None, own: str, first: int, last: int) -> tuple[WalRange, ...]:
    """Entries ``first..last`` grouped into runs by the namespace whose WAL holds them."""
    out: list[WalRange] = []
    inherited = base.branch if base is not None else None
    for seq in range(first, last + 1):
        owner = (inherited.wal_owner(seq) if inherited else None) or own
        if out and out[-1].namespace == owner and out[-1].last == seq - 1:
            out[-1] = WalRange(owner, out[-1].first, seq)
        else:
            out.append(WalRange(owner, seq, seq))
    return tuple(out)


def _removal_ms(r: PendingDelete, version_time: dict[int, int]) -> int:
    v = r.removed_at_version
    return max(r.removed_at_ms, version_time.get(v, 0) if isinstance(v, int) else 0)


async def resolve_version(
    store: ObjectStore, keys: NamespaceKeys, version: int, head: int, settings: Settings, now_ms: int
) -> AtVersion:
    """What ``keys``'s namespace held at ``version`` (``head``: its current version)."""
    if version > head:
        raise InvalidRequest(f"at_version {version}: namespace '{keys.namespace}' is at version {head}")
    if version < 1:
        raise InvalidRequest(f"at_version {version}: versions start at 1")
    latest = await manifest_store.read_latest(store, keys)
    if latest is None or latest.indexed_through <= version:
        at = AtVersion(keys, version, latest, _ranges(latest, keys.namespace, _it(latest) + 1, version))
        if latest is None or latest.indexed_through < version:
            await _require_wal(store, at, latest, {}, now_ms, settings)
        return at
    return await _resolve_past(store, keys, version, latest, settings, now_ms)


def _it(m: Manifest | None) -> int:
    return m.indexed_through if m else 0


async def _resolve_past(
    store: ObjectStore, keys: NamespaceKeys, version: int, latest: Manifest, settings: Settings, now_ms: int
) -> AtVersion:
    grace_ms = int(settings.indexer.gc_grace_secs * 1000)
    version_time = await list_version_times(store, keys)
    plan = plan_versions(version_time, latest.version, now_ms, grace_ms, DEFAULT_RETAIN_VERSIONS)
    oldest: int | None = None
    for v in sorted(plan.retained, reverse=True):
        m = await _read(store, keys, v)
        if m is None:
            continue
        oldest = m.indexed_through
        if m.indexed_through > version:
            continue
        at = AtVersion(keys, version, m, _ranges(m, keys.namespace, m.indexed_through + 1, version))
        _require_segments(at, latest, version_time, now_ms, grace_ms)
        await _require_wal(store, at, latest, version_time, now_ms, settings)
        return at
    # Before the oldest manifest's fold: the empty state plus the WAL from its first entry.
    at = AtVersion(keys, version, None, _ranges(None, keys.namespace, 1, version))
    try:
        await _require_wal(store, at, latest, version_time, now_ms, settings)
    except NotRetained:
        raise _not_retained(keys, version, oldest) from None
    return at


async def _read(store: ObjectStore, keys: NamespaceKeys, v: int) -> Manifest | None:
    from lagoon.storage.base import ObjectNotFound

    try:
        return await manifest_store.read_version(store, keys, v)
    except ObjectNotFound:
        return None


def _not_retained(keys: NamespaceKeys, version: int, oldest: int | None, why: str = "") -> NotRetained:
    since = f"; the oldest version still retained is {oldest}" if oldest is not None else ""
    return NotRetained(
        f"at_version {version}: namespace '{keys.namespace}' no longer retains that version"
        f"{' (' + why + ')' if why else ''}{since} (indexer.gc_grace_secs and the newest "
        f"{DEFAULT_RETAIN_VERSIONS} manifest versions are kept)"
    )


def _require_segments(
    at: AtVersion, latest: Manifest, version_time: dict[int, int], now_ms: int, grace_ms: int
) -> None:
    """Every segment of the base is live, or left the live set less than grace/2 ago (the GC
    deletes nothing younger than grace; a creation commits within grace/2 of ``now_ms``)."""
    live = {s.id for s in latest.segments}
    pending = {r.segment_id: r for r in latest.pending_delete if r.segment_id is not None}
    for s in at.segments():
        if s.id in live:
            continue
        r = pending.get(s.id)
        if r is None or _removal_ms(r, version_time) + grace_ms // 2 <= now_ms:
            raise _not_retained(at.keys, at.version, latest.indexed_through, f"segment {s.id} was collected")


async def _require_wal(
    store: ObjectStore,
    at: AtVersion,
    latest: Manifest | None,
    version_time: dict[int, int],
    now_ms: int,
    settings: Settings,
) -> None:
    """The namespace's own entries after the base up to the version are present (one LIST) and
    not about to be collected. Entries other namespaces hold are kept by their GC (refs.py)."""
    own = [q for r in at.wal if r.namespace == at.keys.namespace for q in range(r.first, r.last + 1)]
    if not own:
        return
    grace_ms = int(settings.indexer.gc_grace_secs * 1000)
    for r in latest.pending_delete if latest else ():
        w = r.wal_seq
        if w is not None and w >= own[0] and _removal_ms(r, version_time) + grace_ms // 2 <= now_ms:
            raise _not_retained(at.keys, at.version, _it(latest), "its WAL entries were collected")
    present: set[int] = set()
    async for meta in store.list(at.keys.wal_prefix, start_after=at.keys.wal(own[0] - 1)):
        seq = parse_wal_seq(meta.key)
        if seq is not None and seq > own[-1]:
            break
        if seq is not None:
            present.add(seq)
    missing = [q for q in own if q not in present]
    if missing:
        raise _not_retained(at.keys, at.version, _it(latest), f"WAL entry {missing[0]} is gone")


async def require_fresh(store: ObjectStore, keys: NamespaceKeys) -> None:
    """A branch is created only under a name without history (no manifest, no WAL entry)."""
    async for _ in store.list(keys.manifest_prefix):
        break
    else:
        async for _ in store.list(keys.wal_prefix):
            break
        else:
            return
    raise InvalidRequest(
        f"branch: the destination namespace '{keys.namespace}' must not exist (and a name that held "
        "a namespace before cannot be branched into: choose a new name)"
    )


async def create_branch(
    store: ObjectStore,
    settings: Settings,
    components: Components,
    source: NamespaceKeys,
    dest: NamespaceKeys,
    at_version: int,
    head: int,
) -> AtVersion:
    """Create ``dest`` as a branch of ``source`` at ``at_version`` (see the RFC for the order)."""
    await require_fresh(store, dest)
    started = components.clock.monotonic()
    t0 = await store_time_ms(store)
    nonce = components.nonce().hex()
    await refs.write_marker(store, source, dest.namespace, t0, nonce)
    at = await resolve_version(store, source, at_version, head, settings, t0)
    for owner in sorted(at.owners() - {source.namespace}):
        await refs.write_marker(store, source.sibling(owner), dest.namespace, t0, nonce)
    await _fence(store, dest, components, source.namespace, at.version)
    m = Manifest(
        version=1,
        nonce=nonce,
        created_at_ms=components.clock.now_ms(),
        writer=components.node_id,
        indexed_through=at.indexed_through,
        schema=at.base.schema if at.base else None,
        settings=dict(at.base.settings) if at.base else {},
        segments=at.segments(),
        created_at_namespace_ms=at.base.created_at_namespace_ms if at.base else None,
        parent_nonce="",
        branch=at.lineage(source.namespace, t0),
    )
    if not upload_fresh(components, settings, started):
        raise Unavailable("branch: creating the branch took longer than half of indexer.gc_grace_secs; retry")
    try:
        await manifest_store.commit(store, dest, m)
    except manifest_store.ManifestConflict:
        raise InvalidRequest(
            f"branch: the destination namespace '{dest.namespace}' was created meanwhile"
        ) from None
    return at


async def _fence(
    store: ObjectStore, dest: NamespaceKeys, components: Components, parent: str, at: int
) -> None:
    """Take ``dest``'s ``wal/1`` so that no write can create the namespace meanwhile: a writer
    that finds this entry waits for the branch's manifest (engine/writer.py)."""
    entry = WalEntry(
        seq=1,
        nonce=components.nonce(),
        created_at_ms=components.clock.now_ms(),
        writer=components.node_id,
        requests=0,
        branch={"parent": parent, "at_version": at},
    )
    try:
        await store.put(dest.wal(1), encode_entry(seal_entry(entry)), PutMode.CREATE)
    except AlreadyExists:
        raise InvalidRequest(f"branch: the destination namespace '{dest.namespace}' must not exist") from None


def branching(m: Manifest | None) -> dict[str, Any] | None:
    """Metadata's ``branching``: the parent and the version the branch was created at."""
    if m is None or m.branch is None:
        return None
    return {"parent": m.branch.parent, "at_version": m.branch.at_version}


__all__ = ["AtVersion", "NotRetained", "branching", "create_branch", "require_fresh", "resolve_version"]
