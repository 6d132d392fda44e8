"""The indexer's decisions as pure functions: when a tail is indexed, and the manifest it commits."""

from __future__ import annotations

import random

import pyarrow as pa

from lagoon.config import Settings
from lagoon.engine.components import Clock, Components
from lagoon.engine.indexer import Fold, IndexView, indexed_manifest, plan_index
from lagoon.format.manifest import Manifest, SegmentRef
from lagoon.format.wal import WalEntry
from lagoon.schema import Schema


class FixedClock(Clock):
    def now_ms(self) -> int:
        return 50_000


def entry(seq: int, at_ms: int) -> WalEntry:
    return WalEntry(seq=seq, nonce=b"\0" * 16, created_at_ms=at_ms, writer="w", requests=1)


def ref(sid: str) -> SegmentRef:
    return SegmentRef(id=sid, level=0, seq_from=1, seq_to=2, rows=1, bytes=1)


def view(
    entries: tuple[WalEntry, ...], head: int, base: Manifest | None = None, tail_bytes: int = 10
) -> IndexView:
    return IndexView(base, entries, head, tail_bytes, Schema(None, {}, None), {}, None)


SETTINGS = Settings()


def test_an_incomplete_or_empty_tail_is_idle() -> None:
    assert plan_index(view((), 0), 0, SETTINGS, force=True)[0] == "idle"
    assert plan_index(view((entry(2, 0),), 2), 0, SETTINGS, force=True)[0] == "idle"  # entry 1 missing
    assert plan_index(view((entry(1, 0),), 2), 0, SETTINGS, force=True)[0] == "idle"  # head not read


def test_a_tail_is_built_when_old_or_large_or_forced() -> None:
    interval_ms = int(SETTINGS.indexer.flush_interval_secs * 1000)
    young = view((entry(1, 1_000),), 1)
    assert plan_index(young, 1_000, SETTINGS, force=False) == ("waiting", 0.0)
    assert plan_index(young, 1_000, SETTINGS, force=True)[0] == "build"
    assert plan_index(young, 1_000 + interval_ms, SETTINGS, force=False)[0] == "build"
    big = view((entry(1, 1_000),), 1, tail_bytes=SETTINGS.indexer.flush_bytes)
    assert plan_index(big, 1_000, SETTINGS, force=False)[0] == "build"


def test_the_next_manifest_folds_the_tail_and_schedules_deletions() -> None:
    comps = Components(clock=FixedClock(), rng=random.Random(1))
    base = Manifest(
        version=4, nonce="b", created_at_ms=0, writer="w", indexed_through=2, segments=(ref("old"),)
    )
    v = view((entry(3, 0), entry(4, 0)), 4, base)
    kept = indexed_manifest(v, Fold(pa.table({}), None), ref("new"), 7_000, comps)
    assert kept.version == 5 and kept.indexed_through == 4
    assert [s.id for s in kept.segments] == ["old", "new"]
    assert [r.to_json() for r in kept.pending_delete] == [
        {"wal_through": 4, "removed_at_version": 5, "removed_at": 7_000}
    ]
    assert kept.parent_nonce == "b"
    truncated = indexed_manifest(v, Fold(pa.table({}), 3), None, 7_000, comps)
    assert truncated.segments == ()
    assert {r.segment for r in truncated.pending_delete} == {"old", None}
