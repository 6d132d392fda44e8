"""HTTP load matrix: throughput and latency of a Lagoon server under wrk, per query kind and load.

One command builds a namespace, starts ``lagoon-server`` on loopback (default configuration unless
told otherwise), and drives it with ``wrk`` (a C load generator, Debian package ``wrk``; install it
with ``bench/setup``) at 1/2/4/8/16 keep-alive connections for each request kind:

- ``vector``: top-10 ANN, 128-d, eventual consistency; ``vector-strong``: the same, strong;
- ``bm25``: top-10 BM25 on ``text`` (2-3 words from the corpus);
- ``hybrid``: multi-query (ANN top-20 + BM25 top-20) fused by RRF, top-10;
- ``filtered``: top-10 ANN with an ``Eq`` filter on a 13-valued attribute (about 8 % pass);
- ``write-N``: upserts of N documents (128-d vector, text, attributes) to their own namespace;
- ``healthz``: ``GET /healthz``, the HTTP floor (server + framework + load generator).

It also times the same vector queries through the embedded API (``lagoon.open`` on the same data
folder, the server idle meanwhile) so the table can say what HTTP adds at p50. Results are printed
as a table, written as JSON (``--out``) and, with ``--plots DIR``, drawn as PNGs (throughput vs
connections, latency percentiles vs connections).

    bench/setup                                    # wrk + the bench dependency group, once
    .venv/bin/python bench/load_matrix.py          # default: 40k docs, 5 s per cell
    .venv/bin/python bench/load_matrix.py --docs 40000 --seconds 5 --out bench/results/load.json \\
        --plots docs/img                           # what docs/benchmarks.md shows
    .venv/bin/python bench/load_matrix.py --processes 1 --kinds vector   # compare process models
    .venv/bin/python bench/load_matrix.py --server granian --processes 2 --kinds vector

Only loopback is ever targeted. wrk shares the machine's cores with the server (on a 2-core box it
takes a fraction of one), so the figures are a floor for the server alone.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
import benchdata  # noqa: E402

LUA = REPO / "bench" / "wrk_bodies.lua"
DIMS = 128
NS = "matrix"
QUERY_KINDS = ("vector", "vector-strong", "bm25", "hybrid", "filtered")
YEARS = 26


# --- data ----------------------------------------------------------------------------------------


@dataclass
class Data:
    vectors: np.ndarray
    docs: list[dict[str, Any]]
    queries: np.ndarray
    words: list[list[str]] = field(default_factory=list)


def make_data(n: int, nq: int) -> Data:
    vecs = benchdata.vectors(n, DIMS)
    docs = benchdata.corpus(n)
    qs = benchdata.queries(nq, DIMS)
    rng = random.Random(3)
    words = []
    for _ in range(nq):
        text = docs[rng.randrange(len(docs))]["text"].split()
        k = rng.randint(2, 3)
        start = rng.randrange(max(1, len(text) - k))
        words.append([w.strip(".,;:()[]'\"`") or "data" for w in text[start : start + k]])
    return Data(vecs, docs, qs, words)


def doc_rows(data: Data, start: int, stop: int, id_base: int = 0) -> list[dict[str, Any]]:
    out = []
    for i in range(start, stop):
        d = data.docs[i % len(data.docs)]
        out.append(
            {
                "id": id_base + i,
                "vector": data.vectors[i % len(data.vectors)],
                "text": d["text"],
                "src": d["src"],
                "cat": d["cat"],
                "year": d["year"],
            }
        )
    return out


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)


def query_bodies(kind: str, data: Data) -> list[dict[str, Any]]:
    bodies = []
    for i, q in enumerate(data.queries):
        vec = [round(float(x), 6) for x in q]
        text = " ".join(data.words[i])
        if kind in ("vector", "vector-strong"):
            body: dict[str, Any] = {"rank_by": ["vector", "ANN", vec], "top_k": 10}
        elif kind == "bm25":
            body = {"rank_by": ["text", "BM25", text], "top_k": 10}
        elif kind == "hybrid":
            body = {
                "queries": [
                    {"rank_by": ["vector", "ANN", vec], "top_k": 20},
                    {"rank_by": ["text", "BM25", text], "top_k": 20},
                ],
                "rerank_by": ["RRF"],
                "limit": 10,
            }
        elif kind == "filtered":
            body = {
                "rank_by": ["vector", "ANN", vec],
                "top_k": 10,
                "filters": ["year", "Eq", 2000 + (i % YEARS) // 2],
            }
        else:
            raise ValueError(kind)
        if kind != "vector-strong":
            body["consistency"] = {"level": "eventual"}
        bodies.append(body)
    return bodies


# --- the server ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    url: str

    def pids(self) -> list[int]:
        """The server's process tree (supervisor and serving processes)."""
        out, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            out.append(pid)
            with contextlib.suppress(OSError):
                for task in os.listdir(f"/proc/{pid}/task"):
                    with open(f"/proc/{pid}/task/{task}/children") as f:
                        todo += [int(c) for c in f.read().split()]
        return out

    def cpu_seconds(self) -> float:
        total = 0.0
        tick = os.sysconf("SC_CLK_TCK")
        for pid in self.pids():
            with contextlib.suppress(OSError):
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / tick
        return total

    def rss_mb(self) -> float:
        total = 0
        for pid in self.pids():
            with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        return total / 1024

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def start_server(
    root: Path,
    kind: str,
    processes: int | None,
    indexer: bool,
    extra: list[str],
    log: Path,
    repo: Path = REPO,
) -> Server:
    """``repo``: the checkout whose server runs (another worktree, to compare two builds)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAGOON_")}
    env.update(
        LAGOON_STORAGE__BACKEND="fs",
        LAGOON_STORAGE__ROOT=str(root / "store"),
        LAGOON_CACHE__DIR=str(root / "cache"),
        LAGOON_OBSERVABILITY__LOG_LEVEL="warning",
        PYTHONPATH=str(repo),
    )
    bindir = repo / ".venv" / "bin"
    if kind == "lagoon":
        cmd = [str(bindir / "lagoon-server"), "--listen", f"127.0.0.1:{port}"]
        cmd.append("--embedded-indexer" if indexer else "--no-embedded-indexer")
        if processes is not None:
            cmd += ["--set", f"server.processes={processes}"]
        cmd += extra
    elif kind == "granian":  # the same app under granian's Rust HTTP server and worker processes
        env["LAGOON_SERVER__EMBEDDED_INDEXER"] = "true" if indexer else "false"
        cmd = [
            str(bindir / "granian"),
            "--interface",
            "asgi",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(processes or 1),
            "--log-level",
            "warning",
            "bench.granian_app:create",
        ]
    else:
        raise SystemExit(f"unknown --server {kind!r}")
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=out, cwd=repo)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}; see {log}")
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return Server(proc, url)
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"the server did not become ready; see {log}")


def load_namespace(url: str, data: Data, n: int) -> None:
    with httpx.Client(base_url=url, timeout=300) as client:
        for start in range(0, n, 2000):
            body = {
                "upsert_rows": doc_rows(data, start, min(n, start + 2000)),
                "distance_metric": "cosine_distance",
                "schema": {"text": {"type": "string", "full_text_search": True}},
            }
            r = client.post(f"/v2/namespaces/{NS}", content=dumps(body))
            if r.status_code == 429:  # the indexer is behind: wait for it
                time.sleep(2)
                r = client.post(f"/v2/namespaces/{NS}", content=dumps(body))
            r.raise_for_status()


def wait_indexed(url: str, timeout: float) -> float:
    started = time.monotonic()
    with httpx.Client(base_url=url, timeout=30) as client:
        while time.monotonic() - started < timeout:
            meta = client.get(f"/v2/namespaces/{NS}/metadata").json()
            if meta.get("index", {}).get("status") == "up-to-date":
                return time.monotonic() - started
            time.sleep(1)
    raise SystemExit(f"the namespace was not indexed within {timeout:g}s")


# --- wrk -----------------------------------------------------------------------------------------


def run_wrk(url: str, path: str, bodies: Path | None, connections: int, seconds: float) -> dict[str, Any]:
    threads = min(2, connections)
    args = [path] + ([str(bodies)] if bodies else [])
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "30s"]
    cmd += ["-s", str(LUA), url, "--", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    line = next((x for x in out.stdout.splitlines() if x.startswith("{")), None)
    if out.returncode != 0 or line is None:
        raise SystemExit(f"wrk failed ({out.returncode}): {out.stderr.strip() or out.stdout.strip()}")
    result: dict[str, Any] = json.loads(line)
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    if out.stderr.strip():
        result["stderr"] = out.stderr.strip()[:600]
    return result


# --- embedded baseline ---------------------------------------------------------------------------


def embedded_p50(root: Path, bodies: list[dict[str, Any]], rounds: int) -> float:
    """p50 (ms) of the same query bodies through the embedded API on the server's data folder."""
    import lagoon
    from lagoon.config import load_settings

    settings = load_settings(
        overrides={
            "storage": {"backend": "fs", "root": str(root / "store")},
            "cache": {"dir": str(root / "cache-embedded")},
            "observability": {"log_level": "warning"},
        }
    )
    times = []
    with lagoon.open(settings, indexer=False) as db:
        ns = db.namespace(NS)
        for b in bodies[:32]:  # warm up: the first queries load the namespace
            ns.query(**b)
        for i in range(rounds):
            b = bodies[i % len(bodies)]
            t0 = time.perf_counter()
            ns.query(**b)
            times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


# --- report --------------------------------------------------------------------------------------


def print_table(results: list[dict[str, Any]], baselines: dict[str, float], header: str) -> None:
    print(header)
    print(
        f"{'kind':<14} {'conn':>4} {'req/s':>9} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} "
        f"{'p99.9':>8} {'cpu %':>6} {'errors':>6}  {'x c=1':>6}"
    )
    first: dict[str, float] = {}
    for r in results:
        first.setdefault(r["kind"], r["rps"])
        scale = r["rps"] / first[r["kind"]] if first[r["kind"]] else float("nan")
        docs = f"  ({r['rps'] * r['rows']:,.0f} docs/s)" if r.get("rows") else ""
        print(
            f"{r['kind']:<14} {r['connections']:>4} {r['rps']:>9.1f} {r['p50_us'] / 1000:>8.2f} "
            f"{r['p90_us'] / 1000:>8.2f} {r['p99_us'] / 1000:>8.2f} {r['p999_us'] / 1000:>8.2f} "
            f"{r['server_cpu_pct']:>6.0f} {r['non2xx'] + r['socket_errors']:>6}  {scale:>5.2f}x{docs}"
        )
    for kind, p50 in baselines.items():
        c1 = next((r for r in results if r["kind"] == kind and r["connections"] == 1), None)
        if c1 is not None:
            http = c1["p50_us"] / 1000
            print(
                f"{kind}: embedded API p50 {p50:.3f} ms, HTTP (wrk, 1 connection) p50 {http:.3f} ms "
                f"-> HTTP adds {http - p50:+.3f} ms"
            )


def plot_compare(metas: list[tuple[str, dict[str, Any]]], outdir: Path, kinds: list[str]) -> Path:
    """Throughput vs connections of the same kinds in several runs (process models side by side)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(kinds), figsize=(4.2 * len(kinds), 3.8), squeeze=False)
    for ax, kind in zip(axes[0], kinds, strict=True):
        for label, meta in metas:
            rs = [r for r in meta["results"] if r["kind"] == kind]
            ax.plot([r["connections"] for r in rs], [r["rps"] for r in rs], marker="o", label=label)
        ax.set_xscale("log", base=2)
        ax.set_title(kind)
        ax.set_xlabel("connections")
        ax.set_ylabel("requests/s")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    outdir.mkdir(parents=True, exist_ok=True)
    path = outdir / "load-process-models.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def markdown_table(meta: dict[str, Any]) -> str:
    """The results as a markdown table (what docs/benchmarks.md shows)."""
    results = meta["results"]
    out = [
        "| kind | connections | req/s | docs/s | p50 ms | p90 ms | p99 ms | server CPU % | errors | × 1 connection |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    first: dict[str, float] = {}
    for r in results:
        first.setdefault(r["kind"], r["rps"])
        docs = f"{r['rps'] * r['rows']:,.0f}" if r.get("rows") else ""
        out.append(
            f"| {r['kind']} | {r['connections']} | {r['rps']:,.0f} | {docs} | {r['p50_us'] / 1000:.2f} | "
            f"{r['p90_us'] / 1000:.2f} | {r['p99_us'] / 1000:.2f} | {r['server_cpu_pct']:.0f} | "
            f"{r['non2xx'] + r['socket_errors']} | {r['rps'] / first[r['kind']]:.2f} |"
        )
    for kind, p50 in meta["embedded_p50_ms"].items():
        c1 = next((r for r in results if r["kind"] == kind and r["connections"] == 1), None)
        if c1 is not None:
            http = c1["p50_us"] / 1000
            out.append(
                f"\n{kind}: embedded API p50 {p50:.3f} ms, HTTP p50 (1 connection) {http:.3f} ms: "
                f"HTTP adds {http - p50:+.3f} ms"
            )
    return "\n".join(out) + "\n"


def plot(results: list[dict[str, Any]], outdir: Path, title: str, prefix: str = "load") -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outdir.mkdir(parents=True, exist_ok=True)
    kinds = list(dict.fromkeys(r["kind"] for r in results))
    written = []
    fig, (ax_q, ax_w, ax_h) = plt.subplots(1, 3, figsize=(15, 4.2))
    for kind in kinds:
        rs = [r for r in results if r["kind"] == kind]
        xs = [r["connections"] for r in rs]
        if kind.startswith("write-"):
            ax_w.plot(xs, [r["rps"] * r["rows"] for r in rs], marker="o", label=kind)
        elif kind == "healthz":
            ax_h.plot(xs, [r["rps"] for r in rs], marker="o", label=kind)
        else:
            ax_q.plot(xs, [r["rps"] for r in rs], marker="o", label=kind)
    ax_h.set_title("GET /healthz (HTTP floor)")
    for ax, ylabel in ((ax_q, "queries/s"), (ax_w, "documents/s"), (ax_h, "requests/s")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent connections")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_ylim(bottom=0)
    ax_q.set_title("query throughput")
    ax_w.set_title("write throughput")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = outdir / f"{prefix}-throughput.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)

    cols = min(4, len(kinds))
    rows_n = (len(kinds) + cols - 1) // cols
    fig, axes = plt.subplots(rows_n, cols, figsize=(3.2 * cols, 3.0 * rows_n), squeeze=False)
    for ax, kind in zip(axes.flat, kinds, strict=False):
        rs = [r for r in results if r["kind"] == kind]
        xs = [r["connections"] for r in rs]
        for key, label in (("p50_us", "p50"), ("p90_us", "p90"), ("p99_us", "p99")):
            ax.plot(xs, [r[key] / 1000 for r in rs], marker=".", label=label)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(kind, fontsize=9)
        ax.set_xlabel("connections", fontsize=8)
        ax.set_ylabel("latency ms", fontsize=8)
        ax.grid(True, alpha=0.3, which="both")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(kinds) :]:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = outdir / f"{prefix}-latency.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)
    return written


# --- main ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def workdir(keep: str | None) -> Iterator[Path]:
    if keep:
        path = Path(keep)
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    tmp = tempfile.mkdtemp(prefix="lagoon-load-matrix-")
    try:
        yield Path(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=40_000, help="documents in the query namespace")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each matrix cell")
    parser.add_argument("--connections", default="1,2,4,8,16")
    parser.add_argument("--kinds", default=",".join((*QUERY_KINDS, "healthz")))
    parser.add_argument("--write-sizes", default="1,100", help="rows per write request ('' for none)")
    parser.add_argument("--server", default="lagoon", choices=["lagoon", "granian"])
    parser.add_argument("--processes", type=int, default=None, help="server.processes (default: config)")
    parser.add_argument("--no-indexer", action="store_true", help="index once, then serve without it")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="extra --set for the server")
    parser.add_argument("--embedded-rounds", type=int, default=400)
    parser.add_argument("--workdir", default=None, help="keep data here (reused if already loaded)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--plots", default=None, help="write PNG plots into this folder")
    parser.add_argument("--markdown", default=None, help="write the table as markdown here")
    parser.add_argument("--plot-prefix", default="load", help="file name prefix of the PNG plots")
    parser.add_argument(
        "--render", default=None, help="only render a results JSON (table, --markdown, --plots)"
    )
    parser.add_argument(
        "--compare",
        default=None,
        help="LABEL=results.json,... : plot throughput vs connections of these runs side by side (--plots)",
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="CPU niceness of the server, wrk and the baseline (e.g. -10 as root on a machine shared "
        "with background work)",
    )
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the cleanup (stop the server)
    if args.nice:  # the server, wrk and the embedded baseline inherit it
        os.nice(args.nice)
        # with autogroup scheduling the kernel shares the CPU between sessions first: give this
        # session's group the same priority (root only; without it, nice only orders our own)
        with contextlib.suppress(OSError), open("/proc/self/autogroup", "w") as f:
            f.write(str(args.nice))
    if args.compare:
        metas = []
        for item in args.compare.split(","):
            label, _, path = item.partition("=")
            metas.append((label, json.loads(Path(path).read_text())))
        kinds = [k for k in args.kinds.split(",") if k]
        print(f"wrote {plot_compare(metas, Path(args.plots or '.'), kinds)}")
        return
    if args.render:
        meta = json.loads(Path(args.render).read_text())
        header = (
            f"\n{args.render}: {meta['docs']} docs, server={meta['server']} processes={meta['processes']}"
        )
        print_table(meta["results"], meta["embedded_p50_ms"], header)
        if args.markdown:
            Path(args.markdown).write_text(markdown_table(meta))
        if args.plots:
            title = (
                f"{meta['docs']} docs x {meta['dims']}-d, server={meta['server']} processes={meta['processes']}, "
                f"{meta['cpus']} CPUs (load average {meta.get('load_average', float('nan')):.1f} at the end)"
            )
            for p in plot(meta["results"], Path(args.plots), title, args.plot_prefix):
                print(f"wrote {p}")
        return
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: run bench/setup (installs the Debian package)")
    conns = [int(c) for c in args.connections.split(",") if c]
    kinds = [k for k in args.kinds.split(",") if k]
    sizes = [int(s) for s in args.write_sizes.split(",") if s]
    extra = [x for s in args.sets for x in ("--set", s)]

    print(f"generating {args.docs} documents ({DIMS}-d vectors + text) ...", flush=True)
    data = make_data(args.docs, 256)
    with workdir(args.workdir) as root:
        log = root / "server.log"
        loaded = (root / "loaded").exists()
        server = start_server(
            root, args.server, args.processes, not args.no_indexer or not loaded, extra, log
        )
        try:
            if not loaded:
                t0 = time.monotonic()
                load_namespace(server.url, data, args.docs)
                took = wait_indexed(server.url, 1200)
                print(
                    f"loaded in {time.monotonic() - t0 - took:.1f} s, indexed {took:.1f} s later", flush=True
                )
                (root / "loaded").write_text("1")
                if args.no_indexer:  # restart without the indexer for a quiet machine
                    server.stop()
                    server = start_server(root, args.server, args.processes, False, extra, log)
            bodies_dir = root / "bodies"
            bodies_dir.mkdir(exist_ok=True)
            files: dict[str, tuple[str, Path | None, int]] = {}
            for kind in kinds:
                if kind == "healthz":
                    files[kind] = ("/healthz", None, 0)
                    continue
                path = bodies_dir / f"{kind}.jsonl"
                path.write_bytes(b"\n".join(dumps(b) for b in query_bodies(kind, data)) + b"\n")
                files[kind] = (f"/v2/namespaces/{NS}/query", path, 0)
            for size in sizes:
                path = bodies_dir / f"write-{size}.jsonl"
                nbodies = max(8, min(256, 20_000 // size))
                lines = []
                for b in range(nbodies):
                    rows = doc_rows(data, b * size, (b + 1) * size, id_base=10_000_000)
                    lines.append(dumps({"upsert_rows": rows, "distance_metric": "cosine_distance"}))
                path.write_bytes(b"\n".join(lines) + b"\n")
                files[f"write-{size}"] = (f"/v2/namespaces/{NS}-w{size}", path, size)

            baselines: dict[str, float] = {}
            for kind in ("vector", "vector-strong"):
                if kind in kinds:
                    baselines[kind] = embedded_p50(root, query_bodies(kind, data), args.embedded_rounds)
            with httpx.Client(base_url=server.url, timeout=60) as client:  # every kind works at all
                for kind, (path, bodies, _) in files.items():
                    if bodies is not None:
                        first = bodies.read_bytes().split(b"\n", 1)[0]
                        r = client.post(path, content=first, headers={"content-type": "application/json"})
                        if r.status_code != 200:
                            raise SystemExit(f"{kind}: the first request got {r.status_code}: {r.text[:300]}")
            results: list[dict[str, Any]] = []
            for kind, (path, bodies, rows) in files.items():
                run_wrk(server.url, path, bodies, 1, 1.0)  # warm up this kind
                for c in conns:
                    cpu0, t0 = server.cpu_seconds(), time.monotonic()
                    r = run_wrk(server.url, path, bodies, c, args.seconds)
                    r["server_cpu_pct"] = 100 * (server.cpu_seconds() - cpu0) / (time.monotonic() - t0)
                    r.update(kind=kind, connections=c, rows=rows)
                    results.append(r)
                    print(
                        f"  {kind:<14} c={c:<3} {r['rps']:>8.1f} req/s  p50 {r['p50_us'] / 1000:.2f} ms  "
                        f"p99 {r['p99_us'] / 1000:.2f} ms  cpu {r['server_cpu_pct']:.0f}%",
                        flush=True,
                    )
                    if r.get("stderr"):
                        print("    " + r["stderr"].replace("\n", "\n    "), flush=True)
            rss = server.rss_mb()
        finally:
            server.stop()
    processes = args.processes if args.processes is not None else "default"
    header = (
        f"\nLagoon HTTP load matrix: {args.docs} docs x {DIMS}-d + text, server={args.server} "
        f"processes={processes}, {os.cpu_count()} CPUs, wrk {args.seconds:g} s per cell, "
        f"server RSS after the run {rss:.0f} MB"
    )
    print_table(results, baselines, header)
    meta = {
        "docs": args.docs,
        "dims": DIMS,
        "server": args.server,
        "processes": processes,
        "cpus": os.cpu_count(),
        "seconds": args.seconds,
        "nice": args.nice,
        "rss_mb": rss,
        "embedded_p50_ms": baselines,
        "results": results,
    }
    meta["load_average"] = os.getloadavg()[0]
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(meta, indent=1))
    if args.markdown:
        Path(args.markdown).write_text(markdown_table(meta))
    if args.plots:
        title = (
            f"{args.docs} docs x {DIMS}-d, server={args.server} processes={processes}, "
            f"{os.cpu_count()} CPUs (load average {meta['load_average']:.1f} at the end)"
        )
        for p in plot(results, Path(args.plots), title, args.plot_prefix):
            print(f"wrote {p}")


if __name__ == "__main__":
    main()
