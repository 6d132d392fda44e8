"""Where a write request's server CPU goes: py-spy samples of the serving processes, by stage.

``bench/write_bench.py --http --spy DIR`` records every serving process of the server with py-spy
(the ``bench`` group pins it) while wrk runs, and this module turns the samples into one line per
stage of a write: its share of the busy samples and, from the server's CPU seconds over the run,
its milliseconds of CPU per request. A sample counts for the first stage whose frames it holds, in
the order of ``STAGES`` (a commit's PUT inside ``Committer._commit`` is the PUT, not "commit:
other"). Samples whose innermost frame is a wait (an idle worker thread, the event loop in
``epoll``) are not CPU and are left out: py-spy cannot tell a blocked thread from a running one
here. The py-spy sampler costs the server some CPU (it stops the process to read its stacks), so
the absolute figures run a little high; the shares are what to compare.
"""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PY_SPY = REPO / ".venv" / "bin" / "py-spy"

STAGES: list[tuple[str, tuple[str, ...]]] = [
    ("JSON decode", ("parse_json", "parse_write_body")),
    ("validation (parse_write)", ("parse_write",)),
    ("commit: WAL PUT", ("FsStore._put_sync", "FsStore.put", "Committer._put")),
    ("commit: resolve, seal, encode", ("Committer._prepare",)),
    ("commit: fold into the tail", ("NamespaceState._append", "Tail.apply", "Tail._fold", "Tail.snapshot")),
    ("state refresh, other processes' entries", ("NamespaceState.refresh", "NamespaceState._probe")),
    # The entries another serving process committed, read before a commit (catch_up) or by a
    # refresh: the GET, decode_entry (checksum, Arrow IPC, check_structure) and the gather; the
    # tasks _fetch_many starts have no caller in their stack, so only their own frames tell.
    (
        "other process's WAL entries",
        (
            "NamespaceState._fetch_one",
            "NamespaceState._fetch_many",
            "NamespaceState.catch_up",
            "decode_entry",
        ),
    ),
    ("commit: other", ("Committer._run", "Committer._commit")),
    ("routing: hand-off to the owner", ("CommitRouter.", "_Link.", "lagoon/engine/routing.py")),
    ("engine write: other", ("Database.write",)),
    ("body reading", ("read_body", "Request.stream")),
    ("response", ("Response.__call__", "json_response", "send_wrapper")),
    ("route and middleware", ("LagoonMiddleware", "run_asgi")),
    ("HTTP protocol (uvicorn)", ("httptools_impl", "lagoon/server/protocol.py")),
    ("event loop, threads", ("asyncio/", "concurrent/futures")),
]
IDLE_LEAVES = (
    "_worker (concurrent/futures/thread.py",
    "Runner.run (asyncio/runners.py",
    "select (selectors.py",
    "Condition.wait",
    "Event.wait",
    "_watch_parent",
)
_LINE = re.compile(r":\d+\)")


def record(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    """Start py-spy on ``pid`` and its children for ``seconds``; raw collapsed stacks to ``out``."""
    cmd = [str(PY_SPY), "record", "-p", str(pid), "--subprocesses", "-r", "100"]
    cmd += ["-d", str(max(1, int(seconds))), "--format", "raw", "-o", str(out)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _frames(stack: str) -> list[str]:
    return [_LINE.sub(")", f) for f in stack.split(";") if f and not f.startswith("process ")]


def stage_of(frames: list[str]) -> str | None:
    """The stage a busy sample belongs to; None for a wait."""
    if not frames or any(idle in frames[-1] for idle in IDLE_LEAVES):
        return None
    joined = ";".join(frames)
    if "importlib" in joined:  # a late import, not the write path
        return "other"
    return next((name for name, keys in STAGES if any(k in joined for k in keys)), "other")


def stage_samples(path: Path) -> Counter[str]:
    counts: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        stage = stage_of(_frames(stack))
        if stage is not None:
            counts[stage] += int(n)
    return counts


def breakdown(path: Path, cpu_seconds: float, requests: int) -> list[tuple[str, float, float]]:
    """``(stage, share of busy samples, ms of server CPU per request)`` in ``STAGES`` order."""
    counts = stage_samples(path)
    busy = sum(counts.values()) or 1
    per_request_ms = 1000 * cpu_seconds / max(requests, 1)
    names = [name for name, _ in STAGES] + ["other"]
    return [(name, counts[name] / busy, per_request_ms * counts[name] / busy) for name in names]


def print_breakdown(fmt: str, rows: list[tuple[str, float, float]]) -> None:
    print(f"\nserver CPU per {fmt} request, by stage (py-spy samples of the serving processes)")
    print("| stage | share | ms per request |\n|---|---|---|")
    for name, share, ms in rows:
        print(f"| {name} | {100 * share:.1f} % | {ms:.2f} |")
    print(f"| total | 100 % | {sum(ms for _, _, ms in rows):.2f} |")


__all__ = ["STAGES", "breakdown", "print_breakdown", "record", "stage_of"]
