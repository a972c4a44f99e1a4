"""Does watching a trainer at lower CPU priority keep the stack out of training's way? A/B/bare in one run.

    .venv/bin/python benchmarks/monitor_priority.py [--rounds 8] [--epochs 30]

Two stacks (private Redis, gateway, one worker each) run side by side, idle but for the job under way: one with
``SAGE_WORKER_MONITOR_NICE=0`` (progress, heartbeats and checkpoint uploads at the trainer's priority), one with
the default (10). Each round runs the same job on both and the bare training of ``stack_bench.py``, in rotated
order, and reports each stack's trainer-child wall time against bare (median of per-round ratios).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from stack import Stack, qa_lines
from stack_bench import RECORDS, bare_run, stack_run, worker_phases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()

    import openai

    from sage_ft.training.tiny_model import build_tiny_model

    base = Path(tempfile.mkdtemp(prefix="sage-nice-bench-"))
    home = base / "home"
    os.environ["SAGE_HOME"] = str(home)
    build_tiny_model("sage-wide", hidden_size=384, num_layers=4, num_heads=6)
    data = base / "qa.jsonl"
    data.write_bytes(qa_lines(RECORDS))
    stacks: dict[str, tuple[Stack, object, str]] = {}
    try:
        for nice in ("0", "10"):
            env = {"SAGE_HOME": str(home), "SAGE_STORAGE_BACKEND": "local", "SAGE_WORKER_PRESET": "cpu",
                   "SAGE_STORAGE_LOCAL_ROOT": str(base / f"store-{nice}"),
                   "SAGE_WORKER_MONITOR_NICE": nice}  # fmt: skip
            stack = Stack(base / f"stack-{nice}", env)
            stacks[f"nice {nice}"] = (stack, None, "")
            stack.start_gateway()
            stack.start_worker("bench")
            client = openai.OpenAI(base_url=f"{stack.url}/v1", api_key="x", max_retries=0)
            file_id = client.files.create(file=("qa.jsonl", data.read_bytes()), purpose="fine-tune").id
            stacks[f"nice {nice}"] = (stack, client, file_id)
            stack_run(client, stack.url, file_id, 1, _pids(stack))  # warm-up
        bare_run(home, data, base / "bare-warm", 1)

        def run(kind: str, i: int) -> float:
            if kind == "bare":
                return bare_run(home, data, base / f"bare-{i}", args.epochs)[0]
            stack, client, file_id = stacks[kind]
            job_id = stack_run(client, stack.url, file_id, args.epochs, _pids(stack))[2]
            return worker_phases(stack.workers[0].log_path, job_id)[1]

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
            print(f"monitor {kind}: median {statistics.median(values):.3f} "
                  f"(rounds: {', '.join(f'{r:.3f}' for r in values)})")  # fmt: skip
    finally:
        for stack, _, _ in stacks.values():
            stack.stop()


def _pids(stack: Stack) -> list[int]:
    return [stack.gateway.pid, stack.workers[0].pid, stack.redis.pid]  # type: ignore[union-attr]


if __name__ == "__main__":
    main()
