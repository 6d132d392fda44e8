"""Tests of lagoon.index.text.bm25: postings, statistics, scoring, token filters, merging.

The reference implementation here (``naive_bm25``) is written independently of the module, with
dicts and ``math``; hypothesis compares the vectorised code with it on random small corpora.
"""

from __future__ import annotations

import math
from collections import Counter
from itertools import pairwise

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lagoon.errors import InternalError
from lagoon.index.text import Analyzer
from lagoon.index.text.analyze import TokenBatch
from lagoon.index.text.bm25 import (
    PREFIX_SCORE,
    Postings,
    TermStats,
    build_postings,
    contains_all_tokens,
    contains_any_token,
    contains_token_sequence,
    idf,
    local_stats,
    merge_postings,
    query_weight,
    score,
    score_query,
    top_k,
)

K1, B, K3 = 1.2, 0.75, 8.0


def naive_bm25(
    docs: list[list[str]],
    query: list[str],
    live: list[bool] | None = None,
    prefixes: tuple[str, ...] = (),
    k1: float = K1,
    b: float = B,
    k3: float = K3,
) -> dict[int, float]:
    """Textbook Lucene BM25 with k3, over live documents that have at least one token."""
    live = live if live is not None else [True] * len(docs)
    counted = [i for i, d in enumerate(docs) if live[i] and d]
    n = len(counted)
    avgdl = sum(len(docs[i]) for i in counted) / n if n else 0.0
    qtf = Counter(query)
    out: dict[int, float] = {}
    for i in counted:
        tf = Counter(docs[i])
        total = 0.0
        for term, q in qtf.items():
            if tf[term] == 0:
                continue
            df = sum(1 for j in counted if term in docs[j])
            w_idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
            w_q = q * (k3 + 1) / (q + k3)
            total += w_q * w_idf * tf[term] / (tf[term] + k1 * (1 - b + b * len(docs[i]) / avgdl))
        if prefixes and any(t.startswith(p) for t in tf for p in prefixes):
            total += 1.0
        if total > 0:
            out[i] = total
    return out


def as_dict(result: tuple[np.ndarray, np.ndarray]) -> dict[int, float]:
    docs, scores = result
    assert docs.dtype == np.int64 and scores.dtype == np.float64
    assert np.all(np.diff(docs) > 0), "ordinals ascending"
    return dict(zip(docs.tolist(), scores.tolist(), strict=True))


def assert_scores_equal(got: dict[int, float], want: dict[int, float], rel: float = 1e-12) -> None:
    assert got.keys() == want.keys()
    for k in want:
        assert got[k] == pytest.approx(want[k], rel=rel, abs=1e-12), k


# --- hand-checked examples ---------------------------------------------------------------------


def test_single_term_by_hand() -> None:
    # N = 2, avgdl = (2 + 1) / 2 = 1.5; "x" is in doc 0 only: df = 1, idf = ln(1 + 1.5/1.5) = ln 2.
    # doc 0: dl = 2, norm = 1.2 * (0.25 + 0.75 * 2 / 1.5) = 1.5; tf part = 1 / (1 + 1.5) = 0.4.
    p = build_postings([["x", "y"], ["y"]])
    assert as_dict(score_query(p, ["x"])) == {0: pytest.approx(0.4 * math.log(2), rel=1e-15)}
    assert 0.4 * math.log(2) == pytest.approx(0.2772588722239781)
    # qtf = 2 -> weight 2 * 9 / 10 = 1.8
    assert as_dict(score_query(p, ["x", "x"])) == {0: pytest.approx(1.8 * 0.4 * math.log(2), rel=1e-15)}
    # "y" is in both: idf = ln(1 + 0.5/2.5) = ln 1.2; doc 1: dl = 1, norm = 1.2 * (0.25 + 0.5) = 0.9
    got = as_dict(score_query(p, ["y"]))
    assert got[0] == pytest.approx(math.log(1.2) * 1 / 2.5, rel=1e-15)
    assert got[1] == pytest.approx(math.log(1.2) * 1 / 1.9, rel=1e-15)


def test_two_terms_by_hand() -> None:
    docs = [["a", "b"], ["a", "a", "c"], ["b", "c", "c", "c"], ["d"]]
    # N = 4, avgdl = 10 / 4 = 2.5; df(a) = 2, df(c) = 2 -> idf = ln(1 + 2.5 / 2.5) = ln 2 for both.
    norm = {dl: K1 * (1 - B + B * dl / 2.5) for dl in (2, 3, 4)}
    want = {
        0: math.log(2) * 1 / (1 + norm[2]),
        1: math.log(2) * (2 / (2 + norm[3]) + 1 / (1 + norm[3])),
        2: math.log(2) * 3 / (3 + norm[4]),
    }
    assert_scores_equal(as_dict(score_query(build_postings(docs), ["a", "c"])), want)
    assert want[1] == pytest.approx(0.70138457, rel=1e-8)  # what bm25s (lucene) gives too


def test_documents_without_tokens_do_not_count() -> None:
    base = as_dict(score_query(build_postings([["x", "y"], ["y"]]), ["x"]))
    with_empty = as_dict(score_query(build_postings([[], ["x", "y"], [], ["y"]]), ["x"]))
    assert with_empty == {1: base[0]}


def test_zero_scores_and_unknown_terms_are_excluded() -> None:
    p = build_postings([["a"], ["b"], []])
    assert as_dict(score_query(p, ["a"])).keys() == {0}
    assert as_dict(score_query(p, ["zzz"])) == {}
    assert as_dict(score_query(p, [])) == {}
    assert as_dict(score_query(Postings.empty(), ["a"])) == {}


def test_prefix_scores_one_per_document() -> None:
    p = build_postings([["car", "cart", "carbon"], ["cat"], ["scar"], ["car"]])
    assert as_dict(score_query(p, [], prefixes=["car"])) == {0: 1.0, 3: 1.0}
    got = as_dict(score_query(p, ["cat"], prefixes=["car"]))
    assert got[0] == got[3] == PREFIX_SCORE and got[1] > 0 and 2 not in got
    assert as_dict(score_query(p, [], prefixes=["car", "ca"])) == {0: 1.0, 1: 1.0, 3: 1.0}
    assert as_dict(score_query(p, [], prefixes=[""])) == {}
    assert p.prefix_range("car") == (0, 3) and p.terms[0:3] == ["car", "carbon", "cart"]


def test_formula_helpers() -> None:
    assert float(idf(10, 1)) == pytest.approx(math.log(1 + 9.5 / 1.5))
    assert idf(10, np.array([1, 10])).shape == (2,)
    assert float(query_weight(1, 8.0)) == 1.0
    assert float(query_weight(3, 0.0)) == 1.0  # k3 = 0: the query term frequency is ignored
    s = score(np.array([1, 2]), np.array([4, 4]), 2.0, 4.0, 1.2, 0.75)
    assert s.tolist() == pytest.approx([2 * 1 / 2.2, 2 * 2 / 3.2])


def test_bm25_parameters_are_used() -> None:
    docs = [["a", "b", "b"], ["a"], ["b", "c"]]
    p = build_postings(docs)
    for k1, b, k3 in [(0.9, 0.4, 8.0), (2.0, 1.0, 0.0), (0.0, 0.0, 100.0)]:
        got = as_dict(score_query(p, ["a", "b", "b"], k1=k1, b=b, k3=k3))
        assert_scores_equal(got, naive_bm25(docs, ["a", "b", "b"], k1=k1, b=b, k3=k3))


def test_top_k() -> None:
    docs = np.array([3, 5, 7, 9, 11], np.int64)
    scores = np.array([1.0, 3.0, 3.0, 0.5, 3.0])
    d, s = top_k(docs, scores, 2)
    assert d.tolist() == [5, 7] and s.tolist() == [3.0, 3.0]  # ties broken by ordinal
    assert top_k(docs, scores, 10)[0].tolist() == [5, 7, 11, 3, 9]
    assert top_k(docs, scores, 0)[0].tolist() == []


# --- postings structure ------------------------------------------------------------------------


def test_postings_layout() -> None:
    p = build_postings([["b", "a", "b"], [], ["a", "c"]])
    p.validate()
    assert p.terms == ["a", "b", "c"]
    assert p.term_ptr.tolist() == [0, 2, 3, 4]
    assert p.docs.tolist() == [0, 2, 0, 2] and p.docs.dtype == np.uint32
    assert p.tfs.tolist() == [1, 1, 2, 1]
    assert p.doc_len.tolist() == [3, 0, 2]
    assert p.positions is not None and p.positions.tolist() == [1, 0, 0, 2, 1]
    assert build_postings([["a"]], with_positions=False).positions is None
    assert build_postings([[], []]).n_docs == 2


def test_build_from_token_batch_equals_from_lists() -> None:
    a = Analyzer()
    texts = ["The quick brown fox", "", "jumps over the lazy dog the end", None]
    from_batch = build_postings(a.analyze_many(texts))
    from_lists = build_postings(a.tokenize_many(texts))
    assert_same_postings(from_batch, from_lists)


def assert_same_postings(x: Postings, y: Postings) -> None:
    assert x.terms == y.terms
    for name in ("term_ptr", "docs", "tfs", "doc_len"):
        assert np.array_equal(getattr(x, name), getattr(y, name)), name
    assert (x.positions is None) == (y.positions is None)
    if x.positions is not None and y.positions is not None:
        assert np.array_equal(x.positions, y.positions)


def _corrupt(p: Postings, **changes: object) -> Postings:
    fields = {
        "terms": p.terms,
        "term_ptr": p.term_ptr,
        "docs": p.docs,
        "tfs": p.tfs,
        "doc_len": p.doc_len,
        "positions": p.positions,
    }
    fields.update(changes)
    return Postings(**fields)  # type: ignore[arg-type]


def test_validate_detects_corruption() -> None:
    p = build_postings([["b", "a", "b"], ["a", "c"]])
    p.validate()
    bad = [
        _corrupt(p, terms=["b", "a", "c"]),
        _corrupt(p, term_ptr=np.array([0, 2, 3, 3])),
        _corrupt(p, docs=np.array([1, 0, 0, 1], np.uint32)),
        _corrupt(p, docs=np.array([0, 5, 0, 1], np.uint32)),
        _corrupt(p, tfs=np.array([1, 1, 2, 0], np.uint32)),
        _corrupt(p, doc_len=np.array([3, 3], np.uint32)),
        _corrupt(p, positions=np.array([1, 0, 0, 2, 9], np.uint32)),
        _corrupt(p, positions=np.array([1, 0, 2, 0, 1], np.uint32)),
        _corrupt(p, positions=np.array([1, 0, 0], np.uint32)),
    ]
    for q in bad:
        with pytest.raises(InternalError, match="invalid postings"):
            q.validate()


def test_misuse_is_an_internal_error() -> None:
    p = build_postings([["a"], ["b"]])
    with pytest.raises(InternalError, match="live_mask"):
        score_query(p, ["a"], np.ones(3, np.bool_))
    with pytest.raises(InternalError, match="live_mask"):
        local_stats(p, ["a"], np.ones(2, np.int8))
    with pytest.raises(InternalError, match="other query terms"):
        score_query(p, ["a"], stats=local_stats(p, ["b"]))
    with pytest.raises(InternalError, match="different queries"):
        local_stats(p, ["a"]) + local_stats(p, ["b"])
    with pytest.raises(InternalError, match="positions"):
        contains_token_sequence(build_postings([["a"]], with_positions=False), ["a"])


# --- property tests against the naive reference -------------------------------------------------

_TOKEN = st.sampled_from(["a", "ab", "abc", "b", "ba", "c", "d", "e"])
_DOCS = st.lists(st.lists(_TOKEN, max_size=8), min_size=1, max_size=14)
_QUERY = st.lists(st.sampled_from(["a", "ab", "abc", "b", "ba", "c", "d", "e", "zz"]), max_size=5)
_PREFIXES = st.sampled_from([(), ("a",), ("b",), ("ab", "ba"), ("q",)])


@st.composite
def corpus_and_mask(draw: st.DrawFn) -> tuple[list[list[str]], list[bool]]:
    docs = draw(_DOCS)
    live = draw(st.lists(st.booleans(), min_size=len(docs), max_size=len(docs)))
    return docs, live


@settings(max_examples=150, deadline=None)
@given(data=corpus_and_mask(), query=_QUERY, prefixes=_PREFIXES)
def test_score_query_matches_naive(
    data: tuple[list[list[str]], list[bool]], query: list[str], prefixes: tuple[str, ...]
) -> None:
    docs, live = data
    p = build_postings(docs)
    p.validate()
    want = naive_bm25(docs, query, live, prefixes)
    got = as_dict(score_query(p, query, np.array(live, np.bool_), prefixes=prefixes))
    assert_scores_equal(got, want)
    assert_scores_equal(
        as_dict(score_query(p, query, prefixes=prefixes)), naive_bm25(docs, query, None, prefixes)
    )


@settings(max_examples=100, deadline=None)
@given(
    data=corpus_and_mask(), query=_QUERY, cuts=st.lists(st.integers(0, 14), max_size=3), prefixes=_PREFIXES
)
def test_split_sources_with_shared_stats_equal_one_source(
    data: tuple[list[list[str]], list[bool]], query: list[str], cuts: list[int], prefixes: tuple[str, ...]
) -> None:
    docs, live = data
    bounds = sorted({0, len(docs), *(min(c, len(docs)) for c in cuts)})
    parts = [(lo, hi) for lo, hi in pairwise(bounds)]
    sources = [(build_postings(docs[lo:hi]), np.array(live[lo:hi], np.bool_)) for lo, hi in parts]
    stats = TermStats.total([local_stats(p, query, m) for p, m in sources])
    whole = build_postings(docs)
    whole_stats = local_stats(whole, query, np.array(live, np.bool_))
    assert (stats.n_docs, stats.total_len, stats.df.tolist()) == (
        whole_stats.n_docs,
        whole_stats.total_len,
        whole_stats.df.tolist(),
    )
    combined: dict[int, float] = {}
    for (lo, _), (p, m) in zip(parts, sources, strict=True):
        for d, s in as_dict(score_query(p, query, m, stats, prefixes=prefixes)).items():
            combined[lo + d] = s
    assert_scores_equal(
        combined, as_dict(score_query(whole, query, np.array(live, np.bool_), prefixes=prefixes))
    )


@settings(max_examples=100, deadline=None)
@given(data=corpus_and_mask(), query=_QUERY)
def test_live_mask_equals_rebuilding_without_dead_docs(
    data: tuple[list[list[str]], list[bool]], query: list[str]
) -> None:
    docs, live = data
    kept = [i for i, alive in enumerate(live) if alive]
    masked = build_postings(docs)
    rebuilt = build_postings([docs[i] for i in kept])
    s1 = local_stats(masked, query, np.array(live, np.bool_))
    s2 = local_stats(rebuilt, query)
    assert (s1.n_docs, s1.total_len, s1.df.tolist()) == (s2.n_docs, s2.total_len, s2.df.tolist())
    got = as_dict(score_query(masked, query, np.array(live, np.bool_)))
    want = {kept[d]: s for d, s in as_dict(score_query(rebuilt, query)).items()}
    assert_scores_equal(got, want, rel=0)


def naive_contains_sequence(doc: list[str], seq: list[str]) -> bool:
    return bool(seq) and any(doc[i : i + len(seq)] == seq for i in range(len(doc) - len(seq) + 1))


@settings(max_examples=150, deadline=None)
@given(docs=_DOCS, query=_QUERY, prefixes=_PREFIXES)
def test_token_filters_match_naive(
    docs: list[list[str]], query: list[str], prefixes: tuple[str, ...]
) -> None:
    p = build_postings(docs)

    def has_prefix(doc: list[str]) -> bool:
        return any(t.startswith(x) for t in doc for x in prefixes)

    want_all = [
        (bool(query) or bool(prefixes)) and all(t in d for t in query) and (not prefixes or has_prefix(d))
        for d in docs
    ]
    want_any = [any(t in d for t in query) or (bool(prefixes) and has_prefix(d)) for d in docs]
    assert contains_all_tokens(p, query, prefixes=prefixes).tolist() == want_all
    assert contains_any_token(p, query, prefixes=prefixes).tolist() == want_any
    assert contains_token_sequence(p, query).tolist() == [naive_contains_sequence(d, query) for d in docs]


def test_token_sequence_examples() -> None:
    docs = [["new", "york", "city"], ["york", "new"], ["new", "new", "york"], ["new"], []]
    p = build_postings(docs)
    assert contains_token_sequence(p, ["new", "york"]).tolist() == [True, False, True, False, False]
    assert contains_token_sequence(p, ["new", "new"]).tolist() == [False, False, True, False, False]
    assert contains_token_sequence(p, ["york", "city"]).tolist() == [True, False, False, False, False]
    assert contains_token_sequence(p, ["new", "york", "city"]).tolist() == [True, False, False, False, False]
    assert contains_token_sequence(p, []).tolist() == [False] * 5
    assert contains_token_sequence(p, ["nope", "york"]).tolist() == [False] * 5


# --- merging -----------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    parts=st.lists(_DOCS, min_size=1, max_size=4),
    seed=st.integers(0, 2**32 - 1),
    positions=st.booleans(),
)
def test_merge_postings_equals_rebuild(parts: list[list[list[str]]], seed: int, positions: bool) -> None:
    rng = np.random.default_rng(seed)
    total = sum(len(d) for d in parts)
    new_ordinals = rng.permutation(total)
    keep = rng.random(total) < 0.8
    row_maps, offset = [], 0
    for docs in parts:
        m = np.where(keep[offset : offset + len(docs)], new_ordinals[offset : offset + len(docs)], -1)
        row_maps.append(m)
        offset += len(docs)
    merged = merge_postings(
        [build_postings(d, with_positions=positions) for d in parts], row_maps, n_docs=total
    )
    merged.validate()
    expected_docs: list[list[str]] = [[] for _ in range(total)]
    for docs, m in zip(parts, row_maps, strict=True):
        for d, new in zip(docs, m.tolist(), strict=True):
            if new >= 0:
                expected_docs[new] = d
    assert_same_postings(merged, build_postings(expected_docs, with_positions=positions))


def test_merge_postings_errors_and_defaults() -> None:
    a, b = build_postings([["x"], ["y"]]), build_postings([["z"]])
    merged = merge_postings([a, b], [[2, 0], [1]])
    assert merged.n_docs == 3 and merged.terms == ["x", "y", "z"]
    assert merge_postings([a, build_postings([["q"]], with_positions=False)], [[0, 1], [2]]).positions is None
    assert merge_postings([a], [[-1, -1]], n_docs=0).n_terms == 0
    with pytest.raises(InternalError, match="same new ordinal"):
        merge_postings([a, b], [[0, 1], [1]])
    with pytest.raises(InternalError, match="one entry per document"):
        merge_postings([a], [[0]])
    with pytest.raises(InternalError, match="beyond n_docs"):
        merge_postings([a], [[0, 5]], n_docs=3)
    with pytest.raises(InternalError, match="one row map per part"):
        merge_postings([a, b], [[0, 1]])


def test_token_batch_with_unused_vocabulary_entries() -> None:
    batch = TokenBatch(["unused", "a", "b"], np.array([1, 2, 1], np.int32), np.array([0, 2, 3], np.int64))
    p = build_postings(batch)
    p.validate()
    assert p.terms == ["a", "b"] and p.doc_len.tolist() == [2, 1]


def test_sparse_accumulation_path() -> None:
    # 2,000 documents, queries touching a handful: summed without a dense accumulator
    rng = np.random.default_rng(0)
    docs = [["filler"] * int(rng.integers(1, 5)) for _ in range(2000)]
    for i in (3, 50, 51, 1999):
        docs[i] = [*docs[i], "rare", "odd"]
    docs[51].append("rare")
    docs[200] = ["odd", "oddity"]
    live = [i != 50 for i in range(2000)]
    for query, prefixes in [
        (["rare", "odd"], ()),
        (["odd"], ("oddi",)),
        (["rare", "rare", "nothing"], ("od",)),
    ]:
        got = as_dict(score_query(build_postings(docs), query, np.array(live), prefixes=prefixes))
        assert_scores_equal(got, naive_bm25(docs, query, live, prefixes))
