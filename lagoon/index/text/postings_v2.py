"""The ``fts.<attr>`` file, version 2: block-compressed postings with block score bounds, a
front-coded term dictionary and paged regions for ranged reads (normative spec:
docs/formats/fts-v2.md; RFC: docs/rfcs/0003-fts-v2.md).

Layout: a sectioned body (``format.SectionWriter``) whose sections — document lengths, the
dictionary, the packed per-term columns and the page checksums — form the checksummed *head*,
followed by two raw regions of little-endian uint32 words: the postings and the positions. A
cold reader fetches the head with one ranged read (its length is in the manifest's
``info.files[name].head_bytes``), then only the pages holding its query terms' records, each
verified by its own CRC-32C. ``encode_postings_v2`` writes a file from ``Postings``;
``open_postings_v2`` turns a verified ``SectionFile`` (whole file, or head only plus a
``BlockSource``) into ``BlockPostings``. Pure: no I/O (fetches go through the given source).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Protocol

import numpy as np

from lagoon.errors import DataCorruption
from lagoon.format.segment import (
    FTS_FORMAT_VERSION,
    MAGIC_FTS,
    SectionFile,
    SectionWriter,
    crc32c_of,
    open_head,
    open_sections,
)
from lagoon.index.text import kernels as K
from lagoon.index.text.blockpostings import BlockPostings, Region, encode_dictionary, read_only
from lagoon.index.text.bm25 import Postings
from lagoon.index.text.stopwords import STOPWORDS_VERSION


class BlockSource(Protocol):
    """Where postings opened from their head get the rest of the file (absolute offsets); the
    same shape as the vector index's source. Called from query threads, never the event loop."""

    def ranges(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """The bytes ``[start, end)`` of each range."""
        ...


PAGE_BYTES = 64 << 10
"""Regions are checksummed (and fetched) in pages of this many bytes."""


def _doc_len_array(doc_len: np.ndarray) -> np.ndarray:
    top = int(doc_len.max()) if doc_len.shape[0] else 0
    dtype = "|u1" if top < 1 << 8 else "<u2" if top < 1 << 16 else "<u4"
    return np.asarray(doc_len).astype(dtype)


def _page_crcs(region: np.ndarray) -> np.ndarray:
    raw = region.view(np.uint8)
    n = (raw.shape[0] + PAGE_BYTES - 1) // PAGE_BYTES
    return np.array([crc32c_of(raw[i * PAGE_BYTES : (i + 1) * PAGE_BYTES]) for i in range(n)], "<u4")


def encode_postings_v2(
    attr: str, config: dict[str, Any], postings: Postings, *, k1: float, b: float
) -> tuple[bytes, dict[str, Any]]:
    """(framed fts file of format version 2, summary for the segment's info). ``k1``/``b``: the
    attribute's BM25 parameters, for which the block bounds are computed."""
    n_docs_tok, total_len = postings.corpus_totals
    a0 = total_len / n_docs_tok if n_docs_tok else 0.0
    term_ptr = read_only(np.ascontiguousarray(postings.term_ptr, dtype=np.int64))
    tfs = read_only(np.ascontiguousarray(postings.tfs, dtype=np.uint32))
    post, post_len = K.encode_postings(
        term_ptr,
        read_only(np.ascontiguousarray(postings.docs, dtype=np.uint32)),
        tfs,
        read_only(np.ascontiguousarray(postings.doc_len, dtype=np.uint32)),
        a0,
        float(k1),
        float(b),
    )
    with_pos = postings.positions is not None
    dfs = np.diff(postings.term_ptr).astype(np.int64)
    first_off, first, block_off, body = encode_dictionary(postings.terms)
    w = SectionWriter()
    w.add("doc_len", _doc_len_array(postings.doc_len))
    w.add("dict_first_off", first_off.astype("<u4"))
    w.add("dict_first", first.astype("|u1"))
    w.add("dict_block_off", block_off.astype("<u4"))
    w.add("dict_data", body.astype("|u1"))
    for name, values in (("df", dfs - 1), ("post_len", post_len)):
        widths, words = K.pack_column(read_only(values.astype(np.int64)))
        w.add(f"{name}_widths", widths.astype("|u1"))
        w.add(f"{name}_words", words.astype("<u4"))
    w.add("post_crc", _page_crcs(post))
    pos = np.zeros(0, np.uint32)
    if with_pos:
        assert postings.positions is not None
        positions = read_only(np.ascontiguousarray(postings.positions, dtype=np.uint32))
        pos, pos_len = K.encode_positions(term_ptr, tfs, positions)
        widths, words = K.pack_column(read_only(pos_len.astype(np.int64)))
        w.add("pos_len_widths", widths.astype("|u1"))
        w.add("pos_len_words", words.astype("<u4"))
        w.add("pos_crc", _page_crcs(pos))
    head = {"length": w.size, "crc32c": w.area_crc32c()}
    regions = {"postings": {"offset": w.add_raw(post.astype("<u4")), "length": int(post.nbytes)}}
    if with_pos:
        regions["positions"] = {"offset": w.add_raw(pos.astype("<u4")), "length": int(pos.nbytes)}
    meta = {
        "attr": attr,
        "config": config,
        "n_docs": postings.n_docs,
        "n_terms": postings.n_terms,
        "nnz": int(postings.docs.shape[0]),
        "positions": with_pos,
        "docs_with_tokens": n_docs_tok,
        "total_len": total_len,
        "block_size": K.BLOCK,
        "dict_block": K.DICT_BLOCK,
        "chunk": K.CHUNK,
        "page_bytes": PAGE_BYTES,
        "bounds": {"k1": float(k1), "b": float(b), "avgdl": a0},
        "head": head,
        "regions": regions,
    }
    if config.get("remove_stopwords"):
        meta["stopwords_version"] = STOPWORDS_VERSION
    data = w.finish(MAGIC_FTS, meta, version=FTS_FORMAT_VERSION)
    summary = {
        "kind": "fts",
        "attr": attr,
        "format": FTS_FORMAT_VERSION,
        "terms": postings.n_terms,
        "postings": int(postings.docs.shape[0]),
        "docs_with_tokens": n_docs_tok,
        "head_bytes": w.data_start + head["length"],
        "postings_bytes": int(post.nbytes),
        "positions_bytes": int(pos.nbytes),
    }
    return data, summary


def _column(sf: SectionFile, name: str, n: int) -> np.ndarray:
    widths = sf.array(f"{name}_widths", "|u1")
    words = sf.array(f"{name}_words", "<u4")
    if widths.shape != ((n + K.CHUNK - 1) // K.CHUNK,) or int(widths.max(initial=0)) > 32:
        raise DataCorruption(f"{sf.what}: column {name!r} has bad widths")
    if int(K.column_words(widths, n)) != words.shape[0]:
        raise DataCorruption(f"{sf.what}: column {name!r} has {words.shape[0]} words")
    return np.asarray(K.unpack_column(widths, words, n), dtype=np.int64)


def warm_kernels() -> None:
    """Compile (or load from numba's cache) every kernel with the argument types Lagoon passes:
    building, opening whole and by range, scoring, statistics, phrases, decoding. Run by
    ``scripts/bootstrap`` so that no query waits for a compilation."""
    from lagoon.index.text.blockpostings import block_topk
    from lagoon.index.text.bm25 import build_postings, contains_token_sequence, local_stats

    postings = build_postings([["a", "b", "a"], ["b", "c"], []] * 100 + [["d"]])
    data, _ = encode_postings_v2("warm", {}, postings, k1=1.2, b=0.75)
    sf = open_sections(data, magic=MAGIC_FTS, what="warm")
    _, bp = open_postings_v2(sf, postings.n_docs)
    head_end = sf.data_start + int(sf.meta["head"]["length"])
    head = open_head(data[:head_end], magic=MAGIC_FTS, what="warm", size=len(data))

    class Whole:
        def ranges(self, ranges: Any) -> list[bytes]:
            return [data[lo:hi] for lo, hi in ranges]

        def whole(self) -> bytes:
            return data

    _, lazy = open_postings_v2(head, postings.n_docs, Whole())
    live = np.ones(postings.n_docs, np.bool_)
    for p in (bp, lazy):
        for terms in (["a", "b"], ["c"]):
            stats = local_stats(p, terms, live)
            block_topk(p, terms, 2, stats, live)
            block_topk(p, terms, 2, stats, None, k1=1.0)
            block_topk(p, terms, 2, local_stats(p, terms), None, prefixes=("d",))
        contains_token_sequence(p, ["a", "b"])
        p.to_postings()
        _ = p.terms
    for dtype in (np.uint16, np.uint32):  # files of longer documents store wider lengths
        wide = replace(bp, doc_len=bp.doc_len.astype(dtype))
        block_topk(wide, ["a", "b"], 2, local_stats(wide, ["a", "b"]), live)
        block_topk(wide, ["a", "b"], 2, local_stats(wide, ["a", "b"]), None)


def _offsets(lengths: np.ndarray) -> np.ndarray:
    out = np.zeros(lengths.shape[0] + 1, np.int64)
    np.cumsum(lengths, out=out[1:])
    return out


def _region(
    sf: SectionFile, name: str, n_words: int, crcs: np.ndarray, page_bytes: int, source: BlockSource | None
) -> Region:
    """A region of the file: views over the bytes when the file is whole, else an empty buffer
    whose pages come from ``source`` and are checked against ``crcs``."""
    what = sf.what
    try:
        spec = sf.meta["regions"][name]
        off, length = int(spec["offset"]), int(spec["length"])
    except (KeyError, TypeError, ValueError):
        raise DataCorruption(f"{what}: meta lacks region {name!r}") from None
    if length != 4 * n_words:
        raise DataCorruption(f"{what}: region {name!r} has {length} bytes, the records need {4 * n_words}")
    if crcs.shape != ((length + page_bytes - 1) // page_bytes,):
        raise DataCorruption(f"{what}: region {name!r} has a bad page checksum table")
    if sf.end is None:  # whole file: zero-copy view
        words = sf.region(off, length).view("<u4")
        return Region(words, page_bytes)
    if source is None:
        raise DataCorruption(f"{what}: a head without a source for its regions")
    start = sf.data_start + off

    def load(pages: list[int] | Any) -> list[bytes]:
        ranges = [(start + p * page_bytes, start + min(length, (p + 1) * page_bytes)) for p in pages]
        got = source.ranges(_merge(ranges))
        out: list[bytes] = []
        blob = _split(got, _merge(ranges), ranges)
        for p, data in zip(pages, blob, strict=True):
            if crc32c_of(data) != int(crcs[p]):
                raise DataCorruption(f"{what}: page {p} of region {name!r} fails its checksum")
            out.append(data)
        return out

    return Region(np.zeros(n_words, np.uint32), page_bytes, loaded=False, loader=load)


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Adjacent ranges (sorted) joined, so consecutive pages are one request."""
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and out[-1][1] == lo:
            out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return out


def _split(got: list[bytes], merged: list[tuple[int, int]], ranges: list[tuple[int, int]]) -> list[bytes]:
    """The bytes of each of ``ranges`` (sorted, covered by ``merged``) from the merged reads."""
    if len(got) != len(merged):
        raise DataCorruption("postings: the store returned the wrong number of ranges")
    out: list[bytes] = []
    j = 0
    for lo, hi in sorted(ranges):
        while merged[j][1] < hi:
            j += 1
        base = merged[j][0]
        chunk = got[j][lo - base : hi - base]
        if len(chunk) != hi - lo:
            raise DataCorruption("postings: a ranged read returned too few bytes")
        out.append(chunk)
    return out


def open_postings_v2(
    sf: SectionFile, n_rows: int, source: BlockSource | None = None
) -> tuple[dict[str, Any], BlockPostings]:
    """(the FTS options the postings were built with, the postings) of a verified v2 file —
    whole, or its head (``sf.end`` set) with ``source`` for the pages. Raises DataCorruption."""
    what, meta = sf.what, sf.meta
    try:
        config = dict(meta["config"])
        n_terms = int(meta["n_terms"])
        n_docs = int(meta["n_docs"])
        nnz = int(meta["nnz"])
        with_pos = bool(meta["positions"])
        page_bytes = int(meta["page_bytes"])
        bounds = meta["bounds"]
        bk1, bb, ba = float(bounds["k1"]), float(bounds["b"]), float(bounds["avgdl"])
        layout = (int(meta["block_size"]), int(meta["dict_block"]), int(meta["chunk"]))
    except (KeyError, TypeError, ValueError) as e:
        raise DataCorruption(f"{what}: malformed meta ({e!r})") from None
    if layout != (K.BLOCK, K.DICT_BLOCK, K.CHUNK) or page_bytes <= 0 or page_bytes % 4:
        raise DataCorruption(f"{what}: unsupported block layout {layout}, page size {page_bytes}")
    if n_docs != n_rows:
        raise DataCorruption(f"{what}: written for {n_docs} rows, the segment has {n_rows}")
    doc_len = sf.array("doc_len")
    if doc_len.shape != (n_rows,) or doc_len.dtype.kind != "u":
        raise DataCorruption(f"{what}: doc_len has shape {doc_len.shape}")
    n_blocks = (n_terms + K.DICT_BLOCK - 1) // K.DICT_BLOCK
    first_off = sf.array("dict_first_off", "<u4")
    first = sf.array("dict_first", "|u1")
    block_off = sf.array("dict_block_off", "<u4")
    body = sf.array("dict_data", "|u1")
    ok = (
        first_off.shape == (n_blocks + 1,)
        and block_off.shape == (n_blocks + 1,)
        and int(first_off[0]) == 0
        and int(first_off[-1]) == first.shape[0]
        and int(block_off[0]) == 0
        and int(block_off[-1]) == body.shape[0]
        and not np.any(np.diff(first_off.astype(np.int64)) <= 0)
        and not np.any(np.diff(block_off.astype(np.int64)) < 0)
    )
    if not ok:
        raise DataCorruption(f"{what}: the term dictionary is inconsistent")
    dfs = _column(sf, "df", n_terms) + 1
    post_off = _offsets(_column(sf, "post_len", n_terms))
    if int(dfs.sum()) != nnz or (n_terms and int(dfs.min()) < 1):
        raise DataCorruption(f"{what}: document frequencies do not add up to {nnz} postings")
    post = _region(sf, "postings", int(post_off[-1]), sf.array("post_crc", "<u4"), page_bytes, source)
    pos_off = pos = None
    if with_pos:
        pos_off = _offsets(_column(sf, "pos_len", n_terms))
        pos = _region(sf, "positions", int(pos_off[-1]), sf.array("pos_crc", "<u4"), page_bytes, source)
    bp = BlockPostings(
        n_terms=n_terms,
        doc_len=doc_len,
        dict_first_off=first_off,
        dict_first=first,
        dict_block_off=block_off,
        dict_data=body,
        dfs=dfs,
        post_off=post_off,
        post=post,
        pos_off=pos_off,
        pos=pos,
        bound_k1=bk1,
        bound_b=bb,
        bound_avgdl=ba,
    )
    return config, bp


def hydrate_postings_v2(bp: BlockPostings, data: bytes, sf_whole: SectionFile) -> None:
    """Hand the whole (verified) file to postings opened from their head."""
    for name, region in (("postings", bp.post), ("positions", bp.pos)):
        if region is None or region.complete:
            continue
        spec = sf_whole.meta["regions"][name]
        region.fill(sf_whole.region(int(spec["offset"]), int(spec["length"])).view("<u4"))


__all__ = ["PAGE_BYTES", "encode_postings_v2", "hydrate_postings_v2", "open_postings_v2", "warm_kernels"]
