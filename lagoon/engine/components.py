"""Components injected into the engine: clock, randomness, failpoints. No globals.

Tests replace them to make runs deterministic (a manual clock, a seeded rng) and to crash a node
at a named point (failpoints). Production code calls ``failpoints.hit(name)`` at protocol steps;
an unarmed failpoint costs one dict lookup.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field


class Clock:
    """Wall clock in ms (timestamps stored in objects) and a monotonic clock in seconds."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def monotonic(self) -> float:
        return time.monotonic()


class CrashPoint(Exception):
    """Raised by an armed failpoint: the test treats the node as crashed at that point."""


class FailPoints:
    """Named failpoints. ``arm(name, action)``: action is called on hit (raise to crash)."""

    def __init__(self) -> None:
        self._armed: dict[str, Callable[[], None]] = {}

    def arm(self, name: str, action: Callable[[], None] | None = None) -> None:
        def crash() -> None:
            raise CrashPoint(name)

        self._armed[name] = action or crash

    def disarm(self, name: str | None = None) -> None:
        if name is None:
            self._armed.clear()
        else:
            self._armed.pop(name, None)

    def hit(self, name: str) -> None:
        action = self._armed.get(name)
        if action is not None:
            action()


# Every failpoint the engine declares; tests iterate over this list.
FAILPOINTS = (
    "wal.before_put",  # entry encoded, PUT not sent
    "wal.after_put",  # PUT succeeded, requests not yet acknowledged
    "wal.mid_group",  # some requests of the group resolved, others not
)


@dataclass
class Components:
    clock: Clock = field(default_factory=Clock)
    rng: random.Random = field(default_factory=lambda: random.Random(int.from_bytes(os.urandom(8), "big")))
    failpoints: FailPoints = field(default_factory=FailPoints)
    node_id: str = ""

    def __post_init__(self) -> None:
        if not self.node_id:
            self.node_id = f"node-{self.rng.getrandbits(48):012x}"

    def nonce(self) -> bytes:
        return self.rng.getrandbits(128).to_bytes(16, "big")
