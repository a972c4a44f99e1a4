"""Eval runs on the real stack: the openai client creates them on the gateway, a Celery worker answers every item
through serving (vLLM's CPU build, the fine-tune hot-loaded as an adapter onto the base model's server) and grades it.

A fine-tune taught fictional code words passes a ``string_check`` on them; its base does not. A run whose worker is
SIGKILLed resumes on another worker without answering its graded items again; a cancelled run stops.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from stack import LEARN, VLLM_PYTHON, Stack, free_port, qa_lines, vllm_stack, wait_for, wait_job

pytestmark = pytest.mark.slow
SCHEMA = {
    "type": "object",
    "properties": {"question": {"type": "string"}, "answer": {"type": "string"}},
    "required": ["question", "answer"],
}
EXACT = {
    "type": "string_check",
    "name": "exact",
    "input": "{{sample.output_text}}",
    "reference": "{{item.answer}}",
    "operation": "eq",
}
PYTHON = {  # the same verdict as EXACT, from user code in the worker's sandbox
    "type": "python",
    "name": "py",
    "source": "def grade(sample, item):\n    return float(sample['output_text'] == item['answer'])\n",
}
TEMPLATE = {"type": "template", "template": [{"role": "user", "content": "{{item.question}}"}]}
FACTS = 10
SAGE = Path(sys.executable).parent / "sage-ft"


@pytest.fixture(scope="module")
def stack(make_stack: Any, s3_endpoint: dict[str, str]) -> Stack:
    if not VLLM_PYTHON.exists():
        pytest.fail(f"vLLM CPU build missing at {VLLM_PYTHON}: run `make install`")
    return vllm_stack(
        make_stack,
        s3_endpoint,
        "evalruns",
        SAGE_SERVING_MAX_MODEL_LEN="256",
        SAGE_LEASE_SECONDS="4",
        SAGE_WORKER_EVAL_CONCURRENCY="2",
    )


@pytest.fixture(scope="module")
def tuned_job(client: openai.OpenAI, qa_records: list[dict]) -> Any:
    """Taught the facts, with the same facts as its validation file (what it must now answer)."""
    file = client.files.create(file=("facts.jsonl", qa_lines(qa_records[:FACTS])), purpose="fine-tune")
    extra = {**LEARN, "name": "facts", "eval": {"max_new_tokens": 12}}
    job = client.fine_tuning.jobs.create(
        model="sage-tiny",
        training_file=file.id,
        validation_file=file.id,
        suffix="facts",
        hyperparameters={"n_epochs": 40, "batch_size": 4},
        extra_body=extra,
    )
    done = wait_job(client, job.id, timeout=300)
    assert done.status == "succeeded", done.error
    return done


@pytest.fixture(scope="module")
def tuned(tuned_job: Any) -> str:
    return str(tuned_job.fine_tuned_model)


def test_a_job_with_a_validation_file_ends_with_its_evaluation(client: openai.OpenAI, tuned_job: Any) -> None:
    ev = tuned_job.model_extra["evaluation"]
    assert ev["n"] == FACTS and ev["metrics"] == ["exact", "f1", "rouge_l"]
    tuned_scores, base_scores = ev["models"]["tuned"], ev["models"]["base"]
    assert tuned_scores["exact"] >= 0.9 and base_scores["exact"] <= 0.1, ev["models"]
    assert tuned_scores["f1"] > base_scores["f1"] and ev["loss"]["tuned"] < ev["loss"]["base"]
    assert client.models.retrieve(tuned_job.fine_tuned_model).model_extra["metrics"]["evaluation"] == ev
    messages = [e.message for e in client.fine_tuning.jobs.list_events(tuned_job.id, limit=100).data]
    assert any(m.startswith(f"Evaluation on {FACTS} held-out records") for m in messages), messages
    runs = ev["run_ids"]  # the items, side by side, through the Evals API
    tuned_items = {i.datasource_item_id: i for i in all_items(client, ev["eval_id"], runs["tuned"])}
    base_items = {i.datasource_item_id: i for i in all_items(client, ev["eval_id"], runs["base"])}
    assert sorted(tuned_items) == sorted(base_items) == list(range(FACTS))
    assert sum(i.status == "pass" for i in tuned_items.values()) >= 0.9 * FACTS
    assert base_items[0].sample.model == "sage-tiny" and tuned_items[0].sample.model == tuned_job.fine_tuned_model
    run = client.evals.runs.retrieve(runs["tuned"], eval_id=ev["eval_id"])
    assert run.status == "completed" and run.result_counts.total == FACTS


def test_a_share_held_out_of_the_training_file_is_evaluated(client: openai.OpenAI, qa_records: list[dict]) -> None:
    file = client.files.create(file=("facts2.jsonl", qa_lines(qa_records[:FACTS])), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model="sage-tiny",
        training_file=file.id,
        suffix="held",
        hyperparameters={"n_epochs": 2, "batch_size": 4},
        extra_body={"eval": {"holdout": 0.2, "max_new_tokens": 4}},
    )
    done = wait_job(client, job.id, timeout=300)
    assert done.status == "succeeded", done.error
    ev = done.model_extra["evaluation"]
    assert ev["n"] == 2 and set(ev["models"]) == {"tuned", "base"} and ev["loss"]["tuned"] is not None


@pytest.fixture(scope="module")
def facts_eval(client: openai.OpenAI, qa_records: list[dict]) -> tuple[str, str]:
    ev = client.evals.create(
        name="code words",
        testing_criteria=[EXACT, PYTHON],  # type: ignore[list-item]
        data_source_config={"type": "custom", "item_schema": SCHEMA},
    )
    rows = "".join(json.dumps({"item": r}) + "\n" for r in qa_records[:FACTS])
    file = client.files.create(file=("facts-eval.jsonl", rows.encode()), purpose="evals")
    return ev.id, file.id


def start_run(client: openai.OpenAI, eval_id: str, model: str, source: dict[str, Any], tokens: int = 12) -> Any:
    data_source = {
        "type": "completions",
        "model": model,
        "input_messages": TEMPLATE,
        "source": source,
        "sampling_params": {"temperature": 0, "max_completion_tokens": tokens},
    }
    return client.evals.runs.create(eval_id, name=model, data_source=data_source)  # type: ignore[arg-type]


def wait_run(client: openai.OpenAI, eval_id: str, run_id: str, timeout: float = 400) -> Any:
    def check() -> Any:
        run = client.evals.runs.retrieve(run_id, eval_id=eval_id)
        return run if run.status in ("completed", "failed", "canceled") else None

    return wait_for(check, timeout, f"eval run {run_id}", interval=0.5)


def all_items(client: openai.OpenAI, eval_id: str, run_id: str) -> list[Any]:
    return list(client.evals.runs.output_items.list(run_id, eval_id=eval_id, limit=100))


def test_the_fine_tune_passes_its_facts_and_the_base_does_not(
    client: openai.OpenAI, tuned: str, facts_eval: tuple[str, str]
) -> None:
    eval_id, file_id = facts_eval
    runs = {m: start_run(client, eval_id, m, {"type": "file_id", "id": file_id}) for m in (tuned, "sage-tiny")}
    done = {m: wait_run(client, eval_id, r.id) for m, r in runs.items()}
    for run in done.values():
        assert run.status == "completed", run.error
        assert run.result_counts.total == FACTS and run.result_counts.errored == 0
    rate = {m: r.result_counts.passed / r.result_counts.total for m, r in done.items()}
    assert rate[tuned] >= 0.9 and rate["sage-tiny"] <= 0.1, rate
    per = done[tuned].per_testing_criteria_results[0]
    assert per.testing_criteria == "exact" and per.passed == done[tuned].result_counts.passed
    items = all_items(client, eval_id, runs[tuned].id)
    assert sorted(i.datasource_item_id for i in items) == list(range(FACTS))
    for item in items:  # each sample: what was asked, what the model said, and the grade
        assert item.sample.input[0].content == item.datasource_item["question"]
        assert item.sample.model == tuned and [r.name for r in item.results] == ["exact", "py"]
        assert item.results[1].passed == item.results[0].passed
        assert (item.status == "pass") == (item.sample.output[0].content == item.datasource_item["answer"])
    failed = client.evals.runs.output_items.list(runs["sage-tiny"].id, eval_id=eval_id, status="fail", limit=100)
    assert len(failed.data) == done["sage-tiny"].result_counts.failed
    events = httpx.get(f"{client.base_url}evals/{eval_id}/runs/{runs[tuned].id}/events", timeout=10).json()["data"]
    assert [e["type"] for e in events] == ["queued", "started", "completed"]


def test_model_graders_ask_a_served_model(client: openai.OpenAI, tuned: str, qa_records: list[dict]) -> None:
    """A label grader whose judge is the fine-tune: it answers each question with its code word, so the label it
    picks is that row's answer; a score grader on the base; a model that is not served is a 404 with a hint."""
    graders = client.fine_tuning.alpha.graders
    first, second = qa_records[0], qa_records[1]
    label = {
        "type": "label_model",
        "name": "judge",
        "model": tuned,
        "input": [{"role": "user", "content": "{{item.question}}"}],
        "labels": [first["answer"], second["answer"]],
        "passing_labels": [first["answer"]],
    }
    passed = graders.run(grader=label, model_sample="-", item=first)
    failed = graders.run(grader=label, model_sample="-", item=second)
    assert (passed.reward, failed.reward) == (1.0, 0.0), (passed, failed)
    assert passed.metadata.sampled_model_name == tuned and (passed.metadata.token_usage or 0) > 0
    score = {
        "type": "score_model",
        "name": "score",
        "model": "sage-tiny",
        "input": [{"role": "user", "content": "Rate 0 to 1: {{sample.output_text}}"}],
        "sampling_params": {"max_completions_tokens": 8, "temperature": 0},
    }
    rated = graders.run(grader=score, model_sample="Paris", item={})
    assert rated.metadata.sampled_model_name == "sage-tiny" and (rated.metadata.token_usage or 0) > 0
    assert 0.0 <= rated.reward <= 1.0 and (rated.metadata.errors.model_grader_parse_error or rated.reward >= 0)
    with pytest.raises(openai.NotFoundError) as exc:
        graders.run(grader={**label, "model": tuned[:-1] + "z"}, model_sample="-", item=first)
    assert tuned in exc.value.message and "Did you mean" in exc.value.message


def many(n: int) -> dict[str, Any]:
    """``n`` questions the base model answers at length: slow enough to act on a run while it runs."""
    rows = [{"item": {"question": f"Tell me a long story about the number {i}.", "answer": "x"}} for i in range(n)]
    return {"type": "file_content", "content": rows}


def worker_items(port: int) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("sage_ft_eval_items_total{")
    )


def test_a_run_resumes_on_another_worker_without_regrading(
    stack: Stack, client: openai.OpenAI, facts_eval: tuple[str, str]
) -> None:
    eval_id, _ = facts_eval
    total = 120
    run = start_run(client, eval_id, "sage-tiny", many(total), tokens=48)
    graded = wait_for(
        lambda: (n := client.evals.runs.retrieve(run.id, eval_id=eval_id).result_counts.failed) >= 8 and n,
        300,
        "8 graded items",
    )
    assert graded < total
    stack.workers[0].kill9()
    port = free_port()
    stack.start_worker("w2", SAGE_WORKER_METRICS_PORT=str(port))
    done = wait_run(client, eval_id, run.id)
    assert done.status == "completed" and done.result_counts.total == total, done.error
    assert done.result_counts.failed + done.result_counts.passed == total and done.result_counts.errored == 0
    items = all_items(client, eval_id, run.id)
    assert sorted(i.datasource_item_id for i in items) == list(range(total))  # each item once
    events = httpx.get(f"{client.base_url}evals/{eval_id}/runs/{run.id}/events", timeout=10).json()["data"]
    assert [e["type"] for e in events] == ["queued", "started", "requeued", "started", "completed"], events
    resumed = events[3]["data"]
    assert resumed["attempt"] == 2 and resumed["done"] >= graded
    assert worker_items(port) == total - resumed["done"]  # the second worker answered only the rest


def test_a_canceled_run_stops(client: openai.OpenAI, facts_eval: tuple[str, str]) -> None:
    eval_id, _ = facts_eval
    total = 200
    run = start_run(client, eval_id, "sage-tiny", many(total), tokens=48)
    wait_for(
        lambda: client.evals.runs.retrieve(run.id, eval_id=eval_id).result_counts.failed >= 3, 300, "3 graded items"
    )
    canceled = client.evals.runs.cancel(run.id, eval_id=eval_id)
    assert canceled.status == "canceled"
    at_cancel = canceled.result_counts.failed
    # the worker runs one task at a time: once the next run completes, the canceled one has let go of it
    after = wait_run(client, eval_id, start_run(client, eval_id, "sage-tiny", many(2)).id)
    assert after.status == "completed"
    final = client.evals.runs.retrieve(run.id, eval_id=eval_id)
    assert final.status == "canceled" and final.result_counts.failed < total
    # it stopped within the answers in flight (2) and one status read (0.5 s), far from the end of the file
    assert final.result_counts.failed <= at_cancel + 10, (at_cancel, final.result_counts)
    with pytest.raises(openai.ConflictError):
        client.evals.runs.cancel(after.id, eval_id=eval_id)  # a finished run stays finished


def sage_ft(stack: Stack, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {**stack.env, "SAGE_FT_GATEWAY_URL": stack.url, "SAGE_FT_AUTO_START": "false", "COLUMNS": "200", **extra}
    return subprocess.run([str(SAGE), *args], env=env, capture_output=True, text=True, timeout=900)


def test_the_cli_compares_a_fine_tune_with_its_base(
    stack: Stack, tuned_job: Any, qa_records: list[dict], tmp_path: Path
) -> None:
    data = tmp_path / "facts.jsonl"
    data.write_text(
        "".join(
            json.dumps(
                {
                    "messages": [
                        {"role": "user", "content": r["question"]},
                        {"role": "assistant", "content": r["answer"]},
                    ]
                }
            )
            + "\n"
            for r in qa_records[:FACTS]
        )
    )
    out = sage_ft(stack, "eval", "facts", "--data", str(data), "--max-tokens", "12", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["metric"] == "exact" and report["n"] == FACTS and set(report["models"]) == {"facts", "sage-tiny"}
    assert report["models"]["facts"]["exact"] >= 0.9 and report["models"]["sage-tiny"]["exact"] <= 0.1
    assert report["delta"] >= 0.8 and len(report["disagreements"]) >= 0.8 * FACTS
    first = report["disagreements"][0]
    assert first["answers"]["facts"] == first["reference"] != first["answers"]["sage-tiny"]
    table = sage_ft(
        stack, "eval", "facts", "--data", str(data), "--grader", "rouge_l", "--max-items", "3", "--max-tokens", "12"
    )
    assert table.returncode == 0, table.stderr
    assert (
        "rouge_l on 3 records" in table.stdout and "difference" in table.stdout and "where they differ" in table.stdout
    )
    bad = sage_ft(stack, "eval", "nope-model", "--data", str(data))
    assert bad.returncode == 1 and "nope-model" in bad.stderr and "Traceback" not in bad.stderr
    shown = sage_ft(stack, "jobs", "show", tuned_job.id)
    assert shown.returncode == 0, shown.stderr
    assert f"evaluation on {FACTS} held-out records" in shown.stdout and "fine-tune" in shown.stdout
    assert "held-out loss" in shown.stdout


HARNESS_TASK = """\
task: sage_facts
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "{{{{question}}}}"
doc_to_target: "{{{{answer}}}}"
process_results: !function facts_utils.process_results
metric_list:
  - metric: exact
    aggregation: mean
    higher_is_better: true
generation_kwargs:
  until: ["\\n\\n"]
  max_gen_toks: 12
  do_sample: false
metadata:
  version: 1.0
"""
HARNESS_UTILS = """\
def process_results(doc, results):
    return {"exact": float(results[0].strip() == doc["answer"].strip())}
"""


def test_lm_evaluation_harness_scores_the_fine_tune_above_its_base(
    stack: Stack, tuned_job: Any, qa_records: list[dict], tmp_path: Path
) -> None:
    """A local harness task defined from JSON files (no hub dataset is reachable), run by lm_eval's
    local-chat-completions model against the gateway: the served adapter is what gets evaluated."""
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    data = tasks / "facts.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in qa_records[:FACTS]))
    (tasks / "sage_facts.yaml").write_text(HARNESS_TASK.format(data=data))
    (tasks / "facts_utils.py").write_text(HARNESS_UTILS)
    env = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_CACHE": str(tmp_path / "ds-cache")}
    out = sage_ft(stack, "eval", "facts", "--harness", "sage_facts", "--include-path", str(tasks), "--json", **env)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)
    scores = {model: report["harness"][model]["sage_facts"]["exact"] for model in ("facts", "sage-tiny")}
    assert scores["facts"] >= 0.9 and scores["sage-tiny"] <= 0.1, scores
    assert report["delta"]["sage_facts"]["exact"] == pytest.approx(scores["facts"] - scores["sage-tiny"])
    missing = sage_ft(stack, "eval", "facts", "--harness", "no_such_task_xyz", "--include-path", str(tasks), **env)
    assert missing.returncode == 1 and "harness failed" in missing.stderr and "Traceback" not in missing.stderr[:200]
