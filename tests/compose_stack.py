"""`docker compose` for the tests: one project with the test's env file, the offline override and the cpu profile.

Third-party images are offline stand-ins (deploy/images/docker-compose.offline.yml swaps images and nothing else).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from docker_engine import COMPOSE, ROOT

OFFLINE = ROOT / "deploy" / "images" / "docker-compose.offline.yml"
API_KEY = "sk-compose-test-key"
VLLM_LABEL = "sage-ft.managed-by=sage-ft-serving"
TAGS = {  # what deploy/images/build.py tags (the built_images fixture)
    "gateway": "ghcr.io/sage-ft/gateway:0.1.0",
    "serving": "ghcr.io/sage-ft/serving:0.1.0",
    "worker": "ghcr.io/sage-ft/worker:0.1.0-cpu",
    "cli": "ghcr.io/sage-ft/cli:0.1.0",
}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Compose:
    """`docker compose` for one project, with the test's env file, the offline override and the cpu profile."""

    def __init__(self, project: str, env_file: Path, log: Path) -> None:
        self.project = project
        self.env_file = env_file
        self.log = log
        self.env = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.env['GATEWAY_PORT']}"

    def __call__(self, *args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        files = ["-f", str(ROOT / "docker-compose.yml"), "-f", str(OFFLINE)]
        cmd = [str(COMPOSE), "-p", self.project, "--env-file", str(self.env_file), *files, "--profile", "cpu", *args]
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=timeout)
        with self.log.open("a") as f:
            f.write(f"$ docker compose {' '.join(args)}  -> {out.returncode}\n{out.stdout}{out.stderr}\n")
        if check and out.returncode != 0:
            raise AssertionError(f"docker compose {' '.join(args)} failed ({out.returncode}):\n{out.stderr[-3000:]}")
        return out

    def exec(self, service: str, *cmd: str, timeout: float = 300) -> str:
        return self("exec", "-T", service, *cmd, timeout=timeout).stdout

    def python(self, service: str, code: str) -> Any:
        """Run ``code`` in ``service``'s container; it prints one JSON value, returned here."""
        return json.loads(self.exec(service, "python", "-c", code).strip().splitlines()[-1])

    def container_id(self, service: str) -> str:
        return self("ps", "-q", service).stdout.strip()

    def up(self) -> None:
        self("up", "-d", "--wait", "--wait-timeout", "400", timeout=600)


def docker(*args: str, check: bool = True) -> str:
    out = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=300)
    if check and out.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {out.stderr.strip()}")
    return out.stdout


def model_server_containers(all_: bool = False) -> list[str]:
    return docker("ps", *(["-a"] if all_ else []), "-q", "--filter", f"label={VLLM_LABEL}").split()


def project_leftovers(project: str) -> dict[str, list[str]]:
    label = f"label=com.docker.compose.project={project}"
    return {
        "containers": docker("ps", "-a", "-q", "--filter", label).split(),
        "networks": docker("network", "ls", "-q", "--filter", label).split(),
        "volumes": docker("volume", "ls", "-q", "--filter", label).split(),
        "model servers": model_server_containers(all_=True),
    }
