"""Compiled kernels of block-compressed postings: bit packing, encoding, decoding, term lookup and
block-max MaxScore top-k (numba, compiled on first use and cached next to this file).

Role: the loops that cannot be vectorised with numpy — walking posting blocks document by
document, skipping blocks whose score bound cannot reach the current top k, and bit-level
unpacking. The layout they read and write is ``docs/formats/fts-v2.md``; ``blockpostings.py`` is
the only caller and states the data structure's invariants. Every function is pure: arrays in,
arrays or scalars out, no I/O, no Python objects.

Bit streams: value i of width w occupies bits [i·w, (i+1)·w) of a stream of little-endian uint32
words, least significant bit first. A width of 0 means every value is 0 and takes no bits.

Scores are computed exactly as ``bm25.score`` does (the same float64 operations in the same
order, no fast-math), and summed in query-term order, so they equal ``score_query``'s bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import numba
import numpy as np

_F = TypeVar("_F", bound=Callable[..., Any])

BLOCK = 128
"""Postings per block (the last block of a term may hold fewer)."""
DICT_BLOCK = 64
"""Terms per front-coded dictionary block."""
CHUNK = 128
"""Values per bit-packed chunk of a column or of a term's positions."""
NO_PAIR = 0xFFFFFFFF
"""Second header word of a block whose best (tf, length) pair does not fit 16 + 16 bits."""
MARGIN = 1e-9
"""Relative slack on comparisons of bounds summed in another order than scores are."""
HEADER_WORDS = 2
"""Words of a block header: widths (and flags), then the block's best (tf, length) pair."""
NEAR_TIE = 1 << 16
"""Header flag: another (tf, length) pair of the block saturates within 1e-12 of the best."""


def _jit(fn: _F) -> _F:
    return cast(_F, numba.njit(cache=True, nogil=True)(fn))


def _inline(fn: _F) -> _F:
    """A small helper compiled into its callers (no call overhead in the hot loops)."""
    return cast(_F, numba.njit(cache=True, nogil=True)(fn))


# --------------------------------------------------------------------------------------------- bits


@_jit
def bit_width(v: int) -> int:
    w = 0
    while v > 0:
        w += 1
        v >>= 1
    return w


@_jit
def put_bits(words: np.ndarray, start: int, i: int, w: int, v: int) -> None:
    """OR value ``v`` (< 2**w) as element i of the stream starting at word ``start``."""
    if w == 0:
        return
    p = i * w
    wi = start + (p >> 5)
    sh = p & 31
    x = np.uint64(v) << np.uint64(sh)
    words[wi] |= np.uint32(x & np.uint64(0xFFFFFFFF))
    if sh + w > 32:
        words[wi + 1] |= np.uint32(x >> np.uint64(32))


@_jit
def get_bits(words: np.ndarray, start: int, i: int, w: int) -> int:
    """Element i of width ``w`` of the stream starting at word ``start``."""
    if w == 0:
        return 0
    p = i * w
    wi = start + (p >> 5)
    sh = p & 31
    x = np.uint64(words[wi]) >> np.uint64(sh)
    if sh + w > 32:
        x |= np.uint64(words[wi + 1]) << np.uint64(32 - sh)
    return int(x & ((np.uint64(1) << np.uint64(w)) - np.uint64(1)))


@_inline
def unpack_into(words: np.ndarray, start: int, n: int, w: int, out: np.ndarray, out_at: int) -> None:
    """``out[out_at + i] = element i`` for i < n."""
    if w == 0:
        for i in range(n):
            out[out_at + i] = 0
        return
    mask = (np.uint64(1) << np.uint64(w)) - np.uint64(1)
    p = 0
    for i in range(n):
        wi = start + (p >> 5)
        sh = p & 31
        x = np.uint64(words[wi]) >> np.uint64(sh)
        if sh + w > 32:
            x |= np.uint64(words[wi + 1]) << np.uint64(32 - sh)
        out[out_at + i] = x & mask
        p += w


def stream_words(n_bits: int) -> int:
    return (n_bits + 31) // 32


# --------------------------------------------------------------------------------------------- columns


@_jit
def pack_column(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(widths u8[ceil(n/CHUNK)], words u32): values in chunks of CHUNK, each with its own width.
    A full chunk of width w takes exactly 4·w words, so chunk c starts at word 4·Σ_{j<c} w_j."""
    n = values.shape[0]
    nc = (n + CHUNK - 1) // CHUNK
    widths = np.zeros(nc, np.uint8)
    total = 0
    for c in range(nc):
        m = 0
        for i in range(c * CHUNK, min(n, (c + 1) * CHUNK)):
            if values[i] > m:
                m = values[i]
        w = bit_width(m)
        widths[c] = w
        total += (min(n, (c + 1) * CHUNK) - c * CHUNK) * w
    words = np.zeros((total + 31) // 32 + 1, np.uint32)
    start = 0
    for c in range(nc):
        w = int(widths[c])
        lo = c * CHUNK
        cnt = min(n, lo + CHUNK) - lo
        for i in range(cnt):
            put_bits(words, start, i, w, int(values[lo + i]))
        start += (cnt * w + 31) // 32
    return widths, words[:start]


@_jit
def unpack_column(widths: np.ndarray, words: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros(n, np.int64)
    start = 0
    for c in range(widths.shape[0]):
        w = int(widths[c])
        lo = c * CHUNK
        cnt = min(n, lo + CHUNK) - lo
        unpack_into(words, start, cnt, w, out, lo)
        start += (cnt * w + 31) // 32
    return out


@_jit
def column_words(widths: np.ndarray, n: int) -> int:
    """Words of a packed column (to validate a section's length)."""
    start = 0
    for c in range(widths.shape[0]):
        cnt = min(n, c * CHUNK + CHUNK) - c * CHUNK
        start += (cnt * int(widths[c]) + 31) // 32
    return start


# --------------------------------------------------------------------------------------------- encode


@_inline
def _contrib(w: float, tf: float, dl: float, avgdl: float, k1: float, b: float) -> float:
    norm = k1 * (1.0 - b + b * dl / avgdl) if avgdl > 0.0 else k1 * (1.0 - b)
    return w * tf / (tf + norm)


@_inline
def _block_best(
    docs: np.ndarray,
    tfs: np.ndarray,
    doc_len: np.ndarray,
    s: int,
    e: int,
    base: int,
    a0: float,
    k1: float,
    b: float,
) -> tuple[int, int, int, int, bool]:
    """(largest gap, largest tf - 1, best tf, best length, near tie) of the block ``docs[s:e]``
    whose gaps count from ``base``: the best pair has the largest saturation; ``near`` when another
    pair saturates within 1e-12 of it (scaled scores might order them otherwise)."""
    mg = 0
    mt = 0
    best = -1.0
    best_tf = 0
    best_dl = 0
    p = base - 1
    for i in range(s, e):
        g = int(docs[i]) - p - 1
        p = int(docs[i])
        if g > mg:
            mg = g
        tv = int(tfs[i]) - 1
        if tv > mt:
            mt = tv
        tf = float(tfs[i])
        dl = float(doc_len[docs[i]])
        sat = _contrib(1.0, tf, dl, a0, k1, b)
        if sat > best:
            best = sat
            best_tf = int(tfs[i])
            best_dl = int(doc_len[docs[i]])
    near = False
    for i in range(s, e):
        if int(tfs[i]) != best_tf or int(doc_len[docs[i]]) != best_dl:
            sat = _contrib(1.0, float(tfs[i]), float(doc_len[docs[i]]), a0, k1, b)
            if sat >= best * (1.0 - 1e-12):
                near = True
    return mg, mt, best_tf, best_dl, near


@_inline
def _write_block(
    out: np.ndarray,
    cur: int,
    docs: np.ndarray,
    tfs: np.ndarray,
    s: int,
    e: int,
    base: int,
    wd: int,
    wt: int,
    best_tf: int,
    best_dl: int,
    near: bool,
) -> int:
    """Write the block ``docs[s:e]`` at ``out[cur]`` (header words, then the gaps from ``base`` in
    ``wd`` bits and tf - 1 in ``wt`` bits, one stream); the index after it."""
    n = e - s
    out[cur] = np.uint32(wd | (wt << 8) | (NEAR_TIE if near else 0))
    if best_tf <= 0xFFFF and best_dl <= 0xFFFF:
        out[cur + 1] = np.uint32(best_tf | (best_dl << 16))
    else:
        out[cur + 1] = np.uint32(NO_PAIR)
    st = cur + HEADER_WORDS
    p = base - 1
    for i in range(s, e):
        put_bits(out, st, i - s, wd, int(docs[i]) - p - 1)
        p = int(docs[i])
    tstart = n * wd
    for i in range(s, e):
        # tf bits continue the same stream after the n gaps
        pb = tstart + (i - s) * wt
        if wt > 0:
            v = int(tfs[i]) - 1
            wi = st + (pb >> 5)
            sh = pb & 31
            x = np.uint64(v) << np.uint64(sh)
            out[wi] |= np.uint32(x & np.uint64(0xFFFFFFFF))
            if sh + wt > 32:
                out[wi + 1] |= np.uint32(x >> np.uint64(32))
    return st + (n * (wd + wt) + 31) // 32


@_jit
def encode_postings(
    term_ptr: np.ndarray,
    docs: np.ndarray,
    tfs: np.ndarray,
    doc_len: np.ndarray,
    a0: float,
    k1: float,
    b: float,
) -> tuple[np.ndarray, np.ndarray]:
    """(postings words, per-term record length in words) for the layout of docs/formats/fts-v2.md:
    per term with nb = ceil(df / BLOCK) blocks, when nb > 1 a skip table (last doc of each block,
    then the end of each block in words relative to the first block), then the blocks; a block is
    two header words — (w_doc | w_tf << 8 | NEAR_TIE flag), then the block's best pair
    (tf | length << 16: the posting with the largest saturation ``tf / (tf + k1·(1 - b +
    b·length/a0))``, or ``NO_PAIR`` when tf or length exceeds 16 bits) — and one bit stream of
    the document gaps followed by tf - 1."""
    n_terms = term_ptr.shape[0] - 1
    nnz = docs.shape[0]
    cap = 4 * nnz + 5 * n_terms + 8
    out = np.zeros(cap, np.uint32)
    lengths = np.zeros(n_terms, np.int64)
    o = 0
    for t in range(n_terms):
        lo = term_ptr[t]
        hi = term_ptr[t + 1]
        nb = (hi - lo + BLOCK - 1) // BLOCK
        rec = o
        area = o
        if nb > 1:
            area = o + 2 * nb
        cur = area
        prev_last = -1
        for j in range(nb):
            s = lo + j * BLOCK
            e = min(hi, s + BLOCK)
            base = prev_last + 1
            mg, mt, best_tf, best_dl, near = _block_best(docs, tfs, doc_len, s, e, base, a0, k1, b)
            cur = _write_block(
                out, cur, docs, tfs, s, e, base, bit_width(mg), bit_width(mt), best_tf, best_dl, near
            )
            prev_last = int(docs[e - 1])
            if nb > 1:
                out[rec + j] = np.uint32(prev_last)
                out[rec + nb + j] = np.uint32(cur - area)
        lengths[t] = cur - rec
        o = cur
    return out[:o], lengths


@_jit
def encode_positions(
    term_ptr: np.ndarray, tfs: np.ndarray, positions: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(positions words, per-term record length in words). A term's record: the widths of its
    ceil(Σtf / CHUNK) chunks (u8, four per word), then the chunks; the values are, posting by
    posting, the first position and then each next position minus the previous minus 1."""
    n_terms = term_ptr.shape[0] - 1
    total = positions.shape[0]
    out = np.zeros(2 * total + 2 * n_terms + 8, np.uint32)
    lengths = np.zeros(n_terms, np.int64)
    vals = np.zeros(total, np.int64)
    # delta-code within each posting
    k = 0
    for j in range(tfs.shape[0]):
        prev = -1
        for _ in range(int(tfs[j])):
            v = int(positions[k])
            vals[k] = v - prev - 1
            prev = v
            k += 1
    o = 0
    pk = 0
    for t in range(n_terms):
        cnt = 0
        for j in range(term_ptr[t], term_ptr[t + 1]):
            cnt += int(tfs[j])
        nc = (cnt + CHUNK - 1) // CHUNK
        rec = o
        st = o + (nc + 3) // 4
        for c in range(nc):
            lo = pk + c * CHUNK
            m = min(CHUNK, cnt - c * CHUNK)
            mx = 0
            for i in range(lo, lo + m):
                if vals[i] > mx:
                    mx = vals[i]
            w = bit_width(mx)
            out[rec + c // 4] |= np.uint32(w << (8 * (c % 4)))
            for i in range(m):
                put_bits(out, st, i, w, int(vals[lo + i]))
            st += (m * w + 31) // 32
        pk += cnt
        lengths[t] = st - rec
        o = st
    return out[:o], lengths


# --------------------------------------------------------------------------------------------- decode


@_inline
def block_start(words: np.ndarray, off: int, nb: int, j: int) -> int:
    """Word offset of block j of the term record at ``off``."""
    if nb == 1:
        return off
    area = off + 2 * nb
    if j == 0:
        return area
    return area + int(words[off + nb + j - 1])


@_inline
def block_pair(words: np.ndarray, off: int, nb: int, j: int) -> int:
    """The block's best (tf, length) pair word (``NO_PAIR`` when absent)."""
    return int(words[block_start(words, off, nb, j) + 1])


@_inline
def decode_block(
    words: np.ndarray, off: int, df: int, nb: int, j: int, docs: np.ndarray, tfs: np.ndarray, at: int
) -> int:
    """Decode block j into ``docs[at:]``/``tfs[at:]``; returns its number of postings."""
    n = BLOCK if j < nb - 1 else df - BLOCK * (nb - 1)
    st = block_start(words, off, nb, j)
    h = int(words[st])
    wd = h & 0xFF
    wt = (h >> 8) & 0xFF
    base = 0
    if j > 0:
        base = int(words[off + j - 1]) + 1
    unpack_into(words, st + HEADER_WORDS, n, wd, docs, at)
    p = base - 1
    for i in range(n):
        p = p + 1 + int(docs[at + i])
        docs[at + i] = p
    if wt == 0:
        for i in range(n):
            tfs[at + i] = 1
    else:
        mask = (np.uint64(1) << np.uint64(wt)) - np.uint64(1)
        pb = n * wd
        for i in range(n):
            wi = st + HEADER_WORDS + (pb >> 5)
            sh = pb & 31
            x = np.uint64(words[wi]) >> np.uint64(sh)
            if sh + wt > 32:
                x |= np.uint64(words[wi + 1]) << np.uint64(32 - sh)
            tfs[at + i] = int(x & mask) + 1
            pb += wt
    return n


@_jit
def decode_term(words: np.ndarray, off: int, df: int) -> tuple[np.ndarray, np.ndarray]:
    docs = np.zeros(df, np.uint32)
    tfs = np.zeros(df, np.uint32)
    nb = (df + BLOCK - 1) // BLOCK
    at = 0
    for j in range(nb):
        at += decode_block(words, off, df, nb, j, docs, tfs, at)
    return docs, tfs


@_jit
def decode_terms(words: np.ndarray, offs: np.ndarray, dfs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The postings of several terms, concatenated in the given order."""
    total = 0
    for i in range(dfs.shape[0]):
        total += int(dfs[i])
    docs = np.zeros(total, np.uint32)
    tfs = np.zeros(total, np.uint32)
    at = 0
    for i in range(dfs.shape[0]):
        df = int(dfs[i])
        nb = (df + BLOCK - 1) // BLOCK
        for j in range(nb):
            at += decode_block(words, int(offs[i]), df, nb, j, docs, tfs, at)
    return docs, tfs


@_jit
def count_live(words: np.ndarray, off: int, df: int, live: np.ndarray) -> int:
    """How many of a term's postings are in ``live`` (bool per document)."""
    docs = np.zeros(BLOCK, np.uint32)
    tfs = np.zeros(BLOCK, np.uint32)
    nb = (df + BLOCK - 1) // BLOCK
    c = 0
    for j in range(nb):
        n = decode_block(words, off, df, nb, j, docs, tfs, 0)
        for i in range(n):
            if live[docs[i]]:
                c += 1
    return c


@_jit
def decode_positions(words: np.ndarray, off: int, total: int, tfs: np.ndarray) -> np.ndarray:
    """A term's positions (Σtf values, posting by posting), from its record at ``off``."""
    vals = np.zeros(total, np.int64)
    nc = (total + CHUNK - 1) // CHUNK
    st = off + (nc + 3) // 4
    for c in range(nc):
        w = int((words[off + c // 4] >> np.uint32(8 * (c % 4))) & np.uint32(0xFF))
        m = min(CHUNK, total - c * CHUNK)
        unpack_into(words, st, m, w, vals, c * CHUNK)
        st += (m * w + 31) // 32
    out = np.zeros(total, np.uint32)
    k = 0
    for j in range(tfs.shape[0]):
        prev = -1
        for _ in range(int(tfs[j])):
            prev = prev + 1 + vals[k]
            out[k] = prev
            k += 1
    return out


# --------------------------------------------------------------------------------------------- dictionary


@_jit
def encode_dictionary(
    offsets: np.ndarray, data: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Front-code sorted UTF-8 terms (``data[offsets[i]:offsets[i+1]]``, each <= 255 bytes) in
    blocks of DICT_BLOCK: (first_off u32[nb+1], first bytes, block_off u32[nb+1], block bytes).
    Block data: for every term of the block but its first, u8 shared-prefix length with the
    previous term, u8 suffix length, the suffix bytes."""
    n = offsets.shape[0] - 1
    nb = (n + DICT_BLOCK - 1) // DICT_BLOCK
    first_off = np.zeros(nb + 1, np.uint32)
    block_off = np.zeros(nb + 1, np.uint32)
    first = np.zeros(data.shape[0] + 1, np.uint8)
    body = np.zeros(data.shape[0] + 2 * n + 1, np.uint8)
    fo = 0
    bo = 0
    for blk in range(nb):
        lo = blk * DICT_BLOCK
        hi = min(n, lo + DICT_BLOCK)
        s = offsets[lo]
        e = offsets[lo + 1]
        for i in range(s, e):
            first[fo] = data[i]
            fo += 1
        first_off[blk + 1] = fo
        for t in range(lo + 1, hi):
            ps = offsets[t - 1]
            pl = offsets[t] - ps
            cs = offsets[t]
            cl = offsets[t + 1] - cs
            shared = 0
            while shared < pl and shared < cl and data[ps + shared] == data[cs + shared]:
                shared += 1
            body[bo] = shared
            body[bo + 1] = cl - shared
            bo += 2
            for i in range(cs + shared, cs + cl):
                body[bo] = data[i]
                bo += 1
        block_off[blk + 1] = bo
    return first_off, first[:fo], block_off, body[:bo]


@_jit
def decode_dictionary(
    first_off: np.ndarray, first: np.ndarray, block_off: np.ndarray, body: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Every term: (offsets int64[n+1], UTF-8 bytes), the inverse of ``encode_dictionary``.
    Raises ValueError on bytes that do not describe ``n`` terms."""
    nb = first_off.shape[0] - 1
    if block_off.shape[0] != nb + 1 or nb != (n + DICT_BLOCK - 1) // DICT_BLOCK:
        raise ValueError("bad dictionary")
    # pass 1: total length (and structure)
    total = 0
    for blk in range(nb):
        ln = int(first_off[blk + 1]) - int(first_off[blk])
        if ln < 0 or int(first_off[blk + 1]) > first.shape[0]:
            raise ValueError("bad dictionary")
        total += ln
        p = int(block_off[blk])
        e = int(block_off[blk + 1])
        if e < p or e > body.shape[0]:
            raise ValueError("bad dictionary")
        while p < e:
            if p + 2 > e:
                raise ValueError("bad dictionary")
            ln = int(body[p]) + int(body[p + 1])
            total += ln
            p += 2 + int(body[p + 1])
    out = np.zeros(total, np.uint8)
    offsets = np.zeros(n + 1, np.int64)
    o = 0
    t = 0
    for blk in range(nb):
        fs = int(first_off[blk])
        fe = int(first_off[blk + 1])
        if fe < fs or fe > first.shape[0] or t >= n:
            raise ValueError("bad dictionary")
        for i in range(fs, fe):
            out[o] = first[i]
            o += 1
        t += 1
        offsets[t] = o
        p = int(block_off[blk])
        e = int(block_off[blk + 1])
        if e < p or e > body.shape[0]:
            raise ValueError("bad dictionary")
        while p < e:
            if p + 2 > e or t >= n:
                raise ValueError("bad dictionary")
            shared = int(body[p])
            sl = int(body[p + 1])
            p += 2
            prev = offsets[t - 1]
            if shared > o - prev or p + sl > e:
                raise ValueError("bad dictionary")
            for i in range(shared):
                out[o + i] = out[prev + i]
            o += shared
            for i in range(sl):
                out[o] = body[p + i]
                o += 1
            p += sl
            t += 1
            offsets[t] = o
    if t != n:
        raise ValueError("bad dictionary")
    return offsets, out[:o]


@_jit
def _cmp(a: np.ndarray, a0: int, a1: int, q: np.ndarray) -> int:
    """Compare bytes a[a0:a1] with q: -1, 0 or 1."""
    la = a1 - a0
    lq = q.shape[0]
    m = la if la < lq else lq
    for i in range(m):
        x = a[a0 + i]
        y = q[i]
        if x != y:
            return -1 if x < y else 1
    if la == lq:
        return 0
    return -1 if la < lq else 1


@_jit
def lower_bound(
    first_off: np.ndarray, first: np.ndarray, block_off: np.ndarray, body: np.ndarray, n: int, q: np.ndarray
) -> tuple[int, bool]:
    """(ordinal of the first term >= q, whether it equals q); ordinal n when every term < q."""
    nb = first_off.shape[0] - 1
    if n == 0:
        return 0, False
    # last block whose first term <= q
    lo = 0
    hi = nb
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _cmp(first, int(first_off[mid]), int(first_off[mid + 1]), q) <= 0:
            lo = mid
        else:
            hi = mid
    blk = lo
    c = _cmp(first, int(first_off[blk]), int(first_off[blk + 1]), q)
    if c >= 0:  # only possible for block 0: q <= the first term
        return blk * DICT_BLOCK, c == 0
    buf = np.zeros(256, np.uint8)
    ln = int(first_off[blk + 1]) - int(first_off[blk])
    for i in range(ln):
        buf[i] = first[int(first_off[blk]) + i]
    t = blk * DICT_BLOCK
    p = int(block_off[blk])
    e = int(block_off[blk + 1])
    while p < e:
        shared = int(body[p])
        sl = int(body[p + 1])
        p += 2
        for i in range(sl):
            buf[shared + i] = body[p + i]
        p += sl
        ln = shared + sl
        t += 1
        c = _cmp(buf, 0, ln, q)
        if c >= 0:
            return t, c == 0
    return t + 1, False


# --------------------------------------------------------------------------------------------- top-k


@_inline
def _heap_sift_down(hs: np.ndarray, hd: np.ndarray, n: int, i: int) -> None:
    """Min-heap on (score, -doc): the root is the worst (lowest score; among equals, the highest doc)."""
    while True:
        left = 2 * i + 1
        if left >= n:
            return
        m = left
        r = left + 1
        if r < n and (hs[r] < hs[left] or (hs[r] == hs[left] and hd[r] > hd[left])):
            m = r
        if hs[m] < hs[i] or (hs[m] == hs[i] and hd[m] > hd[i]):
            hs[m], hs[i] = hs[i], hs[m]
            hd[m], hd[i] = hd[i], hd[m]
            i = m
        else:
            return


@_inline
def _heap_sift_up(hs: np.ndarray, hd: np.ndarray, i: int) -> None:
    while i > 0:
        p = (i - 1) // 2
        if hs[i] < hs[p] or (hs[i] == hs[p] and hd[i] > hd[p]):
            hs[p], hs[i] = hs[i], hs[p]
            hd[p], hd[i] = hd[i], hd[p]
            i = p
        else:
            return


@_inline
def _pair_bound(
    pair: int, w: float, mode: int, avgdl: float, a0: float, stretch: float, k1: float, b: float
) -> float:
    """Bound of one term's contribution to the documents of a block with this header pair word.

    mode 0: the query's k1/b differ from the file's: saturation <= 1, the bound is w, with slack
    (``w * tf / (tf + norm)`` can round above w: with k1 = 0 it is w·tf/tf). mode 1: the
    average length is the file's own: the block's best pair gives the exact largest contribution
    (computed as scores are, so no document of the block exceeds it unless the block is flagged
    ``NEAR_TIE``). mode 2: another average length a: the pair's saturation at a0, times
    max(1, a / a0), with slack."""
    if mode == 0 or (pair & 0xFFFFFFFF) == NO_PAIR:
        return w * (1.0 + 1e-12)
    tf = float(pair & 0xFFFF)
    dl = float((pair >> 16) & 0xFFFF)
    if mode == 1:
        return _contrib(w, tf, dl, avgdl, k1, b)
    return _contrib(w, tf, dl, a0, k1, b) * stretch * (1.0 + 1e-12)


@_inline
def _block_bound(
    words: np.ndarray,
    off: int,
    nb: int,
    j: int,
    w: float,
    mode: int,
    avgdl: float,
    a0: float,
    stretch: float,
    k1: float,
    b: float,
) -> float:
    st = block_start(words, off, nb, j)
    v = _pair_bound(int(words[st + 1]), w, mode, avgdl, a0, stretch, k1, b)
    if int(words[st]) & NEAR_TIE:
        v *= 1.0 + 1e-12
    return v


@_jit
def topk_maxscore(
    words: np.ndarray,
    doc_len: np.ndarray,
    offs: np.ndarray,
    dfs: np.ndarray,
    weights: np.ndarray,
    mode: int,
    avgdl: float,
    a0: float,
    stretch: float,
    k1: float,
    b: float,
    k: int,
    mask: np.ndarray,
    use_mask: bool,
    max_dl: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Block-max MaxScore over T terms (in query order; only terms with postings): the k best
    documents by (exact score descending, ordinal ascending), returned by ascending ordinal with
    their scores (bit-identical to ``score_query``'s).

    Every term's contribution is bounded per block (``_block_bound``) and overall (the largest
    block bound). Terms sorted by bound: the longest prefix of that order whose bounds sum to at
    most θ (the k-th best score so far) is "non-essential": a document containing none of the
    other terms cannot beat θ (a later document needs a score above θ: equal scores go to the
    lower ordinal), so candidates come from the essential terms, and the non-essential ones are
    probed through their skip tables only while the document can still beat θ. A window of
    essential blocks whose bounds sum to at most θ is skipped without being decoded beyond the
    block that starts it. Sums that decide a skip are taken in query-term order, like scores, so
    a tie with θ is skipped exactly; the other comparisons keep a relative MARGIN."""
    T = offs.shape[0]
    n_docs = doc_len.shape[0]
    INF = n_docs + 1
    nb = np.zeros(T, np.int64)
    bounds = np.zeros(T, np.float64)
    for t in range(T):
        nb[t] = (dfs[t] + BLOCK - 1) // BLOCK
        m = 0.0
        for j in range(nb[t]):
            v = _block_bound(words, offs[t], nb[t], j, weights[t], mode, avgdl, a0, stretch, k1, b)
            if v > m:
                m = v
        bounds[t] = m
    # the length normalisation of every document length below 4096, computed as _contrib does
    use_tab = max_dl < 4096
    tab = np.zeros(max_dl + 1 if use_tab else 1, np.float64)
    if use_tab:
        for dl in range(max_dl + 1):
            if avgdl > 0.0:
                tab[dl] = k1 * (1.0 - b + b * float(dl) / avgdl)
            else:
                tab[dl] = k1 * (1.0 - b)
    bd = np.zeros((T, BLOCK), np.int64)
    bt = np.zeros((T, BLOCK), np.int64)
    cb = np.zeros(T, np.int64)
    cnt = np.zeros(T, np.int64)
    pos = np.zeros(T, np.int64)
    cur = np.zeros(T, np.int64)
    last = np.zeros(T, np.int64)
    dec = np.ones(T, np.bool_)  # is block cb[t] decoded (else cur[t] is only a lower bound)?
    for t in range(T):
        cnt[t] = decode_block(words, offs[t], dfs[t], nb[t], 0, bd[t], bt[t], 0)
        cur[t] = bd[t, 0]
        last[t] = bd[t, cnt[t] - 1]
    order = np.argsort(bounds)
    is_ess = np.ones(T, np.bool_)
    ubpref = np.zeros(T + 1, np.float64)  # ubpref[i] = sum of bounds of order[0:i]
    for i in range(T):
        ubpref[i + 1] = ubpref[i] + bounds[order[i]]
    hs = np.zeros(max(k, 1), np.float64)
    hd = np.zeros(max(k, 1), np.int64)
    hn = 0
    theta = -1.0
    n_non = 0  # order[0:n_non] are non-essential
    c = np.zeros(T, np.float64)
    slack = 1.0 + MARGIN
    checked_end = -1  # documents up to here lie in a window whose bounds were checked
    while True:
        while n_non < T and ubpref[n_non + 1] * slack <= theta:
            is_ess[order[n_non]] = False
            n_non += 1
        if n_non == T:
            break
        # the next candidate: the smallest current document of the essential terms
        d = INF
        for i in range(n_non, T):
            t = order[i]
            if cur[t] < d:
                d = cur[t]
        if d >= INF:
            break
        if theta >= 0.0 and d > checked_end:
            # a window [d, wend] of essential blocks: skip it when their bounds cannot beat theta
            wend = INF
            for i in range(n_non, T):
                t = order[i]
                if cur[t] < INF and last[t] < wend:
                    wend = last[t]
            ub = 0.0
            for t in range(T):  # (query order, as scores are summed)
                if not is_ess[t]:
                    ub += bounds[t]
                elif cur[t] <= wend:
                    ub += _block_bound(
                        words, offs[t], nb[t], cb[t], weights[t], mode, avgdl, a0, stretch, k1, b
                    )
            if ub <= theta:
                target = wend + 1
                for i in range(n_non, T):
                    t = order[i]
                    _shallow(words, offs[t], nb[t], t, target, bd, cb, cnt, pos, cur, last, dec, INF)
                continue
            checked_end = wend
        again = False
        for i in range(n_non, T):
            t = order[i]
            if cur[t] == d and not dec[t]:
                _advance(words, offs[t], dfs[t], nb[t], t, d, bd, bt, cb, cnt, pos, cur, last, dec, INF)
                again = True
        if again:
            continue
        if use_mask and not mask[d]:
            for i in range(n_non, T):
                t = order[i]
                if cur[t] == d:
                    p = pos[t] + 1
                    if p < cnt[t]:
                        pos[t] = p
                        cur[t] = bd[t, p]
                    else:
                        _next(words, offs[t], dfs[t], nb[t], t, bd, bt, cb, cnt, pos, cur, last, INF)
            continue
        dl = int(doc_len[d])
        norm = (
            tab[dl]
            if use_tab
            else (k1 * (1.0 - b + b * float(dl) / avgdl) if avgdl > 0.0 else k1 * (1.0 - b))
        )
        s = 0.0
        for t in range(T):
            c[t] = 0.0
        for i in range(n_non, T):
            t = order[i]
            if cur[t] == d:
                tf = float(bt[t, pos[t]])
                c[t] = weights[t] * tf / (tf + norm)
                s += c[t]
                p = pos[t] + 1
                if p < cnt[t]:
                    pos[t] = p
                    cur[t] = bd[t, p]
                else:
                    _next(words, offs[t], dfs[t], nb[t], t, bd, bt, cb, cnt, pos, cur, last, INF)
        ok = True
        for i in range(n_non - 1, -1, -1):
            t = order[i]
            if (s + ubpref[i + 1]) * slack <= theta:
                ok = False
                break
            if cur[t] < d:
                j = _block_of(words, offs[t], nb[t], cb[t], d, last[t])
                if j >= nb[t]:
                    cur[t] = INF
                    continue
                bb = _block_bound(words, offs[t], nb[t], j, weights[t], mode, avgdl, a0, stretch, k1, b)
                if (s + bb + ubpref[i]) * slack <= theta:
                    ok = False
                    break
                _advance(words, offs[t], dfs[t], nb[t], t, d, bd, bt, cb, cnt, pos, cur, last, dec, INF)
            if cur[t] == d:
                tf = float(bt[t, pos[t]])
                c[t] = weights[t] * tf / (tf + norm)
                s += c[t]
        if not ok:
            continue
        exact = 0.0
        for t in range(T):
            exact += c[t]
        if hn < k:
            hs[hn] = exact
            hd[hn] = d
            _heap_sift_up(hs, hd, hn)
            hn += 1
            if hn == k:
                theta = hs[0]
        elif exact > hs[0]:  # (equal: the earlier, lower ordinal keeps its place)
            hs[0] = exact
            hd[0] = d
            _heap_sift_down(hs, hd, hn, 0)
            theta = hs[0]
    o = np.argsort(hd[:hn])
    return hd[:hn][o].copy(), hs[:hn][o].copy()


@_inline
def _block_last(words: np.ndarray, off: int, nb: int, j: int, n_docs_last: int) -> int:
    if nb == 1:
        return n_docs_last
    return int(words[off + j])


@_inline
def _block_of(words: np.ndarray, off: int, nb: int, j0: int, target: int, cur_last: int) -> int:
    """The first block at or after j0 whose last document is >= target (nb if none)."""
    if nb == 1:
        return 0 if cur_last >= target else 1
    j = j0
    if int(words[off + j]) >= target:
        return j
    # gallop, then binary search
    step = 1
    lo = j
    hi = j + 1
    while hi < nb and int(words[off + hi]) < target:
        lo = hi
        step *= 2
        hi = lo + step
    if hi >= nb:
        hi = nb
        if int(words[off + nb - 1]) < target:
            return nb
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if int(words[off + mid]) >= target:
            hi = mid
        else:
            lo = mid
    return hi


@_inline
def _advance(
    words: np.ndarray,
    off: int,
    df: int,
    nb: int,
    t: int,
    target: int,
    bd: np.ndarray,
    bt: np.ndarray,
    cb: np.ndarray,
    cnt: np.ndarray,
    pos: np.ndarray,
    cur: np.ndarray,
    last: np.ndarray,
    dec: np.ndarray,
    INF: int,
) -> None:
    """Move term t's cursor to its first document >= target (INF when there is none), decoding
    the block it lands in."""
    if cur[t] >= target:
        if dec[t]:
            return
        target = cur[t]  # a lower bound of a block not decoded yet: find the real document
    j = _block_of(words, off, nb, cb[t], target, last[t])
    if j >= nb:
        cur[t] = INF
        dec[t] = True
        return
    if j != cb[t] or not dec[t]:
        cnt[t] = decode_block(words, off, df, nb, j, bd[t], bt[t], 0)
        cb[t] = j
        pos[t] = 0
        last[t] = bd[t, cnt[t] - 1]
        dec[t] = True
    p = pos[t]
    n = cnt[t]
    while p < n and bd[t, p] < target:
        p += 1
    pos[t] = p
    cur[t] = bd[t, p] if p < n else INF


@_inline
def _shallow(
    words: np.ndarray,
    off: int,
    nb: int,
    t: int,
    target: int,
    bd: np.ndarray,
    cb: np.ndarray,
    cnt: np.ndarray,
    pos: np.ndarray,
    cur: np.ndarray,
    last: np.ndarray,
    dec: np.ndarray,
    INF: int,
) -> None:
    """Move term t's cursor to the block holding its first document >= target without decoding
    it: ``cur[t]`` becomes a lower bound (``dec[t]`` False) until ``_advance`` decodes it."""
    if cur[t] >= target:
        return
    j = _block_of(words, off, nb, cb[t], target, last[t])
    if j >= nb:
        cur[t] = INF
        dec[t] = True
        return
    if j == cb[t] and dec[t]:
        p = pos[t]
        n = cnt[t]
        while p < n and bd[t, p] < target:
            p += 1
        pos[t] = p
        cur[t] = bd[t, p] if p < n else INF
        return
    if j != cb[t]:
        cb[t] = j
        dec[t] = False
        last[t] = int(words[off + j])  # (nb > 1 here: a single block is never left undecoded)
        base = int(words[off + j - 1]) + 1 if j > 0 else 0
        cur[t] = base if base > target else target
        return
    cur[t] = target  # same block, still not decoded: a higher lower bound


@_inline
def _next(
    words: np.ndarray,
    off: int,
    df: int,
    nb: int,
    t: int,
    bd: np.ndarray,
    bt: np.ndarray,
    cb: np.ndarray,
    cnt: np.ndarray,
    pos: np.ndarray,
    cur: np.ndarray,
    last: np.ndarray,
    INF: int,
) -> None:
    p = pos[t] + 1
    if p < cnt[t]:
        pos[t] = p
        cur[t] = bd[t, p]
        return
    j = cb[t] + 1
    if j >= nb:
        cur[t] = INF
        pos[t] = p
        return
    cnt[t] = decode_block(words, off, df, nb, j, bd[t], bt[t], 0)
    cb[t] = j
    pos[t] = 0
    cur[t] = bd[t, 0]
    last[t] = bd[t, cnt[t] - 1]
