"""Block-compressed postings (``fts`` files of segment format v2) and their BM25 top-k.

Role: the in-memory form of a v2 ``fts.<attr>`` file (docs/formats/fts-v2.md) — arrays viewed over
the file's bytes — with the interface the BM25 functions of ``bm25.py`` use (``term_id``,
``df``, ``postings``, ``prefix_range``, ``term_positions``, ``live_df``), plus ``block_topk``:
block-max MaxScore over the compressed blocks, which returns exactly what ``score_query_topk``
returns (the documents scoring at least the k-th best score, ties included, bit-identical
scores) while decoding only the blocks that can still matter.

Invariants: terms are sorted by UTF-8 bytes and unique; term t's postings are df[t] >= 1 strictly
ascending documents with tf >= 1; ``doc_len[d]`` is the number of tokens of document d. The
postings (and positions) regions may be partly loaded: a ``Region`` knows which pages it holds
and asks its ``loader`` (given by the segment reader; it does the I/O) for missing ones before a
kernel reads them. Pure: no I/O of its own, no asyncio.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from lagoon.errors import DataCorruption, InternalError
from lagoon.index.text import kernels as K
from lagoon.index.text.bm25 import (
    PREFIX_SCORE,
    BoolArray,
    FloatArray,
    IntArray,
    Postings,
    TermStats,
    U32Array,
    distinct_terms,
    query_weight,
    score_query,
)

PageLoader = Callable[[Sequence[int]], list[bytes]]


def read_only(a: np.ndarray) -> np.ndarray:
    """A read-only view: kernels always receive read-only arrays, so each compiles once."""
    v = a.view()
    v.flags.writeable = False
    return v


"""Given page numbers, their bytes (verified by the caller's checksums)."""


class Region:
    """A region of uint32 words stored in pages of ``page_bytes``; some pages may be absent.

    ``words`` always has the region's full length (absent pages read as zeros, never used:
    ``ensure`` is called before any kernel reads a range). Thread-safe."""

    def __init__(
        self, words: np.ndarray, page_bytes: int, *, loaded: bool = True, loader: PageLoader | None = None
    ) -> None:
        if page_bytes % 4 or page_bytes <= 0:
            raise InternalError("page size must be a positive multiple of 4")
        self._buf = words
        self.words = read_only(words)  # what kernels read (one array type: compiled once)
        self.page_bytes = page_bytes
        self.n_pages = (words.shape[0] * 4 + page_bytes - 1) // page_bytes
        self._have = None if loaded else np.zeros(self.n_pages, np.bool_)
        self._loader = loader
        self._lock = threading.Lock()

    @property
    def complete(self) -> bool:
        return self._have is None

    @property
    def loaded_fraction(self) -> float:
        return 1.0 if self._have is None else float(self._have.mean()) if self.n_pages else 1.0

    def ensure(self, ranges: Sequence[tuple[int, int]]) -> None:
        """Make the words ``[lo, hi)`` of every range readable (fetching missing pages at once)."""
        have = self._have
        if have is None:
            return
        pw = self.page_bytes // 4
        want: set[int] = set()
        for lo, hi in ranges:
            if hi > lo:
                want.update(range(lo // pw, (hi - 1) // pw + 1))
        with self._lock:
            missing = sorted(p for p in want if not have[p])
            if not missing:
                return
            if self._loader is None:
                raise InternalError("postings pages are missing and nothing can load them")
            pages = self._loader(missing)
            if len(pages) != len(missing):
                raise DataCorruption("postings: the page loader returned the wrong number of pages")
            for p, data in zip(missing, pages, strict=True):
                lo = p * pw
                arr = np.frombuffer(data, dtype="<u4")
                if arr.shape[0] != min(pw, self._buf.shape[0] - lo):
                    raise DataCorruption(f"postings: page {p} has {len(data)} bytes")
                self._buf[lo : lo + arr.shape[0]] = arr
                have[p] = True

    def fill(self, words: np.ndarray) -> None:
        """Hand over the whole region (e.g. after a background fetch of the whole file)."""
        if words.shape != self.words.shape:
            raise InternalError("fill: region size differs")
        with self._lock:
            self._buf = words
            self.words = read_only(words)
            self._have = None


@dataclass(eq=False)
class BlockPostings:
    """The postings of one v2 ``fts`` file (see module doc). Built by the segment reader."""

    n_terms: int
    doc_len: npt.NDArray[Any]  # uint8 / uint16 / uint32 [n_docs]
    dict_first_off: U32Array
    dict_first: npt.NDArray[np.uint8]
    dict_block_off: U32Array
    dict_data: npt.NDArray[np.uint8]
    dfs: IntArray  # int64[n_terms]
    post_off: IntArray  # int64[n_terms + 1], word offsets into ``post``
    post: Region
    pos_off: IntArray | None  # int64[n_terms + 1] into ``pos``, None without positions
    pos: Region | None
    bound_k1: float
    bound_b: float
    bound_avgdl: float
    _saturation: dict[tuple[float, float], tuple[float, FloatArray]] = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------ the Postings interface

    @property
    def n_docs(self) -> int:
        return int(self.doc_len.shape[0])

    @property
    def has_positions(self) -> bool:
        return self.pos_off is not None

    @cached_property
    def term_ptr(self) -> IntArray:
        """Cumulative document frequencies (the ``Postings.term_ptr`` of the same index)."""
        ptr = np.zeros(self.n_terms + 1, np.int64)
        np.cumsum(self.dfs, out=ptr[1:])
        return ptr

    @cached_property
    def max_doc_len(self) -> int:
        return int(self.doc_len.max()) if self.n_docs else 0

    @cached_property
    def corpus_totals(self) -> tuple[int, int]:
        return int(np.count_nonzero(self.doc_len)), int(self.doc_len.sum(dtype=np.int64))

    @cached_property
    def terms(self) -> list[str]:
        """Every term, in order (decodes the whole dictionary: for compaction and tests)."""
        offsets, data = K.decode_dictionary(
            read_only(self.dict_first_off),
            read_only(self.dict_first),
            read_only(self.dict_block_off),
            read_only(self.dict_data),
            self.n_terms,
        )
        arr = pa.LargeStringArray.from_buffers(self.n_terms, pa.py_buffer(offsets), pa.py_buffer(data))
        out: list[str] = arr.to_pylist()
        return out

    def _lower_bound(self, term: str) -> tuple[int, bool]:
        q = np.frombuffer(term.encode("utf-8", "surrogatepass"), np.uint8)  # (read-only)
        lo, eq = K.lower_bound(
            self.dict_first_off, self.dict_first, self.dict_block_off, self.dict_data, self.n_terms, q
        )
        return int(lo), bool(eq)

    def term_id(self, term: str) -> int | None:
        if not term or len(term) > 255:  # (no term is empty or longer than 255 bytes)
            return None
        i, eq = self._lower_bound(term)
        return i if eq else None

    def df(self, term_id: int) -> int:
        return int(self.dfs[term_id])

    def prefix_range(self, prefix: str) -> tuple[int, int]:
        if not prefix:
            return (0, 0)
        lo, _ = self._lower_bound(prefix)
        last = prefix[-1]
        if ord(last) < 0x10FFFF:
            hi, _ = self._lower_bound(prefix[:-1] + chr(ord(last) + 1))
        else:  # pragma: no cover - a prefix ending in U+10FFFF
            hi = lo
            terms = self.terms
            while hi < len(terms) and terms[hi].startswith(prefix):
                hi += 1
        return lo, hi

    def prefetch(self, terms: Sequence[str], *, positions: bool = False) -> None:
        """Load the postings (and positions) pages of every term at once: one round of ranged
        reads for a file opened from its head, instead of one per term."""
        tids = [t for t in (self.term_id(x) for x in terms) if t is not None]
        if not tids:
            return
        pos, pos_off = self.pos, self.pos_off
        if not positions or pos is None or pos_off is None or pos.complete:
            self._ensure_terms(tids)
            return
        want = [(int(pos_off[t]), int(pos_off[t + 1])) for t in tids]
        if self.post.complete:
            pos.ensure(want)
            return
        with ThreadPoolExecutor(2) as pool:  # both regions' pages in the same round
            done = [pool.submit(self._ensure_terms, tids), pool.submit(pos.ensure, want)]
            for f in done:
                f.result()

    def _ensure_terms(self, tids: Sequence[int] | IntArray) -> None:
        self.post.ensure([(int(self.post_off[t]), int(self.post_off[t + 1])) for t in tids])

    def postings(self, term_id: int) -> tuple[U32Array, U32Array]:
        self._ensure_terms([term_id])
        docs, tfs = K.decode_term(self.post.words, int(self.post_off[term_id]), int(self.dfs[term_id]))
        return docs, tfs

    def __post_init__(self) -> None:
        # the file's narrowest width (u8 for short documents: the scoring loop's random reads stay
        # in cache); the kernels are compiled for u8, u16 and u32 (``warm_kernels``)
        if self.doc_len.dtype not in (np.uint8, np.uint16, np.uint32):
            self.doc_len = self.doc_len.astype(np.uint32)
        self.doc_len = read_only(np.ascontiguousarray(self.doc_len))
        self.dfs = read_only(self.dfs)
        self.post_off = read_only(self.post_off)
        if self.pos_off is not None:
            self.pos_off = read_only(self.pos_off)

    def docs_of_terms(self, lo: int, hi: int) -> U32Array:
        """The documents of terms ``lo..hi-1``, concatenated (not deduplicated)."""
        if hi <= lo:
            return np.zeros(0, np.uint32)
        self.post.ensure([(int(self.post_off[lo]), int(self.post_off[hi]))])
        docs, _ = K.decode_terms(self.post.words, read_only(self.post_off[lo:hi]), read_only(self.dfs[lo:hi]))
        return docs

    def live_df(self, term_id: int, live: BoolArray) -> int:
        self._ensure_terms([term_id])
        w, off, df = self.post.words, int(self.post_off[term_id]), int(self.dfs[term_id])
        return int(K.count_live(w, off, df, read_only(np.ascontiguousarray(live, dtype=np.bool_))))

    def term_positions(self, term_id: int) -> tuple[U32Array, U32Array, IntArray, U32Array]:
        """(docs, tfs, pos_ptr (df + 1), positions) of one term."""
        if self.pos_off is None or self.pos is None:
            raise InternalError("these postings have no positions")
        docs, tfs = self.postings(term_id)
        ptr = np.zeros(docs.shape[0] + 1, np.int64)
        np.cumsum(tfs, out=ptr[1:])
        lo, hi = int(self.pos_off[term_id]), int(self.pos_off[term_id + 1])
        self.pos.ensure([(lo, hi)])
        positions = K.decode_positions(self.pos.words, lo, int(ptr[-1]), read_only(tfs))
        return docs, tfs, ptr, positions

    def to_postings(self) -> Postings:
        """Everything decoded into an uncompressed ``Postings`` (compaction merges those)."""
        n = self.n_terms
        self.post.ensure([(0, int(self.post_off[n]))])
        docs, tfs = K.decode_terms(self.post.words, read_only(self.post_off[:n]), read_only(self.dfs))
        positions = None
        if self.pos_off is not None and self.pos is not None:
            self.pos.ensure([(0, int(self.pos_off[n]))])
            chunks = []
            ptr = self.term_ptr
            for t in range(n):
                lo, hi = int(ptr[t]), int(ptr[t + 1])
                t_tfs = read_only(tfs[lo:hi])
                chunks.append(
                    K.decode_positions(self.pos.words, int(self.pos_off[t]), int(t_tfs.sum()), t_tfs)
                )
            positions = np.concatenate(chunks) if chunks else np.zeros(0, np.uint32)
        return Postings(
            terms=self.terms,
            term_ptr=self.term_ptr,
            docs=docs,
            tfs=tfs,
            doc_len=self.doc_len.astype(np.uint32),
            positions=positions,
        )


def block_topk(
    postings: BlockPostings,
    query_terms: Sequence[str],
    k: int,
    stats: TermStats,
    candidates: BoolArray | None = None,
    *,
    prefixes: Sequence[str] = (),
    k1: float = 1.2,
    b: float = 0.75,
    k3: float = 8.0,
    term_ids: Sequence[int | None] | None = None,
) -> tuple[IntArray, FloatArray]:
    """The ``k`` best documents of ``candidates`` (None: all) by (score descending, ordinal
    ascending), ascending by ordinal, with the scores ``score_query`` gives them (bit for bit).
    Segment rows are in id order, so this is also the (score, id) order queries rank by.

    Each block stores its best (tf, length) pair for the file's (k1, b, average length a0): with
    the same k1, b and a0 it gives the block's exact largest contribution; for another average
    length a, a block's saturation ``tf / (tf + k1·(1 - b + b·dl/a))`` is at most the pair's
    saturation at a0 × max(1, a/a0) (the length term shrinks by a0/a at most); with other k1 or b
    the bound is 1 (saturation never exceeds 1). Prefix queries score every match
    (``score_query``) and keep the k best. ``term_ids``: the term id (or None) of each distinct
    query term, when the caller has looked them up already."""
    terms, qtf = distinct_terms(query_terms)
    if stats.terms != terms:
        raise InternalError("block_topk: stats were computed for other query terms")
    if candidates is not None and (candidates.shape != (postings.n_docs,) or candidates.dtype != np.bool_):
        raise InternalError(f"candidates must be bool[{postings.n_docs}]")
    if k <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float64)
    if prefixes:
        docs, scores = score_query(
            postings, query_terms, candidates, stats, prefixes=prefixes, k1=k1, b=b, k3=k3
        )
        return _best_k_by_ordinal(docs, scores, k)
    weights = stats.idf() * query_weight(qtf, k3)
    avgdl = stats.avgdl
    tids, ws = _present_terms(postings, terms, weights, term_ids)
    if not tids:
        return np.zeros(0, np.int64), np.zeros(0, np.float64)
    postings._ensure_terms(tids)
    tid_arr = np.asarray(tids, np.int64)
    a0 = postings.bound_avgdl
    mode, stretch = _bound_mode(postings, k1, b, avgdl)
    mask = np.ascontiguousarray(candidates) if candidates is not None else np.zeros(0, np.bool_)
    docs, scores = K.topk_maxscore(
        postings.post.words,
        postings.doc_len,
        read_only(postings.post_off[tid_arr]),
        read_only(postings.dfs[tid_arr]),
        read_only(np.asarray(ws, np.float64)),
        mode,
        float(avgdl),
        float(a0),
        float(stretch),
        float(k1),
        float(b),
        int(k),
        read_only(mask),
        candidates is not None,
        postings.max_doc_len,
    )
    return docs, scores


def _best_k_by_ordinal(docs: IntArray, scores: FloatArray, k: int) -> tuple[IntArray, FloatArray]:
    """The ``k`` best of scored documents (ordinals ascending), ascending by ordinal."""
    from lagoon.index.text.bm25 import top_k

    if docs.shape[0] <= k:
        return docs, scores
    best, best_scores = top_k(docs, scores, k)
    order = np.argsort(best)
    return best[order], best_scores[order]


def _present_terms(
    postings: BlockPostings,
    terms: Sequence[str],
    weights: FloatArray,
    term_ids: Sequence[int | None] | None,
) -> tuple[list[int], list[float]]:
    """The term ids and query weights of the distinct ``terms`` the postings hold."""
    if term_ids is not None and len(term_ids) != len(terms):
        raise InternalError("block_topk: one term id per distinct query term")
    tids: list[int] = []
    ws: list[float] = []
    for i, t in enumerate(terms):
        tid = postings.term_id(t) if term_ids is None else term_ids[i]
        if tid is not None:
            tids.append(tid)
            ws.append(float(weights[i]))
    return tids, ws


def _bound_mode(postings: BlockPostings, k1: float, b: float, avgdl: float) -> tuple[int, float]:
    """How the blocks' stored best pairs bound a term's contribution (``kernels._pair_bound``):
    mode 0 (stored for other k1/b: saturation <= 1), 1 (the file's own average length: exact)
    or 2 (another average length: the pair's bound stretched by max(1, avgdl / a0))."""
    a0 = postings.bound_avgdl
    if k1 != postings.bound_k1 or b != postings.bound_b or a0 <= 0 or avgdl <= 0:
        return 0, 1.0
    if avgdl == a0:
        return 1, 1.0
    return 2, max(1.0, avgdl / a0)


def encode_dictionary(terms: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Front-coded dictionary arrays of sorted terms (``kernels.encode_dictionary``)."""
    arr = pa.array(list(terms), type=pa.large_string())
    n = len(terms)
    if n == 0:
        z = np.zeros(1, np.uint32)
        return z, np.zeros(0, np.uint8), z.copy(), np.zeros(0, np.uint8)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64, count=n + 1)
    data = np.frombuffer(arr.buffers()[2], dtype=np.uint8)
    if int(np.diff(offsets).max()) > 255:
        raise InternalError("a term is longer than 255 bytes")
    return K.encode_dictionary(
        read_only(offsets - offsets[0]), read_only(data[int(offsets[0]) : int(offsets[-1])])
    )


__all__ = ["PREFIX_SCORE", "BlockPostings", "PageLoader", "Region", "block_topk", "encode_dictionary"]
