"""ASGI factory for running the Lagoon app under granian (process-model comparison in
``bench/load_matrix.py --server granian``). Settings come from the environment (``LAGOON_*``)."""

from __future__ import annotations

from starlette.applications import Starlette

from lagoon.config import load_settings
from lagoon.server.app import create_app


def create() -> Starlette:
    return create_app(load_settings())
