"""Loss masking through the real SFTTrainer pipeline: prompt tokens are -100, assistant tokens and EOS are trained."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sage_ft import TrainingConfig
from sage_ft.training import LoRATrainer

pytestmark = pytest.mark.slow

SYSTEM_Q = {"role": "system", "content": "You answer briefly."}
CASES: dict[str, tuple[dict[str, Any], list[str]]] = {
    # format: (record, the assistant texts that must be trained, in order)
    "alpaca": ({"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"}, ["5"]),
    "qa": ({"question": "Capital of France?", "answer": "Paris.", "context": "France is in Europe."}, ["Paris."]),
    "conversations": (
        {
            "conversations": [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello there."},
                {"role": "user", "content": "Bye"},
                {"role": "assistant", "content": "See you."},
            ]
        },
        ["Hello there.", "See you."],
    ),
    "sharegpt": (
        {
            "conversations": [
                {"from": "system", "value": "Be kind."},
                {"from": "human", "value": "Hi"},
                {"from": "gpt", "value": "Hi, friend."},
            ]
        },
        ["Hi, friend."],
    ),
    "openai": (
        {
            "messages": [
                SYSTEM_Q,
                {"role": "user", "content": "One?"},
                {"role": "assistant", "content": "Uno.", "weight": 0},
                {"role": "user", "content": "Two?"},
                {"role": "assistant", "content": "Dos."},
            ]
        },
        ["Dos."],
    ),
    "text": ({"text": "Plain text is trained in full."}, ["Plain text is trained in full."]),
}


def _trainer(tiny_model: Path, tmp_path: Path, record: dict, **kw: Any) -> Any:
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps(record) + "\n")
    cfg = TrainingConfig(
        model_name=str(tiny_model),
        data_path=str(data),
        output_dir=str(tmp_path / "out"),
        max_length=256,
        report_to="none",
        **kw,
    )
    trainer, _ = LoRATrainer(cfg).build_trainer()
    return trainer


@pytest.mark.parametrize("fmt", list(CASES))
def test_only_assistant_tokens_and_eos_are_labelled(tiny_model: Path, tmp_path: Path, fmt: str) -> None:
    record, trained = CASES[fmt]
    trainer = _trainer(tiny_model, tmp_path, record)
    tok = trainer.processing_class
    batch = trainer.data_collator([trainer.train_dataset[0]])
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    assert ids[-1] == tok.eos_token_id and labels[-1] == tok.eos_token_id, "EOS ends the sequence and is trained"
    labelled = [i for i, lab in zip(ids, labels, strict=True) if lab != -100]
    assert labels == [i if lab != -100 else -100 for i, lab in zip(ids, labels, strict=True)]
    expected = "".join(t + tok.eos_token for t in trained)
    assert tok.decode(labelled, skip_special_tokens=False) == expected
    prompt_text = tok.decode([i for i, lab in zip(ids, labels, strict=True) if lab == -100])
    for text in trained:
        assert text not in prompt_text
    for msg in record.get("messages", []):
        if msg["role"] != "assistant" or msg.get("weight") == 0:
            assert msg["content"] in prompt_text  # prompt and weight-0 turns are present but not trained


def test_train_on_prompt_labels_everything(tiny_model: Path, tmp_path: Path) -> None:
    trainer = _trainer(tiny_model, tmp_path, CASES["alpaca"][0], train_on_prompt=True)
    batch = trainer.data_collator([trainer.train_dataset[0]])
    assert batch["labels"][0].tolist() == batch["input_ids"][0].tolist()


def test_packing_keeps_masks(tiny_model: Path, tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r, _ in CASES.values()))
    cfg = TrainingConfig(
        model_name=str(tiny_model),
        data_path=str(data),
        output_dir=str(tmp_path / "o"),
        max_length=512,
        packing=True,
        report_to="none",
    )
    trainer, _ = LoRATrainer(cfg).build_trainer()
    assert len(trainer.train_dataset) == 1  # six short conversations packed into one row
    row = trainer.train_dataset[0]
    tok = trainer.processing_class
    labelled = tok.decode([lab for lab in row["labels"] if lab != -100], skip_special_tokens=False)
    for _, trained in CASES.values():
        for text in trained:
            assert text in labelled
    assert "Capital of France?" not in labelled and sum(row["seq_lengths"]) == len(row["input_ids"])
