"""Slow and flaky dependencies, on real processes: the S3 server frozen with SIGSTOP, a worker frozen past its lease,
Redis restarted mid-training. One accepted job gives exactly one complete model, and nothing half-written is ever
visible."""

from __future__ import annotations

import hashlib
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from stack import LEARN, Proc, Stack, all_events, qa_lines, s3_env, signal_tree, start_moto, wait_for, wait_job

from sage_ft.settings import StorageSettings
from sage_ft.storage import ObjectStore, make_store
from sage_ft.storage.manifest import Manifest, read_manifest

pytestmark = pytest.mark.slow
FAST_S3 = {"SAGE_STORAGE_TIMEOUT_SECONDS": "2", "SAGE_STORAGE_RETRIES": "20"}  # a frozen call is retried, not failed


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Any:
    proc, endpoint = start_moto(tmp_path_factory.mktemp("moto"))
    yield proc, endpoint
    proc.proc.send_signal(signal.SIGCONT)
    proc.stop()


@pytest.fixture(scope="module")
def wide_model(sage_home: Path) -> str:
    """Wider than sage-tiny, so that steps take long enough to act mid-run."""
    from sage_ft.training.tiny_model import build_tiny_model

    build_tiny_model("sage-wide", hidden_size=384, num_layers=4, num_heads=6)
    return "sage-wide"


def s3(endpoint: dict[str, str], bucket: str) -> ObjectStore:
    env = s3_env(endpoint, bucket)
    return make_store(StorageSettings(backend="s3", s3_endpoint=env["SAGE_STORAGE_S3_ENDPOINT"], s3_bucket=bucket,
                                      s3_access_key=endpoint["access_key"], s3_secret_key=endpoint["secret_key"]))  # type: ignore[arg-type]  # fmt: skip


def assert_one_complete_model(store: ObjectStore, name: str) -> Manifest:
    """Exactly one manifest; every file it lists is there with its sha256; nothing else under the model."""
    manifests = [o.key for o in store.list_objects("models/") if o.key.endswith("/manifest.json")]
    assert manifests == [f"models/{name}/manifest.json"], manifests
    manifest = read_manifest(store, name)
    assert manifest is not None
    for rel, entry in manifest.files.items():
        assert hashlib.sha256(store.get_bytes(manifest.key(rel))).hexdigest() == entry.sha256, rel
    listed = {manifest.key(rel) for rel in manifest.files} | {f"models/{name}/manifest.json"}
    assert {o.key for o in store.list_objects(f"models/{name}/")} == listed
    return manifest


def started_job(
    stack: Stack,
    records: list[dict],
    model: str,
    *,
    epochs: int,
    batch: int,
    save_steps: int,
    at_step: int,
    suffix: str | None = None,
    worker: str = "w1",
) -> tuple[openai.OpenAI, Any, Proc]:
    """Gateway and one worker up, a job on ``records`` submitted through the openai client, and (``at_step`` > 0)
    training under way: the start every fault here is injected into."""
    stack.start_gateway()
    proc = stack.start_worker(worker)
    client = openai.OpenAI(base_url=f"{stack.url}/v1", api_key="x", max_retries=0)
    file_id = client.files.create(file=("qa.jsonl", qa_lines(records)), purpose="fine-tune").id
    job = client.fine_tuning.jobs.create(model=model, training_file=file_id, **({"suffix": suffix} if suffix else {}),
                                         hyperparameters={"n_epochs": epochs, "batch_size": batch},
                                         extra_body={**LEARN, "save_steps": save_steps})  # fmt: skip
    if at_step:
        wait_for(lambda: client.fine_tuning.jobs.retrieve(job.id).model_extra["step"] >= at_step, 180,
                 f"training to reach step {at_step}")  # fmt: skip
    return client, job, proc


class VisibilityWatch(threading.Thread):
    """Lists models, then reads the job, over and over: a model listed while its job had not succeeded (read after
    the listing, and a job only moves forward) is a violation."""

    def __init__(self, url: str, job_id: str) -> None:
        super().__init__(daemon=True)
        self.url, self.job_id = url, job_id
        self.violations: list[str] = []
        self.done = threading.Event()
        self.polls = 0

    def run(self) -> None:
        while not self.done.is_set():
            try:
                ids = [m["id"] for m in httpx.get(f"{self.url}/v1/models", timeout=30).json()["data"]]
                job = httpx.get(f"{self.url}/v1/fine_tuning/jobs/{self.job_id}", timeout=30).json()
            except (httpx.HTTPError, KeyError, ValueError):
                continue
            self.polls += 1
            ours = [i for i in ids if i.endswith(":" + self.job_id.split("-", 1)[1])]
            if ours and job["status"] != "succeeded":
                self.violations.append(f"{ours} listed while the job was {job['status']}")
            time.sleep(0.1)


def test_a_store_frozen_past_the_lease_keeps_the_attempt_and_publishes_one_complete_model(
    make_stack: Any, moto: Any, qa_records: list[dict], wide_model: str
) -> None:
    """S3 frozen (SIGSTOP) from the first checkpoint upload to past the end of training, 3 leases long. The lease is
    renewed on its own thread meanwhile, so attempt 1 goes on and publishes once the store returns."""
    server, endpoint = moto
    stack: Stack = make_stack(s3_env(endpoint, "frozen"), SAGE_LEASE_SECONDS="4", **FAST_S3)
    client, job, _ = started_job(
        stack, qa_records[:8], wide_model, epochs=4, batch=4, save_steps=2, at_step=1, suffix="frozen"
    )
    watch = VisibilityWatch(stack.url, job.id)
    server.proc.send_signal(signal.SIGSTOP)
    try:
        frozen_at = time.monotonic()
        while time.monotonic() - frozen_at < 14:  # 3.5 leases with the store frozen
            current = client.fine_tuning.jobs.retrieve(job.id)
            assert current.status == "running" and current.model_extra["attempt"] == 1, current
            time.sleep(0.5)
    finally:
        server.proc.send_signal(signal.SIGCONT)
    watch.start()
    done = wait_job(client, job.id, timeout=240, stack=stack)
    watch.done.set()
    watch.join(timeout=40)
    assert done.status == "succeeded", done.error
    assert done.model_extra["attempt"] == 1
    messages = [e.message for e in all_events(client, job.id)]
    assert not any(m.startswith("Worker lost") for m in messages), messages
    manifest = assert_one_complete_model(s3(endpoint, "frozen"), done.fine_tuned_model)
    assert manifest.attempt == 1 and manifest.location("adapter") == "attempts/1/adapter/"
    assert watch.polls > 0 and not watch.violations, watch.violations
    stack.stop()


def test_a_worker_frozen_past_its_lease_writes_nothing_visible(
    make_stack: Any, moto: Any, qa_records: list[dict], wide_model: str
) -> None:
    """Worker A (with its trainer) frozen mid-run past its lease; the job moves to worker B as attempt 2. A then wakes
    up and finishes its run: its lease is gone, so it commits nothing and removes what it uploaded."""
    _, endpoint = moto
    stack: Stack = make_stack(s3_env(endpoint, "fenced"), SAGE_LEASE_SECONDS="4", SAGE_VISIBILITY_TIMEOUT="600")
    client, job, a = started_job(
        stack, qa_records[:8], wide_model, epochs=8, batch=4, save_steps=4, at_step=0, suffix="fenced", worker="wa"
    )
    wait_for(lambda: client.fine_tuning.jobs.checkpoints.list(job.id).data, 180, "attempt 1's first checkpoint")
    signal_tree(a.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: client.fine_tuning.jobs.retrieve(job.id).status == "queued", 30, "the reaper to re-queue")
        stack.start_worker("wb")
        wait_for(lambda: client.fine_tuning.jobs.retrieve(job.id).model_extra["attempt"] == 2, 60, "attempt 2")
    finally:
        signal_tree(a.pid, signal.SIGCONT)
    watch = VisibilityWatch(stack.url, job.id)
    watch.start()
    done = wait_job(client, job.id, timeout=240, stack=stack)
    wait_for(lambda: "lease lost" in a.log_path.read_text(errors="replace") or "lost its lease" in
             a.log_path.read_text(errors="replace"), 60, "worker A to notice its lease is gone")  # fmt: skip
    watch.done.set()
    watch.join(timeout=40)
    assert done.status == "succeeded" and done.model_extra["attempt"] == 2, done
    store = s3(endpoint, "fenced")
    wait_for(lambda: not list(store.list_objects(f"models/{done.fine_tuned_model}/attempts/1/")), 30,
             "attempt 1's uploads to be gone")  # fmt: skip
    manifest = assert_one_complete_model(store, done.fine_tuned_model)
    assert manifest.attempt == 2
    assert not watch.violations, watch.violations
    stack.stop()


def test_redis_restarted_mid_training_keeps_the_attempt(
    make_stack: Any, qa_records: list[dict], wide_model: str
) -> None:
    """Redis down for 8 s (restarted, its append-only file intact) while the trainer runs: the trainer goes on,
    progress is buffered and sent later, and the attempt number does not change."""
    stack: Stack = make_stack(persist=True, SAGE_LEASE_SECONDS="30", SAGE_VISIBILITY_TIMEOUT="600")
    client, job, _ = started_job(
        stack, qa_records[:8], wide_model, epochs=8, batch=4, save_steps=4, at_step=2, suffix="blip"
    )
    step_before = client.fine_tuning.jobs.retrieve(job.id).model_extra["step"]
    stack.restart_redis(down_s=8)
    done = wait_job(client, job.id, timeout=240, stack=stack)
    assert done.status == "succeeded", done.error
    assert done.model_extra["attempt"] == 1
    events = all_events(client, job.id)
    assert not any(e.message.startswith(("Worker lost", "Attempt 2")) for e in events)
    steps = [e.data["step"] for e in events if e.type == "metrics"]
    assert steps == sorted(set(steps)) and steps[-1] == done.model_extra["total_steps"] > step_before
    assert [m for m in steps if m > step_before], "steps trained during and after the outage were reported"
    stack.stop()


def test_a_cancel_stops_the_trainer_within_one_step(make_stack: Any, qa_records: list[dict], wide_model: str) -> None:
    """The cancel reaches the trainer by pub/sub, not by polling: with the worker's poll at 5 s, the trainer still
    stops at the end of the step that was running when the cancel was accepted (it measures this itself)."""
    stack: Stack = make_stack(SAGE_WORKER_POLL_SECONDS="5")
    client, job, _ = started_job(stack, qa_records, wide_model, epochs=50, batch=1, save_steps=1000, at_step=2)
    client.fine_tuning.jobs.cancel(job.id)
    done = wait_job(client, job.id, timeout=120, stack=stack)
    assert done.status == "cancelled"
    final = [e for e in all_events(client, job.id) if e.message.startswith("Job cancelled at step")]
    assert len(final) == 1
    latency = final[0].data["stop_latency_steps"]
    assert latency is not None and latency <= 1, final[0].data
    assert final[0].data["step"] < done.model_extra["total_steps"]
    assert client.fine_tuning.jobs.checkpoints.list(job.id).data == []  # the listing agrees with the store
    stack.stop()


def test_failed_uploads_never_discard_a_finished_training(
    make_stack: Any, moto: Any, qa_records: list[dict], wide_model: str
) -> None:
    """The store stays frozen longer than a storage call's whole retry budget (1 s timeout, 2 attempts), across
    checkpoint uploads and the end of training. Checkpoint uploads fail and training goes on; the publish is
    retried until the store is back. Attempt 1 publishes: the finished training is not thrown away."""
    server, endpoint = moto
    stack: Stack = make_stack(s3_env(endpoint, "flaky"), SAGE_STORAGE_TIMEOUT_SECONDS="1", SAGE_STORAGE_RETRIES="2")
    client, job, _ = started_job(
        stack, qa_records[:8], wide_model, epochs=4, batch=4, save_steps=2, at_step=1, suffix="flaky"
    )
    server.proc.send_signal(signal.SIGSTOP)
    try:
        time.sleep(12)
    finally:
        server.proc.send_signal(signal.SIGCONT)
    done = wait_job(client, job.id, timeout=240, stack=stack)
    assert done.status == "succeeded", done.error
    assert done.model_extra["attempt"] == 1
    messages = [e.message for e in all_events(client, job.id)]
    assert any("could not be uploaded" in m for m in messages), messages
    assert not any(m.startswith(("Worker lost", "Attempt 2")) or "re-queued" in m for m in messages), messages
    log = stack.workers[0].log_path.read_text(errors="replace")
    assert "publish failed" in log or "could not be uploaded" in " ".join(messages)
    assert_one_complete_model(s3(endpoint, "flaky"), done.fine_tuned_model)
    stack.stop()
