"""Reciprocal rank fusion (RRF) of several ranked lists of documents.

score(d) = Σ_i w_i / (k + rank_i(d)), summed over the lists that contain d, where rank_i(d) is d's
1-based position in list i (the first row has rank 1) and k is the rank constant (default 60).
Fused order: score descending, ties by ascending id. Documents are row positions of one snapshot;
``id_rank`` gives each position's rank in id order. Pure and vectorised.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def rrf_fuse(
    lists: Sequence[np.ndarray],
    id_rank: np.ndarray,
    *,
    rank_constant: float = 60.0,
    weights: Sequence[float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Fuse ranked position lists; returns (positions, float64 scores), best first."""
    if weights is None:
        weights = [1.0] * len(lists)
    if len(weights) != len(lists):
        raise ValueError(f"rrf_fuse: {len(weights)} weights for {len(lists)} lists")
    parts_pos = [np.asarray(p, dtype=np.int64) for p in lists]
    parts_score = [
        w / (rank_constant + np.arange(1, p.size + 1, dtype=np.float64))
        for p, w in zip(parts_pos, weights, strict=True)
    ]
    if not parts_pos or sum(p.size for p in parts_pos) == 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
    allpos = np.concatenate(parts_pos)
    allscore = np.concatenate(parts_score)
    uniq, inverse = np.unique(allpos, return_inverse=True)
    scores = np.zeros(uniq.size, dtype=np.float64)
    np.add.at(scores, inverse, allscore)
    order = np.lexsort((id_rank[uniq], -scores))
    return uniq[order], scores[order]
