"""DPO throughput and peak memory, side by side in one run: ``LoRATrainer(method="dpo")`` against a bare TRL
``DPOTrainer`` script doing the same steps, and against SFT on the same model and sequence lengths.

Every side runs in a fresh child process (so its peak RSS is its own), interleaved over the repeats (so drift on a
shared host hits every side alike). Throughput counts real (non-pad) tokens the trainer saw: for DPO both the
chosen and the rejected sequence of a pair, for SFT the prompt and the chosen answer.

Usage: python benchmarks/dpo_bench.py [--steps 30] [--repeats 3] [--json out.json]
       (a child: python benchmarks/dpo_bench.py --side sage|bare|sft --work DIR --steps N)
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BATCH, MAX_LENGTH, PROMPT_CHARS, ANSWER_CHARS = 4, 256, 300, 400
LORA = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.0}


def make_data(work: Path) -> tuple[Path, Path]:
    """Preference pairs cut from the built-in datasets' text (prompt ~70, answers ~90 tokens each), and the same
    prompts with the chosen answers as SFT records."""
    from sage_ft.data import BUILTIN_TASKS, builtin_dataset_path, load_conversations

    corpus = "\n".join(
        m["content"]
        for task in BUILTIN_TASKS
        for c in load_conversations(builtin_dataset_path(task))
        for m in c.messages
    )
    step = PROMPT_CHARS + 2 * ANSWER_CHARS
    pairs = []
    for i in range(0, len(corpus) - step, step)[:64]:
        chunk = corpus[i : i + step]
        prompt, chosen = chunk[:PROMPT_CHARS], chunk[PROMPT_CHARS : PROMPT_CHARS + ANSWER_CHARS]
        pairs.append((prompt, chosen, chunk[PROMPT_CHARS + ANSWER_CHARS :]))
    prefs, sft = work / "prefs.jsonl", work / "sft.jsonl"
    prefs.write_text(
        "".join(
            json.dumps(
                {
                    "prompt": [{"role": "user", "content": p}],
                    "chosen": [{"role": "assistant", "content": c}],
                    "rejected": [{"role": "assistant", "content": r}],
                }
            )
            + "\n"
            for p, c, r in pairs
        )
    )
    sft.write_text(
        "".join(
            json.dumps({"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": c}]}) + "\n"
            for p, c, _ in pairs
        )
    )
    return prefs, sft


def _common(work: Path, steps: int) -> dict[str, Any]:
    return dict(
        output_dir=str(work / "out"),
        max_steps=steps,
        per_device_train_batch_size=BATCH,
        learning_rate=5e-4,
        warmup_steps=0,
        logging_steps=10,
        save_strategy="no",
        report_to="none",
        max_length=MAX_LENGTH,
        include_num_input_tokens_seen="non_padding",
        disable_tqdm=True,
        seed=42,
        dataloader_num_workers=0,
    )


def side_sage(work: Path, model: Path, steps: int, method: str) -> Any:
    from sage_ft import DPOSettings, LoRAConfig, TrainingConfig
    from sage_ft.training import LoRATrainer

    prefs, sft = work / "prefs.jsonl", work / "sft.jsonl"
    cfg = TrainingConfig(
        model_name=str(model),
        data_path=str(prefs if method == "dpo" else sft),
        method=method,
        output_dir=str(work / f"sage-{method}"),
        max_steps=steps,
        per_device_train_batch_size=BATCH,
        max_length=MAX_LENGTH,
        learning_rate=5e-4,
        warmup_ratio=0.0,
        logging_steps=10,
        save_steps=10_000,
        report_to="none",
        lora=LoRAConfig(**LORA),
        # plain DPO, as the bare TRL side runs it (sage-ft's default adds the RPO term, a loss on the same forward)
        dpo=DPOSettings(sft_weight=0.0),
    )
    trainer, _ = LoRATrainer(cfg).build_trainer()
    return trainer


def side_bare(work: Path, model_dir: Path, steps: int) -> Any:
    """What a user would write with TRL alone: the model, a LoRA config and the dataset, into DPOTrainer."""
    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    data = load_dataset("json", data_files=str(work / "prefs.jsonl"), split="train")
    cuda = torch.cuda.is_available()  # TRL defaults to bf16, which a CPU run must turn off
    # TRL also turns gradient checkpointing on by default; off here, as in the sage run, so both do the same work
    args = DPOConfig(**_common(work, steps), beta=0.1, bf16=cuda, use_cpu=not cuda, gradient_checkpointing=False)
    return DPOTrainer(
        model=model,
        args=args,
        train_dataset=data,
        processing_class=tok,
        peft_config=LoraConfig(**LORA, target_modules="all-linear", task_type="CAUSAL_LM"),
    )


def child(side: str, work: Path, steps: int) -> None:
    model = work / "models" / "bench-dpo"
    trainer = (
        side_bare(work, model, steps)
        if side == "bare"
        else side_sage(work, model, steps, "sft" if side == "sft" else "dpo")
    )
    wall, cpu = time.perf_counter(), time.process_time()
    trainer.train()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    tokens = int(trainer.state.num_input_tokens_seen)
    print(
        json.dumps(
            {
                "side": side,
                "tokens": tokens,
                "wall": wall,
                "cpu": cpu,
                "steps": trainer.state.global_step,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--side", choices=["sage", "bare", "sft"])
    parser.add_argument("--work", type=Path)
    args = parser.parse_args()
    if args.side:
        child(args.side, args.work, args.steps)
        return
    from train_overhead import machine, median_ratio  # benchmarks/, this script's folder

    from sage_ft.training.tiny_model import build_tiny_model

    work = Path(tempfile.mkdtemp(prefix="sage-dpo-bench-"))
    build_tiny_model("bench-dpo", models_root=work / "models", hidden_size=256, num_layers=4, num_heads=4)
    make_data(work)
    runs: dict[str, list[dict[str, Any]]] = {"sage": [], "bare": [], "sft": []}
    for _ in range(args.repeats):
        for side in runs:
            out = subprocess.run(
                [sys.executable, __file__, "--side", side, "--work", str(work), "--steps", str(args.steps)],
                capture_output=True,
                text=True,
                check=True,
            )
            runs[side].append(json.loads(out.stdout.strip().splitlines()[-1]))
    summary: dict[str, Any] = {
        "machine": machine(),
        "steps": args.steps,
        "batch": BATCH,
        "max_length": MAX_LENGTH,
        "repeats": args.repeats,
        "tokens_per_step": {k: v[0]["tokens"] / v[0]["steps"] for k, v in runs.items()},
        "peak_rss_mb": {k: [round(r["peak_rss_mb"]) for r in v] for k, v in runs.items()},
    }
    for clock in ("cpu", "wall"):
        rate = {k: [r["tokens"] / r[clock] for r in v] for k, v in runs.items()}
        summary[clock] = {
            "tokens_per_s": {k: [round(x) for x in v] for k, v in rate.items()},
            "sage_dpo_vs_bare_trl": median_ratio(rate["sage"], rate["bare"]),
            "dpo_vs_sft": median_ratio(rate["sage"], rate["sft"]),
        }
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
