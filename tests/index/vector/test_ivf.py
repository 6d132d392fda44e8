"""Approximate vector search over a segment's IVF: recall@10 >= 0.95 at default settings on
calibrated clustered vectors, unfiltered and with filters keeping 50 %, 10 % and 1 % of rows
(the 1 % case switches to an exact scan), and with rows shadowed by newer data."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from lagoon.format.wal import OP_COLUMN
from lagoon.index.filters.parse import parse_filter
from lagoon.index.segment.build import SEQ_COLUMN
from lagoon.index.segment.read import SegmentReader
from lagoon.index.sources.segment import SegmentSource
from lagoon.index.vector.build import CALIBRATION_KS, TARGET_RECALL
from lagoon.index.vector.plan import DEFAULT_RECALL_TARGET
from lagoon.schema import Schema, apply_schema_update
from tests.index.segment.data import exact_topk, queries, recall_at_k, vectors
from tests.index.segment.helpers import build, open_built

DIM = 128


def clustered_segment(n: int) -> tuple[SegmentReader, np.ndarray, Schema]:
    schema = apply_schema_update(
        Schema(distance_metric="cosine_distance"), {"id": "uint", "v": f"[{DIM}]f32", "bucket": "int"}
    )
    base = vectors(n, DIM)
    table = pa.table(
        {
            "id": pa.array(np.arange(n, dtype=np.uint64)),
            SEQ_COLUMN: pa.array(np.ones(n, np.uint64)),
            OP_COLUMN: pa.array(np.zeros(n, np.uint8)),
            "v": pa.FixedSizeListArray.from_arrays(pa.array(base.reshape(-1)), DIM),
            "bucket": pa.array((np.arange(n) * 7919) % 1000, pa.int64()),  # uncorrelated with v
        }
    )
    return open_built(build(table, schema), schema), base, schema


def check_recall(n: int, nq: int) -> dict[str, float]:
    reader, base, schema = clustered_segment(n)
    info = reader.ref.info["files"]["vec.v"]
    assert info["clusters"] == round(4 * np.sqrt(n))
    vi = reader.vector_index("v")
    assert vi is not None and vi.default_nprobe == info["nprobe"]
    assert vi.probe_k.tolist() == list(CALIBRATION_KS) and np.all(np.diff(vi.probe_n) >= 0)
    qs = queries(nq, DIM)
    bucket = np.asarray(reader.column("bucket").to_numpy())
    results: dict[str, float] = {}
    # filters uncorrelated with the vectors
    src = SegmentSource(reader, np.ones(n, bool))
    for label, flt in [("all", None), ("50%", 500), ("10%", 100), ("1%", 10)]:
        mask = None if flt is None else src.filter_mask(parse_filter(["bucket", "Lt", flt], schema))
        if mask is not None:
            assert mask.mean() == pytest.approx(flt / 1000, rel=0.01)
        truth = exact_topk(base, qs, 10, mask)
        found = [src.vector_topk("v", q, "cosine_distance", 10, mask, approximate=True)[0] for q in qs]
        results[label] = recall_at_k(found, truth)
    # a third of the rows are shadowed by newer parts: positions are of the live rows
    live = np.ones(n, bool)
    live[bucket % 3 == 0] = False
    part = SegmentSource(reader, live)
    rows = np.flatnonzero(live)
    truth = exact_topk(base, qs, 10, live)
    found = [rows[part.vector_topk("v", q, "cosine_distance", 10, None, approximate=True)[0]] for q in qs]
    results["live 2/3"] = recall_at_k(found, truth)
    # a filter correlated with the vectors (the 5 % of rows nearest one direction) and queries
    # from the opposite side: the nearest clusters hold no candidate, the search must widen
    direction = qs[0]
    near = base @ direction >= np.quantile(base @ direction, 0.95)
    truth = exact_topk(base, -qs[:30], 10, near)
    found = [src.vector_topk("v", -q, "cosine_distance", 10, near, approximate=True)[0] for q in qs[:30]]
    assert all(f.shape == (10,) for f in found)
    correlated = recall_at_k(found, truth)
    assert correlated >= 0.9, correlated
    # the same with a dense mask (half the rows, on one side of a plane) and queries from deep on
    # the other side: the probe scores every code and counts candidates from the bits it tests
    proj = base @ direction
    far = base[np.argsort(proj)[:30]]
    for share in (0.5, 0.35):
        side = proj >= np.quantile(proj, 1.0 - share)
        truth = exact_topk(base, far, 10, side)
        found = [src.vector_topk("v", q, "cosine_distance", 10, side, approximate=True)[0] for q in far]
        assert all(f.shape == (10,) for f in found)
        results[f"plane {share:.0%}"] = recall_at_k(found, truth)
    # a fixed nprobe is honoured (no widening): nprobe 1 finds less than the default
    one = [src.vector_topk("v", q, "cosine_distance", 10, None, approximate=True, nprobe=1)[0] for q in qs]
    assert recall_at_k(one, exact_topk(base, qs, 10)) < results["all"]
    # the exact path is exact
    pos, dist = src.vector_topk("v", qs[0], "cosine_distance", 10, None)
    assert pos.tolist() == truth_all_first(base, qs[0])
    assert np.all(np.diff(dist) >= 0)
    return results


def truth_all_first(base: np.ndarray, q: np.ndarray) -> list[int]:
    return [int(x) for x in exact_topk(base, q[None, :], 10)[0]]


def test_recall_50k() -> None:
    results = check_recall(50_000, 150)
    assert all(r >= 0.95 for r in results.values()), results
    assert TARGET_RECALL >= 0.95


@pytest.mark.slow
def test_recall_200k() -> None:
    results = check_recall(200_000, 300)
    assert all(r >= 0.95 for r in results.values()), results


# Masks keeping at most DENSE_MASK of the rows take the sparse kernel (candidates picked, then
# scored). The target is the namespace default; 60 queries x 10 neighbours = 600 per case, so a
# plan meeting the target over the population reads as >= target - 0.016 here (2 s.d. of a
# binomial share of 600 at 0.96); the unchanged plan read 0.88-0.925 on the plane masks.
SPARSE_SHARES = (0.3, 0.25, 0.2, 0.1)
SAMPLE_MARGIN = 0.016


def check_sparse_masks(n: int, nq: int, planes: int = 3) -> dict[str, float]:
    """Recall@10 with masks keeping 10-30 % of the rows: rows on one side of a plane, queried
    from deep on the other side (the nearest clusters hold no candidate, and the candidates of
    the clusters around the plane lie away from the query; ``nq`` queries over ``planes``
    planes), and random rows with ``nq`` held-out queries."""
    reader, base, _ = clustered_segment(n)
    src = SegmentSource(reader, np.ones(n, bool))
    qs = queries(nq, DIM)
    rng = np.random.default_rng(11)
    results: dict[str, float] = {}
    for share in SPARSE_SHARES:
        cases = []
        for d in range(planes):
            proj = base @ qs[d]
            deep = base[np.argsort(proj)[: nq // planes]]
            cases.append(("plane", proj >= np.quantile(proj, 1.0 - share), deep))
        cases.append(("random", rng.random(n) < share, qs))
        found_by: dict[str, list[np.ndarray]] = {}
        truth_by: dict[str, list[np.ndarray]] = {}
        for label, mask, qq in cases:
            truth_by.setdefault(label, []).append(exact_topk(base, qq, 10, mask))
            found = [src.vector_topk("v", q, "cosine_distance", 10, mask, approximate=True)[0] for q in qq]
            assert all(f.shape == (10,) for f in found)
            found_by.setdefault(label, []).extend(found)
        for label, found in found_by.items():
            results[f"{label} {share:.0%}"] = recall_at_k(found, np.concatenate(truth_by[label]))
    return results


def test_sparse_masks_50k() -> None:
    results = check_sparse_masks(50_000, 60)
    assert all(r >= DEFAULT_RECALL_TARGET - SAMPLE_MARGIN for r in results.values()), results


@pytest.mark.slow
def test_sparse_masks_200k() -> None:
    results = check_sparse_masks(200_000, 60)
    assert all(r >= DEFAULT_RECALL_TARGET - SAMPLE_MARGIN for r in results.values()), results
