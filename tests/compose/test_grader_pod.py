"""Helm's graders deployment as a pod runs it: the serving image's ``sage-ft-serving graders`` in a container with the
chart's security context (read-only root, uid 10001, every capability dropped, no-new-privileges, the runtime's
default seccomp profile), and with what a pod has that a grader must not reach: a network, a secret in the server's
environment, a mounted service-account token, the server's own port. Namespaces cannot be made there, so each call
runs ``confined`` (Landlock and seccomp); the gateway's own client (``ServingSandbox``) sends the calls."""

from __future__ import annotations

import ast
import contextlib
import socket
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from compose_stack import TAGS, docker

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

SECRET = "hunter2-in-the-pod"
TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"


def _ready(url: str, deadline: float) -> str:
    while True:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=30) as answer:
                return str(answer.read().decode())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_python_graders_in_a_locked_down_pod_run_confined(built_images: Any, tmp_path: Path) -> None:
    from sage_ft.graders import python_sandbox
    from sage_ft.settings import GraderSettings

    token = tmp_path / "token"
    token.write_text(SECRET)
    token.chmod(0o644)
    listener = socket.create_server(("0.0.0.0", 0))  # this host, which the pod's network reaches
    port = listener.getsockname()[1]
    accepted: list[Any] = []

    def accept() -> None:
        with contextlib.suppress(OSError):  # closed at the end, when (as it should) nothing connected
            accepted.append(listener.accept())

    threading.Thread(target=accept, daemon=True).start()
    name = f"sage-grader-pod-{uuid.uuid4().hex[:8]}"
    docker(
        *("run", "-d", "--name", name, "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL"),
        *("--security-opt", "no-new-privileges", "--user", "10001:10001", "-p", "127.0.0.1::8090"),
        *("-e", f"SAGE_STORAGE_S3_SECRET_KEY={SECRET}", "-e", "SAGE_SERVING_HOST=0.0.0.0"),
        *("-e", "SAGE_SERVING_PORT=8090", "-e", "SAGE_SERVING_GRADER_SANDBOX=process"),
        *("-v", f"{token}:{TOKEN}:ro", TAGS["serving"], "graders"),
    )
    try:
        url = "http://" + docker("port", name, "8090/tcp").split()[0]
        assert _ready(url, time.monotonic() + 90) == "ok"
        sandbox = python_sandbox(GraderSettings(python_sandbox="serving", python_sandbox_url=url))
        scored = sandbox.run(
            "def grade(s, i):\n    return float(s['output_text'] == i['a'])\n", {"output_text": "x"}, {"a": "x"}
        )
        assert scored.score == 1.0, scored

        # every way out a pod offers, tried by one grader; each must end in an error
        tries = {
            "env": "dict(os.environ)",
            "token": f"open({TOKEN!r}).read()",
            "server_environ": "open(f'/proc/{os.getppid()}/environ').read()",
            "init_environ": "open('/proc/1/environ').read()",
            "host": f"socket.create_connection(('172.17.0.1', {port}), timeout=3)",
            "own_server": "socket.create_connection(('127.0.0.1', 8090), timeout=3)",
            "fork": "os.fork()",
            "exec": "os.execv('/bin/sh', ['sh', '-c', 'cat /proc/1/environ'])",
            "signal_server": "os.kill(os.getppid(), 9)",
        }
        body = "".join(
            f"    try:\n        seen[{key!r}] = repr({expr})[:200]\n"
            "    except OSError as err:\n"
            f"        seen[{key!r}] = type(err).__name__\n"
            for key, expr in tries.items()
        )
        source = (
            f"import os, socket\ndef grade(sample, item):\n    seen = {{}}\n{body}    raise RuntimeError(repr(seen))\n"
        )
        escaped = sandbox.run(source, {"output_text": "x"}, {})
        assert escaped.error == "runtime" and str(escaped.details).startswith("RuntimeError: {"), escaped
        seen = ast.literal_eval(str(escaped.details).removeprefix("RuntimeError: "))
        assert SECRET not in str(escaped.details) and "SAGE_" not in seen["env"], seen
        for key in tries:
            if key != "env":
                assert seen[key] in ("PermissionError", "BlockingIOError"), (key, seen)
        assert not accepted
        # the server lived through it and answers the next call
        assert sandbox.run("def grade(s, i):\n    return 0.5\n", {}, {}).score == 0.5
    finally:
        listener.close()
        logs = docker("logs", name, check=False)
        docker("rm", "-f", name, check=False)
    assert "Traceback" not in logs, logs[-2000:]
