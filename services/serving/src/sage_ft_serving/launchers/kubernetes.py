"""Model servers as Kubernetes Deployments plus Services, through the official client.

Each server is a one-replica Deployment of the official vLLM image with GPU requests, the models PVC read-only,
readiness and liveness probes on ``/health``, a non-root security context, and labels (and optionally an owner
reference to the serving Deployment, so deleting serving garbage-collects them). Its Service gives it a stable
cluster-internal address; nothing is exposed outside the cluster.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sage_ft.proc import last_error_line
from sage_ft_serving.launchers.base import (
    MANAGED_BY,
    SERVER_LABEL,
    Launcher,
    ServerHandle,
    ServerSpec,
    volume_path,
)
from sage_ft_serving.settings import Settings

PORT = 8000
OWNER = "sage-ft-serving"
_NON_ROOT_ENV = {"HOME": "/tmp", "HF_HOME": "/tmp/hf", "XDG_CACHE_HOME": "/tmp/cache"}  # writable as uid 1000


class KubernetesLauncher(Launcher):
    kind = "kubernetes"

    def __init__(self, settings: Settings, api_client: Any = None) -> None:
        from kubernetes import client, config

        self.settings = settings
        if api_client is None:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
            api_client = client.ApiClient()
        self.api_client = api_client
        self.apps = client.AppsV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.ns = settings.serving.k8s_namespace

    def path_for_server(self, path: Path) -> str:
        return volume_path(self.settings.paths.resolved_home(), self.settings.serving.docker_models_mount, path)

    def labels(self, spec: ServerSpec) -> dict[str, str]:
        return {MANAGED_BY: OWNER, SERVER_LABEL: spec.name, **spec.labels}

    def manifests(self, spec: ServerSpec) -> tuple[Any, Any]:
        """The Deployment and Service objects for ``spec`` (what is sent to the API server)."""
        from kubernetes import client as k

        cfg = self.settings.serving
        labels = self.labels(spec)
        selector = {SERVER_LABEL: spec.name}
        limits = {"nvidia.com/gpu": str(spec.gpus)} if spec.gpus else {}
        probe = k.V1Probe(
            http_get=k.V1HTTPGetAction(path=spec.health_path, port=PORT),
            period_seconds=10,
            timeout_seconds=5,
            failure_threshold=3,
        )
        startup = k.V1Probe(
            http_get=k.V1HTTPGetAction(path=spec.health_path, port=PORT),
            period_seconds=10,
            failure_threshold=max(1, int(cfg.start_timeout_seconds // 10)),
        )
        container = k.V1Container(
            name="server",
            image=cfg.docker_image,
            command=["python3", "-m", spec.module],
            args=spec.argv("0.0.0.0", PORT),
            env=[k.V1EnvVar(name=n, value=v) for n, v in sorted({**spec.env, **_NON_ROOT_ENV}.items())],
            ports=[k.V1ContainerPort(container_port=PORT, name="http")],
            resources=k.V1ResourceRequirements(
                requests={"cpu": cfg.k8s_cpu, "memory": cfg.k8s_memory, **limits},
                limits={"memory": cfg.k8s_memory, **limits},
            ),
            readiness_probe=probe,
            liveness_probe=probe,
            startup_probe=startup,
            volume_mounts=[
                k.V1VolumeMount(name="models", mount_path=cfg.docker_models_mount, read_only=True),
                k.V1VolumeMount(name="shm", mount_path="/dev/shm"),
            ],
            security_context=k.V1SecurityContext(
                allow_privilege_escalation=False,
                run_as_non_root=True,
                run_as_user=1000,
                capabilities=k.V1Capabilities(drop=["ALL"]),
            ),
        )
        pod = k.V1PodSpec(
            containers=[container],
            automount_service_account_token=False,
            volumes=[
                k.V1Volume(
                    name="models",
                    persistent_volume_claim=k.V1PersistentVolumeClaimVolumeSource(
                        claim_name=cfg.k8s_models_pvc, read_only=True
                    ),
                ),
                k.V1Volume(name="shm", empty_dir=k.V1EmptyDirVolumeSource(medium="Memory")),
            ],
            security_context=k.V1PodSecurityContext(run_as_non_root=True, fs_group=1000),
        )
        owners = None
        if cfg.k8s_owner_name and cfg.k8s_owner_uid:
            owners = [
                k.V1OwnerReference(
                    api_version="apps/v1",
                    kind="Deployment",
                    name=cfg.k8s_owner_name,
                    uid=cfg.k8s_owner_uid,
                    controller=False,
                    block_owner_deletion=True,
                )
            ]
        meta = k.V1ObjectMeta(name=spec.name, namespace=self.ns, labels=labels, owner_references=owners)
        deployment = k.V1Deployment(
            api_version="apps/v1",
            kind="Deployment",
            metadata=meta,
            spec=k.V1DeploymentSpec(
                replicas=1,
                selector=k.V1LabelSelector(match_labels=selector),
                strategy=k.V1DeploymentStrategy(type="Recreate"),
                template=k.V1PodTemplateSpec(metadata=k.V1ObjectMeta(labels=labels), spec=pod),
            ),
        )
        service = k.V1Service(
            api_version="v1",
            kind="Service",
            metadata=meta,
            spec=k.V1ServiceSpec(
                type="ClusterIP", selector=selector, ports=[k.V1ServicePort(name="http", port=PORT, target_port=PORT)]
            ),
        )
        return deployment, service

    def start(self, spec: ServerSpec) -> ServerHandle:
        deployment, service = self.manifests(spec)
        self._delete(spec.name)  # leftovers of a crash would block the names
        self.apps.create_namespaced_deployment(self.ns, deployment)
        self.core.create_namespaced_service(self.ns, service)
        return ServerHandle(spec.name, f"http://{spec.name}.{self.ns}.svc:{PORT}", ref=spec.name)

    def _delete(self, name: str) -> None:
        from kubernetes.client.exceptions import ApiException

        for call in (self.apps.delete_namespaced_deployment, self.core.delete_namespaced_service):
            try:
                call(name, self.ns, propagation_policy="Foreground")
            except ApiException as err:
                if err.status != 404:
                    raise

    def stop(self, handle: ServerHandle) -> None:
        self._delete(handle.name)

    def alive(self, handle: ServerHandle) -> bool:
        from kubernetes.client.exceptions import ApiException

        try:
            dep = self.apps.read_namespaced_deployment(handle.name, self.ns)
        except ApiException as err:
            if err.status == 404:
                return False
            raise
        return dep.metadata is None or dep.metadata.deletion_timestamp is None

    def describe_failure(self, handle: ServerHandle) -> str:
        """The engine's last exception message from its pod's log (the previous container's after a crash)."""
        hint = f"see `kubectl -n {self.ns} describe deployment {handle.name}`"
        try:
            pods = self.core.list_namespaced_pod(self.ns, label_selector=f"{SERVER_LABEL}={handle.name}").items
            for name in [p.metadata.name for p in pods if p.metadata is not None and p.metadata.name]:
                for previous in (True, False):
                    try:
                        text = self.core.read_namespaced_pod_log(name, self.ns, tail_lines=200, previous=previous)
                    except Exception:
                        continue
                    reason = last_error_line(str(text))
                    if reason:
                        return f"pod {name}: {reason}"
        except Exception as err:
            return f"{hint} ({type(err).__name__} reading its pods)"
        return hint

    def cleanup_orphans(self) -> int:
        found = self.apps.list_namespaced_deployment(self.ns, label_selector=f"{MANAGED_BY}={OWNER}").items
        for dep in found:
            if dep.metadata is not None and dep.metadata.name:
                self._delete(dep.metadata.name)
        return len(found)

    def close(self) -> None:
        self.api_client.close()
