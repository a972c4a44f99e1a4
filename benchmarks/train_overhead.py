"""Side-by-side training throughput on CPU (or GPU if present), in one run.

1. Overhead: the same tiny model, data, batch size and number of steps, trained through ``LoRATrainer`` (TRL
   SFTTrainer + PEFT) and through a bare PEFT + torch loop. Reports trained tokens/s for both and their ratio.
   Every sequence is cut to the same length, so the two samplers' different batch draws cost the same.
2. Packing vs padding: ``LoRATrainer`` with ``packing=True`` and ``False`` on a mixed-length dataset, as the ratio
   of real (non-pad) tokens/s.

Usage: python benchmarks/train_overhead.py [--steps 60] [--repeats 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from bare_loop import bare_train, load_bare_model, padded_batch

from sage_ft import LoRAConfig, TrainingConfig
from sage_ft.data import BUILTIN_TASKS, builtin_dataset_path, load_conversations
from sage_ft.training import LoRATrainer, ProgressEvent, TrainingCallback
from sage_ft.training.chat import encode_conversation
from sage_ft.training.tiny_model import build_tiny_model

LORA = LoRAConfig(r=16, lora_alpha=32, lora_dropout=0.0)


@dataclass
class Measure:
    """Trained (non-pad) tokens, wall seconds and process CPU seconds of one training loop.

    CPU seconds are the steadier figure on a shared VM: time the host steals from us is not counted.
    """

    tokens: int = 0
    wall: float = 0.0
    cpu: float = 0.0

    def rate(self, clock: str) -> float:
        return self.tokens / (self.wall if clock == "wall" else self.cpu)


class Rate(TrainingCallback):
    def __init__(self) -> None:
        self.measure = Measure()
        self._wall = self._cpu = 0.0

    def on_event(self, event: ProgressEvent) -> None:
        if event.kind == "start":
            self._wall, self._cpu = time.perf_counter(), time.process_time()
        elif event.kind == "end":
            self.measure = Measure(event.tokens_seen, time.perf_counter() - self._wall, time.process_time() - self._cpu)


def sage_run(cfg: TrainingConfig) -> Measure:
    rate = Rate()
    LoRATrainer(cfg, callbacks=[rate]).train()
    return rate.measure


def bare_run(model_dir: Path, data: Path, steps: int, batch: int, max_length: int) -> Measure:
    """The same work with nothing but PEFT and a hand-written torch loop (``bare_loop``)."""
    from transformers import AutoTokenizer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(model_dir)
    rows = [encode_conversation(tok, c.messages) for c in load_conversations(data)]
    model = load_bare_model(model_dir, LORA.r, LORA.lora_alpha, "cpu")
    order = torch.randperm(len(rows)).tolist()
    batches = (
        padded_batch([rows[order[(step * batch + i) % len(rows)]] for i in range(batch)], tok.pad_token_id, max_length)
        for step in itertools.count()
    )
    start, cpu = time.perf_counter(), time.process_time()
    done = bare_train(model, batches, steps, lr=1e-3)
    return Measure(sum(s.tokens for s in done), time.perf_counter() - start, time.process_time() - cpu)


def uniform_length_data(path: Path, max_length: int, batch: int) -> Path:
    """Records all longer than ``max_length``, so every sequence is cut to the same length and both loops do the
    same work whatever order their samplers pick (with mixed lengths, padding waste depends on the batch draw)."""
    texts = [
        s
        for task in BUILTIN_TASKS
        for c in load_conversations(builtin_dataset_path(task))
        for s in (m["content"] for m in c.messages)
    ]
    corpus = "\n".join(texts)
    size = max_length * 5  # characters: ~1.3x max_length tokens with the tiny tokenizer
    chunks = [corpus[i : i + size] for i in range(0, len(corpus) - size, max_length // 2)]
    chunks = chunks[: len(chunks) // batch * batch]  # full batches only, so every step trains batch sequences
    path.write_text("".join(json.dumps({"instruction": "Continue.", "output": c}) + "\n" for c in chunks))
    return path


def mixed_length_data(path: Path) -> Path:
    """Built-in records plus long ones: lengths from ~20 to ~400 tokens, as real instruction data has."""
    records: list[dict[str, Any]] = []
    for task in BUILTIN_TASKS:
        records.extend(json.loads(line) for line in builtin_dataset_path(task).read_text().splitlines())
    code = [json.loads(line)["output"] for line in builtin_dataset_path("code").read_text().splitlines()]
    for i in range(0, len(code), 3):
        records.append({"instruction": "Show several Python snippets.", "output": "\n\n".join(code[i : i + 6])})
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def median_ratio(top: list[float], bottom: list[float]) -> float:
    """The median of paired ratios: runs of one repeat share the host's slow phases, which then cancel."""
    return round(statistics.median(a / b for a, b in zip(top, bottom, strict=True)), 3)


def machine() -> str:
    return (
        f"{platform.machine()} {torch.get_num_threads()} threads, "
        f"{'cuda ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    work = Path(tempfile.mkdtemp(prefix="sage-bench-"))
    model = build_tiny_model("bench-qwen2", models_root=work, hidden_size=256, num_layers=4, num_heads=4)
    max_length = 256
    uniform = uniform_length_data(work / "uniform.jsonl", max_length, args.batch)
    mixed = mixed_length_data(work / "mixed.jsonl")

    def cfg(name: str, data: Path, **kw: Any) -> TrainingConfig:
        return TrainingConfig(
            model_name=str(model),
            data_path=str(data),
            output_dir=str(work / name),
            max_steps=args.steps,
            per_device_train_batch_size=args.batch,
            max_length=max_length,
            learning_rate=1e-3,
            warmup_ratio=0.0,
            logging_steps=10,
            save_steps=10_000,
            report_to="none",
            lora=LORA,
            **kw,
        )

    results: dict[str, list[Measure]] = {"sage": [], "bare": [], "padding": [], "packing": []}
    for _ in range(args.repeats):  # interleaved, so drift on a shared machine hits every side alike
        results["bare"].append(bare_run(model, uniform, args.steps, args.batch, max_length))
        results["sage"].append(sage_run(cfg("sage", uniform)))
        results["padding"].append(sage_run(cfg("padding", mixed, packing=False)))
        results["packing"].append(sage_run(cfg("packing", mixed, packing=True)))
    summary: dict[str, Any] = {
        "machine": machine(),
        "torch": torch.__version__,
        "steps": args.steps,
        "batch": args.batch,
        "repeats": args.repeats,
    }
    for clock in ("cpu", "wall"):
        rates = {k: [m.rate(clock) for m in v] for k, v in results.items()}
        summary[clock] = {
            "tokens_per_s": {k: [round(x, 1) for x in v] for k, v in rates.items()},
            # paired within a repeat, so slow phases of a shared host cancel; the median is the headline
            "sage_vs_bare": median_ratio(rates["sage"], rates["bare"]),
            "packing_vs_padding": median_ratio(rates["packing"], rates["padding"]),
        }
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
