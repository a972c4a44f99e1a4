"""What a python grader call costs in each sandbox, side by side in one run: bubblewrap on this host (``local``),
Landlock and seccomp alone (``confined``: what a container or pod runs, as Helm's graders deployment) and serving's
locked-down container (``docker``), for a trivial grader and one that computes for a while.

    python benchmarks/grader_sandbox_bench.py [--calls 20] [--image sage-ft/base:bookworm-py311] [--json out.json]

Needs bubblewrap (`make tools`) and a Docker engine that has the image. An RFT step asks batch x samples rewards,
so the per-call overhead is what a python-graded job pays per rollout (model graders are not measured here).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from sage_ft.graders import PythonSandbox
from sage_ft.settings import GraderSettings
from sage_ft_serving.sandbox import DockerSandbox

GRADERS = {
    "trivial": "def grade(sample, item):\n    return float(sample['output_text'] == item['answer'])\n",
    "compute": "def grade(sample, item):\n    return float(sum(i * i for i in range(2_000_000)) > 0)\n",
}


def measure(sandbox: Any, source: str, calls: int) -> dict[str, float]:
    seconds = []
    for _ in range(calls):
        start = time.monotonic()
        done = sandbox.run(source, {"output_text": "x"}, {"answer": "x"})
        seconds.append(time.monotonic() - start)
        if done.score != 1.0:
            raise SystemExit(f"the grader gave no score: {done}")
    return {"median_s": round(statistics.median(seconds), 4), "p90_s": round(sorted(seconds)[int(0.9 * calls)], 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--image", default="sage-ft/base:bookworm-py311")
    parser.add_argument("--docker-url", default="unix:///var/run/docker.sock")
    parser.add_argument("--json", type=Path)
    opts = parser.parse_args()
    settings = GraderSettings(python_image=opts.image)
    confined = GraderSettings(python_image=opts.image, python_isolation="confined")
    sandboxes = {
        "local": PythonSandbox(settings),
        "confined": PythonSandbox(confined),
        "docker": DockerSandbox(settings, opts.docker_url),
    }
    report: dict[str, Any] = {"calls": opts.calls}
    for name, source in GRADERS.items():
        row = {kind: measure(sb, source, opts.calls) for kind, sb in sandboxes.items()}
        for kind in ("confined", "docker"):
            row[f"{kind}_over_local"] = round(row[kind]["median_s"] / row["local"]["median_s"], 2)
        report[name] = row
        print(
            f"{name:8s} local {row['local']['median_s']:.3f} s  confined {row['confined']['median_s']:.3f} s "
            f"({row['confined_over_local']:.2f}x)  docker {row['docker']['median_s']:.3f} s "
            f"({row['docker_over_local']:.2f}x)"
        )
    if opts.json:
        opts.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
