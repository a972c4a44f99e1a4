"""``dry_run: true`` through the real openai client: the estimate, no job; then real jobs of two shapes (the default
layout, padding-free for these records, and packed at another max_length and rank) on a real worker, whose layout,
trained tokens and steps the estimate predicted (the job's object and events say which layout ran), and whose
measured speed the next estimate uses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openai
import pytest
from stack import Stack, qa_lines, wait_job

pytestmark = pytest.mark.slow
SHAPES = {
    "auto": {"batch_size": 4, "n_epochs": 3, "extra": {"lora": {"r": 4, "lora_alpha": 8}}},
    "packed": {
        "batch_size": 2,
        "n_epochs": 2,
        "extra": {"packing": True, "max_length": 48, "lora": {"r": 16, "lora_alpha": 32}},
    },
}


def body(shape: str, file_id: str, dry_run: bool) -> dict[str, Any]:
    s = SHAPES[shape]
    return {
        "model": "sage-tiny",
        "training_file": file_id,
        "suffix": shape,
        "preset": "cpu",
        "method": {
            "type": "supervised",
            "supervised": {"hyperparameters": {"n_epochs": s["n_epochs"], "batch_size": s["batch_size"]}},
        },
        **s["extra"],
        **({"dry_run": True} if dry_run else {}),
    }


OPENAI_FIELDS = ("model", "training_file", "method", "suffix")


def as_call(request: dict[str, Any]) -> dict[str, Any]:
    """``jobs.create`` keyword arguments: OpenAI's own fields, and sage-ft's through ``extra_body``."""
    return {
        **{k: request[k] for k in OPENAI_FIELDS},
        "extra_body": {k: v for k, v in request.items() if k not in OPENAI_FIELDS},
    }


def dry_run(client: openai.OpenAI, request: dict[str, Any]) -> dict[str, Any]:
    raw = client.fine_tuning.jobs.with_raw_response.create(**as_call(request))
    answer: dict[str, Any] = json.loads(raw.http_response.text)
    return answer


def test_dry_run_estimates_and_creates_nothing(stack: Stack, client: openai.OpenAI, qa_records: list[dict]) -> None:
    file = client.files.create(file=("qa.jsonl", qa_lines(qa_records[:12])), purpose="fine-tune").id
    before = client.fine_tuning.jobs.list().data
    answer = dry_run(client, body("auto", file, True))
    assert answer["object"] == "fine_tuning.job.estimate"
    est = answer["estimate"]
    assert est["steps"] == 3 * 3 and est["tokens_exact"] and est["records"] == 12  # 12 rows / batch 4, 3 epochs
    assert est["seconds_basis"]["source"] == "default" and est["seconds"] > 0
    assert est["peak_memory_bytes"] > est["memory_breakdown"]["cuda_context"]
    assert client.fine_tuning.jobs.list().data == before  # no job was made

    with pytest.raises(openai.NotFoundError) as err:  # checked as a real request is
        client.fine_tuning.jobs.create(model="sage-tiny", training_file="file-nope", extra_body={"dry_run": True})
    assert err.value.body["param"] == "training_file"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as bad:
        client.fine_tuning.jobs.create(
            model="sage-tiny", training_file=file, extra_body={"dry_run": True, "lora": {"r": 0}}
        )
    assert "lora.r" in str(bad.value)


@pytest.mark.parametrize("shape", list(SHAPES))
def test_the_estimate_predicts_the_real_job(
    stack: Stack, client: openai.OpenAI, qa_records: list[dict], shape: str
) -> None:
    file = client.files.create(file=("qa.jsonl", qa_lines(qa_records)), purpose="fine-tune").id
    est = dry_run(client, body(shape, file, True))["estimate"]
    job = client.fine_tuning.jobs.create(**as_call(body(shape, file, False)))
    done = wait_job(client, job.id)
    assert done.status == "succeeded", done.error
    total_steps = done.model_extra["total_steps"]  # type: ignore[index]
    # the layout the estimate assumed is the one the trainer used, and the job says so in its object and events
    layout = {"auto": "padding_free", "packed": "packed"}[shape]  # auto: the QA records' lengths vary
    training = done.model_extra["training"]  # type: ignore[index]
    assert est["packing"] == training["layout"] == layout and training["records"] == len(qa_records)
    events = client.fine_tuning.jobs.list_events(job.id, limit=100).data
    started = [e.message for e in events if e.message.startswith("Training started")]
    assert (
        started and {"auto": "padding-free batches (record lengths vary", "packed": "packed rows"}[shape] in started[0]
    )
    if shape == "auto":  # padding-free: the steps of a padded run, one record a row
        assert est["steps"] == total_steps and est["tokens"] == done.trained_tokens
    else:  # TRL packs best-fit decreasing; the estimate first-fit decreasing: a bin apart at most, tokens the same
        assert abs(est["steps"] - total_steps) <= 1 and est["tokens"] == done.trained_tokens
        assert est["sequences_per_epoch"] < len(qa_records)  # packing did pack
    # the job's measured speed is what the next estimate of this model and preset uses
    after = dry_run(client, body(shape, file, True))["estimate"]
    basis = after["seconds_basis"]
    assert basis["source"] == "history" and basis["jobs"] >= 1
    if basis["jobs"] == 1:  # this job alone: the estimate for the same tokens is its own wall time, start to end
        assert 0 < after["seconds"] <= done.finished_at - done.created_at + 1  # type: ignore[operator]


def test_a_hub_model_is_estimated_from_the_cached_config_without_its_tokenizer(
    make_stack: Any, tmp_path: Path, qa_records: list[dict]
) -> None:
    """The other shape: a hub model (Llama 3.2 1B's config in this host's Hugging Face cache, no tokenizer here):
    memory from its config, tokens estimated and marked so; a hub model with nothing cached gets no memory figure."""
    snapshot = tmp_path / "hub" / "models--acme--llama-1b" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(
        json.dumps(
            {
                "architectures": ["LlamaForCausalLM"],
                "hidden_size": 2048,
                "intermediate_size": 8192,
                "num_hidden_layers": 16,
                "num_attention_heads": 32,
                "num_key_value_heads": 8,
                "head_dim": 64,
                "vocab_size": 128256,
                "tie_word_embeddings": True,
            }
        )
    )
    (tmp_path / "hub" / "models--acme--llama-1b" / "refs").mkdir()
    (tmp_path / "hub" / "models--acme--llama-1b" / "refs" / "main").write_text("0123abcd")
    st: Stack = make_stack(HF_HUB_CACHE=str(tmp_path / "hub"))
    st.start_gateway()  # estimates need no worker
    client = openai.OpenAI(base_url=f"{st.url}/v1", api_key="x", max_retries=0)
    file = client.files.create(file=("qa.jsonl", qa_lines(qa_records)), purpose="fine-tune").id
    request = {
        "model": "acme/llama-1b",
        "training_file": file,
        "suffix": "hub",
        "preset": "minimal",
        "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1}}},
        "dry_run": True,
    }
    est = dry_run(client, request)["estimate"]
    assert not est["tokens_exact"] and est["tokens"] > 0
    assert est["memory_basis"]["quantization"] == "4bit" and est["memory_basis"]["lora_rank"] == 4  # the preset's
    assert est["parameters"] == pytest.approx(1.24e9, rel=0.01)
    assert 1 * 2**30 < est["peak_memory_bytes"] < 4 * 2**30
    est = dry_run(client, {**request, "model": "acme/not-cached"})["estimate"]
    assert est["peak_memory_bytes"] is None and "Hugging Face cache" in est["memory_basis"]["reason"]
