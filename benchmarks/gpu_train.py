"""Training speed and memory on a GPU, side by side, in one command that downloads nothing (issue 27).

    python benchmarks/gpu_train.py [--json out.json]            # any CUDA machine: Qwen2.5-1.5B and -7B shapes
    python benchmarks/gpu_train.py --shape 0.5b --cells 'mixed/*'
    python benchmarks/gpu_train.py --shape tiny                  # a CPU: the same cells, tiny (CI runs this)

Models are random weights in the named architectures' shapes (Qwen2.5 0.5B / 1.5B / 7B), built once under --work
with the project's BPE tokenizer; data are chat records of exact token lengths. Every cell runs in its own process
(its peak memory is its own) and reports real tokens per second after the warm-up steps, the TFLOP/s that makes
(2 x (2N + causal attention) per token: forward 2N, backward's input gradients 2N; frozen weights get no weight
gradient), peak ``max_memory_allocated`` next to the memory estimate of the gateway's dry run, and the share of
padding. Cells:

- ``uniform/sage`` and ``uniform/bare``: every record the same length; ``LoRATrainer`` against a bare PEFT loop
  (``bare_loop.py``: padded batches, SDPA, AdamW). ``uniform/sage-no-liger``: Liger's kernels off (CUDA, where
  liger-kernel is installed).
- ``mixed/sage-packed`` (``packing=true``), ``mixed/sage-auto`` (the defaults: padding-free), ``mixed/sage-padded``
  (``packing=false``) and ``mixed/bare``: log-uniform lengths.
- ``qlora/sage``: the ``minimal`` preset (4-bit, rank 4, gradient checkpointing), 512 tokens, batch 1: memory.
- ``peak``: an 8192^3 bf16 matrix product, the card's measured dense peak that TFLOP/s are read against.

The summary gives the ratios the issue's targets are stated in, and whether each target is met.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import multiprocessing
import os
import random
import resource
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from bare_loop import BareStep, bare_train, load_bare_model, padded_batch

from sage_ft import LoRAConfig, PresetConfigs, TrainingConfig
from sage_ft.data import load_conversations
from sage_ft.jobs.estimate import CUDA_CONTEXT_BYTES, peak_memory
from sage_ft.packing import decide_packing, step_tokens
from sage_ft.training import LoRATrainer, ProgressEvent, TrainingCallback
from sage_ft.training.chat import encode_conversation
from sage_ft.training.tiny_model import build_tiny_model

GIB = 1024**3
# Qwen2.5's dimensions (the config.json of each) and a CPU-sized shape: an aligned table, one row a shape
SHAPES: dict[str, dict[str, Any]] = {
    "tiny": dict(
        hidden_size=256,
        intermediate_size=704,
        num_layers=4,
        num_heads=4,
        num_kv_heads=2,
        vocab_size=None,
        tie_embeddings=True,
    ),
    "0.5b": dict(
        hidden_size=896,
        intermediate_size=4864,
        num_layers=24,
        num_heads=14,
        num_kv_heads=2,
        vocab_size=151936,
        tie_embeddings=True,
    ),
    "1.5b": dict(
        hidden_size=1536,
        intermediate_size=8960,
        num_layers=28,
        num_heads=12,
        num_kv_heads=2,
        vocab_size=151936,
        tie_embeddings=True,
    ),
    "7b": dict(
        hidden_size=3584,
        intermediate_size=18944,
        num_layers=28,
        num_heads=28,
        num_kv_heads=4,
        vocab_size=152064,
        tie_embeddings=False,
    ),
}
CELLS = (
    "uniform/sage",
    "uniform/bare",
    "uniform/sage-no-liger",
    "mixed/sage-packed",
    "mixed/sage-auto",
    "mixed/sage-padded",
    "mixed/bare",
    "qlora/sage",
)
DEFAULT_PLAN = {"1.5b": [c for c in CELLS if not c.startswith("qlora")], "7b": ["uniform/sage", "qlora/sage"]}
LORA = LoRAConfig(r=16, lora_alpha=32, lora_dropout=0.0)  # on both sides; dropout would differ between them
PACKING = {"packed": True, "auto": "auto", "padded": False}


@dataclass(frozen=True)
class Sizes:
    """The work of a run on this device: batch rows, uniform length, the mixed range, and the steps."""

    batch: int
    uniform: int
    mixed: tuple[int, int]
    qlora: int
    warmup: int
    steps: int

    @classmethod
    def for_device(cls, cuda: bool, warmup: int | None, steps: int | None) -> Sizes:
        if cuda:
            return cls(8, 1024, (32, 2048), 512, warmup or 5, steps or 10)
        return cls(4, 128, (16, 256), 64, warmup or 1, steps or 3)


@dataclass
class CellResult:
    shape: str
    cell: str
    device: str
    tokens_per_second: float = 0.0
    tflops: float = 0.0
    steps: int = 0
    padding_share: float = 0.0
    peak_memory_bytes: int | None = None  # CUDA: max_memory_allocated while training; CPU: the process's peak RSS
    estimate: dict[str, Any] = field(default_factory=dict)
    layout: str | None = None
    attention: str | None = None
    liger: bool = False
    skipped: str | None = None


# -- data and models ---------------------------------------------------------------------------------------------


def one_token_words(tokenizer: Any) -> list[str]:
    """Words the tokenizer writes as one token each when they follow a space (``Ġword``, letters only)."""
    words = []
    for token in tokenizer.get_vocab():
        if token.startswith("Ġ") and token[1:].isascii() and token[1:].isalpha() and len(token) > 2:
            words.append(token[1:])
    return sorted(words)


def record_of(tokenizer: Any, words: list[str], rng: random.Random, length: int) -> dict[str, Any]:
    """A two-turn chat record of exactly ``length`` tokens through the chat template, a third of it the prompt."""

    def text(n: int) -> str:
        return "".join(" " + rng.choice(words) for _ in range(max(n, 1)))

    def size(msgs: list[dict[str, str]]) -> int:
        return len(encode_conversation(tokenizer, msgs)["input_ids"])

    probe = [{"role": "user", "content": text(1)}, {"role": "assistant", "content": text(1)}]
    overhead = size(probe) - 2
    body = max(2, length - overhead)
    prompt = max(1, body // 3)
    msgs = [{"role": "user", "content": text(prompt)}, {"role": "assistant", "content": text(body - prompt)}]
    while size(msgs) > length and len(msgs[1]["content"].split()) > 1:  # a merge across words, rarely: trim
        msgs[1]["content"] = " " + " ".join(msgs[1]["content"].split()[:-1])
    return {"messages": msgs}


def write_data(tokenizer: Any, path: Path, lengths: list[int], seed: int) -> Path:
    rng = random.Random(seed)
    words = one_token_words(tokenizer)
    path.write_text("".join(json.dumps(record_of(tokenizer, words, rng, n)) + "\n" for n in lengths))
    return path


def mixed_lengths(lo: int, hi: int, count: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [round(math.exp(rng.uniform(math.log(lo), math.log(hi)))) for _ in range(count)]


def prepare(shape: str, work: Path, sizes: Sizes, cuda: bool) -> dict[str, Any]:
    """The shape's model (random weights, made on the GPU in bf16 there) and its three data files, once."""
    from transformers import AutoTokenizer

    dims = dict(SHAPES[shape])
    model_dir = build_tiny_model(
        f"bench-{shape}",
        models_root=work,
        hidden_size=dims["hidden_size"],
        num_layers=dims["num_layers"],
        num_heads=dims["num_heads"],
        num_kv_heads=dims["num_kv_heads"],
        intermediate_size=dims["intermediate_size"],
        vocab_size=dims["vocab_size"],
        tie_embeddings=dims["tie_embeddings"],
        max_positions=4096,
        init_std=0.02,
        dtype="bfloat16" if cuda else "float32",
        device="cuda" if cuda else "cpu",
    )
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    data = work / f"data-{shape}-{sizes.batch}-{sizes.uniform}-{sizes.mixed[1]}"
    data.mkdir(exist_ok=True)
    steps = sizes.warmup + sizes.steps
    mean = (sizes.mixed[1] - sizes.mixed[0]) / math.log(sizes.mixed[1] / sizes.mixed[0])
    mixed_count = math.ceil(1.3 * steps * sizes.batch * sizes.mixed[1] / mean)  # enough for the packed rows too
    files = {
        "uniform": (data / "uniform.jsonl", [sizes.uniform] * (steps * sizes.batch)),
        "mixed": (data / "mixed.jsonl", mixed_lengths(*sizes.mixed, count=mixed_count, seed=1)),
        "qlora": (data / "qlora.jsonl", [sizes.qlora] * steps),
    }
    found: dict[str, Any] = {"model": str(model_dir), "lengths": {}}
    for name, (path, lengths) in files.items():
        if not path.exists():
            write_data(tokenizer, path, lengths, seed=len(name))
        found[name] = str(path)
        found["lengths"][name] = [len(r["input_ids"]) for r in encoded(str(model_dir), str(path))]
    return found


# -- one cell, in its own process --------------------------------------------------------------------------------


class StepClock(TrainingCallback):
    """Wall time and real tokens at the end of each step (logging every step makes the trainer wait for it)."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.marks: list[tuple[float, int]] = []

    def on_event(self, event: ProgressEvent) -> None:
        if event.kind == "start" and self.cuda:
            torch.cuda.reset_peak_memory_stats()  # the model is loaded: the peak from here on is training's
        if event.kind == "log" and event.loss is not None:
            self.marks.append((time.perf_counter(), event.tokens_seen))


class BatchStats:
    """Wraps the trainer's collator to count real tokens, padded slots and squared sequence lengths per batch."""

    def __init__(self, collate: Any) -> None:
        self.collate = collate
        self.batches: list[tuple[int, int, int]] = []  # (real tokens, slots, sum of squared sequence lengths)

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.collate(features)
        if "cu_seq_lens_q" in batch:
            lengths = batch["cu_seq_lens_q"].diff().long()
        else:
            lengths = batch["attention_mask"].sum(1).long()
        self.batches.append((int(lengths.sum()), batch["input_ids"].numel(), int((lengths**2).sum())))
        return batch


def flops_per_token(model_dir: str, squares: int, tokens: int) -> float:
    """2 x (2N + attention) per token, N the parameters every token multiplies (all linear layers and the LM head;
    the input embedding is a lookup); causal attention costs 2 x layers x q_dim x L^2 for a sequence of L."""
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    h, layers = cfg["hidden_size"], cfg["num_hidden_layers"]
    q = cfg["num_attention_heads"] * (cfg.get("head_dim") or h // cfg["num_attention_heads"])
    kv = cfg["num_key_value_heads"] * (cfg.get("head_dim") or h // cfg["num_attention_heads"])
    inter = cfg["intermediate_size"]
    n = layers * (h * q + 2 * h * kv + q * h + 3 * h * inter) + cfg["vocab_size"] * h
    attention = 2 * layers * q * squares / max(tokens, 1)
    return 2 * (2 * n + attention)


def peak_bytes(cuda: bool) -> int:
    if cuda:
        return int(torch.cuda.max_memory_allocated())
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def rate(marks: list[tuple[float, int]], warmup: int) -> tuple[float, int]:
    """Tokens per second from the end of the warm-up steps to the last step, and how many steps that spans."""
    if len(marks) <= warmup:
        return 0.0, 0
    (t0, n0), (t1, n1) = marks[warmup - 1] if warmup else (marks[0][0], 0), marks[-1]
    return (n1 - n0) / (t1 - t0), len(marks) - warmup


def sage_config(cell: str, files: dict[str, str], sizes: Sizes, cuda: bool, out: Path) -> TrainingConfig:
    family, variant = cell.split("/")
    common: dict[str, Any] = dict(
        model_name=files["model"],
        output_dir=str(out),
        max_steps=sizes.warmup + sizes.steps,
        warmup_ratio=0.0,
        logging_steps=1,
        save_steps=10**6,
        report_to="none",
        seed=0,
    )
    if family == "qlora":  # as a small card's user runs it: the minimal preset, one 512-token record a step
        return PresetConfigs.minimal(
            data_path=files["qlora"],
            max_length=sizes.qlora,
            per_device_train_batch_size=1,
            gradient_accumulation_steps=1,
            **common,
        )
    packing = PACKING[variant.removeprefix("sage-")] if family == "mixed" else "auto"
    return TrainingConfig(
        data_path=files[family],
        max_length=sizes.mixed[1] if family == "mixed" else sizes.uniform,
        per_device_train_batch_size=sizes.batch,
        learning_rate=1e-4,
        bf16=cuda,
        lora=LORA,
        packing=packing,
        **common,
    )


def run_sage(shape: str, cell: str, files: dict[str, str], sizes: Sizes, cuda: bool, out: Path) -> CellResult:
    config = sage_config(cell, files, sizes, cuda, out)
    clock = StepClock(cuda)
    lora_trainer = LoRATrainer(config, callbacks=[clock])
    trainer, bridge = lora_trainer.build_trainer()
    stats = BatchStats(trainer.data_collator)
    trainer.data_collator = stats
    trainer.train()
    setup = bridge.setup
    totals = tuple(sum(b[i] for b in stats.batches) for i in range(3))
    result = measured(shape, cell, cuda, files, rate(clock.marks, sizes.warmup), totals)
    result.layout, result.attention, result.liger = setup.get("layout"), setup.get("attention"), bool(setup["liger"])
    result.estimate = estimate_for(files, config, stats, result)
    return result


def measured(
    shape: str, cell: str, cuda: bool, files: dict[str, str], speed: tuple[float, int], totals: tuple[int, ...]
) -> CellResult:
    """A cell's figures from its speed (tokens/s, timed steps) and its batches' totals (real tokens, slots, sum of
    squared sequence lengths)."""
    (tps, steps), (real, slots, squares) = speed, totals
    result = CellResult(shape, cell, "cuda" if cuda else "cpu", tokens_per_second=tps, steps=steps)
    result.padding_share = 1 - real / max(slots, 1)
    result.peak_memory_bytes = peak_bytes(cuda)
    result.tflops = tps * flops_per_token(files["model"], squares, real) / 1e12
    return result


def estimate_for(
    files: dict[str, str], config: TrainingConfig, stats: BatchStats, result: CellResult
) -> dict[str, Any]:
    """The dry run's peak memory for this run: for the fullest step its layout allows, and for the fullest step it
    actually trained (what the measured peak can be held against)."""
    model = json.loads((Path(files["model"]) / "config.json").read_text())
    lengths = files["lengths"][result.cell.split("/")[0]]
    rows = config.per_device_train_batch_size
    decision = decide_packing(config.packing, lengths, config.max_length, rows, config.method)
    worst = step_tokens(decision, lengths, config.max_length, rows)
    seen = max((b[0] if result.layout != "padded" else b[1]) for b in stats.batches)
    out: dict[str, Any] = {}
    for name, tokens in (("worst_step", worst), ("largest_step_seen", seen)):
        est = peak_memory(model, config, math.ceil(tokens / rows), liger=result.liger)
        out[name] = {
            "step_tokens": tokens,
            "peak_memory_bytes": est["peak_memory_bytes"],
            "allocated_bytes": est["peak_memory_bytes"] - CUDA_CONTEXT_BYTES,
            "breakdown": est["memory_breakdown"],
        }
    if result.device == "cuda" and result.peak_memory_bytes:
        out["estimate_over_measured"] = round(out["largest_step_seen"]["allocated_bytes"] / result.peak_memory_bytes, 3)
    return out


def encoded(model_dir: str, data: str) -> list[dict[str, list[int]]]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return [encode_conversation(tokenizer, c.messages) for c in load_conversations(data)]


def run_bare(shape: str, cell: str, files: dict[str, str], sizes: Sizes, cuda: bool) -> CellResult:
    from transformers import AutoTokenizer

    family = cell.split("/")[0]
    tokenizer = AutoTokenizer.from_pretrained(files["model"])
    rows = encoded(files["model"], files[family])
    random.Random(0).shuffle(rows)
    max_length = sizes.mixed[1] if family == "mixed" else sizes.uniform
    batches = (
        padded_batch(rows[(i * sizes.batch) % len(rows) :][: sizes.batch], tokenizer.pad_token_id, max_length)
        for i in range(10**9)
    )
    model = load_bare_model(Path(files["model"]), LORA.r, LORA.lora_alpha, "cuda" if cuda else "cpu")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    done: list[BareStep] = bare_train(model, batches, sizes.warmup + sizes.steps)
    marks = [(start, 0)] + [(s.ended, sum(d.tokens for d in done[: i + 1])) for i, s in enumerate(done)]
    totals = tuple(sum(getattr(s, f) for s in done) for f in ("tokens", "slots", "squares"))
    result = measured(shape, cell, cuda, files, rate(marks[1:], sizes.warmup), totals)
    result.layout, result.attention = "padded", "sdpa"
    return result


def run_peak(cuda: bool) -> CellResult:
    """The card's dense bf16 peak as PyTorch reaches it: 8192^3 products, mean of 10 after 3 warm-ups."""
    result = CellResult("-", "peak", "cuda" if cuda else "cpu")
    if not cuda:
        result.skipped = "no GPU"
        return result
    a, b = (torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(10):
        a @ b
    torch.cuda.synchronize()
    result.tflops = 10 * 2 * 8192**3 / (time.perf_counter() - start) / 1e12
    return result


def run_cell(shape: str, cell: str, files: dict[str, str], sizes: Sizes, out: Path) -> CellResult:
    cuda = torch.cuda.is_available()
    if cell == "peak":
        return run_peak(cuda)
    if cell.endswith("no-liger") and not (cuda and _liger_installed()):
        return CellResult(shape, cell, "cuda" if cuda else "cpu", skipped="Liger runs only on CUDA with liger-kernel")
    if cell.startswith("qlora") and not _bitsandbytes_installed():
        return CellResult(shape, cell, "cuda" if cuda else "cpu", skipped="bitsandbytes is not installed")
    if cell.endswith("/bare"):
        return run_bare(shape, cell, files, sizes, cuda)
    return run_sage(shape, cell, files, sizes, cuda, out)


def _liger_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("liger_kernel") is not None


def _bitsandbytes_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("bitsandbytes") is not None


# -- the whole run -----------------------------------------------------------------------------------------------


def plan(shapes: list[str] | None, patterns: list[str] | None, cuda: bool) -> list[tuple[str, str]]:
    chosen = {s: list(CELLS) for s in shapes} if shapes else dict(DEFAULT_PLAN)
    cells = [(s, c) for s, names in chosen.items() for c in names]
    if cuda:
        cells.append(("-", "peak"))
    if patterns:
        cells = [(s, c) for s, c in cells if any(fnmatch.fnmatch(c, p) for p in patterns)]
    return cells


def child_main(job: tuple[str, str, dict[str, Any], dict[str, Any], str], result: str, log: str) -> None:
    """A cell's process (or a shape's preparation): its output goes to its own log, its answer to ``result``."""
    shape, cell, files, sizes_dict, work = job
    out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(out, 1)
    os.dup2(out, 2)
    sizes = Sizes(**sizes_dict)
    if cell == "prepare":
        answer: dict[str, Any] = prepare(shape, Path(work), sizes, torch.cuda.is_available())
    else:
        if cell == "uniform/sage-no-liger":
            os.environ["SAGE_TRAIN_LIGER_KERNELS"] = "false"  # read by the settings when the trainer is built
        answer = asdict(run_cell(shape, cell, files, sizes, Path(work) / "runs" / cell.replace("/", "-")))
    Path(result).write_text(json.dumps(answer))


def ratios(results: list[CellResult], peak: float | None) -> dict[str, Any]:
    """The figures the issue's targets are stated in, per shape."""
    by = {(r.shape, r.cell): r for r in results if not r.skipped and r.tokens_per_second}
    out: dict[str, Any] = {}
    for shape in sorted({r.shape for r in results if r.shape != "-"}):

        def tps(cell: str, shape: str = shape) -> float | None:
            r = by.get((shape, cell))
            return r.tokens_per_second if r else None

        pairs = {
            "uniform_sage_over_bare": ("uniform/sage", "uniform/bare"),
            "liger_on_over_off": ("uniform/sage", "uniform/sage-no-liger"),
            "mixed_packed_over_bare": ("mixed/sage-packed", "mixed/bare"),
            "mixed_auto_over_bare": ("mixed/sage-auto", "mixed/bare"),
            "mixed_padded_over_bare": ("mixed/sage-padded", "mixed/bare"),
            "mixed_packed_over_uniform": ("mixed/sage-packed", "uniform/sage"),
        }
        found = {}
        for name, (top, bottom) in pairs.items():
            a, b = tps(top), tps(bottom)
            if a and b:
                found[name] = round(a / b, 3)
        uniform = by.get((shape, "uniform/sage"))
        if uniform and peak:
            found["uniform_share_of_peak"] = round(uniform.tflops / peak, 3)
        out[shape] = found
    return out


TARGETS = {  # (shape, figure, at least) from issue 27, measured on an H100/H200
    ("1.5b", "mixed_packed_over_uniform"): 0.85,
    ("1.5b", "mixed_packed_over_bare"): 3.0,
    ("1.5b", "mixed_auto_over_bare"): 3.0,
    ("7b", "uniform_tflops"): 435.0,
}


def verdicts(results: list[CellResult], found: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for (shape, figure), least in TARGETS.items():
        value = found.get(shape, {}).get(figure)
        if figure == "uniform_tflops":
            cell = next((r for r in results if r.shape == shape and r.cell == "uniform/sage" and not r.skipped), None)
            value = round(cell.tflops, 1) if cell else None
        if value is not None:
            out[f"{shape} {figure} >= {least}"] = {"value": value, "met": value >= least}
    qlora = next((r for r in results if r.cell == "qlora/sage" and r.shape == "7b" and r.peak_memory_bytes), None)
    if qlora is not None and qlora.device == "cuda":
        value = round((qlora.peak_memory_bytes or 0) / GIB, 2)
        out["7b qlora peak GiB <= 7.5"] = {"value": value, "met": value <= 7.5}
    for r in results:
        ratio = r.estimate.get("estimate_over_measured")
        if ratio is not None:
            out[f"{r.shape} {r.cell} estimate within 15%"] = {"value": ratio, "met": abs(ratio - 1) <= 0.15}
    return out


def table(results: list[CellResult]) -> str:
    lines = [
        "| shape | cell | layout | attention | liger | tok/s | TFLOP/s | padding | peak GiB | estimate GiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if r.skipped:
            lines.append(f"| {r.shape} | {r.cell} | skipped: {r.skipped} | | | | | | | |")
            continue
        est = r.estimate.get("largest_step_seen", {}).get("allocated_bytes")
        cols = [
            r.shape,
            r.cell,
            r.layout or "-",
            r.attention or "-",
            str(r.liger),
            f"{r.tokens_per_second:,.0f}",
            f"{r.tflops:.1f}",
            f"{r.padding_share:.0%}",
            f"{r.peak_memory_bytes / GIB:.1f}" if r.peak_memory_bytes else "-",
            f"{est / GIB:.1f}" if est else "-",
        ]
        lines.append("| " + " | ".join(cols) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--shape",
        action="append",
        choices=sorted(SHAPES),
        help="shapes to run (repeatable); default on a GPU: 1.5b (all cells but qlora) and 7b (uniform/sage and qlora)",
    )
    parser.add_argument("--cells", action="append", help="glob of cell names to run, e.g. 'mixed/*' (repeatable)")
    parser.add_argument("--warmup", type=int, help="steps before timing (default: 5 on a GPU, 1 on a CPU)")
    parser.add_argument("--steps", type=int, help="timed steps (default: 10 on a GPU, 3 on a CPU)")
    parser.add_argument(
        "--work",
        type=Path,
        default=Path(os.environ.get("TMPDIR", "/tmp")) / "sage-gpu-train",
        help="where models and data are built once and kept",
    )
    parser.add_argument("--json", type=Path, help="write every cell, the ratios and the targets here")
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    if not cuda and not args.shape:
        parser.error("no GPU here: name a shape a CPU can train, e.g. --shape tiny")
    sizes = Sizes.for_device(cuda, args.warmup, args.steps)
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    results: list[CellResult] = []
    prepared: dict[str, dict[str, Any]] = {}
    for shape, cell in plan(args.shape, args.cells, cuda):
        if shape != "-" and shape not in prepared:
            prepared[shape] = spawn(shape, "prepare", args, sizes, {})
        result = CellResult(**spawn(shape, cell, args, sizes, prepared.get(shape, {})))
        results.append(result)
        print(
            f"{shape} {cell}: {result.tokens_per_second:,.0f} tok/s, {result.tflops:.1f} TFLOP/s"
            + (f" (skipped: {result.skipped})" if result.skipped else ""),
            flush=True,
        )
    peak = next((r.tflops for r in results if r.cell == "peak" and not r.skipped), None)
    found = ratios(results, peak)
    summary = {
        "machine": machine(),
        "sizes": asdict(sizes),
        "seconds": round(time.monotonic() - started, 1),
        "peak_bf16_tflops": peak,
        "cells": [asdict(r) for r in results],
        "ratios": found,
        "targets": verdicts(results, found) if cuda else {},
    }
    print(table(results))
    print(json.dumps({k: summary[k] for k in ("ratios", "targets", "seconds")}, indent=2))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))


# Cells run in processes forked from a server that has imported the training stack once (not from this process,
# which may have touched CUDA): each has its own CUDA context and peak memory, and none pays the imports again.
PRELOAD = ["torch", "transformers", "peft", "trl", "datasets", "sage_ft.training.trainer", "bare_loop"]


def spawn(shape: str, cell: str, args: argparse.Namespace, sizes: Sizes, files: dict[str, Any]) -> dict[str, Any]:
    """Run one cell (or the preparation of a shape) in a fresh process and return what it wrote; a cell that fails
    comes back as skipped with the end of its log, so one broken cell does not cost the others their run."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    result = args.work / "result.json"
    result.unlink(missing_ok=True)
    log = args.work / "logs" / f"{shape}-{cell.replace('/', '-')}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    job = (shape, cell, files, asdict(sizes), str(args.work))
    process = context.Process(target=child_main, args=(job, str(result), str(log)))
    process.start()
    process.join()
    if process.exitcode == 0 and result.exists():
        answer: dict[str, Any] = json.loads(result.read_text())
        return answer
    tail = log.read_text(errors="replace")[-4000:] if log.exists() else ""
    print(tail, file=sys.stderr)
    if cell == "prepare":
        raise SystemExit(f"preparing shape {shape} failed (exit {process.exitcode}); log: {log}")
    last = [line for line in tail.splitlines() if line.strip()][-1:] or ["no output"]
    return asdict(CellResult(shape, cell, "?", skipped=f"failed (exit {process.exitcode}): {last[0]}"))


def machine() -> dict[str, Any]:
    import platform

    import transformers

    info: dict[str, Any] = {
        "platform": platform.machine(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    for name in ("trl", "peft", "liger_kernel", "bitsandbytes", "flash_attn"):
        try:
            info[name] = __import__(name).__version__
        except (ImportError, AttributeError):
            info[name] = None
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


if __name__ == "__main__":
    main()
