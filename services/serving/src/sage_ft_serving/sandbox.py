"""Python graders, run by serving for the services that cannot sandbox them themselves (``POST /v1/graders/python``).

Serving already starts containers for its model servers, so under its docker launcher each grader call is a
container of its own, created through the Docker Engine API and removed after:

- no network at all (``network_mode: none``): not the gateway's port, not the internet, not even another
  container;
- a read-only root and only the image's files, with ``/work`` (its working directory) and ``/tmp`` as size-capped
  tmpfs: no file of serving, a worker or the host is there; no environment but the image's own;
- an unprivileged user (nobody), every capability dropped, ``no-new-privileges`` and Docker's default seccomp
  profile (the syscalls a container never needs: ``mount``, ``ptrace`` of others, ``keyctl``, kernel modules...);
- cgroup limits: memory (the kernel's OOM killer ends the call, swap included), processes (a fork bomb stops at
  the limit), one CPU; rlimits: heap and private mappings (a large allocation is a MemoryError at once), CPU
  seconds, file size, open files;
- inside, the grader confines itself further where Docker's seccomp profile lets it: Landlock and a seccomp filter
  of its own (``sage_ft.graders.confine``: no sockets, no new processes, no exec);
- a wall-clock limit, after which the container is killed.

The code and its inputs go in on stdin, the score comes back on stdout: the same harness as the local bubblewrap
sandbox (``sage_ft.graders.sandbox``), and the same reading of what happened. Under the process launcher serving
uses that local sandbox.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Any

from sage_ft.graders.sandbox import HARNESS, PythonOutcome, PythonSandbox, Sandbox, outcome, payload
from sage_ft.settings import GraderSettings
from sage_ft_serving.settings import Settings

MANAGED_BY = "sage-ft.managed-by"
OWNER = "sage-ft-grader"
API_VERSION = "1.41"  # as the docker launcher: engines from Docker 20.10 on
NOBODY = "65534:65534"
OOM_KILLED = 137  # what a container killed by the OOM killer exits with (128 + SIGKILL)


class DockerSandbox(Sandbox):
    """Each call a locked-down container of ``settings.python_image`` (see the module's docstring)."""

    def __init__(self, settings: GraderSettings, docker_url: str, client: Any = None) -> None:
        import docker

        self.settings = settings
        self.client = client or docker.DockerClient(base_url=docker_url, version=API_VERSION, timeout=60)
        self._pulling = threading.Lock()

    def container_args(self) -> dict[str, Any]:
        """Everything ``containers.create`` is given besides the image and command."""
        from docker.types import LogConfig, Ulimit

        s = self.settings
        cpu = int(s.python_cpu_seconds)
        tmpfs = f"size={s.python_disk_bytes},mode=1777,noexec,nosuid,nodev"
        return {
            "stdin_open": True,  # attached before the start (the SDK sets StdinOnce): our close is its end of input
            "network_mode": "none",
            "read_only": True,
            "tmpfs": {"/work": tmpfs, "/tmp": tmpfs},
            "working_dir": "/work",
            "user": NOBODY,
            "environment": {"HOME": "/work"},
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
            "mem_limit": s.python_memory_bytes,
            "memswap_limit": s.python_memory_bytes,  # no swap beyond the memory limit
            "pids_limit": s.python_processes + 1,  # the init beside the grader's own processes
            "nano_cpus": 1_000_000_000,
            "ulimits": [
                Ulimit(name="cpu", soft=cpu, hard=cpu + 1),
                # the heap and private mappings: an allocation past the limit is a MemoryError at once, where the
                # cgroup's OOM kill alone can come only after seconds of reclaim (CPU time the grader is charged)
                Ulimit(name="data", soft=s.python_memory_bytes, hard=s.python_memory_bytes),
                Ulimit(name="fsize", soft=s.python_output_bytes, hard=s.python_output_bytes),
                Ulimit(name="nofile", soft=64, hard=64),
                Ulimit(name="core", soft=0, hard=0),
            ],
            "init": True,  # a real PID 1 reaps the grader's children and reports its signals
            "log_config": LogConfig(type="json-file", config={"max-size": str(s.python_output_bytes), "max-file": "1"}),
            "labels": {MANAGED_BY: OWNER},
        }

    def _pull(self) -> None:
        """The image, once, when the first call finds it missing (several calls at once wait for one pull)."""
        import docker.errors

        with self._pulling:
            try:
                self.client.images.get(self.settings.python_image)
            except docker.errors.ImageNotFound:
                with contextlib.suppress(docker.errors.APIError):  # offline: the create after it says so
                    self.client.images.pull(self.settings.python_image)

    def run(self, source: str, sample: dict[str, Any], item: Any, image_tag: str | None = None) -> PythonOutcome:
        """One call; every ``image_tag`` allowed runs in ``python_image`` (the tag is checked by the caller)."""
        import docker.errors
        import requests

        s = self.settings
        data = payload(source, sample, item, writable=["/tmp"], required=False)  # where Docker lets it add to its own
        started = time.monotonic()
        # the grader's own prints (the harness sends them to stderr) go to a file, where the file-size rlimit stops
        # one that prints without end, as in the local sandbox; the answer is the last line of stdout
        command = ["sh", "-c", 'exec python3 -I -S -c "$0" 2>/tmp/grader.log', HARNESS]
        try:
            try:
                container = self.client.containers.create(s.python_image, command, **self.container_args())
            except docker.errors.ImageNotFound:
                self._pull()
                container = self.client.containers.create(s.python_image, command, **self.container_args())
        except docker.errors.ImageNotFound:
            why = f"the sandbox image {s.python_image} is not on the engine and could not be pulled"
            return PythonOutcome(None, 0.0, "sandbox_unavailable", why + " (SAGE_GRADER_PYTHON_IMAGE)")
        except (docker.errors.DockerException, requests.RequestException) as err:
            return PythonOutcome(None, 0.0, "sandbox_unavailable", f"the container engine refused: {err}")
        try:
            _start_with_stdin(container, data)
            try:
                code = int(container.wait(timeout=s.python_wall_seconds)["StatusCode"])
                timed_out = False
            except (requests.exceptions.ConnectionError, requests.exceptions.ReadTimeout):
                timed_out, code = True, -9
                with contextlib.suppress(docker.errors.APIError):
                    container.kill()
            seconds = time.monotonic() - started
            container.reload()
            oom = bool(container.attrs["State"].get("OOMKilled"))
            text = container.logs(stdout=True, stderr=False)[-s.python_output_bytes :].decode("utf-8", "replace")
            stderr = container.logs(stdout=False, stderr=True)[-4000:].decode("utf-8", "replace")
        finally:
            with contextlib.suppress(docker.errors.APIError, requests.RequestException):
                container.remove(force=True)
        if oom and not timed_out and code == OOM_KILLED:
            return PythonOutcome(None, seconds, "resource_limit", f"memory limit ({s.python_memory_bytes >> 20} MiB)")
        return outcome(s, code, timed_out, text, stderr, seconds)


def _start_with_stdin(container: Any, payload: bytes) -> None:
    """Attach to the created container's stdin, start it and write ``payload``; closing our side is the process's
    end of input."""
    sock = container.attach_socket(params={"stdin": 1, "stream": 1})
    raw = getattr(sock, "_sock", sock)
    container.start()
    raw.sendall(payload)
    with contextlib.suppress(OSError):
        raw.shutdown(socket.SHUT_WR)
    sock.close()


def grader_sandbox(settings: Settings) -> Sandbox:
    """The docker sandbox under the docker launcher, else the local one (bubblewrap, or Landlock and seccomp inside a
    container or pod; ``grader_sandbox`` overrides)."""
    kind = settings.serving.grader_sandbox
    if kind == "auto":
        kind = "docker" if settings.serving.launcher == "docker" else "process"
    if kind == "docker":
        return DockerSandbox(settings.graders, settings.serving.docker_url)
    return PythonSandbox(settings.graders)


class GraderHost:
    """The sandbox a serving process runs python graders in, made on first use (the engine need not answer at start);
    the whole service and the graders-only one (``create_grader_app``) each hold one."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._sandbox: Sandbox | None = None
        self._making = threading.Lock()

    @property
    def sandbox(self) -> Sandbox:
        with self._making:
            if self._sandbox is None:
                self._sandbox = grader_sandbox(self.settings)
            return self._sandbox

    def unavailable(self) -> str | None:
        """Why python graders cannot run here (the graders-only service's readiness), or None."""
        sandbox = self.sandbox
        return sandbox.available() if isinstance(sandbox, PythonSandbox) else None
