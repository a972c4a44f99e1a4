"""Kill-and-resume exactness, merge equivalence and atomicity, and the OOM message."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sage_ft import MergeError, TrainingConfig, TrainingOOMError
from sage_ft.training import LoRATrainer, merge_adapter
from sage_ft.training.inference import load_for_inference

from .test_training import qa_config

pytestmark = pytest.mark.slow

KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from sage_ft import TrainingConfig
    from sage_ft.training import LoRATrainer, TrainingCallback

    class KillAfterCheckpoint(TrainingCallback):
        def on_event(self, event):
            if event.kind == "checkpoint" and event.step == int(sys.argv[2]):
                os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, like a lost worker

    LoRATrainer(TrainingConfig.load(sys.argv[1]), callbacks=[KillAfterCheckpoint()]).train()
    """
)


def test_killed_run_resumes_from_newest_checkpoint_exactly(tiny_model: Path, qa_file: Path, tmp_path: Path) -> None:
    common = dict(num_train_epochs=3, save_steps=5, save_total_limit=None, report_to="none")
    straight = LoRATrainer(qa_config(tiny_model, qa_file, tmp_path / "straight", **common)).train()

    cfg = qa_config(tiny_model, qa_file, tmp_path / "killed", **common)
    cfg_path = cfg.save(tmp_path / "killed.yaml")
    proc = subprocess.run([sys.executable, "-c", KILLER, str(cfg_path), "10"], capture_output=True, timeout=300)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    ckpts = sorted(p.name for p in (tmp_path / "killed" / "checkpoints").glob("checkpoint-*"))
    assert ckpts == ["checkpoint-10", "checkpoint-5"] and not (tmp_path / "killed" / "adapter").exists()

    resumed = LoRATrainer(TrainingConfig.load(cfg_path)).train(resume_from_checkpoint=True)
    assert resumed.resumed_from and resumed.resumed_from.endswith("checkpoint-10")
    assert resumed.global_step == straight.global_step == 15
    a = load_file(straight.adapter_dir / "adapter_model.safetensors")
    b = load_file(resumed.adapter_dir / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4)


@pytest.fixture(scope="module")
def adapter(tiny_model: Path, qa_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("merge-src")
    result = LoRATrainer(qa_config(tiny_model, qa_file, out, num_train_epochs=4, report_to="none")).train()
    assert result.adapter_dir is not None
    return result.adapter_dir


def test_merged_logits_match_base_plus_adapter(adapter: Path, tmp_path: Path) -> None:
    merged_dir = merge_adapter(adapter, tmp_path / "merged")
    names = {p.name for p in merged_dir.iterdir()}
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json"} <= names
    assert not any(n.endswith(".bin") for n in names)
    assert "chat_template.jinja" in names or "chat_template" in (merged_dir / "tokenizer_config.json").read_text()
    peft_model, tok = load_for_inference(adapter)
    merged, _ = load_for_inference(merged_dir)
    ids = tok("<|im_start|>user\nWhat is the code word number 3?<|im_end|>\n", return_tensors="pt").input_ids
    with torch.no_grad():
        want = peft_model(ids).logits
        got = merged(ids).logits
        base_logits = peft_model.get_base_model()
        with peft_model.disable_adapter():
            base_only = base_logits(ids).logits
    assert (want - base_only).abs().max() > 1e-2, "the adapter changes the logits, so the comparison means something"
    torch.testing.assert_close(got, want, atol=1e-3, rtol=0)
    assert json.loads((merged_dir / "sage_ft_merge.json").read_text())["dtype"] == "float32"


def test_failed_merge_leaves_nothing(adapter: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import PreTrainedTokenizerBase

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    # weights are written first; the tokenizer save fails part-way through the merge
    monkeypatch.setattr(PreTrainedTokenizerBase, "save_pretrained", disk_full)
    with pytest.raises(MergeError, match="No space left"):
        merge_adapter(adapter, tmp_path / "merged")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(MergeError, match="not a LoRA adapter"):
        merge_adapter(tmp_path, tmp_path / "x")


OOM_SCRIPT = textwrap.dedent(
    """
    import resource, sys
    from sage_ft import TrainingConfig, TrainingOOMError
    from sage_ft.training import LoRATrainer

    trainer = LoRATrainer(TrainingConfig.load(sys.argv[1]))
    trainer.build_trainer()  # warm imports so the limit below only bites on training memory
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    used = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (used + 600 * 2**20, hard))
    try:
        trainer.train()
    except TrainingOOMError as err:
        print("OOM-MESSAGE-START"); print(err); sys.exit(3)
    """
)


def test_out_of_memory_gives_ordered_advice(tiny_model: Path, tmp_path: Path) -> None:
    data = tmp_path / "long.jsonl"
    data.write_text("".join(json.dumps({"text": f"word{i} " * 1500}) + "\n" for i in range(64)))
    cfg = TrainingConfig(
        model_name=str(tiny_model),
        data_path=str(data),
        output_dir=str(tmp_path / "o"),
        max_length=2048,
        per_device_train_batch_size=64,
        max_steps=1,
        report_to="none",
    )
    path = cfg.save(tmp_path / "oom.yaml")
    proc = subprocess.run([sys.executable, "-c", OOM_SCRIPT, str(path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 3, (proc.stdout[-2000:], proc.stderr[-3000:])
    message = proc.stdout.split("OOM-MESSAGE-START", 1)[1]
    steps = [
        "load_in_8bit=True or load_in_4bit=True",
        "max_length=512",
        "per_device_train_batch_size=1",
        "gradient_checkpointing=True",
        "lora.r=4",
    ]
    positions = [message.index(s) for s in steps]
    assert positions == sorted(positions)
    assert "Traceback" not in message and issubclass(TrainingOOMError, MemoryError)
