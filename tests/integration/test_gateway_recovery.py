"""Nothing is lost: a cancelled queued job never starts, and a job whose worker is SIGKILLed resumes elsewhere."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from stack import LEARN, Stack, all_events, wait_for, wait_job

from sage_ft.settings import StorageSettings
from sage_ft.storage import list_models, make_store

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def slow_model(sage_home: Path) -> str:
    """A wider model than sage-tiny, so that steps take long enough to kill a worker mid-run."""
    from sage_ft.training.tiny_model import build_tiny_model

    build_tiny_model("sage-wide", hidden_size=384, num_layers=4, num_heads=6)
    return "sage-wide"


@pytest.fixture(scope="module")
def stack(make_stack: Any) -> Stack:
    # a 30 s keep-alive: an event stream that notices news sooner is pushed to, not polling
    st: Stack = make_stack(SAGE_LEASE_SECONDS="5", SAGE_VISIBILITY_TIMEOUT="600", SAGE_GATEWAY_SSE_POLL_SECONDS="30")
    st.start_gateway()  # no worker yet
    return st


def trainer_processes(stack: Stack) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if "sage_ft_worker.trainer_main" in cmd and str(stack.dir) in cmd:
                pids.append(int(proc.name))
    return pids


def test_sigterm_ends_open_event_streams_at_once_and_they_resume_on_the_next_gateway(
    stack: Stack, client: openai.OpenAI, good_file: str
) -> None:
    """Compose and Kubernetes send SIGTERM, then SIGKILL: with a stream open the gateway must still exit promptly,
    ending the stream with a frame whose id the client resumes from (Last-Event-ID) on the next gateway."""
    from httpx_sse import connect_sse

    job = client.fine_tuning.jobs.create(model="sage-tiny", training_file=good_file, hyperparameters={"n_epochs": 1})
    seen: list[Any] = []
    url = f"{stack.url}/v1/fine_tuning/jobs/{job.id}/events/stream"

    def follow() -> None:
        with httpx.Client(timeout=60) as http, connect_sse(http, "GET", url) as source:
            seen.extend(source.iter_sse())

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    wait_for(lambda: seen, 10, "the stream's first event")
    time.sleep(1.0)  # now idle, waiting for news
    gateway = stack.gateway
    assert gateway is not None
    stopped_at = time.monotonic()
    gateway.proc.send_signal(signal.SIGTERM)
    gateway.proc.wait(timeout=20)
    assert time.monotonic() - stopped_at < 5.0, "the gateway did not exit promptly with a stream open"
    reader.join(timeout=5)
    assert not reader.is_alive()
    farewell = seen[-1]
    assert farewell.event == "shutdown" and farewell.retry == 1000
    before = [e for e in seen if e.event == "fine_tuning.job.event"]
    assert farewell.id == before[-1].id and json.loads(farewell.data)["last_event_id"] == int(before[-1].id)
    stack.start_gateway()
    client.fine_tuning.jobs.cancel(job.id)
    with (
        httpx.Client(timeout=60) as http,
        connect_sse(http, "GET", url, headers={"Last-Event-ID": farewell.id}) as source,
    ):
        rest = list(source.iter_sse())
    after = [json.loads(e.data)["message"] for e in rest if e.event == "fine_tuning.job.event"]
    assert rest[-1].event == "end" and after and "Job cancelled" in after[-1]
    everything = [e.message for e in all_events(client, job.id)]
    assert [json.loads(e.data)["message"] for e in before] + after == everything  # nothing lost, nothing twice


def test_a_cancelled_queued_job_never_starts(stack: Stack, client: openai.OpenAI, good_file: str) -> None:
    job = client.fine_tuning.jobs.create(model="sage-tiny", training_file=good_file, hyperparameters={"n_epochs": 1})
    assert client.fine_tuning.jobs.retrieve(job.id).status == "queued"  # no worker is running
    frames: list[tuple[float, str]] = []

    def follow() -> None:
        with httpx.stream("GET", f"{stack.url}/v1/fine_tuning/jobs/{job.id}/events/stream", timeout=60) as resp:
            for line in resp.iter_lines():
                if line.startswith("event: "):
                    frames.append((time.monotonic(), line[7:]))

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    wait_for(lambda: frames, 10, "the stream's first event")
    time.sleep(0.5)  # the stream is now waiting for news
    cancelled_at = time.monotonic()
    assert client.fine_tuning.jobs.cancel(job.id).status == "cancelled"
    reader.join(timeout=20)
    assert frames[-1][1] == "end" and frames[-1][0] - cancelled_at < 3.0, "the stream was not woken by the cancel"
    worker = stack.start_worker("w1")  # receives the message, and must leave the job alone
    wait_for(
        lambda: "skipped: job is cancelled" in worker.log_path.read_text(errors="replace"),
        60,
        "the worker to skip the cancelled job",
    )
    assert client.fine_tuning.jobs.retrieve(job.id).status == "cancelled"
    assert not any(e.message.startswith("Attempt") for e in all_events(client, job.id))


def test_sigkilled_worker_job_resumes_from_its_checkpoint_and_publishes_once(
    stack: Stack, client: openai.OpenAI, good_file: str, slow_model: str
) -> None:
    job = client.fine_tuning.jobs.create(
        model=slow_model,
        training_file=good_file,
        suffix="survivor",
        hyperparameters={"n_epochs": 15, "batch_size": 4},
        extra_body={**LEARN, "save_steps": 4},
    )
    first = wait_for(lambda: client.fine_tuning.jobs.checkpoints.list(job.id).data, 180, "the first checkpoint")
    assert client.fine_tuning.jobs.retrieve(job.id).status == "running"
    worker = stack.workers[0]
    assert trainer_processes(stack), "the trainer runs as a child process"
    worker.kill9()
    wait_for(lambda: not trainer_processes(stack), 15, "the orphaned trainer to die with its worker")
    uploaded = max(c.step_number for c in client.fine_tuning.jobs.checkpoints.list(job.id).data)
    assert uploaded >= first[0].step_number

    stack.start_worker("w2")
    done = wait_job(client, job.id, timeout=240, stack=stack)
    assert done.status == "succeeded", done.error
    assert done.model_extra["attempt"] == 2
    assert done.model_extra["step"] == done.model_extra["total_steps"] == 30
    messages = [e.message for e in all_events(client, job.id)]
    assert any(m.startswith("Worker lost during attempt 1") for m in messages), messages
    resumed = [m for m in messages if m.startswith("Resuming from checkpoint at step ")]
    assert len(resumed) == 1
    resumed_at = int(resumed[0].rsplit(" ", 1)[1])
    assert resumed_at == uploaded
    steps = [e.data["step"] for e in all_events(client, job.id) if e.type == "metrics"]
    after = steps[steps.index(resumed_at + 1, 0) :] if resumed_at + 1 in steps else []
    assert steps[-(30 - resumed_at) :] == list(range(resumed_at + 1, 31)), steps  # the second attempt's steps
    assert after

    store = make_store(StorageSettings(backend="local", local_root=Path(stack.env["SAGE_STORAGE_LOCAL_ROOT"])))
    manifests = list_models(store)
    assert [m.job_id for m in manifests] == [job.id]  # exactly one manifest published
    manifest_keys = [o.key for o in store.list_objects("models/") if o.key.endswith("manifest.json")]
    assert manifest_keys == [f"models/{done.fine_tuned_model}/manifest.json"]


def test_a_job_recorded_but_never_enqueued_is_picked_up_by_the_reconciler(
    stack: Stack, client: openai.OpenAI, good_file: str
) -> None:
    """As if the gateway died between writing the job and enqueueing it: the broker never saw it."""
    import time

    from sage_ft.jobs import Job, JobStore
    from sage_ft.jobs.spec import parse_request

    request = parse_request({"model": "sage-tiny", "training_file": good_file, "hyperparameters": {"n_epochs": 1}})
    orphan = Job(
        id="ftjob-0000000000000000000000aa",
        tenant="local",
        model="sage-tiny",
        training_file=good_file,
        spec=request.model_dump(mode="json", exclude_none=True),
        enqueued_at=time.time() - 60,
    )
    JobStore.from_url(stack.redis_url).create_job(orphan)
    done = wait_job(client, orphan.id, timeout=120, stack=stack)
    assert done.status == "succeeded" and done.fine_tuned_model
    assert "re-enqueueing ftjob-0000000000000000000000aa" in (stack.gateway.tail(400) if stack.gateway else "")
