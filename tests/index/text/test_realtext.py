"""BM25 on ≥ 10,000 real-text documents against two independent references.

References: bm25s (method "lucene", dtype float64, given Lagoon's own token lists so tokenisation
is identical), and a float64 dict-based BM25 written here. Lagoon's scores must agree with both
within 1e-6 absolute (in practice they agree to ~1e-15 relative). bm25s counts every document in
N while Lagoon counts documents with at least one token; the test asserts no document is empty,
so the two definitions coincide here. Queries use distinct terms (bm25s has no k3 term, and with
qtf = 1 Lagoon's k3 factor is exactly 1).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from itertools import pairwise

import bm25s  # type: ignore[import-untyped]
import numpy as np
import pytest

from lagoon.index.text import Analyzer
from lagoon.index.text.bm25 import TermStats, build_postings, local_stats, score_query
from lagoon.index.text.corpus import corpus, sample_queries
from lagoon.schema import FtsConfig

N_DOCS = 10_000
N_QUERIES = 150
TOL = 1e-6


@pytest.fixture(scope="module")
def texts() -> list[str]:
    docs = corpus(N_DOCS)
    assert len(docs) == N_DOCS
    return [d["text"] for d in docs]


class NaiveIndex:
    """Float64 BM25 with plain dicts, over every document (all are non-empty here)."""

    def __init__(self, token_lists: list[list[str]], k1: float = 1.2, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self.n = len(token_lists)
        self.lengths = [len(t) for t in token_lists]
        self.avgdl = sum(self.lengths) / self.n
        self.index: dict[str, dict[int, int]] = defaultdict(dict)
        for d, toks in enumerate(token_lists):
            for term, tf in Counter(toks).items():
                self.index[term][d] = tf

    def scores(self, terms: list[str]) -> dict[int, float]:
        out: dict[int, float] = defaultdict(float)
        for term in dict.fromkeys(terms):
            postings = self.index.get(term, {})
            df = len(postings)
            w = math.log(1.0 + (self.n - df + 0.5) / (df + 0.5))
            for d, tf in postings.items():
                norm = self.k1 * (1.0 - self.b + self.b * self.lengths[d] / self.avgdl)
                out[d] += w * tf / (tf + norm)
        return dict(out)


def dense(n: int, result: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    out = np.zeros(n)
    out[result[0]] = result[1]
    return out


@pytest.mark.parametrize("stemming", [False, True], ids=["plain", "stemmed"])
def test_real_text_scores_match_references(texts: list[str], stemming: bool) -> None:
    analyzer = Analyzer(FtsConfig(stemming=stemming))
    token_lists = analyzer.tokenize_many(texts)
    assert min(map(len, token_lists)) > 0  # so that "documents with tokens" == "all documents"
    postings = build_postings(analyzer.analyze_many(texts))
    postings.validate()

    reference = bm25s.BM25(method="lucene", k1=1.2, b=0.75, dtype="float64")
    reference.index(token_lists, show_progress=False)
    naive = NaiveIndex(token_lists)

    queries = [list(dict.fromkeys(analyzer.query(q).terms)) for q in sample_queries(texts, N_QUERIES)]
    queries = [q for q in queries if q]
    worst_bm25s = worst_naive = 0.0
    matched = 0
    for terms in queries:
        ours = dense(N_DOCS, score_query(postings, terms))
        theirs = np.asarray(reference.get_scores(terms), dtype=np.float64)
        assert theirs.dtype == np.float64
        mine = naive.scores(terms)
        ref = np.zeros(N_DOCS)
        ref[list(mine)] = list(mine.values())
        worst_bm25s = max(worst_bm25s, float(np.abs(ours - theirs).max()))
        worst_naive = max(worst_naive, float(np.abs(ours - ref).max()))
        assert np.array_equal(ours > 0, ref > 0)  # the same documents match
        matched += int(np.count_nonzero(ours))
    assert worst_bm25s < TOL, worst_bm25s
    assert worst_naive < TOL, worst_naive
    assert matched > 10 * len(queries)  # the queries really exercise the index


def test_real_text_three_sources_and_live_mask(texts: list[str]) -> None:
    analyzer = Analyzer(FtsConfig(stemming=True))
    batch = analyzer.analyze_many(texts)
    whole = build_postings(batch)
    token_lists = batch.to_lists()
    rng = np.random.default_rng(3)
    live = rng.random(N_DOCS) >= 0.1  # 10 % deleted
    cuts = [0, 3_000, 7_500, N_DOCS]
    parts = [build_postings(token_lists[lo:hi]) for lo, hi in pairwise(cuts)]
    queries = [analyzer.query(q).terms for q in sample_queries(texts, 60, seed=11)]
    rebuilt = build_postings([t for t, alive in zip(token_lists, live, strict=True) if alive])
    kept = np.flatnonzero(live)
    for terms in queries:
        # three sources scored with summed statistics == one source
        masks = [live[lo:hi] for lo, hi in pairwise(cuts)]
        stats = TermStats.total([local_stats(p, terms, m) for p, m in zip(parts, masks, strict=True)])
        combined = np.zeros(N_DOCS)
        for lo, p, m in zip(cuts, parts, masks, strict=False):
            d, s = score_query(p, terms, m, stats)
            combined[lo + d] = s
        one = dense(N_DOCS, score_query(whole, terms, live))
        np.testing.assert_allclose(combined, one, rtol=1e-12, atol=0)
        # a live mask == rebuilding without the dead documents
        d, s = score_query(rebuilt, terms)
        expected = np.zeros(N_DOCS)
        expected[kept[d]] = s
        np.testing.assert_allclose(one, expected, rtol=1e-12, atol=0)
        assert not one[~live].any()


@pytest.mark.slow
def test_real_text_100k_against_naive() -> None:
    texts = [d["text"] for d in corpus(100_000)]
    analyzer = Analyzer(FtsConfig(stemming=True))
    batch = analyzer.analyze_many(texts)
    postings = build_postings(batch)
    postings.validate()
    token_lists = batch.to_lists()
    counted = [t for t in token_lists if t]
    naive = NaiveIndex(counted)
    ordinals = np.flatnonzero(batch.doc_lengths() > 0)
    for q in sample_queries(texts, 200, seed=5):
        terms = list(dict.fromkeys(analyzer.query(q).terms))
        ours = dense(len(texts), score_query(postings, terms))
        mine = naive.scores(terms)
        ref = np.zeros(len(texts))
        ref[ordinals[list(mine)]] = list(mine.values())
        np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-12)
