"""A planned ANN search whose per-part probes of each planning round run at once.

``plan_and_search`` (``index/vector/plan.py``) asks each part for its probes one part after
another: over cold segments every probe is a blocking ranged read of cluster blocks, so a query
over ``n`` segments would wait ``n`` sequential round trips per round. ``search_at_once`` runs the
planner on stand-ins (``_Replay``) that answer the probes already computed and record the first
one that is not; the planner observes results only through its ``merge`` callback, and the
stand-ins stop the run there (``_Unknown``) as soon as a result is missing. The recorded probes,
at most one per part, were decided from real results only, so they are exactly the probes a
one-at-a-time run would make next: they run at once (``Fanout``), and the planner runs again.
With the two rounds of the planner this costs three planner runs (the planning itself is cheap
and its curves are cached) and one round trip per round; the final run answers every call from
what was computed, so its results and plan equal those of a one-at-a-time run.

A call is made at most once per part and in the planner's order, so the parts' own state (a
``ProbeSearch`` extends its probes incrementally) sees the same sequence of calls either way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from lagoon.index.fanout import Fanout
from lagoon.index.vector.plan import AnnPart, plan_and_search

Result = tuple[np.ndarray, np.ndarray]
Call = tuple[str, int]  # ("probe", nprobe) or ("exact", 0)
_MISSING: Result = (np.empty(0, np.int64), np.empty(0, np.float64))


class _Unknown(Exception):
    """The planner asked to merge results of which some are not computed yet."""


class _Replay:
    """An ``AnnPart`` that answers calls from ``done`` and records the first one it cannot."""

    def __init__(self, part: AnnPart, done: dict[Call, Result]) -> None:
        self._p, self._done = part, done
        self.n_cand, self.curve, self.sigma = part.n_cand, part.curve, part.sigma
        self.asked: Call | None = None  # the first call it could not answer

    def __getattr__(self, name: str) -> Any:
        """Anything else the planner may read of a part (pure: costs, counts) comes from it."""
        return getattr(self._p, name)

    def ivf_cost(self, nprobe: int) -> float:
        return self._p.ivf_cost(nprobe)

    def exact_cost(self) -> float:
        return self._p.exact_cost()

    def exact(self) -> Result:
        return self._answer(("exact", 0))

    def probe(self, nprobe: int) -> Result:
        return self._answer(("probe", int(nprobe)))

    def _answer(self, call: Call) -> Result:
        got = self._done.get(call)
        if got is not None:
            return got
        if self.asked is None:
            self.asked = call
        return _MISSING


def search_at_once(
    parts: Sequence[AnnPart],
    k: int,
    target: float,
    merge: Callable[[list[Result]], np.ndarray],
    fanout: Fanout,
) -> tuple[list[Result], dict[str, Any]]:
    """``plan_and_search(parts, k, target, merge)`` with each round's probes run at once."""
    done: list[dict[Call, Result]] = [{} for _ in parts]
    while True:
        replays = [_Replay(p, d) for p, d in zip(parts, done, strict=True)]
        try:
            results, info = plan_and_search(replays, k, target, _known(merge, replays))
        except _Unknown:
            results, info = [], {}
        asked = _asked(replays)
        if not asked:
            return results, info
        computed = fanout.map([_performer(parts[j], call) for j, call in asked])
        for (j, call), result in zip(asked, computed, strict=True):
            done[j][call] = result


def _known(
    merge: Callable[[list[Result]], np.ndarray], replays: Sequence[_Replay]
) -> Callable[[list[Result]], np.ndarray]:
    """``merge``, stopping the planner's run (``_Unknown``) when a result it merges is missing."""

    def known_merge(results: list[Result]) -> np.ndarray:
        if any(r.asked is not None for r in replays):
            raise _Unknown
        return merge(results)

    return known_merge


def _asked(replays: Sequence[_Replay]) -> list[tuple[int, Call]]:
    """(part index, call) of every stand-in that could not answer a call."""
    out: list[tuple[int, Call]] = []
    for j, r in enumerate(replays):
        if r.asked is not None:
            out.append((j, r.asked))
    return out


def _performer(part: AnnPart, call: Call) -> Callable[[], Result]:
    return lambda: part.exact() if call[0] == "exact" else part.probe(call[1])


__all__ = ["search_at_once"]
