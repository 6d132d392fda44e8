"""Commit routing: the serving processes of a node hand each namespace's validated writes to one
of them, its owner, which group-commits them all (docs/rfcs/0010-commit-routing.md).

A node runs several serving processes (``server.processes``). Each used to group-commit the
writes it received itself, taking turns per namespace with the others (``engine/nodelock.py``):
every turn switch cost the other's whole commit plus reading and folding its entry, and commits
strictly alternated. With routing, the process that receives a write still parses and validates
it (the CPU-heavy part stays spread over the cores), then sends the ``ValidatedWrite`` over a
Unix socket to the namespace's owner (a stable hash of org and namespace over the serving
processes); the owner submits it to its own committer, where it joins the group that is forming
with every other write to that namespace, and sends the acknowledgement (or the error) back.
One committer per namespace per node: no turn switches, one WAL PUT per group.

Correctness never depends on the routing: every commit is still a create-if-absent of the next
WAL slot, and any process may commit any namespace.

- Owner unreachable (its socket refuses: restarting, not started, gone): the receiver commits the
  write itself (``Fallback``), in turn with any other committer (nodelock).
- Owner stopping (draining): it answers every write it has taken, answers ``closed`` to those
  it has not (and, last, says goodbye: nothing unanswered was taken); the receiver commits those
  itself.
- Owner dies after taking a write: the connection breaks before the answer. The write may or may
  not have committed, exactly as when a single-process server dies mid-commit: the receiver
  answers 503 (retry). Nothing was acknowledged, so nothing acknowledged is lost.
- The receiver validated against the schema it knows; the owner checks that it is the schema it
  commits on and otherwise answers ``stale`` with its own: the receiver validates again.

Frames are a 4-byte little-endian length and a pickle (protocol 5); the socket lives in the
node's private folder (mode 0700, created by the supervisor), so only the node's own processes
reach it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import os
import pickle
import struct
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from lagoon.engine.nodelock import PROCESS_ENV
from lagoon.errors import LagoonError, Unavailable
from lagoon.metrics import ROUTED_WRITES
from lagoon.schema import Schema
from lagoon.wire.write import ValidatedWrite

RETRY_CONNECT_SECS = 1.0
"""After an owner refused a connection, writes are committed locally for this long before the
next attempt to reach it (a restarting owner is back within about a second)."""

_LEN = struct.Struct("<I")
_GOODBYE = -1  # the number of the owner's last frame on a connection (it stopped)
MAX_FRAME = 1 << 30


class Fallback(Exception):
    """The owner did not take the write (unreachable or stopping): commit it locally."""


class Stale(Exception):
    """The owner commits on another schema than the write was validated against: validate again
    against ``schema`` (the owner's, at WAL ``head``)."""

    def __init__(self, schema: Schema, head: int) -> None:
        super().__init__("stale schema")
        self.schema, self.head = schema, head


Handler = Callable[[str, str, ValidatedWrite, Schema], Awaitable[dict[str, Any]]]
"""The owner's side: commit ``(org, namespace, request, schema it was validated against)``;
raises ``Stale`` (with the owner's schema) or a ``LagoonError``; returns the acknowledgement."""


def owner_index(org: str, namespace: str, processes: int) -> int:
    """The serving process that commits ``namespace`` (stable across processes and restarts)."""
    digest = hashlib.blake2b(f"{org}\0{namespace}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % processes


async def _read_frame(reader: asyncio.StreamReader) -> Any:
    (size,) = _LEN.unpack(await reader.readexactly(_LEN.size))
    if size > MAX_FRAME:
        raise ConnectionError(f"frame of {size} bytes")
    return pickle.loads(await reader.readexactly(size))


def _frame(message: Any) -> bytes:
    data = pickle.dumps(message, protocol=5)
    return _LEN.pack(len(data)) + data


class _Link:
    """One connection to an owner: requests multiplexed by number, answered in any order."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.pending: dict[int, asyncio.Future[tuple[str, Any]]] = {}
        self.numbers = itertools.count()
        self.broken = False
        self.task = asyncio.create_task(self._answers())

    async def _answers(self) -> None:
        try:
            while True:
                number, kind, payload = await _read_frame(self.reader)
                if number == _GOODBYE:  # the owner stopped: what it has not answered it did not take
                    self.broken = True
                    for future in self.pending.values():
                        if not future.done():
                            future.set_result(("closed", None))
                    return
                answered = self.pending.pop(number, None)
                if answered is not None and not answered.done():
                    answered.set_result((kind, payload))
        except (ConnectionError, asyncio.IncompleteReadError, OSError, pickle.UnpicklingError, EOFError):
            pass
        finally:
            self.broken = True
            for future in self.pending.values():
                if not future.done():
                    future.set_result(("broken", None))
            self.pending.clear()
            self.writer.close()

    async def call(self, message: tuple[Any, ...]) -> tuple[str, Any]:
        number = next(self.numbers)
        try:
            frame = _frame((number, *message))
        except (pickle.PicklingError, TypeError, AttributeError) as e:
            raise Fallback() from e  # a request holding something that does not pickle: commit it here
        future: asyncio.Future[tuple[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[number] = future
        self.writer.write(frame)
        await self.writer.drain()
        return await future

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.task


class CommitRouter:
    """This serving process's end of the routing: it forwards the writes of namespaces another
    process owns, and serves the writes the others forward for those it owns."""

    def __init__(self, folder: str | os.PathLike[str], index: int, processes: int) -> None:
        self.folder = Path(folder)
        self.index, self.processes = index, processes
        self._server: asyncio.AbstractServer | None = None
        self._handler: Handler | None = None
        self._links: dict[int, _Link] = {}
        self._connecting: dict[int, asyncio.Lock] = {}
        self._unreachable_until: dict[int, float] = {}
        self._taken: set[asyncio.Task[Any]] = set()
        self._peers: set[asyncio.StreamWriter] = set()  # connections of the other processes
        self._closing = False
        self.counts = dict.fromkeys(("forwarded", "served", "stale", "fallback", "unknown"), 0)

    def _count(self, outcome: str) -> None:
        self.counts[outcome] += 1
        ROUTED_WRITES.labels(outcome=outcome).inc()

    def path(self, index: int) -> Path:
        return self.folder / f"{index}.sock"

    def owns(self, org: str, namespace: str) -> bool:
        return owner_index(org, namespace, self.processes) == self.index

    # -- owner side --------------------------------------------------------------------------------

    async def start(self, handler: Handler) -> None:
        self._handler = handler
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.path(self.index)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # left by a previous instance of this process that died
        self._server = await asyncio.start_unix_server(self._serve, path=str(path))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._peers.add(writer)
        try:
            while True:
                number, org, namespace, request, schema = await _read_frame(reader)
                if self._closing:
                    writer.write(_frame((number, "closed", None)))
                    continue
                task = asyncio.create_task(self._take(writer, number, org, namespace, request, schema))
                self._taken.add(task)
                task.add_done_callback(self._taken.discard)
        except (ConnectionError, asyncio.IncompleteReadError, OSError, pickle.UnpicklingError, EOFError):
            pass
        finally:
            self._peers.discard(writer)
            writer.close()

    async def _take(
        self,
        writer: asyncio.StreamWriter,
        number: int,
        org: str,
        ns: str,
        request: ValidatedWrite,
        schema: Schema,
    ) -> None:
        assert self._handler is not None
        self._count("served")
        answer: tuple[str, Any]
        try:
            answer = ("ok", await self._handler(org, ns, request, schema))
        except Stale as e:
            answer = ("stale", (e.schema, e.head))
        except LagoonError as e:
            answer = ("error", e)
        except Exception as e:  # a bug: the receiver answers 503 as for any failed commit
            answer = ("error", Unavailable("commit failed; retry", detail=repr(e)))
        try:
            frame = _frame((number, *answer))
        except (pickle.PicklingError, TypeError, AttributeError) as e:  # an error that does not pickle
            frame = _frame((number, "error", Unavailable("commit failed; retry", detail=repr(e))))
        with contextlib.suppress(ConnectionError, OSError):
            writer.write(frame)

    # -- receiver side -----------------------------------------------------------------------------

    async def forward(
        self, org: str, namespace: str, request: ValidatedWrite, schema: Schema
    ) -> dict[str, Any]:
        """Commit through the owner. Raises ``Fallback`` when the owner did not take the write,
        ``Stale`` when it must be validated again, the owner's ``LagoonError`` when it refused
        or failed it, and ``Unavailable`` when the owner went away with the write (its outcome
        unknown)."""
        owner = owner_index(org, namespace, self.processes)
        link = await self._link(owner)
        if link is None:
            self._count("fallback")
            raise Fallback()
        try:
            kind, payload = await link.call((org, namespace, request, schema))
        except Fallback:
            self._count("fallback")
            raise
        except (ConnectionError, OSError):
            kind, payload = "broken", None
        if kind == "ok":
            self._count("forwarded")
            return dict(payload)
        if kind == "stale":
            self._count("stale")
            raise Stale(*payload)
        if kind == "error":
            raise payload
        if kind == "closed":  # the owner is stopping: the next writes go local at once
            self._links.pop(owner, None)
            self._unreachable_until[owner] = time.monotonic() + RETRY_CONNECT_SECS
            self._count("fallback")
            raise Fallback()
        self._count("unknown")
        raise Unavailable(
            "the process committing this namespace stopped before answering; the write may or may "
            "not have been committed: retry",
            retry_after=1.0,
        )

    async def _link(self, owner: int) -> _Link | None:
        link = self._links.get(owner)
        if link is not None and not link.broken:
            return link
        if self._closing or time.monotonic() < self._unreachable_until.get(owner, 0.0):
            return None
        lock = self._connecting.setdefault(owner, asyncio.Lock())
        async with lock:
            link = self._links.get(owner)
            if link is not None and not link.broken:
                return link
            try:
                reader, writer = await asyncio.open_unix_connection(str(self.path(owner)))
            except OSError:
                self._unreachable_until[owner] = time.monotonic() + RETRY_CONNECT_SECS
                return None
            link = self._links[owner] = _Link(reader, writer)
            return link

    # -- stopping ------------------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop taking forwarded writes (later ones are answered ``closed``: their receivers
        commit them), let those taken finish and answer, then close every connection."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        if self._taken:
            await asyncio.gather(*list(self._taken), return_exceptions=True)
        for link in self._links.values():
            await link.close()
        self._links.clear()
        for peer in list(self._peers):  # every write taken is answered: the rest were not taken
            with contextlib.suppress(ConnectionError, OSError):
                peer.write(_frame((_GOODBYE, "closed", None)))
            peer.close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            with contextlib.suppress(FileNotFoundError):
                self.path(self.index).unlink()


def from_environment(node_dir: str | None) -> CommitRouter | None:
    """The router of a serving process started by the supervisor (None otherwise, or alone)."""
    spec = os.environ.get(PROCESS_ENV)
    if not node_dir or not spec:
        return None
    index, count = (int(x) for x in spec.split("/"))
    if count < 2:
        return None
    return CommitRouter(Path(node_dir) / "route", index, count)


__all__ = ["PROCESS_ENV", "CommitRouter", "Fallback", "Stale", "from_environment", "owner_index"]
