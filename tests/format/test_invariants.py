"""Manifest invariants (lagoon/format/invariants.py): what they accept and what they refuse."""

from __future__ import annotations

import dataclasses

import pytest

from lagoon.errors import InternalError
from lagoon.format.invariants import manifest_problems, require, successor_problems
from lagoon.format.manifest import Manifest, PendingDelete, SegmentRef


def seg(sid: str, seq_from: int = 1, seq_to: int = 2) -> SegmentRef:
    return SegmentRef(
        id=sid,
        level=0,
        seq_from=seq_from,
        seq_to=seq_to,
        rows=1,
        bytes=1,
        files={"docs": {"size": 1, "crc32c": 2}},
    )


BASE = Manifest(
    version=3,
    nonce="a" * 32,
    created_at_ms=0,
    writer="w",
    indexed_through=5,
    segments=(seg("s1"),),
    pending_delete=(PendingDelete(segment="s0", prefix="seg/s0/", removed_at_version=3, removed_at=0),),
    parent_nonce="",
)


def next_of(base: Manifest, **changes: object) -> Manifest:
    fields: dict[str, object] = {"version": base.version + 1, "nonce": "b" * 32, "parent_nonce": base.nonce}
    return dataclasses.replace(base, **{**fields, **changes})  # type: ignore[arg-type]


def test_a_well_formed_successor_passes() -> None:
    assert manifest_problems(BASE) == []
    assert (
        successor_problems(BASE, next_of(BASE, indexed_through=7, segments=(seg("s1"), seg("s2", 6, 7))))
        == []
    )
    assert successor_problems(None, dataclasses.replace(BASE, version=1)) == []


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"segments": (seg("s1"), seg("s1"))}, "listed twice"),
        ({"segments": (seg("s0"),)}, "both live and pending"),
        ({"segments": (seg("s9", 4, 3),)}, "seq_from 4 > seq_to 3"),
        ({"nonce": ""}, "nonce is empty"),
    ],
)
def test_one_manifest_on_its_own(changes: dict[str, object], fragment: str) -> None:
    assert any(fragment in p for p in manifest_problems(dataclasses.replace(BASE, **changes)))


def test_successors_follow_their_base() -> None:
    assert any(
        "does not follow" in p
        for p in successor_problems(BASE, dataclasses.replace(next_of(BASE), version=6))
    )
    assert any("parent nonce" in p for p in successor_problems(BASE, next_of(BASE, parent_nonce="c" * 32)))
    assert any("went back" in p for p in successor_problems(BASE, next_of(BASE, indexed_through=4)))
    revived = next_of(BASE, pending_delete=(), segments=(seg("s1"), seg("s0")))
    assert any("live again" in p for p in successor_problems(BASE, revived))


def test_require_refuses_with_every_problem() -> None:
    with pytest.raises(InternalError, match="listed twice"):
        require(manifest_problems(dataclasses.replace(BASE, segments=(seg("s1"), seg("s1")))), "v3")
    require([], "v3")
