"""``lagoon doctor``: does the configured object store give the guarantees Lagoon relies on?

Lagoon's only coordination primitive is the store's conditional write, and its read path relies
on read-after-write and on 404 meaning "missing" (docs/storage.md, docs/design.md §2). Stores that call
themselves S3-compatible do not all provide this: moto's server (a mock), for one, checks and then
writes without a lock, so a few rounds in a few hundred let two concurrent create-if-absent PUTs
both succeed. Some real servers serialise contended conditional writes slowly (SeaweedFS retries
its per-key lock every second), so a round may take seconds: that is slow, not wrong. A store that fails any check here must not hold Lagoon data.

Checks, in order (each names the guarantee it tests; ``CHECKS``):

1. read-after-write: PUT then GET/HEAD sees the bytes, also after an overwrite; a missing or
   deleted key answers 404 (ObjectNotFound), not an error or stale bytes.
2. list-after-write: LIST shows new keys and hides deleted ones at once, in key order;
   ``start_after`` and ``list_prefixes`` work.
3. range reads: ranged GETs return exactly the bytes asked for, clamped at the object's end.
4. conditional writes: create-if-absent refuses an existing key; If-Match refuses a stale etag and
   a missing key, and accepts the current etag.
5. create-if-absent race: ``rounds`` rounds; in each, every writer (``threads`` threads in this
   process, each with its own event loop, plus as many in a second process when ``peer`` is
   given) PUTs the same fresh key with create-if-absent at the same moment. Exactly one must win,
   and the stored bytes must be the winner's. Threads start each round on a barrier, the second
   process is told to start over a pipe just before, and ``sys.setswitchinterval`` is lowered so
   threads really interleave (reliability T4b).
6. If-Match race: in the same rounds, every writer replaces the key with If-Match on the etag the
   create left; exactly one must win.
7. clock: ``now()`` against this machine's clock; a skew above ``max_skew_secs`` is a warning
   (garbage-collection grace periods are measured on the store's clock).

Everything is written under ``_lagoon/doctor/<run id>/`` (the cluster prefix, never an org's
namespace) and deleted at the end. The checks go through the same store stack servers use
(retries included), so a transient error that retries absorb is not a failure; errors that remain
are reported, and a round where every writer failed is inconclusive (more than a tenth of them
fails the check).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import json
import os
import queue
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from lagoon.config import StorageSettings
from lagoon.engine.ops import defaults
from lagoon.format.keys import CLUSTER_PREFIX
from lagoon.storage.base import (
    AlreadyExists,
    IfMatch,
    ObjectNotFound,
    ObjectStore,
    PreconditionFailed,
    PutMode,
    StorageError,
)

Status = Literal["pass", "fail", "warn", "skip"]
DOCTOR_PREFIX = f"{CLUSTER_PREFIX}doctor/"
DEFAULT_ROUNDS = defaults.DOCTOR_ROUNDS
DEFAULT_THREADS = defaults.DOCTOR_THREADS
DEFAULT_MAX_SKEW_SECS = defaults.DOCTOR_MAX_SKEW_SECS
DEFAULT_SWITCH_INTERVAL = 1e-6
INCONCLUSIVE_LIMIT = 0.1
"""A race check fails when more than this fraction of its rounds had every writer erroring."""
MIN_CONTENDED_ROUNDS = 60
"""Contended rounds (two or more writers' PUTs in flight at once) a race wants: a store that lets
two writers win in 5 % of contended rounds then fails it with 95 % probability. A race without a
violation is inconclusive either way (it cannot prove atomicity); with fewer rounds it says so
twice, and the report names the detection bound."""
DETECTION_PROBABILITY = 0.95

CHECKS: dict[str, str] = {
    "read-after-write": "a completed PUT is visible to the next GET and HEAD, also after an overwrite; "
    "a missing or deleted key answers 404",
    "list-after-write": "LIST shows completed PUTs and hides completed DELETEs at once, in key order",
    "range-reads": "ranged GETs return exactly the requested bytes, clamped at the object's end",
    "conditional-writes": "create-if-absent refuses an existing key; If-Match refuses a stale etag or a "
    "missing key and accepts the current etag",
    "create-race": "of concurrent create-if-absent PUTs of one key exactly one wins and its bytes are "
    "stored (WAL and manifest commits rely on this)",
    "if-match-race": "of concurrent If-Match PUTs on one etag exactly one wins (the CURRENT hint and the "
    "indexing queue rely on this)",
    "clock": "the store clock is close to this machine's (GC grace periods are measured on it)",
}


@dataclass
class CheckResult:
    name: str
    status: Status
    detail: str
    inconclusive: bool = False
    """Nothing was found wrong, on evidence that cannot vouch for the guarantee (a race without a
    double winner: status ``warn``). The report lists these checks; ``detail`` says why."""

    @property
    def guarantee(self) -> str:
        return CHECKS.get(self.name, "")

    def to_json(self) -> dict[str, Any]:
        return {"check": self.name, "status": self.status, "guarantee": self.guarantee, "detail": self.detail}


@dataclass
class DoctorReport:
    target: str
    checks: list[CheckResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def failed(self) -> list[CheckResult]:
        return [c for c in self.checks if c.status == "fail"]

    @property
    def inconclusive(self) -> list[CheckResult]:
        """Checks that passed on too little evidence to vouch for the guarantee (races with too
        few contended rounds)."""
        return [c for c in self.checks if c.inconclusive]

    def get(self, name: str) -> CheckResult | None:
        return next((c for c in self.checks if c.name == name), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "ok": self.ok,
            "inconclusive": [c.name for c in self.inconclusive],
            "checks": [c.to_json() for c in self.checks],
        }

    def render(self) -> str:
        lines = [f"lagoon doctor: {self.target}"]
        for c in self.checks:
            lines.append(f"{c.status.upper():<5} {c.name}: {c.detail}")
        if self.ok and self.inconclusive:
            lines.append(
                "OK, INCONCLUSIVE: " + ", ".join(c.name for c in self.inconclusive) + " found no "
                "double winner, which cannot prove that the store's conditional writes are atomic; "
                "every other check passed. Use a store that documents atomic conditional writes "
                "(docs/operations.md lists known results)."
            )
        elif self.ok:
            lines.append("OK: the store provides every guarantee Lagoon relies on.")
        else:
            lines.append(
                "FAILED: " + ", ".join(c.name for c in self.failed) + ". Do not use this store for "
                "Lagoon data; guarantees broken:"
            )
            lines += [f"  - {c.name}: {c.guarantee}" for c in self.failed]
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class DoctorOptions:
    rounds: int = DEFAULT_ROUNDS
    threads: int = DEFAULT_THREADS
    """Racing writers per process (this one and, with ``peer``, the second one)."""
    peer: StorageSettings | None = None
    """Settings for the second racing process (None = threads in this process only)."""
    max_skew_secs: float = DEFAULT_MAX_SKEW_SECS
    switch_interval: float | None = DEFAULT_SWITCH_INTERVAL
    timeout_secs: float = 120.0
    """Longest wait for one round (threads and second process) before the race is abandoned."""


class _CheckFailed(Exception):
    pass


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise _CheckFailed(message)


async def _expect_missing(store: ObjectStore, key: str, what: str) -> None:
    try:
        await store.get(key)
    except ObjectNotFound:
        pass
    else:
        raise _CheckFailed(f"GET of {what} returned an object instead of 404")
    try:
        await store.head(key)
    except ObjectNotFound:
        pass
    else:
        raise _CheckFailed(f"HEAD of {what} returned an object instead of 404")


# --- sequential checks -----------------------------------------------------------------------


async def _read_after_write(store: ObjectStore, base: str) -> str:
    key = f"{base}raw/object"
    first, second = secrets.token_bytes(4096), secrets.token_bytes(3000)
    await _expect_missing(store, f"{base}raw/never-written", "a key never written")
    await store.put(key, first)
    _expect(await store.get(key) == first, "GET right after PUT did not return the bytes just written")
    _expect((await store.head(key)).size == len(first), "HEAD right after PUT reported the wrong size")
    await store.put(key, second)
    _expect(await store.get(key) == second, "GET right after an overwrite returned the old bytes")
    _expect(
        (await store.head(key)).size == len(second), "HEAD right after an overwrite reported the old size"
    )
    await store.delete(key)
    await _expect_missing(store, key, "a deleted key")
    await store.delete(key)  # deleting a missing key is not an error
    return "PUT, overwrite and DELETE were visible to the very next GET and HEAD; missing keys answer 404"


async def _list_after_write(store: ObjectStore, base: str) -> str:
    prefix = f"{base}list/"
    names = ["k-00", "k-01", "k-02", "k-10", "k-9", "sub/x"]
    for name in reversed(names):  # written out of order: the listing must sort
        await store.put(prefix + name, name.encode())
    listed = [m.key async for m in store.list(prefix)]
    expected = sorted(prefix + n for n in names)
    _expect(listed == expected, f"LIST right after PUTs returned {listed}, expected {expected}")
    after = [m.key async for m in store.list(prefix, start_after=prefix + "k-02")]
    _expect(after == expected[3:], f"LIST with start_after returned {after}, expected {expected[3:]}")
    prefixes = await store.list_prefixes(prefix)
    _expect(prefixes == [prefix + "sub/"], f"list_prefixes returned {prefixes}, expected {[prefix + 'sub/']}")
    await store.delete(prefix + "k-01")
    listed = [m.key async for m in store.list(prefix)]
    _expect(prefix + "k-01" not in listed, "LIST right after DELETE still showed the deleted key")
    _expect(len(listed) == len(names) - 1, f"LIST after one DELETE returned {len(listed)} keys")
    return f"{len(names)} PUTs and a DELETE were reflected by the next LIST, in key order"


async def _range_reads(store: ObjectStore, base: str) -> str:
    key = f"{base}range/object"
    data = bytes(range(256)) * 400  # 102,400 bytes, every offset distinguishable mod 256
    n = len(data)
    await store.put(key, data)
    cases = [(0, 10), (1000, 5000), (n - 5, n), (n - 5, n + 100), (n, n + 10), (7, 7)]
    for start, end in cases:
        got = await store.get_range(key, start, end)
        _expect(got == data[start:end], f"get_range({start}, {end}) returned {len(got)} wrong bytes")
    spans = [(0, 1), (50_000, 50_010), (n - 10, n), (10, 20)]
    got_many = await store.get_ranges(key, spans)
    _expect(got_many == [data[s:e] for s, e in spans], f"get_ranges({spans}) returned wrong bytes")
    return f"{len(cases) + 1} ranged reads of a {n}-byte object returned exactly the expected bytes"


async def _conditional_writes(store: ObjectStore, base: str) -> tuple[str, bool]:
    """Returns (detail, etags supported)."""
    key = f"{base}cond/object"
    first = await store.put(key, b"one", PutMode.CREATE)
    try:
        await store.put(key, b"two", PutMode.CREATE)
        raise _CheckFailed("a create-if-absent PUT of an existing key succeeded")
    except AlreadyExists:
        pass
    _expect(await store.get(key) == b"one", "a refused create-if-absent PUT changed the object")
    etag = first.etag or (await store.head(key)).etag
    if etag is None:
        return "create-if-absent works; the store reports no etags, so If-Match was not checked", False
    try:
        await store.put(key, b"three", IfMatch(etag + "x" if not etag.endswith('"') else etag[:-1] + 'x"'))
        raise _CheckFailed("an If-Match PUT with a wrong etag succeeded")
    except PreconditionFailed:
        pass
    try:
        await store.put(f"{base}cond/missing", b"x", IfMatch(etag))
        raise _CheckFailed("an If-Match PUT of a missing key succeeded")
    except PreconditionFailed:
        pass
    await _expect_missing(store, f"{base}cond/missing", "a key whose If-Match PUT was refused")
    await store.put(key, b"four", IfMatch(etag))
    _expect(
        await store.get(key) == b"four", "an If-Match PUT with the current etag did not replace the object"
    )
    try:
        await store.put(key, b"five", IfMatch(etag))
        raise _CheckFailed("an If-Match PUT with an etag that was current before the last write succeeded")
    except PreconditionFailed:
        pass
    return "create-if-absent and If-Match accept and refuse exactly as S3 does", True


async def _clock(store: ObjectStore, max_skew: float) -> CheckResult:
    before = time.time()
    store_now = await store.now()
    after = time.time()
    stamp = store_now.timestamp()
    resolution = 1.0 if store_now.microsecond == 0 else 0.0  # S3's Last-Modified is whole seconds
    low, high = stamp - after, stamp + resolution - before  # the true skew lies in [low, high]
    skew = 0.0 if low <= 0 <= high else (low if low > 0 else high)
    measured = (low + high) / 2
    text = f"store clock {measured:+.3f} s from this machine's (uncertainty ±{(high - low) / 2:.3f} s)"
    if abs(skew) > max_skew:
        return CheckResult(
            "clock",
            "warn",
            f"{text}: more than {max_skew:g} s. Check NTP on this machine and the store; "
            "indexer.gc_grace_secs must exceed the skew by a wide margin",
        )
    return CheckResult("clock", "pass", text)


async def _cleanup(store: ObjectStore, base: str) -> int:
    keys = [m.key async for m in store.list(base)]
    for key in keys:
        with contextlib.suppress(StorageError):
            await store.delete(key)
    return len(keys)


# --- the race --------------------------------------------------------------------------------

Outcome = tuple[str, str, str]
"""(``won`` | ``lost`` | ``error``, payload written, error message)."""


@dataclass(frozen=True)
class RaceTask:
    op: Literal["create", "if-match"]
    key: str
    round: int
    etag: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "key": self.key, "round": self.round, "etag": self.etag}

    @staticmethod
    def from_json(d: dict[str, Any]) -> RaceTask:
        return RaceTask(op=d["op"], key=str(d["key"]), round=int(d["round"]), etag=d.get("etag"))


async def _attempt(store: ObjectStore, task: RaceTask, payload: bytes) -> Outcome:
    text = payload.decode()
    try:
        if task.op == "create":
            await store.put(task.key, payload, PutMode.CREATE)
        else:
            await store.put(task.key, payload, IfMatch(task.etag or ""))
    except (AlreadyExists, PreconditionFailed):
        return ("lost", text, "")
    except StorageError as e:
        return ("error", text, f"{type(e).__name__}: {e}")
    return ("won", text, "")


class ThreadRacers:
    """``count`` threads, each with its own event loop, that attempt each task at the same moment."""

    def __init__(self, store: ObjectStore, count: int, tag: str, timeout: float) -> None:
        self._store = store
        self._tag = tag
        self._count = count
        self._start = threading.Barrier(count + 1, timeout=timeout)
        self._done = threading.Barrier(count + 1, timeout=timeout)
        self._task: RaceTask | None = None
        self._results: list[Outcome | None] = [None] * count
        self._spans: list[tuple[float, float]] = [(0.0, 0.0)] * count
        self.contended = False  # whether two or more of these threads' PUTs of the last round overlapped
        self._threads = [
            threading.Thread(target=self._run, args=(i,), name=f"lagoon-doctor-{tag}-{i}", daemon=True)
            for i in range(count)
        ]
        for t in self._threads:
            t.start()

    def _run(self, index: int) -> None:
        loop = asyncio.new_event_loop()
        try:
            while True:
                self._start.wait()
                task = self._task
                if task is None:
                    return
                payload = f"{self._tag}/{index}/{task.round}/{task.op}/{secrets.token_hex(8)}".encode()
                began = time.monotonic()
                try:
                    self._results[index] = loop.run_until_complete(_attempt(self._store, task, payload))
                except Exception as e:  # a bug in a store wrapper must not hang the barrier
                    self._results[index] = ("error", payload.decode(), f"{type(e).__name__}: {e}")
                self._spans[index] = (began, time.monotonic())
                self._done.wait()
        except threading.BrokenBarrierError:
            return
        finally:
            loop.close()

    def race(self, task: RaceTask) -> list[Outcome]:
        self._results = [None] * self._count
        self._task = task
        self._start.wait()
        self._done.wait()
        self.contended = _overlapping(self._spans)
        return [r if r is not None else ("error", "", "no result") for r in self._results]

    def close(self) -> None:
        self._task = None
        with contextlib.suppress(threading.BrokenBarrierError):
            self._start.wait(timeout=5)
        self._start.abort()
        self._done.abort()
        for t in self._threads:
            t.join(timeout=5)


def _overlapping(spans: Sequence[tuple[float, float]]) -> bool:
    """Whether two of the (start, end) intervals overlap."""
    ordered = sorted(spans)
    return any(b[0] < a[1] for a, b in itertools.pairwise(ordered))


class PeerError(Exception):
    """The second racing process failed to start or to answer."""


class PeerProcess:
    """The second racing process (``python -m lagoon.engine.ops.doctor_peer``), driven over pipes."""

    def __init__(
        self, settings: StorageSettings, threads: int, timeout: float, switch_interval: float | None
    ) -> None:
        self._timeout = timeout
        env = dict(os.environ)
        package_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "lagoon.engine.ops.doctor_peer"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
            env=env,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stderr: list[str] = []
        assert self._proc.stdout is not None and self._proc.stderr is not None
        self._readers = [
            threading.Thread(target=self._pump, args=(self._proc.stdout, self._lines), daemon=True),
            threading.Thread(target=self._drain, args=(self._proc.stderr,), daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        self._send(
            {
                "storage": settings.model_dump(mode="json"),
                "threads": threads,
                "timeout": timeout,
                "switch_interval": switch_interval,
            }
        )
        reply = self._receive()
        if not reply.get("ready"):
            raise PeerError(f"unexpected greeting {reply!r}")

    @staticmethod
    def _pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
        for line in stream:
            lines.put(line)
        lines.put(None)

    def _drain(self, stream: IO[str]) -> None:
        for line in stream:
            self._stderr.append(line.rstrip())

    def _send(self, message: dict[str, Any]) -> None:
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(json.dumps(message) + "\n")
            self._proc.stdin.flush()
        except OSError as e:
            raise PeerError(f"cannot talk to the second process: {e}; {self._last_error()}") from None

    def _receive(self) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=self._timeout)
        except queue.Empty:
            raise PeerError(f"the second process did not answer within {self._timeout:g} s") from None
        if line is None:
            self._proc.wait(timeout=5)
            raise PeerError(f"the second process exited ({self._proc.returncode}): {self._last_error()}")
        value = json.loads(line)
        if not isinstance(value, dict):
            raise PeerError(f"unexpected answer {line!r}")
        return value

    def _last_error(self) -> str:
        time.sleep(0.05)
        return " | ".join(self._stderr[-5:]) or "no error output"

    def start(self, task: RaceTask) -> None:
        self._send(task.to_json())

    def finish(self) -> list[Outcome]:
        reply = self._receive()
        return [(str(s), str(p), str(m)) for s, p, m in reply["outcomes"]]

    def close(self) -> None:
        with contextlib.suppress(PeerError, OSError, ValueError):
            self._send({"op": "stop"})
        with contextlib.suppress(OSError, ValueError):
            if self._proc.stdin is not None:
                self._proc.stdin.close()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        for reader in self._readers:
            reader.join(timeout=5)
        for stream in (self._proc.stdout, self._proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


@dataclass(frozen=True, slots=True)
class RoundVerdict:
    """How one race round went: ``kept`` the guarantee, ``broken`` it (``what`` says how), or
    ``inconclusive`` (every writer erred, so the round cannot tell)."""

    kind: Literal["kept", "broken", "inconclusive"]
    what: str = ""


KEPT = RoundVerdict("kept")
INCONCLUSIVE = RoundVerdict("inconclusive")


def _broken(what: str) -> RoundVerdict:
    return RoundVerdict("broken", what)


def _who(payload: str) -> str:
    return "/".join(payload.split("/")[:2]) or "?"


@dataclass
class _RaceTally:
    rounds: int = 0
    contended: int = 0
    violations: list[str] = field(default_factory=list)
    inconclusive: int = 0
    errors: int = 0
    error_examples: list[str] = field(default_factory=list)

    def record(
        self, round_no: int, outcomes: Sequence[Outcome], content: bytes | None, before: bytes | None
    ) -> None:
        self.rounds += 1
        verdict = judge_round(outcomes, content, before)
        errors = [o for o in outcomes if o[0] == "error"]
        self.errors += len(errors)
        if errors and len(self.error_examples) < 3:
            self.error_examples.append(errors[0][2][:200])
        if verdict.kind == "inconclusive":
            self.inconclusive += 1
        elif verdict.kind == "broken":
            self.violations.append(f"round {round_no}: {verdict.what}")


def judge_round(outcomes: Sequence[Outcome], content: bytes | None, before: bytes | None) -> RoundVerdict:
    """Whether the round kept the guarantee, broke it (and how), or cannot tell (errors hide it).

    ``content`` is the key's bytes after the round (None = missing); ``before`` its bytes before
    (None for a create round).
    """
    winners = [p for s, p, _ in outcomes if s == "won"]
    losers = {p for s, p, _ in outcomes if s == "lost"}
    erred = {p for s, p, _ in outcomes if s == "error"}
    stored = content.decode(errors="replace") if content is not None else None
    if len(winners) > 1:
        return _broken(f"{len(winners)} writers won ({', '.join(sorted(_who(w) for w in winners))})")
    if winners:
        if stored is None:
            return _broken(f"{_who(winners[0])} won but the key is missing afterwards")
        if stored != winners[0]:
            return _broken(f"{_who(winners[0])} won but the key holds {_who(stored)}'s bytes (a lost update)")
        return KEPT
    if stored in erred:
        return KEPT  # an ambiguous attempt landed: fine
    if stored in losers:
        return _broken(f"{_who(stored)} was told it lost, yet its bytes are stored")
    if erred:
        return INCONCLUSIVE
    if content is None or (before is not None and content == before):
        return _broken("every writer lost, yet nobody else wrote the key")
    return _broken(f"nobody won, yet the key holds unexpected bytes {stored!r:.60}")


def _race(store: ObjectStore, options: DoctorOptions, base: str, etags: bool) -> list[CheckResult]:
    loop = asyncio.new_event_loop()
    racers: ThreadRacers | None = None
    peer: PeerProcess | None = None
    creates, matches = _RaceTally(), _RaceTally()
    writers = options.threads
    old_interval = sys.getswitchinterval()
    where = f"{options.threads} threads in this process"

    def run(coro: Awaitable[Any]) -> Any:
        return loop.run_until_complete(coro)

    async def content_of(key: str) -> bytes | None:
        try:
            return await store.get(key)
        except ObjectNotFound:
            return None

    def one_round(task: RaceTask, tally: _RaceTally) -> list[Outcome]:
        assert racers is not None
        if peer is not None:
            peer.start(task)
        outcomes = racers.race(task)
        tally.contended += racers.contended
        if peer is not None:
            outcomes += peer.finish()
        return outcomes

    try:
        if options.peer is not None:
            try:
                peer = PeerProcess(
                    options.peer, options.threads, options.timeout_secs, options.switch_interval
                )
            except (PeerError, OSError) as e:
                detail = f"could not start the second racing process: {e}"
                return [
                    CheckResult("create-race", "fail", detail),
                    CheckResult("if-match-race", "fail", detail),
                ]
            writers += options.threads
            where += f" + {options.threads} in a second process"
        else:
            where += ", no second process"
        racers = ThreadRacers(store, options.threads, "main", options.timeout_secs)
        if options.switch_interval is not None:
            sys.setswitchinterval(options.switch_interval)
        for r in range(options.rounds):
            key = f"{base}race/{r:06d}"
            outcomes = one_round(RaceTask("create", key, r), creates)
            created = run(content_of(key))
            creates.record(r, outcomes, created, None)
            if not etags or created is None:
                continue
            etag = run(store.head(key)).etag
            if etag is None:
                continue
            outcomes = one_round(RaceTask("if-match", key, r, etag), matches)
            matches.record(r, outcomes, run(content_of(key)), created)
    except (PeerError, threading.BrokenBarrierError, StorageError) as e:
        detail = f"the race could not finish: {type(e).__name__}: {e}"
        return [CheckResult("create-race", "fail", detail), CheckResult("if-match-race", "fail", detail)]
    finally:
        sys.setswitchinterval(old_interval)
        if racers is not None:
            racers.close()
        if peer is not None:
            peer.close()
        loop.close()
    out = [_verdict("create-race", creates, writers, where)]
    if etags:
        out.append(_verdict("if-match-race", matches, writers, where))
    else:
        out.append(CheckResult("if-match-race", "skip", "the store reports no etags"))
    return out


def _verdict(name: str, tally: _RaceTally, writers: int, where: str) -> CheckResult:
    head = f"{tally.rounds} rounds x {writers} writers ({where})"
    errors = ""
    if tally.errors:
        errors = f"; {tally.errors} attempts failed with store errors (e.g. {tally.error_examples[0]})"
    if tally.violations:
        shown = "; ".join(tally.violations[:5])
        more = f"; and {len(tally.violations) - 5} more" if len(tally.violations) > 5 else ""
        return CheckResult(
            name, "fail", f"{head}: {len(tally.violations)} rounds broke the guarantee: {shown}{more}{errors}"
        )
    if tally.rounds and tally.inconclusive > INCONCLUSIVE_LIMIT * tally.rounds:
        return CheckResult(
            name, "fail", f"{head}: {tally.inconclusive} rounds inconclusive (every writer erred){errors}"
        )
    if tally.rounds == 0:
        return CheckResult(name, "skip", "no rounds ran")
    confidence = _confidence(tally.contended)
    scarce = (
        f" too little contention ({MIN_CONTENDED_ROUNDS} contended rounds wanted; run more --rounds);"
        if tally.contended < MIN_CONTENDED_ROUNDS
        else ""
    )
    return CheckResult(
        name,
        "warn",
        f"{head}: exactly one winner in every round, but inconclusive:{scarce} {confidence}; a race "
        "can show that conditional writes are broken, never that they are atomic (a check-then-act "
        f"store such as moto passes it most of the time){errors}",
        inconclusive=True,
    )


def _confidence(contended: int) -> str:
    """What ``contended`` rounds without a violation rule out (at ``DETECTION_PROBABILITY``)."""
    if contended == 0:
        return "no round was contended, so the race proves nothing"
    rate = 1 - (1 - DETECTION_PROBABILITY) ** (1 / contended)
    return (
        f"{contended} contended rounds: a store that let two writers win in {rate:.1%} or more of "
        f"contended rounds would have failed with {DETECTION_PROBABILITY:.0%} probability"
    )


# --- entry point -----------------------------------------------------------------------------


def run_doctor(store: ObjectStore, options: DoctorOptions | None = None, *, target: str = "") -> DoctorReport:
    """Run every check against ``store`` (blocking; uses its own event loops and threads).

    ``options.peer`` gives the settings the second racing process opens its own store with; it
    must name the same store as ``store`` (for the memory backend there is no second process).
    """
    options = options or DoctorOptions()
    if options.rounds < 1 or options.threads < 1:
        raise ValueError("rounds and threads must be >= 1")
    report = DoctorReport(target or type(store).__name__)
    base = f"{DOCTOR_PREFIX}{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}-{secrets.token_hex(4)}/"
    loop = asyncio.new_event_loop()
    etags = False
    try:
        steps: list[tuple[str, Callable[[], Awaitable[str]]]] = [
            ("read-after-write", lambda: _read_after_write(store, base)),
            ("list-after-write", lambda: _list_after_write(store, base)),
            ("range-reads", lambda: _range_reads(store, base)),
        ]
        for name, step in steps:
            report.checks.append(_run_check(loop, name, step))

        async def conditional() -> str:
            nonlocal etags
            detail, etags = await _conditional_writes(store, base)
            return detail

        report.checks.append(_run_check(loop, "conditional-writes", conditional))
        report.checks += _race(store, options, base, etags)
        try:
            report.checks.append(loop.run_until_complete(_clock(store, options.max_skew_secs)))
        except StorageError as e:
            report.checks.append(CheckResult("clock", "fail", f"now() failed: {type(e).__name__}: {e}"))
    finally:
        try:
            loop.run_until_complete(_cleanup(store, base))
        except StorageError as e:
            report.checks.append(
                CheckResult("cleanup", "warn", f"could not delete the test objects under {base}: {e}")
            )
        loop.close()
    return report


def _run_check(loop: asyncio.AbstractEventLoop, name: str, step: Callable[[], Awaitable[str]]) -> CheckResult:
    try:
        detail = loop.run_until_complete(step())
    except _CheckFailed as e:
        return CheckResult(name, "fail", str(e))
    except StorageError as e:
        return CheckResult(name, "fail", f"store error: {type(e).__name__}: {e}")
    return CheckResult(name, "pass", detail)


# --- the second process ----------------------------------------------------------------------


def peer_main(stdin: IO[str] | None = None, stdout: IO[str] | None = None) -> int:
    """The second racing process: read the settings, open the store, race on command."""
    from prometheus_client import CollectorRegistry

    from lagoon.storage.factory import open_store

    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    init = json.loads(stdin.readline())
    settings = StorageSettings.model_validate(init["storage"])
    store = open_store(settings, metrics_registry=CollectorRegistry())
    if init.get("switch_interval"):
        sys.setswitchinterval(float(init["switch_interval"]))
    racers = ThreadRacers(store, int(init["threads"]), "peer", float(init["timeout"]))

    def reply(value: dict[str, Any]) -> None:
        stdout.write(json.dumps(value) + "\n")
        stdout.flush()

    reply({"ready": True})
    try:
        for line in stdin:
            message = json.loads(line)
            if message.get("op") == "stop":
                break
            reply({"outcomes": racers.race(RaceTask.from_json(message))})
    finally:
        racers.close()
        asyncio.run(store.close())
    return 0


__all__ = [
    "CHECKS",
    "DEFAULT_MAX_SKEW_SECS",
    "DEFAULT_ROUNDS",
    "DEFAULT_THREADS",
    "DOCTOR_PREFIX",
    "CheckResult",
    "DoctorOptions",
    "DoctorReport",
    "PeerError",
    "PeerProcess",
    "RaceTask",
    "RoundVerdict",
    "ThreadRacers",
    "judge_round",
    "peer_main",
    "run_doctor",
]
