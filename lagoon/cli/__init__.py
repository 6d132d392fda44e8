"""Command-line entry points: thin shells that resolve settings, call the library, format output.

- ``lagoon-server`` (``server.py``): the HTTP API, optionally with the embedded indexer.
- ``lagoon-worker`` (``worker.py``): the indexer, compactor and GC loops.
- ``lagoon`` (``admin.py``): operator commands (``keys``, ``config``, ``version``, ...).

They never read the environment themselves: ``lagoon.config.load_settings`` does. Exit codes:
0 success, 1 failure at run time, 2 bad usage or invalid configuration, 130 interrupted.
"""
