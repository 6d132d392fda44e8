"""The 8-bit first pass of an IVF probe.

A probe that would rank more than ``max(RERANK_FACTOR·k, RERANK_MIN)`` candidates first scores
their 8-bit codes and keeps that many; the caller then ranks those exactly. A quarter of the
bytes to scan, and recall as with full vectors (only a true neighbour ranked below the cut by its
codes is lost).

Codes. Each dimension is quantized over the file's stored value range (``sq_min``/``sq_max``) of
the clustering space (unit vectors for cosine), not residuals: faiss's ``ScalarQuantizer``
(``QT_8bit``) encodes, and a vector decodes as ``x_t = min_t + (c_t + 0.5) · s_t`` with
``s_t = (max_t - min_t) / 255``. The codes are kept here, in cluster order (row ``j`` of
``codes`` is ``cvec[j]``), filled in as clusters load.

Scan (``sq8_topk``, numba, one thread, no GIL). For inner products (cosine) the score of a code
is ``Σ (q_t · s_t) · c_t`` (the constant ``Σ q_t (min_t + 0.5 s_t)`` does not change the order);
for squared euclidean distance it is ``-Σ (b_t - s_t · c_t)²`` with ``b_t = q_t - min_t - 0.5 s_t``.
With a candidate mask (a packed bitmap over segment rows) keeping at most ``DENSE_MASK`` of them,
each probed cluster's candidates are picked first (one branch-free bit test per row, counted on
the way) and only they are scored: a selective filter costs a bit test per row of the probed
clusters, not a code scan. A mask keeping more is tested after scoring, and only for the codes
that would enter the heap (at 50 % and 230 probed clusters of a 1M index: 0.92 ms, where picking
the candidates and scoring only them cost 1.05 ms). Codes are scored four rows at a time, and the
rows ``PREFETCH_AHEAD`` places further are prefetched (``_prefetch_row``, LLVM's prefetch
intrinsic): a filter's candidates are scattered through their clusters, and a row scored only
when it is reached waits for memory (a 10 % filter, 374 clusters: 0.97 ms before, 0.75 ms
prefetched; contiguous runs score about 20 % faster too). The best ``width`` are kept in a
binary heap.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from lagoon.index import bits as _bits

QUANTIZED_FIRST_PASS = True  # probe with 8-bit codes, then rank the best RERANK_FACTOR·k exactly
RERANK_FACTOR = 8
RERANK_MIN = 64
_CHUNK = 4096  # candidates of a list scored per kernel call into one buffer
DENSE_MASK = 0.3  # masks keeping more than this share of the rows: score every code, test bits after
PREFETCH_AHEAD = 8  # rows prefetched this many places before they are scored (8 and 16 measured alike)

_F = TypeVar("_F", bound=Callable[..., Any])


def _jit(fn: _F) -> _F:
    return cast(_F, numba.njit(cache=True, nogil=True, fastmath=True)(fn))


def _prefetch_row_codegen(typingctx: Any, codes: Any, j: Any) -> Any:
    """Ask for the first two cache lines of row ``j`` of the C-contiguous 2-D array ``codes``
    (a hint: no fault, no effect on results; a 128-dimension code is exactly two lines)."""

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        array = context.make_array(signature.args[0])(context, builder, args[0])
        stride = builder.extract_value(array.strides, 0)
        row = builder.gep(
            builder.bitcast(array.data, ir.IntType(8).as_pointer()), [builder.mul(args[1], stride)]
        )
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [ir.IntType(8).as_pointer(), i32, i32, i32])
        prefetch = cgutils.get_or_insert_function(  # type: ignore[no-untyped-call]
            builder.module, fnty, "llvm.prefetch.p0i8"
        )
        read, keep, data = ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)
        builder.call(prefetch, [row, read, keep, data])
        builder.call(prefetch, [builder.gep(row, [ir.Constant(ir.IntType(64), 64)]), read, keep, data])
        return context.get_dummy_value()

    return types.void(codes, j), codegen


_prefetch_row: Any = intrinsic(_prefetch_row_codegen)  # callable in jitted code only


def first_pass_width(k: int) -> int:
    """How many candidates the 8-bit pass keeps for an exact top-``k``."""
    return max(RERANK_FACTOR * k, RERANK_MIN)


class CodePass:
    """The 8-bit codes of one index's vectors (cluster order; rows of clusters not loaded yet are
    never scanned)."""

    def __init__(self, n_vectors: int, dims: int, metric: str, vmin: np.ndarray, vmax: np.ndarray) -> None:
        import faiss

        self.l2 = metric != "cosine_distance"
        self.vmin = np.ascontiguousarray(vmin, dtype=np.float32)
        vdiff = np.maximum(np.asarray(vmax, np.float32) - self.vmin, np.float32(1e-12))
        self.step = np.ascontiguousarray(vdiff / np.float32(255.0), dtype=np.float32)
        sq = faiss.ScalarQuantizer(dims, faiss.ScalarQuantizer.QT_8bit)
        trained = np.concatenate([self.vmin, vdiff]).astype(np.float32)
        faiss.copy_array_to_vector(trained, sq.trained)
        self._sq: Any = sq
        self.codes = np.zeros((n_vectors, dims), np.uint8)

    def add(self, lo: int, x: np.ndarray) -> None:
        """Encode the vectors ``x`` (clustering space, f32) of ``cvec[lo : lo + len(x)]``."""
        if x.shape[0]:
            codes = self._sq.compute_codes(np.ascontiguousarray(x, dtype=np.float32))
            self.codes[lo : lo + x.shape[0]] = np.asarray(codes, np.uint8).reshape(x.shape[0], -1)

    def search(
        self,
        qv: np.ndarray,
        starts: np.ndarray,
        ends: np.ndarray,
        width: int,
        cord: np.ndarray,
        bitmap: np.ndarray | None,
        *,
        dense: bool = False,
        seen: np.ndarray | None = None,
    ) -> np.ndarray:
        """Indices (into ``codes``, unordered) of the best ``width`` codes in the runs
        ``[starts[i], ends[i])`` for the query vector ``qv`` (unit for cosine), among the rows
        (``cord[j]`` for code ``j``) set in ``bitmap`` (little-endian packed bits; None = all).
        ``dense``: most rows are candidates (see ``DENSE_MASK``). ``seen`` (int64[3]): unless
        ``dense``, the candidates in the runs are added to ``seen[0]`` (counted on the way); when
        ``dense``, the bits tested (of the codes that would enter the heap) to ``seen[1]`` and
        how many of them were set to ``seen[2]``."""
        a, b = self._coefficients(qv)
        longest = int((ends - starts).max()) if starts.shape[0] else 0
        heap_s = np.empty(width, np.float32)
        heap_i = np.empty(width, np.int64)
        masked = bitmap is not None
        room = max(1, longest) + (_CHUNK if masked and not dense else 0)
        buf = np.empty(room, np.float32)
        ibuf = np.empty(room, np.int64)
        bits = bitmap if bitmap is not None else np.zeros(1, np.uint8)
        counter = np.zeros(3, np.int64)
        n = sq8_topk(
            self.codes,
            np.ascontiguousarray(starts, dtype=np.int64),
            np.ascontiguousarray(ends, dtype=np.int64),
            cord,
            bits,
            masked,
            dense,
            a,
            b,
            self.l2,
            width,
            heap_s,
            heap_i,
            buf,
            ibuf,
            counter,
        )
        if seen is not None:
            seen[:3] += counter
        out: np.ndarray = heap_i[:n]
        return out

    def _coefficients(self, qv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        q = np.ascontiguousarray(qv, dtype=np.float32).reshape(-1)
        if self.l2:
            return self.step, (q - self.vmin - np.float32(0.5) * self.step).astype(np.float32)
        a = (q * self.step).astype(np.float32)
        return a, a

    def search_of(self, qv: np.ndarray, idx: np.ndarray, width: int) -> np.ndarray:
        """Indices (unordered) of the best ``width`` of the codes ``idx``."""
        a, b = self._coefficients(qv)
        heap_s = np.empty(width, np.float32)
        heap_i = np.empty(width, np.int64)
        n = sq8_topk_of(
            self.codes, np.ascontiguousarray(idx, dtype=np.int64), a, b, self.l2, width, heap_s, heap_i
        )
        out: np.ndarray = heap_i[:n]
        return out


@_jit
def _push(heap_s: Any, heap_i: Any, size: int, width: int, s: Any, j: int) -> int:
    """Offer (score ``s``, index ``j``) to the min-heap of the best ``width`` scores."""
    if size < width:
        k = size
        size += 1
        while k > 0:
            p = (k - 1) >> 1
            if heap_s[p] <= s:
                break
            heap_s[k] = heap_s[p]
            heap_i[k] = heap_i[p]
            k = p
        heap_s[k] = s
        heap_i[k] = j
        return size
    if s <= heap_s[0]:
        return size
    k = 0
    while True:
        c = 2 * k + 1
        if c >= size:
            break
        if c + 1 < size and heap_s[c + 1] < heap_s[c]:
            c += 1
        if heap_s[c] >= s:
            break
        heap_s[k] = heap_s[c]
        heap_i[k] = heap_i[c]
        k = c
    heap_s[k] = s
    heap_i[k] = j
    return size


@_jit
def _score_one(codes: Any, j: int, a: Any, b: Any, l2: bool) -> Any:
    s = np.float32(0.0)
    if l2:
        for t in range(codes.shape[1]):
            e = b[t] - a[t] * np.float32(codes[j, t])
            s -= e * e
    else:
        for t in range(codes.shape[1]):
            s += a[t] * np.float32(codes[j, t])
    return s


@_jit
def _scores_of(codes: Any, idx: Any, lo: int, hi: int, a: Any, b: Any, l2: bool, out: Any) -> None:
    """Scores of the codes ``idx[lo:hi]`` into ``out[0 : hi - lo]``, four rows at a time (their
    loads overlap), the rows ``PREFETCH_AHEAD`` places further asked for ahead of time: a
    scattered row scored when it is needed waits for memory (at 1M vectors, a 10 % filter's
    candidates scored so took 0.74 ms of a 0.97 ms probe; 0.52 ms prefetched), and even
    contiguous runs score 20 % faster."""
    d = codes.shape[1]
    for u in range(lo, min(hi, lo + PREFETCH_AHEAD)):
        _prefetch_row(codes, idx[u])
    u = lo
    while u + 4 <= hi:
        for v in range(u + PREFETCH_AHEAD, min(hi, u + PREFETCH_AHEAD + 4)):
            _prefetch_row(codes, idx[v])
        j0, j1, j2, j3 = idx[u], idx[u + 1], idx[u + 2], idx[u + 3]
        s0 = s1 = s2 = s3 = np.float32(0.0)
        if l2:
            for t in range(d):
                at, bt = a[t], b[t]
                e0 = bt - at * np.float32(codes[j0, t])
                e1 = bt - at * np.float32(codes[j1, t])
                e2 = bt - at * np.float32(codes[j2, t])
                e3 = bt - at * np.float32(codes[j3, t])
                s0 -= e0 * e0
                s1 -= e1 * e1
                s2 -= e2 * e2
                s3 -= e3 * e3
        else:
            for t in range(d):
                at = a[t]
                s0 += at * np.float32(codes[j0, t])
                s1 += at * np.float32(codes[j1, t])
                s2 += at * np.float32(codes[j2, t])
                s3 += at * np.float32(codes[j3, t])
        out[u - lo] = s0
        out[u - lo + 1] = s1
        out[u - lo + 2] = s2
        out[u - lo + 3] = s3
        u += 4
    while u < hi:
        out[u - lo] = _score_one(codes, idx[u], a, b, l2)
        u += 1


@_jit
def _pick(lo: int, hi: int, cord: Any, bitmap: Any, masked: bool, ibuf: Any, at: int) -> int:
    """The positions ``lo..hi-1`` whose row is set in ``bitmap`` (every one unless ``masked``)
    into ``ibuf[at:]``; returns how many. One branch-free bit test per row."""
    if not masked:
        for j in range(lo, hi):
            ibuf[at + j - lo] = j
        return hi - lo
    c = at
    for j in range(lo, hi):
        r = cord[j]
        ibuf[c] = j
        c += (bitmap[r >> 3] >> (r & 7)) & 1
    return c - at


@_jit
def _offer_all(buf: Any, ibuf: Any, c: int, heap_s: Any, heap_i: Any, size: int, width: int) -> int:
    """Offer the ``c`` scores ``buf`` (of codes ``ibuf``) to the heap; returns its size."""
    for u in range(c):
        s = buf[u]
        if size < width or s > heap_s[0]:
            size = _push(heap_s, heap_i, size, width, s, ibuf[u])
    return size


@_jit
def sq8_topk(
    codes: Any,
    starts: Any,
    ends: Any,
    cord: Any,
    bitmap: Any,
    masked: bool,
    dense: bool,
    a: Any,
    b: Any,
    l2: bool,
    width: int,
    heap_s: Any,
    heap_i: Any,
    buf: Any,
    ibuf: Any,
    counter: Any,
) -> int:
    """The best ``width`` codes of the runs (see ``CodePass.search``) into ``heap_i``; returns
    how many were kept (fewer than ``width`` when the runs hold fewer candidates). A sparse mask
    (``masked and not dense``): each run's candidates are picked first, counted in
    ``counter[0]``, and only they are scored; a dense one: every code is scored and only a code
    entering the heap has its bit tested (tests counted in ``counter[1]``, bits set in
    ``counter[2]``: the candidates' share among the scanned codes nearest the query)."""
    size = 0
    if masked and not dense:
        # Pick the candidates of run after run into one buffer and score them once it holds
        # _CHUNK (``ibuf`` has room for _CHUNK plus the longest run): the prefetches of
        # ``_scores_of`` then run ahead across clusters instead of restarting at each one (a
        # 10 % filter's run holds ~25 candidates; scoring them per run cost 1.29 ms, in chunks
        # 1.10 ms at 362 clusters of a 1M index).
        c = 0
        for i in range(starts.shape[0]):
            c += _pick(starts[i], ends[i], cord, bitmap, True, ibuf, c)
            if c >= _CHUNK or i == starts.shape[0] - 1:
                counter[0] += c
                _scores_of(codes, ibuf, 0, c, a, b, l2, buf)
                size = _offer_all(buf, ibuf, c, heap_s, heap_i, size, width)
                c = 0
        return size
    for i in range(starts.shape[0]):
        c = _pick(starts[i], ends[i], cord, bitmap, False, ibuf, 0)
        _scores_of(codes, ibuf, 0, c, a, b, l2, buf)
        if not masked:
            size = _offer_all(buf, ibuf, c, heap_s, heap_i, size, width)
            continue
        for u in range(c):  # a dense mask: only a code that would enter the heap has its bit tested
            s = buf[u]
            if size < width or s > heap_s[0]:
                j = ibuf[u]
                r = cord[j]
                counter[1] += 1
                if (bitmap[r >> 3] >> (r & 7)) & 1:
                    counter[2] += 1
                    size = _push(heap_s, heap_i, size, width, s, j)
    return size


@_jit
def sampled_count(starts: Any, ends: Any, cord: Any, bitmap: Any, sample: int) -> int:
    """Rows set in ``bitmap`` (``cord[j]`` for position ``j``) among the runs ``[starts[i],
    ends[i])``, estimated on every ``step``-th position of the runs laid end to end (``step`` =
    their total length // ``sample``), times ``step``."""
    total = 0
    for i in range(starts.shape[0]):
        total += ends[i] - starts[i]
    step = max(1, total // max(1, sample))
    c = 0
    pos = 0  # position of the current run's first row in the runs laid end to end
    for i in range(starts.shape[0]):
        first = (step - pos % step) % step
        for j in range(starts[i] + first, ends[i], step):
            r = cord[j]
            c += (bitmap[r >> 3] >> (r & 7)) & 1
        pos += ends[i] - starts[i]
    return int(c * step)


@_jit
def sq8_topk_of(codes: Any, idx: Any, a: Any, b: Any, l2: bool, width: int, heap_s: Any, heap_i: Any) -> int:
    """``sq8_topk`` over the codes ``idx`` (a candidate list) instead of runs of clusters."""
    size = 0
    buf = np.empty(_CHUNK, np.float32)
    for lo in range(0, idx.shape[0], _CHUNK):
        hi = min(idx.shape[0], lo + _CHUNK)
        _scores_of(codes, idx, lo, hi, a, b, l2, buf)
        for u in range(hi - lo):
            s = buf[u]
            if size < width or s > heap_s[0]:
                size = _push(heap_s, heap_i, size, width, s, idx[lo + u])
    return size


def warm_kernels() -> None:
    """Compile (or load from numba's cache) the scan for both metrics, with and without a mask,
    for row ordinals of both widths (``VectorIndex.kernel_cord``: int32, or int64 past 2^31 rows)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 8)).astype(np.float32)
    starts, ends = np.array([0, 32], np.int64), np.array([32, 64], np.int64)
    bits = np.packbits(np.ones(64, bool), bitorder="little")
    for metric in ("cosine_distance", "euclidean_squared"):
        cp = CodePass(64, 8, metric, x.min(axis=0), x.max(axis=0))
        cp.add(0, x)
        for dtype in (np.int32, np.int64):
            cord = np.arange(64, dtype=dtype)
            cp.search(x[0], starts, ends, 4, cord, None)
            cp.search(x[0], starts, ends, 4, cord, bits)
            cp.search(x[0], starts, ends, 4, cord, bits, dense=True)
        cp.search_of(x[0], np.arange(0, 64, 3, dtype=np.int64), 4)
    starts64 = np.array([0, 5], np.int64)
    for dtype in (np.int32, np.int64):
        sampled_count(starts64, starts64 + 3, np.arange(8, dtype=dtype), np.ones(1, np.uint8), 4)
    _bits.warm_kernels()


__all__ = [
    "DENSE_MASK",
    "QUANTIZED_FIRST_PASS",
    "RERANK_FACTOR",
    "RERANK_MIN",
    "CodePass",
    "first_pass_width",
    "sampled_count",
    "sq8_topk",
    "sq8_topk_of",
    "warm_kernels",
]
