"""Command-line entry points: thin shells that resolve settings, call the library, format output.

- ``lagoon-server`` (``server.py``): the HTTP API, optionally with the embedded indexer.
- ``lagoon-worker`` (``worker.py``): the indexer, compactor and GC loops.
- ``lagoon`` (``main.py``): operator commands (``keys``, ``config``, ``version``, ...); each
  command's file (``repair.py``, ``export.py``, ...) calls ``lagoon.engine.ops``; ``support.py``
  and ``runtime.py`` hold the options and the store/database opening they share.

They never read the environment themselves: ``lagoon.config.load_settings`` does. Exit codes:
0 success, 1 failure at run time, 2 bad usage or invalid configuration, 130 interrupted.
"""
