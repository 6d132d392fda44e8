"""Sparse vectors (``{}f16``): an inverted index over dimensions scored by dot product.

``index.SparseIndex`` holds, per dimension, the rows that have it (ascending) and their weights,
in blocks of ``BLOCK`` postings with each block's largest weight; ``SparseIndex.search`` scores
only the postings of the query's dimensions (MaxScore pruning for top-k). ``spv`` encodes and
opens the segment file ``spv.<attr>`` (docs/formats/sparse.md). Pure: no I/O.
"""

from lagoon.index.sparse.index import BLOCK, SparseIndex, build_sparse_index
from lagoon.index.sparse.spv import encode_spv, open_spv

__all__ = ["BLOCK", "SparseIndex", "build_sparse_index", "encode_spv", "open_spv"]
