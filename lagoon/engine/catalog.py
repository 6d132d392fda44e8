"""The namespace catalog: a marker object per namespace, and a per-org count (docs/formats/catalog.md).

Listing an org's namespaces reads the org record (one GET) and one page of marker keys (one LIST),
whatever the org holds; ``limits.max_namespaces`` reads and updates the org record by
compare-and-swap, without listing anything. The markers are kept in step by the write and
delete paths (``Database``), in an order chosen so that a crash at any point can only leave a
marker too many (a listing names a namespace that does not exist: its reads answer 404), never
one too few (a namespace that exists but is not listed would be missed by backups):

- creating write: ``before_create`` (marker create-if-absent, count + 1 — refusing past the limit)
  *before* the WAL commit, ``after_create`` (marker still there? else put it back) after it, so a
  concurrent delete that removed the marker in between cannot hide the new namespace;
- delete: ``after_delete`` once the truncating entry is committed: marker deleted, count - 1, then
  the namespace is read again and, if a concurrent write re-created it meanwhile, its marker is
  put back.

A marker left by a crashed or refused creation, a missing one in an org that predates the
catalog, and count drift are found and fixed by ``reconcile``, which the worker's sweep (at start,
then hourly) and ``lagoon repair`` run with the existence of every namespace folder they checked;
an org becomes ``complete`` (listed from markers alone) only then, or when its first namespace
is created with the catalog. Until then listings fall back to reading every namespace folder.

``limits.max_namespaces`` is checked and the count incremented in one compare-and-swap, so
concurrent creations on any number of nodes cannot both take the last slot. The limit is soft only
by count drift: a creation that crashed between its count update and its commit (counted, never
created), or markers changed by hand; the sweep and repair recount.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from lagoon.config import Settings
from lagoon.engine.components import Components
from lagoon.engine.state import NamespaceState
from lagoon.errors import DataCorruption, Forbidden
from lagoon.format.catalog import Marker, OrgCatalog, decode_org, encode_marker, encode_org
from lagoon.format.keys import (
    NamespaceKeys,
    catalog_marker,
    catalog_markers_prefix,
    catalog_org,
    namespace_from_marker,
    org_prefix,
)
from lagoon.logs import log_event
from lagoon.storage import cas
from lagoon.storage.base import AlreadyExists, ObjectNotFound, ObjectStore, PutMode

log = logging.getLogger("lagoon.catalog")

_CAS_ATTEMPTS = 32
YOUNG_MARKER_SECS = 600.0
"""``reconcile`` never deletes a marker younger than this: its creation may still be committing."""

CountExisting = Callable[[], Awaitable[int]]


def _decode_or_none(data: bytes | None, what: str) -> OrgCatalog | None:
    if data is None:
        return None
    try:
        return decode_org(data, what=what)
    except DataCorruption as e:
        # a damaged record is rebuilt by the next sweep or repair; until then: incomplete
        log_event(log, "unreadable org catalog", level=logging.WARNING, error=str(e))
        return OrgCatalog(count=0, complete=False)


class Catalog:
    """Markers and org records of one store (stateless: every call reads the store)."""

    def __init__(self, store: ObjectStore, components: Components) -> None:
        self.store = store
        self.components = components

    def _record(self, count: int, complete: bool, before: OrgCatalog | None) -> bytes:
        return encode_org(
            OrgCatalog(
                count=max(0, count),
                complete=complete,
                updated_ms=self.components.clock.now_ms(),
                nonce=self.components.nonce().hex(),
                extra=before.extra if before is not None else (),
            )
        )

    # -- reading ----------------------------------------------------------------------------------

    async def read_org(self, org: str) -> OrgCatalog | None:
        key = catalog_org(org)
        try:
            data = await self.store.get(key)
        except ObjectNotFound:
            return None
        return _decode_or_none(data, key)

    async def page(self, org: str, *, prefix: str, after: str | None, limit: int) -> list[str] | None:
        """Up to ``limit`` namespace names of ``org`` starting with ``prefix``, after ``after``, in
        key order: one GET and one LIST. None when the org's catalog is not complete."""
        record = await self.read_org(org)
        if record is None or not record.complete:
            return None
        base = catalog_markers_prefix(org)
        names: list[str] = []
        start = catalog_marker(org, after) if after else None
        async for meta in self.store.list(base + prefix, start_after=start):
            names.append(namespace_from_marker(meta.key))
            if len(names) >= limit:
                break
        return names

    # -- creation and deletion ------------------------------------------------------------------------

    async def before_create(
        self, org: str, namespace: str, *, limit: int | None, count_existing: CountExisting
    ) -> None:
        """Before the first write of ``namespace``: its marker, and the org's count + 1. Raises
        ``Forbidden`` when the org already holds ``limit`` namespaces (``count_existing`` counts
        them the slow way while the org's catalog is not complete)."""
        marker = catalog_marker(org, namespace)
        try:
            await self.store.head(marker)
            return  # already counted (a re-created namespace, or a concurrent creation)
        except ObjectNotFound:
            pass
        slow_count: list[int] = []

        async def step(data: bytes | None) -> cas.Keep[None] | cas.Write[None]:
            before = _decode_or_none(data, catalog_org(org))
            if before is None:
                complete = not await self.store.list_prefixes(org_prefix(org), limit=1)
                count = 0
            else:
                complete, count = before.complete, before.count
            if limit is not None:
                if complete:
                    existing = count
                else:
                    if not slow_count:
                        slow_count.append(await count_existing())
                    existing = slow_count[0]
                if existing >= limit:
                    raise Forbidden(
                        f"org '{org}' already has {limit} namespaces (limits.max_namespaces); "
                        f"delete one or raise the limit to create '{namespace}'"
                    )
            return cas.Write(self._record(count + 1, complete, before), None)

        await cas.update(self.store, catalog_org(org), step, attempts=_CAS_ATTEMPTS)
        if not await self._put_marker(org, namespace):
            await self._adjust(org, -1)  # a concurrent creation put it first and counted itself

    async def after_create(self, org: str, namespace: str) -> None:
        """After the creating commit: the marker must still be there (a delete racing with the
        creation may have removed it)."""
        try:
            await self.store.head(catalog_marker(org, namespace))
        except ObjectNotFound:
            if await self._put_marker(org, namespace):
                await self._adjust(org, +1)

    async def after_delete(self, org: str, namespace: str, *, exists: Callable[[], Awaitable[bool]]) -> None:
        """After the truncating commit: marker out, count - 1; back in if the namespace was
        re-created meanwhile (``exists`` reads it again)."""
        marker = catalog_marker(org, namespace)
        try:
            await self.store.head(marker)
            had = True
        except ObjectNotFound:
            had = False
        if had:
            await self.store.delete(marker)
            await self._adjust(org, -1)
        if await exists():
            await self.after_create(org, namespace)

    async def _put_marker(self, org: str, namespace: str) -> bool:
        """Create the marker; False if it already existed."""
        body = Marker(org, namespace, self.components.clock.now_ms(), self.components.node_id)
        try:
            await self.store.put(catalog_marker(org, namespace), encode_marker(body), PutMode.CREATE)
        except AlreadyExists:
            return False
        return True

    async def _adjust(self, org: str, delta: int) -> None:
        async def step(data: bytes | None) -> cas.Keep[None] | cas.Write[None]:
            before = _decode_or_none(data, catalog_org(org))
            if before is None:
                return cas.Keep(None)  # no record yet: the next reconcile counts
            return cas.Write(self._record(before.count + delta, before.complete, before), None)

        await cas.update(self.store, catalog_org(org), step, attempts=_CAS_ATTEMPTS)

    # -- reconciliation ---------------------------------------------------------------------------------

    async def plan(
        self, org: str, existing: Iterable[str], *, young_secs: float = YOUNG_MARKER_SECS
    ) -> CatalogPlan:
        """What ``reconcile`` would change so that the markers of ``org`` match ``existing``:
        one LIST of the markers and one GET of the org record (the store's clock only when a
        marker has no namespace, to tell its age); changes nothing."""
        exist = set(existing)
        have = [
            namespace_from_marker(meta.key) async for meta in self.store.list(catalog_markers_prefix(org))
        ]
        strays = sorted(set(have) - exist)
        young: list[str] = []
        if strays:
            ages = await self.marker_ages(org)
            young = [n for n in strays if ages.get(n, 0.0) < young_secs]
        return CatalogPlan(
            add=sorted(exist - set(have)),
            remove=[n for n in strays if n not in young],
            young=young,
            markers=len(have),
            record=await self.read_org(org),
        )

    async def marker_ages(self, org: str) -> dict[str, float]:
        """Every marker of ``org``: namespace -> age in seconds (store clock)."""
        now = await self.store.now()
        out: dict[str, float] = {}
        async for meta in self.store.list(catalog_markers_prefix(org)):
            out[namespace_from_marker(meta.key)] = (now - meta.last_modified).total_seconds()
        return out

    async def reconcile(
        self,
        org: str,
        existing: Iterable[str],
        *,
        dry_run: bool = False,
        still_exists: Callable[[str], Awaitable[bool]] | None = None,
        young_secs: float = YOUNG_MARKER_SECS,
    ) -> tuple[list[str], list[str]]:
        """Make the markers of ``org`` match ``existing`` (every namespace of the org that exists,
        as read by the caller from every namespace folder), then recount and mark the org complete.
        Markers of other names are stale (unless younger than ``young_secs``). Returns
        (markers added, markers removed); with ``dry_run`` what would be, changing nothing.

        ``existing`` was read before the markers, so each change is followed by a fresh
        ``still_exists`` read, mirroring the write and delete paths: a namespace deleted in
        between (its marker already removed by the delete path) would get its marker back, so an
        added marker is taken out again when the namespace is gone; a namespace created in
        between (its creation saw the stale marker and counted on it) would lose its marker, so
        a removed marker is put back when the namespace now exists. Whichever acts last sees the
        other's effect. Every change is create-if-absent, a delete, or a compare-and-swap of the
        count: safe while servers and workers run."""
        plan = await self.plan(org, existing, young_secs=young_secs)
        if dry_run:
            return plan.add, plan.remove
        for name in plan.add:
            await self._put_marker(org, name)
            if still_exists is not None and not await still_exists(name):
                await self.store.delete(catalog_marker(org, name))
        for name in plan.remove:
            await self.store.delete(catalog_marker(org, name))
            if still_exists is not None and await still_exists(name):
                await self._put_marker(org, name)
        await self._recount(org)
        if plan.add or plan.remove:
            log_event(
                log, "namespace catalog reconciled", org=org, added=len(plan.add), removed=len(plan.remove)
            )
        return plan.add, plan.remove

    async def _recount(self, org: str) -> None:
        """The org record: the number of markers, complete (one compare-and-swap)."""

        async def step(data: bytes | None) -> cas.Keep[None] | cas.Write[None]:
            before = _decode_or_none(data, catalog_org(org))
            count = 0
            async for _ in self.store.list(catalog_markers_prefix(org)):
                count += 1
            if before is not None and before.complete and before.count == count:
                return cas.Keep(None)
            return cas.Write(self._record(count, True, before), None)

        await cas.update(self.store, catalog_org(org), step, attempts=_CAS_ATTEMPTS)


@dataclass(frozen=True)
class CatalogPlan:
    """What reconciling one org's catalog would change (``Catalog.plan``)."""

    add: list[str]
    """Namespaces that exist without a marker."""
    remove: list[str]
    """Markers of namespaces that do not exist, old enough to be stale."""
    young: list[str]
    """Markers of namespaces that do not exist, younger than the guard: kept (a creation may be
    committing)."""
    markers: int
    """Markers listed."""
    record: OrgCatalog | None
    """The org record as read (None: there is none)."""

    @property
    def count_after(self) -> int:
        return self.markers + len(self.add) - len(self.remove)


async def namespace_exists(
    store: ObjectStore, settings: Settings, components: Components, keys: NamespaceKeys
) -> bool:
    """Does the namespace exist, for reconciling its marker? Read as a strong read would say
    (``NamespaceState.exists``), without loading it. One that cannot be read counts as existing:
    its marker is kept, since a namespace missing from listings would be missed by backups."""
    try:
        return await NamespaceState(keys, store, settings, components).exists()
    except Exception:
        return True


__all__ = ["YOUNG_MARKER_SECS", "Catalog", "CatalogPlan", "namespace_exists"]
