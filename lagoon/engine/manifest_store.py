"""Committing and finding manifest versions: the indexer's, compactor's and GC's only CAS.

Commit protocol (``commit``):

1. ``manifest/{base+1}`` is created with create-if-absent. Success is the commit; ``AlreadyExists``
   means another committer won the version (``ManifestConflict``): the caller reloads and decides
   again — a compaction aborts, an index build is simply redone later. Ambiguous outcomes are
   settled by the retrying store reading the key back (every version holds a fresh nonce).
2. ``manifest/CURRENT`` (a hint: a copy of the manifest it names) is advanced *monotonically*:
   a compare-and-swap (``lagoon.storage.cas``) replaces it only if it holds a lower version. A plain PUT would let a committer that paused
   between steps 1 and 2 move the hint backwards, possibly below versions GC has deleted since —
   readers would then start from a missing version.
0. Base check. The base version must exist: one that is missing while CURRENT and the next
   version show nothing newer means a broken chain (a version lost, its copy read from CURRENT),
   and the commit is refused with ``DataCorruption`` (run ``lagoon repair``); one that GC deleted
   because the chain moved on is a lost race (``ManifestConflict``), as in step 1.
3. Lineage check. Old versions are deleted by GC, so create-if-absent alone cannot stop a zombie
   whose base is ancient from *re*-creating a deleted version number (a fork nobody else reads).
   After step 1: if the hint is at most our version, nothing above us existed, so no version we
   could collide with was ever deleted (GC advances the hint past everything it deletes, below).
   If the hint is higher, the next version must name our nonce as its parent
   (``Manifest.parent_nonce``); otherwise our version is a fork, and ``commit`` reports a conflict.

Finding the latest version (``read_latest``): start at ``max(known, CURRENT)`` and probe
``ver+1, ver+2, ...`` until a 404. GC keeps this sound: before deleting any manifest version it
advances CURRENT to the latest version it read, and it deletes only versions below that, oldest
first. So CURRENT never points below the lowest surviving version, and the versions from CURRENT up
to the latest are all present: the probe cannot stop early at a hole.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from lagoon.engine.components import Components
from lagoon.errors import DataCorruption, IncompatibleFormat, NamespaceDamaged
from lagoon.format.invariants import manifest_problems, require, successor_problems
from lagoon.format.keys import NamespaceKeys, parse_manifest_version
from lagoon.format.manifest import Manifest, decode_manifest, encode_manifest
from lagoon.logs import log_event
from lagoon.storage import cas
from lagoon.storage.base import AlreadyExists, ObjectNotFound, ObjectStore, PutMode, StorageError

log = logging.getLogger("lagoon.manifest")

_HINT_ATTEMPTS = 16


class ManifestConflict(Exception):
    """The version was taken by another committer (or our version is an unreachable fork)."""


async def read_version(store: ObjectStore, keys: NamespaceKeys, version: int) -> Manifest:
    """One manifest version, verified. Raises ObjectNotFound."""
    return decode_version(await store.get(keys.manifest(version)), keys, version)


def decode_version(data: bytes, keys: NamespaceKeys, version: int) -> Manifest:
    """Manifest ``version`` of the namespace from its bytes, verified. Bytes that do not decode,
    or hold another version, raise ``NamespaceDamaged`` naming the namespace and ``manifest/{v}``
    (never the object key: the message reaches clients; the key goes to the detail, for the log)."""
    name = f"manifest/{version}"
    try:
        m = decode_manifest(data, what=name)
    except IncompatibleFormat:
        raise
    except DataCorruption as e:
        raise _damaged(keys, e.message, version) from None
    if m.version != version:
        raise _damaged(keys, f"{name}: holds version {m.version}", version)
    return m


def _damaged(keys: NamespaceKeys, problem: str, version: int) -> NamespaceDamaged:
    return NamespaceDamaged(
        f"namespace '{keys.namespace}' cannot be read: {problem}", detail=f"object {keys.manifest(version)}"
    )


async def read_hint(store: ObjectStore, keys: NamespaceKeys) -> int:
    """The version CURRENT names, 0 if it is missing or unreadable (it is only a hint)."""
    return (await read_hint_manifest(store, keys))[0]


async def read_hint_manifest(store: ObjectStore, keys: NamespaceKeys) -> tuple[int, Manifest | None]:
    """The version CURRENT names and, when CURRENT holds it, that manifest (see ``parse_hint``)."""
    try:
        raw = await store.get(keys.current)
    except ObjectNotFound:
        return 0, None
    return parse_hint(raw, what=keys.current)


def parse_hint(raw: bytes, *, what: str = "CURRENT") -> tuple[int, Manifest | None]:
    """CURRENT holds a copy of the manifest it names (the bytes of ``manifest/{v}.json``), so a
    cold reader needs one GET, not two; the older form, the decimal version alone, is read too.
    Unreadable content is version 0 (it is only a hint: readers then probe)."""
    text = raw.lstrip()
    if text.startswith(b"{"):
        try:
            m = decode_manifest(raw, what=what)
        except DataCorruption:
            return 0, None
        return m.version, m
    try:
        return max(0, int(raw.decode().strip() or 0)), None
    except (ValueError, UnicodeDecodeError):
        return 0, None


def _parse_hint(raw: bytes) -> int:
    return parse_hint(raw)[0]


async def list_versions(store: ObjectStore, keys: NamespaceKeys) -> list[int]:
    """Every manifest version present, ascending (one LIST)."""
    out = []
    async for meta in store.list(keys.manifest_prefix):
        v = parse_manifest_version(meta.key)
        if v is not None:
            out.append(v)
    return sorted(out)


async def read_latest(
    store: ObjectStore, keys: NamespaceKeys, known: Manifest | None = None
) -> Manifest | None:
    """The latest manifest version (None if the namespace has none), from ``max(known, CURRENT)``
    (CURRENT's copy of the manifest saves a GET)."""
    m = known
    hint, copy = await read_hint_manifest(store, keys)
    if hint > (m.version if m else 0):
        try:
            m = copy if copy is not None else await read_version(store, keys, hint)
        except ObjectNotFound:
            # Cannot happen while CURRENT only moves forward and GC deletes below it; recover anyway.
            versions = await list_versions(store, keys)
            if versions and versions[-1] > (m.version if m else 0):
                m = await read_version(store, keys, versions[-1])
    version = m.version if m else 0
    while True:
        try:
            nxt = await read_version(store, keys, version + 1)
        except ObjectNotFound:
            return m
        m, version = nxt, nxt.version


def next_version(base: Manifest | None, components: Components, **changes: Any) -> Manifest:
    """A new manifest on top of ``base``: version+1, fresh nonce, parent link, ``changes`` applied."""
    fields: dict[str, Any] = {
        "version": (base.version if base else 0) + 1,
        "nonce": components.nonce().hex(),
        "created_at_ms": components.clock.now_ms(),
        "writer": components.node_id,
        "parent_nonce": base.nonce if base else "",
    }
    new = Manifest(**fields, **changes) if base is None else dataclasses.replace(base, **fields, **changes)
    if new.branch is not None and new.branch.wal:
        # WAL entries the new version folded are no longer read from other namespaces.
        new = dataclasses.replace(new, branch=new.branch.clipped(new.indexed_through))
    require(successor_problems(base, new), f"manifest v{new.version}")
    return new


async def advance_hint(store: ObjectStore, keys: NamespaceKeys, manifest: Manifest | int) -> int:
    """Make CURRENT name at least ``manifest``'s version, holding a copy of it (given a bare
    version, as ``lagoon repair`` does when that manifest is unreadable: the decimal form).
    Returns the version CURRENT names afterwards."""
    if isinstance(manifest, Manifest):
        version, data = manifest.version, encode_manifest(manifest)
    else:
        version, data = manifest, str(manifest).encode()

    async def step(raw: bytes | None) -> cas.Keep[int] | cas.Write[int]:
        if raw is not None and (current := _parse_hint(raw)) >= version:
            return cas.Keep(current)
        return cas.Write(data, version)

    try:
        return (await cas.update(store, keys.current, step, attempts=_HINT_ATTEMPTS)).value
    except cas.CasExhausted:
        return await read_hint(store, keys)


async def commit(store: ObjectStore, keys: NamespaceKeys, manifest: Manifest) -> None:
    """Create ``manifest`` at its version (see the module docstring). Raises ManifestConflict.
    A manifest that breaks an invariant (``lagoon.format.invariants``) is never written."""
    require(manifest_problems(manifest), keys.manifest(manifest.version))
    if manifest.version > 1:
        await _require_base(store, keys, manifest.version - 1)
    try:
        await store.put(keys.manifest(manifest.version), encode_manifest(manifest), PutMode.CREATE)
    except AlreadyExists:
        raise ManifestConflict(f"{keys.manifest(manifest.version)} already exists") from None
    try:
        hint = await advance_hint(store, keys, manifest)
    except StorageError as e:
        # The version is committed; only the hint lags (readers probe past it). The lineage check
        # needs the hint, so it is skipped: it matters only after a pause longer than the grace.
        log_event(log, "could not advance CURRENT", level=logging.WARNING, key=keys.current, error=str(e))
        return
    if hint > manifest.version and not await _successor_names(store, keys, manifest):
        raise ManifestConflict(
            f"{keys.manifest(manifest.version)} was re-created after GC deleted it (CURRENT is {hint}): "
            "the commit is an unreachable fork"
        )


async def _require_base(store: ObjectStore, keys: NamespaceKeys, base: int) -> None:
    """Refuse to build on a version that does not exist. Missing because the chain moved on (GC
    deletes a version only below CURRENT and below a newer version): a lost race, like any
    other (``ManifestConflict``; the caller reloads and aborts or redoes its work). Missing while
    nothing newer exists (deleted by hand or lost, and the base read from CURRENT's copy):
    the chain is broken, and committing would make the hole permanent (``DataCorruption``;
    ``lagoon repair`` restores the version from CURRENT's copy or closes the hole)."""
    try:
        await store.head(keys.manifest(base))
        return
    except ObjectNotFound:
        pass
    if await read_hint(store, keys) > base:
        raise ManifestConflict(f"{keys.manifest(base)} was deleted: the chain moved past it")
    try:
        await store.head(keys.manifest(base + 1))
    except ObjectNotFound:
        raise DataCorruption(
            f"{keys.manifest(base)} is missing and nothing newer exists, so the manifest chain of "
            f"{keys.root} is broken: refusing to commit on top of it; run `lagoon repair`"
        ) from None
    raise ManifestConflict(f"{keys.manifest(base + 1)} already exists")


async def _successor_names(store: ObjectStore, keys: NamespaceKeys, manifest: Manifest) -> bool:
    try:
        successor = await read_version(store, keys, manifest.version + 1)
    except ObjectNotFound:
        return False
    return successor.parent_nonce == manifest.nonce


__all__ = [
    "ManifestConflict",
    "advance_hint",
    "commit",
    "decode_version",
    "list_versions",
    "next_version",
    "parse_hint",
    "read_hint",
    "read_hint_manifest",
    "read_latest",
    "read_version",
]
