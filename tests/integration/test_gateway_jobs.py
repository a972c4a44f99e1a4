"""Gateway behaviour a user notices: clear 4xx errors for bad input, idempotent creates, cancel, pause/resume."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from stack import LEARN, Stack, all_events, qa_lines, wait_for, wait_job

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(make_stack: Any) -> Stack:
    # 51 KiB upload limit, so an oversize upload is cheap; a fast poll, as tiny-model steps take milliseconds
    st: Stack = make_stack(SAGE_GATEWAY_MAX_UPLOAD_MB="0.05", SAGE_WORKER_POLL_SECONDS="0.05")
    st.start_gateway()
    st.start_worker("w1")
    return st


def _error(exc: pytest.ExceptionInfo[openai.APIStatusError]) -> dict[str, Any]:
    body = exc.value.body
    assert isinstance(body, dict)
    return body


def test_malformed_jsonl_line_3_is_a_400_naming_line_3(client: openai.OpenAI) -> None:
    data = b'{"question": "a?", "answer": "b"}\n{"question": "c?", "answer": "d"}\n{"question": "e?", "answer": \n'
    with pytest.raises(openai.BadRequestError) as exc:
        client.files.create(file=("bad.jsonl", data), purpose="fine-tune")
    assert "line 3" in _error(exc)["message"] and "bad.jsonl" in _error(exc)["message"]
    assert client.files.list().data == [] or all(f.filename != "bad.jsonl" for f in client.files.list().data)


@pytest.mark.parametrize(("data", "why"), [(b"", "empty"), (b"\xff\xfe{}", "UTF-8"), (b"  \n\n", "empty")])
def test_file_level_errors_name_the_users_file_and_no_server_path(client: openai.OpenAI, data: bytes, why: str) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.files.create(file=("my data.jsonl", data), purpose="fine-tune")
    message = _error(exc)["message"]
    assert message.startswith("my data.jsonl") and why in message, message
    assert "upload-" not in message and "/tmp" not in message and "/" not in message, message


def test_record_level_errors_give_status_error_and_block_jobs(client: openai.OpenAI) -> None:
    data = b'{"question": "a?", "answer": "b"}\n{"question": "c?"}\n'
    record = client.files.create(file=("partial.jsonl", data), purpose="fine-tune")
    assert record.status == "error"
    assert "line 2" in record.status_details and "answer" in record.status_details
    with pytest.raises(openai.BadRequestError) as exc:
        client.fine_tuning.jobs.create(model="sage-tiny", training_file=record.id)
    assert _error(exc)["param"] == "training_file" and "line 2" in _error(exc)["message"]


def test_a_preference_file_is_accepted_and_an_sft_job_on_it_says_which_method_it_fits(client: openai.OpenAI) -> None:
    pairs = b"".join(
        json.dumps({"prompt": f"Sky {i}?", "chosen": "Blue.", "rejected": "Green."}).encode() + b"\n" for i in range(3)
    )
    uploaded = client.files.create(file=("prefs.jsonl", pairs), purpose="fine-tune")
    assert uploaded.status == "processed"
    with pytest.raises(openai.BadRequestError) as exc:
        client.fine_tuning.jobs.create(model="sage-tiny", training_file=uploaded.id)
    error = _error(exc)
    assert error["param"] == "training_file" and "'dpo'" in error["message"], error


def test_oversize_upload_is_413_before_the_body_is_read(stack: Stack, client: openai.OpenAI) -> None:
    big = b'{"text": "' + b"x" * 200_000 + b'"}\n'
    with pytest.raises(openai.APIStatusError) as exc:
        client.files.create(file=("big.jsonl", big), purpose="fine-tune")
    assert exc.value.status_code == 413 and _error(exc)["param"] == "file"

    def chunks() -> Any:  # no Content-Length: the limit must hold while streaming
        boundary = b"--b0und"
        yield boundary + b'\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
        yield boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n\r\n'
        for _ in range(100):
            yield b"y" * 10_000
        yield b"\r\n" + boundary + b"--\r\n"

    resp = httpx.post(
        f"{stack.url}/v1/files",
        content=chunks(),
        timeout=30,
        headers={"content-type": "multipart/form-data; boundary=b0und"},
    )
    assert resp.status_code == 413 and resp.json()["error"]["code"] == "file_too_large"


@pytest.mark.parametrize(
    ("body", "param", "status"),
    [
        ({"model": "no-such-model"}, "model", 404),
        ({"model": "https://evil.example/x"}, "model", 400),
        ({"model": "../../etc"}, "model", 400),
        ({"model": "/abs/path"}, "model", 400),
        ({"training_file": "file-doesnotexist"}, "training_file", 404),
        (
            {"method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 0}}}},
            "method.supervised.hyperparameters.n_epochs",
            400,
        ),
        ({"hyperparameters": {"learning_rate_multiplier": -1}}, "hyperparameters.learning_rate_multiplier", 400),
        ({"hyperparameters": {"batch_size": "big"}}, "hyperparameters.batch_size", 400),
        ({"learning_rate": 5}, "learning_rate", 400),
        ({"quantization": "3bit"}, "quantization", 400),
        ({"lora": {"r": 0}}, "lora.r", 400),
        ({"max_length": 8}, "max_length", 400),
        ({"preset": "tpu_pod"}, "preset", 400),
        ({"epochs": 3}, "epochs", 400),
        ({"suffix": "has space"}, "suffix", 400),
    ],
)
def test_invalid_job_requests_are_4xx_naming_the_param(
    client: openai.OpenAI, good_file: str, body: dict[str, Any], param: str, status: int
) -> None:
    full = {"model": "sage-tiny", "training_file": good_file, **body}
    with pytest.raises(openai.APIStatusError) as exc:
        client.post("/fine_tuning/jobs", body=full, cast_to=httpx.Response)
    assert exc.value.status_code == status, _error(exc)
    assert _error(exc)["param"] == param, _error(exc)
    assert _error(exc)["type"] == "invalid_request_error"


def test_unknown_ids_are_404_in_openai_shape(stack: Stack, client: openai.OpenAI) -> None:
    jobs = client.fine_tuning.jobs
    calls = (
        lambda: jobs.retrieve("ftjob-nope"),
        lambda: client.files.retrieve("file-nope"),
        lambda: client.models.retrieve("ft:nope"),
        lambda: jobs.cancel("ftjob-nope"),
    )
    for call in calls:
        with pytest.raises(openai.NotFoundError) as exc:
            call()
        assert set(_error(exc)) == {"message", "type", "param", "code"}
    resp = httpx.post(
        f"{stack.url}/v1/fine_tuning/jobs",
        content=b"{not json",
        timeout=10,
        headers={"content-type": "application/json"},
    )
    assert resp.status_code == 400 and resp.json()["error"]["message"]
    assert httpx.get(f"{stack.url}/healthz", timeout=5).status_code == 200  # still up
    assert "Traceback" not in stack.gateway.tail(200) if stack.gateway else True


def test_same_idempotency_key_creates_one_job(client: openai.OpenAI, good_file: str) -> None:
    body = {
        "model": "sage-tiny",
        "training_file": good_file,
        "metadata": {"idem": "yes"},
        "hyperparameters": {"n_epochs": 1},
    }
    first = client.fine_tuning.jobs.create(**body, extra_headers={"Idempotency-Key": "retry-123"})  # type: ignore[arg-type]
    second = client.fine_tuning.jobs.create(**body, extra_headers={"Idempotency-Key": "retry-123"})  # type: ignore[arg-type]
    third = client.fine_tuning.jobs.create(**body, extra_headers={"Idempotency-Key": "other"})  # type: ignore[arg-type]
    assert first.id == second.id != third.id
    listed = client.fine_tuning.jobs.list(metadata={"idem": "yes"}).data
    assert sorted(j.id for j in listed) == sorted({first.id, third.id})
    for job_id in (first.id, third.id):
        assert wait_job(client, job_id).status == "succeeded"


def test_list_pagination_with_after_and_has_more(client: openai.OpenAI) -> None:
    everything = [j.id for j in client.fine_tuning.jobs.list(limit=100).data]
    assert len(everything) >= 2
    page = client.fine_tuning.jobs.list(limit=1)
    assert page.has_more and page.data[0].id == everything[0]
    nxt = client.fine_tuning.jobs.list(limit=1, after=page.data[0].id)
    assert nxt.data[0].id == everything[1]
    assert [j.id for j in client.fine_tuning.jobs.list(limit=1)] == everything  # the client follows `after`


def test_cancel_running_job_stops_within_a_few_steps_and_publishes_nothing(
    stack: Stack, client: openai.OpenAI, good_file: str
) -> None:
    job = client.fine_tuning.jobs.create(
        model="sage-tiny",
        training_file=good_file,
        suffix="cancelme",
        hyperparameters={"n_epochs": 50, "batch_size": 4},
        extra_body={**LEARN, "save_steps": 1000},
    )
    step_at_request = wait_for(
        lambda: client.fine_tuning.jobs.retrieve(job.id).model_extra["step"] >= 3, 120, "training to reach step 3"
    )
    assert step_at_request
    _assert_watching_runs_below_the_trainer(stack.workers[0].pid)
    requested = client.fine_tuning.jobs.cancel(job.id)
    asked_at = max(e.data.get("step", 0) for e in all_events(client, job.id) if e.type == "metrics")
    assert requested.status in ("running", "cancelled")
    done = wait_job(client, job.id, timeout=60)
    assert done.status == "cancelled" and done.fine_tuned_model is None
    last_step = max(e.data.get("step", 0) for e in all_events(client, job.id) if e.type == "metrics")
    assert last_step - asked_at <= 10 and last_step < 100
    assert not any(m.id.startswith("ft:sage-tiny:cancelme:") for m in client.models.list().data)
    with pytest.raises(openai.ConflictError) as exc:
        client.fine_tuning.jobs.cancel(job.id)
    assert "cancelled" in _error(exc)["message"]


def _nice(pid: int, tid: int) -> int:
    return int(Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def _assert_watching_runs_below_the_trainer(worker_pid: int) -> None:
    """While a trainer runs, the worker watches it from a thread niced 10 below it (the default); the trainer,
    started by the task's own thread, keeps the worker's priority."""
    tids = [int(t) for t in os.listdir(f"/proc/{worker_pid}/task")]
    nices = {tid: _nice(worker_pid, tid) for tid in tids}
    base = nices[worker_pid]
    assert min(19, base + 10) in nices.values(), nices
    trainers = Path(f"/proc/{worker_pid}/task/{worker_pid}/children").read_text().split()
    assert len(trainers) == 1, "the trainer is a child of the task's own thread"
    trainer = int(trainers[0])
    assert {_nice(trainer, int(t)) for t in os.listdir(f"/proc/{trainer}/task")} == {base}


# long enough that a pause asked for at step 3 (as the job record shows it, a moment behind the trainer) lands well
# before the last step on a fast machine: 8 records, batch 4
PAUSE_EPOCHS = 40
PAUSE_STEPS = PAUSE_EPOCHS * 2


def test_pause_then_resume_continues_from_the_checkpoint(client: openai.OpenAI, good_file: str) -> None:
    job = client.fine_tuning.jobs.create(
        model="sage-tiny",
        training_file=good_file,
        hyperparameters={"n_epochs": PAUSE_EPOCHS, "batch_size": 4},
        extra_body={**LEARN, "save_steps": 1000},
    )
    wait_for(lambda: client.fine_tuning.jobs.retrieve(job.id).model_extra["step"] >= 3, 120, "step 3")
    client.post(f"/fine_tuning/jobs/{job.id}/pause", cast_to=httpx.Response)
    paused = wait_job(client, job.id, ("paused",), timeout=60)
    at = paused.model_extra["step"]
    assert 3 <= at < PAUSE_STEPS
    assert [c.step_number for c in client.fine_tuning.jobs.checkpoints.list(job.id).data] == [at]
    client.post(f"/fine_tuning/jobs/{job.id}/resume", cast_to=httpx.Response)
    done = wait_job(client, job.id)
    assert done.status == "succeeded" and done.model_extra["step"] == PAUSE_STEPS
    messages = [e.message for e in all_events(client, job.id)]
    assert f"Resuming from checkpoint at step {at}" in messages
    steps = [e.data["step"] for e in all_events(client, job.id) if e.type == "metrics"]
    assert steps == list(range(1, PAUSE_STEPS + 1))  # no step trained twice, none skipped


def test_a_resume_accepted_while_the_trainer_is_pausing_wins(client: openai.OpenAI, good_file: str) -> None:
    """Pause, then resume while the trainer is still writing its checkpoint: both calls answer 200, so the job must
    continue (here: be re-queued from that checkpoint) and never be parked as paused."""
    job = client.fine_tuning.jobs.create(
        model="sage-tiny",
        training_file=good_file,
        hyperparameters={"n_epochs": PAUSE_EPOCHS, "batch_size": 4},
        extra_body={**LEARN, "save_steps": 1000},
    )
    wait_for(lambda: client.fine_tuning.jobs.retrieve(job.id).model_extra["step"] >= 3, 120, "step 3")
    client.post(f"/fine_tuning/jobs/{job.id}/pause", cast_to=httpx.Response)
    wait_for(
        lambda: any(e.message.startswith("Pausing at step") for e in all_events(client, job.id)),
        30,
        "the worker to start pausing",
        interval=0.02,
    )
    resumed = client.post(f"/fine_tuning/jobs/{job.id}/resume", cast_to=httpx.Response)
    assert resumed.status_code == 200 and resumed.json()["status"] == "running"  # caught while pausing
    done = wait_job(client, job.id, ("succeeded", "failed", "cancelled", "paused"), timeout=180)
    assert done.status == "succeeded" and done.model_extra["step"] == PAUSE_STEPS
    messages = [e.message for e in all_events(client, job.id)]
    assert any(m.startswith("Resumed while pausing at step") for m in messages), messages
    assert not any(m.startswith("Job paused") for m in messages)


def test_files_list_get_content_delete(client: openai.OpenAI, qa_records: list[dict]) -> None:
    data = qa_lines(qa_records[:3])
    created = client.files.create(file=("three.jsonl", data), purpose="fine-tune")
    assert created.id in {f.id for f in client.files.list().data}
    assert client.files.retrieve(created.id).filename == "three.jsonl"
    assert client.files.content(created.id).content == data
    assert client.files.delete(created.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        client.files.content(created.id)


def test_the_listed_presets_are_exactly_the_ones_a_job_accepts(
    stack: Stack, client: openai.OpenAI, good_file: str
) -> None:
    """``GET /v1/presets`` (what the console's form offers): each listed name prices a job, and a name it does not
    list is a 400 naming ``preset``."""
    listed = httpx.get(f"{stack.url}/v1/presets", timeout=30).json()["data"]
    names = [p["id"] for p in listed]
    assert names[0] == "auto" and {"cpu", "tiny", "rtx_3060", "minimal"} <= set(names)
    assert next(p for p in listed if p["id"] == "minimal")["quantization"] == "4bit"
    for name in names:
        estimate = client.fine_tuning.jobs.with_raw_response.create(
            model="sage-tiny", training_file=good_file, extra_body={"preset": name, "dry_run": True}
        ).http_response.json()
        assert estimate["object"] == "fine_tuning.job.estimate" and estimate["estimate"]["preset"] == name
    with pytest.raises(openai.BadRequestError) as exc:
        client.fine_tuning.jobs.create(model="sage-tiny", training_file=good_file, extra_body={"preset": "h100"})
    assert _error(exc)["param"] == "preset"


@pytest.mark.parametrize(
    ("preset", "resolved", "max_length"),
    [("tiny", "tiny", 256), (None, "cpu", 512), ("auto", "cpu", 512)],  # named; the worker's default; its device's
)
def test_the_job_shows_exactly_the_config_its_trainer_received(
    stack: Stack, client: openai.OpenAI, good_file: str, preset: str | None, resolved: str, max_length: int
) -> None:
    """The config is resolved once, by the worker that takes the job, and stored on it: while queued the job shows
    only what the request set (``auto`` for what the preset decides), and once trained its ``training_config`` is the
    one the trainer process loaded (reported by the trainer itself on its start event), with hyperparameters from it."""
    extra = {"preset": preset} if preset else {}
    job = client.fine_tuning.jobs.create(
        model="sage-tiny", training_file=good_file, hyperparameters={"n_epochs": 1}, extra_body=extra
    )
    assert job.model_extra["training_config"] is None  # not resolved at submit: no stand-in values
    assert job.hyperparameters.n_epochs == 1 and job.hyperparameters.batch_size == "auto"
    done = wait_job(client, job.id, stack=stack)
    assert done.status == "succeeded", done.error
    config = done.model_extra["training_config"]
    events = client.fine_tuning.jobs.list_events(job.id, limit=100).data
    received = [e.data["config"] for e in events if isinstance(e.data, dict) and "config" in e.data]
    assert received == [config]  # the trainer's own report, once
    assert config["preset"] == resolved and config["max_length"] == max_length
    assert not set(config) & {"data_path", "output_dir", "validation_file", "init_adapter"}  # no machine paths
    assert done.hyperparameters.n_epochs == config["num_train_epochs"] == 1
    batch = config["per_device_train_batch_size"] * config["gradient_accumulation_steps"]
    assert done.hyperparameters.batch_size == batch
    assert done.model_extra["total_steps"] == -(-8 // batch)  # 8 records, one epoch: what the trainer ran
