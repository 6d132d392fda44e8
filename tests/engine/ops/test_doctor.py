"""``lagoon doctor``: passes on the memory and fs backends, fails on stores that break a guarantee.

The broken stores are wrappers around a correct one: a create-if-absent and If-Match that check and
then write (a bug moto had), a listing that lags, reads that return stale bytes, and a
clock that runs ahead. A real S3 server (SeaweedFS) must pass every check, races included.
"""

from __future__ import annotations

import asyncio
import builtins
import datetime as dt
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from lagoon.config import StorageSettings
from lagoon.engine.ops.doctor import (
    DOCTOR_PREFIX,
    CheckResult,
    DoctorOptions,
    DoctorReport,
    _overlapping,
    judge_round,
    run_doctor,
)
from lagoon.storage import FsStore, MemoryStore, ObjectMeta, ObjectStore
from lagoon.storage.base import AlreadyExists, IfMatch, ObjectNotFound, PreconditionFailed, PutMode, PutModeT
from lagoon.storage.factory import open_store
from tests.conftest import S3Server


class Wrapper:
    """Delegates everything to ``inner``; subclasses break one guarantee."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner

    async def get(self, key: str) -> bytes:
        return await self.inner.get(key)

    async def get_range(self, key: str, start: int, end: int) -> bytes:
        return await self.inner.get_range(key, start, end)

    async def get_ranges(self, key: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        return await self.inner.get_ranges(key, ranges)

    async def head(self, key: str) -> ObjectMeta:
        return await self.inner.head(key)

    async def put(self, key: str, data: bytes, mode: PutModeT = PutMode.OVERWRITE) -> ObjectMeta:
        return await self.inner.put(key, data, mode)

    async def list(self, prefix: str, start_after: str | None = None) -> AsyncIterator[ObjectMeta]:
        async for meta in self.inner.list(prefix, start_after):
            yield meta

    async def list_prefixes(
        self, prefix: str, start_after: str | None = None, limit: int | None = None
    ) -> builtins.list[str]:
        return await self.inner.list_prefixes(prefix, start_after, limit)

    async def delete(self, key: str) -> None:
        await self.inner.delete(key)

    async def now(self) -> dt.datetime:
        return await self.inner.now()

    async def close(self) -> None:
        await self.inner.close()


class CheckThenWrite(Wrapper):
    """Conditional PUTs as a check followed by a plain write: right answers alone, races lost."""

    async def put(self, key: str, data: bytes, mode: PutModeT = PutMode.OVERWRITE) -> ObjectMeta:
        if mode == PutMode.CREATE:
            try:
                await self.inner.head(key)
                raise AlreadyExists(key)
            except ObjectNotFound:
                pass
        elif isinstance(mode, IfMatch):
            try:
                if (await self.inner.head(key)).etag != mode.etag:
                    raise PreconditionFailed(key)
            except ObjectNotFound:
                raise PreconditionFailed(key) from None
        await asyncio.sleep(0.002)  # the window moto leaves open
        return await self.inner.put(key, data)


class LaggingList(Wrapper):
    """LIST answers from a snapshot taken before the latest writes."""

    def __init__(self, inner: ObjectStore) -> None:
        super().__init__(inner)
        self.hidden: set[str] = set()

    async def put(self, key: str, data: bytes, mode: PutModeT = PutMode.OVERWRITE) -> ObjectMeta:
        self.hidden.add(key)
        return await self.inner.put(key, data, mode)

    async def list(self, prefix: str, start_after: str | None = None) -> AsyncIterator[ObjectMeta]:
        async for meta in self.inner.list(prefix, start_after):
            if meta.key not in self.hidden:
                yield meta
        self.hidden.clear()


class StaleReads(Wrapper):
    """GET returns the previous version of an overwritten object once."""

    def __init__(self, inner: ObjectStore) -> None:
        super().__init__(inner)
        self.previous: dict[str, bytes] = {}

    async def put(self, key: str, data: bytes, mode: PutModeT = PutMode.OVERWRITE) -> ObjectMeta:
        try:
            self.previous[key] = await self.inner.get(key)
        except ObjectNotFound:
            pass
        return await self.inner.put(key, data, mode)

    async def get(self, key: str) -> bytes:
        stale = self.previous.pop(key, None)
        return stale if stale is not None else await self.inner.get(key)


class FastClock(Wrapper):
    async def now(self) -> dt.datetime:
        return await self.inner.now() + dt.timedelta(seconds=30)


def statuses(report: object) -> dict[str, str]:
    return {c.name: c.status for c in report.checks}  # type: ignore[attr-defined]


def test_memory_store_passes_200_rounds() -> None:
    store = MemoryStore()
    report = run_doctor(store, DoctorOptions(rounds=200))
    assert report.ok, report.render()
    races = {"create-race", "if-match-race"}
    assert {v for k, v in statuses(report).items() if k not in races} == {"pass"}
    race = report.get("create-race") or pytest.fail()
    assert "200 rounds x 4 writers" in race.detail and "contended" in race.detail
    # in-process memory PUTs take microseconds: the threads rarely overlap, and the report says
    # whether that was enough contention to vouch for the guarantee
    if race.status == "warn":
        assert race.inconclusive and "inconclusive" in race.detail and "INCONCLUSIVE: " in report.render()
        assert "create-race" in report.to_json()["inconclusive"]
    keys = asyncio.run(_keys(store))
    assert keys == [], "the doctor must clean up after itself"


def test_fs_store_passes_with_a_second_process(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = FsStore(root)
    options = DoctorOptions(rounds=200, threads=3, peer=StorageSettings(backend="fs", root=str(root)))
    report = run_doctor(store, options)
    assert report.ok, report.render()
    race = report.get("create-race") or pytest.fail()
    assert "3 threads in this process + 3 in a second process" in race.detail
    for check in (race, report.get("if-match-race") or pytest.fail()):
        # no double winner: evidence, never proof, and the report says how strong
        assert check.status == "warn" and check.inconclusive
        assert "exactly one winner in every round, but inconclusive" in check.detail
        assert "contended rounds" in check.detail
    assert asyncio.run(_keys(store)) == []


def test_non_atomic_conditional_puts_fail_the_races(tmp_path: Path) -> None:
    root = tmp_path / "store"
    broken = CheckThenWrite(FsStore(root))
    options = DoctorOptions(rounds=40, threads=4, peer=StorageSettings(backend="fs", root=str(root)))
    report = run_doctor(broken, options)
    got = statuses(report)
    assert got["conditional-writes"] == "pass"  # one writer at a time cannot tell
    assert got["create-race"] == "fail" and got["if-match-race"] == "fail", report.render()
    assert "writers won" in (report.get("create-race") or pytest.fail()).detail
    assert not report.ok
    text = report.render()
    assert "FAILED: create-race, if-match-race" in text and "Do not use this store" in text
    assert "exactly one wins" in text  # the broken guarantee is spelled out


@pytest.mark.parametrize(
    ("wrapper", "failing"),
    [(LaggingList, "list-after-write"), (StaleReads, "read-after-write")],
)
def test_other_broken_guarantees_are_named(wrapper: type[Wrapper], failing: str) -> None:
    report = run_doctor(wrapper(MemoryStore()), DoctorOptions(rounds=5))
    assert failing in [c.name for c in report.failed], report.render()
    assert {c.name for c in report.failed} <= {failing, "conditional-writes"}


def test_clock_skew_is_a_warning() -> None:
    report = run_doctor(FastClock(MemoryStore()), DoctorOptions(rounds=3, max_skew_secs=5))
    clock = report.get("clock") or pytest.fail()
    assert clock.status == "warn" and "+30.0" in clock.detail and not clock.inconclusive
    assert report.ok and clock not in report.inconclusive


def test_the_report_goes_by_each_check_s_outcome_not_its_wording() -> None:
    report = DoctorReport(
        "t",
        [
            CheckResult("clock", "warn", "skew inconclusive"),
            CheckResult("create-race", "warn", "one winner a round", inconclusive=True),
        ],
    )
    assert [c.name for c in report.inconclusive] == ["create-race"]
    assert report.to_json()["inconclusive"] == ["create-race"]
    assert report.render().splitlines()[-1].startswith("OK, INCONCLUSIVE: create-race found no double")


@pytest.mark.parametrize(
    ("outcomes", "content", "before", "kind", "what"),
    [
        ([("won", "a/0", ""), ("lost", "a/1", "")], b"a/0", None, "kept", ""),
        ([("won", "a/0", ""), ("won", "b/1", "")], b"b/1", None, "broken", "2 writers won (a/0, b/1)"),
        (
            [("won", "a/0", ""), ("lost", "a/1", "")],
            b"a/1",
            None,
            "broken",
            "holds a/1's bytes (a lost update)",
        ),
        ([("won", "a/0", "")], None, None, "broken", "missing afterwards"),
        ([("error", "a/0", "timeout"), ("lost", "a/1", "")], b"a/0", None, "kept", ""),
        ([("error", "a/0", "timeout"), ("error", "a/1", "timeout")], None, None, "inconclusive", ""),
        ([("lost", "a/0", ""), ("lost", "a/1", "")], b"x/9", b"x/9", "broken", "every writer lost"),
        ([("lost", "a/0", ""), ("lost", "a/1", "")], b"a/1", b"x/9", "broken", "a/1 was told"),
    ],
)
def test_judge_round(
    outcomes: list[tuple[str, str, str]], content: bytes | None, before: bytes | None, kind: str, what: str
) -> None:
    got = judge_round(outcomes, content, before)
    assert got.kind == kind and what in got.what and bool(got.what) == (kind == "broken"), got


async def _keys(store: ObjectStore) -> list[str]:
    return [m.key async for m in store.list(DOCTOR_PREFIX)]


@pytest.mark.s3
def test_doctor_and_repair_run_against_s3(s3_server: S3Server) -> None:
    """The S3 path end to end on SeaweedFS (threads sharing one obstore client, a second process,
    repair's listings): every check passes, the create and If-Match races included."""
    settings = StorageSettings(
        backend="s3",
        bucket=s3_server.bucket,
        prefix="doctor-test/",
        region=s3_server.region,
        endpoint=s3_server.endpoint,
    )
    report = run_doctor(
        open_store(settings), DoctorOptions(rounds=4, threads=2, peer=settings), target="seaweedfs"
    )
    got = statuses(report)
    for name in ("read-after-write", "list-after-write", "range-reads", "conditional-writes", "clock"):
        assert got[name] in ("pass", "warn"), report.render()
    for name in ("create-race", "if-match-race"):  # 4 writers a round: two threads, two in a peer
        detail = (report.get(name) or pytest.fail()).detail
        assert got[name] == "warn" and "exactly one winner in every round, but inconclusive" in detail

    async def repair_on_s3() -> None:
        from lagoon.engine.ops.repair import repair
        from tests.engine.ops.test_repair import build

        store = open_store(settings)
        await build(store, "s3ns", versions=2)
        result = await repair(store, orgs=None, dry_run=True)
        assert [(n.namespace, n.ok, n.latest_version) for n in result.namespaces] == [("s3ns", True, 2)]
        await store.close()

    asyncio.run(repair_on_s3())


def test_a_round_is_contended_when_two_puts_were_in_flight_at_once() -> None:
    assert _overlapping([(2.0, 3.0), (0.0, 2.5), (4.0, 5.0)])
    assert not _overlapping([(2.0, 3.0), (0.0, 1.0), (3.0, 4.0)])  # one after the other
    assert not _overlapping([(0.0, 1.0)])
