"""``POST /v1/namespaces/{ns}/_debug/recall``: measured recall of ANN against exhaustive search.

Honest by construction: every sample runs the same search twice through the public query path,
once as ``ANN`` and once as ``kNN`` (exact), and compares the id sets. Today ANN is answered
exactly, so recall is 1.0; when a real ANN index lands this endpoint measures it unchanged.

Body (all optional): ``num`` (samples, default 25, at most 1000), ``top_k`` (default 10, at most
1000), ``filters`` (applied to both searches), ``rank_by`` (one ``[attr, "ANN"|"kNN", vector]``
query to evaluate instead of sampling; then ``num`` must be absent, null or 1),
``include_ground_truth`` (adds ``ground_truth: [{query_vector, nearest_neighbors}]``).
Without ``rank_by``, the query vectors are ``num`` stored vectors of the ``vector`` attribute,
drawn uniformly at random from the namespace; a namespace without a ``vector`` attribute of a
vector type is refused (400) naming what it has instead, before anything is sampled.
"""

from __future__ import annotations

import random
from typing import Any

from lagoon.errors import InvalidRequest
from lagoon.schema import AttrType
from lagoon.server.app_state import Engine

DEFAULT_NUM = 25
DEFAULT_TOP_K = 10
MAX_NUM = 1000
MAX_TOP_K = 1000
_FETCH_ALL_UP_TO = 10_000
_FIELDS = frozenset({"num", "top_k", "filters", "rank_by", "include_ground_truth"})


def _int(body: dict[str, Any], name: str, default: int, high: int) -> int:
    v = body.get(name)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= high:
        raise InvalidRequest(f"{name}: expected an integer between 1 and {high}")
    return v


def parse_recall_body(body: dict[str, Any]) -> tuple[int, int, Any, tuple[str, Any] | None, bool]:
    """``(num, top_k, filters, (attr, vector) | None, include_ground_truth)``; 400 on bad input."""
    unknown = set(body) - _FIELDS
    if unknown:
        raise InvalidRequest(f"recall: unknown field(s) {', '.join(sorted(unknown))}")
    num = _int(body, "num", DEFAULT_NUM, MAX_NUM)
    top_k = _int(body, "top_k", DEFAULT_TOP_K, MAX_TOP_K)
    include = body.get("include_ground_truth", False)
    if include is None:
        include = False
    if not isinstance(include, bool):
        raise InvalidRequest("include_ground_truth: expected true or false")
    rank = body.get("rank_by")
    given: tuple[str, Any] | None = None
    if rank is not None:
        if not (
            isinstance(rank, list)
            and len(rank) == 3
            and isinstance(rank[0], str)
            and rank[1] in ("ANN", "kNN")
            and isinstance(rank[2], list | str)
        ):
            raise InvalidRequest('rank_by: expected [attribute, "ANN", query vector]')
        if body.get("num") not in (None, 1):
            raise InvalidRequest("num: must be absent, null or 1 when rank_by is given")
        given = (rank[0], rank[2])
        num = 1
    return num, top_k, body.get("filters"), given, include


async def _check_sampled_attribute(db: Engine, namespace: str, org: str, attr: str) -> None:
    """Refuse sampling ``attr`` unless it is a vector attribute of the namespace (a 404 for a
    missing namespace comes from reading its schema)."""
    schema = await db.get_schema(namespace, org=org)
    types = {name: AttrType.parse(a["type"], stored=True) for name, a in schema.items() if name != "id"}
    if attr in types and types[attr].is_vector:
        return
    what = (
        f"recall: namespace '{namespace}' has no '{attr}' attribute to sample query vectors from"
        if attr not in types
        else f"recall: attribute '{attr}' of namespace '{namespace}' has type {types[attr]}, not a vector type"
    )
    vectors = sorted(name for name, t in types.items() if t.is_vector)
    if not vectors:
        raise InvalidRequest(f"{what}; the namespace has no vector attribute, so no vector index to measure")
    raise InvalidRequest(
        f"{what}; its vector attributes: {', '.join(vectors)} (measure one with "
        f'rank_by [attribute, "ANN", query vector])'
    )


async def _sample_vectors(
    db: Engine, namespace: str, org: str, attr: str, num: int, rng: random.Random
) -> list[Any]:
    counted = await db.query(namespace, {"aggregate_by": {"n": ["Count"]}}, org=org)
    total = int((counted.get("aggregations") or {}).get("n") or 0)
    if total == 0:
        return []
    if total <= _FETCH_ALL_UP_TO:
        res = await db.query(
            namespace, {"rank_by": ["id", "asc"], "top_k": total, "include_attributes": [attr]}, org=org
        )
        vectors = [r[attr] for r in res.get("rows", []) if r.get(attr) is not None]
        return rng.sample(vectors, min(num, len(vectors)))
    out = []
    for offset in rng.sample(range(total), min(num, total)):
        res = await db.query(
            namespace,
            {"rank_by": ["id", "asc"], "top_k": 1, "offset": offset, "include_attributes": [attr]},
            org=org,
        )
        rows = res.get("rows") or []
        if rows and rows[0].get(attr) is not None:
            out.append(rows[0][attr])
    return out


async def evaluate_recall(
    db: Engine, namespace: str, body: dict[str, Any], *, org: str, rng: random.Random | None = None
) -> dict[str, Any]:
    """The recall response body (see the module docstring)."""
    num, top_k, filters, given, include = parse_recall_body(body)
    rng = rng or random.Random()
    if given is not None:
        attr, vectors = given[0], [given[1]]
    else:
        attr = "vector"
        await _check_sampled_attribute(db, namespace, org, attr)
        vectors = await _sample_vectors(db, namespace, org, attr, num, rng)
        if not vectors:
            raise InvalidRequest(f"recall: no document of namespace '{namespace}' has a '{attr}' vector")
    recalls: list[float] = []
    ann_counts: list[int] = []
    exact_counts: list[int] = []
    truth: list[dict[str, Any]] = []
    for vec in vectors:
        searches = {}
        for mode in ("ANN", "kNN"):
            q: dict[str, Any] = {"rank_by": [attr, mode, vec], "top_k": top_k}
            if filters is not None:
                q["filters"] = filters
            if mode == "kNN" and include:
                q["include_attributes"] = [attr]
            searches[mode] = (await db.query(namespace, q, org=org)).get("rows") or []
        ann_ids = {_key(r["id"]) for r in searches["ANN"]}
        exact_ids = {_key(r["id"]) for r in searches["kNN"]}
        recalls.append(len(ann_ids & exact_ids) / len(exact_ids) if exact_ids else 1.0)
        ann_counts.append(len(ann_ids))
        exact_counts.append(len(exact_ids))
        if include:
            truth.append({"query_vector": vec, "nearest_neighbors": searches["kNN"]})
    n = len(vectors)
    out: dict[str, Any] = {
        "avg_recall": sum(recalls) / n,
        "avg_ann_count": sum(ann_counts) / n,
        "avg_exhaustive_count": sum(exact_counts) / n,
    }
    if include:
        out["ground_truth"] = truth
    return out


def _key(doc_id: Any) -> Any:
    return doc_id if isinstance(doc_id, int | str) else repr(doc_id)


__all__ = ["evaluate_recall", "parse_recall_body"]
