"""The segment file ``spv.<attr>``: one sparse vector attribute's ``SparseIndex`` as a sectioned
file (magic ``LGSP``; normative spec docs/formats/sparse.md).

The directory sections (``dims``, ``dim_offset``, ``block_offset``, ``block_max``) come first and
the postings (``rows``, ``weights``) last, so the head of the file is the dimension directory.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lagoon.errors import DataCorruption
from lagoon.format.segment import MAGIC_SPV, SectionFile, SectionWriter
from lagoon.index.sparse.index import BLOCK, SparseIndex

SPV_TYPE = "{}f16"


def encode_spv(attr: str, index: SparseIndex) -> tuple[bytes, dict[str, Any]]:
    """The framed file and its manifest summary."""
    w = SectionWriter()
    w.add("dims", index.dims.astype("<u4"))
    w.add("dim_offset", index.offsets.astype("<u8"))
    w.add("block_offset", index.block_offsets.astype("<u8"))
    w.add("block_max", index.block_max.astype("<f4"))
    w.add("rows", index.rows.astype("<u4"))
    w.add("weights", index.weights.astype("<f2"))
    meta = {
        "attr": attr,
        "type": SPV_TYPE,
        "metric": "dot_product",
        "block": BLOCK,
        "n_rows": index.n_rows,
        "n_dims": int(index.dims.shape[0]),
        "n_postings": index.n_postings,
    }
    data = w.finish(MAGIC_SPV, meta)
    summary = {
        "kind": "spv",
        "attr": attr,
        "dims": int(index.dims.shape[0]),
        "postings": index.n_postings,
        "blocks": int(index.block_max.shape[0]),
    }
    return data, summary


def open_spv(sf: SectionFile, n_rows: int) -> SparseIndex:
    """The index of a verified ``spv`` file of a segment of ``n_rows`` rows (``DataCorruption``
    if it is malformed)."""
    meta = sf.meta
    if meta.get("type") != SPV_TYPE or meta.get("block") != BLOCK or meta.get("metric") != "dot_product":
        raise DataCorruption(f"{sf.what}: unknown sparse index type, block size or metric")
    if meta.get("n_rows") != n_rows:
        raise DataCorruption(f"{sf.what}: built for {meta.get('n_rows')} rows, the segment has {n_rows}")
    index = SparseIndex(
        n_rows,
        sf.array("dims", "<u4"),
        sf.array("dim_offset", "<u8").astype(np.int64),
        sf.array("rows", "<u4"),
        sf.array("weights", "<f2"),
        sf.array("block_offset", "<u8").astype(np.int64),
        sf.array("block_max", "<f4"),
    )
    if index.dims.shape[0] != meta.get("n_dims") or index.n_postings != meta.get("n_postings"):
        raise DataCorruption(f"{sf.what}: section sizes disagree with the meta")
    index.check(sf.what)
    return index


__all__ = ["encode_spv", "open_spv"]
