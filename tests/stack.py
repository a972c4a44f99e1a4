"""Real processes for integration tests: a private redis-server, the gateway under uvicorn, Celery workers.

Each process listens on 127.0.0.1 on a free port, logs to a file under the test's tmp dir, and is stopped by pid.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

BIN = Path(sys.executable).parent
# Fast, reliable learning on the tiny model: high LR, no dropout, enough epochs to memorise 8 records.
LEARN = {"learning_rate": 3e-3, "lora": {"r": 16, "lora_alpha": 32, "lora_dropout": 0.0}, "max_length": 128}


def qa_lines(records: list[dict[str, Any]]) -> bytes:
    import json

    return "".join(json.dumps(r) + "\n" for r in records).encode()


def auth_env(keys: dict[str, str]) -> dict[str, str]:
    """Gateway settings for auth on with these tenants' keys (stored as sha256 hashes, as in production)."""
    import hashlib

    table = ",".join(f"{t}:{hashlib.sha256(k.encode()).hexdigest()}" for t, k in keys.items())
    return {"SAGE_GATEWAY_AUTH_ENABLED": "true", "SAGE_GATEWAY_API_KEYS": table}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except Exception as err:  # not up yet
            last = err
        time.sleep(interval)
    raise TimeoutError(f"{what} not reached within {timeout:.0f} s (last: {last!r})")


class Proc:
    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self.log = self.log_path.open("ab")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def check_alive(self) -> bool:
        if not self.alive():
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")
        return True

    def tail(self, lines: int = 40) -> str:
        self.log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self, timeout: float = 20) -> None:
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()


def worker_ready(port: int) -> bool:
    """The worker's own readiness signal: ``/readyz`` on its metrics port answers 200 once it consumes tasks."""
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def start_redis(log_dir: Path, port: int | None = None, persist: bool = False) -> tuple[Proc, str]:
    """A redis-server of the test's own; ``persist``: with an append-only file, so a restart keeps every job."""
    port = port or free_port()
    cmd = [
        "redis-server",
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "yes" if persist else "no",
        "--appendfsync",
        "always",
        "--dir",
        str(log_dir),
    ]
    proc = Proc("redis", cmd, dict(os.environ), log_dir)
    import redis

    wait_for(lambda: proc.check_alive() and redis.Redis(port=port).ping(), 20, "redis-server ping")
    return proc, f"redis://127.0.0.1:{port}/0"


def start_moto(log_dir: Path, port: int | None = None) -> tuple[Proc, dict[str, str]]:
    """A real S3-protocol server (moto) of the test's own, for faults that must not reach other tests (SIGSTOP)."""
    port = port or free_port()
    proc = Proc("moto", [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], dict(os.environ), log_dir)

    def up() -> bool:
        proc.check_alive()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            return False

    wait_for(up, 30, "moto_server")
    return proc, {"endpoint": f"127.0.0.1:{port}", "access_key": "testing", "secret_key": "testing"}


def object_store(stack: Stack) -> Any:
    """The stack's object store (local or S3), as its services see it."""
    from sage_ft.settings import StorageSettings
    from sage_ft.storage import make_store

    env = stack.env
    if env["SAGE_STORAGE_BACKEND"] == "local":
        return make_store(StorageSettings(backend="local", local_root=Path(env["SAGE_STORAGE_LOCAL_ROOT"])))
    return make_store(
        StorageSettings(
            backend="s3",
            s3_endpoint=env["SAGE_STORAGE_S3_ENDPOINT"],
            s3_access_key=env["SAGE_STORAGE_S3_ACCESS_KEY"],
            s3_secret_key=env["SAGE_STORAGE_S3_SECRET_KEY"],
            s3_bucket=env["SAGE_STORAGE_S3_BUCKET"],
        )
    )


def s3_env(endpoint: dict[str, str], bucket: str) -> dict[str, str]:
    return {
        "SAGE_STORAGE_BACKEND": "s3",
        "SAGE_STORAGE_S3_ENDPOINT": endpoint["endpoint"],
        "SAGE_STORAGE_S3_ACCESS_KEY": endpoint["access_key"],
        "SAGE_STORAGE_S3_SECRET_KEY": endpoint["secret_key"],
        "SAGE_STORAGE_S3_BUCKET": bucket,
    }


def signal_tree(pid: int, sig: int) -> None:
    """``sig`` to a process and every descendant (a worker with its trainer): SIGSTOP freezes all of it at once."""
    for child, _ in children(pid):
        os.kill(child, sig)
    os.kill(pid, sig)


class Stack:
    """Gateway + workers sharing one Redis and one object store, configured through environment variables."""

    def __init__(self, base_dir: Path, env: dict[str, str], persist: bool = False) -> None:
        self.dir = base_dir
        self.logs = base_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.persist = persist
        self.redis, self.redis_url = start_redis(self.logs, persist=persist)
        self.port = free_port()
        self.env = {
            **os.environ,
            **env,
            "SAGE_REDIS_URL": self.redis_url,
            "SAGE_GATEWAY_PORT": str(self.port),
            "SAGE_TRAIN_OFFLINE": "1",
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
        self.serving_port = free_port()
        self.env["SAGE_SERVING_PORT"] = str(self.serving_port)
        self.env["SAGE_GATEWAY_SERVING_URL"] = f"http://127.0.0.1:{self.serving_port}"
        self.env["SAGE_WORKER_SERVING_URL"] = f"http://127.0.0.1:{self.serving_port}"
        self.env.setdefault("SAGE_SERVING_CACHE_DIR", str(base_dir / "serving-cache"))
        self.env.setdefault("SAGE_SERVING_LOG_DIR", str(self.logs / "servers"))
        self.gateway: Proc | None = None
        self.serving: Proc | None = None
        self.workers: list[Proc] = []
        self.url = f"http://127.0.0.1:{self.port}"
        self.serving_url = f"http://127.0.0.1:{self.serving_port}"

    def start_gateway(self, **extra: str) -> Proc:
        env = {**self.env, **extra}
        self.gateway = Proc("gateway", [str(BIN / "sage-ft-gateway")], env, self.logs)
        gw = self.gateway
        wait_for(
            lambda: gw.check_alive() and httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200,
            60,
            "gateway /healthz",
        )
        return self.gateway

    def start_serving(self, **extra: str) -> Proc:
        env = {**self.env, **extra}
        self.serving = Proc("serving", [str(BIN / "sage-ft-serving")], env, self.logs)
        sv, url = self.serving, f"http://127.0.0.1:{env['SAGE_SERVING_PORT']}"
        wait_for(
            lambda: sv.check_alive() and httpx.get(f"{url}/healthz", timeout=2).status_code == 200,
            60,
            "serving /healthz",
        )
        return sv

    def start_worker(self, name: str, **extra: str) -> Proc:
        # each worker serves metrics and /readyz on its own port (the stack's own for the first, if it set one)
        port = (
            extra.get("SAGE_WORKER_METRICS_PORT")
            or (self.env.get("SAGE_WORKER_METRICS_PORT") if not self.workers else None)
            or str(free_port())
        )
        # No spare trainer unless a test asks (SAGE_WORKER_SPARE_TRAINER=true): each spare imports the training stack,
        # and on a 2-core CI machine a spare after every job of every test would cost minutes.
        env = {
            "SAGE_WORKER_SPARE_TRAINER": "false",
            **self.env,
            "SAGE_WORKER_NAME": name,
            "SAGE_WORKER_WORK_DIR": str(self.dir / f"work-{name}"),
            **extra,
            "SAGE_WORKER_METRICS_PORT": port,
        }
        proc = Proc(f"worker-{name}", [str(BIN / "sage-ft-worker")], env, self.logs)
        wait_for(lambda: proc.check_alive() and worker_ready(int(port)), 90, f"worker {name} /readyz")
        self.workers.append(proc)
        return proc

    def restart_redis(self, down_s: float) -> None:
        """Stop Redis (SIGTERM: it syncs its append-only file), keep it down ``down_s``, start it on the same port."""
        port = int(self.redis_url.rsplit(":", 1)[1].split("/")[0])
        self.redis.stop()
        time.sleep(down_s)
        self.redis, _ = start_redis(self.logs, port=port, persist=self.persist)

    def stop(self) -> None:
        others = [p for p in (self.serving, self.gateway) if p is not None]
        for proc in [*self.workers, *others, self.redis]:
            proc.stop()


TERMINAL = ("succeeded", "failed", "cancelled")


def wait_job(
    client: Any,
    job_id: str,
    statuses: tuple[str, ...] = TERMINAL,
    timeout: float = 240,
    stack: Stack | None = None,
    interval: float = 0.3,
) -> Any:
    """Poll ``jobs.retrieve`` until the job reaches one of ``statuses``; fail fast if a stack process died."""

    def check() -> Any:
        if stack is not None:
            for proc in [*stack.workers, *([stack.gateway] if stack.gateway else [])]:
                if proc.name.startswith("worker") and not proc.alive() and proc.proc.returncode not in (-9, 0):
                    proc.check_alive()
        job = client.fine_tuning.jobs.retrieve(job_id)
        return job if job.status in statuses else None

    return wait_for(check, timeout, f"job {job_id} in {statuses}", interval=interval)


def all_events(client: Any, job_id: str) -> list[Any]:
    """Every event of a job, oldest first, read through the paginated list API."""
    return list(reversed(list(client.fine_tuning.jobs.list_events(job_id, limit=100))))


VLLM_PYTHON = Path(__file__).resolve().parents[1] / ".venv-vllm" / "bin" / "python"


def vllm_stack(make_stack: Callable[..., Stack], s3_endpoint: dict[str, str], bucket: str, **env: str) -> Stack:
    """Gateway, one worker and serving (vLLM's CPU build) on the S3-protocol store, in bucket ``bucket``."""
    st = make_stack(
        s3_env(s3_endpoint, bucket),
        SAGE_SERVING_VLLM_PYTHON=str(VLLM_PYTHON),
        SAGE_SERVING_START_TIMEOUT_SECONDS="400",
        **env,
    )
    st.start_gateway()
    st.start_worker("w1")
    st.start_serving()
    return st


def children(pid: int) -> list[tuple[int, str]]:
    """Every live descendant of ``pid`` with its command line."""
    out, frontier = [], {pid}
    while frontier:
        found = set()
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                stat = (proc / "stat").read_text().rsplit(")", 1)[1].split()
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if int(stat[1]) in frontier and stat[0] != "Z":
                found.add(int(proc.name))
                out.append((int(proc.name), cmd))
        frontier = found
    return out


def model_servers(serving_pid: int, engine: str) -> list[int]:
    marker = "vllm.entrypoints.openai.api_server" if engine == "vllm" else "transformers.cli.transformers serve"
    return [pid for pid, cmd in children(serving_pid) if marker in cmd]
