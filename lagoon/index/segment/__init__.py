"""Index segments: the immutable, indexed files that hold a namespace's documents.

``build.build_segment`` turns a table of document versions into the files of a segment (docs,
IVF vectors, full-text postings, filter indexes; formats in docs/formats/segment.md) and the
``SegmentRef`` the manifest lists. ``read.SegmentReader`` verifies and opens them;
``lagoon.index.sources.segment.SegmentSource`` serves queries over a segment's live rows. Pure: no
I/O — callers fetch and upload the bytes.
"""
