"""A real lagoon-server for the SDK conformance tests (the conformance runner's own server: a free
loopback port, a temporary folder, a generous readiness timeout for loaded machines)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.sdk.conformance import started_server


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    gen = started_server()
    url = next(gen)
    try:
        yield url
    finally:
        gen.close()
