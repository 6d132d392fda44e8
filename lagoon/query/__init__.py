"""Queries: request parsing, filters, exact execution over live documents, fusion, explain.

``request`` turns a JSON body into a validated ``QueryRequest``/``MultiQueryRequest``;
``execute`` runs it against a ``LiveDocs`` snapshot (``live``) and returns the wire response body;
``explain`` renders the plan. Nothing here does I/O: the engine hands in the snapshot.
"""
