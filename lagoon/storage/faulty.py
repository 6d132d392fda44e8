"""Seeded fault injection around any ``ObjectStore``, for simulations and protocol tests.

Random faults (each call of an op in ``ops`` draws from ``random.Random(seed)``):

- ``error_before`` (p_error_before): raise ``StoreUnavailable`` without calling the inner store;
- ``conflict`` (p_conflict, conditional puts only): raise ``ConditionalConflict`` (S3 409), nothing
  written;
- ``error_after`` (p_error_after): call the inner store, then raise ``StoreUnavailable`` — the
  ambiguous "applied but the answer was lost" case. For ``list``: yield a prefix of the listing,
  then raise (a page failing mid-listing);
- ``truncate`` (p_truncate, reads only): raise ``CorruptRead``, or with ``raw_truncate=True``
  return the bytes cut short, to test that a caller's length/checksum check catches it;
- latency: ``sleep(uniform(*latency))`` before each call.

Determinism: every call draws the same number of values whatever happens (latency if enabled, one
fault draw, one cut point), so a given sequence of calls yields the same faults for the same seed;
``trace`` records ``(op, key, fault)`` for every call, to compare or replay runs.

Failpoints: ``arm(op, action, key=..., times=1)`` forces ``action`` on the next matching call(s),
without consuming randomness. ``action`` is a fault name above or an async hook
``hook(op, key)`` awaited before the call proceeds normally (e.g. to park a writer on an Event).

Atomicity of conditional writes is the inner store's: this wrapper adds no lock (memory, fs and a
real S3 server are linearizable on their own; the race tests check that without any wrapper).
"""

from __future__ import annotations

import asyncio
import builtins
import datetime as dt
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

from lagoon.storage.base import (
    ConditionalConflict,
    CorruptRead,
    IfMatch,
    ObjectMeta,
    ObjectStore,
    PutMode,
    PutModeT,
    StoreUnavailable,
)

T = TypeVar("T")

Fault = Literal["error_before", "error_after", "conflict", "truncate"]
Hook = Callable[[str, str], Awaitable[None]]
ALL_OPS = frozenset(
    {"get", "get_range", "get_ranges", "head", "put", "list", "list_prefixes", "delete", "now"}
)
READ_OPS = frozenset({"get", "get_range", "get_ranges"})


@dataclass
class _Failpoint:
    op: str
    key: Callable[[str], bool]
    action: Fault | Hook
    remaining: int


class FaultyStore:
    """Wraps any ``ObjectStore``; injects seeded faults and armed failpoints."""

    def __init__(
        self,
        inner: ObjectStore,
        *,
        seed: int = 0,
        p_error_before: float = 0.0,
        p_error_after: float = 0.0,
        p_conflict: float = 0.0,
        p_truncate: float = 0.0,
        latency: tuple[float, float] = (0.0, 0.0),
        ops: Iterable[str] = ALL_OPS,
        raw_truncate: bool = False,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        unknown = set(ops) - ALL_OPS
        if unknown:
            raise ValueError(f"unknown ops {sorted(unknown)}")
        self.inner = inner
        self.seed = seed
        self.p_error_before = p_error_before
        self.p_error_after = p_error_after
        self.p_conflict = p_conflict
        self.p_truncate = p_truncate
        self.latency = latency
        self.ops = frozenset(ops)
        self.raw_truncate = raw_truncate
        self._rng = random.Random(seed)
        self._sleep = sleep
        self._failpoints: list[_Failpoint] = []
        self.trace: list[tuple[str, str, str]] = []
        """(op, key, fault or "ok") for every call, in call order."""

    # -- failpoints ---------------------------------------------------------------------------

    def arm(
        self,
        op: str,
        action: Fault | Hook,
        *,
        key: str | Callable[[str], bool] | None = None,
        times: int = 1,
    ) -> None:
        """Force ``action`` on the next ``times`` calls of ``op`` whose key matches ``key``."""
        if op not in ALL_OPS:
            raise ValueError(f"unknown op {op!r}")
        if key is None:
            match: Callable[[str], bool] = lambda _k: True  # noqa: E731
        elif isinstance(key, str):
            match = key.__eq__
        else:
            match = key
        self._failpoints.append(_Failpoint(op, match, action, times))

    def disarm(self) -> None:
        self._failpoints.clear()

    def _take_failpoint(self, op: str, key: str) -> Fault | Hook | None:
        for fp in self._failpoints:
            if fp.op == op and fp.key(key):
                fp.remaining -= 1
                if fp.remaining <= 0:
                    self._failpoints.remove(fp)
                return fp.action
        return None

    # -- the fault plan -----------------------------------------------------------------------

    async def _plan(self, op: str, key: str, *, conditional: bool = False) -> tuple[Fault | None, float]:
        """Decide this call's fault (and the cut point for truncation); raise pre-call faults."""
        forced = self._take_failpoint(op, key)
        if forced is not None and not isinstance(forced, str):
            await forced(op, key)
            forced = None
        fault: Fault | None = forced
        cut = 0.5
        if forced is None and op in self.ops:
            if self.latency[1] > 0:
                await self._sleep(self._rng.uniform(*self.latency))
            r, cut = self._rng.random(), self._rng.random()
            edges = (
                self.p_error_before,
                self.p_error_before + self.p_conflict,
                self.p_error_before + self.p_conflict + self.p_error_after,
                self.p_error_before + self.p_conflict + self.p_error_after + self.p_truncate,
            )
            if r < edges[0]:
                fault = "error_before"
            elif r < edges[1]:
                fault = "conflict" if conditional else None
            elif r < edges[2]:
                fault = "error_after"
            elif r < edges[3]:
                fault = "truncate" if op in READ_OPS else None
        self.trace.append((op, key, fault or "ok"))
        if fault == "error_before":
            raise StoreUnavailable(f"injected: {op} {key} failed before reaching the store")
        if fault == "conflict":
            raise ConditionalConflict(f"injected: {op} {key} conflicted (409)")
        return fault, cut

    @staticmethod
    def _after(op: str, key: str, fault: Fault | None) -> None:
        if fault == "error_after":
            raise StoreUnavailable(f"injected: {op} {key} applied, then the answer was lost")

    def _truncated(self, op: str, key: str, data: bytes, cut: float) -> bytes:
        if not data:
            return data
        if not self.raw_truncate:
            raise CorruptRead(f"injected: {op} {key} returned a truncated body")
        return data[: int(cut * len(data))]

    # -- operations ---------------------------------------------------------------------------

    async def get(self, key: str) -> bytes:
        fault, cut = await self._plan("get", key)
        data = await self.inner.get(key)
        self._after("get", key, fault)
        return self._truncated("get", key, data, cut) if fault == "truncate" else data

    async def get_range(self, key: str, start: int, end: int) -> bytes:
        fault, cut = await self._plan("get_range", key)
        data = await self.inner.get_range(key, start, end)
        self._after("get_range", key, fault)
        return self._truncated("get_range", key, data, cut) if fault == "truncate" else data

    async def get_ranges(self, key: str, ranges: Sequence[tuple[int, int]]) -> builtins.list[bytes]:
        fault, cut = await self._plan("get_ranges", key)
        datas = await self.inner.get_ranges(key, ranges)
        self._after("get_ranges", key, fault)
        if fault == "truncate":
            for i in reversed(range(len(datas))):
                if datas[i]:
                    datas = [*datas[:i], self._truncated("get_ranges", key, datas[i], cut), *datas[i + 1 :]]
                    break
        return datas

    async def head(self, key: str) -> ObjectMeta:
        fault, _ = await self._plan("head", key)
        meta = await self.inner.head(key)
        self._after("head", key, fault)
        return meta

    async def put(self, key: str, data: bytes, mode: PutModeT = PutMode.OVERWRITE) -> ObjectMeta:
        conditional = mode == PutMode.CREATE or isinstance(mode, IfMatch)
        fault, _ = await self._plan("put", key, conditional=conditional)
        meta = await self.inner.put(key, data, mode)
        self._after("put", key, fault)
        return meta

    async def delete(self, key: str) -> None:
        fault, _ = await self._plan("delete", key)
        await self.inner.delete(key)
        self._after("delete", key, fault)

    async def list(self, prefix: str, start_after: str | None = None) -> AsyncIterator[ObjectMeta]:
        fault, cut = await self._plan("list", prefix)
        if fault != "error_after":
            async for meta in self.inner.list(prefix, start_after):
                yield meta
            return
        metas = [meta async for meta in self.inner.list(prefix, start_after)]
        for meta in metas[: int(cut * len(metas))]:
            yield meta
        self._after("list", prefix, fault)

    async def list_prefixes(
        self, prefix: str, start_after: str | None = None, limit: int | None = None
    ) -> builtins.list[str]:
        fault, _ = await self._plan("list_prefixes", prefix)
        out = await self.inner.list_prefixes(prefix, start_after, limit)
        self._after("list_prefixes", prefix, fault)
        return out

    async def now(self) -> dt.datetime:
        fault, _ = await self._plan("now", "")
        value = await self.inner.now()
        self._after("now", "", fault)
        return value

    async def close(self) -> None:
        await self.inner.close()
