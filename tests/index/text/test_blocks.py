"""Block-compressed postings (fts v2) against the uncompressed ``Postings``: encode -> decode is
the identity (documents, tfs, positions, dictionary, packed columns), dictionary lookups equal
``bisect``, and ``block_topk`` returns exactly the k best of the exhaustive ``score_query`` (ties
by lower ordinal, scores bit for bit) for any live mask, k, global statistics and BM25
parameters, including the ones the block bounds were not built for."""

from __future__ import annotations

import bisect

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lagoon.format.segment import MAGIC_FTS, open_sections
from lagoon.index.text import kernels as K
from lagoon.index.text.blockpostings import BlockPostings, block_topk, read_only
from lagoon.index.text.bm25 import (
    Postings,
    TermStats,
    build_postings,
    contains_token_sequence,
    local_stats,
    score_query,
    top_k,
)
from lagoon.index.text.postings_v2 import encode_postings_v2, open_postings_v2

VOCAB = [f"w{i}" for i in range(80)] + ["é", "éa", "z" * 200, "日本"]


def corpus(seed: int, n: int, max_len: int = 14) -> tuple[list[list[str]], Postings]:
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, len(VOCAB) + 1) ** 1.1
    p /= p.sum()
    docs = [rng.choice(VOCAB, size=int(rng.integers(0, max_len)), p=p).tolist() for _ in range(n)]
    return docs, build_postings(docs, with_positions=True)


def blocks(p: Postings, k1: float = 1.2, b: float = 0.75) -> BlockPostings:
    data, _ = encode_postings_v2("t", {}, p, k1=k1, b=b)
    sf = open_sections(data, magic=MAGIC_FTS, what="fts.t")
    assert sf.version == 2
    _, bp = open_postings_v2(sf, p.n_docs)
    return bp


def test_roundtrip_is_the_identity() -> None:
    for seed, n in ((1, 0), (2, 1), (3, 700), (4, 5000)):
        _, p = corpus(seed, n)
        bp = blocks(p)
        assert bp.terms == p.terms
        back = bp.to_postings()
        for name in ("term_ptr", "docs", "tfs", "doc_len", "positions"):
            assert np.array_equal(getattr(back, name), getattr(p, name)), name
        back.validate()
        for t in p.terms:
            assert bp.term_id(t) == p.term_id(t)
        for probe in ("", "w", "w1", "w10x", "zz", "é", "éb", "\U0010ffff", "a" * 300):
            assert bp.term_id(probe) == p.term_id(probe)
            assert bp.prefix_range(probe) == p.prefix_range(probe)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 2**32 - 1), max_size=600))
def test_packed_columns(values: list[int]) -> None:
    arr = read_only(np.array(values, np.int64))
    widths, words = K.pack_column(arr)
    widths, words = read_only(widths), read_only(words)
    assert K.column_words(widths, arr.shape[0]) == words.shape[0]
    assert np.array_equal(K.unpack_column(widths, words, arr.shape[0]), arr)


def test_dictionary_lower_bound() -> None:
    terms = sorted({f"{a}{b}" for a in ("a", "ab", "b", "é", "ü") for b in ("", "x", "xy", "zz")})
    first_off, first, block_off, body = (read_only(a) for a in K.encode_dictionary(*_arrow(terms)))
    for q in [*terms, "", "a0", "aa", "abx", "zzz", "ü\U0010ffff"]:
        got, eq = K.lower_bound(
            first_off, first, block_off, body, len(terms), np.frombuffer(q.encode(), np.uint8)
        )
        want = bisect.bisect_left(terms, q)
        assert (got, eq) == (want, want < len(terms) and terms[want] == q)


def _arrow(terms: list[str]) -> tuple[np.ndarray, np.ndarray]:
    data = b"".join(t.encode() for t in terms)
    offsets = np.zeros(len(terms) + 1, np.int64)
    np.cumsum([len(t.encode()) for t in terms], out=offsets[1:])
    return read_only(offsets), np.frombuffer(data, np.uint8)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 2500),
    query=st.lists(st.sampled_from(VOCAB[:40]), min_size=1, max_size=5),
    k=st.integers(1, 40),
    masked=st.booleans(),
    stats_kind=st.sampled_from(["own", "global", "shorter"]),
    params=st.sampled_from([(1.2, 0.75), (0.9, 0.4), (1.2, 0.0), (0.0, 0.75)]),
)
# k1 = 0: every match scores w·tf/tf, which rounds to either side of w; the bound w must keep slack
@example(seed=35, n=145, query=["w0"], k=1, masked=False, stats_kind="own", params=(0.0, 0.75))
def test_block_topk_is_the_exact_top_k(
    seed: int,
    n: int,
    query: list[str],
    k: int,
    masked: bool,
    stats_kind: str,
    params: tuple[float, float],
) -> None:
    _, p = corpus(seed, n)
    bp = blocks(p)  # bounds for k1 = 1.2, b = 0.75
    k1, b = params
    live = np.random.default_rng(seed + 1).random(n) < 0.7 if masked else None
    stats = local_stats(p, query, live)
    if stats_kind == "global":  # other sources: longer average, more documents
        stats = TermStats(stats.terms, stats.n_docs + 7, stats.total_len + 200, stats.df + 2)
    elif stats_kind == "shorter":
        stats = TermStats(stats.terms, stats.n_docs + 50, stats.total_len + 10, stats.df)
    docs, scores = score_query(p, query, live, stats, k1=k1, b=b)
    want_docs, want_scores = top_k(docs, scores, k)
    order = np.argsort(want_docs)
    got_docs, got_scores = block_topk(bp, query, k, stats, live, k1=k1, b=b)
    assert got_docs.tolist() == want_docs[order].tolist()
    assert got_scores.tolist() == want_scores[order].tolist()  # bit for bit
    assert _stats_equal(local_stats(bp, query, live), local_stats(p, query, live))


def _stats_equal(a: TermStats, b: TermStats) -> bool:
    return (
        a.terms == b.terms
        and a.n_docs == b.n_docs
        and a.total_len == b.total_len
        and bool(np.all(a.df == b.df))
    )


def test_ties_go_to_the_lower_ordinal() -> None:
    """Many documents with equal scores (same length, tf 1): the k lowest ordinals win, as the
    exhaustive ranking says."""
    docs = [["a", "x", "y"] if i % 3 else ["b", "x", "z"] for i in range(5000)]
    p = build_postings(docs)
    bp = blocks(p)
    stats = local_stats(p, ["x"])
    got, scores = block_topk(bp, ["x"], 10, stats)
    assert got.tolist() == list(range(10))
    assert len(set(scores.tolist())) == 1


def test_prefix_queries_and_phrases() -> None:
    texts, p = corpus(9, 3000)
    bp = blocks(p)
    stats = local_stats(p, ["w1", "w2"])
    want = top_k(*score_query(p, ["w1", "w2"], None, stats, prefixes=("w3",)), 7)
    got = block_topk(bp, ["w1", "w2"], 7, stats, prefixes=("w3",))
    assert sorted(got[0].tolist()) == sorted(want[0].tolist())
    for phrase in (["w0", "w1"], ["w1", "w0", "w2"], ["é", "éa"], ["w5"]):
        assert np.array_equal(contains_token_sequence(bp, phrase), contains_token_sequence(p, phrase))
    expected = [any(t[i : i + 2] == ["w0", "w1"] for i in range(len(t))) for t in texts]
    assert contains_token_sequence(bp, ["w0", "w1"]).tolist() == expected


def test_long_documents_and_frequent_terms() -> None:
    """tf and lengths beyond 16 bits: blocks without a best pair fall back to the bound 1."""
    docs = [["w"] * 70_000 + ["v"], ["w", "v"], ["v"] * 3]
    p = build_postings(docs)
    bp = blocks(p)
    assert bp.to_postings().tfs.tolist() == p.tfs.tolist()
    for q in (["w"], ["v"], ["w", "v"]):
        stats = local_stats(p, q)
        want = top_k(*score_query(p, q, None, stats), 2)
        got = block_topk(bp, q, 2, stats)
        assert sorted(zip(got[0].tolist(), got[1].tolist(), strict=False)) == sorted(
            zip(want[0].tolist(), want[1].tolist(), strict=False)
        )


def test_a_term_longer_than_255_bytes_is_refused() -> None:
    p = build_postings([["x" * 256]])
    with pytest.raises(Exception, match="255"):
        encode_postings_v2("t", {}, p, k1=1.2, b=0.75)
