"""Checks of deploy/ with the real tools: Dockerfile, docker-compose.yml, Kubernetes manifests, Helm chart.

No Docker engine or cluster is available where these tests run, so nothing is built or applied.
Instead, with the tools a CI of such files would use:

- the Helm chart is linted and rendered by Helm itself (``helm-python-sdk`` embeds Helm v4's Go
  library: ``helm lint --strict`` and ``helm template``), for several value sets;
- every rendered manifest, every file of deploy/k8s and the ``kubectl kustomize`` output are
  validated strictly (unknown fields are errors) against the Kubernetes API schemas of two
  versions with ``kubernetes-validate``; ServiceMonitor and PodMonitor, which Kubernetes does not
  know, against the Prometheus Operator's CRD schemas (tests/deploy/schemas, made strict the
  same way);
- the compose file is validated by ``check-jsonschema --builtin-schema vendor.compose-spec``;
- then the wiring the deployment guide relies on: images/commands run ``lagoon-server`` /
  ``lagoon-worker``, probes hit ``/readyz`` and ``/healthz``, selectors match pod labels, monitors
  scrape ``/metrics`` on a port that exists, volumes match mounts, the cache fits its volume,
  resources follow the guide's sizing, pods get no service links, the doctor hook runs
  ``lagoon doctor`` with the release's configuration, images and tools are pinned;
- configuration is checked by Lagoon itself: the ConfigMap's and the chart's ``lagoon.toml`` and
  every ``LAGOON_*`` variable go through ``lagoon.config.load_settings``, the keys file through
  ``lagoon.auth.load_keys``.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

from lagoon import auth
from lagoon.config import CONFIG_ENV_VAR, ENV_PREFIX, Settings, load_settings, sections

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
MONITORING = K8S / "monitoring"
CHART = DEPLOY / "helm" / "lagoon"
SCHEMAS = ROOT / "tests" / "deploy" / "schemas"
K8S_VERSIONS = ("1.30.0", "1.37.0")  # an older supported release and the newest schemas known
CRD_SCHEMAS = {"ServiceMonitor": "servicemonitor-v1.json", "PodMonitor": "podmonitor-v1.json"}
BODY_KEYS = {"spec", "data", "stringData"}
NO_BODY = {"Namespace", "ServiceAccount"}
GIB = 1024**3


def load_all(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def render(values: dict[str, Any] | None = None, release: str = "lagoon") -> dict[str, str]:
    """``helm template RELEASE deploy/helm/lagoon -n lagoon`` with ``values``: path -> text."""
    return helm.Chart.load(CHART).render(values or {}, name=release, namespace="lagoon")


def documents(rendered: dict[str, str]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, text in sorted(rendered.items()):
        if path.endswith((".yaml", ".yml")):
            for doc in yaml.safe_load_all(text):
                if doc:
                    yield path, doc


def strict_schema(schema: Any) -> Any:
    """A CRD's OpenAPI schema with unknown fields refused wherever it lists the known ones (what
    the API server's structural pruning would silently drop), unless it preserves unknown ones."""
    if isinstance(schema, dict):
        out = {k: strict_schema(v) for k, v in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict_schema(v) for v in schema]
    return schema


def crd_validator(kind: str) -> jsonschema.Draft7Validator:
    schema = json.loads((SCHEMAS / CRD_SCHEMAS[kind]).read_text(encoding="utf-8"))
    schema.pop("$comment", None)
    return jsonschema.Draft7Validator(strict_schema(schema))


def validate_strictly(objects: list[dict[str, Any]]) -> None:
    """Every object against its Kubernetes (or Prometheus Operator CRD) schema, unknown fields
    refused, for each of ``K8S_VERSIONS``."""
    assert objects
    for o in objects:
        what = f"{o.get('kind')} {o.get('metadata', {}).get('name')}"
        if o["kind"] in CRD_SCHEMAS:
            assert o["apiVersion"] == "monitoring.coreos.com/v1", what
            errors = [e.message for e in crd_validator(o["kind"]).iter_errors(copy.deepcopy(o))]
            assert errors == [], f"{what}: {errors[:3]}"
            continue
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(copy.deepcopy(o), version, strict=True)
            except kubernetes_validate.ValidationError as e:
                raise AssertionError(f"{what} is not a valid Kubernetes {version} object: {e.message}") from e


def pod_specs(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o["spec"]["template"]["spec"] for o in objects if o["kind"] in ("Deployment", "Job")]


def k8s_objects(folder: Path = K8S) -> list[dict[str, Any]]:
    """The objects of deploy/k8s (with ``MONITORING``: plus the monitoring overlay's own files)."""
    folders = [K8S] + ([MONITORING] if folder == MONITORING else [])
    return [
        doc
        for f in folders
        for path in sorted(f.glob("*.yaml"))
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
    validate_strictly(objects)
    for spec in pod_specs(objects):
        assert spec.get("enableServiceLinks") is False, "pods must not get other Services' variables"
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
    assert len(paths) >= 14
    for path in paths:
        assert load_all(path), f"{path} is empty"


# --- Dockerfile and compose ------------------------------------------------------------------------


def test_dockerfile_installs_from_the_lock() -> None:
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11-slim-bookworm$", text, re.M)  # Python 3.11 on a fixed Debian
    bootstrap = (ROOT / "scripts" / "bootstrap").read_text(encoding="utf-8")
    uv = re.search(r"^UV_VERSION=(\S+)$", bootstrap, re.M)
    assert uv and f"pip install --no-cache-dir uv=={uv.group(1)}" in text  # the same uv as bootstrap
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


def test_compose_file_is_valid_compose() -> None:
    exe = Path(sys.executable).parent / "check-jsonschema"
    proc = subprocess.run(
        [str(exe), "--builtin-schema", "vendor.compose-spec", str(DEPLOY / "docker-compose.yml")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_compose_stack() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text(encoding="utf-8"))
    services = compose["services"]
    for name, service in services.items():  # third-party images pinned to a release, never :latest
        if "build" not in service:
            assert re.fullmatch(
                r"minio/(minio|mc):RELEASE\.\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ", service["image"]
            ), name
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


@pytest.mark.parametrize("folder", [K8S, MONITORING], ids=["base", "monitoring"])
def test_k8s_manifests(tmp_path: Path, folder: Path) -> None:
    objects = k8s_objects(folder)
    check_objects(objects, tmp_path)
    kinds = sorted(o["kind"] for o in objects)
    for kind in ("Namespace", "ConfigMap", "Secret", "Service", "HorizontalPodAutoscaler", "ServiceAccount"):
        assert kind in kinds, kind
    monitors = {"ServiceMonitor", "PodMonitor"} & set(kinds)
    assert monitors == (set() if folder == K8S else {"ServiceMonitor", "PodMonitor"})
    assert kinds.count("Deployment") == 2
    namespace = one(objects, "Namespace")["metadata"]["name"]
    assert all(o["metadata"].get("namespace") == namespace for o in objects if o["kind"] != "Namespace")
    assert one(objects, "Deployment", "-server")["metadata"]["name"] == "lagoon-server"
    assert one(objects, "Deployment", "-worker")["metadata"]["name"] == "lagoon-worker"


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(files)
    overlay = yaml.safe_load((MONITORING / "kustomization.yaml").read_text(encoding="utf-8"))
    own = {p.name for p in MONITORING.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(overlay["resources"]) == sorted(own)


def kubectl() -> str:
    found = shutil.which("kubectl") or str(ROOT / ".tools" / "bin" / "kubectl")
    assert Path(found).exists(), "kubectl is missing: scripts/bootstrap installs Debian's kubernetes-client"
    return found


def kustomize(folder: Path) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [kubectl(), "kustomize", str(folder)], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


@pytest.mark.parametrize("folder", [K8S, MONITORING], ids=["base", "monitoring"])
def test_kubectl_kustomize_builds_offline(tmp_path: Path, folder: Path) -> None:
    built = kustomize(folder)
    if folder == MONITORING:  # applied after the base: check the wiring against it
        built = [*built, *[d for d in kustomize(K8S)]]
    assert sorted((o["kind"], o["metadata"]["name"]) for o in built) == sorted(
        (o["kind"], o["metadata"]["name"]) for o in k8s_objects(folder)
    )
    check_objects(built, tmp_path)


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


VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "switches": {
        "server": {
            "autoscaling": {"enabled": False},
            "replicas": 3,
            "podDisruptionBudget": {"enabled": False},
        },
        "keys": {"existingSecret": "my-keys"},
        "serviceAccount": {"create": False, "name": "team-sa"},
        "image": {"tag": "9.9.9"},
        "extraEnv": [{"name": "LAGOON_OBSERVABILITY__LOG_LEVEL", "value": "debug"}],
        "config": {"storage": {"bucket": "other-bucket", "endpoint": "http://minio:9000"}},
        "doctor": {"enabled": False},
    },
    "monitoring": {
        "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus"}},
        "worker": {"replicas": 2},
        "doctor": {"rounds": 10, "threads": 2},
    },
    "minio": {
        "config": {"storage": {"endpoint": "http://minio.storage:9000", "sse": "", "prefix": ""}},
        "server": {
            "nodeSelector": {"disk": "ssd"},
            "tolerations": [{"key": "search", "effect": "NoSchedule"}],
        },
        "imagePullSecrets": [{"name": "registry"}],
    },
}


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_chart_lints_strictly(name: str) -> None:
    """``helm lint --strict``: nothing above an info message (the chart has no icon) for any set."""
    report = helm.lint(CHART, VALUE_SETS[name], strict=True, namespace="lagoon", kube_version="v1.30.0")
    assert report["errors"] == [], report
    assert [m for m in report["messages"] if m["severity"] >= 2] == [], report


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_chart_renders_valid_manifests(name: str, tmp_path: Path) -> None:
    objects = [doc for _, doc in documents(render(VALUE_SETS[name]))]
    if name == "switches":  # an existing Secret and ServiceAccount: the wiring is checked below
        validate_strictly(objects)
        assert all(spec["enableServiceLinks"] is False for spec in pod_specs(objects))
    else:
        check_objects(objects, tmp_path)


def test_a_broken_chart_fails_the_checks(tmp_path: Path) -> None:
    """The checks catch what a chart can get wrong: a template Helm cannot render, and a manifest
    Kubernetes would refuse (an unknown field)."""
    broken = tmp_path / "lagoon"
    shutil.copytree(CHART, broken)
    (broken / "templates" / "bad.yaml").write_text("{{ .Values.nope.deeper }}\n", encoding="utf-8")
    with pytest.raises(helm.HelmError):
        helm.Chart.load(broken).render({}, name="lagoon", namespace="lagoon")
    assert helm.lint(broken, strict=True)["messages"]
    server = one([d for _, d in documents(render())], "Deployment", "-server")
    server["spec"]["template"]["spec"]["containers"][0]["imagePullPolicie"] = "Always"
    with pytest.raises(AssertionError, match="not a valid Kubernetes"):
        validate_strictly([server])
    monitor = one([d for _, d in documents(render(VALUE_SETS["monitoring"]))], "ServiceMonitor")
    monitor["spec"]["endpoints"][0]["scrapeIntervall"] = "30s"
    with pytest.raises(AssertionError, match="scrapeIntervall"):
        validate_strictly([monitor])


def test_chart_renders_with_defaults(tmp_path: Path) -> None:
    rendered = render()
    objects = [doc for _, doc in documents(rendered)]
    check_objects(objects, tmp_path)
    kinds = {o["kind"] for o in objects}
    assert kinds >= {
        "ConfigMap",
        "Secret",
        "ServiceAccount",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Job",
    }
    # Prometheus Operator objects are opt-in: an install on a cluster without its CRDs must work
    assert not kinds & {"ServiceMonitor", "PodMonitor"}
    server = one(objects, "Deployment", "-server")
    assert "replicas" not in server["spec"]  # the HPA owns it
    annotations = server["spec"]["template"]["metadata"]["annotations"]
    assert re.fullmatch(r"[0-9a-f]{64}", annotations["checksum/config"])
    assert container(server)["image"] == "ghcr.io/example/lagoon:0.1.0"
    notes = rendered["lagoon/templates/NOTES.txt"]
    assert "lagoon --config /etc/lagoon/lagoon.toml doctor" in notes and "job/lagoon-doctor" in notes


def test_chart_doctor_hook(tmp_path: Path) -> None:
    """``lagoon doctor`` runs as a post-install/post-upgrade hook with the release's lagoon.toml,
    so a bucket without atomic conditional writes fails the install."""
    objects = [doc for _, doc in documents(render(VALUE_SETS["monitoring"]))]
    job = one(objects, "Job", "-doctor")
    hooks = job["metadata"]["annotations"]["helm.sh/hook"].split(",")
    assert set(hooks) == {"post-install", "post-upgrade"}
    assert "before-hook-creation" in job["metadata"]["annotations"]["helm.sh/hook-delete-policy"]
    assert job["spec"]["backoffLimit"] == 0
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    c = container(job)
    assert c["command"] == [
        "lagoon", "--config", "/etc/lagoon/lagoon.toml", "doctor", "--rounds", "10", "--threads", "2"
    ]  # fmt: skip
    server = one(objects, "Deployment", "-server")
    assert pod["serviceAccountName"] == server["spec"]["template"]["spec"]["serviceAccountName"]
    m = mounts(job)
    assert m["config"]["volume"]["configMap"]["name"] == one(objects, "ConfigMap")["metadata"]["name"]
    assert m["config"]["mount"] == "/etc/lagoon/lagoon.toml" and m["tmp"]["mount"] == "/tmp"
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert "Job" not in {o["kind"] for _, o in documents(render(VALUE_SETS["switches"]))}


def test_chart_monitoring_objects(tmp_path: Path) -> None:
    objects = [doc for _, doc in documents(render(VALUE_SETS["monitoring"]))]
    service_monitor = one(objects, "ServiceMonitor")
    pod_monitor = one(objects, "PodMonitor")
    for monitor in (service_monitor, pod_monitor):
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus"
        assert monitor["spec"]["namespaceSelector"]["matchNames"] == ["lagoon"]


def test_chart_switches(tmp_path: Path) -> None:
    objects = [doc for _, doc in documents(render(VALUE_SETS["switches"], release="search"))]
    kinds = {o["kind"] for o in objects}
    assert not kinds & {
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "ServiceMonitor",
        "PodMonitor",
        "Secret",
        "ServiceAccount",
        "Job",
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


def test_k8s_manifests_match_the_chart_defaults() -> None:
    """deploy/k8s is the chart's default rendering written out (plus a Namespace and the
    monitors): the same objects with the same kinds, so the two cannot drift apart silently."""
    chart = {(o["kind"], o["metadata"]["name"].removeprefix("lagoon-")) for _, o in documents(render())}
    plain = {(o["kind"], o["metadata"]["name"].removeprefix("lagoon-")) for o in k8s_objects(MONITORING)}
    assert plain - chart == {("Namespace", "lagoon"), ("ServiceMonitor", "server"), ("PodMonitor", "worker")}
    assert chart - plain == {("Job", "doctor")}  # a hook: with plain manifests, run lagoon doctor by hand
