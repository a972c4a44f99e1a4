"""The LM head at trained positions only (``sage_ft.training.selective_head``) against the full head, forward and
backward of the loss alone, side by side.

    .venv/bin/python benchmarks/selective_head_bench.py [--repeats 7] [--chunk 1024]

Shape: batch 4 x 512 tokens, hidden 256, vocabulary 32768 (a head about as heavy, relative to 4 decoder layers of
that width, as Qwen2.5-0.5B's), fp32, 2 threads. The share of positions that carry a label (the answer share) is
varied: SFT data with long prompts trains a small share. Each repeat times both sides back to back on the same
tensors; the median time ratio is reported, with the peak size of one logits tensor each side materialises.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch.nn import functional

from sage_ft.training.selective_head import trained_token_loss

BATCH, SEQ, HIDDEN, VOCAB = 4, 512, 256, 32768
CHUNK = 1024


def full(hidden: torch.Tensor, head: torch.nn.Module, labels: torch.Tensor, n: int) -> torch.Tensor:
    logits = head(hidden).float()[:, :-1]
    return (
        functional.cross_entropy(
            logits.reshape(-1, VOCAB), labels[:, 1:].reshape(-1), ignore_index=-100, reduction="sum"
        )
        / n
    )


def timed(fn: object, hidden: torch.Tensor, head: torch.nn.Module, labels: torch.Tensor, n: int) -> float:
    h = hidden.detach().requires_grad_(True)
    head.zero_grad(set_to_none=True)
    t0 = time.perf_counter()
    loss = fn(h, head, labels, n)  # type: ignore[operator]
    loss.backward()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--chunk", type=int, default=1024, help="Rows of logits per chunk.")
    args = parser.parse_args()
    global CHUNK
    CHUNK = args.chunk
    torch.manual_seed(0)
    head = torch.nn.Linear(HIDDEN, VOCAB, bias=False)
    hidden = torch.randn(BATCH, SEQ, HIDDEN)
    results = []
    for share in (0.25, 0.5, 0.9):
        labels = torch.full((BATCH, SEQ), -100, dtype=torch.long)
        start = int(SEQ * (1 - share))
        labels[:, start:] = torch.randint(0, VOCAB, (BATCH, SEQ - start))
        n = int((labels[:, 1:] != -100).sum())
        ours = lambda h, hd, lb, k: trained_token_loss(h, hd, lb, k, chunk_size=CHUNK)  # noqa: E731
        timed(full, hidden, head, labels, n), timed(ours, hidden, head, labels, n)  # warm-up
        pairs = []
        for i in range(args.repeats):
            order = (full, ours) if i % 2 == 0 else (ours, full)
            t = {fn: timed(fn, hidden, head, labels, n) for fn in order}
            pairs.append((t[full], t[ours]))
        ratio = statistics.median(f / o for f, o in pairs)
        results.append(
            {
                "trained_share": share,
                "chunk": CHUNK,
                "full_ms": round(statistics.median(f for f, _ in pairs) * 1e3, 1),
                "selective_ms": round(statistics.median(o for _, o in pairs) * 1e3, 1),
                "speedup": round(ratio, 2),
                "logits_mb": {
                    "full": round(BATCH * (SEQ - 1) * VOCAB * 4 / 2**20),
                    "selective": round(min(n, CHUNK) * VOCAB * 4 / 2**20),
                },
            }
        )
        print(json.dumps(results[-1]), flush=True)


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
