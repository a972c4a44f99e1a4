"""The openai client, unchanged, drives a fine-tune through the gateway and a real Celery worker, on both stores.

files.create -> fine_tuning.jobs.create -> list_events until succeeded -> fine_tuned_model listed by models.list().
Then the published adapter is fetched through its manifest (sha256-verified) and must give the trained answers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from stack import LEARN, TERMINAL, Stack, all_events, free_port, object_store, qa_lines, wait_for

from sage_ft.storage import fetch_part, list_models

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=["local", "s3"])
def stack(request: pytest.FixtureRequest, make_stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Stack:
    if request.param == "s3":
        ep = request.getfixturevalue("s3_endpoint")
        storage = {
            "SAGE_STORAGE_BACKEND": "s3",
            "SAGE_STORAGE_S3_ENDPOINT": ep["endpoint"],
            "SAGE_STORAGE_S3_ACCESS_KEY": ep["access_key"],
            "SAGE_STORAGE_S3_SECRET_KEY": ep["secret_key"],
            "SAGE_STORAGE_S3_BUCKET": f"e2e-{request.param}",
        }
    else:
        storage = None
    wandb_dir = tmp_path_factory.mktemp("wandb")
    st: Stack = make_stack(
        storage,
        SAGE_WORKER_METRICS_PORT=str(free_port()),
        WANDB_MODE="offline",
        WANDB_DIR=str(wandb_dir),
        WANDB_SILENT="true",
    )
    st.wandb_dir = wandb_dir  # type: ignore[attr-defined]
    st.storage = storage  # type: ignore[attr-defined]
    st.start_gateway()
    st.start_worker("w1")
    return st


def test_openai_client_fine_tunes_and_lists_the_model(stack: Stack, qa_records: list[dict], tmp_path: Path) -> None:
    from sage_ft.training.inference import generate_reply, load_for_inference

    client = openai.OpenAI(base_url=f"{stack.url}/v1", api_key="anything", max_retries=0)
    records = qa_records[:8]
    uploaded = client.files.create(file=("qa.jsonl", qa_lines(records)), purpose="fine-tune")
    assert uploaded.status == "processed" and uploaded.bytes == len(qa_lines(records))
    assert client.files.content(uploaded.id).content == qa_lines(records)

    job = client.fine_tuning.jobs.create(
        model="sage-tiny",
        training_file=uploaded.id,
        suffix="e2e",
        seed=7,
        metadata={"team": "qa"},
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 25, "batch_size": 4}}},
        integrations=[{"type": "wandb", "wandb": {"project": "sage-e2e-proj", "tags": ["e2e-tag"]}}],
        extra_body={**LEARN, "name": "codewords", "save_steps": 20},
    )
    assert job.status == "queued" and job.fine_tuned_model is None

    seen: list[str] = []

    def finished() -> Any:
        for event in client.fine_tuning.jobs.list_events(job.id, limit=5).data:
            seen.append(event.message)
        current = client.fine_tuning.jobs.retrieve(job.id)
        return current if current.status in TERMINAL else None

    done = wait_for(finished, 240, "job to finish", interval=0.5)
    events = all_events(client, job.id)
    assert done.status == "succeeded", (done.error, [e.message for e in events][-10:], stack.workers[0].tail())
    assert done.fine_tuned_model and done.fine_tuned_model.startswith("ft:sage-tiny:e2e:")
    assert done.trained_tokens and done.trained_tokens > 0
    assert done.hyperparameters.n_epochs == 25 and done.hyperparameters.batch_size == 4

    # events: OpenAI shapes, in order, with falling loss
    losses = [e.data["train_loss"] for e in events if e.type == "metrics"]
    assert len(losses) == 50 and losses[-1] < 0.5 * losses[0], losses
    assert [e.data["step"] for e in events if e.type == "metrics"] == list(range(1, 51))
    assert events[-1].message == "The job has successfully completed"
    assert all(e.object == "fine_tuning.job.event" for e in events)

    # the wandb integration reached W&B: one offline run named by the job id, with the project and tags asked for
    runs = list((stack.wandb_dir / "wandb").glob(f"offline-run-*-{job.id}"))  # type: ignore[attr-defined]
    assert len(runs) == 1, list((stack.wandb_dir / "wandb").iterdir())  # type: ignore[attr-defined]
    record = next(runs[0].glob("*.wandb")).read_bytes()
    assert b"sage-e2e-proj" in record and b"e2e-tag" in record and b"train/loss" in record

    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert [c.step_number for c in checkpoints] == [50, 40, 20]
    assert checkpoints[-1].metrics.train_loss == pytest.approx(losses[19])

    listed = {m.id: m for m in client.models.list().data}
    assert done.fine_tuned_model in listed and "sage-tiny" in listed
    assert listed[done.fine_tuned_model].model_extra["aliases"] == ["codewords"]
    assert client.models.retrieve("codewords").id == done.fine_tuned_model  # addressed by alias

    # the published adapter, fetched and verified through its manifest, answers what it was taught
    store = object_store(stack)
    manifests = [m for m in list_models(store) if m.job_id == job.id]
    assert len(manifests) == 1 and manifests[0].name == done.fine_tuned_model
    adapter = fetch_part(store, done.fine_tuned_model, "adapter", tmp_path / "adapter")
    model, tokenizer = load_for_inference(adapter)
    answers = [
        generate_reply(model, tokenizer, [{"role": "user", "content": r["question"]}], max_new_tokens=12)
        for r in records
    ]
    assert sum(a == r["answer"] for a, r in zip(answers, records, strict=True)) >= 7, answers


def test_sse_stream_replays_events_and_ends_with_the_final_job(stack: Stack) -> None:
    client = openai.OpenAI(base_url=f"{stack.url}/v1", api_key="x", max_retries=0)
    job = client.fine_tuning.jobs.list(limit=1).data[0]
    assert job.status == "succeeded"
    frames = []
    with httpx.stream("GET", f"{stack.url}/v1/fine_tuning/jobs/{job.id}/events/stream", timeout=30) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        event = None
        for line in resp.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                frames.append((event, json.loads(line[6:])))
    assert frames[-1][0] == "end" and frames[-1][1]["status"] == "succeeded"
    messages = [f[1]["message"] for f in frames[:-1]]
    assert messages == [e.message for e in all_events(client, job.id)]
    # Last-Event-ID resumes after the given sequence number
    with httpx.stream(
        "GET",
        f"{stack.url}/v1/fine_tuning/jobs/{job.id}/events/stream",
        headers={"Last-Event-ID": str(len(messages) - 2)},
        timeout=30,
    ) as resp:
        rest = [json.loads(line[6:]) for line in resp.iter_lines() if line.startswith("data: ")]
    assert [r.get("message") for r in rest[:-1]] == messages[-2:]


def test_metrics_from_gateway_and_worker(stack: Stack) -> None:
    text = httpx.get(f"{stack.url}/metrics", timeout=10).text
    assert 'sage_ft_http_requests_total{method="POST",route="/v1/fine_tuning/jobs",status="200"}' in text
    assert 'route="/v1/fine_tuning/jobs/{job_id}"' in text
    assert 'sage_ft_jobs{status="succeeded"} 1.0' in text
    assert "sage_ft_queue_depth_messages" in text and "sage_ft_http_request_duration_seconds_bucket" in text
    assert "ftjob-" not in text and "anything" not in text  # no ids or keys in labels
    worker = httpx.get(f"http://127.0.0.1:{stack.env['SAGE_WORKER_METRICS_PORT']}/metrics", timeout=10).text
    steps = [line for line in worker.splitlines() if line.startswith("sage_ft_train_steps_total ")]
    assert steps and float(steps[0].split()[1]) == 50.0
    assert "sage_ft_checkpoint_upload_seconds_count 3.0" in worker
    ready = httpx.get(f"{stack.url}/readyz", timeout=10)
    assert ready.status_code == 200 and ready.json()["checks"] == {"redis": "ok", "object_store": "ok"}


def test_one_damaged_manifest_hides_that_model_and_never_the_others(stack: Stack) -> None:
    client = openai.OpenAI(base_url=f"{stack.url}/v1", api_key="x", max_retries=0)
    good = client.fine_tuning.jobs.list(limit=1).data[0].fine_tuned_model
    store = object_store(stack)
    store.put_bytes("models/damaged/manifest.json", b'{"name": "damaged", "files": {')  # invalid JSON
    listed = {m.id for m in client.models.list().data}
    assert good in listed and "damaged" not in listed
    assert client.models.retrieve(good).id == good
    with pytest.raises(openai.ConflictError) as err:
        client.models.retrieve("damaged")
    body = err.value.body
    assert isinstance(body, dict) and body["code"] == "model_corrupt" and "manifest.json is damaged" in body["message"]
    assert client.models.delete("damaged").deleted  # and it can still be removed
    assert not store.exists("models/damaged/manifest.json")
    assert client.models.retrieve(good).id == good


def test_merge_adds_merged_weights_to_the_manifest_then_delete_unpublishes(stack: Stack) -> None:
    client = openai.OpenAI(base_url=f"{stack.url}/v1", api_key="x", max_retries=0)
    name = client.fine_tuning.jobs.list(limit=1).data[0].fine_tuned_model
    assert name
    resp = httpx.post(f"{stack.url}/v1/models/{name}/merge", timeout=10)
    assert resp.status_code == 202 and resp.json()["status"] == "queued"
    merged = wait_for(lambda: "merged" in client.models.retrieve(name).model_extra["parts"], 180, "merge")
    assert merged
    manifest = next(m for m in list_models(object_store(stack)) if m.name == name)
    assert any(k.startswith("merged/") and k.endswith(".safetensors") for k in manifest.files)
    assert any(k.startswith("adapter/") for k in manifest.files)  # the adapter stays published
    assert client.models.delete(name).deleted
    assert name not in {m.id for m in client.models.list().data}
    assert list_models(object_store(stack)) == []
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("codewords")
