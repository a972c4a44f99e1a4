"""Soak: many tiny jobs on two workers while a chaos loop kills a random worker or trainer every few seconds.

    .venv/bin/python benchmarks/soak.py --jobs 200 [--chaos-every 5] [--json docs/soak.json]

A real stack (private redis-server, the gateway, two Celery workers with their default spare trainers, the local
store, the offline tiny model). Every job goes through the openai client. While they run, a chaos loop waits, every
``--chaos-every`` seconds, for a worker to be training and SIGKILLs, in turn, either only its trainer (as the kernel's
out-of-memory killer would) or the worker itself (its trainer dies with it; the worker is restarted at once).
``--max-kills`` ends the chaos after that many. Jobs may take
up to 20 attempts (``SAGE_MAX_ATTEMPTS``), the setting's maximum.

Checked, and the exit status says whether it held:
- every job ends ``succeeded``;
- the store holds exactly one manifest per job, each naming its job, and no other;
- Redis does not grow with finished work: once the jobs are past ``--retention`` seconds
  (``SAGE_FINISHED_RETENTION_SECONDS``) and a killed worker's unacknowledged tasks past the broker's visibility timeout
  (redelivered, then skipped: the job is done), Redis holds the keys it held before the first job, plus the few that
  last by design (the uploaded file, counters, the last 20 runs' speeds).

Reported: jobs per minute (submit of the first to the end of the last), attempts per job, the kills that hit, and
Redis key counts (before, the peak while running, after the retention).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from stack import Proc, Stack, children, qa_lines, wait_for

MAX_ATTEMPTS = 20
VISIBILITY_S = 30.0
RECORDS = [{"question": f"What is the code word {i}?", "answer": f"word {i}"} for i in range(8)]
LASTING = ("sage:file:", "sage:stats:", "sage:runs:", "sage:t:local:bases", "sage:t:local:files")  # by design


def trainer_of(worker: Proc) -> int | None:
    """The worker's trainer that is training a job now (its working directory is the job's), not an idle spare."""
    for pid, cmd in children(worker.pid):
        if "trainer_main" not in cmd:
            continue
        try:
            if Path(os.readlink(f"/proc/{pid}/cwd")).name.startswith("ftjob-"):
                return pid
        except OSError:
            continue
    return None


class Chaos(threading.Thread):
    """Every ``every_s`` seconds, waits (up to ``every_s``) for a worker to be training, then kills it or its trainer.
    Waiting for training, not sampling once, makes the kills land however fast the jobs train; the two kinds
    alternate, so even a short run hits both."""

    KINDS = ("trainer", "worker")

    def __init__(self, stack: Stack, every_s: float, seed: int, max_kills: int | None = None) -> None:
        super().__init__(daemon=True)
        self.stack, self.every_s, self.max_kills = stack, every_s, max_kills
        self.rng = random.Random(seed)
        self.done = threading.Event()
        self.kills = {"worker": 0, "trainer": 0, "missed": 0}
        self.errors: list[str] = []

    def run(self) -> None:
        while not self.done.wait(self.every_s):
            hits = self.kills["worker"] + self.kills["trainer"]
            if self.max_kills is not None and hits >= self.max_kills:
                return
            busy = self._training(within=self.every_s)
            if not busy:
                self.kills["missed"] += 1  # no worker trained during a whole window
                continue
            index, trainer = self.rng.choice(busy)
            worker = self.stack.workers[index]
            try:
                if self.KINDS[hits % 2] == "worker":
                    os.kill(worker.pid, signal.SIGKILL)  # its trainer follows (PR_SET_PDEATHSIG)
                    worker.proc.wait(timeout=30)
                    worker.log.close()
                    self.stack.workers.pop(index)
                    self.stack.start_worker(worker.name.removeprefix("worker-"), SAGE_WORKER_SPARE_TRAINER="true")
                    self.kills["worker"] += 1
                else:
                    os.kill(trainer, signal.SIGKILL)  # the worker sees it die and re-queues the job
                    self.kills["trainer"] += 1
            except Exception as err:  # reported, and the run fails: chaos must not die silently
                self.errors.append(f"{type(err).__name__}: {err}")

    def _training(self, within: float) -> list[tuple[int, int]]:
        """(worker index, trainer pid) of each worker training a job, as soon as one is (empty if none was)."""
        deadline = time.monotonic() + within
        while not self.done.is_set():
            busy = [(i, pid) for i, w in enumerate(self.stack.workers) if (pid := trainer_of(w)) is not None]
            if busy or time.monotonic() > deadline:
                return busy
            time.sleep(0.05)
        return []


def redis_keys(url: str) -> list[str]:
    import redis

    return sorted(k.decode() for k in redis.Redis.from_url(url).scan_iter(count=1000))


def grown_since(baseline: list[str], keys: list[str]) -> list[str]:
    """Keys that were not there before the jobs and are not meant to last."""
    return [k for k in keys if k not in baseline and not k.startswith(LASTING)]


def census(keys: list[str]) -> dict[str, int]:
    """Keys by kind: ids replaced by ``*``."""
    import re

    out: dict[str, int] = {}
    for key in keys:
        kind = re.sub(r"(ftjob|file|evalrun|eval)-[0-9a-f]+", r"\1-*", key)
        out[kind] = out.get(kind, 0) + 1
    return dict(sorted(out.items()))


def run(
    base: Path, jobs: int, chaos_every: float, retention: float, seed: int, max_kills: int | None = None
) -> dict[str, Any]:
    import openai

    from sage_ft.settings import StorageSettings
    from sage_ft.storage import list_models, make_store
    from sage_ft.training.tiny_model import build_tiny_model

    home = base / "home"
    build_tiny_model("sage-tiny", models_root=home / "models")
    env = {
        "SAGE_HOME": str(home),
        "SAGE_STORAGE_BACKEND": "local",
        "SAGE_STORAGE_LOCAL_ROOT": str(base / "store"),
        "SAGE_WORKER_PRESET": "cpu",
        "SAGE_LEASE_SECONDS": "6",
        "SAGE_HEARTBEAT_SECONDS": "1",
        "SAGE_GATEWAY_MAINTENANCE_SECONDS": "1",
        "SAGE_RECONCILE_AFTER_SECONDS": "5",
        "SAGE_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
        "SAGE_FINISHED_RETENTION_SECONDS": str(retention),
        "SAGE_VISIBILITY_TIMEOUT": str(VISIBILITY_S),  # a killed worker's unacked task is redelivered (then skipped)
    }
    stack = Stack(base / "stack", env)
    chaos = Chaos(stack, chaos_every, seed, max_kills)
    try:
        stack.start_gateway()
        for name in ("w1", "w2"):
            stack.start_worker(name, SAGE_WORKER_SPARE_TRAINER="true")
        client = openai.OpenAI(base_url=f"{stack.url}/v1", api_key="x", max_retries=3)
        file_id = client.files.create(file=("soak.jsonl", qa_lines(RECORDS)), purpose="fine-tune").id
        baseline = redis_keys(stack.redis_url)
        started = time.monotonic()
        ids = [
            client.fine_tuning.jobs.create(
                model="sage-tiny",
                training_file=file_id,
                hyperparameters={"n_epochs": 2, "batch_size": 2},
                extra_body={"save_steps": 3},
            ).id
            for _ in range(jobs)
        ]
        chaos.start()
        finished: dict[str, Any] = {}
        peak_keys = len(baseline)
        deadline = started + 120 + 60 * jobs  # a minute a job at worst: far past any healthy run
        while len(finished) < jobs and time.monotonic() < deadline:
            for job_id in ids:
                if job_id not in finished:
                    job = client.fine_tuning.jobs.retrieve(job_id)
                    if job.status in ("succeeded", "failed", "cancelled"):
                        finished[job_id] = job
            peak_keys = max(peak_keys, len(redis_keys(stack.redis_url)))
            time.sleep(1.0)
        elapsed = time.monotonic() - started
        chaos.done.set()
        chaos.join(timeout=120)
        at_end = redis_keys(stack.redis_url)
        store = make_store(StorageSettings(backend="local", local_root=base / "store"))
        manifests = list_models(store)
        what = "finished work to leave Redis (retention, visibility timeout)"
        after = at_end

        def settled() -> bool:  # the sample judged is the one kept: a second one could catch a passing lock
            nonlocal after
            after = redis_keys(stack.redis_url)
            return not grown_since(baseline, after)

        with contextlib.suppress(TimeoutError):  # what is left over is reported below, and fails the check
            wait_for(settled, retention + VISIBILITY_S + 90, what, 1.0)
    finally:
        chaos.done.set()
        stack.stop()
    statuses = [j.status for j in finished.values()]
    attempts = [int(j.model_extra["attempt"]) for j in finished.values()]
    by_job: dict[str, int] = {}
    for manifest in manifests:
        by_job[manifest.job_id or "?"] = by_job.get(manifest.job_id or "?", 0) + 1
    grown = grown_since(baseline, after)
    checks = {
        "all_succeeded": len(finished) == jobs and all(s == "succeeded" for s in statuses),
        "one_manifest_per_job": by_job == dict.fromkeys(ids, 1)
        and all(m.name == finished[m.job_id].fine_tuned_model for m in manifests if m.job_id in finished),
        "redis_back_to_baseline": not grown,
        "chaos_ran": not chaos.errors,
    }
    return {
        "jobs": jobs,
        "workers": 2,
        "chaos_every_s": chaos_every,
        "max_kills": max_kills,
        "seed": seed,
        "wall_s": round(elapsed, 1),
        "jobs_per_minute": round(60 * len(finished) / elapsed, 2),
        "attempts_per_job": {
            "mean": round(statistics.mean(attempts), 2) if attempts else None,
            "max": max(attempts, default=None),
            "jobs_retried": sum(a > 1 for a in attempts),
        },
        "kills": chaos.kills,
        "chaos_errors": chaos.errors,
        "statuses": {s: statuses.count(s) for s in sorted(set(statuses))},
        "redis_keys": {
            "before": len(baseline),
            "peak": peak_keys,
            "at_end": len(at_end),
            "after_retention": len(after),
            "at_end_by_kind": census(at_end),
            "left_over": grown,
        },
        "checks": checks,
        "ok": all(checks.values()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--chaos-every", type=float, default=5.0, help="seconds between kills")
    parser.add_argument("--retention", type=float, default=30.0, help="SAGE_FINISHED_RETENTION_SECONDS")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--max-kills", type=int, help="stop the chaos after this many kills (default: no limit)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sage-soak-") as tmp:
        report = run(Path(tmp), args.jobs, args.chaos_every, args.retention, args.seed, args.max_kills)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
