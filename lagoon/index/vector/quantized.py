"""The 8-bit first pass of an IVF probe.

A probe that would rank more than ``max(RERANK_FACTOR·k, RERANK_MIN)`` candidates first scans
their 8-bit codes (faiss ``IndexIVFScalarQuantizer`` over the loaded clusters of one index, ids =
segment rows, a candidate mask as an ``IDSelectorBitmap``) and keeps that many; the caller then
ranks those exactly. A quarter of the bytes to scan, and recall as with full vectors (only a true
neighbour ranked below the cut by its codes is lost). The codes quantize each dimension over the
file's stored value range (``sq_min``/``sq_max``) of the clustering space (unit vectors for
cosine), not residuals. The search runs with one OpenMP thread on the calling thread.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lagoon.index.vector.kernels import one_omp_thread

QUANTIZED_FIRST_PASS = True  # probe with 8-bit codes, then rank the best RERANK_FACTOR·k exactly
RERANK_FACTOR = 8
RERANK_MIN = 64


def first_pass_width(k: int) -> int:
    """How many candidates the 8-bit pass keeps for an exact top-``k``."""
    return max(RERANK_FACTOR * k, RERANK_MIN)


class CodePass:
    """The 8-bit codes of one index's loaded clusters (added cluster by cluster as they load)."""

    def __init__(self, dims: int, n_clusters: int, metric: str, vmin: np.ndarray, vmax: np.ndarray) -> None:
        import faiss

        fmetric = faiss.METRIC_INNER_PRODUCT if metric == "cosine_distance" else faiss.METRIC_L2
        index = faiss.IndexIVFScalarQuantizer(
            faiss.IndexFlat(dims, fmetric),
            dims,
            n_clusters,
            faiss.ScalarQuantizer.QT_8bit,
            fmetric,
            False,  # codes of the vectors themselves, not of residuals
        )
        trained = np.concatenate([vmin, np.maximum(vmax - vmin, 1e-12)]).astype(np.float32)
        faiss.copy_array_to_vector(trained, index.sq.trained)
        index.is_trained = True
        self._index: Any = index

    def add(self, x: np.ndarray, rows: np.ndarray, clusters: np.ndarray) -> None:
        """Add vectors ``x`` (clustering space, f32) of segment ``rows`` in ``clusters``."""
        import faiss

        x = np.ascontiguousarray(x, dtype=np.float32)
        ids = np.ascontiguousarray(rows, dtype=np.int64)
        assign = np.ascontiguousarray(clusters, dtype=np.int64)
        self._index.add_core(x.shape[0], faiss.swig_ptr(x), faiss.swig_ptr(ids), faiss.swig_ptr(assign))

    def search(
        self,
        qv: np.ndarray,
        probe: np.ndarray,
        width: int,
        n_rows: int,
        bitmap: np.ndarray | None,
    ) -> np.ndarray:
        """Segment rows of the best ``width`` codes of the clusters ``probe`` for the query vector
        ``qv`` (unit for cosine), among the rows set in ``bitmap`` (little-endian packed bits over
        ``n_rows``; None = all)."""
        import faiss

        q = np.ascontiguousarray(qv, dtype=np.float32).reshape(1, -1)
        params = faiss.SearchParametersIVF()
        params.nprobe = int(probe.shape[0])
        if bitmap is not None:
            params.sel = faiss.IDSelectorBitmap(n_rows, faiss.swig_ptr(bitmap))
        assign = np.ascontiguousarray(probe, dtype=np.int64).reshape(1, -1)
        cdist = np.zeros(assign.shape, np.float32)
        dist = np.empty((1, width), np.float32)
        labels = np.empty((1, width), np.int64)
        with one_omp_thread(faiss):
            self._index.search_preassigned_c(
                1,
                faiss.swig_ptr(q),
                width,
                faiss.swig_ptr(assign),
                faiss.swig_ptr(cdist),
                faiss.swig_ptr(dist),
                faiss.swig_ptr(labels),
                False,
                params,
            )
        del bitmap  # (kept alive until the search is done)
        out: np.ndarray = labels[0][labels[0] >= 0]
        return out


__all__ = ["QUANTIZED_FIRST_PASS", "RERANK_FACTOR", "RERANK_MIN", "CodePass", "first_pass_width"]
