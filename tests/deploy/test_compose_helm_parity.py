"""The Helm chart runs what the compose test proved: the same images, ports, environment and probes.

No cluster runs here, so the chart cannot be proven live. Instead, everything that tests/compose shows working under
`docker compose --profile cpu` is compared with the chart rendered for CPU nodes (ci/cpu-values.yaml), so that a
change to one of them without the other fails here.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from test_deploy_config import COMPOSE_ENV, render, run, tool

SERVICES = {"gateway": "gateway", "serving": "serving", "worker-cpu": "worker"}  # compose service -> chart component
THIRD_PARTY = {"redis": "redis", "minio": "minio"}
# Set under compose only, each for a reason the chart does not share.
COMPOSE_ONLY = {
    "SAGE_SERVING_DOCKER_NETWORK": "the docker launcher's network; the chart uses the kubernetes launcher",
    "SAGE_SERVING_DOCKER_MODELS_VOLUME": "the docker launcher's volume; the chart mounts a PVC",
    "SAGE_GRADER_PYTHON_SANDBOX": "compose sends python graders to serving's docker sandbox (and gives every service "
    "the setting); the chart sets it on the gateway and workers only, pointed at its graders deployment",
    "SAGE_GRADER_PYTHON_IMAGE": "the image of serving's docker sandbox",
}
# Values that differ by platform on purpose: addresses, secrets and the launcher.
PLATFORM = {
    "SAGE_REDIS_URL",
    "SAGE_STORAGE_S3_ENDPOINT",
    "SAGE_STORAGE_S3_ACCESS_KEY",
    "SAGE_STORAGE_S3_SECRET_KEY",
    "SAGE_GATEWAY_SERVING_URL",
    "SAGE_WORKER_SERVING_URL",
    "SAGE_GATEWAY_API_KEYS",
    "SAGE_SERVING_LAUNCHER",
    "SAGE_WORKER_QUEUES",
    "SAGE_SERVING_GPUS_PER_SERVER",
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    out = run(tool("docker-compose"), "--profile", "cpu", "config", env=COMPOSE_ENV)
    assert out.returncode == 0, out.stderr
    services: dict[str, Any] = yaml.safe_load(out.stdout)["services"]
    return services


@pytest.fixture(scope="module")
def chart() -> dict[str, dict[str, Any]]:
    """The first container of each workload, by component name, for CPU nodes."""
    containers = {}
    for doc in render("ci/cpu-values.yaml"):
        if doc["kind"] in ("Deployment", "StatefulSet"):
            component = doc["metadata"]["name"].rsplit("-", 1)[-1]
            containers[component] = doc["spec"]["template"]["spec"]["containers"][0]
    return containers


def compose_probe(service: dict[str, Any]) -> tuple[str, int]:
    """Path and port of a compose healthcheck that fetches a URL on the container itself."""
    test = " ".join(service["healthcheck"]["test"])
    match = re.search(r"http://127\.0\.0\.1:(\d+)(/[\w/-]*)", test)
    assert match, test
    return match.group(2), int(match.group(1))


def chart_port(container: dict[str, Any], name_or_number: str | int) -> int:
    if isinstance(name_or_number, int):
        return name_or_number
    return next(int(p["containerPort"]) for p in container["ports"] if p["name"] == name_or_number)


@pytest.mark.parametrize("service", [*SERVICES, *THIRD_PARTY])
def test_the_chart_runs_the_images_compose_runs(service: str, compose: dict[str, Any], chart: dict[str, Any]) -> None:
    component = {**SERVICES, **THIRD_PARTY}[service]
    assert chart[component]["image"] == compose[service]["image"]


def test_the_chart_starts_the_model_server_image_compose_starts(compose: dict, chart: dict) -> None:
    env = {e["name"]: e.get("value") for e in chart["serving"]["env"]}
    assert env["SAGE_SERVING_DOCKER_IMAGE"] == compose["serving"]["environment"]["SAGE_SERVING_DOCKER_IMAGE"]


@pytest.mark.parametrize("service", SERVICES)
def test_ports_and_probes_match(service: str, compose: dict[str, Any], chart: dict[str, Any]) -> None:
    container = chart[SERVICES[service]]
    path, port = compose_probe(compose[service])
    probe = container["readinessProbe"]["httpGet"]
    assert (probe["path"], chart_port(container, probe["port"])) == (path, port)
    assert port in {int(p["containerPort"]) for p in container["ports"]}
    if service == "gateway":
        assert [int(p["target"]) for p in compose[service]["ports"]] == [port]


@pytest.mark.parametrize("service", SERVICES)
def test_environment_matches(service: str, compose: dict[str, Any], chart: dict[str, Any]) -> None:
    theirs = {e["name"]: e for e in chart[SERVICES[service]]["env"]}
    ours = {k: v for k, v in compose[service]["environment"].items() if k.startswith("SAGE_")}
    missing = set(ours) - set(theirs) - set(COMPOSE_ONLY)
    assert not missing, f"set by compose but not by the chart: {sorted(missing)}"
    for name, value in ours.items():
        if name in COMPOSE_ONLY or name in PLATFORM or "valueFrom" in theirs[name]:
            continue
        assert str(theirs[name]["value"]) == str(value), name


def test_redis_keeps_jobs_the_same_way(compose: dict[str, Any], chart: dict[str, Any]) -> None:
    command = compose["redis"]["command"]
    args = " ".join(chart["redis"].get("args", []) + chart["redis"].get("command", []))
    for flag in ("--appendonly yes", "--maxmemory-policy noeviction"):
        assert flag in " ".join(command) and flag in args, flag
