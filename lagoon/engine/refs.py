"""Branch references: which objects of a namespace its branches may still read (RFC 0007).

A branch creation writes one *reference marker* per namespace whose objects it reads
(``_lagoon/refs/{org}/{owner}/{branch}/{ms}-{nonce}``) before it commits the branch's manifest.
The owner's GC calls ``read_references`` right before every delete batch: for each branch named
by a marker it reads every present manifest version of that branch and keeps

- the owner's segments any of them lists,
- the owner's WAL entries from the lowest one any of them reads (``branch.wal`` ranges),
- everything, while a marker younger than the grace period names a branch that has no manifest
  yet (a creation in flight: it commits within grace/2 of its start, or not at all).

A branch's references only shrink after its creation (its commits add only segments it built
itself), so what the GC read stays a superset of what the branch can still need.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from lagoon.engine import manifest_store
from lagoon.format.keys import NamespaceKeys, parse_ref_marker, ref_marker, refs_prefix
from lagoon.format.manifest import Manifest
from lagoon.storage.base import ObjectNotFound, ObjectStore, PutMode

# S3 store clocks are Last-Modified times, truncated to the second: a marker's stamp may read up to
# this much older than the creation really is.
CLOCK_RESOLUTION_MS = 1000


@dataclass(frozen=True)
class Marker:
    key: str
    branch: str
    stamp_ms: int  # the creation's store clock reading


@dataclass(frozen=True)
class References:
    """What the branches of one owner still reference (from one reading)."""

    segments: frozenset[str] = frozenset()  # owner's segment ids a branch version lists
    wal_from: int | None = None  # lowest owner WAL seq a branch version reads
    in_flight: bool = False  # a young marker whose branch has no manifest yet: delete nothing
    stale: tuple[str, ...] = ()  # markers past grace whose branch refers to nothing of the owner
    branches: tuple[str, ...] = field(default=())  # branches that refer to the owner

    def keeps_wal(self, through: int) -> int:
        """The highest owner WAL seq ``<= through`` that may be deleted."""
        return through if self.wal_from is None else min(through, self.wal_from - 1)


async def write_marker(
    store: ObjectStore, owner: NamespaceKeys, branch: str, stamp_ms: int, nonce: str
) -> str:
    key = ref_marker(owner, branch, stamp_ms, nonce)
    await store.put(key, b"{}", PutMode.OVERWRITE)
    return key


async def list_markers(store: ObjectStore, owner: NamespaceKeys) -> list[Marker]:
    out = []
    async for meta in store.list(refs_prefix(owner)):
        parsed = parse_ref_marker(owner, meta.key)
        if parsed is not None:
            out.append(Marker(meta.key, *parsed))
    return out


async def _branch_versions(store: ObjectStore, keys: NamespaceKeys) -> list[Manifest]:
    out = []
    for v in await manifest_store.list_versions(store, keys):
        try:
            out.append(await manifest_store.read_version(store, keys, v))
        except ObjectNotFound:
            continue  # deleted by the branch's GC meanwhile: it no longer needs what it listed
    return out


def reads_from(manifests: Iterable[Manifest], owner: str) -> tuple[frozenset[str], int | None]:
    """What ``manifests`` read of namespace ``owner``'s objects: the owner's segment ids any of them
    lists, and the lowest owner WAL seq any of them reads (``None``: none)."""
    segs: set[str] = set()
    first: int | None = None
    for m in manifests:
        segs |= {s.id for s in m.segments if s.owner == owner}
        for r in m.branch.wal if m.branch else ():
            if r.namespace == owner:
                first = r.first if first is None else min(first, r.first)
    return frozenset(segs), first


async def read_references(store: ObjectStore, owner: NamespaceKeys, now_ms: int, grace_ms: int) -> References:
    """What the branches named by ``owner``'s markers reference, read now (see the docstring)."""
    markers = await list_markers(store, owner)
    by_branch: dict[str, list[Marker]] = {}
    for mk in markers:
        by_branch.setdefault(mk.branch, []).append(mk)
    segments: set[str] = set()
    wal_from: int | None = None
    in_flight = False
    stale: list[str] = []
    referring: list[str] = []
    for branch, marks in sorted(by_branch.items()):
        versions = await _branch_versions(store, owner.sibling(branch))
        segs, first = reads_from(versions, owner.namespace)
        segments |= segs
        if first is not None:
            wal_from = first if wal_from is None else min(wal_from, first)
        refers = bool(segs) or first is not None
        young = [mk for mk in marks if mk.stamp_ms + grace_ms + CLOCK_RESOLUTION_MS > now_ms]
        in_flight = in_flight or (not versions and bool(young))
        if refers:
            referring.append(branch)
        else:
            stale += [mk.key for mk in marks if mk not in young]
    return References(frozenset(segments), wal_from, in_flight, tuple(stale), tuple(referring))


async def delete_stale(store: ObjectStore, refs: References) -> int:
    for key in refs.stale:
        await store.delete(key)
    return len(refs.stale)


__all__ = [
    "Marker",
    "References",
    "delete_stale",
    "list_markers",
    "read_references",
    "reads_from",
    "write_marker",
]
