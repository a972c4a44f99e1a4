"""sage-ft against LLaMA-Factory on identical work, side by side in one run (issue 17). ``make bench-peer``.

Identical work: the same model directory and records, asserted-identical token ids and labels, LoRA r=16 / alpha 32
on all linear layers, no dropout, batch 4, one epoch (about ``--steps`` steps), learning rate 1e-4 with a linear
schedule and no warmup, fp32, SDPA, no gradient checkpointing, AdamW (torch), seed 42, 2 threads. Each run is its
own process; pairs alternate which side goes first.

Cells: two model shapes x two data sets.
- ``h512``: hidden 512, 4 layers, 8 heads, the tiny tokenizer's vocabulary (the LM head is about 7 % of FLOPs);
  ``h256-head27``: hidden 256, 4 layers, 4 heads and a vocabulary padded so that the head is about 27 % of the FLOPs,
  as in Qwen2.5-0.5B.
- ``uniform``: every record exactly 256 tokens (no padding on either side), no packing; ``mixed``: 20-500 tokens,
  packed on both sides (LLaMA-Factory ``neat_packing``: rows of ``cutoff_len`` with a block-diagonal mask; sage-ft
  ``packing=True``). The prompt is 25-65 % of each record (uniformly drawn), the rest is the trained answer.

Both sides count the same tokens: the data set's tokens over HF Trainer's ``train_runtime`` (the training loop,
without model loading or tokenization). Also reported: whole-process wall time, peak RSS (``wait4``) and the
training loss. The last line is ``peer: min ratio <x> over <n> cells``, the smallest of the cells' median ratios.

Usage: python benchmarks/peer_llamafactory.py --peer-python .venv-peer/bin/python [--pairs 5] [--steps 100]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BATCH, LR, SEED, THREADS = 4, 1e-4, 42, "2"
SHAPES: dict[str, dict[str, Any]] = {
    "h512": dict(hidden_size=512, num_layers=4, num_heads=8),
    # 13 h^2 of linear work a layer (4 h^2 attention, 9 h^2 MLP): V h / (4 * 13 h^2 + V h) = 0.27 at V = 19.2 h
    "h256-head27": dict(hidden_size=256, num_layers=4, num_heads=4, vocab_size=4928),
}
DATASETS = {"uniform": (256, 256, False), "mixed": (20, 500, True)}  # (min tokens, max tokens, packing)


def single_token_words(tokenizer: Any) -> list[str]:
    words = sorted(t[1:] for t in tokenizer.get_vocab() if t.startswith("Ġ") and t[1:].isalpha() and len(t) > 3)
    return [w for w in words if len(tokenizer.encode(" " + w, add_special_tokens=False)) == 1]


def make_records(tokenizer: Any, lo: int, hi: int, token_budget: int, seed: int) -> list[dict[str, str]]:
    """Alpaca records of exactly ``lo..hi`` tokens each (chat template included) until ``token_budget`` tokens."""
    from sage_ft.training.chat import encode_conversation

    words, rng = single_token_words(tokenizer), random.Random(seed)

    def length(prompt: list[str], answer: list[str]) -> int:
        messages = [{"role": "user", "content": " ".join(prompt)}, {"role": "assistant", "content": " ".join(answer)}]
        return len(encode_conversation(tokenizer, messages)["input_ids"])

    records: list[dict[str, str]] = []
    total = 0
    while total < token_budget:
        target = rng.randint(lo, hi)
        prompt = [rng.choice(words) for _ in range(max(1, int(target * rng.uniform(0.25, 0.65))))]
        answer = [rng.choice(words) for _ in range(max(1, target - len(prompt) - 12))]
        for _ in range(4):  # every word after the first is one token, so the length converges in a step or two
            gap = target - length(prompt, answer)
            if gap > 0:
                answer += [rng.choice(words) for _ in range(gap)]
            elif gap < 0:
                prompt = prompt[: max(1, len(prompt) + gap)] if len(answer) <= -gap else prompt
                answer = answer[: len(answer) + gap] if len(answer) > -gap else answer
        if length(prompt, answer) != target:
            continue
        records.append({"instruction": " ".join(prompt), "input": "", "output": " ".join(answer)})
        total += target
    return records


def build_cell(root: Path, shape: str, data: str, steps: int) -> dict[str, Any]:
    from transformers import AutoTokenizer

    from sage_ft.training.tiny_model import build_tiny_model

    model_dir = build_tiny_model(f"peer-{shape}", models_root=root / "models", seed=0, **SHAPES[shape])
    config = model_dir / "tokenizer_config.json"  # a class both transformers versions know, so both tokenize alike
    config.write_text(json.dumps({**json.loads(config.read_text()), "tokenizer_class": "PreTrainedTokenizerFast"}))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    lo, hi, packing = DATASETS[data]
    budget = int(steps * BATCH * (256 if not packing else 512 * 0.97))
    cell_dir = root / f"{shape}-{data}"
    cell_dir.mkdir(parents=True, exist_ok=True)
    records = make_records(tokenizer, lo, hi, budget, seed=sorted(DATASETS).index(data))
    (cell_dir / "data.json").write_text(json.dumps(records))
    (cell_dir / "dataset_info.json").write_text(json.dumps({"bench": {"file_name": "data.json"}}))
    return dict(
        name=f"{shape}/{data}",
        model=str(model_dir),
        dir=cell_dir,
        packing=packing,
        records=records,
        tokenizer=tokenizer,
    )


def lf_args(cell: dict[str, Any], out: Path, packing: bool) -> dict[str, Any]:
    return dict(
        model_name_or_path=cell["model"],
        stage="sft",
        do_train=True,
        finetuning_type="lora",
        lora_rank=16,
        lora_alpha=32,
        lora_dropout=0.0,
        lora_target="all",
        dataset="bench",
        dataset_dir=str(cell["dir"]),
        template="sage_chatml",
        default_system="",
        cutoff_len=512,
        overwrite_cache=True,
        output_dir=str(out),
        per_device_train_batch_size=BATCH,
        gradient_accumulation_steps=1,
        learning_rate=LR,
        num_train_epochs=1.0,
        lr_scheduler_type="linear",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        logging_steps=10,
        save_strategy="no",
        report_to="none",
        seed=SEED,
        data_seed=SEED,
        flash_attn="sdpa",
        bf16=False,
        fp16=False,
        disable_gradient_checkpointing=True,
        optim="adamw_torch",
        packing=packing,
        neat_packing=packing,
        dataloader_num_workers=0,
        preprocessing_num_workers=None,
        trust_remote_code=False,
        plot_loss=False,
    )


def sage_config(cell: dict[str, Any], out: Path) -> dict[str, Any]:
    return dict(
        model_name=cell["model"],
        data_path=str(cell["dir"] / "data.json"),
        output_dir=str(out),
        max_length=512,
        packing=cell["packing"],
        lora=dict(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear"),
        per_device_train_batch_size=BATCH,
        gradient_accumulation_steps=1,
        learning_rate=LR,
        num_train_epochs=1.0,
        lr_scheduler_type="linear",
        warmup_ratio=0.0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        logging_steps=10,
        save_steps=100_000,
        report_to=["none"],
        seed=SEED,
        gradient_checkpointing=False,
        optim="adamw_torch",
    )


def sage_child(config_file: str) -> None:
    """Our side, in its own process: the documented ``LoRATrainer`` API, as the worker runs it."""
    from sage_ft import TrainingConfig
    from sage_ft.training import LoRATrainer

    result = LoRATrainer(TrainingConfig(**json.loads(Path(config_file).read_text()))).train()
    losses = result.losses
    Path(config_file).with_suffix(".out.json").write_text(
        json.dumps(
            dict(
                train_runtime=result.metrics["train_runtime"],
                train_loss=result.metrics["train_loss"],
                last_loss=losses[-1] if losses else None,
                steps=result.global_step,
            )
        )
    )


def run_child(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{argv[:3]} failed ({proc.returncode}):\n{err.decode()[-3000:]}")
    return time.perf_counter() - start, usage.ru_maxrss / 1024


def child_env(extra_path: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHONPATH", "CUDA"))}
    env.update(
        OMP_NUM_THREADS=THREADS,
        MKL_NUM_THREADS=THREADS,
        TOKENIZERS_PARALLELISM="false",
        DISABLE_VERSION_CHECK="1",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
    )
    if extra_path:
        env["PYTHONPATH"] = extra_path
    return env


def check_ids(cell: dict[str, Any], peer: str, stub: str, work: Path) -> int:
    """LLaMA-Factory's token ids and labels, record by record, equal ours; returns the data set's tokens."""
    from sage_ft.training.chat import encode_conversation

    args_file, out = work / "ids-args.json", work / "ids.json"
    args_file.write_text(json.dumps(lf_args(cell, work / "ids-out", packing=False)))
    run_child([peer, str(HERE / "peer_lf_child.py"), "ids", str(args_file), str(out)], child_env(stub))
    theirs = json.loads(out.read_text())
    assert len(theirs) == len(cell["records"]), (len(theirs), len(cell["records"]))
    for i, (rec, row) in enumerate(zip(cell["records"], theirs, strict=True)):
        messages = [{"role": "user", "content": rec["instruction"]}, {"role": "assistant", "content": rec["output"]}]
        enc = encode_conversation(cell["tokenizer"], messages)
        labels = [t if m else -100 for t, m in zip(enc["input_ids"], enc["assistant_masks"], strict=True)]
        if enc["input_ids"] != row["input_ids"] or labels != row["labels"]:
            raise SystemExit(f"{cell['name']}: record {i} tokenizes differently on the two sides")
    return sum(len(row["input_ids"]) for row in theirs)


def one_run(side: str, cell: dict[str, Any], peer: str, stub: str, work: Path) -> dict[str, Any]:
    out = Path(tempfile.mkdtemp(dir=work, prefix=f"{side}-"))
    if side == "llamafactory":
        args_file = out / "args.json"
        args_file.write_text(json.dumps(lf_args(cell, out / "run", packing=cell["packing"])))
        wall, rss = run_child([peer, str(HERE / "peer_lf_child.py"), "train", str(args_file)], child_env(stub))
        res = json.loads((out / "run" / "train_results.json").read_text())
        history = json.loads((out / "run" / "trainer_state.json").read_text())["log_history"]
        logged = [h["loss"] for h in history if "loss" in h]
        steps = history[-1]["step"]
        runtime, loss, last = res["train_runtime"], res["train_loss"], logged[-1] if logged else None
    else:
        cfg_file = out / "config.json"
        cfg_file.write_text(json.dumps(sage_config(cell, out / "run")))
        wall, rss = run_child([sys.executable, __file__, "--child", str(cfg_file)], child_env())
        res = json.loads(cfg_file.with_suffix(".out.json").read_text())
        runtime, loss, last, steps = res["train_runtime"], res["train_loss"], res["last_loss"], res["steps"]
    return dict(tokens_per_s=cell["tokens"] / runtime, wall=wall, rss=rss, loss=loss, last_loss=last, steps=steps)


KEYS = ("tokens_per_s", "wall", "rss", "loss", "last_loss")


def summarise(cell: dict[str, Any], runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    def med(side: str, key: str) -> float | None:
        values = [r[key] for r in runs[side] if r[key] is not None]  # no logged loss in a run shorter than 10 steps
        return statistics.median(values) if values else None

    pairs = list(zip(runs["sage"], runs["llamafactory"], strict=True))
    ratios = [s["tokens_per_s"] / p["tokens_per_s"] for s, p in pairs]
    return dict(
        cell=cell["name"],
        tokens=cell["tokens"],
        records=len(cell["records"]),
        ratio=statistics.median(ratios),
        ratio_range=(min(ratios), max(ratios)),
        **{f"{side}_{key}": med(side, key) for side in runs for key in KEYS},
        sage_steps=runs["sage"][0]["steps"],
        llamafactory_steps=runs["llamafactory"][0]["steps"],
        loss_ratio=statistics.median(s["loss"] / p["loss"] for s, p in pairs),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peer-python", default=".venv-peer/bin/python")
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=100, help="about this many steps: the epoch's size")
    parser.add_argument("--cells", default="", help="comma-separated subset, e.g. h512/mixed")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return sage_child(args.child)
    work = Path(tempfile.mkdtemp(prefix="peer-bench-"))
    stub = work / "stub"
    (stub / "torchaudio").mkdir(parents=True)
    (stub / "torchaudio" / "__init__.py").write_text("")  # LLaMA-Factory's mm_plugin imports it unconditionally
    results = []
    for shape in SHAPES:
        for data in DATASETS:
            if args.cells and f"{shape}/{data}" not in args.cells.split(","):
                continue
            cell = build_cell(work, shape, data, args.steps)
            cell["tokens"] = check_ids(cell, args.peer_python, str(stub), work)
            runs: dict[str, list[dict[str, Any]]] = {"sage": [], "llamafactory": []}
            for pair in range(args.pairs):
                order = ("llamafactory", "sage") if pair % 2 == 0 else ("sage", "llamafactory")
                for side in order:
                    runs[side].append(one_run(side, cell, args.peer_python, str(stub), work))
                    r = runs[side][-1]
                    print(
                        f"  {cell['name']:<20} pair {pair} {side:<12} {r['tokens_per_s']:8.0f} tok/s  "
                        f"wall {r['wall']:6.1f} s  rss {r['rss']:6.0f} MiB  loss {r['loss']:.4f}",
                        flush=True,
                    )
            results.append(summarise(cell, runs))
            print(json.dumps(results[-1]), flush=True)
    report(results, args)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(
        "\n| cell | tokens | sage tok/s | LF tok/s | ratio (median, range) | wall sage / LF | peak RSS sage / LF "
        "(MiB) | train loss sage / LF | last logged loss sage / LF |\n" + "|---" * 9 + "|"
    )
    for r in results:
        lo, hi = r["ratio_range"]
        print(
            f"| {r['cell']} | {r['tokens']} | {r['sage_tokens_per_s']:.0f} | {r['llamafactory_tokens_per_s']:.0f} | "
            f"**{r['ratio']:.2f}x** ({lo:.2f}-{hi:.2f}) | {r['sage_wall']:.0f} / {r['llamafactory_wall']:.0f} s | "
            f"{r['sage_rss']:.0f} / {r['llamafactory_rss']:.0f} | {r['sage_loss']:.4f} / "
            f"{r['llamafactory_loss']:.4f} | {_num(r['sage_last_loss'])} / "
            f"{_num(r['llamafactory_last_loss'])} |"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if results:
        print(f"peer: min ratio {min(r['ratio'] for r in results):.2f} over {len(results)} cells")


if __name__ == "__main__":
    main()
