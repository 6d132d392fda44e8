"""Late interaction (MaxSim) over ``[][N]f32`` multi-vector columns: an exact scan.

A document holds a list of vectors ``d₁..dₘ``; a query holds ``q₁..qₙ``. Its distance is the sum,
over the query vectors, of the distance to the document's closest vector:

    $dist = Σᵢ minⱼ dist(qᵢ, dⱼ)

With ``cosine_distance`` (1 − cos) this is n − Σᵢ maxⱼ cos(qᵢ, dⱼ): ColBERT's MaxSim score turned
into a distance (smaller is better), and with one vector per document it is the multi-vector
query's sum of distances (``wire.query.multi_vector_query``). A document without a value has no
distance (``inf``) and is never ranked.

The scan reads the column once, ``BLOCK_VECTORS`` document vectors at a time (bounded memory:
one block × the query vectors), and checks the cancellation budget between blocks. There is no
index yet (turbopuffer's is MUVERA); the cost is linear in the stored vectors.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from lagoon.index import cancel

BLOCK_VECTORS = 65_536


def _flat(col: pa.ChunkedArray | pa.Array, dims: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vectors float32 (M, dims), offsets int64 (n+1), valid bool (n)) of a list<list<f32>> column."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    n = len(arr)
    valid = ~np.asarray(arr.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    lengths = np.where(valid, np.asarray(arr.value_lengths().fill_null(0).to_numpy(), dtype=np.int64), 0)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    inner = arr.flatten()  # the non-null lists' vectors, in order
    values = np.asarray(inner.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)
    return values.reshape(-1, dims), offsets, valid & (lengths > 0)


def _pair_distances(d: np.ndarray, q: np.ndarray, metric: str) -> np.ndarray:
    """float64 (len(d), len(q)) distances between document vectors and query vectors."""
    d64, q64 = d.astype(np.float64), q.astype(np.float64)
    dots = d64 @ q64.T
    if metric == "euclidean_squared":
        out: np.ndarray = np.maximum(
            (d64 * d64).sum(1)[:, None] + (q64 * q64).sum(1)[None, :] - 2 * dots, 0.0
        )
        return out
    dn, qn = np.linalg.norm(d64, axis=1), np.linalg.norm(q64, axis=1)
    denom = dn[:, None] * qn[None, :]
    cos = np.divide(dots, denom, out=np.zeros_like(dots), where=denom > 0)
    dist: np.ndarray = 1.0 - cos
    return dist


def late_interaction_distances(
    col: pa.ChunkedArray | pa.Array, queries: np.ndarray, metric: str, dims: int
) -> np.ndarray:
    """float64[num_docs]: each document's ``Σᵢ minⱼ dist(qᵢ, dⱼ)``; ``inf`` without a value."""
    vectors, offsets, valid = _flat(col, dims)
    n = offsets.shape[0] - 1
    out = np.full(n, np.inf, dtype=np.float64)
    docs = np.flatnonzero(valid)
    ends = offsets[docs + 1]
    start = 0
    while start < docs.shape[0]:
        cancel.checkpoint()
        first = offsets[docs[start]]
        stop = int(np.searchsorted(ends, first + BLOCK_VECTORS, side="right"))
        stop = max(stop, start + 1)  # one document larger than a block is a block of its own
        block = docs[start:stop]
        lo, hi = offsets[block[0]], offsets[block[-1] + 1]
        pair = _pair_distances(vectors[lo:hi], queries, metric)
        starts = offsets[block] - lo  # each document's first row in the block (none is empty)
        out[block] = np.minimum.reduceat(pair, starts, axis=0).sum(axis=1)
        start = stop
    return out


__all__ = ["BLOCK_VECTORS", "late_interaction_distances"]
