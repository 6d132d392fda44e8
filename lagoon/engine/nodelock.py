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

The lock is polled without blocking (every 0.5-2 ms), so a cancelled waiter never leaves a
thread blocked in the kernel.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

NODE_DIR_ENV = "_LAGOON_NODE_DIR"
"""Set by the supervisor for its children: the node's private folder (``locks/`` inside)."""


class NodeCommitLocks:
    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._fds: dict[str, int] = {}

    def _fd(self, key: str) -> int:
        fd = self._fds.get(key)
        if fd is None:
            name = hashlib.sha256(key.encode()).hexdigest()[:32] + ".lock"
            fd = self._fds[key] = os.open(self.folder / name, os.O_RDWR | os.O_CREAT, 0o600)
        return fd

    @contextlib.asynccontextmanager
    async def turn(self, key: str) -> AsyncIterator[None]:
        fd = self._fd(key)
        delay = 0.0005
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                await asyncio.sleep(delay)
                delay = min(0.002, delay * 2)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def close(self) -> None:
        for fd in self._fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()


def from_environment() -> NodeCommitLocks | None:
    folder = os.environ.get(NODE_DIR_ENV)
    return NodeCommitLocks(Path(folder) / "locks") if folder else None


__all__ = ["NODE_DIR_ENV", "NodeCommitLocks", "from_environment"]
