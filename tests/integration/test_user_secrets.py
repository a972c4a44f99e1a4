"""A user's W&B api_key in a job request: sealed in Redis, in the trainer's environment only, echoed as ****, gone
when the job ends. No plaintext copy anywhere: Redis (every key), its append-only file, the object store, the logs,
the events, the metrics, any command line."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis
from cryptography.fernet import Fernet
from stack import Stack, children, free_port, qa_lines, wait_for, wait_job

pytestmark = pytest.mark.slow
SECRET = "wandb-" + "7f3a9c" * 6  # what a W&B key looks like; found nowhere in plain text after the run


def all_bytes_under(root: Path) -> list[tuple[Path, bytes]]:
    return [(p, p.read_bytes()) for p in root.rglob("*") if p.is_file()]


def redis_dump(url: str) -> bytes:
    r = redis.Redis.from_url(url)
    out = b""
    for key in r.scan_iter(count=1000):
        kind = r.type(key)
        if kind == b"string":
            out += r.get(key) or b""
        elif kind == b"list":
            out += b"".join(r.lrange(key, 0, -1))
        elif kind == b"hash":
            out += b"".join(k + v for k, v in r.hgetall(key).items())
        elif kind == b"set":
            out += b"".join(r.smembers(key))
        elif kind == b"zset":
            out += b"".join(m for m, _ in r.zrange(key, 0, -1, withscores=True))
    return out


def test_a_wandb_key_is_sealed_passed_to_the_trainer_only_masked_and_deleted(
    make_stack: Any, qa_records: list[dict]
) -> None:
    stack: Stack = make_stack(persist=True, SAGE_SECRETS_KEY=Fernet.generate_key().decode(), WANDB_MODE="disabled")
    stack.start_gateway()
    metrics_port = free_port()
    worker = stack.start_worker("w1", SAGE_WORKER_METRICS_PORT=str(metrics_port))
    client = openai.OpenAI(base_url=f"{stack.url}/v1", api_key="x", max_retries=0)
    file_id = client.files.create(file=("qa.jsonl", qa_lines(qa_records[:8])), purpose="fine-tune").id
    job = client.fine_tuning.jobs.create(
        model="sage-tiny",
        training_file=file_id,
        hyperparameters={"n_epochs": 30, "batch_size": 1},
        integrations=[{"type": "wandb", "wandb": {"project": "p", "api_key": SECRET}}],  # type: ignore[typeddict-unknown-key]
    )
    assert job.integrations and job.integrations[0].wandb.model_extra["api_key"] == "****"

    seen: dict[str, str] = {}

    def trainer_env() -> bool:
        for pid, cmd in children(worker.pid):
            if "trainer_main" in cmd:
                assert SECRET not in cmd
                try:
                    env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                except OSError:
                    return False
                seen.update(e.decode().split("=", 1) for e in env if e.startswith(b"WANDB_API_KEY="))  # type: ignore[misc]
                return True
        return False

    wait_for(trainer_env, 120, "the trainer to start")
    assert seen == {"WANDB_API_KEY": SECRET}, "the trainer gets the key in its environment"
    assert SECRET.encode() not in Path(f"/proc/{worker.pid}/cmdline").read_bytes()
    done = wait_job(client, job.id, stack=stack)
    assert done.status == "succeeded", done.error
    assert done.integrations and done.integrations[0].wandb.model_extra["api_key"] == "****"

    r = redis.Redis.from_url(stack.redis_url)
    assert not r.exists(f"sage:job:{job.id}:secrets"), "the sealed copy is deleted when the job ends"
    time.sleep(1.5)  # let the append-only file catch up (appendfsync always: it already has)
    places = {"redis": redis_dump(stack.redis_url)}
    places.update({f"file {p}": b for p, b in all_bytes_under(stack.dir)})  # AOF, store, logs, work dirs
    places["events"] = b"".join(e.model_dump_json().encode() for e in client.fine_tuning.jobs.list_events(job.id))
    places["job"] = httpx.get(f"{stack.url}/v1/fine_tuning/jobs/{job.id}").content
    places["gateway metrics"] = httpx.get(f"{stack.url}/metrics").content
    places["worker metrics"] = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").content
    leaks = [where for where, data in places.items() if SECRET.encode() in data]
    assert not leaks, leaks
    assert any("appendonly" in k for k in places), "the append-only file was searched"


def test_without_a_secrets_key_a_request_with_a_secret_is_refused_by_name(make_stack: Any, qa_records: list) -> None:
    stack: Stack = make_stack()
    stack.start_gateway()
    client = openai.OpenAI(base_url=f"{stack.url}/v1", api_key="x", max_retries=0)
    file_id = client.files.create(file=("qa.jsonl", qa_lines(qa_records[:4])), purpose="fine-tune").id
    with pytest.raises(openai.BadRequestError) as err:
        client.fine_tuning.jobs.create(
            model="sage-tiny",
            training_file=file_id,
            integrations=[{"type": "wandb", "wandb": {"project": "p", "api_key": SECRET}}],
        )  # type: ignore[typeddict-unknown-key]
    assert err.value.body["param"] == "integrations.wandb.api_key"  # type: ignore[index]
    assert "SAGE_SECRETS_KEY" in err.value.body["message"]  # type: ignore[index]
    assert client.fine_tuning.jobs.list().data == []  # nothing was recorded
    stack.stop()
