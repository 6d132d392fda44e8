"""The ``fts.<attr>`` file: one full-text attribute's postings (``lagoon.index.text.bm25.Postings``)
over every row of a segment, as raw little-endian sections (no pickle).

Sections: ``terms_offsets`` (int64[n_terms + 1]) and ``terms_data`` (UTF-8 bytes) give the sorted
vocabulary (an Arrow large_string layout); ``term_ptr`` (int64[n_terms + 1]), ``docs``, ``tfs``
(uint32[nnz]), ``doc_len`` (uint32[n_rows]) and, when built with positions, ``positions``
(uint32[sum(tfs)]). Document ordinal = segment row. The meta holds the ``full_text_search``
options the postings were built with: a reader whose schema now analyses text differently
(``FtsConfig.analysis_key`` changed) must not use them. With ``remove_stopwords``, the meta also
holds ``stopwords_version`` (absent = 1): postings built with other stopword lists are not used.

Loading is zero-copy for every numeric array (read-only views over the file bytes); only the
vocabulary becomes a Python list (``Postings`` needs one). The loader runs the structural checks
that keep indexing in bounds (shapes, pointer monotonicity, ordinal ranges); the frame checksum
already guarantees the bytes are the builder's. Pure: no I/O.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from lagoon.errors import DataCorruption
from lagoon.format.segment import MAGIC_FTS, SectionFile, SectionWriter
from lagoon.index.text.bm25 import DOC_DTYPE, POS_DTYPE, TF_DTYPE, Postings
from lagoon.index.text.stopwords import STOPWORDS_VERSION
from lagoon.schema import FtsConfig


def encode_postings(attr: str, config: dict[str, Any], postings: Postings) -> tuple[bytes, dict[str, Any]]:
    """(framed fts file, summary for the segment's info)."""
    terms = pa.array(postings.terms, type=pa.large_string())
    offsets = np.frombuffer(terms.buffers()[1], dtype="<i8", count=len(postings.terms) + 1)
    data_buf = terms.buffers()[2]
    w = SectionWriter()
    w.add("terms_offsets", offsets - offsets[0])
    w.add_bytes("terms_data", data_buf.to_pybytes()[int(offsets[0]) : int(offsets[-1])] if data_buf else b"")
    w.add("term_ptr", np.asarray(postings.term_ptr, dtype="<i8"))
    w.add("docs", np.asarray(postings.docs, dtype="<u4"))
    w.add("tfs", np.asarray(postings.tfs, dtype="<u4"))
    w.add("doc_len", np.asarray(postings.doc_len, dtype="<u4"))
    if postings.positions is not None:
        w.add("positions", np.asarray(postings.positions, dtype="<u4"))
    docs_with_tokens, total_len = postings.corpus_totals
    meta = {
        "attr": attr,
        "config": config,
        "n_docs": postings.n_docs,
        "n_terms": postings.n_terms,
        "nnz": int(postings.docs.shape[0]),
        "positions": postings.positions is not None,
        "docs_with_tokens": docs_with_tokens,
        "total_len": total_len,
    }
    if config.get("remove_stopwords"):
        meta["stopwords_version"] = STOPWORDS_VERSION
    summary = {
        "kind": "fts",
        "attr": attr,
        "terms": postings.n_terms,
        "postings": int(postings.docs.shape[0]),
        "docs_with_tokens": docs_with_tokens,
    }
    return w.finish(MAGIC_FTS, meta), summary


def same_stopwords(meta: dict[str, Any], config: FtsConfig) -> bool:
    """Whether postings with this meta dropped the stopwords ``config`` drops now."""
    return not config.remove_stopwords or meta.get("stopwords_version", 1) == STOPWORDS_VERSION


def decode_postings(sf: SectionFile, n_rows: int) -> tuple[dict[str, Any], Postings]:
    """(the FTS options the postings were built with, the postings). Raises DataCorruption."""
    what = sf.what
    meta = sf.meta
    try:
        config = dict(meta["config"])
        n_terms = int(meta["n_terms"])
        n_docs = int(meta["n_docs"])
    except (KeyError, TypeError, ValueError) as e:
        raise DataCorruption(f"{what}: malformed meta ({e!r})") from None
    if n_docs != n_rows:
        raise DataCorruption(f"{what}: written for {n_docs} rows, the segment has {n_rows}")
    offsets = sf.array("terms_offsets", "<i8")
    data = sf.array("terms_data", "|u1")
    term_ptr = sf.array("term_ptr", "<i8")
    docs = sf.array("docs", "<u4")
    tfs = sf.array("tfs", "<u4")
    doc_len = sf.array("doc_len", "<u4")
    positions = sf.array("positions", "<u4") if sf.has("positions") else None
    nnz = docs.shape[0]
    ok = (
        offsets.shape == (n_terms + 1,)
        and term_ptr.shape == (n_terms + 1,)
        and tfs.shape == (nnz,)
        and doc_len.shape == (n_rows,)
        and offsets[0] == 0
        and offsets[-1] == data.shape[0]
        and term_ptr[0] == 0
        and term_ptr[-1] == nnz
        and not np.any(np.diff(offsets) < 0)
        and not np.any(np.diff(term_ptr) <= 0)
        and (nnz == 0 or (int(docs.max()) < n_rows and int(tfs.min()) >= 1))
    )
    if ok and positions is not None:
        ok = positions.shape == (int(tfs.sum(dtype=np.int64)),)
    if not ok:
        raise DataCorruption(f"{what}: postings arrays are inconsistent")
    try:
        vocab = pa.LargeStringArray.from_buffers(n_terms, pa.py_buffer(offsets), pa.py_buffer(data))
        vocab.validate(full=True)
    except (pa.ArrowException, ValueError) as e:
        raise DataCorruption(f"{what}: unreadable vocabulary ({e})") from None
    terms: list[str] = vocab.to_pylist()
    postings = Postings(
        terms=terms,
        term_ptr=term_ptr,
        docs=docs.view(DOC_DTYPE),
        tfs=tfs.view(TF_DTYPE),
        doc_len=doc_len.view(DOC_DTYPE),
        positions=None if positions is None else positions.view(POS_DTYPE),
    )
    return config, postings
