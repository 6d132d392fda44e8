"""What one node knows about one namespace: the latest manifest it has seen and the WAL after it.

Reads go through ``snapshot(strong)``. Strong reads check the bucket for newer WAL entries (and,
when the node's manifest knowledge is older than ``manifest.poll_interval_ms``, for a newer
manifest, in parallel), so every write acknowledged before the read started is visible. Eventual
reads reuse what the node has if it was refreshed within the poll interval.

Why probing ``wal/{head+1}`` is enough: WAL seqs are dense (an entry is only created at head+1 of
an existing head), and a folded entry is only deleted by GC a grace period after the manifest
that folded it was committed. A node whose manifest view is younger than that grace period
therefore cannot miss an entry because it was deleted: it either sees it or sees the manifest
that folded it. ``indexer.gc_grace_secs`` must exceed the poll interval by a wide margin.

A bucket can also go back (restored from an older backup, recreated empty). Every refresh of a
loaded namespace therefore HEADs, beside its probe, the newest object its view rests on (the WAL
entry at the head, else the manifest version) and compares its size: if it is gone or different,
the node drops everything it cached for the namespace and loads it again (``_reload``), so strong
reads never answer from state the bucket no longer holds, and commits (which refresh at least
every poll interval) do not create entries past the bucket's real head.

Folding is incremental: each entry this node commits or fetches is appended to the ``Tail``
(lagoon/engine/tail.py), and a snapshot after it costs what the new entries hold, not the tail.
The tail is folded again from ``entries`` only when its base changes: a newer manifest
(``_rebuild_tail`` keeps the entries after its ``indexed_through``), a damaged entry that reads
again (``_recheck_damage``), or a bucket that went back (``_reload``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from lagoon.config import Settings
from lagoon.engine import manifest_store
from lagoon.engine.components import Components
from lagoon.engine.errors import REPAIR_HINT, translate
from lagoon.engine.tail import SegmentLike, Snapshot, Tail
from lagoon.errors import DataCorruption, NamespaceDamaged, Unavailable
from lagoon.format.keys import NamespaceKeys, parse_wal_seq
from lagoon.format.manifest import Branch, Manifest, SegmentRef
from lagoon.format.schema_patch import schema_after
from lagoon.format.wal import WalEntry, check_against_schema, decode_entry, recover_schema
from lagoon.logs import log_event
from lagoon.schema import Schema
from lagoon.storage.base import ObjectNotFound, ObjectStore, StorageError

_FETCH_PARALLELISM = 16
WAL_SPECULATION = 4  # WAL entries a cold load GETs before its LIST answers
log = logging.getLogger("lagoon.state")
SegmentLoader = Callable[["NamespaceState", SegmentRef, Schema], Awaitable[SegmentLike]]


def _entry_name(seq: int) -> str:
    """How a damage message names WAL entry ``seq``: relative to its namespace, never by object
    key (the messages reach response bodies as ``performance.damage``; the log has the key)."""
    return f"wal/{seq}"


class DamagedSegment:
    """Stands in for a segment of the current manifest whose files are missing or corrupt.

    The namespace stays loaded, so writes that do not need the documents (upserts, deletes by
    id) still commit: they only append to the WAL. Anything that reads the segment's documents
    (queries, lookups, conditional writes, patches, filters) raises ``NamespaceDamaged`` naming the
    damaged object and the repair command. Other namespaces are unaffected."""

    def __init__(self, ref: SegmentRef, problem: str, detail: str = "") -> None:
        self.ref = ref
        self.problem = problem  # for the client: the segment and its file, never an object key
        self.detail = detail  # for the request's log line: the object key and the store's words

    def error(self) -> NamespaceDamaged:
        return NamespaceDamaged(f"{self.problem}; {REPAIR_HINT}", detail=self.detail)

    def ids(self) -> Any:
        raise self.error()

    def tombstones(self) -> Any:
        raise self.error()

    def __getattr__(self, name: str) -> Any:
        raise self.error()


async def _load_segment(state: NamespaceState, ref: SegmentRef, schema: Schema) -> SegmentLike:
    """Fetch a segment's files in parallel and open it (checksums are verified on open)."""
    from lagoon.index.segment.read import SegmentReader

    names = sorted(ref.files)
    owner = state.keys.sibling(ref.owner)
    blobs = await asyncio.gather(*(state.store.get(owner.segment_file(ref.id, n)) for n in names))
    files = dict(zip(names, blobs, strict=True))
    return await asyncio.to_thread(SegmentReader.from_files, ref, files, schema)


@dataclass(frozen=True, slots=True)
class _WalDamage:
    """What is wrong with an unindexed WAL entry; ``nonce``: the entry's, when it decoded (then
    only another entry in its slot, as repair writes, can heal it)."""

    problem: str
    nonce: bytes | None


class _Vanished:
    def __init__(self, damaged: DamagedSegment) -> None:
        self.damaged = damaged


class NamespaceState:
    def __init__(
        self, keys: NamespaceKeys, store: ObjectStore, settings: Settings, components: Components
    ) -> None:
        self.keys = keys
        self.store = store
        self.settings = settings
        self.components = components
        self.manifest: Manifest | None = None
        self.tail = Tail()
        self.entries: list[tuple[WalEntry, int]] = []  # unindexed entries with their encoded size
        # Unindexed WAL entries that do not decode or do not fit the schema, by seq: what is
        # wrong. Each is folded as an empty entry (what `lagoon repair` makes of it) and named in
        # every snapshot's ``damage``; re-read every poll interval until it reads (docs/operations.md).
        self.damaged: dict[int, _WalDamage] = {}
        self._unreadable: dict[int, str] = {}  # fetched but undecodable, not yet appended
        self._manifest_size = (0, 0)  # (version, bytes) of the last manifest version read
        self._loaded = False
        self._last_refresh_started = -1.0
        self._last_manifest_check = -1.0
        self._refresh_lock = asyncio.Lock()
        self._snapshot: Snapshot | None = None
        # Open segments of the current manifest, by segment id, with the schema they were opened for.
        self._segments: dict[str, tuple[Schema, SegmentLike]] = {}
        self.segment_loader: SegmentLoader = _load_segment
        self.pinned = False  # the namespace's pinning setting as the node last saw it
        self.pinned_at: tuple[bool, int] | None = None  # (pinned, manifest version) last applied
        # monotonic time the store stopped answering this namespace's refreshes (None: it answers);
        # eventual reads meanwhile answer from the cached view (manifest.outage_staleness_ms)
        self.unreachable_since: float | None = None

    # -- reading -------------------------------------------------------------------------------

    @property
    def head(self) -> int:
        return self.tail.head

    @property
    def indexed_through(self) -> int:
        return self.manifest.indexed_through if self.manifest else 0

    def current(self) -> Snapshot:
        version = self.manifest.version if self.manifest else 0
        snap = self._snapshot
        if (
            snap is None
            or snap.head != self.tail.head
            or snap.manifest_version != version
            or (snap.schema is not self.tail.schema)
        ):
            segments = tuple(
                self._segments[ref.id][1]
                for ref in (self.manifest.segments if self.manifest else ())
                if ref.id in self._segments
            )
            self._snapshot = self.tail.snapshot(
                manifest_version=version,
                indexed_through=self.indexed_through,
                segments=segments,
                damage=self.wal_damage(),
            )
            return self._snapshot
        return snap

    async def _open_segments(self) -> None:
        """Open every segment of the current manifest (for the current schema) before any
        snapshot can reference it. A segment that vanished (GC after a long pause) makes us
        re-resolve the latest manifest once (docs/design.md §9.3)."""
        for attempt in range(2):
            m = self.manifest
            if m is None:
                self._segments = {}
                return
            schema = self.tail.schema
            wanted = {ref.id: ref for ref in m.segments}
            missing = [
                ref
                for ref in m.segments
                if ref.id not in self._segments
                or self._segments[ref.id][0] != schema
                or isinstance(self._segments[ref.id][1], DamagedSegment)
            ]
            results = await asyncio.gather(*(self._open_one(m, ref, schema) for ref in missing))
            vanished = any(isinstance(o, _Vanished) for o in results)
            if vanished and attempt == 0 and await self._probe_manifest():
                self._rebuild_tail()
                continue
            opened: list[SegmentLike] = [o.damaged if isinstance(o, _Vanished) else o for o in results]
            kept = {k: v for k, v in self._segments.items() if k in wanted}
            for ref, reader in zip(missing, opened, strict=True):
                kept[ref.id] = (schema, reader)
            self._segments = kept
            self._snapshot = None
            return

    async def _open_one(self, m: Manifest, ref: SegmentRef, schema: Schema) -> SegmentLike | _Vanished:
        """Open one segment; a missing or corrupt file gives a ``DamagedSegment`` (a missing one
        wrapped in ``_Vanished``: GC after a long pause, so the caller re-resolves the manifest)."""
        try:
            return await self.segment_loader(self, ref, schema)
        except ObjectNotFound as e:
            folder = f"{self.keys.segment_prefix}{ref.id}/"
            key = str(e) or folder
            file = key.removeprefix(folder) if key.startswith(folder) else ""
            problem = f"a file of segment {ref.id} (manifest v{m.version}) is missing"
            problem += f": {file}" if file and "/" not in file else ""
            return _Vanished(DamagedSegment(ref, problem, detail=key))
        except DataCorruption as e:
            # the store names the object by its key; the client gets the file's name in the segment
            text = str(e).replace(f"{self.keys.segment_prefix}{ref.id}/", "")
            problem = f"segment {ref.id} (manifest v{m.version}) is corrupt: {text}"
            return DamagedSegment(ref, problem, detail=str(e))

    def damage(self) -> list[str]:
        """What is damaged in the current manifest's segments ([] when nothing is)."""
        return [seg.problem for _, seg in self._segments.values() if isinstance(seg, DamagedSegment)]

    def wal_damage(self) -> tuple[str, ...]:
        """The damaged unindexed WAL entries this node skipped, in seq order, each message naming
        the entry and the repair command."""
        return tuple(
            f"{self.damaged[q].problem}; the entry is skipped (its documents are not served); {REPAIR_HINT}"
            for q in sorted(self.damaged)
        )

    async def snapshot(self, *, strong: bool = True) -> Snapshot:
        clock = self.components.clock
        started = clock.monotonic()
        eventual = not strong and self._loaded  # may answer from the cached view
        poll = self.settings.manifest.poll_interval_ms / 1000
        if eventual and started - self._last_refresh_started < poll:
            return self.current()
        try:
            await self.refresh(started)
        except Unavailable:
            bound = self.settings.manifest.outage_staleness_ms / 1000
            if not eventual or clock.monotonic() - self._last_refresh_started > bound:
                raise
            self.unreachable_since = self.unreachable_since or started
            return self.current()
        self.unreachable_since = None
        return self.current()

    def staleness_ms(self) -> int:
        """Age of this node's view: time since its last successful refresh started."""
        return max(0, round((self.components.clock.monotonic() - self._last_refresh_started) * 1000))

    async def refresh(self, not_before: float | None = None) -> None:
        """Bring the state up to date with the bucket, by a probe that started at or after
        ``not_before`` (monotonic); concurrent callers share one probe."""
        clock = self.components.clock
        if not_before is None:
            not_before = clock.monotonic()
        async with self._refresh_lock:
            if self._last_refresh_started >= not_before:
                return
            started = clock.monotonic()
            try:
                await self._probe(started)
            except StorageError as e:
                raise translate(e, f"while reading namespace '{self.keys.namespace}'") from e
            self._last_refresh_started = started

    async def refresh_manifest(self) -> None:
        """``refresh`` that also probes for newer manifest versions, however recent the last
        probe was (a writer that found a branch creation's fence needs the branch's manifest)."""
        self._last_manifest_check = float("-inf")
        await self.refresh()

    async def _probe(self, started: float) -> None:
        if not self._loaded:
            await self._cold_load()
            self._last_manifest_check = started
            self._loaded = True
            return
        witness = self._witness()
        held = asyncio.ensure_future(self._still_held(*witness)) if witness else None
        try:
            await self._probe_loaded(started)
        except BaseException:
            if held is not None:
                held.cancel()
            raise
        if held is not None and not await held:
            await self._reload(witness[0] if witness else "")

    def _witness(self) -> tuple[str, int | None] | None:
        """The newest object this node's view rests on, with its size when known: the WAL entry
        at the head, else the manifest version (None: the node knows of nothing)."""
        if self.head > self.indexed_through and self.entries and self.entries[-1][0].seq == self.head:
            return self.wal_key(self.head), self.entries[-1][1]  # a branch's may be its parent's
        if self.manifest is not None:
            version, size = self._manifest_size
            return self.keys.manifest(
                self.manifest.version
            ), size if version == self.manifest.version else None
        return None

    async def view_held(self) -> bool:
        """Does the bucket still hold the newest object this node's view rests on? One HEAD; a
        committer asks before building on a head it has not seen in the bucket lately."""
        witness = self._witness()
        return witness is None or await self._still_held(*witness)

    async def _still_held(self, key: str, size: int | None) -> bool:
        """Does the bucket still hold ``key`` (of ``size`` bytes)? A store error is not an answer
        here (the probe beside it reports it)."""
        try:
            meta = await self.store.head(key)
        except ObjectNotFound:
            return False
        except StorageError:
            return True
        return size is None or meta.size == size

    async def _reload(self, witness: str) -> None:
        """The bucket went back (restored from an older backup, or recreated): the object this
        node's view rested on is gone or different. Forget everything and load again, so no read
        answers, and no commit builds on, state the bucket no longer holds."""
        log_event(
            log,
            "the bucket no longer holds what this node read: cached state dropped",
            level=logging.WARNING,
            namespace=self.keys.root,
            missing=witness,
            head=self.head,
            manifest_version=self.manifest.version if self.manifest else 0,
        )
        self.manifest, self.tail, self.entries = None, Tail(), []
        self.damaged, self._unreadable = {}, {}
        self._segments, self._snapshot = {}, None
        await self._cold_load()

    async def _probe_loaded(self, started: float) -> None:
        poll = self.settings.manifest.poll_interval_ms / 1000
        if started - self._last_manifest_check >= poll:
            grace = self.settings.indexer.gc_grace_secs
            if 0 < grace / 2 <= started - self._last_manifest_check and await self._jump_to_hint():
                await self._open_segments()  # a view this old may lie behind versions GC deleted
            manifest_task = asyncio.ensure_future(self._probe_manifest())
            wal_task = asyncio.ensure_future(self._fetch_one(self.head + 1))
            advanced, first = await asyncio.gather(manifest_task, wal_task)
            self._last_manifest_check = started
            if advanced:
                self._rebuild_tail()
                await self._open_segments()
                first = None if first is None or first[0].seq <= self.indexed_through else first
                if first is None:
                    first = await self._fetch_one(self.head + 1)
            if await self._recheck_damage():
                first = await self._fetch_one(self.head + 1)
        else:
            first = await self._fetch_one(self.head + 1)
        if first is not None:
            self._append(*first)
            await self._fetch_tail_by_listing()
        if any(schema != self.tail.schema for schema, _ in self._segments.values()):
            await self._open_segments()

    async def _cold_load(self) -> None:
        """First load, in two sequential rounds of requests (a cold query then needs one more,
        for the cluster blocks it probes):

        1. GET ``manifest/CURRENT``, which holds a copy of the manifest it names (an older,
           decimal CURRENT costs one more GET of that manifest);
        2. in parallel: probe the manifest versions after it; LIST the WAL after its
           ``indexed_through``; GET the first ``WAL_SPECULATION`` entries after it without waiting
           for the LIST (a short tail is then already here); open the manifest's segments.

        Entries the LIST shows beyond the speculative window are fetched after it (one more round,
        only for long tails), as are the segments of a newer manifest the probe found. The LIST
        starts after the read did, so every write acknowledged before the read is seen.
        """
        version, m = await manifest_store.read_hint_manifest(self.store, self.keys)
        if m is None and version > 0:
            try:
                m = await self._read_manifest(version)
            except ObjectNotFound:
                m = None  # hint points past GC'd versions: probe from the start
        self.manifest = m
        if m is not None:
            self._rebuild_tail()
        start = self.head
        probe_task = asyncio.ensure_future(self._probe_manifest())
        list_task = asyncio.ensure_future(self._list_wal_after(start))
        guess_task = asyncio.ensure_future(
            asyncio.gather(*(self._fetch_one(start + i) for i in range(1, WAL_SPECULATION + 1)))
        )
        open_task = asyncio.ensure_future(self._open_segments())
        try:
            advanced, seqs, guessed, _ = await asyncio.gather(probe_task, list_task, guess_task, open_task)
        except BaseException:
            for t in (probe_task, list_task, guess_task, open_task):
                t.cancel()
            raise
        if advanced:
            self._rebuild_tail()
        got = {e.seq: (e, size) for e, size in (g for g in guessed if g is not None)}
        rest = [q for q in seqs if q > self.head and q not in got]
        if rest:
            for item in await self._fetch_many(rest):
                if item is not None:
                    got[item[0].seq] = item
        while self.head + 1 in got:
            self._append(*got[self.head + 1])
        if advanced or any(schema != self.tail.schema for schema, _ in self._segments.values()):
            await self._open_segments()

    async def exists(self) -> bool:
        """Does the namespace exist (as a strong read would say)? A node that has loaded the
        namespace answers from its refreshed view; otherwise the bucket is read without opening
        segments or folding documents (listing many namespaces must not fetch their data): the
        manifest CURRENT holds, newer versions, and the truncate and schema fields of the WAL
        entries after it. Nothing is kept: the state stays unloaded."""
        if self._loaded:
            await self.refresh()
            return self.tail.schema.id_type is not None
        try:
            m = await manifest_store.read_latest(self.store, self.keys)
            through = m.indexed_through if m else 0
            schema = Schema.from_storage(m.schema) if m and m.schema else Schema()
            seqs = await self._list_wal_after(through, m)
            for item in await self._fetch_many(seqs, m):
                if item is None:
                    continue
                entry = item[0]
                if entry.truncate:
                    schema = Schema()
                schema = schema_after(entry.schema, entry.schema_patch, schema) or schema
        except StorageError as e:
            raise translate(e, f"while reading namespace '{self.keys.namespace}'") from e
        return schema.id_type is not None

    async def _jump_to_hint(self) -> bool:
        """Move to the version CURRENT names if it is newer than ours (True if it was). Probing
        from our version could stop at a version GC deleted; CURRENT never names one."""
        hint, m = await manifest_store.read_hint_manifest(self.store, self.keys)
        if hint <= (self.manifest.version if self.manifest else 0):
            return False
        if m is None:
            try:
                m = await self._read_manifest(hint)
            except ObjectNotFound:
                return False
        self.manifest = m
        self._rebuild_tail()
        return True

    async def _probe_manifest(self) -> bool:
        """Follow manifest versions after the known one until a 404. True if it advanced."""
        advanced = False
        version = self.manifest.version if self.manifest else 0
        while True:
            try:
                m = await self._read_manifest(version + 1)
            except ObjectNotFound:
                return advanced
            self.manifest, version, advanced = m, m.version, True

    async def _read_manifest(self, version: int) -> Manifest:
        data = await self.store.get(self.keys.manifest(version))
        m = manifest_store.decode_version(data, self.keys, version)
        self._manifest_size = (version, len(data))
        return m

    async def _fetch_many(
        self, seqs: list[int], m: Manifest | None = None
    ) -> list[tuple[WalEntry, int] | None]:
        """``_fetch_one`` of every seq, ``_FETCH_PARALLELISM`` at a time, in order."""
        sem = asyncio.Semaphore(_FETCH_PARALLELISM)

        async def get(seq: int) -> tuple[WalEntry, int] | None:
            async with sem:
                return await self._fetch_one(seq, m)

        return list(await asyncio.gather(*(get(q) for q in seqs)))

    def _branch(self, m: Manifest | None = None) -> Branch | None:
        m = m or self.manifest
        return m.branch if m is not None else None

    def wal_key(self, seq: int, m: Manifest | None = None) -> str:
        """Where WAL entry ``seq`` lives: a branch reads the entries of its fork range from the
        namespace its manifest names (docs/rfcs/0007-branches.md), the rest from its own WAL."""
        branch = self._branch(m)
        owner = branch.wal_owner(seq) if branch is not None else None
        return self.keys.sibling(owner).wal(seq)

    async def _fetch_one(self, seq: int, m: Manifest | None = None) -> tuple[WalEntry, int] | None:
        """The entry at ``seq`` with its size, None if absent. An entry that does not decode
        (read twice: a damaged read is not damage) comes back as an empty stand-in, with the
        problem kept in ``_unreadable`` until ``_append`` records it."""
        key, name = self.wal_key(seq, m), _entry_name(seq)
        problem = ""
        for _ in range(2):
            try:
                data = await self.store.get(key)
            except ObjectNotFound:
                return None
            try:
                entry = decode_entry(data, what=name)
                if entry.seq != seq:
                    raise DataCorruption(f"{name}: holds seq {entry.seq}")
            except DataCorruption as e:
                problem = e.message
                continue
            self._unreadable.pop(seq, None)
            return entry, len(data)
        self._unreadable[seq] = problem
        return self._stand_in(seq), len(data)

    def _stand_in(self, seq: int, created_at_ms: int | None = None) -> WalEntry:
        """An empty entry folded in place of a damaged one (what repair makes of its slot),
        dated like the entry before it (the damaged one is at least that old) or now."""
        at = self.components.clock.now_ms() if created_at_ms is None else created_at_ms
        return WalEntry(seq=seq, nonce=b"", created_at_ms=at, writer="", requests=0)

    async def _recheck_damage(self) -> bool:
        """Read the damaged entries again. If one reads now (repaired, or restored from bucket
        versioning), the tail is folded again from it: True (the head moved back before it)."""
        if not self.damaged:
            return False
        seqs = sorted(self.damaged)
        items = await self._fetch_many(seqs)
        healed = [
            q
            for q, item in zip(seqs, items, strict=True)
            if item is not None and q not in self._unreadable and item[0].nonce != self.damaged[q].nonce
        ]
        if not healed:
            return False
        self.entries = [(e, s) for e, s in self.entries if e.seq < healed[0]]
        self.damaged = {q: d for q, d in self.damaged.items() if q < healed[0]}
        self._rebuild_tail()
        return True

    async def _list_wal_after(self, start: int, m: Manifest | None = None) -> list[int]:
        """The WAL seqs present after ``start``, ascending (one LIST; a branch's fork range, which
        its owners' GC keeps, is listed from the manifest)."""
        branch = self._branch(m)
        seqs = [q for r in (branch.wal if branch else ()) for q in range(max(r.first, start + 1), r.last + 1)]
        async for meta in self.store.list(self.keys.wal_prefix, start_after=self.keys.wal(start)):
            seq = parse_wal_seq(meta.key)
            if seq is not None and seq > start and (branch is None or branch.wal_owner(seq) is None):
                seqs.append(seq)  # (an own entry inside the fork range is the creation's fence)
        return sorted(seqs)

    async def _fetch_tail_by_listing(self) -> None:
        """Fetch every WAL entry after the head (one LIST, then parallel GETs)."""
        start = max(self.head, self.indexed_through)
        seqs = await self._list_wal_after(start)
        if not seqs:
            return
        fetched = await self._fetch_many(seqs)
        for item in fetched:
            if item is None or item[0].seq != self.head + 1:
                break  # a gap: entries must be applied densely; the next probe continues
            self._append(*item)

    def _append(self, entry: WalEntry, size: int, *, checked: bool = False) -> None:
        """Fold the entry at head+1. Unless the caller built it (``checked``), it is checked
        against the schema the entries before it left; a damaged one is folded as empty."""
        if entry.seq != self.head + 1:
            return
        problem = self._unreadable.pop(entry.seq, None)
        nonce = None if problem is not None else entry.nonce
        if problem is None and not checked:
            try:
                check_against_schema(entry, Schema() if entry.truncate else self.tail.schema)
            except DataCorruption as e:
                problem = f"{_entry_name(entry.seq)}: {e.message}"
                entry, problem = self._under_recovered_schema(entry, problem)
        if problem is not None:
            entry = self._stand_in(entry.seq, self.tail.updated_at_ms)
            if entry.seq not in self.damaged:
                log_event(
                    log,
                    "damaged WAL entry skipped",
                    level=logging.ERROR,
                    namespace=self.keys.root,
                    seq=entry.seq,
                    key=self.wal_key(entry.seq),
                    problem=problem,
                    fix=REPAIR_HINT,
                )
            self.damaged[entry.seq] = _WalDamage(problem, nonce)
        self.entries.append((entry, size))
        self.tail.apply(entry, size)

    def _under_recovered_schema(self, entry: WalEntry, problem: str) -> tuple[WalEntry, str | None]:
        """An entry after a damaged one may use attributes the damaged one declared (a schema
        change travels only in the entry that made it). Such an entry is folded under the
        schema its own table declares (``recover_schema``), as if it carried it, instead of
        being lost as well; anything else about it that does not fit stays damage."""
        if not any(q < entry.seq for q in self.damaged):
            return entry, problem
        schema = recover_schema(self.tail.schema, entry)
        if schema is None:
            return entry, problem
        try:
            check_against_schema(entry, schema)
        except DataCorruption:
            return entry, problem
        log_event(
            log,
            "schema recovered from a WAL entry after a damaged one",
            level=logging.WARNING,
            namespace=self.keys.root,
            seq=entry.seq,
            attributes=sorted(set(schema.attributes) - set(self.tail.schema.attributes)),
        )
        after = schema_after(None, entry.schema_patch, schema) or schema  # its own patch on top
        return dataclasses.replace(entry, schema=after.to_storage(), schema_patch=None), None

    def _rebuild_tail(self) -> None:
        """The manifest advanced: keep only the entries after its indexed_through."""
        m = self.manifest
        through = m.indexed_through if m else 0
        self.entries = [(e, s) for e, s in self.entries if e.seq > through]
        self.damaged = {q: d for q, d in self.damaged.items() if q > through}
        tail = Tail()
        if m is not None:
            tail = Tail(Schema.from_storage(m.schema) if m.schema else Schema(), m.settings)
            tail.head = m.indexed_through
            tail.created_at_ms = m.created_at_namespace_ms
            tail.updated_at_ms = m.created_at_ms  # no newer write than the manifest's fold is known
        for e, s in self.entries:
            if e.seq == tail.head + 1:
                tail.apply(e, s)
        self.tail = tail
        self._snapshot = None

    async def load_at(self, m: Manifest, version: int) -> None:
        """Load the state ``m`` (a past version's manifest, ``engine/branch.py``) plus the WAL
        entries after it through ``version``; a missing entry means the version was collected."""
        from lagoon.errors import InvalidRequest

        self.manifest = m
        self._rebuild_tail()
        await self._open_segments()
        for item in await self._fetch_many(list(range(m.indexed_through + 1, version + 1))):
            if item is None:
                raise InvalidRequest(
                    f"at_version {version}: a WAL entry of that version was collected meanwhile"
                )
            self._append(*item)
        self._loaded = True

    # -- writing -------------------------------------------------------------------------------

    def committed(self, entry: WalEntry, size: int) -> None:
        """A WAL entry this node just created at head+1 (checked when it was encoded)."""
        self._append(entry, size, checked=True)

    async def catch_up(self, through: int) -> None:
        """Fold the entries up to ``through`` that another serving process of this node says it
        has just committed (its commit turn's hint, engine/nodelock.py): GETs of the known slots,
        no LIST and no manifest probe. When a slot is not there (folded and collected meanwhile,
        or a wrong hint) this falls back to a full ``refresh``; a hint that is too low only
        leaves the view behind, which the commit's create-if-absent then finds out. A hint more
        than ``_FETCH_PARALLELISM`` entries ahead (this process was idle a while, or the hint is
        from a namespace deleted since) is left to the refresh's LIST: no burst of GETs.
        The object the view rests on is HEADed beside the GETs, as a refresh does: if the bucket
        went back (restored, or recreated and written again by the other process), the view is
        reloaded instead of extended by entries of a different history."""
        async with self._refresh_lock:
            wanted = list(range(self.head + 1, through + 1))
            near = self._loaded and 0 < len(wanted) <= _FETCH_PARALLELISM
            fetched: list[tuple[WalEntry, int] | None] = []
            if near:
                witness = self._witness()
                try:
                    held, fetched = await asyncio.gather(self.view_held(), self._fetch_many(wanted))
                except StorageError as e:
                    raise translate(e, f"while reading namespace '{self.keys.namespace}'") from e
                if not held:
                    await self._reload(witness[0] if witness else "")
                    fetched = []
            for item in fetched:
                if item is None or item[0].seq != self.head + 1:
                    break
                self._append(*item)
        if self.head < through:
            await self.refresh()

    async def ensure_loaded(self) -> None:
        if not self._loaded:
            await self.refresh()

    def manifest_age(self) -> float:
        return self.components.clock.monotonic() - self._last_manifest_check

    def metadata(self) -> dict[str, Any]:
        snap = self.current()
        return {
            "head": snap.head,
            "indexed_through": snap.indexed_through,
            "manifest_version": snap.manifest_version,
        }
