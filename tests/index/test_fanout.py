"""``Fanout.map``: results in call order, ``width`` calls at once and never more, the caller's
context in every worker, the first failure (in call order) raised after all calls ended, and
calls still answered (in the caller's thread) once the pool is closed."""

from __future__ import annotations

import contextvars
import threading

import pytest

from lagoon.index.fanout import Fanout

WHO = contextvars.ContextVar("who", default="nobody")


def test_width_calls_run_at_once_and_never_more() -> None:
    fan = Fanout(3)
    barrier = threading.Barrier(3, timeout=30)  # passes only when 3 calls wait in it together
    lock = threading.Lock()
    running, most = 0, 0

    def call(i: int) -> int:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        if i < 3:
            barrier.wait()
        with lock:
            running -= 1
        return i * i

    assert fan.map([lambda i=i: call(i) for i in range(9)]) == [i * i for i in range(9)]
    assert most == 3
    fan.close()


def test_context_errors_and_closing() -> None:
    fan = Fanout(4)
    WHO.set("query 7")
    assert fan.map([lambda: WHO.get() for _ in range(6)]) == ["query 7"] * 6
    done: list[int] = []

    def call(i: int) -> int:
        done.append(i)
        if i in (2, 4):
            raise ValueError(f"part {i}")
        return i

    with pytest.raises(ValueError, match="part 2"):
        fan.map([lambda i=i: call(i) for i in range(6)])
    assert sorted(done) == list(range(6))  # every call ran before the failure was raised
    fan.close()
    caller = threading.get_ident()
    assert fan.map([threading.get_ident for _ in range(3)]) == [caller] * 3
    assert Fanout(1).map([lambda: 1, lambda: 2]) == [1, 2]
