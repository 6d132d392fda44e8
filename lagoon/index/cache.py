"""``OnceCache``: values built at most once per key, shared by concurrent queries.

Document sources (live.py, engine/sources.py, segment/read.py) are immutable, so anything derived
from them (vector matrices, postings, ranks, row maps) can be computed once and reused. Each key
has its own lock: two threads asking for the same value build it once, different keys in parallel.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class OnceCache:
    """Build-once values keyed by (kind, name); one lock per key."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key_locks: dict[tuple[str, str], threading.Lock] = {}
        self._values: dict[tuple[str, str], Any] = {}

    def get(self, kind: str, name: str, build: Callable[[], T]) -> T:
        key = (kind, name)
        try:
            return self._values[key]  # type: ignore[no-any-return]
        except KeyError:
            pass
        with self._lock:
            lock = self._key_locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._values:
                self._values[key] = build()
            return self._values[key]  # type: ignore[no-any-return]
