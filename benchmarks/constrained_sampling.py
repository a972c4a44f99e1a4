"""What holding RFT's samples to a ``response_format`` costs: the same model, prompts and batch sampled with and
without ``sage_ft.training.constrained``'s processor, alternating, in one run.

An answer held to a schema stops once its JSON closes, so the two runs generate different lengths; the figure
compared is seconds per decoding step (one new token for every row of the batch). Two LM-head widths: the tiny
tokenizer's 2,048 rows, and 32,768 (the head padded past the tokenizer, as Qwen's is), which sets the size of the
mask the processor unpacks and applies at every step. The grammar is ``json_object`` (any object: the model keeps
writing until the cap, so every step is constrained).

Usage: python benchmarks/constrained_sampling.py [--rows 8] [--tokens 64] [--repeats 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from sage_ft.training.chat import render_prompt
from sage_ft.training.constrained import processor_factory
from sage_ft.training.tiny_model import build_tiny_model

FORMAT = {"type": "json_object"}


def step_seconds(model: Any, inputs: dict[str, Any], tokens: int, processors: list[Any] | None) -> float:
    started = time.perf_counter()
    with torch.no_grad():
        out = model.generate(
            **inputs,
            do_sample=True,
            max_new_tokens=tokens,
            eos_token_id=None,
            pad_token_id=0,
            logits_processor=processors,
        )
    steps = out.shape[1] - inputs["input_ids"].shape[1]
    return (time.perf_counter() - started) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    results = []
    for head in (None, 32768):
        name = "sage-bench-constrained" + (f"-{head}" if head else "")
        path = build_tiny_model(name, hidden_size=256, num_heads=4, num_layers=4, vocab_size=head)
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path).eval()
        eos = [tokenizer.convert_tokens_to_ids("<|im_end|>")]
        make = processor_factory(tokenizer, FORMAT, eos)
        assert make is not None
        prompt = render_prompt(tokenizer, [{"role": "user", "content": "The capital of Oslandia, as JSON?"}])
        inputs = dict(tokenizer([prompt] * args.rows, return_tensors="pt", add_special_tokens=False))
        step_seconds(model, inputs, 4, None)  # warm-up
        step_seconds(model, inputs, 4, [make()])
        free, held = [], []
        for _ in range(args.repeats):
            free.append(step_seconds(model, inputs, args.tokens, None))
            held.append(step_seconds(model, inputs, args.tokens, [make()]))
        row = {
            "lm_head_rows": model.config.vocab_size,
            "rows": args.rows,
            "free_ms_per_step": round(1000 * statistics.median(free), 2),
            "held_ms_per_step": round(1000 * statistics.median(held), 2),
        }
        row["held_over_free"] = round(row["held_ms_per_step"] / row["free_ms_per_step"], 3)
        results.append(row)
        print(json.dumps(row))
    if args.json:
        meta = {"machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads()}
        with open(args.json, "w") as fh:
            json.dump({"meta": meta, "args": vars(args), "results": results}, fh, indent=2)


if __name__ == "__main__":
    main()
