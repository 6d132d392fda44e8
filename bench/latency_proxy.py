"""A loopback TCP proxy that adds round-trip latency, to make a local S3 server look remote.

Every chunk of bytes is delivered ``rtt / 2`` seconds after it arrived, in each direction, and in
order: a request/response exchange on a kept-alive connection costs one extra RTT, a new
connection one more (its handshake), as on a real link. Bandwidth is not limited. Used by the
benchmarks (``bench/stores.py``) in front of SeaweedFS at 10 / 30 / 80 ms, so a cold query's
sequential round trips show in its latency.

    python bench/latency_proxy.py --target 127.0.0.1:8333 --rtt-ms 30   # prints its port
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, data = await queue.get()
            if not data:
                break
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        with contextlib.suppress(OSError):
            writer.write_eof()

    sender = asyncio.create_task(deliver())
    try:
        while True:
            data = await reader.read(1 << 16)
            queue.put_nowait((time.monotonic() + delay, data))
            if not data:
                break
        await sender
    except (ConnectionError, OSError):
        sender.cancel()
    finally:
        with contextlib.suppress(Exception):
            await asyncio.gather(sender, return_exceptions=True)


class LatencyProxy:
    """Listens on 127.0.0.1:``port`` (0 = free) and forwards to ``target`` with ``rtt`` added."""

    def __init__(self, target_host: str, target_port: int, rtt_ms: float, port: int = 0) -> None:
        self.target = (target_host, target_port)
        self.delay = rtt_ms / 2000.0
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        upstream_w: asyncio.StreamWriter | None = None
        try:
            upstream_r, upstream_w = await asyncio.open_connection(*self.target)
            await asyncio.sleep(self.delay * 2)  # the connection's handshake round trip
            await asyncio.gather(
                _pump(client_r, upstream_w, self.delay),
                _pump(upstream_r, client_w, self.delay),
                return_exceptions=True,
            )
        except (OSError, asyncio.CancelledError):
            pass  # upstream refused, or the proxy is stopping: end quietly (no task left cancelled)
        finally:
            for w in (client_w, upstream_w):
                if w is not None:
                    w.close()

    async def serve(self) -> asyncio.Server:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self._server

    def start(self) -> LatencyProxy:
        """Run in a background thread with its own event loop (for use from any program)."""
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            loop.run_until_complete(self.serve())
            ready.set()
            loop.run_forever()
            assert self._server is not None
            self._server.close()
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

        self._thread = threading.Thread(target=run, name="latency-proxy", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = self._thread = None


@contextlib.contextmanager
def latency_proxy(endpoint: str, rtt_ms: float) -> Iterator[LatencyProxy]:
    host, port = endpoint.removeprefix("http://").rstrip("/").rsplit(":", 1)
    proxy = LatencyProxy(host, int(port), rtt_ms).start()
    try:
        yield proxy
    finally:
        proxy.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", required=True, help="host:port to forward to")
    ap.add_argument("--rtt-ms", type=float, required=True)
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    host, port = args.target.rsplit(":", 1)
    proxy = LatencyProxy(host, int(port), args.rtt_ms, args.port)

    async def run() -> None:
        server = await proxy.serve()
        print(f"latency proxy 127.0.0.1:{proxy.port} -> {args.target}, +{args.rtt_ms:g} ms RTT", flush=True)
        async with server:
            await server.serve_forever()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


if __name__ == "__main__":
    main()
