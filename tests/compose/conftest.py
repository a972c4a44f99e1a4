"""The compose stack as users run it: images built here, `docker compose --profile cpu up`, the real engine.

Each module gets one project, started once and removed with `down -v` at its end, whatever happened.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest
from compose_stack import API_KEY, Compose, docker, free_port, model_server_containers
from docker_engine import COMPOSE, GRADER_IMAGE


@pytest.fixture(scope="module")
def compose(built_images: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Compose]:
    if not COMPOSE.exists():
        pytest.fail(f"docker compose v2 is missing at {COMPOSE}: run `make tools`")
    work = tmp_path_factory.mktemp("compose")
    sock_gid = os.stat("/var/run/docker.sock").st_gid
    env = {
        "REDIS_PASSWORD": secrets.token_hex(12),
        "MINIO_ROOT_USER": "sage",
        "MINIO_ROOT_PASSWORD": secrets.token_hex(12),
        "GRAFANA_ADMIN_PASSWORD": secrets.token_hex(12),
        "SAGE_GATEWAY_API_KEYS": "acme:" + hashlib.sha256(API_KEY.encode()).hexdigest(),
        "DOCKER_GID": str(sock_gid),
        "GATEWAY_PORT": str(free_port()),
        "GRAFANA_PORT": str(free_port()),
        "SAGE_SERVING_GPUS_PER_SERVER": "0",  # what docs/deploy.md tells a machine without a GPU to set
        "SAGE_GRADER_PYTHON_IMAGE": GRADER_IMAGE,  # python:3.11-slim cannot be pulled here: the offline base
    }
    env_file = work / ".env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    project = f"sageft{os.getpid()}"
    stack = Compose(project, env_file, work / "compose.log")
    for leftover in model_server_containers(all_=True):  # from an earlier run that was killed
        docker("rm", "-f", leftover, check=False)
    started = time.monotonic()
    try:
        stack.up()
        print(f"compose up (all healthy) in {time.monotonic() - started:.0f} s")
        yield stack
    finally:
        logs = stack("logs", "--no-color", "--tail", "200", check=False)
        (work / "services.log").write_text(logs.stdout + logs.stderr)
        stack("down", "-v", "--timeout", "30", check=False)
        for leftover in model_server_containers(all_=True):
            docker("rm", "-f", leftover, check=False)
