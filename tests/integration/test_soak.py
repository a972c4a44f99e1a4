"""The soak benchmark at a small size: 12 jobs on two workers under four SIGKILLs that land on training work, trainer
and worker in turn (benchmarks/soak.py).
Every job succeeds with one manifest, no job takes a second publish, and Redis returns to its size before the jobs
once they are past their retention. The 200-job run is in docs/benchmarks.md."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
SOAK = Path(__file__).resolve().parents[2] / "benchmarks" / "soak.py"


def test_jobs_under_chaos_all_succeed_once_and_redis_does_not_grow(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    args = ["--jobs", "12", "--chaos-every", "4", "--max-kills", "4", "--retention", "10", "--json", str(out)]
    done = subprocess.run([sys.executable, str(SOAK), *args], capture_output=True, text=True, timeout=1500)
    assert out.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["checks"] == {
        "all_succeeded": True,
        "one_manifest_per_job": True,
        "redis_back_to_baseline": True,
        "chaos_ran": True,
    }, report
    assert done.returncode == 0
    kills = report["kills"]
    assert kills["worker"] == kills["trainer"] == 2, kills  # both faults hit running work, as many as asked
    assert report["attempts_per_job"]["jobs_retried"] >= 1, report["attempts_per_job"]
    assert report["redis_keys"]["peak"] > report["redis_keys"]["before"]  # the jobs were in Redis, then left
