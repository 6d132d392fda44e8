"""The indexer: folds a namespace's WAL tail into one new level-0 segment and commits a manifest.

Protocol (``index_namespace``), and why each step is safe:

1. Load the latest manifest ``M`` (version ``v``) and the WAL entries ``M.indexed_through+1 ..
   head`` (``NamespaceState``). Nothing happens unless the tail is due: its oldest entry is older
   than ``indexer.flush_interval_secs``, it is larger than ``indexer.flush_bytes``, or forced.
2. Fold the entries into one table, newest row per id. Deletes stay as tombstones (``$op`` = 1)
   because they must hide rows of older segments — unless no older segment exists. A truncating
   entry at seq ``t`` (namespace deleted) voids everything before it: rows from entries before
   ``t`` are dropped, and every segment of ``M`` leaves the live set.
3. Build the segment (in a thread) under a fresh id and upload its files. Ids are never reused,
   so an upload cannot disturb anything readers use; if we never commit, the files are orphans
   that GC removes after the grace period.
4. Commit ``v+1`` with create-if-absent (``manifest_store.commit``): segments + the new one,
   ``indexed_through = head``, schema and settings as of ``head``. ``v+1`` being free proves no
   other manifest was committed since ``M``, so ``M``'s segment list plus our segment is exactly
   the state through ``head``. If another worker took ``v+1`` we abort: our files become orphans
   and the work is redone on the new manifest later. The folded WAL entries and the dropped
   segments are *not* deleted: they go to ``pending_delete`` (removed at the store's clock), and
   GC deletes them only a grace period later, because nodes that have not seen ``v+1`` yet still
   read them.
5. Upload freshness. GC deletes unreferenced segment files whose store timestamp is older than
   the grace period. The commit is therefore refused (aborted) if more than half the grace
   period elapsed (monotonic clock, which keeps running while the process is paused) since the
   upload started; and checked again once the commit returned: if a pause made the commit land
   later than that, a GC could have deleted the files in between, so the segment is rebuilt under
   a new id, uploaded, and swapped in by another CAS commit (``rehome``). See engine/gc.py for the
   matching half of the argument.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lagoon import metrics
from lagoon.config import Settings
from lagoon.engine import manifest_store
from lagoon.engine.components import Components
from lagoon.engine.manifest_store import ManifestConflict
from lagoon.engine.segment_io import SegmentIO
from lagoon.engine.state import NamespaceState
from lagoon.errors import DataCorruption
from lagoon.format.keys import NamespaceKeys
from lagoon.format.manifest import Manifest, PendingDelete, SegmentRef
from lagoon.format.wal import OP_DELETE, WalEntry
from lagoon.index.segment.build import OP_COLUMN, SEQ_COLUMN, BuiltSegment, build_segment, new_segment_id
from lagoon.logs import log_event
from lagoon.schema import Schema, id_arrow_type
from lagoon.storage.base import ObjectStore

log = logging.getLogger("lagoon.indexer")

REHOME_ATTEMPTS = 8

# Failpoints of the background work (``components.failpoints.hit``); tests crash or pause here.
FAILPOINTS = (
    "indexer.after_upload",  # segment uploaded, manifest not committed
    "indexer.after_commit",  # manifest committed, CURRENT maybe not advanced
    "compactor.after_upload",
    "compactor.before_commit",  # freshness checked, manifest PUT not sent
    "gc.before_delete",  # decisions validated, delete batch not sent
)


@dataclass(frozen=True)
class IndexOutcome:
    """What one ``index_namespace`` call did. ``status``: idle | waiting | committed | aborted."""

    status: str
    version: int  # manifest version after the call (ours when committed)
    indexed_through: int
    head: int
    tail_bytes: int
    lag_seconds: float
    segments: int
    segment_id: str | None = None
    rows: int = 0
    reason: str = ""


# -- folding (pure) ----------------------------------------------------------------------------


def target_schema(schema: Schema) -> pa.Schema:
    """Column layout of segment tables: id, $seq, $op, then the schema's attributes."""
    fields = [
        pa.field("id", id_arrow_type(schema.id_type or "uint")),
        pa.field(SEQ_COLUMN, pa.uint64()),
        pa.field(OP_COLUMN, pa.uint8()),
    ]
    fields += [pa.field(name, attr.type.arrow_type()) for name, attr in schema.attributes.items()]
    return pa.schema(fields)


def align(table: pa.Table, target: pa.Schema, *, seq: int | None = None) -> pa.Table:
    """``table`` with exactly ``target``'s columns (missing ones null, extra ones dropped).

    ``seq`` fills ``$seq`` for WAL document tables, which have no per-row seq column.
    """
    n = table.num_rows
    cols = []
    for f in target:
        if f.name == SEQ_COLUMN and seq is not None:
            cols.append(pa.array(np.full(n, seq, dtype=np.uint64)))
        elif f.name in table.column_names:
            col = table.column(f.name)
            cols.append(col if col.type == f.type else col.cast(f.type))
        else:
            cols.append(pa.nulls(n, f.type))
    return pa.Table.from_arrays(cols, schema=target)


def newest_per_id(table: pa.Table) -> pa.Table:
    """One row per id: the one with the highest ``$seq`` (vectorised; ties keep the later row)."""
    if table.num_rows == 0:
        return table
    order = np.argsort(table.column(SEQ_COLUMN).to_numpy(), kind="stable")
    table = table.take(pa.array(order))
    codes = np.asarray(pc.dictionary_encode(table.column("id").combine_chunks()).indices)
    _, first_from_end = np.unique(codes[::-1], return_index=True)
    keep = np.sort(len(codes) - 1 - first_from_end)
    return table.take(pa.array(keep))


def drop_tombstones_below(table: pa.Table, bound: int | None) -> pa.Table:
    """Drop delete rows whose ``$seq`` is below ``bound`` (None: drop every delete row).

    A tombstone only matters for older rows of its id elsewhere; if every other segment starts
    at or after ``bound``, a tombstone below ``bound`` shadows nothing.
    """
    if table.num_rows == 0:
        return table
    ops = table.column(OP_COLUMN).to_numpy()
    dead = ops == OP_DELETE
    if bound is not None:
        dead &= table.column(SEQ_COLUMN).to_numpy() < bound
    if not dead.any():
        return table
    return table.filter(pa.array(~dead))


@dataclass(frozen=True)
class Fold:
    table: pa.Table  # newest row per id of the live part of the tail
    truncated_at: int | None  # seq of the last truncating entry, if any


def fold_entries(entries: Sequence[WalEntry], schema: Schema, *, older_data: bool) -> Fold:
    """Fold WAL entries (ascending, dense) into one table; see the module docstring, step 2."""
    truncated_at = max((e.seq for e in entries if e.truncate), default=None)
    target = target_schema(schema)
    parts = [
        align(e.docs, target, seq=e.seq)
        for e in entries
        if e.docs is not None and e.docs.num_rows and (truncated_at is None or e.seq >= truncated_at)
    ]
    table = pa.concat_tables(parts) if parts else target.empty_table()
    table = newest_per_id(table)
    if truncated_at is not None or not older_data:
        table = drop_tombstones_below(table, None)
    return Fold(table.combine_chunks(), truncated_at)


def segment_record(segment_id: str, version: int, removed_at_ms: int) -> PendingDelete:
    """A ``pending_delete`` record for a segment (its prefix is relative to the namespace root)."""
    return PendingDelete(
        segment=segment_id, prefix=f"seg/{segment_id}/", removed_at_version=version, removed_at=removed_at_ms
    )


def wal_record(through: int, version: int, removed_at_ms: int) -> PendingDelete:
    """A ``pending_delete`` record for the WAL entries up to ``through`` (folded by ``version``)."""
    return PendingDelete(wal_through=through, removed_at_version=version, removed_at=removed_at_ms)


async def store_time_ms(store: ObjectStore) -> int:
    return int((await store.now()).timestamp() * 1000)


def upload_fresh(components: Components, settings: Settings, started: float) -> bool:
    """Was the upload that began at ``started`` (monotonic) less than half a grace period ago?"""
    grace = settings.indexer.gc_grace_secs
    if grace <= 0:  # GC without grace offers no protection to check against (single-process tests)
        return True
    return components.clock.monotonic() - started < grace / 2


# -- publishing with the freshness rule ------------------------------------------------------------


async def rehome(
    store: ObjectStore,
    keys: NamespaceKeys,
    settings: Settings,
    components: Components,
    seg_io: SegmentIO,
    old: SegmentRef,
    rebuild: Callable[[str], BuiltSegment],
) -> bool:
    """Replace segment ``old`` (committed too late to be sure its files survived GC) by a copy
    under a new id. Returns True once the copy is committed or ``old`` is no longer live."""
    for _ in range(REHOME_ATTEMPTS):
        new_id = new_segment_id(components.clock.now_ms(), components.rng)
        built = await asyncio.to_thread(rebuild, new_id)
        started = components.clock.monotonic()
        await seg_io.upload(keys, built)
        latest = await manifest_store.read_latest(store, keys)
        if latest is None or all(s.id != old.id for s in latest.segments):
            return True  # compacted away or truncated meanwhile: nothing references it
        removed_at = await store_time_ms(store)
        version = latest.version + 1
        new = manifest_store.next_version(
            latest,
            components,
            segments=tuple(built.ref if s.id == old.id else s for s in latest.segments),
            pending_delete=(*latest.pending_delete, segment_record(old.id, version, removed_at)),
        )
        if not upload_fresh(components, settings, started):
            continue
        try:
            await manifest_store.commit(store, keys, new)
        except ManifestConflict:
            continue
        if upload_fresh(components, settings, started):
            log_event(log, "segment re-homed", namespace=keys.root, old=old.id, new=new_id, version=version)
            return True
        old = built.ref
    log_event(
        log, "could not re-home a late segment", level=logging.ERROR, namespace=keys.root, segment=old.id
    )
    return False


# -- the indexer -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Unopened:
    """Stands in for a segment in a worker's NamespaceState: indexing needs the manifest and the
    WAL tail, never the segments' contents, so they are not downloaded."""

    ref: SegmentRef

    def ids(self) -> pa.Array:
        raise NotImplementedError("segments are not opened by the indexer")

    def tombstones(self) -> np.ndarray:
        raise NotImplementedError("segments are not opened by the indexer")


async def _skip_segment(state: NamespaceState, ref: SegmentRef, schema: Schema) -> Any:
    return _Unopened(ref)


def indexing_state(
    keys: NamespaceKeys, store: ObjectStore, settings: Settings, components: Components
) -> NamespaceState:
    """A NamespaceState for background work: manifest + WAL tail, segments not downloaded."""
    state = NamespaceState(keys, store, settings, components)
    state.segment_loader = _skip_segment
    return state


async def index_namespace(
    store: ObjectStore,
    keys: NamespaceKeys,
    settings: Settings,
    components: Components,
    *,
    state: NamespaceState | None = None,
    segment_io: SegmentIO | None = None,
    force: bool = False,
) -> IndexOutcome:
    """Index ``keys``'s WAL tail if it is due (or ``force``). See the module docstring."""
    state = state or indexing_state(keys, store, settings, components)
    seg_io = segment_io or SegmentIO(store, settings.cache)
    try:
        out = await _index(store, keys, settings, components, state, seg_io, force)
    except Exception:
        metrics.INDEX_BUILDS_TOTAL.labels(outcome="failed").inc()
        raise
    label = f"{keys.org}/{keys.namespace}"
    committed = out.status == "committed"
    metrics.WAL_TAIL_BYTES.labels(namespace=label).set(0 if committed else out.tail_bytes)
    metrics.INDEXING_LAG.labels(namespace=label).set(0.0 if committed else out.lag_seconds)
    metrics.SEGMENT_COUNT.labels(namespace=label).set(out.segments)
    return out


@dataclass(frozen=True)
class IndexView:
    """One consistent read of a namespace's state (taken without an await in between)."""

    base: Manifest | None
    entries: tuple[WalEntry, ...]  # the unindexed WAL entries, in seq order
    head: int
    tail_bytes: int
    schema: Schema
    settings: dict[str, Any]
    created_at_namespace_ms: int | None

    @property
    def indexed_through(self) -> int:
        return self.base.indexed_through if self.base else 0


def plan_index(view: IndexView, now_ms: int, settings: Settings, *, force: bool) -> tuple[str, float]:
    """``("idle" | "waiting" | "build", lag seconds)``: build when the tail is complete (every entry
    after ``indexed_through`` up to the head) and old or large enough (or ``force``). Pure."""
    entries = view.entries
    lag = (now_ms - entries[0].created_at_ms) / 1000 if entries else 0.0
    if not entries or entries[-1].seq != view.head or entries[0].seq != view.indexed_through + 1:
        return "idle", lag
    cfg = settings.indexer
    due = force or view.tail_bytes >= cfg.flush_bytes or lag >= cfg.flush_interval_secs
    return ("build" if due else "waiting"), lag


def indexed_manifest(
    view: IndexView, fold: Fold, built: SegmentRef | None, removed_at_ms: int, components: Components
) -> Manifest:
    """The next manifest version after folding the tail into ``built``: the tail's WAL entries go to
    ``pending_delete``, and so do all older segments when the tail truncated the namespace."""
    base = view.base
    old_segments = base.segments if base else ()
    version = (base.version if base else 0) + 1
    kept = old_segments if fold.truncated_at is None else ()
    pending = list(base.pending_delete if base else ())
    if fold.truncated_at is not None:
        pending += [segment_record(s.id, version, removed_at_ms) for s in old_segments]
    pending.append(wal_record(view.head, version, removed_at_ms))
    return manifest_store.next_version(
        base,
        components,
        indexed_through=view.head,
        schema=view.schema.to_storage() if view.schema.id_type is not None else None,
        settings=view.settings,
        segments=(*kept, built) if built else kept,
        pending_delete=tuple(pending),
        created_at_namespace_ms=view.created_at_namespace_ms,
    )


def read_view(state: NamespaceState) -> IndexView:
    """The namespace's indexing view, read from ``state`` with no await in between. It ends
    before the first damaged WAL entry: folding it would make its loss permanent before
    `lagoon repair` looked at it (``index_namespace`` fails on it instead)."""
    head = min(state.damaged, default=state.head + 1) - 1
    kept = [(e, s) for e, s in state.entries if state.indexed_through < e.seq <= head]
    return IndexView(
        base=state.manifest,
        entries=tuple(e for e, _ in kept),
        head=head,
        tail_bytes=sum(s for _, s in kept),
        schema=state.tail.schema,
        settings=dict(state.tail.settings),
        created_at_namespace_ms=state.tail.created_at_ms,
    )


def _outcome(view: IndexView, lag: float, status: str, **kw: Any) -> IndexOutcome:
    """An outcome of indexing ``view``; version, indexed_through and segments default to the base's."""
    base = view.base
    return IndexOutcome(
        status=status,
        version=kw.pop("version", base.version if base else 0),
        indexed_through=kw.pop("indexed_through", view.indexed_through),
        head=view.head,
        tail_bytes=view.tail_bytes,
        lag_seconds=lag,
        segments=kw.pop("segments", len(base.segments) if base else 0),
        **kw,
    )


def _segment_builder(view: IndexView, fold: Fold) -> Callable[[str], BuiltSegment]:
    """Builds the level-0 segment of the folded tail under a given id (again, to rehome it)."""

    def build(segment_id: str) -> BuiltSegment:
        return build_segment(
            fold.table,
            view.schema,
            segment_id=segment_id,
            level=0,
            seq_from=view.indexed_through + 1,
            seq_to=view.head,
        )

    return build


async def _commit(store: ObjectStore, keys: NamespaceKeys, new: Manifest) -> str | None:
    """Commit ``new``: None, or why not (another writer took its version first)."""
    try:
        await manifest_store.commit(store, keys, new)
    except ManifestConflict as e:
        metrics.INDEX_BUILDS_TOTAL.labels(outcome="aborted").inc()
        log_event(log, "index build lost the manifest race", namespace=keys.root, version=new.version)
        return str(e)
    return None


async def _index(
    store: ObjectStore,
    keys: NamespaceKeys,
    settings: Settings,
    components: Components,
    state: NamespaceState,
    seg_io: SegmentIO,
    force: bool,
) -> IndexOutcome:
    fp = components.failpoints
    await state.refresh()
    if state.indexed_through + 1 in state.damaged:
        raise DataCorruption(f"indexing waits: {state.wal_damage()[0]}")
    view = read_view(state)
    base, head = view.base, view.head
    decision, lag = plan_index(view, components.clock.now_ms(), settings, force=force)
    if decision != "build":
        return _outcome(view, lag, decision)

    fold = await asyncio.to_thread(
        fold_entries, view.entries, view.schema, older_data=bool(base and base.segments)
    )
    build = _segment_builder(view, fold)
    built: BuiltSegment | None = None
    started = components.clock.monotonic()
    if fold.table.num_rows:
        built = await asyncio.to_thread(build, new_segment_id(components.clock.now_ms(), components.rng))
        started = components.clock.monotonic()  # GC ages our files from here (their timestamps)
        await seg_io.upload(keys, built)
    fp.hit("indexer.after_upload")

    new = indexed_manifest(view, fold, built.ref if built else None, await store_time_ms(store), components)
    seg_id_or_none = built.ref.id if built else None
    rows = fold.table.num_rows
    if built is not None and not upload_fresh(components, settings, started):
        metrics.INDEX_BUILDS_TOTAL.labels(outcome="aborted").inc()
        return _outcome(
            view,
            lag,
            "aborted",
            reason="upload older than half the GC grace period",
            segment_id=seg_id_or_none,
        )
    if (lost := await _commit(store, keys, new)) is not None:
        return _outcome(view, lag, "aborted", reason=lost, segment_id=seg_id_or_none)
    fp.hit("indexer.after_commit")
    if built is not None and not upload_fresh(components, settings, started):
        await rehome(store, keys, settings, components, seg_io, built.ref, build)
    metrics.INDEX_BUILDS_TOTAL.labels(outcome="committed").inc()
    log_event(
        log,
        "index build committed",
        namespace=keys.root,
        version=new.version,
        indexed_through=head,
        segment=seg_id_or_none,
        rows=rows,
        truncated=fold.truncated_at is not None,
    )
    return _outcome(
        view,
        lag,
        "committed",
        version=new.version,
        indexed_through=head,
        segments=len(new.segments),
        segment_id=seg_id_or_none,
        rows=rows,
    )


__all__ = [
    "FAILPOINTS",
    "Fold",
    "IndexOutcome",
    "IndexView",
    "align",
    "drop_tombstones_below",
    "fold_entries",
    "index_namespace",
    "indexed_manifest",
    "indexing_state",
    "newest_per_id",
    "plan_index",
    "read_view",
    "rehome",
    "segment_record",
    "store_time_ms",
    "target_schema",
    "upload_fresh",
    "wal_record",
]
