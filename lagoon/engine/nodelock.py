"""Node-local commit turns: the serving processes of one node take turns committing a namespace.

Several serving processes of a node (``server.processes``) each have their own group committer.
Their WAL slot creations are safe as they are (create-if-absent; the loser re-reads and tries the
next slot), but a committer that keeps winning never needs to re-read and starves the others:
with two processes writing one namespace, tail latency grew to seconds. ``NodeCommitLocks`` gives
them turns instead: before forming its next group, a committer takes an exclusive ``flock`` on a
file named after the namespace in a folder private to the node (created by the supervisor), and
holds it until that group's commit ends. Requests that arrive meanwhile join the next group, so
waiting for the turn only makes groups larger. The lock is advisory and local: correctness still
rests on the bucket's conditional writes (other nodes, a process without the folder).

Two things make the turns cheap and fair (measured: without them a process waited up to 0.6 s
for a turn and a third of the groups lost their slot):

- **Hand-off.** ``flock`` is not fair: the holder, releasing and asking again at once, wins over
  a waiter that polls. So a waiter holds a shared lock on a second file (``.wait``) while it
  waits, and a committer that finds someone waiting lets one other turn begin first (it waits
  for the turn counter to move, at most ``HANDOFF_WAIT_SECS``) before asking itself. Two busy
  processes therefore alternate.
- **Head hint.** The lock file holds the turn counter and the WAL head the last holder left
  (``Turn.head``). The next holder, finding a head above its own, reads those entries directly
  before it resolves its group (``NamespaceState.catch_up``), instead of building on a stale
  head, losing the slot, and re-reading the WAL. A wrong or stale hint costs at most that lost
  slot: the commit protocol does not trust it.

Locks are polled without blocking (every 0.5-2 ms), so a cancelled waiter never leaves a thread
blocked in the kernel; a process that dies releases its locks with its file descriptors.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

NODE_DIR_ENV = "_LAGOON_NODE_DIR"
"""Set by the supervisor for its children: the node's private folder (``locks/`` inside)."""

PROCESS_ENV = "_LAGOON_PROCESS"
"""Set by the supervisor for each serving process: ``"<index>/<count>"`` (read by ``routing``;
defined here, in a module that imports nothing heavy, for the supervisor)."""

HANDOFF_WAIT_SECS = 0.05
"""How long a committer that sees a waiter lets it go first, at most (a waiter that does not
take the turn by then is slow or gone: the committer asks again)."""

_RECORD = struct.Struct("<Qq")  # turns taken so far, the WAL head the last holder left (-1: none)
_POLL_FIRST_SECS, _POLL_MAX_SECS = 0.0005, 0.002


@dataclass
class Turn:
    """One committer's turn on a namespace: ``previous_head`` is what the last holder left (-1
    when unknown); the holder sets ``head`` to the namespace head it leaves behind."""

    previous_head: int
    head: int = -1


@dataclass
class _Files:
    lock: int  # the turn itself (exclusive flock) and its record
    wait: int  # shared flock held by each waiter


def _try_flock(fd: int, mode: int) -> bool:
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _read_record(fd: int) -> tuple[int, int]:
    data = os.pread(fd, _RECORD.size, 0)
    return _RECORD.unpack(data) if len(data) == _RECORD.size else (0, -1)


@contextlib.asynccontextmanager
async def _waiting(files: _Files) -> AsyncIterator[None]:
    """Be seen as a waiter (a shared lock on the ``.wait`` file) for the block. Taken without
    blocking: only a committer checking for waiters holds it exclusively, for two syscalls."""
    while not _try_flock(files.wait, fcntl.LOCK_SH):
        await asyncio.sleep(_POLL_FIRST_SECS)
    try:
        yield
    finally:
        fcntl.flock(files.wait, fcntl.LOCK_UN)


class NodeCommitLocks:
    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._files: dict[str, _Files] = {}

    def _open(self, key: str) -> _Files:
        files = self._files.get(key)
        if files is None:
            stem = hashlib.sha256(key.encode()).hexdigest()[:32]
            files = self._files[key] = _Files(
                lock=os.open(self.folder / f"{stem}.lock", os.O_RDWR | os.O_CREAT, 0o600),
                wait=os.open(self.folder / f"{stem}.wait", os.O_RDWR | os.O_CREAT, 0o600),
            )
        return files

    @contextlib.asynccontextmanager
    async def turn(self, key: str) -> AsyncIterator[Turn]:
        files = self._open(key)
        await self._let_waiter_go(files)
        await self._acquire(files)
        try:
            taken, head = _read_record(files.lock)
            turn = Turn(previous_head=head, head=head)
            os.pwrite(files.lock, _RECORD.pack(taken + 1, head), 0)
            yield turn
            os.pwrite(files.lock, _RECORD.pack(taken + 1, turn.head), 0)
        finally:
            fcntl.flock(files.lock, fcntl.LOCK_UN)

    async def _let_waiter_go(self, files: _Files) -> None:
        """If another committer is waiting for this namespace, wait until a turn begins (or
        ``HANDOFF_WAIT_SECS``) so that it is not overtaken by this one."""
        if _try_flock(files.wait, fcntl.LOCK_EX):
            fcntl.flock(files.wait, fcntl.LOCK_UN)
            return  # nobody waits
        taken, _ = _read_record(files.lock)
        give_up = time.monotonic() + HANDOFF_WAIT_SECS
        async with _waiting(files):
            while _read_record(files.lock)[0] == taken and time.monotonic() < give_up:
                await asyncio.sleep(_POLL_FIRST_SECS)

    async def _acquire(self, files: _Files) -> None:
        if _try_flock(files.lock, fcntl.LOCK_EX):
            return
        async with _waiting(files):  # others see a waiter while this one polls
            delay = _POLL_FIRST_SECS
            while not _try_flock(files.lock, fcntl.LOCK_EX):
                await asyncio.sleep(delay)
                delay = min(_POLL_MAX_SECS, delay * 2)

    def close(self) -> None:
        for files in self._files.values():
            for fd in (files.lock, files.wait):
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._files.clear()


def from_environment() -> NodeCommitLocks | None:
    folder = os.environ.get(NODE_DIR_ENV)
    return NodeCommitLocks(Path(folder) / "locks") if folder else None


__all__ = ["HANDOFF_WAIT_SECS", "NODE_DIR_ENV", "PROCESS_ENV", "NodeCommitLocks", "Turn", "from_environment"]
