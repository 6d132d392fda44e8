"""The compactor: merges the segments of a full level into one segment of the next level.

Policy: size-tiered. When a level holds ``indexer.compaction_fanin`` segments or more, its
``fanin`` oldest segments (lowest seq ranges) are merged into one segment at ``level + 1``.

Merge (pure, ``merge_tables``): every row keeps its WAL ``$seq``; per id only the row with the
highest ``$seq`` survives (older versions are shadowed). A tombstone (delete row) survives only
while it can still hide something: a row of its id in a segment outside the merge with a lower
seq. Segments outside the merge whose seq ranges all start above the tombstone's seq cannot hold
older rows, so tombstones below ``min(seq_from of the other segments)`` are dropped; with no
other segment, all are. (The WAL tail is newer than every segment, so it never needs them.)

Commit, and why it is safe:

1. The merge is computed from the segments of base version ``v`` and committed as ``v+1`` with
   create-if-absent, so on success nothing changed between reading and committing.
2. If ``v+1`` is taken, the compactor reloads the latest manifest. It re-applies the *same*
   result on top of it only if every input is still listed, unchanged, and the tombstone bound
   (the lowest seq_from among the other segments) did not go down: then replacing the inputs by
   the output describes the new version's data exactly as it did the old one's. Otherwise (an
   input was compacted by someone else, the namespace was truncated, ...) it aborts: a
   compaction is never rebased onto different inputs. Its uploaded files become orphans for GC.
3. Inputs leave the live set through ``pending_delete`` (removed at the store's clock); GC
   deletes them after the grace period, so readers of older versions keep working meanwhile.
4. Upload freshness, as for the indexer: no commit more than half a grace period after the
   upload started; if a pause made it land later, the output is rebuilt under a new id.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from lagoon import metrics
from lagoon.config import Settings
from lagoon.engine import manifest_store
from lagoon.engine.components import Components
from lagoon.engine.indexer import (
    align,
    drop_tombstones_below,
    newest_per_id,
    rehome,
    segment_record,
    store_time_ms,
    target_schema,
    upload_fresh,
)
from lagoon.engine.manifest_store import ManifestConflict
from lagoon.engine.segment_io import SegmentIO
from lagoon.format.keys import NamespaceKeys
from lagoon.format.manifest import Manifest, SegmentRef
from lagoon.index.segment.build import BuiltSegment, build_segment, new_segment_id, sort_by_id
from lagoon.index.segment.read import SegmentReader
from lagoon.index.text.bm25 import Postings, merge_postings
from lagoon.logs import log_event
from lagoon.schema import Schema, unstored
from lagoon.storage.base import ObjectStore

log = logging.getLogger("lagoon.compactor")

REBASE_ATTEMPTS = 8


@dataclass(frozen=True)
class CompactionOutcome:
    """``status``: idle (nothing to merge) | committed | aborted."""

    status: str
    version: int
    level: int = -1
    inputs: tuple[str, ...] = ()
    output: str | None = None
    rows: int = 0
    reason: str = ""


def pick_inputs(segments: Sequence[SegmentRef], fanin: int) -> list[SegmentRef]:
    """The ``fanin`` oldest segments of the lowest level holding at least ``fanin`` (or [])."""
    by_level: dict[int, list[SegmentRef]] = {}
    for s in segments:
        by_level.setdefault(s.level, []).append(s)
    for level in sorted(by_level):
        group = by_level[level]
        if len(group) >= fanin:
            return sorted(group, key=lambda s: (s.seq_from, s.seq_to, s.id))[:fanin]
    return []


def tombstone_bound(segments: Sequence[SegmentRef], inputs: Sequence[SegmentRef]) -> int | None:
    """Lowest seq_from of the segments outside the merge (None: there are none)."""
    ids = {s.id for s in inputs}
    others = [s.seq_from for s in segments if s.id not in ids]
    return min(others) if others else None


def merge_tables(
    tables: Sequence[pa.Table], schema: Schema, bound: int | None, *, provenance: bool = False
) -> pa.Table:
    """Newest row per id across ``tables``; tombstones below ``bound`` dropped (None: all).
    ``provenance``: sorted by id, with the ``PROVENANCE`` columns (input table, row in it)."""
    target = target_schema(schema)
    parts = [align(t, target) for t in tables]
    if provenance:
        parts = [_with_provenance(t, i) for i, t in enumerate(parts)]
    merged = pa.concat_tables(parts) if parts else target.empty_table()
    out = drop_tombstones_below(newest_per_id(merged), bound).combine_chunks()
    if provenance:
        out = sort_by_id(out) if parts else _with_provenance(out, 0)
    return out


PROVENANCE = ("$part", "$row")


def _with_provenance(table: pa.Table, part: int) -> pa.Table:
    n = table.num_rows
    table = table.append_column(PROVENANCE[0], pa.array(np.full(n, part, dtype=np.int64)))
    return table.append_column(PROVENANCE[1], pa.array(np.arange(n, dtype=np.int64)))


def _merge_inputs(
    readers: Sequence[SegmentReader], schema: Schema, bound: int | None
) -> tuple[pa.Table, dict[str, Postings]]:
    """The merged rows of the inputs, and the merged postings of attributes with ``store: false``."""
    names = unstored(schema)
    merged = merge_tables([r.table() for r in readers], schema, bound, provenance=bool(names))
    if not names:
        return merged, {}
    return merged.drop_columns(list(PROVENANCE)), merged_postings(readers, merged, names)


def merged_postings(
    readers: Sequence[SegmentReader], merged: pa.Table, names: Sequence[str]
) -> dict[str, Postings]:
    """The postings of attributes with ``store: false`` (RFC 0008) over the rows of ``merged``
    (``merge_tables(..., provenance=True)``): their values are gone, so the inputs' postings are
    merged instead of re-tokenising."""
    part = np.asarray(merged.column(PROVENANCE[0]).to_numpy(), dtype=np.int64)
    row = np.asarray(merged.column(PROVENANCE[1]).to_numpy(), dtype=np.int64)
    maps = []
    for i, r in enumerate(readers):
        m = np.full(r.num_rows, -1, dtype=np.int64)
        sel = np.flatnonzero(part == i)
        m[row[sel]] = sel
        maps.append(m)
    out = {}
    for name in names:
        parts = [r.plain_postings(name) for r in readers]
        out[name] = merge_postings(parts, maps, merged.num_rows)
    return out


def _replace(
    segments: Sequence[SegmentRef], inputs: Sequence[SegmentRef], out: SegmentRef | None
) -> tuple[SegmentRef, ...]:
    ids = {s.id for s in inputs}
    kept = [s for s in segments if s.id not in ids]
    if out is not None:
        kept.append(out)
    return tuple(sorted(kept, key=lambda s: (s.seq_from, s.seq_to)))


def _inputs_unchanged(latest: Manifest, inputs: Sequence[SegmentRef], bound: int | None) -> bool:
    live = {s.id: s for s in latest.segments}
    if any(live.get(s.id) != s for s in inputs):
        return False
    new_bound = tombstone_bound(latest.segments, inputs)
    if bound is None:
        return new_bound is None or new_bound > max(s.seq_to for s in inputs)
    return new_bound is None or new_bound >= bound


async def compact_namespace(
    store: ObjectStore,
    keys: NamespaceKeys,
    settings: Settings,
    components: Components,
    *,
    segment_io: SegmentIO | None = None,
    base: Manifest | None = None,
    full: bool = False,
) -> CompactionOutcome:
    """Run at most one compaction on ``keys`` (see the module docstring). ``full`` merges every
    segment into one (a major compaction) regardless of levels."""
    seg_io = segment_io or SegmentIO(store, settings.cache)
    base = base or await manifest_store.read_latest(store, keys)
    if base is None:
        return CompactionOutcome("idle", 0)
    if full:
        inputs = (
            sorted(base.segments, key=lambda s: (s.seq_from, s.seq_to, s.id))
            if len(base.segments) > 1
            else []
        )
    else:
        inputs = pick_inputs(base.segments, settings.indexer.compaction_fanin)
    if not inputs:
        return CompactionOutcome("idle", base.version)
    level = max(s.level for s in inputs) if full else inputs[0].level
    input_ids = tuple(s.id for s in inputs)
    metrics.COMPACTION_RUNNING.inc()
    try:
        return await _compact(store, keys, settings, components, seg_io, base, inputs, level, input_ids)
    except Exception:
        metrics.COMPACTION_TOTAL.labels(outcome="failed").inc()
        raise
    finally:
        metrics.COMPACTION_RUNNING.dec()


async def _compact(
    store: ObjectStore,
    keys: NamespaceKeys,
    settings: Settings,
    components: Components,
    seg_io: SegmentIO,
    base: Manifest,
    inputs: list[SegmentRef],
    level: int,
    input_ids: tuple[str, ...],
) -> CompactionOutcome:
    failpoints = components.failpoints
    schema = Schema.from_storage(base.schema) if base.schema else Schema()
    bound = tombstone_bound(base.segments, inputs)
    readers = await asyncio.gather(*(seg_io.open(keys, s, schema) for s in inputs))
    merged, postings = await asyncio.to_thread(_merge_inputs, readers, schema, bound)
    seq_from = min(s.seq_from for s in inputs)
    seq_to = max(s.seq_to for s in inputs)

    def build(segment_id: str) -> BuiltSegment:
        return build_segment(
            merged,
            schema,
            segment_id=segment_id,
            level=level + 1,
            seq_from=seq_from,
            seq_to=seq_to,
            postings=postings,
        )

    built: BuiltSegment | None = None
    started = components.clock.monotonic()
    if merged.num_rows:
        built = await asyncio.to_thread(build, new_segment_id(components.clock.now_ms(), components.rng))
        started = components.clock.monotonic()  # GC ages our files from here (their timestamps)
        await seg_io.upload(keys, built)
    failpoints.hit("compactor.after_upload")
    out_ref = built.ref if built else None
    current = base
    for _ in range(REBASE_ATTEMPTS):
        removed_at = await store_time_ms(store)
        version = current.version + 1
        new = manifest_store.next_version(
            current,
            components,
            segments=_replace(current.segments, inputs, out_ref),
            pending_delete=(
                *current.pending_delete,
                *(segment_record(s.id, version, removed_at) for s in inputs),
            ),
        )
        if built is not None and not upload_fresh(components, settings, started):
            return _aborted(
                keys, current.version, level, input_ids, "upload older than half the GC grace period"
            )
        failpoints.hit(
            "compactor.before_commit"
        )  # after the freshness check: a pause here is docs/design.md §9.1
        try:
            await manifest_store.commit(store, keys, new)
        except ManifestConflict:
            latest = await manifest_store.read_latest(store, keys, current)
            if latest is None or not _inputs_unchanged(latest, inputs, bound):
                return _aborted(keys, latest.version if latest else 0, level, input_ids, "inputs changed")
            current = latest
            continue
        if built is not None and not upload_fresh(components, settings, started):
            await rehome(store, keys, settings, components, seg_io, built.ref, build)
        return _committed(keys, version, level, input_ids, out_ref, merged.num_rows)
    return _aborted(keys, current.version, level, input_ids, "manifest kept moving")


def _committed(
    keys: NamespaceKeys,
    version: int,
    level: int,
    inputs: tuple[str, ...],
    output: SegmentRef | None,
    rows: int,
) -> CompactionOutcome:
    metrics.COMPACTION_TOTAL.labels(outcome="committed").inc()
    output_id = output.id if output else None
    log_event(
        log,
        "compaction committed",
        namespace=keys.root,
        version=version,
        from_level=level,
        inputs=list(inputs),
        output=output_id,
        rows=rows,
    )
    return CompactionOutcome("committed", version, level, inputs, output_id, rows)


def _aborted(
    keys: NamespaceKeys, version: int, level: int, inputs: tuple[str, ...], reason: str
) -> CompactionOutcome:
    metrics.COMPACTION_TOTAL.labels(outcome="aborted").inc()
    log_event(log, "compaction aborted", namespace=keys.root, from_level=level, reason=reason)
    return CompactionOutcome("aborted", version, level, inputs, reason=reason)


__all__ = ["CompactionOutcome", "compact_namespace", "merge_tables", "pick_inputs", "tombstone_bound"]
