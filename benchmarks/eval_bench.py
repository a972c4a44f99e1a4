"""Eval throughput side by side: an eval run through the stack against the same requests sent straight to vLLM.

    .venv/bin/python benchmarks/eval_bench.py [--items 400] [--concurrency 4] [--tokens 32] [--repeats 3]

The stack side is what a user gets: ``client.evals.runs.create`` on the gateway, the Celery worker's ``evaluate``
task asking serving (which proxies to the vLLM CPU server of the base model) with ``--concurrency`` answers in flight,
grading and storing each item; timed from the create call until the run reads ``completed``. The direct side sends
the same chat requests to that vLLM server's own port with the same concurrency (a thread pool of that size, httpx),
and grades nothing. Both ask the base model ``sage-tiny`` for ``--tokens`` tokens per item at temperature 0 (it
always uses them all). Pairs alternate order; the median per-pair ratio of items/s is reported.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from stack import VLLM_PYTHON, Stack, wait_for

GRADER = {
    "type": "string_check",
    "name": "exact",
    "input": "{{sample.output_text}}",
    "reference": "{{item.answer}}",
    "operation": "eq",
}


def rows(n: int) -> list[dict[str, Any]]:
    return [{"item": {"question": f"Tell me about the number {i}.", "answer": "x"}} for i in range(n)]


def start_stack(base: Path, concurrency: int) -> Stack:
    from sage_ft.training.tiny_model import build_tiny_model

    home = base / "home"
    build_tiny_model("sage-tiny", models_root=home / "models")
    env = {
        "SAGE_HOME": str(home),
        "SAGE_WORKER_PRESET": "cpu",
        "SAGE_STORAGE_BACKEND": "local",
        "SAGE_STORAGE_LOCAL_ROOT": str(base / "store"),
        "SAGE_SERVING_VLLM_PYTHON": str(VLLM_PYTHON),
        "SAGE_SERVING_START_TIMEOUT_SECONDS": "400",
        "SAGE_SERVING_MAX_MODEL_LEN": "256",
        "SAGE_WORKER_EVAL_CONCURRENCY": str(concurrency),
    }
    stack = Stack(base / "stack", env)
    stack.start_gateway()
    stack.start_worker("w1")
    stack.start_serving()
    return stack


def through_stack(client: openai.OpenAI, eval_id: str, n: int, tokens: int) -> float:
    """Seconds from creating the run until the worker recorded it completed (its ``completed`` event's time, so the
    benchmark's own polling, slow on purpose, neither adds to the time nor takes CPU from the model server)."""
    source = {
        "type": "completions",
        "model": "sage-tiny",
        "source": {"type": "file_content", "content": rows(n)},
        "input_messages": {"type": "template", "template": [{"role": "user", "content": "{{item.question}}"}]},
        "sampling_params": {"temperature": 0, "max_completion_tokens": tokens},
    }
    t0 = time.time()
    run = client.evals.runs.create(eval_id, data_source=source)  # type: ignore[arg-type]
    done = wait_for(
        lambda: (
            (r := client.evals.runs.retrieve(run.id, eval_id=eval_id)).status != "in_progress"
            and r.status != "queued"
            and r
        ),
        900,
        "the eval run",
        interval=1.0,
    )
    assert done.status == "completed" and done.result_counts.errored == 0, done
    events = httpx.get(f"{client.base_url}evals/{eval_id}/runs/{run.id}/events", timeout=30).json()["data"]
    return float(next(e["created_at"] for e in events if e["type"] == "completed")) - t0


def direct(endpoint: str, n: int, tokens: int, concurrency: int) -> float:
    """Seconds to send the same requests straight to the vLLM server, ``concurrency`` at a time."""
    with httpx.Client(base_url=endpoint, timeout=300) as http:

        def ask(row: dict[str, Any]) -> None:
            body = {
                "model": "sage-tiny",
                "messages": [{"role": "user", "content": row["item"]["question"]}],
                "temperature": 0,
                "top_p": 1.0,
                "max_tokens": tokens,
            }
            http.post("/v1/chat/completions", json=body).raise_for_status()

        t0 = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(ask, rows(n)))
        return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="eval-bench-") as tmp:
        stack = start_stack(Path(tmp), args.concurrency)
        try:
            client = openai.OpenAI(base_url=f"{stack.url}/v1", api_key="x", max_retries=0)
            config = {"type": "custom", "item_schema": {"type": "object"}}
            ev = client.evals.create(name="bench", testing_criteria=[GRADER], data_source_config=config)  # type: ignore[list-item,arg-type]
            through_stack(client, ev.id, 8, args.tokens)  # warm: starts the vLLM server for sage-tiny
            deployments = httpx.get(f"{stack.serving_url}/v1/deployments", timeout=30).json()["data"]
            endpoint = next(d["endpoint"] for d in deployments if d["model"] == "sage-tiny")
            direct(endpoint, 8, args.tokens, args.concurrency)
            pairs = []
            for i in range(args.repeats):
                order = ("stack", "direct") if i % 2 == 0 else ("direct", "stack")
                seconds = {}
                for side in order:
                    seconds[side] = (
                        through_stack(client, ev.id, args.items, args.tokens)
                        if side == "stack"
                        else direct(endpoint, args.items, args.tokens, args.concurrency)
                    )
                pairs.append({side: args.items / s for side, s in seconds.items()})
                print(f"pair {i + 1}: stack {pairs[-1]['stack']:.1f} items/s, direct {pairs[-1]['direct']:.1f}")
        finally:
            stack.stop()
    ratios = [p["stack"] / p["direct"] for p in pairs]
    print(
        json.dumps(
            {
                "items": args.items,
                "concurrency": args.concurrency,
                "tokens": args.tokens,
                "stack_items_per_s": round(statistics.median(p["stack"] for p in pairs), 2),
                "direct_items_per_s": round(statistics.median(p["direct"] for p in pairs), 2),
                "ratio_median": round(statistics.median(ratios), 3),
                "ratios": [round(r, 3) for r in ratios],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
