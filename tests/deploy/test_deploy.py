"""Static checks of deploy/: Dockerfile, docker-compose.yml, Kubernetes manifests, Helm chart.

No Docker engine, cluster, ``helm`` or ``kubeconform`` binary is available where these tests run
(``docker`` and ``kubectl`` clients may be, without a daemon or API server), so nothing is built or
applied. Instead:

- every YAML file parses (PyYAML, a transitive dev dependency), every object has apiVersion, kind,
  metadata.name and its body (spec, data, ...);
- the objects the deployment guide names exist and are wired together: images/commands run
  ``lagoon-server`` / ``lagoon-worker``, probes hit ``/readyz`` and ``/healthz``, selectors match
  pod labels, the ServiceMonitor scrapes ``/metrics`` on a port the Service has, volumes match
  mounts, the cache fits its volume, resources follow the guide's sizing;
- configuration is checked by Lagoon itself: the ConfigMap's and the chart's ``lagoon.toml`` and
  every ``LAGOON_*`` variable go through ``lagoon.config.load_settings``, the keys file through
  ``lagoon.auth.load_keys``;
- the Helm chart is rendered by ``tests/deploy/helm_lite.py`` (a small Go-template stand-in),
  with default values and with the switches flipped, and the output gets the same checks;
- ``kubectl kustomize`` (offline) and ``helm template`` run only if those binaries exist.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from lagoon import auth
from lagoon.config import CONFIG_ENV_VAR, ENV_PREFIX, Settings, load_settings, sections
from tests.deploy.helm_lite import Chart, documents

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
CHART = DEPLOY / "helm" / "lagoon"
BODY_KEYS = {"spec", "data", "stringData"}
NO_BODY = {"Namespace", "ServiceAccount"}
GIB = 1024**3


def load_all(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def k8s_objects() -> list[dict[str, Any]]:
    return [
        doc
        for path in sorted(K8S.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for doc in load_all(path)
    ]


def quantity_bytes(text: str) -> int:
    m = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti)?", str(text))
    assert m, text
    return int(m.group(1)) * {None: 1, "Ki": 1024, "Mi": 1024**2, "Gi": GIB, "Ti": 1024**4}[m.group(2)]


def settings_from_toml(text: str, tmp_path: Path) -> Settings:
    path = tmp_path / "lagoon.toml"
    path.write_text(text, encoding="utf-8")
    return load_settings(path, environ=False)


def settings_from_env(env: dict[str, str]) -> Settings:
    """Every LAGOON_* variable must name a setting and hold a valid value for it."""
    known = sections()
    overrides: dict[str, dict[str, str]] = {}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV_VAR:
            continue
        section, sep, key = name[len(ENV_PREFIX) :].lower().partition("__")
        assert sep and section in known and key in known[section].model_fields, (
            f"{name} is not a Lagoon setting"
        )
        overrides.setdefault(section, {})[key] = str(value)
    return load_settings(None, overrides, environ=False)


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o.get("kind") == kind]


def one(objects: list[dict[str, Any]], kind: str, name_suffix: str = "") -> dict[str, Any]:
    found = [o for o in by_kind(objects, kind) if o["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, (
        f"expected one {kind} *{name_suffix}, found {[o['metadata']['name'] for o in found]}"
    )
    return found[0]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def mounts(deployment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """volume name -> {"mount": mountPath, "volume": volume spec}; every mount has a volume."""
    spec = deployment["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    out = {}
    for m in container(deployment)["volumeMounts"]:
        assert m["name"] in volumes, f"mount {m['name']} has no volume"
        out[m["name"]] = {"mount": m["mountPath"], "volume": volumes[m["name"]], "subPath": m.get("subPath")}
    return out


def check_objects(objects: list[dict[str, Any]], tmp_path: Path) -> None:
    """The wiring every rendering of the manifests must have (k8s/ and the chart alike)."""
    for o in objects:
        assert o.get("apiVersion") and o.get("kind"), o
        assert o.get("metadata", {}).get("name"), o
        assert o["kind"] in NO_BODY or BODY_KEYS & set(o), f"{o['kind']} {o['metadata']['name']} has no body"

    config = one(objects, "ConfigMap")
    settings = settings_from_toml(config["data"]["lagoon.toml"], tmp_path)
    assert settings.storage.backend == "s3" and settings.storage.bucket
    assert settings.server.listen == "0.0.0.0:8080"
    assert settings.auth.keys_file and settings.cache.dir

    secret = one(objects, "Secret")
    keys_path = tmp_path / "keys.toml"
    keys_path.write_text(secret["stringData"]["keys.toml"], encoding="utf-8")
    auth.load_keys(keys_path)  # a valid (empty) keys file

    account = one(objects, "ServiceAccount")
    assert "eks.amazonaws.com/role-arn" in account["metadata"].get("annotations", {})

    server = one(objects, "Deployment", "-server")
    worker = one(objects, "Deployment", "-worker")
    for deployment, program in ((server, "lagoon-server"), (worker, "lagoon-worker")):
        spec = deployment["spec"]
        pod = spec["template"]
        assert spec["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
        c = container(deployment)
        assert c["name"] == program and c["command"][:3] == [program, "--config", "/etc/lagoon/lagoon.toml"]
        assert "lagoon" in c["image"]
        assert pod["spec"]["serviceAccountName"] == account["metadata"]["name"]
        m = mounts(deployment)
        assert m["config"]["mount"] == "/etc/lagoon/lagoon.toml" and m["config"]["subPath"] == "lagoon.toml"
        assert m["config"]["volume"]["configMap"]["name"] == config["metadata"]["name"]
        assert m["cache"]["mount"] == settings.cache.dir and "emptyDir" in m["cache"]["volume"]
        assert c["securityContext"]["readOnlyRootFilesystem"] is True and m["tmp"]["mount"] == "/tmp"

    c = container(server)
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    port_names = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert port_names == {"http": 8080} and c["readinessProbe"]["httpGet"]["port"] == "http"
    # Sizing (deployment guide §5): servers 4 vCPU / 8 GiB / 100 GiB cache; workers 2 vCPU / 4 GiB.
    assert str(c["resources"]["requests"]["cpu"]) == "4" and c["resources"]["requests"]["memory"] == "8Gi"
    cache_limit = quantity_bytes(mounts(server)["cache"]["volume"]["emptyDir"]["sizeLimit"])
    assert cache_limit == 100 * GIB and settings.cache.disk_bytes < cache_limit
    assert settings.cache.memory_bytes < quantity_bytes(c["resources"]["limits"]["memory"])
    keys_mount = mounts(server)["keys"]
    assert keys_mount["volume"]["secret"]["secretName"] == secret["metadata"]["name"]
    assert Path(settings.auth.keys_file).parent == Path(keys_mount["mount"])
    wc = container(worker)
    assert str(wc["resources"]["requests"]["cpu"]) == "2" and wc["resources"]["requests"]["memory"] == "4Gi"
    assert 1 <= worker["spec"].get("replicas", 1) <= 2
    assert "readinessProbe" not in wc  # the worker serves only metrics
    assert {p["name"]: p["containerPort"] for p in wc["ports"]} == {"metrics": 9091}
    assert settings.observability.metrics_listen == "0.0.0.0:9091"

    service = one(objects, "Service")
    assert service["spec"]["selector"].items() <= server["spec"]["template"]["metadata"]["labels"].items()
    assert {p["name"] for p in service["spec"]["ports"]} == {"http"}

    hpas = by_kind(objects, "HorizontalPodAutoscaler")
    for hpa in hpas:
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert hpa["spec"]["scaleTargetRef"]["name"] == server["metadata"]["name"]
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]

    for monitor in by_kind(objects, "ServiceMonitor"):
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["path"] == "/metrics" and endpoint["port"] == "http"
    for monitor in by_kind(objects, "PodMonitor"):  # the workers' metrics (no Service)
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert (
            monitor["spec"]["selector"]["matchLabels"].items()
            <= worker["spec"]["template"]["metadata"]["labels"].items()
        )
        (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
        assert endpoint["path"] == "/metrics" and endpoint["port"] == "metrics"
    assert len(by_kind(objects, "PodMonitor")) == len(by_kind(objects, "ServiceMonitor"))


# --- files the deployment guide names ------------------------------------------------------------


def test_guide_files_exist() -> None:
    for path in (
        DEPLOY / "docker-compose.yml",
        DEPLOY / "Dockerfile",
        K8S,
        CHART / "Chart.yaml",
        CHART / "values.yaml",
    ):
        assert path.exists(), path


def test_every_yaml_file_parses() -> None:
    paths = [p for p in DEPLOY.rglob("*.y*ml") if "templates" not in p.parts]
    assert len(paths) >= 12
    for path in paths:
        assert load_all(path), f"{path} is empty"


# --- Dockerfile and compose ------------------------------------------------------------------------


def test_dockerfile_installs_from_the_lock() -> None:
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    assert "pip install --no-cache-dir uv" in text
    assert "uv sync --locked --no-dev" in text
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8")
    for m in re.finditer(r"^COPY (.+) \S+$", text, re.M):
        for source in m.group(1).split():
            assert (ROOT / source).exists(), f"COPY {source}: no such file in the build context"
            assert f"!{source}" in ignore or f"!{source}/" in ignore, (
                f"{source} is excluded by the dockerignore"
            )
    assert re.search(r'^CMD \["lagoon-server"\]', text, re.M)
    env = dict(re.findall(r"(LAGOON_\w+)=(\S+)", text))
    assert settings_from_env(env).server.listen == "0.0.0.0:8080"


def test_compose_stack() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text(encoding="utf-8"))
    services = compose["services"]
    assert set(services) == {"minio", "createbucket", "lagoon-server", "lagoon-worker"}
    minio = services["minio"]
    assert "--console-address" in minio["command"] and ":9001" in minio["command"]
    assert any(str(p).endswith(":9001") for p in minio["ports"])
    init = services["createbucket"]
    assert (
        init["image"].startswith("minio/mc") and init["depends_on"]["minio"]["condition"] == "service_healthy"
    )
    script = " ".join(init["command"])
    for name in ("lagoon-server", "lagoon-worker"):
        service = services[name]
        assert service["command"][0] == name
        build = service["build"]
        context = (DEPLOY / build["context"]).resolve()
        assert context == ROOT and (context / build["dockerfile"]).is_file()
        settings = settings_from_env(service["environment"])
        assert settings.storage.backend == "s3" and settings.storage.endpoint == "http://minio:9000"
        assert f"local/{settings.storage.bucket}" in script, "the init job must create the configured bucket"
        assert service["depends_on"]["createbucket"]["condition"] == "service_completed_successfully"
        assert service["environment"]["AWS_ACCESS_KEY_ID"] == minio["environment"]["MINIO_ROOT_USER"]
        assert service["environment"]["AWS_SECRET_ACCESS_KEY"] == minio["environment"]["MINIO_ROOT_PASSWORD"]
        for volume in service.get("volumes", []):
            assert volume.split(":")[0] in compose["volumes"]
    server = services["lagoon-server"]
    assert settings_from_env(server["environment"]).server.listen == "0.0.0.0:8080"
    assert any("8080:8080" in str(p) for p in server["ports"])
    assert "/readyz" in " ".join(server["healthcheck"]["test"])
    worker = services["lagoon-worker"]
    assert settings_from_env(worker["environment"]).observability.metrics_listen == "0.0.0.0:9091"
    assert any("9091:9091" in str(p) for p in worker["ports"])


# --- Kubernetes manifests ----------------------------------------------------------------------------


def test_k8s_manifests(tmp_path: Path) -> None:
    objects = k8s_objects()
    check_objects(objects, tmp_path)
    kinds = sorted(o["kind"] for o in objects)
    for kind in (
        "Namespace",
        "ConfigMap",
        "Secret",
        "Service",
        "HorizontalPodAutoscaler",
        "ServiceMonitor",
        "PodMonitor",
        "ServiceAccount",
    ):
        assert kind in kinds, kind
    assert kinds.count("Deployment") == 2
    namespace = one(objects, "Namespace")["metadata"]["name"]
    assert all(o["metadata"].get("namespace") == namespace for o in objects if o["kind"] != "Namespace")
    assert one(objects, "Deployment", "-server")["metadata"]["name"] == "lagoon-server"
    assert one(objects, "Deployment", "-worker")["metadata"]["name"] == "lagoon-worker"


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(files)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kubectl_kustomize_builds_offline() -> None:
    proc = subprocess.run(
        ["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    built = [d for d in yaml.safe_load_all(proc.stdout) if d]
    assert sorted((o["kind"], o["metadata"]["name"]) for o in built) == sorted(
        (o["kind"], o["metadata"]["name"]) for o in k8s_objects()
    )


# --- Helm chart ----------------------------------------------------------------------------------------


def test_chart_metadata_and_values() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))
    assert chart["apiVersion"] == "v2" and chart["name"] == "lagoon"
    assert re.fullmatch(r"\d+\.\d+\.\d+", chart["version"])
    with (ROOT / "pyproject.toml").open("rb") as f:
        assert chart["appVersion"] == tomllib.load(f)["project"]["version"]
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    known = sections()
    for section, keys in values["config"].items():
        assert section in known, section
        for key in keys:
            assert key in known[section].model_fields, f"config.{section}.{key} is not a Lagoon setting"


def test_chart_renders_with_defaults(tmp_path: Path) -> None:
    rendered = Chart(CHART).render()
    objects = [doc for _, doc in documents(rendered)]
    check_objects(objects, tmp_path)
    assert {o["kind"] for o in objects} >= {
        "ConfigMap",
        "Secret",
        "ServiceAccount",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "ServiceMonitor",
        "PodMonitor",
    }
    server = one(objects, "Deployment", "-server")
    assert "replicas" not in server["spec"]  # the HPA owns it
    annotations = server["spec"]["template"]["metadata"]["annotations"]
    assert re.fullmatch(r"[0-9a-f]{64}", annotations["checksum/config"])
    assert container(server)["image"] == "ghcr.io/example/lagoon:0.1.0"
    assert "lagoon --config /etc/lagoon/lagoon.toml doctor" in rendered["lagoon/templates/NOTES.txt"]


def test_chart_switches(tmp_path: Path) -> None:
    values = {
        "server": {
            "autoscaling": {"enabled": False},
            "replicas": 3,
            "podDisruptionBudget": {"enabled": False},
        },
        "serviceMonitor": {"enabled": False},
        "keys": {"existingSecret": "my-keys"},
        "serviceAccount": {"create": False, "name": "team-sa"},
        "image": {"tag": "9.9.9"},
        "extraEnv": [{"name": "LAGOON_OBSERVABILITY__LOG_LEVEL", "value": "debug"}],
        "config": {"storage": {"bucket": "other-bucket", "endpoint": "http://minio:9000"}},
    }
    objects = [doc for _, doc in documents(Chart(CHART, release="search").render(values))]
    kinds = {o["kind"] for o in objects}
    assert not kinds & {
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "ServiceMonitor",
        "PodMonitor",
        "Secret",
        "ServiceAccount",
    }
    server = one(objects, "Deployment", "-server")
    assert server["metadata"]["name"] == "search-server" and server["spec"]["replicas"] == 3
    pod = server["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "team-sa"
    assert mounts(server)["keys"]["volume"]["secret"]["secretName"] == "my-keys"
    assert container(server)["image"].endswith(":9.9.9")
    env = {e["name"]: e["value"] for e in container(server)["env"]}
    assert settings_from_env(env).observability.log_level == "debug"
    toml_text = one(objects, "ConfigMap")["data"]["lagoon.toml"]
    settings = settings_from_toml(toml_text, tmp_path)
    assert settings.storage.bucket == "other-bucket" and settings.storage.region == "us-east-1"


@pytest.mark.skipif(shutil.which("helm") is None, reason="helm is not installed")
def test_helm_template_agrees_with_the_stand_in(tmp_path: Path) -> None:
    proc = subprocess.run(
        ["helm", "template", "lagoon", str(CHART), "--namespace", "lagoon"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    real = [d for d in yaml.safe_load_all(proc.stdout) if d]
    check_objects(real, tmp_path)
    lite = [doc for _, doc in documents(Chart(CHART).render())]
    assert sorted((o["kind"], o["metadata"]["name"]) for o in real) == sorted(
        (o["kind"], o["metadata"]["name"]) for o in lite
    )
