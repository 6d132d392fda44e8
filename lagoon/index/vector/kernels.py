"""Vector kernels shared by the exact scans and the IVF: inner products on the calling thread,
top-k selection with deterministic ties, float64 distances of the returned rows.

Inner products use faiss's AVX2 kernels with one OpenMP thread, not numpy's BLAS: a single
query is a matrix-vector product, which is memory-bound, and a multi-threaded BLAS gemv stalls
whenever another process holds a core (measured 11.9 ms vs 0.43 ms for 20k x 128 on a loaded
2-core machine). Pure: arrays in, arrays out.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from lagoon.errors import InternalError


def topk_smallest(values: np.ndarray, tiebreak: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` smallest ``values``, ascending, ties by ascending ``tiebreak``.

    One argpartition (O(n)), then every value tied with the k-th is kept as a candidate so the
    choice among equal values is by ``tiebreak`` and never arbitrary; only the candidates are sorted.
    """
    n = values.shape[0]
    if k <= 0 or n == 0:
        return np.empty(0, dtype=np.int64)
    if k < n:
        part = np.argpartition(values, k - 1)[:k]
        threshold = values[part].max()
        cand = np.flatnonzero(values <= threshold)
    else:
        cand = np.arange(n, dtype=np.int64)
    order = np.lexsort((tiebreak[cand], values[cand]))
    return cand[order[:k]].astype(np.int64, copy=False)


def exact_dist(m: np.ndarray, q: np.ndarray, metric: str) -> np.ndarray:
    m64 = m.astype(np.float64)
    q64 = q.astype(np.float64)
    if metric == "euclidean_squared":
        diff = m64 - q64
        return np.einsum("ij,ij->i", diff, diff)  # type: ignore[no-any-return]
    norms = np.linalg.norm(m64, axis=1) * np.linalg.norm(q64)
    dots = m64 @ q64
    cos = np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)
    return 1.0 - np.clip(cos, -1.0, 1.0)  # type: ignore[no-any-return]


def inner_products(matrix: np.ndarray, q: np.ndarray, idx: np.ndarray | None = None) -> np.ndarray:
    """float32 ``matrix @ q`` (``idx`` None) or ``matrix[idx] @ q`` without gathering the rows:
    one faiss kernel call on the calling thread. ``matrix`` is C-contiguous float32."""
    import faiss

    q = np.ascontiguousarray(q, dtype=np.float32)
    if idx is None:
        n = matrix.shape[0]
        out = np.empty(n, np.float32)
        if n:
            with one_omp_thread(faiss):
                faiss.fvec_inner_products_ny(  # type: ignore[attr-defined]
                    faiss.swig_ptr(out), faiss.swig_ptr(q), faiss.swig_ptr(matrix), matrix.shape[1], n
                )
        return out
    out = np.empty(idx.shape[0], np.float32)
    if idx.shape[0] == 0:
        return out
    ids = np.ascontiguousarray(idx, dtype=np.int64)
    with one_omp_thread(faiss):
        faiss.fvec_inner_products_by_idx(  # type: ignore[attr-defined]
            faiss.swig_ptr(out),
            faiss.swig_ptr(q),
            faiss.swig_ptr(matrix),
            faiss.swig_ptr(ids),
            matrix.shape[1],
            1,
            ids.shape[0],
        )
    return out


_THREAD = threading.local()


@contextlib.contextmanager
def one_omp_thread(faiss: Any) -> Iterator[None]:
    """Run faiss calls on the calling thread only (single queries are fastest so).

    OpenMP's thread count is a per-thread setting: a thread that only searches (the query
    threads) is set to one thread once and left so; a thread that also builds (k-means with
    ``BUILD_THREADS``) is set back after each call."""
    if getattr(_THREAD, "single", False) and faiss.omp_get_max_threads() == 1:
        yield
        return
    previous = faiss.omp_get_max_threads()
    if previous != 1:
        faiss.omp_set_num_threads(1)
    _THREAD.single = True
    try:
        yield
    finally:
        if previous != 1:
            faiss.omp_set_num_threads(previous)
            _THREAD.single = False


@dataclass(frozen=True, slots=True)
class VectorMatrix:
    """A vector column as float32 rows. Rows without a vector are zeros with ``valid`` False."""

    matrix: np.ndarray  # float32 (n, dims), C-contiguous
    valid: np.ndarray  # bool (n,)
    all_valid: bool


def vector_matrix(col: pa.ChunkedArray) -> VectorMatrix:
    arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    n = len(arr)
    if pa.types.is_null(arr.type):
        return VectorMatrix(np.zeros((n, 0), dtype=np.float32), np.zeros(n, dtype=bool), False)
    if not pa.types.is_fixed_size_list(arr.type):
        raise InternalError(f"vector column has type {arr.type}, expected a fixed-size list")
    dims = arr.type.list_size
    child = arr.values.slice(arr.offset * dims, n * dims)
    flat = child.to_numpy(zero_copy_only=False)
    matrix = np.ascontiguousarray(flat.reshape(n, dims), dtype=np.float32)
    if arr.null_count:
        valid = np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
        matrix = np.array(matrix, dtype=np.float32, copy=True)
        matrix[~valid] = 0.0
    else:
        valid = np.ones(n, dtype=bool)
    matrix.setflags(write=False)
    valid.setflags(write=False)
    return VectorMatrix(matrix, valid, bool(valid.all()))
