"""Does watching a trainer at lower CPU priority keep the stack out of training's way? A/B/bare in one run.

    .venv/bin/python benchmarks/monitor_priority.py [--rounds 8] [--epochs 30]

Two stacks (private Redis, gateway, one worker each) run side by side, idle but for the job under way: one with
``SAGE_WORKER_MONITOR_NICE=0`` (progress, heartbeats and checkpoint uploads at the trainer's priority), one with
the default (10). Each round runs the same job on both and the bare training of ``stack_bench.py``, in rotated
order, and reports each stack's trainer-child wall time against bare (median of per-round ratios).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from stack_bench import BenchStack, bare_run, bench_dirs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()

    base, home, data = bench_dirs("sage-nice-bench-")
    stacks: dict[str, BenchStack] = {}
    try:
        for nice in ("0", "10"):
            stacks[f"nice {nice}"] = BenchStack.start(base, home, data, f"stack-{nice}", SAGE_WORKER_MONITOR_NICE=nice)
        bare_run(home, data, base / "bare-warm", 1)

        def run(kind: str, i: int) -> float:
            if kind == "bare":
                return bare_run(home, data, base / f"bare-{i}", args.epochs)[0]
            bench = stacks[kind]
            return bench.trainer_seconds(bench.run(args.epochs)[2])

        kinds = ["bare", *stacks]
        ratios: dict[str, list[float]] = {k: [] for k in stacks}
        for i in range(args.rounds):
            order = kinds[i % len(kinds) :] + kinds[: i % len(kinds)]
            out = {kind: run(kind, i) for kind in order}
            for kind in stacks:
                ratios[kind].append(out[kind] / out["bare"])
            print(f"round {i}: " + ", ".join(f"{k} {out[k]:.2f}s" for k in kinds), flush=True)
        print("\n## results (trainer child wall time / bare wall time)")
        for kind, values in ratios.items():
            print(
                f"monitor {kind}: median {statistics.median(values):.3f} "
                f"(rounds: {', '.join(f'{r:.3f}' for r in values)})"
            )
    finally:
        for bench in stacks.values():
            bench.stack.stop()


if __name__ == "__main__":
    main()
