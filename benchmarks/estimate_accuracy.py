"""How close the dry-run estimate comes to real jobs on this machine.

    .venv/bin/python benchmarks/estimate_accuracy.py [--json docs/estimate_accuracy.json]

A real stack (private Redis, gateway, one Celery worker, cpu preset, the offline tiny model). Jobs of different sizes
run one after another; before each, ``dry_run: true`` gives the estimate, so every estimate is made from the jobs
before it (the first from the stated default speed). Reported per job: estimated and actual trained tokens and steps,
estimated and actual wall seconds (submit to succeeded, timed by this client polling every 0.1 s: what a user waits;
jobs run alone, so there is no queueing) and their ratio. The last line sums it up: the median |estimate / actual - 1|
of the jobs estimated from history.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from stack import Stack, qa_lines, wait_job

CODE_WORDS = [
    "apple river",
    "blue stone",
    "cold fire",
    "dark moon",
    "eager fox",
    "fast wind",
    "green hill",
    "high tower",
    "iron gate",
    "jolly king",
    "kind heart",
    "lost road",
    "magic lamp",
    "noble tree",
    "open sea",
    "pale rose",
    "quiet lake",
    "red sun",
    "silver bird",
    "tall grass",
]
# (records, epochs, batch): small jobs (the fixed part dominates) then long ones (training dominates), over 100x in
# tokens, in an order that is not monotone
JOBS = [
    (8, 10, 4),
    (16, 10, 4),
    (8, 30, 4),
    (20, 20, 4),
    (12, 5, 2),
    (20, 40, 4),
    (16, 25, 4),
    (200, 10, 8),
    (100, 40, 8),
    (300, 20, 8),
    (60, 5, 4),
]


def run(base: Path) -> list[dict[str, Any]]:
    import openai

    from sage_ft.training.tiny_model import build_tiny_model

    home = base / "home"
    build_tiny_model("sage-tiny", models_root=home / "models")
    env = {
        "SAGE_HOME": str(home),
        "SAGE_STORAGE_BACKEND": "local",
        "SAGE_WORKER_PRESET": "cpu",
        "SAGE_STORAGE_LOCAL_ROOT": str(base / "store"),
    }
    stack = Stack(base / "stack", env)
    rows = []
    try:
        stack.start_gateway()
        stack.start_worker("bench")
        client = openai.OpenAI(base_url=f"{stack.url}/v1", api_key="x", max_retries=0)
        for i, (records, epochs, batch) in enumerate(JOBS):
            data = [
                {
                    "question": f"What is the code word number {k}?",
                    "answer": f"{CODE_WORDS[k % len(CODE_WORDS)]} {k // len(CODE_WORDS)}",
                }
                for k in range(records)
            ]
            file_id = client.files.create(file=("qa.jsonl", qa_lines(data)), purpose="fine-tune").id
            kwargs: dict[str, Any] = {
                "model": "sage-tiny",
                "training_file": file_id,
                "suffix": f"est{i}",
                "method": {
                    "type": "supervised",
                    "supervised": {"hyperparameters": {"n_epochs": epochs, "batch_size": batch}},
                },
            }
            extra = {"preset": "cpu", "learning_rate": 3e-3}
            raw = client.fine_tuning.jobs.with_raw_response.create(**kwargs, extra_body={**extra, "dry_run": True})
            est = json.loads(raw.http_response.text)["estimate"]
            t0 = time.monotonic()
            job = client.fine_tuning.jobs.create(**kwargs, extra_body=extra)
            done = wait_job(client, job.id, timeout=900, interval=0.1)
            actual = time.monotonic() - t0  # the API's times are whole seconds: measured here instead
            assert done.status == "succeeded", done.error
            rows.append(
                {
                    "job": i + 1,
                    "records": records,
                    "epochs": epochs,
                    "batch": batch,
                    "tokens": est["tokens"],
                    "actual_tokens": done.trained_tokens,
                    "steps": est["steps"],
                    "actual_steps": done.model_extra["total_steps"],
                    "estimated_s": est["seconds"],
                    "actual_s": round(actual, 1),
                    "ratio": round(est["seconds"] / actual, 3),
                    "basis": est["seconds_basis"],
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    finally:
        stack.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sage-estimate-bench-") as tmp:
        rows = run(Path(tmp))
    print(
        "| job | records x epochs (batch) | tokens est / actual | steps est / actual | seconds est / actual "
        "| ratio | basis |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        b = r["basis"]
        basis = (
            f"default {b['tokens_per_second']:.0f} tok/s"
            if b["source"] == "default"
            else f"{b['jobs']} job(s), {b['fit']}"
        )
        print(
            f"| {r['job']} | {r['records']} x {r['epochs']} ({r['batch']}) | {r['tokens']} / {r['actual_tokens']} "
            f"| {r['steps']} / {r['actual_steps']} | {r['estimated_s']} / {r['actual_s']} | {r['ratio']:.2f} "
            f"| {basis} |"
        )
    errors = [abs(r["ratio"] - 1) for r in rows if r["basis"]["source"] == "history"]
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    print(
        f"estimate: median |error| {100 * statistics.median(errors):.0f} % over {len(errors)} jobs from history, "
        f"worst {100 * max(errors):.0f} %"
    )


if __name__ == "__main__":
    main()
