"""SDK conformance: every public method of the official turbopuffer SDKs against a lagoon-server.

A *step* is one SDK call (a method name of the Python SDK and its keyword parameters, which the
TypeScript SDK takes as one object under the camelCase name) plus a *check* of its result against
a reference computed by hand from turbopuffer's documented formulas (cosine distance, BM25,
Saturate, RRF, …). Steps run in order; steps of one scenario share namespaces. The same steps run
through both SDKs (Python in process, TypeScript through ``tests/sdk/ts/run.mjs`` under node),
each with its own namespace prefix, and every result is checked by the same Python code.

``python -m tests.sdk.conformance [--url URL] [--sdk py,ts] [--only AREA] [-v]`` prints a table of
checks passed per area and SDK; without ``--url`` it starts a lagoon-server on a free loopback port
over a temporary folder. ``scripts/conformance`` is the wrapper (it installs the TypeScript SDK from
the pinned ``tests/sdk/ts/package-lock.json`` first). ``cases.py`` holds the steps.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
TS_DIR = REPO / "tests" / "sdk" / "ts"
SDKS = ("py", "ts")

Check = Callable[[Any], str | None]  # result JSON -> None when correct, else what is wrong


@dataclass
class Step:
    """One SDK call and its check. ``namespace`` is a short label; the runner prefixes it."""

    area: str
    name: str
    method: str
    params: dict[str, Any] | None
    check: Check
    namespace: str = "main"
    sdks: tuple[str, ...] = SDKS
    representative: bool = False  # run in the default test suite
    gap: str = ""  # a known gap (why it fails today); the tests expect it to fail until it is fixed

    @property
    def key(self) -> str:
        return f"{self.area}/{self.name}"


@dataclass
class Outcome:
    step: Step
    sdk: str
    ok: bool
    detail: str = ""


@dataclass
class Report:
    outcomes: list[Outcome] = field(default_factory=list)

    def counts(self, sdk: str) -> tuple[int, int]:
        mine = [o for o in self.outcomes if o.sdk == sdk]
        return sum(o.ok for o in mine), len(mine)

    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]

    def table(self) -> str:
        areas: list[str] = []
        for o in self.outcomes:
            if o.step.area not in areas:
                areas.append(o.step.area)
        sdks = [s for s in SDKS if any(o.sdk == s for o in self.outcomes)]
        names = {"py": "Python turbopuffer 3.1.0", "ts": "TypeScript @turbopuffer/turbopuffer 2.8.0"}
        width = max(12, *(len(a) for a in areas))
        lines = [f"{'area':<{width}}  " + "  ".join(f"{s:>9}" for s in sdks)]
        for area in [*areas, "TOTAL"]:
            cells = []
            for s in sdks:
                mine = [o for o in self.outcomes if o.sdk == s and (area == "TOTAL" or o.step.area == area)]
                cells.append(f"{sum(o.ok for o in mine):>4}/{len(mine):<4}")
            if area == "TOTAL":
                lines.append("-" * len(lines[0]))
            lines.append(f"{area:<{width}}  " + "  ".join(f"{c:>9}" for c in cells))
        lines.append("")
        lines.extend(f"{s}: {names[s]}" for s in sdks)
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------- checks


def close(a: Any, b: Any, rel: float = 1e-5, abs_: float = 1e-6) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(float(a), float(b), rel_tol=rel, abs_tol=abs_)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y, rel, abs_) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k], rel, abs_) for k in a)
    return bool(a == b)


def _is_error(res: Any) -> bool:
    return isinstance(res, dict) and "__error__" in res


def _err_text(res: Any) -> str:
    e = res["__error__"]
    return f"HTTP {e.get('status')}: {json.dumps(e.get('body'))[:300]}"


def get(res: Any, path: str) -> Any:
    cur = res
    for part in path.split("."):
        if isinstance(cur, list):
            cur = cur[int(part)]
        elif isinstance(cur, dict):
            if part not in cur:
                raise KeyError(path)
            cur = cur[part]
        else:
            raise KeyError(path)
    return cur


def fields(**expected: Any) -> Check:
    """Every ``path=value`` (dots in paths spelled ``__``) holds, floats approximately."""

    def check(res: Any) -> str | None:
        if _is_error(res):
            return _err_text(res)
        for path, want in expected.items():
            p = path.replace("__", ".")
            try:
                got = get(res, p)
            except (KeyError, IndexError, ValueError):
                return f"{p}: missing in {json.dumps(res)[:300]}"
            if not close(got, want):
                return f"{p}: got {got!r}, expected {want!r}"
        return None

    return check


def rows(expected: Sequence[dict[str, Any]], *, key: str = "rows", exact_keys: bool = False) -> Check:
    """The rows, in order; each expected row's keys match (floats approximately). With
    ``exact_keys`` the rows carry no other keys."""

    def check(res: Any) -> str | None:
        if _is_error(res):
            return _err_text(res)
        try:
            got = get(res, key)
        except (KeyError, IndexError):
            return f"{key}: missing in {json.dumps(res)[:300]}"
        if not isinstance(got, list):
            return f"{key}: expected a list, got {got!r:.200}"
        if len(got) != len(expected):
            return f"{key}: {len(got)} rows, expected {len(expected)}: ids {[r.get('id') for r in got]}"
        for i, (g, w) in enumerate(zip(got, expected, strict=True)):
            for k, v in w.items():
                if k not in g:
                    return f"{key}[{i}]: no {k!r} in {json.dumps(g)[:200]}"
                if not close(g[k], v):
                    return f"{key}[{i}].{k}: got {g[k]!r}, expected {v!r}"
            if exact_keys and set(g) - set(w) - {"vector"}:
                return f"{key}[{i}]: unexpected keys {sorted(set(g) - set(w))}"
        return None

    return check


def ids(expected: Sequence[Any], key: str = "rows") -> Check:
    return rows([{"id": i} for i in expected], key=key)


def error(status: int, *fragments: str) -> Check:
    def check(res: Any) -> str | None:
        if not _is_error(res):
            return f"expected HTTP {status}, got a result: {json.dumps(res)[:200]}"
        e = res["__error__"]
        if e.get("status") != status:
            return f"expected HTTP {status}, got {_err_text(res)}"
        text = json.dumps(e.get("body"))
        missing = [f for f in fragments if f not in text]
        return f"error lacks {missing}: {text[:300]}" if missing else None

    return check


def value(expected: Any) -> Check:
    def check(res: Any) -> str | None:
        if _is_error(res):
            return _err_text(res)
        return None if close(res, expected) else f"got {res!r:.300}, expected {expected!r}"

    return check


def predicate(fn: Callable[[Any], bool], what: str) -> Check:
    def check(res: Any) -> str | None:
        if _is_error(res):
            return _err_text(res)
        try:
            good = fn(res)
        except (KeyError, IndexError, TypeError, ValueError) as e:
            return f"{what}: {type(e).__name__} {e} in {json.dumps(res, default=str)[:300]}"
        return None if good else f"{what}: not true of {json.dumps(res)[:300]}"

    return check


# --------------------------------------------------------------------------------------------- runners


def _with_namespaces(value: Any, prefix: str) -> Any:
    """Replace ``"@ns:label"`` strings (e.g. a copy source) by the prefixed namespace name."""
    if isinstance(value, str) and value.startswith("@ns:"):
        return f"{prefix}-{value[4:]}"
    if isinstance(value, list):
        return [_with_namespaces(v, prefix) for v in value]
    if isinstance(value, tuple):
        return [_with_namespaces(v, prefix) for v in value]
    if isinstance(value, dict):
        return {k: _with_namespaces(v, prefix) for k, v in value.items()}
    return value


def run_python(steps: Sequence[Step], base_url: str, prefix: str) -> dict[str, Any]:
    import turbopuffer

    client = turbopuffer.Turbopuffer(api_key="conformance", base_url=base_url, max_retries=0)
    out: dict[str, Any] = {}
    try:
        for step in steps:
            params = _with_namespaces(step.params or {}, prefix)
            try:
                if step.method == "namespaces":
                    out[step.key] = [s.id for s in client.namespaces(**params)]
                    continue
                ns = client.namespace(f"{prefix}-{step.namespace}")
                if step.method == "exists":
                    out[step.key] = ns.exists()
                    continue
                fn = getattr(ns, step.method)
                if step.method == "poll_copy_from":
                    out[step.key] = _poll(fn, _earlier(params["token"], step.area, out), params)
                    continue
                out[step.key] = _plain(fn(**params))
            except turbopuffer.APIStatusError as e:
                out[step.key] = {"__error__": {"status": e.status_code, "body": e.body}}
            except (turbopuffer.APIError, ValueError) as e:  # ValueError: the SDK refused the call
                out[step.key] = {"__error__": {"status": None, "body": str(e)}}
    finally:
        client.close()
    return out


def _earlier(value: str, area: str, out: dict[str, Any]) -> str:
    """``"@token:<step>"``: the token an earlier step of the same area returned."""
    if value.startswith("@token:"):
        earlier = out.get(f"{area}/{value[7:]}")
        return str(earlier.get("token", "")) if isinstance(earlier, dict) else ""
    return value


def _poll(fn: Callable[..., Any], token: str, params: dict[str, Any], timeout: float = 60.0) -> Any:
    """``poll_copy_from(token)``; with ``until_finished``, again until the status is finished."""
    deadline = time.monotonic() + timeout
    while True:
        res = _plain(fn(token))
        if not params.get("until_finished") or res.get("status") != "running" or time.monotonic() > deadline:
            return res
        time.sleep(0.2)


def _plain(res: Any) -> Any:
    """SDK models -> plain JSON values (as the TypeScript SDK returns them)."""
    if hasattr(res, "to_dict"):
        return res.to_dict(mode="json", exclude_unset=True)
    if isinstance(res, dict):
        return {k: _plain(v) for k, v in res.items()}
    if isinstance(res, list):
        return [_plain(v) for v in res]
    return res


def ts_installed() -> bool:
    return (TS_DIR / "node_modules" / "@turbopuffer" / "turbopuffer" / "package.json").exists()


def install_ts() -> None:
    """``npm ci`` from the pinned lock file (quick when node_modules is already current)."""
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is not installed; the TypeScript SDK cannot be set up")
    lock = TS_DIR / "package-lock.json"
    stamp = TS_DIR / "node_modules" / ".lagoon-lock"
    if ts_installed() and stamp.exists() and stamp.read_bytes() == lock.read_bytes():
        return
    subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=TS_DIR, check=True, timeout=600
    )
    stamp.write_bytes(lock.read_bytes())


def run_typescript(steps: Sequence[Step], base_url: str, prefix: str) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node is not installed")
    payload = {
        "base_url": base_url,
        "steps": [
            {
                "key": s.key,
                "namespace": f"{prefix}-{s.namespace}",
                "method": s.method,
                "params": _with_namespaces(s.params or {}, prefix),
            }
            for s in steps
        ],
    }
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(payload, f)
        path = f.name
    try:
        proc = subprocess.run(
            [node, str(TS_DIR / "run.mjs"), path],
            cwd=TS_DIR,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    finally:
        os.unlink(path)
    if proc.returncode != 0:
        raise RuntimeError(f"node run.mjs failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    out: dict[str, Any] = {}
    for item in json.loads(proc.stdout):
        if "error" in item:
            out[item["key"]] = {"__error__": item["error"]}
        else:
            out[item["key"]] = item.get("result")
    return out


def run(steps: Sequence[Step], base_url: str, sdks: Sequence[str] = SDKS) -> Report:
    report = Report()
    for sdk in sdks:
        mine = [s for s in steps if sdk in s.sdks]
        prefix = f"conf-{sdk}-{uuid.uuid4().hex[:8]}"
        results = (
            run_python(mine, base_url, prefix) if sdk == "py" else run_typescript(mine, base_url, prefix)
        )
        for s in mine:
            if s.key not in results:
                report.outcomes.append(Outcome(s, sdk, False, "no result"))
                continue
            problem = s.check(results[s.key])
            report.outcomes.append(Outcome(s, sdk, problem is None, problem or ""))
    return report


# --------------------------------------------------------------------------------------------- server


class Server:
    """A lagoon-server child process on a free loopback port over a temporary folder."""

    def __init__(self, root: Path) -> None:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith("LAGOON_")}
        env.update(
            LAGOON_STORAGE__BACKEND="fs",
            LAGOON_STORAGE__ROOT=str(root / "data"),
            LAGOON_OBSERVABILITY__LOG_LEVEL="warning",
        )
        exe = REPO / ".venv" / "bin" / "lagoon-server"
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "lagoon.server"]
        self.log = (root / "server.log").open("wb")
        self.proc = subprocess.Popen(
            [*cmd, "--listen", f"127.0.0.1:{self.port}"], env=env, stdout=self.log, stderr=subprocess.STDOUT
        )
        self._wait()

    def _wait(self, timeout: float = 120.0) -> None:
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"lagoon-server exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=1.0) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError("lagoon-server did not become ready")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def started_server() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="lagoon-conformance-") as tmp:
        server = Server(Path(tmp))
        try:
            yield server.url
        finally:
            server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    from tests.sdk.cases import all_steps

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", help="a running lagoon-server (default: start one)")
    ap.add_argument("--sdk", default="py,ts", help="comma-separated: py, ts")
    ap.add_argument("--only", help="run only this area (and the areas its steps depend on)")
    ap.add_argument("-v", "--verbose", action="store_true", help="list every failing check")
    args = ap.parse_args(argv)
    sdks = [s for s in args.sdk.split(",") if s]
    steps = all_steps()
    if args.only:
        steps = [s for s in steps if s.area == args.only]
    if "ts" in sdks:
        install_ts()
    if args.url:
        report = run(steps, args.url, sdks)
    else:
        gen = started_server()
        url = next(gen)
        try:
            report = run(steps, url, sdks)
        finally:
            gen.close()
    print(report.table())
    fails = report.failures()
    if fails:
        print(f"\n{len(fails)} failing checks" + ("" if args.verbose else " (-v lists them)"))
        if args.verbose:
            for o in fails:
                gap = f" (known gap: {o.step.gap})" if o.step.gap else ""
                print(f"  [{o.sdk}] {o.step.key}: {o.detail}{gap}")
    return 0 if not fails else 1


if __name__ == "__main__":
    sys.exit(main())
