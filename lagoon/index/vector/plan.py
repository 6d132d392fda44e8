"""Recall planning for one ANN query over all the parts of a snapshot (segments and the WAL tail).

The recall target is a property of the namespace's answer, not of each segment: a query at the
default must return about ``target`` of the true top-k of the whole namespace (default
``DEFAULT_RECALL_TARGET``; per namespace, the ``ann_recall_target`` setting), however the indexer
happened to cut it into segments. This module plans the probes of every part so that the merged
top-k reaches the target at the least scanning cost.

The model. Each IVF index stores a recall table measured on its own vectors at build time
(``lagoon/index/vector/ivf.py``): for neighbour-rank buckets r (the query's r-th nearest vector
*of that segment*), the number of probed clusters that finds a given share of such neighbours.
A true neighbour of the namespace that lives in part s is one of s's own top ranks, and it is
found iff the search of s reaches it, so the expected recall of the merged top-k is

    (1/k) · Σ_parts Σ_neighbours in the part  recall_s(local rank / σ_s, nprobe_s)

where σ_s is the share of the part's vectors that are candidates (live and matching the filter;
the i-th candidate neighbour is about the (i/σ)-th neighbour of all vectors when the mask is not
correlated with the vectors). Parts scanned exactly contribute recall 1.

The plan runs in two rounds:

1. **Prior.** Without knowing where the neighbours are, the i-th global neighbour lies in part s
   with probability w_s (its share of the candidates), at local rank 1 + Binomial(i - 1, w_s).
   Every part whose exact scan is cheaper than its planned probe is scanned exactly (small
   segments, the WAL tail, tiny filtered sets); the others get the smallest nprobe whose expected
   recall over that rank distribution meets the per-neighbour target left after the exact parts.
2. **Posterior.** The merged top-k of round 1 shows where the neighbours are: j_s of them came
   from part s, and j_x from exact parts. The per-neighbour target becomes
   (aim·k − j_x) / (k − j_x), and every IVF part that holds neighbours is probed further if its
   ranks 1..j_s need more clusters than round 1 gave it (a segment that holds the query's whole
   neighbourhood — data written in an order correlated with the vectors — gets the probes of a
   single-segment index; a small segment that holds one neighbour keeps its few probes).

Per-part top-k depth: every part returns its own best k (each global top-k neighbour is in its
part's top k, so the merge is exact over what the parts found); the parts differ in how deep
they *search*, not in how many rows they return.

``aim`` = target + ``AIM_MARGIN``: the planned expected recall sits a little above the target
so that the measured recall over a few dozen queries stays above it (the band the target
promises is [target, target + 0.02]). Pure: arrays in, arrays out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, Protocol

import numpy as np

DEFAULT_RECALL_TARGET = 0.95
MIN_RECALL_TARGET = 0.5
MAX_RECALL_TARGET = 1.0
AIM_MARGIN = 0.008
MIN_PART_TARGET = 0.5  # never plan an IVF part below this per-neighbour recall
EXACT_COST_PER_VECTOR = 1.0  # scanning cost units: one f32 vector
IVF_COST_PER_CODE = 0.35  # one 8-bit code in the first pass
IVF_COST_PER_CENTROID = 1.0
IVF_FIXED_COST = 1500.0  # per probed segment: Python and faiss call overhead, in vector units
EXACT_FIXED_COST = 300.0


class RecallCurve:
    """An index's recall table: ``probes[b][l]`` clusters find ``levels[l]`` of the neighbours of
    rank bucket ``b`` (ranks in ``(ranks[b-1], ranks[b]]``).

    A bucket's probes are those of its mean rank; a rank between two buckets' mean ranks is
    planned with both, weighted by its position between them in log rank (``interpolate``; the
    tables of older files, one recall@K per row, map a rank to the first row covering it). Without
    that, the 10th neighbour of a 50 % filter (all-vector rank 20.4) was planned with the probes
    of ranks 17-23, and such a query overshot its target by 0.013."""

    def __init__(
        self,
        ranks: Sequence[int],
        levels: Sequence[float],
        probes: Any,
        n_clusters: int,
        *,
        interpolate: bool = True,
    ) -> None:
        self.ranks = np.asarray(ranks, dtype=np.float64)
        lower = np.concatenate([[0.0], self.ranks[:-1]])
        self._mid = (lower + 1.0 + self.ranks) / 2.0 if interpolate else self.ranks.copy()
        self._interpolate = interpolate
        self.levels = np.asarray(levels, dtype=np.float64)
        self.probes = np.maximum(np.asarray(probes, dtype=np.float64).reshape(len(ranks), len(levels)), 1.0)
        self.n_clusters = int(n_clusters)
        b = self.probes.shape[0]
        if b >= 2:  # log-log slope of probes vs rank past the last bucket (extrapolation)
            ratio = np.log(self.probes[-1] / self.probes[-2]) / math.log(self.ranks[-1] / self.ranks[-2])
            self.slope = max(0.0, float(np.median(ratio)))
        else:
            self.slope = 1.0
        self._cache: dict[tuple[Any, ...], int] = {}

    @classmethod
    def from_meta(cls, nprobe: dict[str, Any], n_clusters: int) -> RecallCurve:
        table = nprobe.get("by_rank")
        if isinstance(table, dict):
            return cls(table["ranks"], table["levels"], table["probes"], n_clusters)
        # files without a rank table: the per-K nprobe at the file's own target, as one level
        ks = [int(k) for k in nprobe["k"]]
        ps = [[int(p)] for p in nprobe["nprobe"]]
        return cls(ks, [float(nprobe.get("target_recall", 0.97))], ps, n_clusters, interpolate=False)

    def recall(self, weights: np.ndarray, sigma: float, nprobe: float) -> float:
        """Expected share of neighbours found: ``weights[r-1]`` = share of them at candidate rank r."""
        (bidx, w), scale = self._buckets(weights, sigma)
        w = w / max(float(w.sum()), 1e-12)
        return float(
            sum(
                w[i] * np.interp(nprobe / scale[i], self.probes[bidx[i]], self.levels, left=0.0)
                for i in range(bidx.shape[0])
            )
        )

    def nprobe_for(
        self, weights: np.ndarray, sigma: float, target: float, key: tuple[Any, ...] | None = None
    ) -> int:
        """The smallest nprobe whose expected recall over ``weights`` (see ``recall``) is >= target."""
        if key is not None:
            hit = self._cache.get(key)
            if hit is not None:
                return hit
        out = self._solve(weights, sigma, target)
        if key is not None:
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[key] = out
        return out

    def _buckets(self, weights: np.ndarray, sigma: float) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
        """(bucket indices, their weights), and per bucket the probe scale for ranks past the table."""
        r = np.arange(1, weights.shape[0] + 1, dtype=np.float64) / max(sigma, 1e-9)
        b, w = self._split(r, np.asarray(weights, dtype=np.float64))
        last = self.ranks.shape[0] - 1
        rr = np.concatenate([r, r]) if self._interpolate else r
        over = np.where(rr > self.ranks[-1], rr / self.ranks[-1], 1.0)
        keys = b * 1_000_000 + np.round(np.log2(over) * 8).astype(np.int64)
        uniq, inv = np.unique(keys, return_inverse=True)
        wsum = np.bincount(inv, weights=w, minlength=uniq.shape[0])
        bidx = np.minimum(uniq // 1_000_000, last).astype(np.int64)
        scale = np.power(2.0, (uniq % 1_000_000) / 8.0) ** self.slope
        return (bidx, wsum), scale

    def _split(self, r: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Bucket and weight of each rank ``r``: the first bucket covering it, or (interpolated)
        the two buckets whose mean ranks enclose it, each ranks' weight shared in log rank."""
        last = self.ranks.shape[0] - 1
        if not self._interpolate:
            return np.minimum(np.searchsorted(self.ranks, r - 1e-9), last), weights
        mid = self._mid
        hi = np.clip(np.searchsorted(mid, r), 0, last)
        lo = np.maximum(hi - 1, 0)
        span = np.log(mid[hi] / mid[lo])
        with np.errstate(divide="ignore", invalid="ignore"):
            frac = np.where(
                span > 0, np.log(np.maximum(r, mid[lo]) / mid[lo]) / np.where(span > 0, span, 1.0), 1.0
            )
        frac = np.clip(frac, 0.0, 1.0)
        return np.concatenate([lo, hi]), np.concatenate([weights * (1.0 - frac), weights * frac])

    def _solve(self, weights: np.ndarray, sigma: float, target: float) -> int:
        (bidx, w), scale = self._buckets(weights, sigma)
        total = float(w.sum())
        if total <= 0:
            return 1
        w = w / total
        rows = self.probes[bidx] * scale[:, None]
        cand = np.unique(np.concatenate([rows.ravel(), [1.0, float(self.n_clusters)]]))
        cand = cand[cand <= self.n_clusters]
        rec = np.zeros(cand.shape[0])
        for i in range(bidx.shape[0]):
            rec += w[i] * np.interp(cand, rows[i], self.levels, left=0.0)
        ok = np.flatnonzero(rec >= target - 1e-12)
        if ok.shape[0] == 0:
            return self.n_clusters
        j = int(ok[0])
        if j == 0:
            return max(1, math.ceil(float(cand[0])))
        # linear between the breakpoints cand[j-1] (below target) and cand[j]
        lo, hi, rlo, rhi = cand[j - 1], cand[j], rec[j - 1], rec[j]
        p = lo + (hi - lo) * (target - rlo) / max(rhi - rlo, 1e-12)
        return int(min(self.n_clusters, max(1, math.ceil(p - 1e-9))))


@lru_cache(maxsize=4096)
def prior_weights(k: int, w_q: int) -> np.ndarray:
    """Share of a part's global top-k neighbours at each local rank 1..k when the part holds a
    share ``w = w_q / 64`` of the candidates and membership is independent of position: the i-th
    global neighbour is in the part with probability w, at local rank 1 + Binomial(i - 1, w)."""
    from scipy.stats import binom

    w = min(1.0, max(w_q / 64.0, 1e-6))
    out = np.zeros(k)
    r = np.arange(k)
    for i in range(1, k + 1):
        out += binom.pmf(r, i - 1, w)
    out /= out.sum()
    out.setflags(write=False)
    return out


@lru_cache(maxsize=1024)
def uniform_weights(depth: int) -> np.ndarray:
    out = np.full(max(1, depth), 1.0 / max(1, depth))
    out.setflags(write=False)
    return out


def quantize_share(w: float) -> int:
    """A share in (0, 1] as an int key for caches: 64ths, rounded up (never optimistic)."""
    return max(1, min(64, math.ceil(w * 64 - 1e-9)))


SIGMA_STEPS = 32  # candidate shares are planned in steps of 1/SIGMA_STEPS of log2 (2 %)


def quantize_sigma(sigma: float) -> float:
    """A candidate share rounded *down* to 1/``SIGMA_STEPS`` steps of log2 (never optimistic,
    at most 2 % pessimistic: a coarser step costs probes, e.g. 1/8 planned a 50 % filter as 46 %)."""
    if sigma >= 1.0:
        return 1.0
    return float(2.0 ** (math.floor(math.log2(max(sigma, 1e-9)) * SIGMA_STEPS) / SIGMA_STEPS))


def aim_for(target: float) -> float:
    return min(1.0, target + AIM_MARGIN) if target < 1.0 else 1.0


class AnnPart(Protocol):
    """One part's side of a planned ANN query (positions are the part's own)."""

    @property
    def n_cand(self) -> int:
        """Candidate vectors (live, matching the filter)."""
        ...

    @property
    def curve(self) -> RecallCurve | None:
        """The IVF's recall table, or None when the part can only be scanned exactly."""
        ...

    @property
    def sigma(self) -> float:
        """Candidates / vectors of the index."""
        ...

    def ivf_cost(self, nprobe: int) -> float: ...

    def exact_cost(self) -> float: ...

    def exact(self) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k: (positions, float64 distances), ascending."""
        ...

    def probe(self, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k of the ``nprobe`` nearest clusters (extending earlier probes of this query)."""
        ...


def plan_and_search(
    parts: Sequence[AnnPart],
    k: int,
    target: float,
    merge: Any,
) -> tuple[list[tuple[np.ndarray, np.ndarray]], dict[str, Any]]:
    """Search every part (see the module docstring); ``merge(results)`` returns, for the merged
    top-k, the index of the part each row came from. Returns per-part (positions, distances)
    and a plan summary (for explain and tests)."""
    n_total = sum(p.n_cand for p in parts)
    results: list[tuple[np.ndarray, np.ndarray]] = [(np.empty(0, np.int64), np.empty(0))] * len(parts)
    info: dict[str, Any] = {"target": target, "parts": len(parts), "exact": 0, "probes": {}, "round2": 0}
    if n_total == 0 or k <= 0:
        return results, info
    aim = aim_for(target)
    kk = min(k, n_total)
    # round 1: exact where cheaper, probes for the prior rank distribution elsewhere
    shares = [p.n_cand / n_total for p in parts]
    exact = [p.curve is None or target >= 1.0 for p in parts]
    nprobe = [0] * len(parts)
    for _ in range(2):
        w_exact = sum(s for s, e in zip(shares, exact, strict=True) if e)
        q = _part_target(aim, w_exact)
        changed = False
        for i, p in enumerate(parts):
            if exact[i] or p.n_cand == 0:
                continue
            curve = p.curve
            assert curve is not None
            sig = quantize_sigma(p.sigma)
            wq = quantize_share(shares[i])
            weights = prior_weights(kk, wq)
            nprobe[i] = curve.nprobe_for(weights, sig, q, key=("prior", kk, wq, sig, round(q, 4)))
            if p.exact_cost() <= p.ivf_cost(nprobe[i]):
                exact[i] = changed = True
        if not changed:
            break
    for i, p in enumerate(parts):
        if p.n_cand == 0:
            continue
        results[i] = p.exact() if exact[i] else p.probe(nprobe[i])
    # round 2: where the neighbours are
    src = merge(results)
    found = (
        np.bincount(np.asarray(src, dtype=np.int64), minlength=len(parts))
        if len(src)
        else np.zeros(len(parts))
    )
    got = int(found.sum())
    j_exact = int(sum(found[i] for i in range(len(parts)) if exact[i]))
    if got > j_exact:
        q2 = max(MIN_PART_TARGET, min(1.0, (aim * got - j_exact) / (got - j_exact)))
        again = False
        for i, p in enumerate(parts):
            if exact[i] or found[i] == 0:
                continue
            curve = p.curve
            assert curve is not None
            sig = quantize_sigma(p.sigma)
            depth = int(found[i])
            need = curve.nprobe_for(uniform_weights(depth), sig, q2, key=("post", depth, sig, round(q2, 4)))
            if need > nprobe[i]:
                nprobe[i] = need
                results[i] = p.probe(need)
                again = True
                info["round2"] += 1
        if again:
            merge(results)  # (the caller merges the final results itself)
    info["exact"] = int(sum(exact))
    info["probes"] = {i: nprobe[i] for i in range(len(parts)) if not exact[i] and parts[i].n_cand}
    return results, info


def _part_target(aim: float, w_exact: float) -> float:
    """Per-neighbour recall the IVF parts need when a share ``w_exact`` of candidates is exact."""
    if w_exact >= 1.0:
        return 1.0
    return max(MIN_PART_TARGET, min(1.0, (aim - w_exact) / (1.0 - w_exact)))


def ivf_cost(n_clusters: int, sizes_mean: float, nprobe: int, dims: int) -> float:
    """Scanning cost of a probe in f32-vector units (centroids + codes + fixed overhead)."""
    return IVF_FIXED_COST + IVF_COST_PER_CENTROID * n_clusters + IVF_COST_PER_CODE * nprobe * sizes_mean


def exact_cost(n_cand: int) -> float:
    return EXACT_FIXED_COST + EXACT_COST_PER_VECTOR * n_cand


__all__ = [
    "DEFAULT_RECALL_TARGET",
    "AnnPart",
    "RecallCurve",
    "aim_for",
    "exact_cost",
    "ivf_cost",
    "plan_and_search",
    "prior_weights",
    "uniform_weights",
]
