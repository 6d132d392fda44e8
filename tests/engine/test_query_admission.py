"""Query admission and cancellation below HTTP: the fair executor, cooperative budgets, the
up-front cost check, and the bounded namespace handles of a ``Database``."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from lagoon.config import load_settings
from lagoon.engine.database import Database
from lagoon.engine.executor import QueryExecutor
from lagoon.errors import InvalidRequest, TooManyRequests
from lagoon.index.cancel import Budget, QueryStopped, budget_scope, checkpoint, match_in_slices
from lagoon.index.filters.glob import glob_to_regex
from lagoon.query.cost import pattern_weight
from lagoon.storage.memory import MemoryStore

# --- the executor ----------------------------------------------------------------------------------


def test_one_org_cannot_take_every_thread() -> None:
    """Org A fills its share with blocked jobs and queues more; org B's job starts at once."""

    async def main() -> None:
        ex = QueryExecutor(threads=4, per_org=2, max_queued=16)
        release = threading.Event()
        started: list[str] = []

        def blocked(tag: str) -> str:
            started.append(tag)
            release.wait(10)
            return tag

        a = [
            asyncio.create_task(ex.run(lambda i=i: blocked(f"a{i}"), org="A", namespace="x"))
            for i in range(6)
        ]
        await asyncio.sleep(0.2)
        assert ex.running("A") == 2 and ex.queued("A") == 4  # capped, though 2 threads are free
        t0 = time.monotonic()
        assert await ex.run(lambda: "b", org="B", namespace="y") == "b"
        assert time.monotonic() - t0 < 1.0
        release.set()
        assert sorted(await asyncio.gather(*a)) == [f"a{i}" for i in range(6)]
        ex.close()

    asyncio.run(main())


def test_round_robin_over_namespaces_and_orgs() -> None:
    async def main() -> None:
        ex = QueryExecutor(threads=1, per_org=1, max_queued=64)
        gate = threading.Event()
        order: list[str] = []

        def job(tag: str) -> None:
            gate.wait(10)
            order.append(tag)

        first = asyncio.create_task(ex.run(lambda: job("first"), org="A", namespace="n1"))
        await asyncio.sleep(0.1)
        tasks = []
        for tag, org, ns in [
            ("a1", "A", "n1"),
            ("a2", "A", "n1"),
            ("a3", "A", "n2"),
            ("b1", "B", "m"),
            ("b2", "B", "m"),
        ]:
            tasks.append(asyncio.create_task(ex.run(lambda t=tag: job(t), org=org, namespace=ns)))
            await asyncio.sleep(0.01)
        gate.set()
        await asyncio.gather(first, *tasks)
        # orgs alternate; within A, namespaces alternate (n1, n2, n1)
        assert order == ["first", "a1", "b1", "a3", "b2", "a2"]
        ex.close()

    asyncio.run(main())


def test_queue_bound_is_429_and_a_dropped_waiter_leaves_the_queue() -> None:
    async def main() -> None:
        ex = QueryExecutor(threads=1, per_org=1, max_queued=2)
        gate = threading.Event()
        running = asyncio.create_task(ex.run(lambda: gate.wait(10), org="A", namespace="x"))
        await asyncio.sleep(0.1)
        waiting = [asyncio.create_task(ex.run(lambda: 1, org="A", namespace="x")) for _ in range(2)]
        await asyncio.sleep(0.05)
        with pytest.raises(TooManyRequests, match=r"server\.max_queued_queries"):
            await ex.run(lambda: 1, org="A", namespace="x")
        waiting[0].cancel()
        await asyncio.sleep(0.05)
        assert ex.queued("A") == 1
        gate.set()
        await running
        assert await waiting[1] == 1
        ex.close()

    asyncio.run(main())


def test_cancelling_a_running_job_stops_it_at_a_checkpoint() -> None:
    async def main() -> None:
        ex = QueryExecutor(threads=2, per_org=2, max_queued=4)
        budget = Budget()
        stopped = threading.Event()

        def spin() -> None:
            try:
                while True:
                    checkpoint()
                    time.sleep(0.001)
            except QueryStopped:
                stopped.set()
                raise

        with budget_scope(budget):
            task = asyncio.create_task(ex.run(spin, org="A", namespace="x", budget=budget))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await asyncio.to_thread(stopped.wait, 2.0)
        assert ex.running() == 0
        ex.close()

    asyncio.run(main())


# --- budgets and slices ----------------------------------------------------------------------------


def test_budget_deadline_and_cancel() -> None:
    checkpoint()  # no budget: never stops
    b = Budget(time.monotonic() + 0.05, timeout=0.05)
    with budget_scope(b):
        checkpoint()
        time.sleep(0.08)
        with pytest.raises(QueryStopped, match="deadline"):
            checkpoint()
    c = Budget()
    c.cancel("the client disconnected")
    with budget_scope(c), pytest.raises(QueryStopped, match="client disconnected"):
        checkpoint()


@pytest.mark.parametrize("large", [False, True])
def test_match_in_slices_equals_one_call(large: bool) -> None:
    words = ["alpha", None, "x" * 100_000, "", "beta gamma", "ǆǅ" * 30_000, "alphabet"] * 7
    arr = pa.array(words, type=pa.large_string() if large else pa.string())
    arr = pa.chunked_array([arr.slice(0, 20), arr.slice(20)])
    want = pc.match_substring_regex(arr, pattern="alph|ǅ")
    calls = []

    def match(part: Any) -> Any:
        calls.append(len(part))
        return pc.match_substring_regex(part, pattern="alph|ǅ")

    with budget_scope(Budget()):
        got = match_in_slices(arr, match, max_bytes=1000)
    assert got.to_pylist() == want.to_pylist()
    assert len(calls) > 2 and sum(calls) == len(words)


# --- the cost estimate -----------------------------------------------------------------------------


def test_pattern_weights() -> None:
    assert pattern_weight("foo.*bar") == 1
    assert pattern_weight(r"^\d{4}-\d{2}-\d{2}$") == 1
    assert pattern_weight(glob_to_regex("*abc?d*")) == 1
    assert pattern_weight("[\\x{0}-\\x{10FFFF}]{1000}c") > 5000
    assert pattern_weight(glob_to_regex("*ǆ" * 1000, case_insensitive=True)) > 10_000
    assert pattern_weight("(a{10}){10}") > pattern_weight("a{10}")


def _db(**limits: Any) -> Database:
    settings = load_settings(
        overrides={"storage": {"backend": "memory"}, "limits": limits}
        if limits
        else {"storage": {"backend": "memory"}},
        environ=False,
    )
    return Database(MemoryStore(), settings)


def test_too_expensive_queries_are_refused_up_front_with_a_400() -> None:
    async def main() -> None:
        db = _db()
        rows = [{"id": i, "s": "ab" * 25_000} for i in range(120)]
        await db.write(
            "big", {"upsert_rows": rows, "schema": {"s": {"type": "string", "regex": True, "glob": True}}}
        )
        catastrophic = [
            ["s", "Regex", "[\\x{0}-\\x{10FFFF}]{1000}c"],
            ["s", "IGlob", "*ǆ" * 1000],
            ["Or", [["s", "Glob", f"*{i}x*"] for i in range(4000)]],
        ]
        for flt in catastrophic:
            t0 = time.monotonic()
            with pytest.raises(InvalidRequest, match=r"limits\.max_query_work") as e:
                await db.query("big", {"rank_by": ["id", "asc"], "top_k": 1, "filters": flt})
            assert e.value.status == 400 and not e.value.retryable
            assert time.monotonic() - t0 < 5.0
        ok = await db.query(
            "big", {"rank_by": ["id", "asc"], "top_k": 1, "filters": ["s", "Regex", "ab(ab)+"]}
        )
        assert [r["id"] for r in ok["rows"]] == [0]
        await db.close()

    asyncio.run(main())


def test_namespace_handles_are_bounded() -> None:
    async def main() -> None:
        settings = load_settings(
            overrides={"storage": {"backend": "memory"}, "cache": {"max_open_namespaces": 8}}, environ=False
        )
        db = Database(MemoryStore(), settings)
        await db.write("kept", {"upsert_rows": [{"id": 1}]})
        for i in range(200):  # missing namespaces, as a scanning client would ask for
            with pytest.raises(Exception, match="not found"):
                await db.query(f"missing-{i}", {"rank_by": ["id", "asc"], "top_k": 1})
        assert len(db._handles) <= 8
        rows = (await db.query("kept", {"rank_by": ["id", "asc"], "top_k": 5}))["rows"]
        assert [r["id"] for r in rows] == [1]  # a dropped handle reloads from the store
        await db.close()

    asyncio.run(main())


def test_a_write_keeps_its_namespace_handle_until_it_is_submitted() -> None:
    """A write takes its namespace's handle, then waits (loading, validating, the catalog) before
    it reaches the committer; requests to other namespaces meanwhile must not drop that handle,
    or the next write to the namespace opens a second committer beside the first."""

    async def main() -> None:
        settings = load_settings(
            overrides={"storage": {"backend": "memory"}, "cache": {"max_open_namespaces": 1}}, environ=False
        )
        db = Database(MemoryStore(), settings)
        gate = asyncio.Event()
        check = db._check_backpressure

        async def held_at_the_gate(h: Any) -> None:
            if h.state.keys.namespace == "a":
                await gate.wait()
            await check(h)

        db._check_backpressure = held_at_the_gate  # type: ignore[method-assign]
        first = asyncio.create_task(db.write("a", {"upsert_rows": [{"id": 1}]}))
        while not any(ns == "a" for _, ns in db._handles):
            await asyncio.sleep(0.001)
        handle = db._handles[("default", "a")]
        await db.write("b", {"upsert_rows": [{"id": 2}]})  # past the bound: trims the idle ones
        assert db._handles.get(("default", "a")) is handle
        gate.set()
        await first
        second = await db.write("a", {"upsert_rows": [{"id": 3}]})
        assert db._handles[("default", "a")] is handle and second["version"] == 2
        rows = (await db.query("a", {"rank_by": ["id", "asc"], "top_k": 5}))["rows"]
        assert [r["id"] for r in rows] == [1, 3]
        await db.close()

    asyncio.run(main())
