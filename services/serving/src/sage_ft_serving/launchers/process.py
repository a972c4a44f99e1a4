"""Model servers as local child processes, bound to loopback, logging to one file each.

Each server dies with serving (``PR_SET_PDEATHSIG``) and runs in its own process group, so stopping it stops vLLM's
engine-core subprocess too. The port is chosen free just before start.
"""

from __future__ import annotations

import socket
import subprocess

from sage_ft.proc import failure_reason, spawn, stop
from sage_ft_serving.launchers.base import Launcher, ServerHandle, ServerSpec
from sage_ft_serving.settings import Settings, server_environment


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class ProcessLauncher(Launcher):
    kind = "process"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.host = settings.serving.bind_host
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, spec: ServerSpec) -> ServerHandle:
        port = free_port(self.host)
        log_path = self.settings.log_dir / f"{spec.name}.log"
        python = str(spec.python) if spec.python else "python3"
        proc = spawn(
            [python, "-m", spec.module, *spec.argv(self.host, port)], log_path, env=server_environment(spec.env)
        )
        self.procs[spec.name] = proc
        return ServerHandle(spec.name, f"http://{self.host}:{port}", pid=proc.pid, log_path=log_path, ref=proc)

    def stop(self, handle: ServerHandle) -> None:
        proc = self.procs.pop(handle.name, None)
        if proc is not None:
            stop(proc, grace_s=15.0)

    def alive(self, handle: ServerHandle) -> bool:
        proc = self.procs.get(handle.name)
        return proc is not None and proc.poll() is None

    def describe_failure(self, handle: ServerHandle) -> str:
        proc = self.procs.get(handle.name)
        code = proc.poll() if proc else None
        where = f"exited with {code}: " if code is not None else ""
        reason = failure_reason(handle.log_path) if handle.log_path else "(no log)"
        return f"{where}{reason} (log: {handle.log_path})"

    def close(self) -> None:
        for name in list(self.procs):
            self.stop(ServerHandle(name, ""))
