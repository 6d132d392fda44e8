"""The 8-bit first pass (lagoon/index/vector/quantized.py): whatever path a probe takes
(contiguous runs, runs thinned by a sparse or dense candidate bitmap, a candidate list), scored
four rows at a time with rows prefetched ahead, it keeps exactly the best ``width`` codes by the
documented score."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from lagoon.index.vector.quantized import CodePass, sampled_count


def _setup(metric: str, n: int = 997, dims: int = 19) -> tuple[CodePass, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((n, dims)).astype(np.float32)
    if metric == "cosine_distance":
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    cp = CodePass(n, dims, metric, x.min(axis=0), x.max(axis=0))
    cp.add(0, x[:500])
    cp.add(500, x[500:])
    q = rng.standard_normal(dims).astype(np.float32)
    return cp, x, q


def _scores(cp: CodePass, q: np.ndarray) -> np.ndarray:
    """The documented score of every code, in float64 (higher = better)."""
    c = cp.codes.astype(np.float64)
    if cp.l2:
        b = q.astype(np.float64) - cp.vmin - 0.5 * cp.step
        out: np.ndarray = -((b[None, :] - cp.step[None, :] * c) ** 2).sum(axis=1)
        return out
    out = (c * (q * cp.step)[None, :]).sum(axis=1)
    return out


def _best(scores: np.ndarray, idx: np.ndarray, width: int) -> set[int]:
    order = idx[np.argsort(-scores[idx], kind="stable")]
    return {int(j) for j in order[:width]}


@pytest.mark.parametrize("metric", ["cosine_distance", "euclidean_squared"])
@pytest.mark.parametrize("share", [None, 0.03, 0.15, 0.6, 0.97])
def test_runs_keep_the_best_codes(metric: str, share: float | None) -> None:
    cp, _, q = _setup(metric)
    n = cp.codes.shape[0]
    rng = np.random.default_rng(5)
    cord = rng.permutation(n).astype(np.int64)  # cluster order -> row
    starts = np.array([0, 130, 131, 400, 990], np.int64)
    ends = np.array([97, 131, 380, 977, 997], np.int64)
    pos = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends, strict=True)])
    bitmap = None
    if share is not None:
        keep = rng.random(n) < share
        bitmap = np.packbits(keep, bitorder="little")
        pos = pos[keep[cord[pos]]]
    scores = _scores(cp, q)
    for width, dense, cord_type in itertools.product((1, 7, 64), (False, True), (np.int64, np.int32)):
        seen = np.zeros(3, np.int64)
        got = cp.search(q, starts, ends, width, cord.astype(cord_type), bitmap, dense=dense, seen=seen)
        assert {int(j) for j in got} == _best(scores, pos, width)
        if bitmap is not None and not dense:  # a sparse mask counts its candidates exactly
            assert seen.tolist() == [pos.shape[0], 0, 0]
        elif bitmap is not None:  # a dense one: the bits it tested, those set (each kept code)
            assert seen[0] == 0 and int((ends - starts).sum()) >= seen[1] >= seen[2] >= len(got)
            assert seen[2] <= pos.shape[0]


@pytest.mark.parametrize("share", [0.5, 0.9])
def test_sparse_picks_past_one_chunk_keep_the_best_codes(share: float) -> None:
    """A sparse mask's candidates are picked run after run into one buffer and scored a chunk
    (``_CHUNK``) at a time: runs whose candidates fill several chunks give the same best codes
    and the exact count."""
    rng = np.random.default_rng(11)
    n, dims = 30_000, 8
    x = rng.standard_normal((n, dims)).astype(np.float32)
    cp = CodePass(n, dims, "euclidean_squared", x.min(axis=0), x.max(axis=0))
    cp.add(0, x)
    q = rng.standard_normal(dims).astype(np.float32)
    cord = rng.permutation(n).astype(np.int32)
    bounds = np.sort(rng.choice(np.arange(1, n), 120, replace=False))
    starts, ends = np.concatenate([[0], bounds[:-1]]), bounds  # 120 runs, the last rows left out
    keep = rng.random(n) < share
    pos = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends, strict=True)])
    pos = pos[keep[cord[pos]]]
    assert pos.shape[0] > 3 * 4096
    seen = np.zeros(3, np.int64)
    got = cp.search(q, starts, ends, 50, cord, np.packbits(keep, bitorder="little"), seen=seen)
    assert {int(j) for j in got} == _best(_scores(cp, q), pos, 50)
    assert seen.tolist() == [pos.shape[0], 0, 0]


@pytest.mark.parametrize("metric", ["cosine_distance", "euclidean_squared"])
@pytest.mark.parametrize("count", [0, 1, 3, 4, 5, 333, 997])
def test_candidate_list_keeps_the_best_codes(metric: str, count: int) -> None:
    cp, _, q = _setup(metric)
    rng = np.random.default_rng(count)
    idx = np.sort(rng.choice(cp.codes.shape[0], count, replace=False)).astype(np.int64)
    scores = _scores(cp, q)
    for width in (1, 4, 50):
        got = cp.search_of(q, idx, width)
        assert {int(j) for j in got} == _best(scores, idx, width)


def test_long_candidate_list_is_scored_in_chunks() -> None:
    """A list longer than the kernel's buffer (``_CHUNK``) is scored chunk by chunk, same result."""
    rng = np.random.default_rng(9)
    n, dims = 9000, 8
    x = rng.standard_normal((n, dims)).astype(np.float32)
    cp = CodePass(n, dims, "euclidean_squared", x.min(axis=0), x.max(axis=0))
    cp.add(0, x)
    q = rng.standard_normal(dims).astype(np.float32)
    idx = np.arange(n, dtype=np.int64)
    got = cp.search_of(q, idx, 40)
    assert {int(j) for j in got} == _best(_scores(cp, q), idx, 40)


def test_sampled_count_is_every_step_th_position() -> None:
    rng = np.random.default_rng(2)
    n = 5000
    cord = rng.permutation(n).astype(np.int64)
    keep = rng.random(n) < 0.3
    bitmap = np.packbits(keep, bitorder="little")
    starts = np.array([0, 700, 701, 2500], np.int64)
    ends = np.array([333, 701, 2400, 4999], np.int64)
    pos = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends, strict=True)])
    for sample in (1, 100, 10**6):
        step = max(1, pos.shape[0] // sample)
        expect = int(np.count_nonzero(keep[cord[pos[::step]]])) * step
        assert sampled_count(starts, ends, cord, bitmap, sample) == expect
    assert sampled_count(starts, ends, cord, bitmap, 10**6) == int(np.count_nonzero(keep[cord[pos]]))
