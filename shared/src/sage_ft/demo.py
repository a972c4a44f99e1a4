"""``make demo`` (for now): fine-tune the offline tiny model on a built-in dataset and ask it a trained question.

Runs entirely on CPU with no network. Later issues point ``make demo`` at the full stack (quickstart, then chat).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

# bitsandbytes warns at import time about an optional CPU kernel package that only a hub download provides
logging.getLogger("bitsandbytes").setLevel(logging.ERROR)

from sage_ft import LoRAConfig, PresetConfigs  # noqa: E402
from sage_ft.data import builtin_dataset_path, load_conversations  # noqa: E402
from sage_ft.training import LoRATrainer, ProgressEvent, TrainingCallback  # noqa: E402
from sage_ft.training.inference import generate_reply, load_for_inference  # noqa: E402
from sage_ft.training.tiny_model import build_tiny_model  # noqa: E402


class _Printer(TrainingCallback):
    def on_event(self, event: ProgressEvent) -> None:
        if event.kind == "log" and event.loss is not None:
            rate = f"{event.tokens_per_second:,.0f} tok/s" if event.tokens_per_second else ""
            eta = f"eta {event.eta_seconds:.0f}s" if event.eta_seconds is not None else ""
            print(f"  step {event.step:>4}/{event.total_steps}  loss {event.loss:7.4f}  {rate}  {eta}", flush=True)


def _quiet_libraries() -> None:
    """The demo prints its own progress; library progress bars and optional-kernel notices are noise here."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--task", default="code", choices=["code", "qa", "chat", "instruction"])
    parser.add_argument("--workdir", default=".sage-demo", help="where the tiny model and outputs go")
    parser.add_argument("--epochs", type=float, default=100)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    _quiet_libraries()
    work = Path(args.workdir).resolve()

    print("1/3 building the offline tiny model (BPE tokenizer + random Qwen2, head_dim 64)")
    model_dir = build_tiny_model("sage-tiny", models_root=work / "models")
    data = builtin_dataset_path(args.task)
    config = PresetConfigs.cpu(
        model_name=str(model_dir),
        data_path=str(data),
        output_dir=str(work / args.task),
        num_train_epochs=args.epochs,
        learning_rate=3e-3,
        per_device_train_batch_size=8,
        logging_steps=20,
        save_steps=200,
        warmup_ratio=0.0,
        lora=LoRAConfig(r=16, lora_alpha=32, lora_dropout=0.0),
    )
    print(f"2/3 fine-tuning on the built-in '{args.task}' dataset ({data.name}) with LoRA r=16")
    t0 = time.monotonic()
    result = LoRATrainer(config, callbacks=[_Printer()]).train()
    losses = result.losses
    print(
        f"    done in {time.monotonic() - t0:.0f}s: {result.global_step} steps, loss {losses[0]:.3f} -> "
        f"{losses[-1]:.3f}; adapter at {result.adapter_dir}"
    )

    print("3/3 asking the fine-tuned model questions from its training set")
    model, tokenizer = load_for_inference(result.adapter_dir or "")
    convs = load_conversations(data)
    correct = 0
    for conv in convs[:3]:
        prompt = [m for m in conv.messages if m["role"] != "assistant"][:2]
        expected = next(m["content"] for m in conv.messages if m["role"] == "assistant")
        answer = generate_reply(model, tokenizer, prompt, max_new_tokens=160)
        correct += answer == expected.strip()
        print(f"\n  Q: {prompt[-1]['content']}\n  A: " + answer.replace("\n", "\n     "))
    print(f"\n{correct}/3 answers reproduce the training data exactly.")
    return 0 if correct else 1


if __name__ == "__main__":
    sys.exit(main())
