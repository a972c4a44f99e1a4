"""LLaMA-Factory's side of ``benchmarks/peer_llamafactory.py``. Runs inside the peer virtualenv, never in ours.

    python peer_lf_child.py ids  ARGS.json OUT.json   # LLaMA-Factory's own tokenization of the data set
    python peer_lf_child.py train ARGS.json           # one training run (llamafactory-cli train, in-process)

One template is registered first: LLaMA-Factory's ``qwen`` (ChatML) without the trained newline it puts after the
answer's closing ``<|im_end|>``. sage-ft's encoding ends at ``<|im_end|>``, so with it both sides see the same token
ids and train the same labels, which the orchestrator asserts before it times anything.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def register() -> None:
    from llamafactory.data.formatter import StringFormatter
    from llamafactory.data.template import register_template

    register_template(
        name="sage_chatml",
        format_user=StringFormatter(slots=["<|im_start|>user\n{{content}}<|im_end|>\n<|im_start|>assistant\n"]),
        format_assistant=StringFormatter(slots=["{{content}}<|im_end|>"]),
        format_system=StringFormatter(slots=["<|im_start|>system\n{{content}}<|im_end|>\n"]),
        default_system="",
        stop_words=["<|im_end|>"],
        replace_eos=True,
    )


def ids(args: dict, out: Path) -> None:
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    model_args, data_args, training_args, _, _ = get_train_args(args)
    module = load_tokenizer(model_args)
    template = get_template_and_fix_tokenizer(module["tokenizer"], data_args)
    rows = get_dataset(template, model_args, data_args, training_args, stage="sft", **module)["train_dataset"]
    out.write_text(json.dumps([{"input_ids": r["input_ids"], "labels": r["labels"]} for r in rows]))


def main() -> None:
    mode, args = sys.argv[1], json.loads(Path(sys.argv[2]).read_text())
    register()
    if mode == "ids":
        ids(args, Path(sys.argv[3]))
    else:
        from llamafactory.train.tuner import run_exp

        run_exp(args)


if __name__ == "__main__":
    main()
