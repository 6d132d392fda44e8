"""Document sources: what the query executor reads a snapshot through (``DocSource``).

``table.LiveDocs`` serves an Arrow table of documents (the unindexed WAL tail); segments serve
theirs through ``lagoon.index.segment.read``; ``composite`` restricts each part to its live rows
and presents all parts of a snapshot as one source.
"""
