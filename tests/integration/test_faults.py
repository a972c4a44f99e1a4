"""Slow and flaky dependencies, on real processes: the S3 server frozen with SIGSTOP, a worker frozen past its lease,
Redis restarted mid-training. One accepted job gives exactly one complete model, and nothing half-written is ever
visible."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from stack import (
    LEARN,
    Proc,
    Stack,
    all_events,
    children,
    free_port,
    object_store,
    qa_lines,
    s3_env,
    signal_tree,
    start_moto,
    wait_for,
    wait_job,
    worker_ready,
)

from sage_ft.settings import StorageSettings
from sage_ft.storage import ObjectStore, make_store
from sage_ft.storage.checkpoints import committed
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
    return make_store(
        StorageSettings(
            backend="s3",
            s3_endpoint=env["SAGE_STORAGE_S3_ENDPOINT"],
            s3_bucket=bucket,
            s3_access_key=endpoint["access_key"],
            s3_secret_key=endpoint["secret_key"],
        )
    )  # type: ignore[arg-type]


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
    job = client.fine_tuning.jobs.create(
        model=model,
        training_file=file_id,
        **({"suffix": suffix} if suffix else {}),
        hyperparameters={"n_epochs": epochs, "batch_size": batch},
        extra_body={**LEARN, "save_steps": save_steps},
    )
    if at_step:
        wait_for(
            lambda: client.fine_tuning.jobs.retrieve(job.id).model_extra["step"] >= at_step,
            180,
            f"training to reach step {at_step}",
        )
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
    wait_for(
        lambda: (
            "lease lost" in a.log_path.read_text(errors="replace")
            or "lost its lease" in a.log_path.read_text(errors="replace")
        ),
        60,
        "worker A to notice its lease is gone",
    )
    watch.done.set()
    watch.join(timeout=40)
    assert done.status == "succeeded" and done.model_extra["attempt"] == 2, done
    store = s3(endpoint, "fenced")
    wait_for(
        lambda: not list(store.list_objects(f"models/{done.fine_tuned_model}/attempts/1/")),
        30,
        "attempt 1's uploads to be gone",
    )
    manifest = assert_one_complete_model(store, done.fine_tuned_model)
    assert manifest.attempt == 2
    assert not watch.violations, watch.violations
    stack.stop()


def _checkpoint_events(workdir: Path) -> list[int]:
    """Steps of the checkpoints a trainer handed to its worker (its own events file)."""
    import json

    path = workdir / "events.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [int(e["step"]) for e in map(json.loads, lines) if e.get("kind") == "checkpoint"]


def _resumed(client: openai.OpenAI, job_id: str) -> list[Any]:
    return [e for e in all_events(client, job_id) if e.message.startswith("Resuming from checkpoint")]


def test_an_attempt_frozen_past_its_lease_adds_no_checkpoint_the_next_attempt_resumes_from(
    make_stack: Any, moto: Any, qa_records: list[dict], wide_model: str
) -> None:
    """Worker A is frozen (SIGSTOP) in the middle of a checkpoint upload, and stays frozen past its lease; attempt 2
    on B resumes from A's earlier checkpoint. A wakes up and finishes its upload. Whatever it uploaded, the next
    attempt (3, after B is killed) resumes only from a checkpoint committed while its writer held the job."""
    server, endpoint = moto
    env = {**s3_env(endpoint, "ckptfence"), **FAST_S3}
    stack: Stack = make_stack(env, SAGE_LEASE_SECONDS="4", SAGE_VISIBILITY_TIMEOUT="600")
    client, job, a = started_job(
        stack, qa_records[:8], wide_model, epochs=8, batch=4, save_steps=4, at_step=0, suffix="ckfence", worker="wa"
    )
    wait_for(lambda: client.fine_tuning.jobs.checkpoints.list(job.id).data, 180, "attempt 1's first checkpoint")
    first = {c.step_number for c in client.fine_tuning.jobs.checkpoints.list(job.id).data}
    work_a = stack.dir / "work-wa" / job.id
    server.proc.send_signal(signal.SIGSTOP)  # the next checkpoint upload hangs in the store
    try:
        wait_for(lambda: [s for s in _checkpoint_events(work_a) if s not in first], 120, "attempt 1's next checkpoint")
        time.sleep(2.0)  # the worker has read the event and is inside the upload
        signal_tree(a.pid, signal.SIGSTOP)
    finally:
        server.proc.send_signal(signal.SIGCONT)
    try:
        wait_for(lambda: client.fine_tuning.jobs.retrieve(job.id).status == "queued", 30, "the reaper to re-queue")
        b = stack.start_worker("wb")
        wait_for(lambda: _resumed(client, job.id), 60, "attempt 2 to resume")
    finally:
        signal_tree(a.pid, signal.SIGCONT)
    wait_for(lambda: "lease lost" in a.log_path.read_text(errors="replace"), 60, "worker A to leave its attempt")
    signal_tree(b.pid, signal.SIGKILL)
    b.proc.wait(timeout=30)
    allowed = first | set(_checkpoint_events(stack.dir / "work-wb" / job.id))  # attempt 2 may have committed some
    stack.start_worker("wc")
    done = wait_job(client, job.id, timeout=240, stack=stack)
    assert done.status == "succeeded" and done.model_extra["attempt"] == 3, done
    resumed = _resumed(client, job.id)
    assert len(resumed) == 2, [e.message for e in resumed]
    step = int(resumed[-1].message.rsplit(" ", 1)[1])
    assert step in allowed, f"attempt 3 resumed from step {step}, which no lease holder committed ({allowed})"
    store = s3(endpoint, "ckptfence")
    stale = {c.step for c in committed(store, job.id).values() if c.attempt == 1}
    assert stale <= first, f"attempt 1 committed {stale - first} after it lost the job"
    assert_one_complete_model(store, done.fine_tuned_model)
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


def _trainer_pid(worker: Proc) -> int | None:
    pids = [pid for pid, cmd in children(worker.pid) if "trainer_main" in cmd and "--spare" not in cmd]
    return pids[-1] if pids else None


def test_a_trainer_killed_by_the_kernel_is_retried_then_fails_with_the_reason(
    make_stack: Any, qa_records: list[dict], wide_model: str
) -> None:
    """SIGKILL to the trainer alone, as the out-of-memory killer sends it, in each attempt: every attempt ends
    saying so with the peak memory the trainer had reached, the job is re-queued up to its attempts and then fails
    with that reason (no third attempt), nothing is published, and the same worker then trains the next job."""
    stack: Stack = make_stack(SAGE_MAX_ATTEMPTS="2")
    client, job, worker = started_job(stack, qa_records[:8], wide_model, epochs=50, batch=4, save_steps=1000, at_step=0)
    for attempt in (1, 2):

        def training(attempt: int = attempt) -> bool:
            messages = [e.message for e in all_events(client, job.id)]
            began = [i for i, m in enumerate(messages) if m.startswith(f"Attempt {attempt} started")]
            return bool(began) and any(m.startswith("Step ") for m in messages[began[0] :])

        wait_for(training, 180, f"attempt {attempt} to train")
        pid = wait_for(lambda: _trainer_pid(worker), 30, "the trainer process")
        os.kill(pid, signal.SIGKILL)
    done = wait_job(client, job.id, timeout=120, stack=stack)
    assert done.status == "failed" and done.error.code == "trainer_killed", done.error
    assert done.error.message.startswith("the trainer was killed (signal 9; out of memory?); peak RSS ")
    peak_mib = int(done.error.message.split("peak RSS ", 1)[1].split(" MiB")[0])
    assert peak_mib > 100, done.error.message  # a trainer with torch and a model loaded
    events = all_events(client, job.id)
    ended = [e for e in events if e.message.startswith("Attempt 1 of 2 ended: the trainer was killed (signal 9")]
    assert len(ended) == 1 and ended[0].data["peak_rss_bytes"] > 100 * 2**20, [e.message for e in events]
    assert not any(e.message.startswith("Attempt 3") for e in events)
    assert done.model_extra["attempt"] == 2
    assert "the trainer was killed (signal 9; out of memory?)" in worker.log_path.read_text(errors="replace")
    store = object_store(stack)
    assert not [o.key for o in store.list_objects("models/")]
    # the worker is healthy: it trains the next job
    file_id = client.files.create(file=("qa.jsonl", qa_lines(qa_records[:4])), purpose="fine-tune").id
    after = client.fine_tuning.jobs.create(model="sage-tiny", training_file=file_id, hyperparameters={"n_epochs": 1})
    assert wait_job(client, after.id, timeout=180, stack=stack).status == "succeeded"
    stack.stop()


def _fill_redis(url: str) -> int:
    """Redis at its memory limit with noeviction: filler written until it refuses, then the limit held just under
    what it holds, so that every write is refused (not only those that cross the line)."""
    import redis

    r = redis.Redis.from_url(url)
    r.config_set("maxmemory-policy", "noeviction")
    r.config_set("maxmemory", str(int(r.info("memory")["used_memory"]) + 2 * 2**20))
    written = 0
    try:
        while written < 10_000:
            r.set(f"filler:{written}", b"x" * 16384)
            written += 1
    except redis.exceptions.OutOfMemoryError:
        r.config_set("maxmemory", str(int(r.info("memory")["used_memory"]) - 2**20))
        return written
    raise AssertionError("Redis never refused a write")


def _free_redis(url: str, written: int) -> None:
    import redis

    r = redis.Redis.from_url(url)
    for start in range(0, written, 500):
        r.delete(*[f"filler:{i}" for i in range(start, min(written, start + 500))])
    r.config_set("maxmemory", "0")


def test_redis_at_its_memory_limit_answers_503_with_retry_after_and_loses_nothing(
    make_stack: Any, qa_records: list[dict], wide_model: str
) -> None:
    """Redis refuses writes (maxmemory, noeviction) while a job trains: the gateway answers 503 with Retry-After to
    writes (never a 500) and still serves reads; the running job keeps its attempt, its progress is sent once
    memory is freed, and it succeeds; the refused upload and job left nothing behind; new jobs run afterwards."""
    stack: Stack = make_stack(SAGE_LEASE_SECONDS="30", SAGE_VISIBILITY_TIMEOUT="600")
    client, job, _ = started_job(stack, qa_records[:8], wide_model, epochs=8, batch=4, save_steps=4, at_step=1)
    file_id = client.files.create(file=("more.jsonl", qa_lines(qa_records[:4])), purpose="fine-tune").id
    jobs_before = {j.id for j in client.fine_tuning.jobs.list()}
    store = object_store(stack)
    files_before = {o.key for o in store.list_objects("") if o.key.startswith(("files/", "tenants/"))}
    codes: list[int] = []
    written = _fill_redis(stack.redis_url)
    try:
        for _ in range(3):
            upload = httpx.post(
                f"{stack.url}/v1/files",
                files={"file": ("q.jsonl", qa_lines(qa_records[:2]))},
                data={"purpose": "fine-tune"},
                timeout=60,
            )
            create = httpx.post(
                f"{stack.url}/v1/fine_tuning/jobs", json={"model": "sage-tiny", "training_file": file_id}, timeout=60
            )
            read = httpx.get(f"{stack.url}/v1/fine_tuning/jobs/{job.id}", timeout=60)
            codes += [upload.status_code, create.status_code, read.status_code]
            for resp in (upload, create):
                assert resp.status_code == 503 and int(resp.headers["retry-after"]) > 0, resp.text
                assert resp.json()["error"]["code"] == "jobstore_full", resp.text
            assert read.status_code == 200 and read.json()["status"] == "running"
            time.sleep(2)
    finally:
        _free_redis(stack.redis_url, written)
    assert 500 not in codes
    done = wait_job(client, job.id, timeout=240, stack=stack)
    assert done.status == "succeeded" and done.model_extra["attempt"] == 1, done
    steps = [e.data["step"] for e in all_events(client, job.id) if e.type == "metrics"]
    assert steps == sorted(set(steps)) and steps[-1] == done.model_extra["total_steps"]
    assert {j.id for j in client.fine_tuning.jobs.list()} == jobs_before  # the refused creates made no job
    files_after = {o.key for o in store.list_objects("") if o.key.startswith(("files/", "tenants/"))}
    assert files_after == files_before, files_after - files_before  # nor did the refused uploads leave objects
    after = client.fine_tuning.jobs.create(model="sage-tiny", training_file=file_id, hyperparameters={"n_epochs": 1})
    assert wait_job(client, after.id, timeout=180, stack=stack).status == "succeeded"
    assert "unhandled error" not in stack.gateway.log_path.read_text(errors="replace")
    stack.stop()


def _serving_stub(stack: Stack, home: Path) -> Proc:
    """The real serving service with a stub engine (tests/serving_stub.py): deployments without a model server."""
    import json
    import sys

    from serving_stub import BASE

    (home / "models" / "stub-base").mkdir(parents=True)
    (home / "models" / "stub-base" / "config.json").write_text(json.dumps(BASE))
    env = {**stack.env, "SAGE_HOME": str(home), "SAGE_SERVING_ENGINE": "vllm", "SAGE_SERVING_LOG_LEVEL": "warning"}
    serving = Proc(
        "serving-stub", [sys.executable, str(Path(__file__).parents[1] / "serving_stub.py")], env, stack.logs
    )
    wait_for(
        lambda: serving.check_alive() and httpx.get(f"{stack.serving_url}/healthz", timeout=2).status_code == 200,
        60,
        "serving /healthz",
    )
    return serving


def test_revoked_storage_credentials_fail_the_job_as_access_denied_and_deployments_keep_serving(
    make_stack: Any, moto: Any, qa_records: list[dict], wide_model: str, tmp_path: Path
) -> None:
    """The S3 server starts refusing the stack's credentials (403 InvalidAccessKeyId) while a job trains and a model
    is deployed: the job fails at once as storage_access_denied (one attempt, no retry loop, nothing published), the
    worker stays ready, and the deployed model still answers, by its name and by its alias."""
    from serving_stub import adapter_dir

    from sage_ft.storage import publish_model

    _, endpoint = moto
    auth = f"http://{endpoint['endpoint']}/moto-api/reset-auth"
    stack: Stack = make_stack(s3_env(endpoint, "revoked"), SAGE_WORKER_METRICS_PORT=str(free_port()))
    stack.start_gateway()
    serving = _serving_stub(stack, tmp_path / "serving-home")
    store = s3(endpoint, "revoked")
    publish_model(
        store, "helper-v1", {"adapter": adapter_dir(tmp_path / "v1", 8)}, base_model="stub-base", alias="helper"
    )
    deployed = httpx.post(f"{stack.url}/v1/deployments", json={"model": "helper", "wait": True}, timeout=120)
    assert deployed.status_code == 200 and deployed.json()["state"] == "ready", deployed.text
    client, job, worker = started_job(
        stack, qa_records[:8], wide_model, epochs=20, batch=4, save_steps=2, at_step=1, suffix="revoked"
    )
    httpx.post(auth, content=b"0")  # from now on every request is checked: the stack's key is unknown
    try:
        done = wait_job(client, job.id, timeout=120, stack=stack)
        assert done.status == "failed" and done.error.code == "storage_access_denied", done.error
        assert "access denied by the object store (S3 InvalidAccessKeyId" in done.error.message
        assert done.model_extra["attempt"] == 1
        events = [e.message for e in all_events(client, job.id)]
        assert any(m.startswith("Job failed: access denied") for m in events), events
        assert not any("re-queued" in m for m in events), events
        assert "access denied by the object store" in worker.log_path.read_text(errors="replace")
        assert worker_ready(int(stack.env["SAGE_WORKER_METRICS_PORT"])) and worker.alive()
        for model in ("helper", "helper-v1"):
            answer = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
            assert answer.model == model and "helper-v1" in (answer.choices[0].message.content or "")
    finally:
        httpx.post(auth, content=b"inf")
        serving.stop()
    assert [o.key for o in store.list_objects("models/") if o.key.endswith("manifest.json")] == [
        "models/helper-v1/manifest.json"
    ]
    stack.stop()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 MiB tmpfs of the test's own, for a worker's work directory."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode(errors='replace').strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _leave_free(mount: Path, free: int) -> Path:
    """Fill ``mount`` until only ``free`` bytes are left."""
    filler = mount / "filler"
    filler.unlink(missing_ok=True)
    with filler.open("wb") as fh:
        os.posix_fallocate(fh.fileno(), 0, shutil.disk_usage(mount).free - free)
    return filler


def test_a_full_disk_fails_the_attempt_saying_so_and_the_worker_trains_once_it_is_freed(
    make_stack: Any, qa_records: list[dict], wide_model: str, small_disk: Path
) -> None:
    """The worker's work directory is a small filesystem with 256 KiB left: the first checkpoint save fails (job A),
    and with no checkpoints the adapter save before publish fails (job B). Each attempt ends with "no space left on
    device in <its directory>", is re-queued once, then the job fails with that reason, publishing nothing. Once
    the disk is freed, the same worker trains the next job."""
    stack: Stack = make_stack(SAGE_MAX_ATTEMPTS="2")
    stack.start_gateway()
    worker = stack.start_worker("w1", SAGE_WORKER_WORK_DIR=str(small_disk))
    client = openai.OpenAI(base_url=f"{stack.url}/v1", api_key="x", max_retries=0)
    file_id = client.files.create(file=("qa.jsonl", qa_lines(qa_records[:8])), purpose="fine-tune").id
    failed = []
    for save_steps in (2, 1000):  # a checkpoint save, then the adapter save at the end
        _leave_free(small_disk, 256 * 1024)
        job = client.fine_tuning.jobs.create(
            model=wide_model,
            training_file=file_id,
            hyperparameters={"n_epochs": 4, "batch_size": 4},
            extra_body={**LEARN, "save_steps": save_steps},
        )
        done = wait_job(client, job.id, timeout=240, stack=stack)
        assert done.status == "failed" and done.error.code == "disk_full", done.error
        assert done.error.message.startswith(f"no space left on device in {small_disk / job.id} ("), done.error
        assert done.model_extra["attempt"] == 2
        events = [e.message for e in all_events(client, job.id)]
        assert any(m.startswith("Attempt 1 of 2 ended: no space left on device in") for m in events), events
        failed.append(done)
    assert "no space left on device in" in worker.log_path.read_text(errors="replace")
    store = object_store(stack)
    assert not [o.key for o in store.list_objects("models/")]  # nothing published, not even in part
    assert failed[0].model_extra["step"] < failed[0].model_extra["total_steps"]  # A stopped at its checkpoint
    assert failed[1].model_extra["step"] == failed[1].model_extra["total_steps"]  # B trained to the end first
    (small_disk / "filler").unlink()
    after = client.fine_tuning.jobs.create(model="sage-tiny", training_file=file_id, hyperparameters={"n_epochs": 1})
    assert wait_job(client, after.id, timeout=180, stack=stack).status == "succeeded"
    assert worker.alive()
    stack.stop()
