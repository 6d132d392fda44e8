"""The ``vec.<attr>`` file codec (normative spec: docs/formats/segment.md, "vec.<a>").

One vector attribute of a segment: the IVF centroids, a table of contents (per cluster: offset,
length, count, CRC-32C of its block), ``row_cluster`` (the cluster of every segment row; the
cluster count means "no vector"), the per-dimension value ranges of the 8-bit first pass
(``sq_min``, ``sq_max``), then the cluster blocks. A block is ``[u32 row ordinals][zero pad to
64][vectors in the column dtype]``, 64-aligned; ordinals ascend inside a block. Everything before
the blocks is the checksummed *head* (``meta["head"]``), so a reader can fetch the head with one
ranged read and then only the blocks it needs, each verified against its own checksum.

This module writes the file from an already computed layout (``encode``), and reads it back:
``read_head`` validates the meta and the table of contents and yields the row map;
``block_vectors`` checks one fetched block and returns its vectors. What goes into the file
(the clustering, the recall table) is the index's business (lagoon/index/vector/build.py). Pure:
no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lagoon.errors import DataCorruption, InternalError
from lagoon.format.segment import MAGIC_VEC, SectionFile, SectionWriter, align, crc32c_of

METRICS = ("cosine_distance", "euclidean_squared")
DTYPES: dict[str, np.dtype[Any]] = {"f32": np.dtype("<f4"), "f16": np.dtype("<f2"), "i8": np.dtype("i1")}


def align64(n: np.ndarray) -> np.ndarray:
    out: np.ndarray = (n + 63) // 64 * 64
    return out


def block_lengths(counts: np.ndarray, dims: int, itemsize: int) -> tuple[np.ndarray, np.ndarray]:
    """(offset of the vectors inside each block, length of each block) for cluster ``counts``."""
    vec_off = align64(4 * counts)
    return vec_off, vec_off + counts * dims * itemsize


@dataclass(frozen=True)
class EncodedVec:
    data: bytes  # the framed file
    head_bytes: int  # bytes from the file's start to the end of the head (one ranged read)


def encode(
    attr: str,
    *,
    n_rows: int,
    dtype: str,
    metric: str,
    centroids: np.ndarray,
    cord: np.ndarray,
    counts: np.ndarray,
    vectors: np.ndarray,
    sq_min: np.ndarray,
    sq_max: np.ndarray,
    nprobe: dict[str, Any],
    kmeans: dict[str, Any],
) -> EncodedVec:
    """The file of one vector column laid out in ``k = len(counts)`` clusters: ``cord`` are the
    row ordinals in cluster order (ascending inside a cluster), ``vectors`` the matching vectors
    in the column dtype, ``nprobe`` the recall calibration and ``kmeans`` the clustering
    parameters (both stored in the meta as given)."""
    if metric not in METRICS:
        raise InternalError(f"unknown distance metric {metric!r}")
    if dtype not in DTYPES:
        raise InternalError(f"unknown vector dtype {dtype!r}")
    k = int(counts.shape[0])
    m = int(cord.shape[0])
    dims = int(vectors.shape[1])
    dt = DTYPES[dtype]
    vec_off, lengths = block_lengths(counts, dims, dt.itemsize)
    offsets = np.zeros(k, np.int64)
    if k:
        np.cumsum(align64(lengths[:-1]), out=offsets[1:])
    total = int(offsets[-1] + align(int(lengths[-1]))) if k else 0
    blocks = np.zeros(total, np.uint8)
    crcs = np.zeros(k, np.uint32)
    ptr = np.zeros(k + 1, np.int64)
    np.cumsum(counts, out=ptr[1:])
    for c in range(k):
        o, n = int(offsets[c]), int(counts[c])
        lo, hi = int(ptr[c]), int(ptr[c + 1])
        blocks[o : o + 4 * n].view(np.uint32)[:] = cord[lo:hi]
        vo = o + int(vec_off[c])
        blocks[vo : vo + n * dims * dt.itemsize].view(dt).reshape(n, dims)[:] = vectors[lo:hi]
        crcs[c] = crc32c_of(blocks[o : o + int(lengths[c])])

    w = SectionWriter()
    w.add("centroids", centroids.astype("<f4").reshape(k, dims))
    w.add("cluster_offset", offsets.astype("<u8"))
    w.add("cluster_length", lengths.astype("<u8"))
    w.add("cluster_count", counts.astype("<u4"))
    w.add("cluster_crc32c", crcs.astype("<u4"))
    row_cluster = np.full(n_rows, k, np.uint32)  # k: the row has no vector
    row_cluster[cord] = np.repeat(np.arange(k, dtype=np.uint32), counts)
    w.add("row_cluster", row_cluster.astype("<u4"))
    w.add("sq_min", sq_min.astype("<f4"))
    w.add("sq_max", sq_max.astype("<f4"))
    head = {"length": w.size, "crc32c": w.area_crc32c()}
    blocks_at = w.add_raw(blocks)
    meta = {
        "attr": attr,
        "dims": dims,
        "dtype": dtype,
        "metric": metric,
        "n_rows": int(n_rows),
        "n_vectors": m,
        "n_clusters": k,
        "spherical": metric == "cosine_distance",
        "kmeans": kmeans,
        "nprobe": nprobe,
        "blocks": {"offset": blocks_at, "length": total},
        "head": head,
    }
    data = w.finish(MAGIC_VEC, meta)
    return EncodedVec(data, w.data_start + head["length"])


@dataclass(frozen=True)
class VecHead:
    """The validated head of a ``vec.<attr>`` file (everything but the cluster blocks)."""

    what: str
    attr: str
    dims: int
    dtype: str
    metric: str
    n_rows: int
    n_vectors: int
    n_clusters: int
    nprobe: dict[str, Any]  # the recall calibration, as stored
    centroids: np.ndarray  # f32 (k, dims)
    offsets: np.ndarray  # int64 (k,), block offsets relative to the blocks region
    lengths: np.ndarray  # int64 (k,)
    counts: np.ndarray  # int64 (k,)
    crcs: np.ndarray | None  # u32 (k,), absent in the oldest files
    blocks_at: int  # the blocks region, relative to the data area
    blocks_abs: int  # the blocks region, absolute file offset
    blocks_len: int
    cord: np.ndarray  # int64 (n_vectors,): row ordinals in cluster order
    sq_range: tuple[np.ndarray, np.ndarray] | None  # (sq_min, sq_max), absent in older files

    @property
    def itemsize(self) -> int:
        return DTYPES[self.dtype].itemsize


@dataclass(frozen=True)
class _Meta:
    attr: str
    dims: int
    dtype: str
    metric: str
    n_vectors: int
    n_clusters: int
    nprobe: dict[str, Any]
    blocks_at: int
    blocks_len: int


def read_head(sf: SectionFile, n_rows: int, *, lazy: bool) -> VecHead:
    """Validate the meta and table of contents of ``sf`` for a segment of ``n_rows`` rows.
    ``lazy``: ``sf`` holds only the head (the row ordinals must come from ``row_cluster``);
    otherwise files older than ``row_cluster`` get them from the blocks."""
    m = _read_meta(sf, n_rows)
    offsets, lengths, counts = _read_toc(sf, m)
    return VecHead(
        what=sf.what,
        attr=m.attr,
        dims=m.dims,
        dtype=m.dtype,
        metric=m.metric,
        n_rows=n_rows,
        n_vectors=m.n_vectors,
        n_clusters=m.n_clusters,
        nprobe=m.nprobe,
        centroids=np.ascontiguousarray(sf.array("centroids", "<f4").reshape(m.n_clusters, m.dims)),
        offsets=offsets,
        lengths=lengths,
        counts=counts,
        crcs=sf.array("cluster_crc32c", "<u4") if sf.has("cluster_crc32c") else None,
        blocks_at=m.blocks_at,
        blocks_abs=sf.data_start + m.blocks_at,
        blocks_len=m.blocks_len,
        cord=_read_cord(sf, m, n_rows, offsets, counts, lazy=lazy),
        sq_range=_read_sq_range(sf, m.dims),
    )


def _read_meta(sf: SectionFile, n_rows: int) -> _Meta:
    """The meta's fields, typed and checked against the segment's ``n_rows``."""
    what, meta = sf.what, sf.meta
    try:
        nprobe = meta["nprobe"]
        pk, pn = list(nprobe["k"]), list(nprobe["nprobe"])
        int(nprobe["default"])
        m = _Meta(
            attr=str(meta["attr"]),
            dims=int(meta["dims"]),
            dtype=str(meta["dtype"]),
            metric=str(meta["metric"]),
            n_vectors=int(meta["n_vectors"]),
            n_clusters=int(meta["n_clusters"]),
            nprobe=nprobe,
            blocks_at=int(meta["blocks"]["offset"]),
            blocks_len=int(meta["blocks"]["length"]),
        )
        file_rows = int(meta["n_rows"])
    except (KeyError, TypeError, ValueError) as e:
        raise DataCorruption(f"{what}: malformed meta ({e!r})") from None
    if m.dtype not in DTYPES or m.metric not in METRICS or m.dims < 1:
        raise DataCorruption(f"{what}: unknown dtype, metric or dims")
    if file_rows != n_rows:
        raise DataCorruption(f"{what}: written for {file_rows} rows, the segment has {n_rows}")
    if len(pk) != len(pn) or not pk:
        raise DataCorruption(f"{what}: malformed nprobe table")
    return m


def _read_toc(sf: SectionFile, m: _Meta) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(offsets, lengths, counts) of the cluster blocks, int64, checked for consistency."""
    offsets = sf.array("cluster_offset", "<u8").astype(np.int64)
    lengths = sf.array("cluster_length", "<u8").astype(np.int64)
    counts = sf.array("cluster_count", "<u4").astype(np.int64)
    k = m.n_clusters
    if not (offsets.shape == lengths.shape == counts.shape == (k,)):
        raise DataCorruption(f"{sf.what}: table of contents does not have one entry per cluster")
    _, expect_len = block_lengths(counts, m.dims, DTYPES[m.dtype].itemsize)
    if (
        int(counts.sum()) != m.n_vectors
        or not np.array_equal(lengths, expect_len)
        or np.any(offsets < 0)
        or np.any(offsets + lengths > m.blocks_len)
    ):
        raise DataCorruption(f"{sf.what}: table of contents is inconsistent")
    return offsets, lengths, counts


def _read_cord(
    sf: SectionFile, m: _Meta, n_rows: int, offsets: np.ndarray, counts: np.ndarray, *, lazy: bool
) -> np.ndarray:
    """Row ordinals in cluster order (int64): from ``row_cluster``, or in files written before
    it from the blocks (an eager open only)."""
    what, k = sf.what, m.n_clusters
    if sf.has("row_cluster"):
        rc = sf.array("row_cluster", "<u4")
        if rc.shape != (n_rows,) or (n_rows and int(rc.max()) > k):
            raise DataCorruption(f"{what}: row_cluster does not map every row to a cluster")
        if not np.array_equal(np.bincount(rc, minlength=k + 1)[:k], counts):
            raise DataCorruption(f"{what}: row_cluster disagrees with the cluster counts")
        out: np.ndarray = np.argsort(rc, kind="stable")[: m.n_vectors].astype(np.int64)
        return out
    if lazy:
        raise InternalError(f"{what}: a lazy open needs the row_cluster section")
    region = sf.region(m.blocks_at, m.blocks_len)
    cord = np.empty(m.n_vectors, np.int64)
    lo = 0
    for c in range(k):
        o, n = int(offsets[c]), int(counts[c])
        cord[lo : lo + n] = region[o : o + 4 * n].view("<u4")
        lo += n
    if m.n_vectors and (int(cord.min()) < 0 or int(cord.max()) >= n_rows):
        raise DataCorruption(f"{what}: row ordinal out of range")
    return cord


def _read_sq_range(sf: SectionFile, dims: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(sq_min, sq_max) of the 8-bit first pass, or None in files written before them."""
    if not (sf.has("sq_min") and sf.has("sq_max")):
        return None
    lo, hi = sf.array("sq_min", "<f4"), sf.array("sq_max", "<f4")
    if lo.shape != (dims,) or hi.shape != (dims,):
        raise DataCorruption(f"{sf.what}: sq_min / sq_max do not have one value per dimension")
    return lo.copy(), hi.copy()


def block_vectors(
    head: VecHead, c: int, block: np.ndarray, ordinals: np.ndarray, *, verify: bool
) -> np.ndarray:
    """The vectors (column dtype, (count, dims) view) of block ``c``; checks the block's ordinals
    against ``ordinals`` (what the row map implies) and, when ``verify``, its CRC-32C against the
    table of contents."""
    if verify and head.crcs is not None and crc32c_of(block) != int(head.crcs[c]):
        raise DataCorruption(f"{head.what}: block {c} checksum mismatch")
    n, d = int(ordinals.shape[0]), head.dims
    if not np.array_equal(block[: 4 * n].view("<u4"), ordinals):
        raise DataCorruption(f"{head.what}: block {c} holds other rows than its table says")
    vo = align(4 * n)
    dt = DTYPES[head.dtype]
    out: np.ndarray = block[vo : vo + n * d * dt.itemsize].view(dt).reshape(n, d)
    return out


__all__ = [
    "DTYPES",
    "METRICS",
    "EncodedVec",
    "VecHead",
    "block_lengths",
    "block_vectors",
    "encode",
    "read_head",
]
