"""Index segments: the immutable, indexed files that hold a namespace's documents.

``build.build_segment`` turns a table of document versions into the files of a segment (docs,
IVF vectors, full-text postings, filter indexes; formats in docs/formats/segment.md) and the
``SegmentRef`` the manifest lists. ``read.SegmentReader`` verifies and opens them, and
``SegmentReader.source(live)`` serves queries over a segment's live rows through the executor's
``DocSource`` protocol. Pure: no I/O — callers fetch and upload the bytes.
"""

from lagoon.index.segment.build import OP_COLUMN, SEQ_COLUMN, BuiltSegment, build_segment, new_segment_id
from lagoon.index.segment.read import SegmentReader, SegmentSource

__all__ = [
    "OP_COLUMN",
    "SEQ_COLUMN",
    "BuiltSegment",
    "SegmentReader",
    "SegmentSource",
    "build_segment",
    "new_segment_id",
]
