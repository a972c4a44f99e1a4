"""The docker and kubernetes launchers, checked on the request bodies they send.

Each is pointed at a small recording API server on loopback that answers like the real one for the calls made; the
bodies are what the real engine or API server would receive. The docker body is also sent to the real engine (the
one the compose test uses); no cluster runs here, so the Kubernetes one goes to a cluster only when one is given.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from sage_ft.storage.manifest import Manifest
from sage_ft_serving.artifacts import Artifact
from sage_ft_serving.engines.vllm import VLLMEngine
from sage_ft_serving.launchers.base import MANAGED_BY
from sage_ft_serving.plan import Plan
from sage_ft_serving.settings import ServingSettings, Settings

Route = Callable[[str, str, Any], tuple[int, Any]]


class Recorder:
    """A loopback HTTP server that records each request and answers through ``route``."""

    def __init__(self, route: Route) -> None:
        self.calls: list[tuple[str, str, Any]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                recorder.calls.append((self.command, self.path, body))
                status, reply = route(self.command, self.path, body)
                data = json.dumps(reply).encode() if reply is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _handle  # noqa: N815

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def _spec(settings: Settings, home: Path, launcher: Any) -> Any:
    manifest = Manifest(name="ft:sage-tiny:code:abc", base_model="sage-tiny", files={})
    adapter = home / "serving" / "cache" / "d1" / "adapter"
    artifact = Artifact(manifest=manifest, digest="d1" * 32, part="adapter", path=adapter)
    plan = Plan(mode="adapter", max_model_len=1024, lora_rank=16, adapter_rank=16)
    return VLLMEngine(settings, gpu=True).spec(
        artifact, str(home / "models" / "sage-tiny"), launcher.path_for_server, plan
    )


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "models" / "sage-tiny").mkdir(parents=True)
    return tmp_path


# -- docker ---------------------------------------------------------------------------------------------------


def docker_api(method: str, path: str, body: Any) -> tuple[int, Any]:
    path = path.split("?")[0].removeprefix("/v1.41")
    running = {
        "Id": "cid1",
        "Name": "/x",
        "State": {"Status": "running"},
        "Config": {"Labels": {}},
        "NetworkSettings": {"Ports": {"8000/tcp": [{"HostIp": "127.0.0.1", "HostPort": "41234"}]}},
    }
    if method == "POST" and path == "/containers/create":
        return 201, {"Id": "cid1", "Warnings": []}
    if method == "GET" and path == "/containers/json":
        return 200, [{"Id": "old1"}]
    if method == "GET" and path in ("/containers/cid1/json", "/containers/old1/json"):
        return 200, {**running, "Id": path.split("/")[2]}
    if method == "GET" and path.startswith("/containers/") and path.endswith("/json"):
        return 404, {"message": "No such container"}
    if method in ("POST", "DELETE") and path.startswith("/containers/"):
        return 204, None
    return 404, {"message": f"unexpected {method} {path}"}


def test_docker_launcher_sends_a_pinned_gpu_container_with_volume_health_and_labels(home: Path) -> None:
    from sage_ft_serving.launchers.docker import DockerLauncher

    api = Recorder(docker_api)
    settings = Settings(serving=ServingSettings(docker_url=api.url, launcher="docker"))
    settings.paths.home = home
    try:
        launcher = DockerLauncher(settings)
        spec = _spec(settings, home, launcher)
        handle = launcher.start(spec)
        assert handle.url == "http://127.0.0.1:41234"  # a loopback-only published port
        assert launcher.alive(handle)
        create = next(b for m, p, b in api.calls if p.startswith("/v1.41/containers/create"))
        assert create["Image"] == settings.serving.docker_image and not create["Image"].endswith(":latest")
        assert create["Entrypoint"] == ["python3", "-m", "vllm.entrypoints.openai.api_server"]
        cmd = create["Cmd"]
        assert cmd[cmd.index("--model") + 1] == "/models/models/sage-tiny"  # the volume's view of the base
        assert cmd[cmd.index("--port") + 1] == "8000" and cmd[cmd.index("--host") + 1] == "0.0.0.0"
        assert "--enable-lora" in cmd and "--load-format" in cmd
        assert create["Labels"][MANAGED_BY] == "sage-ft-serving"
        assert "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True" in create["Env"]
        host = create["HostConfig"]
        assert host["DeviceRequests"][0]["Count"] == 1 and host["DeviceRequests"][0]["Capabilities"] == [["gpu"]]
        assert host["Binds"] == ["sage-models:/models:ro"]
        assert host["PortBindings"] == {"8000/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]}
        assert create["Healthcheck"]["Test"][0] == "CMD-SHELL" and "/health" in create["Healthcheck"]["Test"][1]
        launcher.stop(handle)
        assert ("POST", "/v1.41/containers/cid1/stop?t=15", None) in api.calls
        assert any(m == "DELETE" and p.startswith("/v1.41/containers/cid1") for m, p, _ in api.calls)
        # after a restart, serving removes whatever carries its label
        assert launcher.cleanup_orphans() == 1
        listed = next(p for m, p, _ in api.calls if p.startswith("/v1.41/containers/json"))
        assert "sage-ft.managed-by%3Dsage-ft-serving" in listed or "sage-ft.managed-by=sage-ft-serving" in listed
        assert any(m == "DELETE" and p.startswith("/v1.41/containers/old1") for m, p, _ in api.calls)
    finally:
        api.close()


def test_paths_outside_the_shared_volume_are_refused(home: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    from sage_ft_serving.launchers.docker import DockerLauncher

    settings = Settings(serving=ServingSettings(docker_url="http://127.0.0.1:9", launcher="docker"))
    settings.paths.home = home
    with pytest.raises(ValueError, match="outside"):
        DockerLauncher(settings).path_for_server(tmp_path_factory.mktemp("elsewhere"))


# -- kubernetes -----------------------------------------------------------------------------------------------


class K8sApi:
    """Answers like an API server for the calls the launcher makes; created objects are kept and read back."""

    def __init__(self) -> None:
        self.objects: dict[str, Any] = {}

    def __call__(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        path = path.split("?")[0]
        if method == "POST":
            self.objects[f"{path}/{body['metadata']['name']}"] = body
            return 201, body
        if method == "DELETE":
            gone = self.objects.pop(path, None)
            return (200, {"kind": "Status", "code": 200}) if gone else (404, {"kind": "Status", "code": 404})
        if method == "GET" and path.endswith("/deployments"):
            leftover = {"metadata": {"name": "old-server"}, "spec": {"selector": {}, "template": {}}}
            return 200, {"kind": "DeploymentList", "items": [leftover]}
        if method == "GET" and path in self.objects:
            return 200, self.objects[path]
        return 404, {"kind": "Status", "code": 404}


def test_kubernetes_launcher_sends_a_deployment_and_service_that_match(home: Path) -> None:
    from kubernetes import client

    from sage_ft_serving.launchers.kubernetes import KubernetesLauncher

    api = Recorder(K8sApi())
    conf = client.Configuration(host=api.url)
    settings = Settings(
        serving=ServingSettings(
            launcher="kubernetes", k8s_namespace="ml", k8s_owner_name="serving", k8s_owner_uid="uid-123"
        )
    )
    settings.paths.home = home
    try:
        launcher = KubernetesLauncher(settings, api_client=client.ApiClient(conf))
        handle = launcher.start(_spec(settings, home, launcher))
        assert handle.url == f"http://{handle.name}.ml.svc:8000"
        posted = {p: b for m, p, b in api.calls if m == "POST"}
        dep = posted["/apis/apps/v1/namespaces/ml/deployments"]
        svc = posted["/api/v1/namespaces/ml/services"]
        template = dep["spec"]["template"]
        selector = dep["spec"]["selector"]["matchLabels"]
        assert selector.items() <= template["metadata"]["labels"].items()  # the selector matches the pods
        assert svc["spec"]["selector"] == selector and svc["spec"]["type"] == "ClusterIP"
        assert dep["metadata"]["labels"][MANAGED_BY] == "sage-ft-serving"
        assert dep["metadata"]["ownerReferences"][0]["uid"] == "uid-123"
        pod = template["spec"]
        container = pod["containers"][0]
        assert not container["image"].endswith(":latest")
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
        assert container["resources"]["requests"]["memory"] == settings.serving.k8s_memory
        assert container["readinessProbe"]["httpGet"]["path"] == "/health"
        assert container["livenessProbe"]["httpGet"]["port"] == 8000
        assert container["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsNonRoot"]
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert pod["volumes"][0]["persistentVolumeClaim"] == {"claimName": "sage-models", "readOnly": True}
        assert "--enable-lora" in container["args"] and container["command"][:2] == ["python3", "-m"]
        assert pod["automountServiceAccountToken"] is False
        assert launcher.alive(handle)
        launcher.stop(handle)
        assert not launcher.alive(handle)
        deletes = [p.split("?")[0] for m, p, _ in api.calls if m == "DELETE"]
        assert f"/apis/apps/v1/namespaces/ml/deployments/{handle.name}" in deletes
        assert f"/api/v1/namespaces/ml/services/{handle.name}" in deletes
        assert launcher.cleanup_orphans() == 1
        assert any(m == "GET" and "labelSelector=sage-ft.managed-by" in p for m, p, _ in api.calls)
    finally:
        api.close()


# -- the same bodies against a real engine or cluster, where one is reachable ----------------------------------


@pytest.mark.slow
@pytest.mark.timeout(2400)  # may be the test that builds the images
def test_a_real_docker_engine_accepts_the_container(home: Path, docker_engine: str, built_images: Any) -> None:
    """The same body against the real engine the compose test uses (started by the session when none answers),
    with the model-server image it runs: created, not started (no GPU, no model), then removed as an orphan."""
    from sage_ft_serving.launchers.docker import DockerLauncher

    image = "sage-ft-standin/vllm:test"  # built by deploy/images/build.py (the built_images fixture)
    volume = "sage-test-launcher-models"
    settings = Settings(
        serving=ServingSettings(docker_url=docker_engine, docker_image=image, docker_models_volume=volume)
    )
    settings.paths.home = home
    launcher = DockerLauncher(settings)
    spec = _spec(settings, home, launcher)
    spec.gpus = 0
    args = launcher.container_args(spec)
    args.pop("detach")
    container = launcher.client.containers.create(**args)
    try:
        attrs = launcher.client.api.inspect_container(container.id)
        assert attrs["Config"]["Labels"][MANAGED_BY] == "sage-ft-serving"
        assert attrs["Config"]["Entrypoint"] == ["python3", "-m", "vllm.entrypoints.openai.api_server"]
        assert attrs["Config"]["Image"] == image
        assert attrs["HostConfig"]["Binds"] == [f"{volume}:/models:ro"]
        assert attrs["HostConfig"]["PortBindings"]["8000/tcp"][0]["HostIp"] == "127.0.0.1"  # loopback only
        assert not attrs["HostConfig"].get("DeviceRequests")  # gpus=0: no GPU asked for
        assert launcher.cleanup_orphans() >= 1
        assert not launcher.client.containers.list(all=True, filters={"id": container.id})
    finally:
        with contextlib.suppress(Exception):
            container.remove(force=True)
        with contextlib.suppress(Exception):
            launcher.client.volumes.get(volume).remove(force=True)
        launcher.close()


@pytest.mark.skipif(not os.environ.get("SAGE_TEST_KUBECONFIG"), reason="no Kubernetes cluster here")
def test_a_real_cluster_accepts_the_deployment_and_service(home: Path) -> None:
    """Server-side dry run: the API server validates both objects against its schemas and admission."""
    from kubernetes import client, config

    from sage_ft_serving.launchers.kubernetes import KubernetesLauncher

    api_client = config.new_client_from_config(config_file=os.environ["SAGE_TEST_KUBECONFIG"])
    settings = Settings(serving=ServingSettings(launcher="kubernetes", k8s_namespace="default"))
    settings.paths.home = home
    launcher = KubernetesLauncher(settings, api_client=api_client)
    deployment, service = launcher.manifests(_spec(settings, home, launcher))
    client.AppsV1Api(api_client).create_namespaced_deployment("default", deployment, dry_run="All")
    client.CoreV1Api(api_client).create_namespaced_service("default", service, dry_run="All")


GPU_CASES = [("docker", 1, True), ("docker", 0, False), ("kubernetes", 2, True), ("kubernetes", 0, False)]


@pytest.mark.parametrize(("launcher", "gpus", "expected"), GPU_CASES)
def test_container_model_servers_get_the_gpus_they_request_not_the_serving_containers(
    launcher: str, gpus: int, expected: bool
) -> None:
    """Serving runs without a GPU even on a GPU host: looking at its own devices started every vLLM container on CPU."""
    from sage_ft_serving.engines import make_engine

    settings = Settings(serving=ServingSettings(launcher=launcher, gpus_per_server=gpus))  # type: ignore[arg-type]
    engine = make_engine("vllm", settings)
    assert engine.gpu is expected  # type: ignore[attr-defined]
