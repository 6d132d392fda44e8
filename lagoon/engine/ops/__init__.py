"""Operator tools behind the ``lagoon`` commands; ``lagoon/cli/`` only parses flags and prints.

- ``transfer``: ``lagoon export`` / ``lagoon import`` (JSON-lines backups of one namespace).
- ``doctor`` (+ ``doctor_peer``, the second process of the race): ``lagoon doctor``, a conformance
  check of the configured object store against the guarantees Lagoon relies on.
- ``repair``: ``lagoon repair``, verification of each namespace's bucket layout and the safe fixes.
- ``namespaces``: ``lagoon namespaces`` (every page of the listing).
- ``bench``: ``lagoon bench``, a write and query micro-benchmark against the configured store.
- ``defaults``: limits and defaults light enough to import for ``lagoon --help``.

Everything here goes through ``lagoon.engine.database.Database`` or the ``ObjectStore`` interface
and the key/format modules; nothing concatenates keys or parses objects by hand.
"""
