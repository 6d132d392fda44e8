"""BM25 over an in-memory inverted index: postings, corpus statistics, scoring and token filters.

Role: the pure, vectorised (numpy) core of Lagoon's full-text search. ``build_postings`` turns the
token lists of a batch of documents (a segment, or the unindexed WAL tail) into ``Postings``;
``score_query`` ranks the documents of one ``Postings`` for a query; ``local_stats`` gives the
statistics that callers add up across several ``Postings`` (segments + WAL tail) so that every
source is scored with the same global N, avgdl and df, computed over live documents only. The
exact formula is stated in ``docs/bm25.md``; in short, for distinct query terms t::

    score(d) = Σ_t  qw(t) · idf(t) · tf / (tf + k1 · (1 - b + b · dl / avgdl))  [+ 1.0 prefix match]
    idf(t)   = ln(1 + (N - df + 0.5) / (df + 0.5))
    qw(t)    = qtf · (k3 + 1) / (qtf + k3)

Invariants of ``Postings`` (checked by ``Postings.validate``): ``terms`` is sorted by code point
and has no duplicates; the postings of term i are ``docs[term_ptr[i]:term_ptr[i+1]]`` with
strictly ascending doc ordinals and ``tfs >= 1``; ``doc_len[d]`` is the number of tokens of d and
equals the sum of its tfs; positions (optional) of posting j are
``positions[pos_ptr[j]:pos_ptr[j+1]]``, ascending, below ``doc_len`` of its doc, with
``pos_ptr = [0, cumsum(tfs)]``. A document with no tokens (null, empty or all stopwords) has
length 0, no postings, and does not count in N.

Pure functions: no I/O, no asyncio. Scores are float64.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Protocol

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from lagoon.errors import InternalError
from lagoon.format.segment import gather_runs
from lagoon.index.text.analyze import TokenBatch

DOC_DTYPE = np.uint32
TF_DTYPE = np.uint32
POS_DTYPE = np.uint32

BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
U32Array = npt.NDArray[np.uint32]

PREFIX_SCORE = 1.0
"""What a document gains when it contains a term that starts with the query's prefix."""


# ---------------------------------------------------------------------------------------------
# Formula


def idf(n_docs: int | IntArray, df: int | IntArray | FloatArray) -> FloatArray:
    """Lucene's BM25 idf: ``ln(1 + (N - df + 0.5) / (df + 0.5))`` (always > 0 when df <= N)."""
    n = np.asarray(n_docs, dtype=np.float64)
    d = np.asarray(df, dtype=np.float64)
    return np.log1p((n - d + 0.5) / (d + 0.5))


def query_weight(qtf: int | IntArray, k3: float) -> FloatArray:
    """Query-term saturation ``qtf · (k3 + 1) / (qtf + k3)``: 1 for a term that occurs once."""
    q = np.asarray(qtf, dtype=np.float64)
    return q * (k3 + 1.0) / (q + k3)


def score(
    tf: npt.ArrayLike, doc_len: npt.ArrayLike, idf: float | FloatArray, avgdl: float, k1: float, b: float
) -> FloatArray:
    """One term's BM25 contribution: ``idf · tf / (tf + k1 · (1 - b + b · dl / avgdl))``."""
    tf64 = np.asarray(tf, dtype=np.float64)
    dl64 = np.asarray(doc_len, dtype=np.float64)
    norm = k1 * (1.0 - b + b * dl64 / avgdl) if avgdl > 0 else np.full_like(dl64, k1 * (1.0 - b))
    result: FloatArray = idf * tf64 / (tf64 + norm)
    return result


# ---------------------------------------------------------------------------------------------
# Postings


class TermIndex(Protocol):
    """What scoring, statistics and token filters need of an inverted index: ``Postings``
    (uncompressed arrays) and ``blockpostings.BlockPostings`` (segment format v2) provide it."""

    @property
    def n_docs(self) -> int: ...
    @property
    def n_terms(self) -> int: ...
    @property
    def doc_len(self) -> npt.NDArray[np.unsignedinteger]: ...  # type: ignore[type-arg]
    @property
    def corpus_totals(self) -> tuple[int, int]: ...
    @property
    def has_positions(self) -> bool: ...
    def term_id(self, term: str) -> int | None: ...
    def df(self, term_id: int) -> int: ...
    def live_df(self, term_id: int, live: BoolArray) -> int: ...
    def postings(self, term_id: int) -> tuple[U32Array, U32Array]: ...
    def docs_of_terms(self, lo: int, hi: int) -> U32Array: ...
    def prefix_range(self, prefix: str) -> tuple[int, int]: ...
    def term_positions(self, term_id: int) -> tuple[U32Array, U32Array, IntArray, U32Array]: ...


@dataclass(frozen=True, eq=False)
class Postings:
    """An inverted index over ``n_docs`` documents with ordinals 0..n_docs-1 (see module doc)."""

    terms: list[str]
    term_ptr: IntArray  # int64[len(terms) + 1]
    docs: U32Array  # uint32[nnz]
    tfs: U32Array  # uint32[nnz]
    doc_len: U32Array  # uint32[n_docs]
    positions: U32Array | None = None  # uint32[sum(tfs)] or None
    _index: dict[str, int] = field(init=False, repr=False, compare=False)
    _saturation: dict[tuple[float, float], tuple[float, FloatArray]] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {t: i for i, t in enumerate(self.terms)})
        object.__setattr__(self, "_saturation", {})

    @classmethod
    def empty(cls, n_docs: int = 0, *, with_positions: bool = True) -> Postings:
        return cls(
            terms=[],
            term_ptr=np.zeros(1, np.int64),
            docs=np.zeros(0, DOC_DTYPE),
            tfs=np.zeros(0, TF_DTYPE),
            doc_len=np.zeros(n_docs, DOC_DTYPE),
            positions=np.zeros(0, POS_DTYPE) if with_positions else None,
        )

    @property
    def n_docs(self) -> int:
        return int(self.doc_len.shape[0])

    @property
    def n_terms(self) -> int:
        return len(self.terms)

    @cached_property
    def pos_ptr(self) -> IntArray:
        """Start of each posting's positions (length nnz + 1)."""
        ptr = np.zeros(self.docs.shape[0] + 1, np.int64)
        np.cumsum(self.tfs, out=ptr[1:])
        return ptr

    @cached_property
    def corpus_totals(self) -> tuple[int, int]:
        """(documents with at least one token, total tokens), all documents counted live."""
        return int(np.count_nonzero(self.doc_len)), int(self.doc_len.sum(dtype=np.int64))

    @cached_property
    def term_bounds(self) -> tuple[U32Array, U32Array]:
        """(largest tf, smallest document length) among each term's postings: with them a term's
        BM25 contribution to any document is bounded (``score`` grows with tf, falls with length)."""
        n = self.n_terms
        max_tf = np.zeros(n, TF_DTYPE)
        min_dl = np.zeros(n, DOC_DTYPE)
        nonempty = np.flatnonzero(np.diff(self.term_ptr) > 0)
        if nonempty.shape[0]:
            starts = self.term_ptr[nonempty]
            max_tf[nonempty] = np.maximum.reduceat(self.tfs, starts)
            min_dl[nonempty] = np.minimum.reduceat(self.doc_len[self.docs], starts)
        return max_tf, min_dl

    def term_max_saturation(self, k1: float, b: float) -> tuple[float, FloatArray]:
        """(a0, m): a0 = this index's own average document length, m[t] = the largest
        ``tf / (tf + k1 · (1 - b + b · dl / a0))`` among term t's postings (computed once per
        (k1, b)). For another average length a, the same expression is at most m[t] · max(1, a/a0)
        (the length term shrinks by a0/a at most), a much tighter bound than ``term_bounds``."""
        key = (float(k1), float(b))
        hit = self._saturation.get(key)
        if hit is None:
            n, total = self.corpus_totals
            a0 = total / n if n else 0.0
            m = np.zeros(self.n_terms, np.float64)
            nonempty = np.flatnonzero(np.diff(self.term_ptr) > 0)
            if a0 > 0 and nonempty.shape[0]:
                sat = score(self.tfs, self.doc_len[self.docs], 1.0, a0, k1, b)
                m[nonempty] = np.maximum.reduceat(sat, self.term_ptr[nonempty])
            hit = (a0, m)
            self._saturation[key] = hit
        return hit

    def term_id(self, term: str) -> int | None:
        return self._index.get(term)

    @property
    def has_positions(self) -> bool:
        return self.positions is not None

    def df(self, term_id: int) -> int:
        """Number of documents containing the term."""
        return int(self.term_ptr[term_id + 1] - self.term_ptr[term_id])

    def live_df(self, term_id: int, live: BoolArray) -> int:
        """Number of ``live`` documents containing the term."""
        return int(np.count_nonzero(live[self.postings(term_id)[0]]))

    def postings(self, term_id: int) -> tuple[U32Array, U32Array]:
        """(doc ordinals, term frequencies) of one term."""
        lo, hi = int(self.term_ptr[term_id]), int(self.term_ptr[term_id + 1])
        return self.docs[lo:hi], self.tfs[lo:hi]

    def docs_of_terms(self, lo: int, hi: int) -> U32Array:
        """The documents of terms ``lo..hi-1``, concatenated (not deduplicated)."""
        return self.docs[self.term_ptr[lo] : self.term_ptr[hi]]

    def term_positions(self, term_id: int) -> tuple[U32Array, U32Array, IntArray, U32Array]:
        """(docs, tfs, pos_ptr (df + 1, from 0), positions) of one term."""
        if self.positions is None:
            raise InternalError("these postings have no positions")
        lo, hi = int(self.term_ptr[term_id]), int(self.term_ptr[term_id + 1])
        ptr = self.pos_ptr[lo : hi + 1]
        return self.docs[lo:hi], self.tfs[lo:hi], ptr - ptr[0], self.positions[ptr[0] : ptr[-1]]

    def prefix_range(self, prefix: str) -> tuple[int, int]:
        """Term ids ``[lo, hi)`` of the terms that start with ``prefix`` (contiguous: terms are sorted)."""
        if not prefix:
            return (0, 0)
        lo = bisect.bisect_left(self.terms, prefix)
        last = prefix[-1]
        if ord(last) < 0x10FFFF:
            hi = bisect.bisect_left(self.terms, prefix[:-1] + chr(ord(last) + 1), lo)
        else:  # pragma: no cover - a prefix ending in U+10FFFF
            hi = lo
            while hi < len(self.terms) and self.terms[hi].startswith(prefix):
                hi += 1
        return lo, hi

    def validate(self) -> None:
        """Check every invariant of the module docstring; raise ``InternalError`` if one fails.

        Meant for loaders of persisted postings (after the checksum) and for tests.
        """
        v = len(self.terms)

        def fail(what: str) -> None:
            raise InternalError(f"invalid postings: {what}")

        if any(self.terms[i] >= self.terms[i + 1] for i in range(v - 1)):
            fail("terms are not sorted and unique")
        ptr = self.term_ptr
        nnz = self.docs.shape[0]
        if ptr.shape != (v + 1,) or ptr[0] != 0 or ptr[-1] != nnz or np.any(np.diff(ptr) < 0):
            fail("term_ptr does not delimit the postings")
        if self.tfs.shape != (nnz,) or (nnz and int(self.tfs.min()) < 1):
            fail("tfs must be >= 1, one per posting")
        if np.any(np.diff(ptr) == 0):
            fail("a term has no postings")
        if nnz:
            if int(self.docs.max()) >= self.n_docs:
                fail("doc ordinal out of range")
            steps = np.diff(self.docs.astype(np.int64))
            starts = ptr[1:-1] - 1  # index in `steps` of the step that crosses into a new term
            ok = steps > 0
            ok[starts[(starts >= 0) & (starts < steps.shape[0])]] = True
            if not np.all(ok):
                fail("doc ordinals are not strictly ascending within a term")
        lengths = (
            np.bincount(self.docs, weights=self.tfs, minlength=self.n_docs) if nnz else np.zeros(self.n_docs)
        )
        if not np.array_equal(lengths.astype(np.int64), self.doc_len.astype(np.int64)):
            fail("doc_len differs from the sum of term frequencies")
        if self.positions is not None:
            pos = self.positions
            if pos.shape != (int(self.pos_ptr[-1]),):
                fail("positions length differs from sum(tfs)")
            if nnz:
                owner = np.repeat(self.docs, self.tfs)
                if np.any(pos >= self.doc_len[owner]):
                    fail("position beyond the document length")
                run_start = np.zeros(pos.shape[0], np.bool_)
                run_start[self.pos_ptr[:-1]] = True
                bad = (np.diff(pos.astype(np.int64)) <= 0) & ~run_start[1:]
                if np.any(bad):
                    fail("positions are not strictly ascending within a posting")


def build_postings(tokens: TokenBatch | Sequence[Sequence[str]], *, with_positions: bool = True) -> Postings:
    """The inverted index of a batch: document i of the result is document i of ``tokens``
    (a ``TokenBatch`` from ``Analyzer.analyze_many``, or analysed token lists).

    Positions are token indices in the analysed list (after stopword removal).
    """
    batch = tokens if isinstance(tokens, TokenBatch) else TokenBatch.from_lists(tokens)
    n, total = batch.n_docs, batch.n_tokens
    lengths = batch.doc_lengths()
    if total == 0:
        return Postings.empty(n, with_positions=with_positions)
    vocab = batch.vocab
    used = np.bincount(batch.term_ids, minlength=len(vocab)) > 0
    order = [i for i in sorted(range(len(vocab)), key=vocab.__getitem__) if used[i]]
    terms = [vocab[i] for i in order]
    rank = np.full(len(vocab), -1, np.int64)
    rank[order] = np.arange(len(order), dtype=np.int64)
    term_of_token = rank[batch.term_ids]
    # Stable counting sort of the tokens by term (a CSR matrix term x token index, built in C):
    # inside a term, tokens stay in global order, i.e. by document, then by position.
    by_term = sp.csr_matrix(
        (np.ones(total, np.int8), (term_of_token, np.arange(total, dtype=np.int64))),
        shape=(len(terms), total),
    )
    token = by_term.indices.astype(np.int64, copy=False)
    term_sorted = np.repeat(np.arange(len(terms), dtype=np.int64), np.diff(by_term.indptr))
    del by_term, term_of_token
    doc_sorted = np.repeat(np.arange(n, dtype=np.int64), lengths)[token]
    new_posting = np.ones(total, np.bool_)
    new_posting[1:] = (term_sorted[1:] != term_sorted[:-1]) | (doc_sorted[1:] != doc_sorted[:-1])
    starts = np.flatnonzero(new_posting)
    tfs = np.diff(np.append(starts, total)).astype(TF_DTYPE)
    term_ptr = np.searchsorted(term_sorted[starts], np.arange(len(terms) + 1, dtype=np.int64)).astype(
        np.int64
    )
    positions = None
    if with_positions:
        positions = (token - batch.offsets[doc_sorted]).astype(POS_DTYPE)
    return Postings(
        terms=terms,
        term_ptr=term_ptr,
        docs=doc_sorted[starts].astype(DOC_DTYPE),
        tfs=tfs,
        doc_len=lengths.astype(DOC_DTYPE),
        positions=positions,
    )


def merge_postings(
    parts: Sequence[Postings], row_maps: Sequence[npt.ArrayLike], n_docs: int | None = None
) -> Postings:
    """Combine several postings into one (compaction). ``row_maps[i][d]`` is the new ordinal of
    document d of ``parts[i]``, or -1 to drop it; no two kept documents may share an ordinal.
    The result has ``n_docs`` documents (default: 1 + the largest new ordinal); ordinals that no
    part maps to are empty documents. Positions are kept only if every part has them."""
    if len(parts) != len(row_maps):
        raise InternalError("merge_postings: one row map per part is required")
    maps = [np.asarray(m, dtype=np.int64) for m in row_maps]
    for p, m in zip(parts, maps, strict=True):
        if m.shape != (p.n_docs,):
            raise InternalError("merge_postings: a row map must have one entry per document")
    biggest = max((int(m.max()) for m in maps if m.size), default=-1)
    n_out = biggest + 1 if n_docs is None else n_docs
    if biggest >= n_out:
        raise InternalError("merge_postings: a new ordinal is beyond n_docs")
    with_positions = all(p.positions is not None for p in parts)

    doc_len = np.zeros(n_out, np.int64)
    assigned = np.zeros(n_out, np.int64)
    for p, m in zip(parts, maps, strict=True):
        kept = m >= 0
        np.add.at(assigned, m[kept], 1)
        doc_len[m[kept]] = p.doc_len[kept]
    if np.any(assigned > 1):
        raise InternalError("merge_postings: two documents map to the same new ordinal")

    terms = sorted(set().union(*(p.terms for p in parts)))
    index = {t: i for i, t in enumerate(terms)}
    term_chunks, doc_chunks, tf_chunks, pos_chunks = [], [], [], []
    for p, m in zip(parts, maps, strict=True):
        if not p.terms:
            continue
        remap = np.fromiter((index[t] for t in p.terms), dtype=np.int64, count=len(p.terms))
        posting_term = np.repeat(remap, np.diff(p.term_ptr))
        new_doc = m[p.docs]
        keep = new_doc >= 0
        term_chunks.append(posting_term[keep])
        doc_chunks.append(new_doc[keep])
        tf_chunks.append(p.tfs[keep].astype(np.int64))
        if p.positions is not None and with_positions:
            idx = gather_runs(p.pos_ptr[:-1][keep], p.tfs[keep].astype(np.int64))
            pos_chunks.append(p.positions[idx])
    if not term_chunks:
        return Postings(
            terms=[],
            term_ptr=np.zeros(1, np.int64),
            docs=np.zeros(0, DOC_DTYPE),
            tfs=np.zeros(0, TF_DTYPE),
            doc_len=doc_len.astype(DOC_DTYPE),
            positions=np.zeros(0, POS_DTYPE) if with_positions else None,
        )
    all_terms = np.concatenate(term_chunks)
    all_docs = np.concatenate(doc_chunks)
    all_tfs = np.concatenate(tf_chunks)
    order = np.argsort(all_terms * max(n_out, 1) + all_docs, kind="stable")
    all_terms, all_docs, all_tfs = all_terms[order], all_docs[order], all_tfs[order]
    # Terms of dropped documents only: keep the vocabulary dense (every term has postings).
    used = np.unique(all_terms)
    if used.shape[0] != len(terms):
        terms = [terms[i] for i in used]
        all_terms = np.searchsorted(used, all_terms)
    term_ptr = np.searchsorted(all_terms, np.arange(len(terms) + 1, dtype=np.int64)).astype(np.int64)
    positions = None
    if with_positions:
        cat_pos = np.concatenate(pos_chunks)
        pos_ptr = np.zeros(order.shape[0] + 1, np.int64)
        np.cumsum(np.concatenate(tf_chunks), out=pos_ptr[1:])
        positions = cat_pos[gather_runs(pos_ptr[:-1][order], all_tfs)].astype(POS_DTYPE)
    return Postings(
        terms=terms,
        term_ptr=term_ptr,
        docs=all_docs.astype(DOC_DTYPE),
        tfs=all_tfs.astype(TF_DTYPE),
        doc_len=doc_len.astype(DOC_DTYPE),
        positions=positions,
    )


# ---------------------------------------------------------------------------------------------
# Statistics


def distinct_terms(query_terms: Iterable[str]) -> tuple[tuple[str, ...], IntArray]:
    """Distinct terms in first-occurrence order, and how often each occurs (qtf)."""
    counts: dict[str, int] = {}
    for t in query_terms:
        counts[t] = counts.get(t, 0) + 1
    return tuple(counts), np.fromiter(counts.values(), dtype=np.int64, count=len(counts))


@dataclass(frozen=True, eq=False)
class TermStats:
    """Corpus statistics for one query: N (documents with at least one token), their total
    length, and the document frequency of each distinct query term (aligned with ``terms``).
    Statistics of disjoint document sets add up with ``+`` / ``TermStats.total``."""

    terms: tuple[str, ...]
    n_docs: int
    total_len: int
    df: IntArray

    @property
    def avgdl(self) -> float:
        return self.total_len / self.n_docs if self.n_docs else 0.0

    def __add__(self, other: TermStats) -> TermStats:
        if self.terms != other.terms:
            raise InternalError("TermStats of different queries cannot be added")
        return TermStats(
            self.terms, self.n_docs + other.n_docs, self.total_len + other.total_len, self.df + other.df
        )

    @staticmethod
    def total(parts: Sequence[TermStats]) -> TermStats:
        if not parts:
            raise InternalError("TermStats.total of nothing")
        out = parts[0]
        for p in parts[1:]:
            out = out + p
        return out

    def idf(self) -> FloatArray:
        return idf(self.n_docs, self.df)


def corpus_stats(postings: TermIndex, live_mask: BoolArray | None = None) -> tuple[int, int]:
    """(N, total length) over the live documents that have at least one token."""
    if live_mask is None:
        return postings.corpus_totals
    lengths = postings.doc_len[live_mask]
    return int(np.count_nonzero(lengths)), int(lengths.sum(dtype=np.int64))


def term_df(postings: TermIndex, terms: Sequence[str], live_mask: BoolArray | None = None) -> IntArray:
    """Number of live documents containing each term."""
    out = np.zeros(len(terms), np.int64)
    for i, t in enumerate(terms):
        tid = postings.term_id(t)
        if tid is None:
            continue
        out[i] = postings.df(tid) if live_mask is None else postings.live_df(tid, live_mask)
    return out


def local_stats(
    postings: TermIndex, query_terms: Iterable[str], live_mask: BoolArray | None = None
) -> TermStats:
    """This source's share of the statistics of a query; add the shares of all sources."""
    terms, _ = distinct_terms(query_terms)
    _check_mask(postings, live_mask)
    n, total = corpus_stats(postings, live_mask)
    return TermStats(terms, n, total, term_df(postings, terms, live_mask))


def _check_mask(postings: TermIndex, live_mask: BoolArray | None) -> None:
    if live_mask is not None and (live_mask.shape != (postings.n_docs,) or live_mask.dtype != np.bool_):
        raise InternalError(
            f"live_mask must be bool[{postings.n_docs}]; got {live_mask.dtype}{live_mask.shape}"
        )


# ---------------------------------------------------------------------------------------------
# Scoring


def _prefix_docs(postings: TermIndex, prefixes: Sequence[str]) -> U32Array:
    """Ordinals (ascending, distinct) of documents with a term starting with any prefix."""
    chunks = []
    n_terms = 0
    for p in prefixes:
        lo, hi = postings.prefix_range(p)
        if hi > lo:
            chunks.append(postings.docs_of_terms(lo, hi))
            n_terms += hi - lo
    if not chunks:
        return np.zeros(0, DOC_DTYPE)
    if n_terms == 1:
        return chunks[0]  # one term's postings are already distinct and ascending
    return np.unique(np.concatenate(chunks))


def score_query(
    postings: TermIndex,
    query_terms: Sequence[str],
    live_mask: BoolArray | None = None,
    stats: TermStats | None = None,
    *,
    prefixes: Sequence[str] = (),
    k1: float = 1.2,
    b: float = 0.75,
    k3: float = 8.0,
) -> tuple[IntArray, FloatArray]:
    """BM25 scores of the live documents that match at least one query term or prefix.

    Returns (doc ordinals ascending as int64, float64 scores > 0). ``query_terms`` are analysed
    terms, duplicates allowed (qtf). ``stats`` are the global statistics for ``query_terms``
    (sum of ``local_stats`` over every source); None means this postings alone. A document that
    contains a term starting with one of ``prefixes`` gains ``PREFIX_SCORE`` (once).
    """
    _check_mask(postings, live_mask)
    terms, qtf = distinct_terms(query_terms)
    if stats is None:
        stats = local_stats(postings, terms, live_mask)
    elif stats.terms != terms:
        raise InternalError("score_query: stats were computed for other query terms")
    weights = stats.idf() * query_weight(qtf, k3)
    avgdl = stats.avgdl
    doc_len = postings.doc_len
    doc_parts: list[U32Array] = []
    score_parts: list[FloatArray] = []
    for i, t in enumerate(terms):
        tid = postings.term_id(t)
        if tid is None:
            continue
        docs, tfs = postings.postings(tid)
        if live_mask is not None:
            keep = live_mask[docs]
            docs, tfs = docs[keep], tfs[keep]
        doc_parts.append(docs)
        score_parts.append(score(tfs, doc_len[docs], float(weights[i]), avgdl, k1, b))
    if prefixes:
        pdocs = _prefix_docs(postings, prefixes)
        if live_mask is not None:
            pdocs = pdocs[live_mask[pdocs]]
        doc_parts.append(pdocs)
        score_parts.append(np.full(pdocs.shape[0], PREFIX_SCORE))
    return _accumulate(postings.n_docs, doc_parts, score_parts)


PRUNE_MAX_FRACTION = 0.25
"""``score_query_topk`` gives up pruning once its candidate lists hold this share of the postings."""

UNIT_CALL_COST = 2048
"""The fixed cost of the array calls one scoring unit takes (a term's list scored, or searched for
candidates), counted in postings touched: the unit ``score_query_topk`` prices its work in."""

PRUNE_BUDGET = 2.0
"""``score_query_topk``'s pruning rounds may cost this many times the full ``score_query`` (a
pruned answer is also fewer documents to rank and merge afterwards)."""


def _scoring_units(
    postings: Postings,
    terms: Sequence[str],
    weights: FloatArray,
    prefixes: Sequence[str],
    avgdl: float,
    k1: float,
    b: float,
) -> tuple[list[U32Array], list[U32Array | None], list[float], list[float]]:
    """``score_query_topk``'s scoring units in query-term order (the order sums are taken in), the
    prefix bonus last: (posting lists, their tfs (None: the prefix bonus), weights, score bounds)."""
    max_tf, min_dl = postings.term_bounds
    a0, max_sat = postings.term_max_saturation(k1, b)
    stretch = max(1.0, avgdl / a0) if a0 > 0 and avgdl > 0 else math.inf
    lists: list[U32Array] = []
    tfs_of: list[U32Array | None] = []
    unit_w: list[float] = []
    bounds: list[float] = []
    for i, t in enumerate(terms):
        tid = postings.term_id(t)
        if tid is None:
            continue
        docs, tfs = postings.postings(tid)
        lists.append(docs)
        tfs_of.append(tfs)
        unit_w.append(float(weights[i]))
        loose = float(score(max_tf[tid], min_dl[tid], float(weights[i]), avgdl, k1, b))
        bounds.append(min(loose, float(weights[i]) * float(max_sat[tid]) * stretch))
    if prefixes:
        pdocs = _prefix_docs(postings, prefixes)
        lists.append(pdocs)
        tfs_of.append(None)
        unit_w.append(PREFIX_SCORE)
        bounds.append(PREFIX_SCORE)
    return lists, tfs_of, unit_w, bounds


def _score_candidates(
    cand: IntArray | U32Array,
    dl: npt.NDArray[np.unsignedinteger],  # type: ignore[type-arg]
    lists: list[U32Array],
    tfs_of: list[U32Array | None],
    unit_w: list[float],
    avgdl: float,
    k1: float,
    b: float,
) -> FloatArray:
    """Exact scores of the sorted documents ``cand`` (lengths ``dl``): each unit's contribution found
    by binary search into its list, summed in unit order (as ``score_query`` sums them)."""
    acc = np.zeros(cand.shape[0], np.float64)
    for unit_docs, unit_tfs, w in zip(lists, tfs_of, unit_w, strict=True):
        at = np.searchsorted(unit_docs, cand)
        hit = at < unit_docs.shape[0]
        hit[hit] = unit_docs[at[hit]] == cand[hit]
        if unit_tfs is None:
            acc[hit] += PREFIX_SCORE
        else:
            acc[hit] += score(unit_tfs[at[hit]], dl[hit], w, avgdl, k1, b)
    return acc


def score_query_topk(
    postings: Postings,
    query_terms: Sequence[str],
    k: int,
    stats: TermStats,
    candidates: BoolArray | None = None,
    *,
    prefixes: Sequence[str] = (),
    k1: float = 1.2,
    b: float = 0.75,
    k3: float = 8.0,
) -> tuple[IntArray, FloatArray]:
    """The documents of ``candidates`` (None: all) that can be among the ``k`` best for the query:
    every one scoring at least the k-th best score (ties included), with the exact scores
    ``score_query`` gives them (bit for bit). Usually far fewer than ``score_query`` returns.

    MaxScore, vectorised: each term's contribution is bounded by its weight times the largest
    saturation among its postings (``Postings.term_max_saturation``, scaled for the global average
    length; never above ``score(max tf, min length)``, ``Postings.term_bounds``). Take the terms with the shortest posting lists as the
    "essential" ones; the documents in their lists are candidates, scored exactly (binary search
    into the other lists); θ = the k-th best candidate score. A document in no essential list
    scores at most the sum of the other terms' bounds: when that sum is below θ, the candidates
    with a score >= θ are the answer. Otherwise more terms become essential; past
    ``PRUNE_MAX_FRACTION`` of the postings the full ``score_query`` runs instead.

    Each round scores its candidates against every unit, so its cost grows with the units: the
    essential set grows by one term up to 16, then doubles (a query of N terms takes O(log N)
    rounds, not N), and pruning stops once its rounds would cost more than ``PRUNE_BUDGET`` × the
    full ``score_query`` (about every posting once plus ``UNIT_CALL_COST`` per unit). A 1,000-term
    query over 2,000 documents took 31 s of rounds where the full scoring takes 50 ms."""
    _check_mask(postings, candidates)
    terms, qtf = distinct_terms(query_terms)
    if stats.terms != terms:
        raise InternalError("score_query_topk: stats were computed for other query terms")
    full = (postings, query_terms, candidates, stats)
    if k <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float64)
    weights = stats.idf() * query_weight(qtf, k3)
    avgdl = stats.avgdl
    lists, tfs_of, unit_w, bounds = _scoring_units(postings, terms, weights, prefixes, avgdl, k1, b)
    total = sum(d.shape[0] for d in lists)
    if len(lists) < 2:
        return score_query(*full, prefixes=prefixes, k1=k1, b=b, k3=k3)
    order = sorted(range(len(lists)), key=lambda u: lists[u].shape[0])
    units = len(lists)
    budget = PRUNE_BUDGET * (total + units * UNIT_CALL_COST)  # (the full score_query: about 1×)
    spent = 0
    e = 1
    while e < units:
        essential = order[:e]
        e = e + 1 if e < 16 else 2 * e  # the next round's essential set
        if sum(lists[u].shape[0] for u in essential) > PRUNE_MAX_FRACTION * total:
            break
        rest_bound = sum(bounds[u] for u in order[len(essential) :])
        cand = (
            lists[essential[0]]
            if len(essential) == 1
            else np.unique(np.concatenate([lists[u] for u in essential]))
        )
        if candidates is not None:
            cand = cand[candidates[cand]]
        if cand.shape[0] < k:
            continue
        spent += units * (UNIT_CALL_COST + cand.shape[0])
        if spent > budget:
            break
        acc = _score_candidates(cand, postings.doc_len[cand], lists, tfs_of, unit_w, avgdl, k1, b)
        theta = float(np.partition(acc, acc.shape[0] - k)[acc.shape[0] - k])
        if rest_bound * (1.0 + 1e-9) < theta:  # (margin: sums of bounds taken in another order)
            keep = acc >= theta
            return cand[keep].astype(np.int64), acc[keep]
    return score_query(*full, prefixes=prefixes, k1=k1, b=b, k3=k3)


def _accumulate(
    n_docs: int, doc_parts: list[U32Array], score_parts: list[FloatArray]
) -> tuple[IntArray, FloatArray]:
    """Sum per-document contributions (each part has distinct docs); keep positive sums."""
    touched = sum(d.shape[0] for d in doc_parts)
    if touched == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float64)
    if len(doc_parts) == 1:
        docs, scores = doc_parts[0].astype(np.int64), score_parts[0]
    elif touched * 64 < n_docs:  # very few postings: sorting them beats touching every document
        all_docs = np.concatenate(doc_parts)
        docs_u, inverse = np.unique(all_docs, return_inverse=True)
        sums = np.bincount(inverse, weights=np.concatenate(score_parts))
        docs, scores = docs_u.astype(np.int64), np.asarray(sums, dtype=np.float64)
    else:
        acc = np.zeros(n_docs, np.float64)
        for d, sc in zip(doc_parts, score_parts, strict=True):
            acc[d] += sc
        hits = np.flatnonzero(acc > 0)  # (much faster than flatnonzero on floats)
        return hits.astype(np.int64), acc[hits]
    positive = scores > 0
    if not positive.all():
        docs, scores = docs[positive], scores[positive]
    return docs, scores


def top_k(doc_ordinals: IntArray, scores: FloatArray, k: int) -> tuple[IntArray, FloatArray]:
    """The k best (highest score; ties by lower ordinal), best first."""
    if k <= 0 or doc_ordinals.shape[0] == 0:
        return doc_ordinals[:0], scores[:0]
    if doc_ordinals.shape[0] > k:
        part = np.argpartition(-scores, k - 1)[:k]
        # include every document tied with the k-th score, so the tie-break below is exact
        kth = scores[part].min()
        part = np.flatnonzero(scores >= kth)
    else:
        part = np.arange(doc_ordinals.shape[0])
    order = np.lexsort((doc_ordinals[part], -scores[part]))[:k]
    sel = part[order]
    return doc_ordinals[sel], scores[sel]


# ---------------------------------------------------------------------------------------------
# Token filters (ContainsAllTokens, ContainsAnyToken, ContainsTokenSequence)


def _term_mask(postings: TermIndex, term: str) -> BoolArray:
    mask = np.zeros(postings.n_docs, np.bool_)
    tid = postings.term_id(term)
    if tid is not None:
        mask[postings.postings(tid)[0]] = True
    return mask


def _prefix_mask(postings: TermIndex, prefixes: Sequence[str]) -> BoolArray:
    mask = np.zeros(postings.n_docs, np.bool_)
    mask[_prefix_docs(postings, prefixes)] = True
    return mask


def contains_all_tokens(
    postings: TermIndex, tokens: Sequence[str], *, prefixes: Sequence[str] = ()
) -> BoolArray:
    """Documents containing every token (and, with ``prefixes``, a term starting with one of
    them). Nothing matches when there is no token and no prefix."""
    terms, _ = distinct_terms(tokens)
    if not terms and not prefixes:
        return np.zeros(postings.n_docs, np.bool_)
    mask = np.ones(postings.n_docs, np.bool_)
    for t in terms:
        mask &= _term_mask(postings, t)
    if prefixes:
        mask &= _prefix_mask(postings, prefixes)
    return mask


def contains_any_token(
    postings: TermIndex, tokens: Sequence[str], *, prefixes: Sequence[str] = ()
) -> BoolArray:
    """Documents containing at least one token, or a term starting with one of ``prefixes``."""
    terms, _ = distinct_terms(tokens)
    mask = np.zeros(postings.n_docs, np.bool_)
    for t in terms:
        tid = postings.term_id(t)
        if tid is not None:
            mask[postings.postings(tid)[0]] = True
    if prefixes:
        mask |= _prefix_mask(postings, prefixes)
    return mask


def contains_token_sequence(postings: TermIndex, tokens: Sequence[str]) -> BoolArray:
    """Documents where ``tokens`` occur consecutively, in order (phrase match on positions).
    Nothing matches an empty sequence. Needs postings built with positions."""
    if not postings.has_positions:
        raise InternalError("contains_token_sequence needs postings with positions")
    mask = np.zeros(postings.n_docs, np.bool_)
    if not tokens:
        return mask
    candidates = contains_all_tokens(postings, tokens)
    if len(tokens) == 1 or not candidates.any():
        return candidates
    # key = doc << 32 | (position - offset in phrase); a match is a key present for every offset
    keys: IntArray | None = None
    for offset, t in enumerate(tokens):
        tid = postings.term_id(t)
        if tid is None:  # impossible: `candidates` is not empty, so every token has postings
            return mask
        docs, tfs, pos_ptr, positions = postings.term_positions(tid)
        sel = np.flatnonzero(candidates[docs])
        pos_idx = gather_runs(pos_ptr[:-1][sel], tfs[sel].astype(np.int64))
        owner = np.repeat(docs[sel].astype(np.int64), tfs[sel])
        start = positions[pos_idx].astype(np.int64) - offset
        ok = start >= 0
        k = (owner[ok] << 32) | start[ok]
        keys = k if keys is None else np.intersect1d(keys, k, assume_unique=True)
        if keys.shape[0] == 0:
            return mask
    if keys is None:
        return mask
    mask[(keys >> 32).astype(np.int64)] = True
    return mask
