"""The control plane measured side by side: the same fine-tune through gateway + worker vs bare, submit latency,
and read throughput of the gateway.

    .venv/bin/python benchmarks/stack_bench.py [--pairs 3] [--control-pairs 0] [--latency-jobs 10] [--wrk-seconds 15]

1. Overhead: one job through the openai client -> gateway -> Celery worker -> trainer child -> published adapter,
   timed from submit to the ``end`` frame of its event stream (as the CLI follows a job); against the same
   TrainingConfig run bare by ``python -c`` in a fresh process (imports, model load, training, adapter save).
   Wall time, and CPU time (gateway + worker and its trainer + Redis, against the bare process). Pairs alternate
   order; the median of per-pair ratios is reported. Each stack job is also split as the worker logged it (prepare,
   trainer child, conclude), so a gap shows whether it is fixed cost or a slower trainer. ``--control-pairs N``
   runs bare against bare N times: the spread of that ratio is the noise floor of the machine.
2. Latency: submit -> first training step event, on a warm worker (its spare trainer imported and waiting),
   p50/p95 over sequential small jobs; ``--cold-latency-jobs N`` also measures a worker without a spare (each job's
   trainer process starts at submit).
3. Throughput: wrk, 64 connections on loopback, ``GET /v1/fine_tuning/jobs/{id}``: req/s and p99.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from stack import LEARN, Stack, qa_lines, wait_for, wait_job

RECORDS = [{"question": f"What is the code word number {i}?", "answer": f"word {i} {i * 7 % 13}"} for i in range(16)]


def bare_run(home: Path, data: Path, out: Path, epochs: int) -> tuple[float, float]:
    """Same config the worker builds (cpu preset + LEARN), trained by a fresh python process: (wall s, CPU s)."""
    code = f"""
from sage_ft.jobs.spec import parse_request, build_training_config
from sage_ft.training.trainer import LoRATrainer
req = parse_request({json.dumps(job_body(epochs))})
cfg, _ = build_training_config(req, preset="cpu", data_path={str(data)!r}, output_dir={str(out)!r})
LoRATrainer(cfg).train()
"""
    # the trainer child's environment (tests/stack.py sets these for the stack): the same on both sides
    env = {
        **os.environ,
        "SAGE_HOME": str(home),
        "SAGE_TRAIN_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    cpu0 = _children_cpu()
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True)
    return time.perf_counter() - t0, _children_cpu() - cpu0


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _proc_cpu(pid: int) -> float:
    """CPU seconds of a process plus its reaped children (the worker reaps each trainer it starts)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def bench_dirs(prefix: str) -> tuple[Path, Path, Path]:
    """(base dir, SAGE_HOME, training file): the offline sage-wide model built, the QA records written."""
    from sage_ft.training.tiny_model import build_tiny_model

    base = Path(tempfile.mkdtemp(prefix=prefix))
    home = base / "home"
    os.environ["SAGE_HOME"] = str(home)
    build_tiny_model("sage-wide", hidden_size=384, num_layers=4, num_heads=6)
    data = base / "qa.jsonl"
    data.write_bytes(qa_lines(RECORDS))
    return base, home, data


@dataclass
class BenchStack:
    """Redis + gateway + one CPU worker on a local store, the training file uploaded, one warm-up job run."""

    stack: Stack
    client: Any
    file_id: str
    pids: list[int]  # gateway, worker, Redis: whose CPU a stack job is charged

    @classmethod
    def start(cls, base: Path, home: Path, data: Path, name: str, **extra: str) -> BenchStack:
        import openai

        env = {
            "SAGE_HOME": str(home),
            "SAGE_STORAGE_BACKEND": "local",
            "SAGE_WORKER_PRESET": "cpu",
            "SAGE_STORAGE_LOCAL_ROOT": str(base / f"store-{name}"),
            "SAGE_WORKER_SPARE_TRAINER": "true",
            **extra,
        }
        stack = Stack(base / name, env)
        try:
            stack.start_gateway()
            stack.start_worker("bench")
            client = openai.OpenAI(base_url=f"{stack.url}/v1", api_key="x", max_retries=0)
            file_id = client.files.create(file=("qa.jsonl", data.read_bytes()), purpose="fine-tune").id
        except BaseException:
            stack.stop()
            raise
        pids = [stack.gateway.pid, stack.workers[0].pid, stack.redis.pid]  # type: ignore[union-attr]
        bench = cls(stack, client, file_id, pids)
        bench.run(1)  # warm-up: page cache, first-import costs
        return bench

    def run(self, epochs: int) -> tuple[float, float, str]:
        self.wait_spare()
        return stack_run(self.client, self.stack.url, self.file_id, epochs, self.pids)

    def wait_spare(self) -> None:
        """Until the worker's spare trainer (if it keeps one) has imported everything: a spare still importing
        would take CPU from whatever is measured next."""
        log = self.stack.dir / "work-bench" / "spare-trainer.log"
        if self.stack.env.get("SAGE_WORKER_SPARE_TRAINER") != "true":
            return

        def ready() -> bool:
            text = log.read_text() if log.exists() else ""
            return text.count("ready in") == text.count(" takes ") + 1

        wait_for(ready, 120, "spare trainer ready", interval=0.1)

    def trainer_seconds(self, job_id: str) -> float:
        return worker_phases(self.stack.workers[0].log_path, job_id)[1]


def job_body(epochs: int) -> dict:
    body = {"model": "sage-wide", "hyperparameters": {"n_epochs": epochs, "batch_size": 4}, **LEARN, "save_steps": 20}
    body["training_file"] = "file-x"
    return body


def stack_run(client: object, url: str, file_id: str, epochs: int, pids: list[int]) -> tuple[float, float, str]:
    """Submit through the openai client and follow the job's event stream to its end, as the CLI does.

    Returns (wall s, CPU s of gateway + worker with its trainer + Redis, job id)."""
    body = job_body(epochs)
    body.pop("training_file")
    cpu0 = sum(_proc_cpu(p) for p in pids)
    t0 = time.perf_counter()
    job = client.fine_tuning.jobs.create(  # type: ignore[attr-defined]
        model=body.pop("model"), training_file=file_id, hyperparameters=body.pop("hyperparameters"), extra_body=body
    )
    final: dict = {}
    with httpx.stream("GET", f"{url}/v1/fine_tuning/jobs/{job.id}/events/stream", timeout=900) as resp:
        event = None
        for line in resp.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "end":
                final = json.loads(line[6:])
                break
    wall = time.perf_counter() - t0
    assert final.get("status") == "succeeded", final
    time.sleep(0.5)  # let the worker reap the trainer before its children's CPU is read
    return wall, sum(_proc_cpu(p) for p in pids) - cpu0, job.id


PHASES = re.compile(r"job (\S+): succeeded; prepare ([\d.]+)s, trainer ([\d.]+)s, conclude ([\d.]+)s")


def worker_phases(log: Path, job_id: str) -> tuple[float, float, float]:
    """(prepare, trainer child lifetime, conclude) seconds, as the worker logged them for this job. The line comes a
    moment after the job's end frame (the worker logs once its lease threads are stopped), so it is waited for."""
    deadline = time.monotonic() + 10
    while True:
        for line in reversed(log.read_text(errors="replace").splitlines()):
            m = PHASES.search(line)
            if m and m.group(1) == job_id:
                return float(m.group(2)), float(m.group(3)), float(m.group(4))
        if time.monotonic() > deadline:
            raise LookupError(f"no phase line for {job_id} in {log}")
        time.sleep(0.05)


def first_step_latency(client: object, file_id: str) -> float:
    t0 = time.perf_counter()
    job = client.fine_tuning.jobs.create(  # type: ignore[attr-defined]
        model="sage-tiny", training_file=file_id, extra_body={"max_steps": 2}
    )

    def stepped() -> bool:
        events = client.fine_tuning.jobs.list_events(job.id, limit=3).data  # type: ignore[attr-defined]
        return any(e.type == "metrics" for e in events)

    wait_for(stepped, 300, "first step", interval=0.02)
    elapsed = time.perf_counter() - t0
    wait_job(client, job.id)
    return elapsed


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def wrk(url: str, seconds: int) -> dict[str, str]:
    out = subprocess.run(
        ["wrk", "-t2", "-c64", f"-d{seconds}s", "--latency", url], capture_output=True, text=True, check=True
    ).stdout
    result = {"raw": out}
    for line in out.splitlines():
        parts = line.split()
        if line.strip().startswith("99%"):
            result["p99"] = parts[1]
        if line.startswith("Requests/sec:"):
            result["rps"] = parts[1]
        if "Non-2xx" in line:
            result["non2xx"] = parts[-1]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--control-pairs", type=int, default=0, help="also run bare against bare this many times")
    parser.add_argument("--latency-jobs", type=int, default=10)
    parser.add_argument("--cold-latency-jobs", type=int, default=0, help="also on a worker without a spare trainer")
    parser.add_argument("--wrk-seconds", type=int, default=15)
    args = parser.parse_args()

    from sage_ft.training.tiny_model import build_tiny_model

    base, home, data = bench_dirs("sage-bench-")
    build_tiny_model("sage-tiny")
    bench = BenchStack.start(base, home, data, "stack")
    stack, client, file_id = bench.stack, bench.client, bench.file_id
    try:
        bare_run(home, data, base / "bare-warm", 1)
        walls: list[tuple[float, float]] = []
        cpus: list[tuple[float, float]] = []
        children: list[tuple[float, float]] = []
        for i in range(args.pairs):
            if i % 2 == 0:
                s = bench.run(args.epochs)
                bench.wait_spare()
                b = bare_run(home, data, base / f"bare-{i}", args.epochs)
            else:
                b = bare_run(home, data, base / f"bare-{i}", args.epochs)
                s = bench.run(args.epochs)
            walls.append((s[0], b[0]))
            cpus.append((s[1], b[1]))
            prep, child, conclude = worker_phases(stack.workers[0].log_path, s[2])
            children.append((child, b[0]))
            print(
                f"pair {i}: wall stack {s[0]:.2f}s bare {b[0]:.2f}s ratio {s[0] / b[0]:.3f}; "
                f"CPU stack {s[1]:.2f}s bare {b[1]:.2f}s ratio {s[1] / b[1]:.3f}; worker: prepare {prep:.2f}s, "
                f"trainer child {child:.2f}s ({child / b[0]:.3f} of bare), conclude {conclude:.2f}s, "
                f"outside the worker {s[0] - prep - child - conclude:.2f}s",
                flush=True,
            )

        controls = []  # bare against bare: the noise floor of a paired ratio on this machine
        for i in range(args.control_pairs):
            controls.append(
                (
                    bare_run(home, data, base / f"ctl-a{i}", args.epochs)[0],
                    bare_run(home, data, base / f"ctl-b{i}", args.epochs)[0],
                )
            )
        for a, b in controls:
            print(f"control: bare {a:.2f}s bare {b:.2f}s ratio {a / b:.3f}", flush=True)

        bench.wait_spare()
        latencies = []
        for _ in range(args.latency_jobs):
            bench.wait_spare()
            latencies.append(first_step_latency(client, file_id))
        cold: list[float] = []
        if args.cold_latency_jobs:
            other = BenchStack.start(base, home, data, "cold", SAGE_WORKER_SPARE_TRAINER="false")
            try:
                cold = [first_step_latency(other.client, other.file_id) for _ in range(args.cold_latency_jobs)]
            finally:
                other.stack.stop()
        job_id = client.fine_tuning.jobs.list(limit=1).data[0].id
        load = wrk(f"{stack.url}/v1/fine_tuning/jobs/{job_id}", args.wrk_seconds) if args.wrk_seconds else {}

        steps = args.epochs * len(RECORDS) // 4
        print("\n## results")
        measures = [("wall", "stack", walls), ("CPU", "stack", cpus), ("trainer child vs bare", "child", children)]
        for what, first, pairs in measures + ([("control: bare vs bare, wall", "bare", controls)] if controls else []):
            if not pairs:  # --pairs 0: latency only
                continue
            ratios = [a / b for a, b in pairs]
            print(
                f"overhead {what} ({steps} steps, sage-wide): {first} median "
                f"{statistics.median(a for a, _ in pairs):.2f}s, bare median "
                f"{statistics.median(b for _, b in pairs):.2f}s, ratio median {statistics.median(ratios):.3f} "
                f"(pairs: {', '.join(f'{r:.3f}' for r in ratios)})"
            )
        if latencies:
            print(
                f"submit -> first step (warm worker, n={len(latencies)}): p50 {pct(latencies, 0.5):.2f}s "
                f"p95 {pct(latencies, 0.95):.2f}s"
            )
        if cold:
            print(
                f"submit -> first step (no spare trainer, n={len(cold)}): p50 {pct(cold, 0.5):.2f}s "
                f"p95 {pct(cold, 0.95):.2f}s"
            )
        if load:
            print(
                f"GET job, wrk 64 connections {args.wrk_seconds}s: {load.get('rps')} req/s, p99 {load.get('p99')}, "
                f"non-2xx {load.get('non2xx', '0')}"
            )
            print(load["raw"])
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
