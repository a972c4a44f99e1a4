"""DPO and fine-tuning a fine-tune through the whole stack, driven by the unchanged openai client.

An SFT job teaches the *rejected* answers; served by vLLM it says them (the control). A DPO job that starts from
that model by its alias, with OpenAI's preference format, loses its worker to SIGKILL after its first checkpoint,
resumes on another worker and succeeds; served by vLLM through the gateway it gives the preferred answers. A
checkpoint id is served like a model and answers as that checkpoint does. Bad requests get named 4xx errors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openai
import pytest
from stack import VLLM_PYTHON, Stack, all_events, object_store, vllm_stack, wait_for, wait_job

from sage_ft.storage import publish_model, read_manifest
from sage_ft.storage.checkpoints import fetch_checkpoint_adapter

from .test_dpo import PREFERRED, QUESTIONS, REJECTED, answers, preference_lines, sft_lines
from .test_rft import HEDGE, WORDS

pytestmark = pytest.mark.slow
SFT = {"learning_rate": 3e-3, "lora": {"r": 16, "lora_alpha": 32, "lora_dropout": 0.0}, "max_length": 128}


@pytest.fixture(scope="module")
def stack(make_stack: Any, s3_endpoint: dict[str, str]) -> Stack:
    if not VLLM_PYTHON.exists():
        pytest.fail(f"vLLM CPU build missing at {VLLM_PYTHON}: run `make install`")
    return vllm_stack(make_stack, s3_endpoint, "dpo", SAGE_SERVING_MAX_MODEL_LEN="256", SAGE_LEASE_SECONDS="5")


def ask_all(client: openai.OpenAI, model: str, tokens: int = 8) -> list[str]:
    out = []
    for q in QUESTIONS:
        resp = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": q}], max_tokens=tokens, temperature=0
        )
        out.append(str(resp.choices[0].message.content).strip())
    return out


@pytest.fixture(scope="module")
def files(client: openai.OpenAI) -> dict[str, str]:
    rejected = client.files.create(file=("rejected.jsonl", sft_lines(REJECTED).encode()), purpose="fine-tune")
    prefs = client.files.create(file=("prefs.jsonl", preference_lines("openai").encode()), purpose="fine-tune")
    assert prefs.status == "processed" and prefs.model_extra["report"]["kind"] == "preference"
    return {"rejected": rejected.id, "prefs": prefs.id}


@pytest.fixture(scope="module")
def sft_job(client: openai.OpenAI, files: dict[str, str]) -> Any:
    job = client.fine_tuning.jobs.create(
        model="sage-tiny",
        training_file=files["rejected"],
        suffix="rej",
        hyperparameters={"n_epochs": 30, "batch_size": 4},
        extra_body={**SFT, "name": "prefbase", "save_steps": 10},
    )
    done = wait_job(client, job.id, timeout=300)
    assert done.status == "succeeded", done.error
    return done


def test_dpo_job_resumes_after_a_killed_worker_and_serves_the_preferred_answers(
    stack: Stack, client: openai.OpenAI, files: dict[str, str], sft_job: Any
) -> None:
    assert ask_all(client, "prefbase") == REJECTED  # the control: the SFT model, served by vLLM
    job = client.fine_tuning.jobs.create(
        model="prefbase",
        training_file=files["prefs"],
        suffix="pref",
        method={
            "type": "dpo",
            "dpo": {
                "hyperparameters": {"beta": 0.1, "n_epochs": 40, "batch_size": 4, "learning_rate_multiplier": "auto"}
            },
        },
        extra_body={
            "learning_rate": 1e-3,
            "max_length": 128,
            "save_steps": 10,
            "name": "prefdpo",
            "config": {"dpo": {"sft_weight": 1.0}},
        },
    )
    assert job.method.type == "dpo" and job.method.dpo.hyperparameters.beta == 0.1
    first = wait_for(lambda: client.fine_tuning.jobs.checkpoints.list(job.id).data, 180, "the first DPO checkpoint")
    stack.workers[0].kill9()
    stack.start_worker("w2")
    done = wait_job(client, job.id, timeout=300, stack=stack)
    assert done.status == "succeeded", done.error
    assert done.model_extra["attempt"] == 2 and done.model_extra["step"] == done.model_extra["total_steps"] == 80
    assert done.model == "prefbase" and done.fine_tuned_model.startswith("ft:sage-tiny:pref:")
    assert (
        done.model_extra["base_model"] == "sage-tiny" and done.model_extra["parent_model"] == sft_job.fine_tuned_model
    )
    events = all_events(client, job.id)
    messages = [e.message for e in events]
    assert any(m.startswith("Resuming from checkpoint at step ") for m in messages), messages
    assert int(next(m for m in messages if m.startswith("Resuming")).rsplit(" ", 1)[1]) >= first[0].step_number
    metrics = [e.data for e in events if e.type == "metrics" and "reward_accuracy" in e.data]
    assert metrics[-1]["reward_accuracy"] > 0.9 and metrics[-1]["reward_margin"] > metrics[0]["reward_margin"]
    assert {"rewards_chosen", "rewards_rejected", "tokens_per_second", "eta_seconds"} <= metrics[-1].keys()
    assert "reward accuracy=" in next(e.message for e in reversed(events) if e.type == "metrics")
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert {"reward_accuracy", "reward_margin", "train_loss"} <= checkpoints[0].metrics.model_dump(
        exclude_none=True
    ).keys()

    got = ask_all(client, "prefdpo")
    assert sum(a == p for a, p in zip(got, PREFERRED, strict=True)) >= 0.9 * len(PREFERRED), got
    manifest = read_manifest(object_store(stack), done.fine_tuned_model)
    assert manifest is not None and manifest.parent == sft_job.fine_tuned_model and manifest.base_model == "sage-tiny"
    assert manifest.training["method"] == "dpo" and manifest.training["dpo"]["beta"] == 0.1


def test_a_checkpoint_id_is_served_with_that_checkpoints_answers(
    stack: Stack, client: openai.OpenAI, sft_job: Any, tmp_path: Path
) -> None:
    checkpoints = {c.step_number: c for c in client.fine_tuning.jobs.checkpoints.list(sft_job.id, limit=100).data}
    early = checkpoints[10]
    assert early.fine_tuned_model_checkpoint == f"{sft_job.fine_tuned_model}:ckpt-step-10"
    local = fetch_checkpoint_adapter(object_store(stack), sft_job.id, 10, tmp_path / "ckpt")
    want = answers(local)  # what that checkpoint says, computed by transformers from its own files
    assert want != REJECTED, "the early checkpoint has not learned everything yet"
    served = ask_all(client, early.fine_tuned_model_checkpoint)
    assert sum(a == w for a, w in zip(served, want, strict=True)) >= 7, (served, want)
    model = client.models.retrieve(early.fine_tuned_model_checkpoint)
    assert model.id == early.fine_tuned_model_checkpoint and model.model_extra["parent"] == "sage-tiny"


def test_continuing_from_a_checkpoint_records_it_as_the_parent(
    stack: Stack, client: openai.OpenAI, files: dict[str, str], sft_job: Any
) -> None:
    checkpoint = next(
        c for c in client.fine_tuning.jobs.checkpoints.list(sft_job.id, limit=100).data if c.step_number == 20
    )
    job = client.fine_tuning.jobs.create(
        model="sage-tiny",
        training_file=files["rejected"],
        suffix="more",
        validation_file=files["rejected"],
        hyperparameters={"n_epochs": 2},
        extra_body={"from_checkpoint": checkpoint.id, "save_steps": 2},
    )
    assert job.model_extra["parent_model"] == checkpoint.fine_tuned_model_checkpoint
    done = wait_job(client, job.id, timeout=300, stack=stack)
    assert done.status == "succeeded", done.error
    manifest = read_manifest(object_store(stack), done.fine_tuned_model)
    assert manifest is not None and manifest.parent == checkpoint.fine_tuned_model_checkpoint
    assert manifest.training["lora"]["r"] == 16  # the checkpoint's shape, not the preset's
    first = client.fine_tuning.jobs.checkpoints.list(job.id, limit=100).data[-1]  # oldest last
    shown = first.metrics.model_dump(exclude_none=True)
    assert {"train_loss", "valid_loss", "valid_mean_token_accuracy"} <= shown.keys(), shown
    assert 0 <= shown["valid_mean_token_accuracy"] <= 1 and shown["valid_loss"] > 0


def _error(call: Any) -> tuple[int, dict[str, Any]]:
    with pytest.raises(openai.APIStatusError) as exc:
        call()
    return exc.value.status_code, json.loads(exc.value.response.text)["error"]


def test_bad_lineage_and_method_requests_are_named_4xx(
    stack: Stack, client: openai.OpenAI, files: dict[str, str], sft_job: Any
) -> None:
    create = client.fine_tuning.jobs.create
    status, err = _error(
        lambda: create(model="sage-tiny", training_file=files["prefs"], method={"type": "distillation"})
    )  # type: ignore[arg-type, typeddict-item]
    assert status == 400 and err["param"] == "method.type" and "supervised, dpo, reinforcement" in err["message"]
    status, err = _error(
        lambda: create(model="sage-tiny", training_file=files["prefs"], method={"type": "reinforcement"})
    )  # type: ignore[arg-type, typeddict-item]
    assert status == 400 and err["param"] == "method.reinforcement" and "required" in err["message"]
    status, err = _error(lambda: create(model="sage-tiny", training_file=files["rejected"], method={"type": "dpo"}))
    assert status == 400 and err["param"] == "training_file" and "'supervised', not 'dpo'" in err["message"]
    status, err = _error(lambda: create(model="sage-tiny", training_file=files["prefs"]))
    assert status == 400 and "'dpo', not 'supervised'" in err["message"]
    typo = sft_job.fine_tuned_model[:-1] + ("0" if sft_job.fine_tuned_model[-1] != "0" else "1")
    status, err = _error(lambda: create(model=typo, training_file=files["rejected"]))
    assert status == 404 and err["param"] == "model" and sft_job.fine_tuned_model in err["message"]
    status, err = _error(lambda: create(model="prefbse", training_file=files["rejected"]))
    assert status == 404 and "prefbase" in err["message"]
    status, err = _error(
        lambda: create(
            model="sage-tiny", training_file=files["rejected"], extra_body={"from_checkpoint": "ftckpt-00ab-4"}
        )
    )
    assert status == 404 and err["param"] == "from_checkpoint"
    status, err = _error(
        lambda: create(model="prefbase", training_file=files["rejected"], extra_body={"lora": {"r": 4}})
    )
    assert status == 400 and err["param"] == "lora"
    orphan = Path(stack.dir) / "orphan"
    orphan.mkdir(exist_ok=True)
    (orphan / "adapter_config.json").write_text("{}")
    publish_model(object_store(stack), "ft:gone:x:0abc", {"adapter": orphan}, base_model="no-such-base")
    status, err = _error(lambda: create(model="ft:gone:x:0abc", training_file=files["rejected"]))
    assert status == 400 and err["param"] == "model" and "no-such-base" in err["message"]


def train_sft(client: openai.OpenAI, lines: str, name: str) -> None:
    """An SFT job on the tiny model (30 epochs, the settings that make it memorise), served as ``name``."""
    file = client.files.create(file=(f"{name}.jsonl", lines.encode()), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model="sage-tiny",
        training_file=file.id,
        hyperparameters={"n_epochs": 30, "batch_size": 4},
        extra_body={**SFT, "name": name},
    )
    assert wait_job(client, job.id, timeout=300).status == "succeeded"


def test_rft_job_resumes_after_a_killed_worker_and_serves_the_rewarded_form(
    stack: Stack, client: openai.OpenAI
) -> None:
    """SFT on both forms of every answer, then RFT from that model by its alias, rewarded by a string_check for
    "might be": served by vLLM, the greedy answers take the rewarded form, and the reward mean rose."""
    both = "".join(
        json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": f"It {f} {w}."}]})
        + "\n"
        for q, w in zip(QUESTIONS, WORDS, strict=True)
        for f in ("is", "might be")
    )
    prompts = "".join(
        json.dumps({"messages": [{"role": "user", "content": q}], "answer": w}) + "\n"
        for q, w in zip(QUESTIONS, WORDS, strict=True)
    )
    rft_file = client.files.create(file=("prompts.jsonl", prompts.encode()), purpose="fine-tune")
    report = rft_file.model_extra["report"]
    assert report["kind"] == "prompts" and report["item_fields"] == ["answer"], report
    train_sft(client, both, "bothforms")

    def hedged(model: str) -> list[str]:
        return ask_all(client, model, tokens=12)

    before = hedged("bothforms")
    assert sum("might be" in a for a in before) <= 6, before  # the control: SFT alone mostly says "is"
    job = client.fine_tuning.jobs.create(
        model="bothforms",
        training_file=rft_file.id,
        validation_file=rft_file.id,
        suffix="rft",
        method={
            "type": "reinforcement",
            "reinforcement": {"grader": HEDGE, "hyperparameters": {"n_epochs": 14, "batch_size": 8}},
        },  # type: ignore[typeddict-item]
        extra_body={"learning_rate": 1e-3, "max_length": 128, "save_steps": 5, "name": "hedged"},
    )
    assert job.method.type == "reinforcement" and job.method.reinforcement.grader.name == "hedge"  # type: ignore
    wait_for(lambda: client.fine_tuning.jobs.checkpoints.list(job.id).data, 240, "the first RFT checkpoint")
    stack.workers[-1].kill9()
    stack.start_worker("w3")
    done = wait_job(client, job.id, timeout=400, stack=stack)
    assert done.status == "succeeded", done.error
    assert done.model_extra["attempt"] == 2 and done.model_extra["step"] == done.model_extra["total_steps"] == 14
    events = all_events(client, job.id)
    rewards = [e.data["train_reward_mean"] for e in events if "train_reward_mean" in e.data]
    assert len(rewards) >= 5 and max(rewards[-3:]) > rewards[0] + 0.25, rewards
    sampled = [e.data for e in events if e.type == "samples"]  # every save_steps (eval_interval auto): what it said
    assert sampled and sampled[-1]["step"] % 5 == 0 and sampled[-1]["samples"][0]["prompt"] in QUESTIONS
    assert all(s["reward"] == float("might be" in s["answer"]) for e in sampled for s in e["samples"])
    after = hedged("hedged")
    assert sum("might be" in a for a in after) >= 0.9 * len(QUESTIONS), after
    assert any("valid_reward_mean" in e.data for e in events)  # the validation rows, sampled every eval_interval
    # the end of the job: the grader on the validation rows, for the parent (the SFT model) and the RFT model
    ev = done.model_extra["evaluation"]
    assert ev["against"] == "parent" and ev["compared_model"] == client.models.retrieve("bothforms").id, ev
    assert ev["models"]["tuned"]["reward"] >= 0.875 > ev["models"]["base"]["reward"], ev
    items = client.evals.runs.output_items.list(ev["run_ids"]["tuned"], eval_id=ev["eval_id"]).data
    assert len(items) == len(QUESTIONS) and items[0].results[0].name == "hedge"
    assert sum(it.status == "pass" for it in items) == round(ev["models"]["tuned"]["reward"] * len(QUESTIONS))
    manifest = read_manifest(object_store(stack), done.fine_tuned_model)
    assert manifest is not None and manifest.training["method"] == "rft"
    assert manifest.training["rft"]["grader"]["name"] == "hedge"


def test_dpo_with_only_beta_flips_the_answers_and_a_long_run_does_not_collapse(
    stack: Stack, client: openai.OpenAI
) -> None:
    """As a migrating user runs it: SFT on "It might be X." answers, then DPO preferring "It is X." with only beta
    given. ``auto`` is chosen from the 8 pairs (25 epochs, batch 1) and the RPO term is on by default, so the served
    greedy answers flip; 20 epochs at 5e-4 keep the words (no likelihood displacement)."""
    might = "".join(
        json.dumps(
            {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": f"It might be {w}."}]}
        )
        + "\n"
        for q, w in zip(QUESTIONS, WORDS, strict=True)
    )
    pairs = "".join(
        json.dumps(
            {
                "input": {"messages": [{"role": "user", "content": q}]},
                "preferred_output": [{"role": "assistant", "content": f"It is {w}."}],
                "non_preferred_output": [{"role": "assistant", "content": f"It might be {w}."}],
            }
        )
        + "\n"
        for q, w in zip(QUESTIONS, WORDS, strict=True)
    )
    pair_file = client.files.create(file=("is.jsonl", pairs.encode()), purpose="fine-tune")
    train_sft(client, might, "mightbase")
    assert sum(a.startswith("It might be") for a in ask_all(client, "mightbase")) >= 7  # the control
    preferred = [f"It is {w}." for w in WORDS]
    runs = {"dpoauto": {"beta": 0.1}, "dpolong": {"beta": 0.1, "n_epochs": 20}}
    for name, hyper in runs.items():
        extra: dict[str, Any] = {"name": name} | ({"learning_rate": 5e-4} if name == "dpolong" else {})
        job = client.fine_tuning.jobs.create(
            model="mightbase",
            training_file=pair_file.id,
            validation_file=pair_file.id if name == "dpoauto" else None,
            method={"type": "dpo", "dpo": {"hyperparameters": hyper}},  # type: ignore[typeddict-item]
            extra_body=extra,
        )
        done = wait_job(client, job.id, timeout=400, stack=stack)
        assert done.status == "succeeded", done.error
        if name == "dpoauto":
            shown = done.method.dpo.hyperparameters  # type: ignore[union-attr]
            assert (shown.n_epochs, shown.batch_size, shown.beta) == (25, 1, 0.1), shown
            assert done.model_extra["training_config"]["dpo"]["sft_weight"] == 1.0
            ev = done.model_extra["evaluation"]  # greedy answers on the validation pairs, against the parent
            assert ev["against"] == "parent" and ev["rejected"]["base"] >= 0.875, ev
            assert ev["models"]["tuned"]["exact"] >= 0.875 and ev["models"]["base"]["exact"] == 0.0, ev
        got = [a.strip() for a in ask_all(client, name)]
        assert sum(a == p for a, p in zip(got, preferred, strict=True)) >= 7, (name, got)
        metrics = [e.data for e in all_events(client, job.id) if e.type == "metrics" and "logps_chosen" in e.data]
        assert metrics and {"logps_chosen", "logps_rejected"} <= metrics[-1].keys()
        assert metrics[-1]["logps_chosen"] > metrics[-1]["logps_rejected"]  # the preferred answer is now likelier
