"""``score_query_topk`` (MaxScore pruning) against the full ``score_query``: it returns every
document of the exact top k (ties included), with bit-identical scores, and prunes often enough on
skewed vocabularies that the pruned branch is what these tests exercise."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lagoon.index.text import bm25
from lagoon.index.text.bm25 import Postings, build_postings, local_stats, score_query, score_query_topk

VOCAB = [f"w{i}" for i in range(60)]


def corpus(seed: int, n: int) -> Postings:
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, len(VOCAB) + 1) ** 1.1  # Zipf: a few very common words
    p /= p.sum()
    docs = [rng.choice(VOCAB, size=int(rng.integers(0, 12)), p=p).tolist() for _ in range(n)]
    return build_postings(docs, with_positions=False)


PRUNED = {"yes": 0, "no": 0}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 3000),
    query=st.lists(st.sampled_from(VOCAB[:30]), min_size=1, max_size=5),
    prefix=st.sampled_from([(), ("w1",), ("w5",)]),
    k=st.integers(1, 30),
    masked=st.booleans(),
)
def test_topk_superset_with_exact_scores(
    seed: int, n: int, query: list[str], prefix: tuple[str, ...], k: int, masked: bool
) -> None:
    postings = corpus(seed, n)
    live = np.random.default_rng(seed + 1).random(n) < 0.7 if masked else None
    stats = local_stats(postings, query, live)
    stats = type(stats)(stats.terms, stats.n_docs + 5, stats.total_len + 40, stats.df + 1)  # "global"
    docs, scores = score_query(postings, query, live, stats, prefixes=prefix)
    got_docs, got_scores = score_query_topk(postings, query, k, stats, live, prefixes=prefix)
    full = dict(zip(docs.tolist(), scores.tolist(), strict=True))
    got = dict(zip(got_docs.tolist(), got_scores.tolist(), strict=True))
    assert len(got) == got_docs.shape[0]  # distinct
    assert all(full[d] == s for d, s in got.items())  # exact scores, bit for bit, live docs only
    if scores.shape[0]:
        kth = np.sort(scores)[::-1][min(k, scores.shape[0]) - 1]
        assert {d for d, s in full.items() if s >= kth} <= set(got)  # the top k, ties included
    PRUNED["yes" if len(got) < len(full) else "no"] += 1


def test_pruning_happens() -> None:
    """Run after the property test (same module): the pruned path answered a good share of it."""
    total = PRUNED["yes"] + PRUNED["no"]
    if total == 0:  # run alone: make some queries
        for seed in range(40):
            postings = corpus(seed, 2000)
            q = ["w0", "w1", f"w{20 + seed % 10}"]
            stats = local_stats(postings, q)
            d, _ = score_query_topk(postings, q, 10, stats)
            full, _ = score_query(postings, q, None, stats)
            PRUNED["yes" if d.shape[0] < full.shape[0] else "no"] += 1
        total = 40
    assert PRUNED["yes"] >= total * 0.1, PRUNED


def test_a_long_query_prunes_in_few_rounds(monkeypatch: pytest.MonkeyPatch) -> None:
    """A query of 1,000 distinct terms (the wire allows 8,192 characters of query text) over 2,000
    documents: pruning rounds each score the candidates against every term, so they must stay
    few (the essential set grows geometrically, and pruning stops at the cost of full scoring).
    Before, a round per essential term: 250 rounds, 31 s where the full scoring takes 50 ms."""
    rng = np.random.default_rng(7)
    vocab = [f"t{i}" for i in range(5000)]
    docs = [rng.choice(vocab, size=200).tolist() for _ in range(2000)]
    postings = build_postings(docs, with_positions=False)
    query = rng.choice(vocab, size=1000, replace=False).tolist()
    rounds = []
    real = bm25._score_candidates
    monkeypatch.setattr(bm25, "_score_candidates", lambda *a: rounds.append(1) or real(*a))
    stats = local_stats(postings, query)
    got_docs, got_scores = score_query_topk(postings, query, 10, stats)
    docs_all, scores_all = score_query(postings, query, None, stats)
    full = dict(zip(docs_all.tolist(), scores_all.tolist(), strict=True))
    assert all(full[d] == s for d, s in zip(got_docs.tolist(), got_scores.tolist(), strict=True))
    kth = np.sort(scores_all)[::-1][9]
    assert {d for d, s in full.items() if s >= kth} <= set(got_docs.tolist())
    assert len(rounds) <= 12, len(rounds)
