"""The SDK conformance tests share the HTTP tests' real-server fixture."""

from tests.server.conftest import live_server

__all__ = ["live_server"]
