"""Pure algorithms over in-memory arrays: vector search, full text, filters, fusion, document
sources and segment building/reading.

Nothing here does I/O, touches the event loop or imports ``lagoon.storage`` (the layer contract in
pyproject.toml enforces it): callers fetch bytes and hand them in, and get values back.
"""
