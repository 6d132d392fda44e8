"""The garbage collector's decisions, as pure functions of one observation (lagoon/engine/gc.py)."""

from __future__ import annotations

from lagoon.engine.gc import plan_deletions, plan_versions, still_deletable
from lagoon.format.manifest import Manifest, PendingDelete, SegmentRef

GRACE = 1_000


def seg(sid: str) -> SegmentRef:
    return SegmentRef(id=sid, level=0, seq_from=1, seq_to=1, rows=1, bytes=1)


def manifest(
    version: int, segments: tuple[str, ...] = (), pending: tuple[PendingDelete, ...] = ()
) -> Manifest:
    return Manifest(
        version=version,
        nonce=f"n{version}",
        created_at_ms=0,
        writer="w",
        segments=tuple(seg(s) for s in segments),
        pending_delete=pending,
    )


def pending_segment(sid: str, version: int, at: int) -> PendingDelete:
    return PendingDelete(segment=sid, prefix=f"seg/{sid}/", removed_at_version=version, removed_at=at)


def test_versions_keep_the_newest_and_those_superseded_within_grace() -> None:
    times = {1: 0, 2: 100, 3: 9_000, 4: 9_500}
    plan = plan_versions(times, latest=4, now=10_000, grace_ms=GRACE, retain_versions=1)
    # v1 superseded at 100 (old), v2 superseded at 9_000 (within grace), v3 at 9_500, v4 newest
    assert plan.old == (1,)
    assert plan.retained == {2, 3, 4}
    assert plan.more_later


def test_a_version_without_successor_ages_by_itself() -> None:
    plan = plan_versions({1: 0, 5: 9_999}, latest=5, now=10_000, grace_ms=GRACE, retain_versions=1)
    assert plan.old == (1,) and not plan.more_later


def test_pending_segments_wait_for_grace_from_logical_removal() -> None:
    # removed at 100 by its record, but the removing version 3 became visible at 9_500: not yet
    latest = manifest(3, pending=(pending_segment("a", 3, 100), pending_segment("b", 2, 100)))
    plan = plan_deletions(latest, set(), {2: 200, 3: 9_500}, {}, now=10_000, grace_ms=GRACE)
    assert plan.pending_doomed == {"b"}
    assert plan.more_later


def test_a_pending_segment_a_retained_version_lists_is_kept() -> None:
    latest = manifest(3, pending=(pending_segment("a", 2, 0),))
    plan = plan_deletions(latest, {"a"}, {2: 0, 3: 0}, {}, now=10_000, grace_ms=GRACE)
    assert plan.pending_doomed == frozenset() and plan.more_later


def test_orphans_are_unlisted_segments_with_old_files() -> None:
    latest = manifest(3, segments=("live",), pending=(pending_segment("p", 3, 0),))
    newest = {"live": 0, "p": 0, "old": 100, "young": 9_500}
    plan = plan_deletions(latest, {"live"}, {3: 0}, newest, now=10_000, grace_ms=GRACE)
    assert plan.orphans == {"old"}
    assert plan.more_later  # "young" may still be committed by a slow worker


def test_revalidation_spares_what_became_live_or_pending() -> None:
    latest = manifest(3, pending=(pending_segment("p", 3, 0),))
    plan = plan_deletions(latest, set(), {3: 0}, {"o": 0, "p": 0}, now=10_000, grace_ms=GRACE)
    assert plan.orphans == {"o"} and plan.pending_doomed == {"p"}
    assert still_deletable(["o", "p"], plan, latest) == ["o", "p"]
    # the orphan was committed meanwhile, and the pending record is gone (another GC dropped it)
    assert still_deletable(["o", "p"], plan, manifest(4, segments=("o",))) == []
    # the orphan turned pending (committed, then replaced): not deleted as an orphan
    assert still_deletable(["o"], plan, manifest(5, pending=(pending_segment("o", 5, 0),))) == []
