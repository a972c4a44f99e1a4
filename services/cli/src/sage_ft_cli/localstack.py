"""The embedded local stack: gateway, one worker, serving and (if needed) a private Redis, as background processes.

``up`` writes a pid file per process under ``~/.sage/run`` and logs next to them; ``down`` stops exactly those
processes (serving first, so its model servers go with it) and nothing else: a pid is only signalled while its
command line still is the one ``up`` started. Artifacts go to the local-directory store under
``~/.sage/finetune_output``.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import psutil

from sage_ft_cli.client import CLIError
from sage_ft_cli.settings import Settings, child_environment

ORDER = ("redis", "gateway", "worker", "serving")  # start order; stop runs in reverse


@dataclass
class Component:
    name: str
    pid: int
    command: str  # the executable's name: a pid is only signalled while its command line still contains it
    log: Path
    health: str | None  # URL answering 200 when healthy


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _redis_answers(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1).ping())
    except (redis.RedisError, ValueError):
        return False


def _cmdline(pid: int) -> str:
    """The process's command line, through psutil (Linux, macOS, Windows); empty if it is gone or not ours."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return ""
        return " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return ""


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
        psutil.Process(pid).send_signal(sig)


class LocalStack:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.run = settings.run_dir
        self.bin = Path(sys.executable).parent

    # -- state -----------------------------------------------------------------------------------------------

    def _state_file(self) -> Path:
        return self.run / "stack.json"

    def components(self) -> list[Component]:
        path = self._state_file()
        if not path.exists():
            return []
        raw = json.loads(path.read_text())
        return [Component(c["name"], c["pid"], c["command"], Path(c["log"]), c.get("health")) for c in raw]

    def _save(self, comps: list[Component]) -> None:
        self.run.mkdir(parents=True, exist_ok=True)
        data = [
            {"name": c.name, "pid": c.pid, "command": c.command, "log": str(c.log), "health": c.health} for c in comps
        ]
        tmp = self._state_file().with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        tmp.replace(self._state_file())
        for comp in comps:
            (self.run / f"{comp.name}.pid").write_text(str(comp.pid))

    @staticmethod
    def running(comp: Component) -> bool:
        return comp.command in _cmdline(comp.pid) and bool(comp.command)

    def status(self) -> list[dict[str, Any]]:
        rows = []
        for comp in self.components():
            alive = self.running(comp)
            healthy = None
            if alive and comp.health:
                try:
                    healthy = httpx.get(comp.health, timeout=2).status_code == 200
                except httpx.HTTPError:
                    healthy = False
            state = "stopped" if not alive else ("healthy" if healthy in (True, None) else "unhealthy")
            rows.append({"component": comp.name, "pid": comp.pid, "state": state, "log": str(comp.log)})
        return rows

    # -- up --------------------------------------------------------------------------------------------------

    def up(self) -> list[Component]:
        current = [c for c in self.components() if self.running(c)]
        if {c.name for c in current} >= {"gateway", "worker", "serving"}:
            return current
        if current:
            self.down()
        gateway = urlparse(self.settings.cli.gateway_url)
        if gateway.hostname not in ("127.0.0.1", "localhost"):
            raise CLIError(f"`sage-ft up` starts a local stack; the gateway is set to {self.settings.cli.gateway_url}")
        logs = self.run / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        comps: list[Component] = []
        try:
            redis_url = self._redis(comps, logs)
            serving_port = _free_port()
            home = self.settings.paths.resolved_home()
            env = child_environment(
                SAGE_REDIS_URL=redis_url,
                SAGE_GATEWAY_PORT=str(gateway.port or 8080),
                SAGE_GATEWAY_HOST="127.0.0.1",
                SAGE_SERVING_PORT=str(serving_port),
                SAGE_GATEWAY_SERVING_URL=f"http://127.0.0.1:{serving_port}",
                SAGE_HOME=str(home),
                SAGE_STORAGE_BACKEND="local",
                SAGE_STORAGE_LOCAL_ROOT=str(self.settings.paths.resolved_output_root()),
                TOKENIZERS_PARALLELISM="false",
            )
            url = f"http://127.0.0.1:{gateway.port or 8080}"
            sealed = {**env, "SAGE_SECRETS_KEY": _secrets_key(home)}  # gateway and worker only, never serving
            # one user's machine: webhooks may go to a receiver on it, over plain http (their own settings win)
            local_hooks = {"SAGE_WEBHOOK_ALLOW_HTTP": "true", "SAGE_WEBHOOK_ALLOW_PRIVATE_ADDRESSES": "true"}
            gateway_env = {**local_hooks, **sealed}
            comps.append(self._start("gateway", "sage-ft-gateway", gateway_env, logs, f"{url}/healthz"))
            worker_port = _free_port()  # its /readyz is the readiness signal
            worker_env = {
                **sealed,
                "SAGE_WORKER_NAME": "local-worker",
                "SAGE_WORKER_METRICS_PORT": str(worker_port),
                "SAGE_WORKER_SERVING_URL": f"http://127.0.0.1:{serving_port}",
            }
            comps.append(
                self._start("worker", "sage-ft-worker", worker_env, logs, f"http://127.0.0.1:{worker_port}/readyz")
            )
            comps.append(
                self._start("serving", "sage-ft-serving", env, logs, f"http://127.0.0.1:{serving_port}/healthz")
            )
            self._save(comps)
            self._wait(comps)
        except BaseException:
            self._stop(comps)
            self._save([])
            raise
        return comps

    def _redis(self, comps: list[Component], logs: Path) -> str:
        configured = self.settings.providers.redis_url
        if configured and _redis_answers(configured):
            return configured
        server = shutil.which("redis-server")
        if server is None:
            raise CLIError(
                "no Redis answers and `redis-server` is not installed: install it "
                "(`apt-get install redis-server` or `brew install redis`) or set REDIS_URL"
            )
        port = _free_port()
        data = self.run / "redis"
        data.mkdir(parents=True, exist_ok=True)
        cmd = [
            server,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(data),
            "--appendonly",
            "yes",
            "--save",
            "",
        ]
        comps.append(self._spawn("redis", cmd, child_environment(), logs, None))
        url = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + 15
        while not _redis_answers(url):
            if time.monotonic() > deadline:
                raise CLIError(f"the private redis-server did not start; see {logs / 'redis.log'}")
            time.sleep(0.1)
        return url

    def _start(self, name: str, script: str, env: dict[str, str], logs: Path, health: str | None) -> Component:
        exe = self.bin / script
        if not exe.exists():
            raise CLIError(f"{script} is not installed next to sage-ft ({self.bin}); run `make install`")
        return self._spawn(name, [str(exe)], env, logs, health)

    @staticmethod
    def _spawn(name: str, cmd: list[str], env: dict[str, str], logs: Path, health: str | None) -> Component:
        log = logs / f"{name}.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        # what its command line must still contain for the pid to be ours (redis-server rewrites its own title)
        return Component(name, proc.pid, Path(cmd[0]).name, log, health)

    def _wait(self, comps: list[Component], timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        for comp in comps:
            while True:
                if not self.running(comp):
                    tail = " | ".join(comp.log.read_text(errors="replace").strip().splitlines()[-3:])
                    raise CLIError(f"{comp.name} exited while starting: {tail} (log: {comp.log})")
                if comp.health is None:
                    break
                else:
                    try:
                        if httpx.get(comp.health, timeout=2).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                if time.monotonic() > deadline:
                    raise CLIError(f"{comp.name} did not become healthy within {timeout:.0f} s (log: {comp.log})")
                time.sleep(0.25)

    # -- down ------------------------------------------------------------------------------------------------

    def down(self) -> list[str]:
        comps = self.components()
        stopped = self._stop(comps)
        self._save([])
        for name in ORDER:
            (self.run / f"{name}.pid").unlink(missing_ok=True)
        return stopped

    def _stop(self, comps: list[Component]) -> list[str]:
        stopped = []
        for comp in sorted(comps, key=lambda c: -ORDER.index(c.name)):
            if not self.running(comp):
                continue
            # the worker stops cold: its job is re-delivered and resumes from its last checkpoint after `up`
            _signal(comp.pid, signal.SIGQUIT if comp.name == "worker" else signal.SIGTERM)
            deadline = time.monotonic() + 30
            while self.running(comp) and time.monotonic() < deadline:
                time.sleep(0.1)
            if self.running(comp):
                _signal(comp.pid, signal.SIGKILL)
            stopped.append(comp.name)
        return stopped


def _secrets_key(home: Path) -> str:
    """The local stack's key for secrets in job requests: made once, kept in ``<home>/secrets.key`` (mode 0600)."""
    path = home / "secrets.key"
    if not path.is_file():
        from cryptography.fernet import Fernet

        home.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.touch(mode=0o600)
        tmp.write_bytes(Fernet.generate_key())
        tmp.replace(path)
    return path.read_text().strip()
