"""Shared fixtures. ``moto_s3``: one moto S3 server on loopback for the whole session."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

MOTO_BUCKET = "lagoon-test"
MOTO_REGION = "us-east-1"


@dataclass(frozen=True)
class MotoS3:
    endpoint: str
    bucket: str
    region: str
    client: Any  # boto3 S3 client, for assertions the store API does not expose (SSE headers)


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[MotoS3]:
    """A ThreadedMotoServer on 127.0.0.1 (free port) with one bucket.

    While it runs, the AWS_* variables of the standard credential chain hold dummy credentials
    (restored afterwards), so the code under test finds them as it would in production.
    moto's conditional PUT is a check-then-act without a lock: do not use it as a CAS race oracle.
    """
    import boto3  # type: ignore[import-untyped]
    from moto.server import ThreadedMotoServer

    with pytest.MonkeyPatch.context() as mp:
        for name in (
            "AWS_PROFILE",
            "AWS_ENDPOINT",
            "AWS_ENDPOINT_URL",
            "AWS_ENDPOINT_URL_S3",
            "AWS_SESSION_TOKEN",
        ):
            mp.delenv(name, raising=False)
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_REGION", MOTO_REGION)
        mp.setenv("AWS_DEFAULT_REGION", MOTO_REGION)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            endpoint = f"http://{host}:{port}"
            client = boto3.client("s3", endpoint_url=endpoint, region_name=MOTO_REGION)
            client.create_bucket(Bucket=MOTO_BUCKET)
            yield MotoS3(endpoint=endpoint, bucket=MOTO_BUCKET, region=MOTO_REGION, client=client)
            client.close()
        finally:
            server.stop()


@pytest.fixture
def s3_prefix() -> str:
    """A fresh key prefix inside the moto bucket, so tests never see each other's objects."""
    return f"t-{uuid.uuid4().hex[:12]}/"
