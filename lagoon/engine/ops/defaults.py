"""Defaults and limits of the operator commands, in a module light enough for ``lagoon --help``
(the CLI imports the engine only when a command runs)."""

from __future__ import annotations

EXPORT_PAGE_SIZE = 10_000
"""Documents per export query page: the query API's top_k limit (``lagoon.wire.query.MAX_TOP_K``)."""
IMPORT_BATCH_ROWS = 1_000
IMPORT_MAX_BATCH_ROWS = 10_000
DOCTOR_ROUNDS = 200
DOCTOR_THREADS = 4
DOCTOR_MAX_SKEW_SECS = 2.0
