"""DPO through the Python API, on CPU with the offline tiny model.

SFT first teaches the *rejected* answers (the control: that model says them). DPO from that fine-tune then makes
the preferred answers the greedy ones. Around it: what the reference model is, how pairs are tokenized (two chat
templates), exact resume after a kill, a stop request, quantized bases, TensorBoard, and fine-tuning a fine-tune with
SFT (old facts stay).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from sage_ft import DPOSettings, LoRAConfig, TrainingConfig
from sage_ft.training import LoRATrainer, RecordingCallback
from sage_ft.training.inference import generate_reply, load_for_inference

from .test_resume_merge import KILLER
from .test_training import StopAt

pytestmark = pytest.mark.slow

PREFERRED = [
    "apple river",
    "blue stone",
    "cold fire",
    "dark moon",
    "eager fox",
    "fast wind",
    "green hill",
    "high tower",
]
REJECTED = ["red sun", "silver bird", "tall grass", "open sea", "pale rose", "quiet lake", "noble tree", "magic lamp"]
QUESTIONS = [f"What is the code word number {i}?" for i in range(len(PREFERRED))]
# plain DPO on this tiny model pushes both answers down until the reply is empty (measured: reward accuracy 1.0,
# 0 of 8 preferred); the chosen side's supervised term (RPO, LLaMA-Factory's pref_ftx) keeps it likely
DPO = DPOSettings(beta=0.1, sft_weight=1.0)


def preference_lines(fmt: str = "trl") -> str:
    rows = []
    for q, good, bad in zip(QUESTIONS, PREFERRED, REJECTED, strict=True):
        if fmt == "openai":
            rows.append(
                {
                    "input": {"messages": [{"role": "user", "content": q}]},
                    "preferred_output": [{"role": "assistant", "content": good}],
                    "non_preferred_output": [{"role": "assistant", "content": bad}],
                }
            )
        else:
            rows.append(
                {
                    "prompt": [{"role": "user", "content": q}],
                    "chosen": [{"role": "assistant", "content": good}],
                    "rejected": [{"role": "assistant", "content": bad}],
                }
            )
    return "".join(json.dumps(r) + "\n" for r in rows)


def sft_lines(answers: list[str], questions: list[str] = QUESTIONS) -> str:
    return "".join(
        json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}) + "\n"
        for q, a in zip(questions, answers, strict=True)
    )


def config(model: Path, data: Path, out: Path, **kw: Any) -> TrainingConfig:
    base: dict[str, Any] = dict(
        model_name=str(model),
        data_path=str(data),
        output_dir=str(out),
        num_train_epochs=30,
        learning_rate=3e-3,
        per_device_train_batch_size=4,
        max_length=128,
        logging_steps=2,
        save_steps=1000,
        warmup_ratio=0.0,
        report_to="none",
        lora=LoRAConfig(r=16, lora_alpha=32, lora_dropout=0.0),
    )
    base.update(kw)
    return TrainingConfig(**base)


def answers(adapter: Path, questions: list[str] = QUESTIONS) -> list[str]:
    model, tokenizer = load_for_inference(adapter)
    return [generate_reply(model, tokenizer, [{"role": "user", "content": q}], max_new_tokens=8) for q in questions]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("dpo-data")
    out = {"rejected": root / "rejected.jsonl", "prefs": root / "prefs.jsonl", "openai": root / "openai.jsonl"}
    out["rejected"].write_text(sft_lines(REJECTED))
    out["prefs"].write_text(preference_lines())
    out["openai"].write_text(preference_lines("openai"))
    return out


@pytest.fixture(scope="module")
def sft_adapter(tiny_model: Path, files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    result = LoRATrainer(config(tiny_model, files["rejected"], tmp_path_factory.mktemp("sft"))).train()
    assert result.adapter_dir is not None
    return result.adapter_dir


@pytest.fixture(scope="module")
def dpo_run(
    tiny_model: Path, files: dict[str, Path], sft_adapter: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Any, RecordingCallback]:
    rec = RecordingCallback()
    out = tmp_path_factory.mktemp("dpo")
    cfg = config(
        tiny_model,
        files["openai"],
        out,
        method="dpo",
        dpo=DPO,
        init_adapter=str(sft_adapter),
        num_train_epochs=40,
        learning_rate=1e-3,
        report_to=["tensorboard"],
        save_steps=40,
        validation_file=str(files["prefs"]),  # the other format than training's
        eval_items=len(PREFERRED),
        eval_max_new_tokens=8,
    )
    return LoRATrainer(cfg, callbacks=[rec]).train(), rec


def test_sft_model_says_the_rejected_answers(sft_adapter: Path) -> None:
    """The control: before DPO the greedy answers are the rejected ones."""
    got = answers(sft_adapter)
    assert sum(a == r for a, r in zip(got, REJECTED, strict=True)) >= 7, got


def test_dpo_from_the_fine_tune_makes_the_preferred_answers_greedy(dpo_run: tuple[Any, Any]) -> None:
    result, rec = dpo_run
    got = answers(result.adapter_dir)
    assert sum(a == p for a, p in zip(got, PREFERRED, strict=True)) >= 0.9 * len(PREFERRED), got
    logs = [e for e in rec.events if e.kind == "log" and e.loss is not None]
    accuracy = [e.metrics["rewards/accuracies"] for e in logs]
    margins = [e.metrics["rewards/margins"] for e in logs]
    assert accuracy[0] <= 0.5 and max(accuracy[-3:]) > 0.9, accuracy  # at step 1 the policy is the reference
    assert margins[-1] > margins[0] + 1.0, margins
    assert {"rewards/chosen", "rewards/rejected"} <= logs[-1].metrics.keys()
    assert logs[-1].tokens_per_second and logs[-1].tokens_seen > 0 and logs[2].eta_seconds is not None
    meta = json.loads((result.adapter_dir / "sage_ft.json").read_text())
    assert meta["method"] == "dpo" and meta["config"]["dpo"]["beta"] == 0.1
    assert not (result.adapter_dir / "ref").exists(), "only the trained adapter is saved, not DPO's reference copy"
    checkpoint = next(e.checkpoint for e in rec.events if e.kind == "checkpoint")
    assert checkpoint and not (Path(checkpoint) / "ref").exists()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = EventAccumulator(str(next((result.output_dir / "logs").glob("events.out.tfevents.*")))).Reload().Tags()
    assert {"train/rewards/accuracies", "train/rewards/margins", "train/loss"} <= set(tags["scalars"])


def test_the_end_of_job_evaluation_compares_the_greedy_answers_with_the_parents(dpo_run: tuple[Any, Any]) -> None:
    """On the validation pairs: how often the greedy answer is the preferred one, and the rejected one, for the DPO
    model and for the fine-tune it started from (its adapter loaded beside the trained one, then dropped)."""
    result, _ = dpo_run
    ev = result.evaluation
    assert ev["method"] == "dpo" and ev["against"] == "parent" and ev["n"] == len(PREFERRED)
    assert ev["models"]["base"]["exact"] == 0.0 and ev["rejected"]["base"] >= 0.875, ev  # the parent: rejected
    assert ev["models"]["tuned"]["exact"] >= 0.875 and ev["rejected"]["tuned"] <= 0.125, ev
    assert [it["answers"]["tuned"] for it in ev["items"]] == answers(result.adapter_dir)  # the model it saved
    assert [it["reference"] for it in ev["items"]] == PREFERRED and ev["items"][0]["rejected"] == REJECTED[0]
    assert not (result.adapter_dir / "parent").exists()


def test_a_dpo_model_merges_to_the_same_answers(dpo_run: tuple[Any, Any], tmp_path: Path) -> None:
    from sage_ft.training import merge_adapter

    result, _ = dpo_run
    merged = merge_adapter(result.adapter_dir, tmp_path / "merged")
    assert answers(merged) == answers(result.adapter_dir)


def test_dpo_reports_to_wandb_offline(
    tiny_model: Path, files: dict[str, Path], tmp_path: Path, wandb_offline: Path
) -> None:
    cfg = config(
        tiny_model,
        files["prefs"],
        tmp_path / "out",
        method="dpo",
        num_train_epochs=1,
        report_to=["wandb"],
        run_name="dpo",
        logging_steps=1,
    )
    LoRATrainer(cfg).train()
    runs = list(wandb_offline.glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    history = next(runs[0].glob("*.wandb")).read_bytes()
    assert b"rewards/accuracies" in history  # DPO's own metrics reach the run


@pytest.mark.parametrize("preset", ["tiny", "cpu", "rtx_3060", "a100"])
def test_every_preset_configures_a_dpo_run(
    tiny_model: Path, files: dict[str, Path], tmp_path: Path, preset: str
) -> None:
    from sage_ft import PresetConfigs

    cfg = PresetConfigs.get(preset).update(
        model_name=str(tiny_model),
        data_path=str(files["prefs"]),
        output_dir=str(tmp_path),
        method="dpo",
        dpo={"beta": 0.3},
    )
    args = LoRATrainer(cfg)._args(has_eval=False)
    assert type(args).__name__ == "DPOConfig" and args.beta == 0.3 and args.max_length == cfg.max_length
    assert args.per_device_train_batch_size == cfg.per_device_train_batch_size
    assert args.gradient_accumulation_steps == cfg.gradient_accumulation_steps and not args.precompute_ref_log_probs


def test_the_reference_is_never_a_second_copy_of_the_weights(
    tiny_model: Path, files: dict[str, Path], sft_adapter: Path, tmp_path: Path
) -> None:
    fresh, _ = LoRATrainer(config(tiny_model, files["prefs"], tmp_path / "a", method="dpo")).build_trainer()
    assert fresh.ref_model is None and list(fresh.model.peft_config) == ["default"]  # reference: adapter disabled
    cont, _ = LoRATrainer(
        config(tiny_model, files["prefs"], tmp_path / "b", method="dpo", init_adapter=str(sft_adapter))
    ).build_trainer()
    assert cont.ref_model is None and sorted(cont.model.peft_config) == ["default", "ref"]
    parent = load_file(sft_adapter / "adapter_model.safetensors")
    params = dict(cont.model.named_parameters())
    for key, want in parent.items():  # the reference is the parent fine-tune, frozen
        ref = params[key.replace("lora_A.weight", "lora_A.ref.weight").replace("lora_B.weight", "lora_B.ref.weight")]
        torch.testing.assert_close(ref.detach(), want)
        assert not ref.requires_grad
    base_params = sum(p.numel() for n, p in cont.model.named_parameters() if "lora_" not in n)
    fresh_base = sum(p.numel() for n, p in fresh.model.named_parameters() if "lora_" not in n)
    assert base_params == fresh_base  # one set of base weights in both
    assert cont.args.beta == 0.1 and cont.model.peft_config["default"].r == 16  # the parent's rank, not the default 8


CHATS = {
    "chatml": None,  # the tiny model's own template
    "plain": (
        "{% for m in messages %}{{ '### ' + m['role'] + ':\\n' + m['content'] + '\\n' + eos_token }}"
        "{% endfor %}{% if add_generation_prompt %}{{ '### assistant:\\n' }}{% endif %}"
    ),
}


@pytest.mark.parametrize("template", sorted(CHATS))
def test_pairs_are_rendered_as_serving_renders_prompts(
    tiny_model: Path, files: dict[str, Path], tmp_path: Path, template: str
) -> None:
    """Prompt tokens are exactly what serving sends for the same messages (and are masked); each answer ends with
    the template's end of turn or EOS, which is trained."""
    from sage_ft.training.chat import render_prompt

    trainer = LoRATrainer(config(tiny_model, files["prefs"], tmp_path, method="dpo"))
    if CHATS[template]:
        trainer.tokenizer.chat_template = CHATS[template]
    dpo, _ = trainer.build_trainer()
    tok = trainer.tokenizer
    row = dpo.train_dataset[3]
    prompt = render_prompt(tok, [{"role": "user", "content": QUESTIONS[3]}])
    assert row["prompt_ids"] == tok(prompt, add_special_tokens=False).input_ids
    ends = {tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")}
    for side, text in (("chosen_ids", PREFERRED[3]), ("rejected_ids", REJECTED[3])):
        assert tok.decode(row[side]).startswith(text) and ends & set(row[side][-2:]), tok.decode(row[side])
    batch = dpo.data_collator([row])
    first = int(batch["completion_mask"][0].nonzero()[0])
    assert first == len(row["prompt_ids"]), "the loss starts after the prompt"


def test_a_killed_dpo_run_resumes_exactly(
    tiny_model: Path, files: dict[str, Path], sft_adapter: Path, tmp_path: Path
) -> None:
    common = dict(
        method="dpo",
        dpo=DPO,
        init_adapter=str(sft_adapter),
        num_train_epochs=6,
        learning_rate=1e-3,
        save_steps=4,
        save_total_limit=None,
    )
    straight = LoRATrainer(config(tiny_model, files["prefs"], tmp_path / "straight", **common)).train()
    cfg_path = config(tiny_model, files["prefs"], tmp_path / "killed", **common).save(tmp_path / "killed.yaml")
    proc = subprocess.run([sys.executable, "-c", KILLER, str(cfg_path), "8"], capture_output=True, timeout=300)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    resumed = LoRATrainer(TrainingConfig.load(cfg_path)).train(resume_from_checkpoint=True)
    assert resumed.resumed_from and resumed.resumed_from.endswith("checkpoint-8")
    assert resumed.global_step == straight.global_step == 12
    a = load_file(straight.adapter_dir / "adapter_model.safetensors")
    b = load_file(resumed.adapter_dir / "adapter_model.safetensors")
    parent = load_file(sft_adapter / "adapter_model.safetensors")
    assert a.keys() == b.keys() == parent.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4)
    assert any(not torch.allclose(a[k], parent[k]) for k in a), "training moved the adapter from the parent"


def test_a_stop_request_checkpoints_a_dpo_run(tiny_model: Path, files: dict[str, Path], tmp_path: Path) -> None:
    result = LoRATrainer(
        config(tiny_model, files["prefs"], tmp_path, method="dpo", num_train_epochs=5), callbacks=[StopAt(3)]
    ).train()
    assert result.stopped_early and result.global_step == 3 and result.adapter_dir is None
    assert (tmp_path / "checkpoints" / "checkpoint-3" / "adapter_model.safetensors").exists()


@pytest.mark.parametrize(("bits", "layer"), [("4", "Linear4bit"), ("8", "Linear8bitLt")])
def test_dpo_on_a_quantized_base(
    tiny_model: Path, files: dict[str, Path], sft_adapter: Path, tmp_path: Path, bits: str, layer: str
) -> None:
    quant = {"load_in_4bit": bits == "4", "load_in_8bit": bits == "8"}
    trainer = LoRATrainer(
        config(
            tiny_model,
            files["prefs"],
            tmp_path,
            method="dpo",
            dpo=DPO,
            num_train_epochs=3,
            learning_rate=1e-3,
            init_adapter=str(sft_adapter),
            gradient_checkpointing=True,
            **quant,
        )
    )
    dpo, _ = trainer.build_trainer()
    assert any(type(m).__name__ == layer for m in dpo.model.modules()), f"base is not {bits}-bit"
    result = trainer.train()
    assert result.global_step == 6 and all(torch.isfinite(torch.tensor(result.losses)))
    accuracy = [h["rewards/accuracies"] for h in result.log_history if "rewards/accuracies" in h]
    assert accuracy and accuracy[-1] >= 0.5
    weights = load_file(result.adapter_dir / "adapter_model.safetensors")
    assert all(torch.isfinite(t).all() for t in weights.values())


def test_sft_on_top_of_a_fine_tune_keeps_the_old_facts(tiny_model: Path, sft_adapter: Path, tmp_path: Path) -> None:
    """SFT→SFT: a second fine-tune on new facts, started from the first, answers both."""
    new_q = [f"Name the beta city {i}." for i in range(4)]
    new_a = ["paris", "lima", "oslo", "cairo"]
    data = tmp_path / "new.jsonl"
    data.write_text(sft_lines(new_a, new_q))
    result = LoRATrainer(
        config(
            tiny_model, data, tmp_path / "out", init_adapter=str(sft_adapter), num_train_epochs=30, learning_rate=1e-3
        )
    ).train()
    assert answers(result.adapter_dir, new_q) == new_a
    old = answers(result.adapter_dir)
    assert sum(a == r for a, r in zip(old, REJECTED, strict=True)) >= 6, old
    # the control: the same training from a fresh adapter knows the new facts only
    fresh = LoRATrainer(config(tiny_model, data, tmp_path / "fresh", num_train_epochs=30, learning_rate=1e-3)).train()
    assert not any(a == r for a, r in zip(answers(fresh.adapter_dir), REJECTED, strict=True))
