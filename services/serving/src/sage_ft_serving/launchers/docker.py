"""Model servers as Docker containers of the official vLLM image, through the Docker Engine API.

Each container gets the GPUs asked for (device requests), the models volume read-only, a health check, and labels
by which serving finds and removes its containers after a restart. With ``docker_network`` set (serving itself in
compose) containers are reached by name on that network; otherwise a loopback-only host port is published.
"""

from __future__ import annotations

import contextlib
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
# The oldest Engine API with everything used here (device requests came in 1.40). Engines answer every version up to
# their own, so this works from Docker 20.10 (1.41) on; pinning a newer one refused 20.10 outright.
API_VERSION = "1.41"


class DockerLauncher(Launcher):
    kind = "docker"

    def __init__(self, settings: Settings, client: Any = None) -> None:
        import docker

        self.settings = settings
        url = settings.serving.docker_url
        self.client = client or docker.DockerClient(base_url=url, version=API_VERSION, timeout=60)

    def path_for_server(self, path: Path) -> str:
        return volume_path(self.settings.paths.resolved_home(), self.settings.serving.docker_models_mount, path)

    def container_args(self, spec: ServerSpec) -> dict[str, Any]:
        """Everything ``containers.run`` is given: the request body of the container this spec becomes."""
        from docker.types import DeviceRequest

        cfg = self.settings.serving
        args: dict[str, Any] = {
            "image": cfg.docker_image,
            "entrypoint": ["python3", "-m", spec.module],
            "command": spec.argv("0.0.0.0", PORT),
            "name": spec.name,
            "detach": True,
            "labels": {MANAGED_BY: OWNER, SERVER_LABEL: spec.name, **spec.labels},
            "environment": spec.env,
            "volumes": {cfg.docker_models_volume: {"bind": cfg.docker_models_mount, "mode": "ro"}},
            "healthcheck": {
                "test": ["CMD-SHELL", f"curl -fsS http://127.0.0.1:{PORT}{spec.health_path} || exit 1"],
                "interval": 10_000_000_000,
                "timeout": 5_000_000_000,
                "retries": 3,
                "start_period": int(cfg.start_timeout_seconds * 1e9),
            },
            "ipc_mode": "host",  # vLLM's workers share tensors through /dev/shm
            "restart_policy": {"Name": "no"},
        }
        if spec.gpus:
            args["device_requests"] = [DeviceRequest(count=spec.gpus, capabilities=[["gpu"]])]
        if cfg.docker_network:
            args["network"] = cfg.docker_network
        else:
            args["ports"] = {f"{PORT}/tcp": ("127.0.0.1", None)}
        return args

    def start(self, spec: ServerSpec) -> ServerHandle:
        from docker.errors import NotFound

        with contextlib.suppress(NotFound):  # a container of that name left by a crash would block the name
            self.client.containers.get(spec.name).remove(force=True)
        container = self.client.containers.run(**self.container_args(spec))
        if self.settings.serving.docker_network:
            url = f"http://{spec.name}:{PORT}"
        else:
            container.reload()
            binding = container.attrs["NetworkSettings"]["Ports"][f"{PORT}/tcp"][0]
            url = f"http://{binding['HostIp']}:{binding['HostPort']}"
        return ServerHandle(spec.name, url, ref=container.id)

    def stop(self, handle: ServerHandle) -> None:
        from docker.errors import NotFound

        with contextlib.suppress(NotFound):
            container = self.client.containers.get(handle.ref or handle.name)
            container.stop(timeout=15)
            container.remove(force=True)

    def alive(self, handle: ServerHandle) -> bool:
        from docker.errors import NotFound

        try:
            container = self.client.containers.get(handle.ref or handle.name)
        except NotFound:
            return False
        return bool(container.status in ("created", "running"))

    def describe_failure(self, handle: ServerHandle) -> str:
        try:
            logs = self.client.containers.get(handle.ref or handle.name).logs(tail=200).decode(errors="replace")
            reason = last_error_line(logs) or " | ".join(logs.strip().splitlines()[-3:])
            return f"container {handle.name}: {reason}"
        except Exception as err:
            return f"container {handle.name}: {err}"

    def cleanup_orphans(self) -> int:
        leftovers = self.client.containers.list(all=True, filters={"label": f"{MANAGED_BY}={OWNER}"})
        for container in leftovers:
            container.remove(force=True)
        return len(leftovers)

    def close(self) -> None:
        self.client.close()
