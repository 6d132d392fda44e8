"""The shipped Prometheus rules (deploy/prometheus/lagoon-rules.yml), checked with the real
``promtool`` (Debian package ``prometheus``, unpacked into .tools/ by scripts/bootstrap):

- ``promtool check rules``: the file is valid (PromQL parses, templates compile);
- ``promtool test rules``: every alert fires when it should and stays quiet when it should not
  (tests/deploy/lagoon-rules-test.yml);
- every ``lagoon_*`` series a rule reads is really exported: a ``lagoon-server`` and a
  ``lagoon-worker`` on one S3 bucket (SeaweedFS) are scraped after a write and some queries, and
  the label values the rules select on (``layer="disk"``) appear too.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import S3Server
from tests.e2e.cluster import Cluster

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "lagoon-rules.yml"
RULE_TESTS = ROOT / "tests" / "deploy" / "lagoon-rules-test.yml"
SERIES = re.compile(r"\b(lagoon_[a-z0-9_]+)(\{[^}]*\})?")


def promtool() -> str:
    local = ROOT / ".tools" / "bin" / "promtool"
    found = str(local) if local.exists() else shutil.which("promtool")
    assert found, "promtool is missing: scripts/bootstrap unpacks it from Debian's prometheus package"
    return found


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=120, check=False)


def rule_exprs() -> list[str]:
    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule["expr"] for group in doc["groups"] for rule in group["rules"]]


def test_promtool_check_rules() -> None:
    proc = run("check", "rules", str(RULES))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 7 rules found" in proc.stdout


def test_promtool_test_rules() -> None:
    proc = run("test", "rules", str(RULE_TESTS))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_the_alerts_the_guide_names_exist() -> None:
    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    alerts = {r["alert"]: r["expr"] for g in doc["groups"] for r in g["rules"] if "alert" in r}
    assert set(alerts) == {
        "LagoonIndexingLagHigh",
        "LagoonObjectStoreErrorRate",
        "LagoonDiskCacheHitRateLow",
        "LagoonQueryLatencyP99High",
    }
    assert "> 60" in alerts["LagoonIndexingLagHigh"]
    assert "> 0.01" in alerts["LagoonObjectStoreErrorRate"]
    assert "< 0.8" in alerts["LagoonDiskCacheHitRateLow"]


def exported(text: str) -> tuple[set[str], dict[str, list[dict[str, str]]]]:
    """Series names a /metrics page exports (TYPE lines included) and each name's label sets."""
    names: set[str] = set()
    samples: dict[str, list[dict[str, str]]] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            names.add(name)
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
            if kind == "counter" and not name.endswith("_total"):
                names.add(f"{name}_total")
        elif line and not line.startswith("#"):
            m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s", line)
            if m:
                labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
                names.add(m.group(1))
                samples.setdefault(m.group(1), []).append(labels)
    return names, samples


def unexported_rule_series(pages: list[str]) -> list[str]:
    """What the rules read that none of these /metrics pages exports (names, and the label values
    the rules select on)."""
    names: set[str] = set()
    samples: dict[str, list[dict[str, str]]] = {}
    for page in pages:
        n, s = exported(page)
        names |= n
        for k, v in s.items():
            samples.setdefault(k, []).extend(v)
    used = {m.group(1): m.group(2) for expr in rule_exprs() for m in SERIES.finditer(expr)}
    assert used, "the rules use no lagoon_* series?"
    problems = [f"{name} is not exported" for name in sorted(set(used) - names)]
    for name, matcher in used.items():
        for label, value in re.findall(r'(\w+)="([^"]*)"', matcher or ""):
            if value not in {s.get(label) for s in samples.get(name, [])}:
                problems.append(f"{name}{{{label}={value!r}}} is never exported")
    return problems


def test_a_missing_series_is_reported() -> None:
    page = '# TYPE lagoon_cache_hits_total counter\nlagoon_cache_hits_total{layer="memory"} 1.0\n'
    problems = unexported_rule_series([page])
    assert "lagoon_indexing_lag_seconds is not exported" in problems
    assert "lagoon_cache_hits_total{layer='disk'} is never exported" in problems


@pytest.mark.s3
@pytest.mark.slow  # the default suite checks the same on the kill -9 cluster (tests/e2e)
def test_every_series_the_rules_use_is_exported(s3_server: S3Server, s3_prefix: str, tmp_path: Path) -> None:
    cluster = Cluster(
        root=tmp_path,
        bucket=s3_server.bucket,
        prefix=s3_prefix,
        endpoint=s3_server.endpoint,
        region=s3_server.region,
        aws_env=s3_server.env(),
        settings={"LAGOON_INDEXER__FLUSH_INTERVAL_SECS": "0.1", "LAGOON_INDEXER__POLL_INTERVAL_SECS": "0.1"},
    )
    server = cluster.add("server", "server")
    worker = cluster.add("worker", "worker")
    try:
        cluster.start_all()
        rows = [{"id": i, "vector": [float(i % 5), 1.0, 0.5], "title": f"lagoon doc {i}"} for i in range(50)]
        url = f"{server.url}/v2/namespaces/metrics"
        resp = httpx.post(url, json={"upsert_rows": rows, "distance_metric": "cosine_distance"}, timeout=60)
        assert resp.status_code == 200, resp.text
        for q in range(3):
            body = {"rank_by": ["vector", "ANN", [1.0, float(q), 0.5]], "top_k": 5}
            assert httpx.post(url + "/query", json=body, timeout=60).status_code == 200
        pages = []
        for node in (server, worker):
            page = httpx.get(node.url + "/metrics", timeout=30)
            assert page.status_code == 200
            pages.append(page.text)
    finally:
        cluster.stop_all()
    assert unexported_rule_series(pages) == []
