"""How often ``lagoon doctor`` lets a store without atomic conditional PUT through: repeated runs
against moto's S3 server (check-then-act conditional writes, a dev dependency), each counted as
failed (a race broke), inconclusive (too little contention to vouch) or passed.

    .venv/bin/python -m bench.doctor_moto --runs 20 [--rounds 200] [--threads 4]

Prints one line per run and the totals. Not a test: the moto server and the racing processes
share this machine, so the rate depends on its load.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import boto3

from lagoon.config import StorageSettings
from lagoon.engine.ops.doctor import DoctorOptions, run_doctor
from lagoon.storage.factory import open_store


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError("moto_server did not start")


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """A moto S3 server (its own process) with bucket ``doctor``; yields its endpoint."""
    port = _free_port()
    moto = os.path.join(os.path.dirname(sys.executable), "moto_server")
    server = subprocess.Popen([moto, "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(port)
        endpoint = f"http://127.0.0.1:{port}"
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )
        client.create_bucket(Bucket="doctor")
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=10)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args(argv)
    os.environ.update(AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_REGION="us-east-1")
    with moto_server() as endpoint:
        tally = {"failed": 0, "inconclusive": 0, "passed": 0}
        for run in range(args.runs):
            settings = StorageSettings(
                backend="s3", bucket="doctor", prefix=f"r{run}/", region="us-east-1", endpoint=endpoint
            )
            options = DoctorOptions(rounds=args.rounds, threads=args.threads, peer=settings)
            started = time.monotonic()
            report = run_doctor(open_store(settings), options, target="moto")
            kind = "failed" if not report.ok else ("inconclusive" if report.inconclusive else "passed")
            tally[kind] += 1
            race = report.get("create-race")
            detail = race.detail if race else ""
            print(f"run {run + 1}: {kind} ({time.monotonic() - started:.0f} s) {detail}"[:400], flush=True)
        print(f"{args.runs} runs x {args.rounds} rounds x {args.threads}+{args.threads} writers: {tally}")


if __name__ == "__main__":
    main()
