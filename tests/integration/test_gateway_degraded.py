"""The gateway degrades instead of crashing or hanging: it starts while the store is down and recovers on its own,
``/readyz`` answers within seconds whatever the store does, bad path parameters are 4xx, and ``Last-Event-ID``
takes the event ids the API hands out."""

from __future__ import annotations

import json
import signal
import time
from typing import Any

import httpx
import openai
import pytest
from stack import BIN, Proc, Stack, free_port, s3_env, start_moto, wait_for, wait_job

pytestmark = pytest.mark.slow


def readyz(url: str) -> tuple[int, dict[str, Any], float]:
    t0 = time.monotonic()
    resp = httpx.get(f"{url}/readyz", timeout=30)
    return resp.status_code, resp.json(), time.monotonic() - t0


def test_starts_without_its_store_then_recovers_and_a_frozen_store_never_hangs_readyz(
    make_stack: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    port = free_port()
    dead = {"endpoint": f"127.0.0.1:{port}", "access_key": "testing", "secret_key": "testing"}
    stack: Stack = make_stack(s3_env(dead, "later"), SAGE_GATEWAY_PROBE_CACHE_SECONDS="0.5")
    stack.start_gateway()  # waits for /healthz: the process is up although S3 is not
    code, body, _ = readyz(stack.url)
    assert code == 503 and body["checks"]["object_store"].startswith("unreachable")
    assert body["checks"]["redis"] == "ok"

    moto, _ = start_moto(tmp_path_factory.mktemp("moto-late"), port=port)  # the store comes up: no restart needed
    try:
        wait_for(lambda: readyz(stack.url)[0] == 200, 30, "/readyz to recover on its own")
        client = openai.OpenAI(base_url=f"{stack.url}/v1", api_key="x", max_retries=0)
        assert client.files.create(file=("a.jsonl", b'{"question": "q", "answer": "a"}\n'), purpose="fine-tune").id

        moto.proc.send_signal(signal.SIGSTOP)
        try:
            time.sleep(1)  # past the cached answer
            code, body, took = readyz(stack.url)
            assert code == 503 and "no answer within 2s" in body["checks"]["object_store"], body
            assert took < 4, f"/readyz took {took:.1f}s with the store frozen"
            code, _, took = readyz(stack.url)  # the hung probe is not stacked: the next answer is as quick
            assert code == 503 and took < 4
        finally:
            moto.proc.send_signal(signal.SIGCONT)
        wait_for(lambda: readyz(stack.url)[0] == 200, 60, "/readyz to recover after the freeze")
    finally:
        moto.stop()
    stack.stop()


@pytest.mark.parametrize(
    "path",
    [
        "/v1/deployments/a%01b",
        "/v1/deployments/abc%0A",
        "/v1/models/abc%0A",
        "/v1/models/x%7Fy/merge",
        "/v1/fine_tuning/jobs/ftjob-1%0D%0A",
        "/v1/files/file-%00",
        "/v1/fine_tuning/jobs/ftjob-x%0A/events/stream",
    ],
)
@pytest.mark.parametrize("method", ["GET", "DELETE", "POST"])
def test_control_characters_in_a_path_are_a_400_naming_it(stack: Stack, path: str, method: str) -> None:
    resp = httpx.request(method, stack.url + path, timeout=30)
    assert resp.status_code == 400, (method, path, resp.status_code, resp.text)
    assert resp.json()["error"]["param"] == "path"


@pytest.mark.parametrize(
    "path", ["/v1/fine_tuning/jobs/..%2Fetc", "/v1/files/" + "x" * 200, "/v1/fine_tuning/jobs/ftjob%20x/cancel"]
)
def test_malformed_ids_are_a_4xx_naming_the_parameter(stack: Stack, path: str) -> None:
    resp = httpx.request("POST" if path.endswith("cancel") else "GET", stack.url + path, timeout=30)
    assert 400 <= resp.status_code < 500, (path, resp.status_code, resp.text)
    assert resp.status_code != 404 or "not found" in resp.text.lower()


def stream_ids(url: str, job_id: str, last: str | None) -> tuple[int, list[int]]:
    headers = {"Last-Event-ID": last} if last is not None else {}
    seqs: list[int] = []
    with httpx.stream("GET", f"{url}/v1/fine_tuning/jobs/{job_id}/events/stream", headers=headers, timeout=60) as r:
        if r.status_code != 200:
            r.read()
            return r.status_code, []
        frame: dict[str, str] = {}
        for line in r.iter_lines():
            if line:
                name, _, value = line.partition(":")
                frame[name] = value.strip()
                continue
            if frame.get("event") == "fine_tuning.job.event":  # a frame ends at a blank line; its SSE id is the seq
                assert json.loads(frame["data"])["id"].endswith(f"-{frame['id']}")
                seqs.append(int(frame["id"]))
            frame = {}
    return 200, seqs


def test_last_event_id_takes_the_api_event_ids_and_refuses_garbage(stack: Stack, qa_records: list[dict]) -> None:
    from stack import qa_lines

    client = openai.OpenAI(base_url=f"{stack.url}/v1", api_key="x", max_retries=0)
    file_id = client.files.create(file=("qa.jsonl", qa_lines(qa_records[:4])), purpose="fine-tune").id
    job = client.fine_tuning.jobs.create(model="sage-tiny", training_file=file_id, hyperparameters={"n_epochs": 1})
    wait_job(client, job.id, stack=stack)
    _, every = stream_ids(stack.url, job.id, None)
    assert every == list(range(1, len(every) + 1)) and len(every) > 3
    third = client.fine_tuning.jobs.list_events(job.id, limit=100).data[-3]  # the API's own id of event 3
    assert third.id.endswith("-3")
    assert stream_ids(stack.url, job.id, third.id) == (200, every[3:])  # the JSON id resumes after it
    assert stream_ids(stack.url, job.id, "3") == (200, every[3:])  # and so does the SSE frame id
    for bad in ["abc", "-1", "3.0"]:
        code, _ = stream_ids(stack.url, job.id, bad)
        assert code == 400, bad
    assert stream_ids(stack.url, job.id, "ftevent-0000-2")[0] == 404  # well formed, another job's (as `after`)


def test_reads_are_rate_limited_per_key_with_retry_after(make_stack: Any, stack: Stack) -> None:
    limited: Stack = make_stack(SAGE_GATEWAY_READ_RATE_LIMIT="5/second")
    limited.start_gateway()
    a = [
        httpx.get(f"{limited.url}/v1/fine_tuning/jobs", headers={"Authorization": "Bearer key-a"}, timeout=30)
        for _ in range(12)
    ]
    codes = [r.status_code for r in a]
    assert codes.count(200) == 5 and codes.count(429) == 7, codes
    refused = next(r for r in a if r.status_code == 429)
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.json()["error"]["type"] == "rate_limit_error"
    other = httpx.get(f"{limited.url}/v1/fine_tuning/jobs", headers={"Authorization": "Bearer key-b"}, timeout=30)
    assert other.status_code == 200, "each key has its own budget"
    assert all(httpx.get(f"{limited.url}/readyz", timeout=30).status_code != 429 for _ in range(10))
    # the unchanged openai client waits out Retry-After and gets its answer
    client = openai.OpenAI(base_url=f"{limited.url}/v1", api_key="key-a", max_retries=3)
    assert [client.fine_tuning.jobs.list().data for _ in range(8)] == [[]] * 8
    limited.stop()
    # off by default (the embedded stack): a burst of reads is never refused
    assert {httpx.get(f"{stack.url}/v1/fine_tuning/jobs", timeout=30).status_code for _ in range(40)} == {200}


def test_the_read_limit_holds_across_gateway_replicas(make_stack: Any) -> None:
    """Two gateways on one Redis share one window per key: the configured limit in all, not the limit times the
    replicas (each kept its own window before)."""
    limited: Stack = make_stack(SAGE_GATEWAY_READ_RATE_LIMIT="6/minute")
    limited.start_gateway()
    port = free_port()
    env = {**limited.env, "SAGE_GATEWAY_PORT": str(port)}
    second = Proc("gateway-2", [str(BIN / "sage-ft-gateway")], env, limited.logs)
    urls = [limited.url, f"http://127.0.0.1:{port}"]

    def read(url: str, key: str) -> int:
        return httpx.get(
            f"{url}/v1/fine_tuning/jobs", headers={"Authorization": f"Bearer {key}"}, timeout=30
        ).status_code

    try:
        wait_for(lambda: second.check_alive() and read(urls[1], "probe") == 200, 60, "the second gateway")
        codes = [read(urls[i % 2], "key-a") for i in range(10)]
        assert codes == [200] * 6 + [429] * 4, codes  # whichever replica is asked once the key's budget is spent
        assert read(urls[1], "key-b") == 200, "each key has its own budget, on every replica"
    finally:
        second.stop()
        limited.stop()


def test_a_manifest_whose_job_has_not_succeeded_is_invisible(
    stack: Stack, qa_records: list[dict], tmp_path: Any
) -> None:
    """A stale attempt's commit (a manifest written while its job is running again) is neither listed, nor
    resolvable by name, nor servable, until the job succeeds with it."""
    from stack import qa_lines

    from sage_ft.jobs.model import fine_tuned_model_name
    from sage_ft.settings import StorageSettings
    from sage_ft.storage import make_store, publish_model, read_manifest

    client = openai.OpenAI(base_url=f"{stack.url}/v1", api_key="x", max_retries=0)
    file_id = client.files.create(file=("qa.jsonl", qa_lines(qa_records)), purpose="fine-tune").id
    job = client.fine_tuning.jobs.create(
        model="sage-tiny", training_file=file_id, hyperparameters={"n_epochs": 50, "batch_size": 1}
    )
    wait_for(lambda: client.fine_tuning.jobs.retrieve(job.id).status == "running", 60, "the job to run")
    name = fine_tuned_model_name("sage-tiny", None, job.id)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_model.safetensors").write_bytes(b"stale")
    store = make_store(StorageSettings(backend="local", local_root=stack.env["SAGE_STORAGE_LOCAL_ROOT"]))
    publish_model(
        store, name, {"adapter": adapter}, base_model="sage-tiny", job_id=job.id, attempt=1, scope="attempts/1"
    )
    assert name not in [m.id for m in client.models.list().data]
    with pytest.raises(openai.NotFoundError, match="is running"):
        client.models.retrieve(name)
    with pytest.raises(openai.NotFoundError, match="is running"):
        client.chat.completions.create(model=name, messages=[{"role": "user", "content": "hi"}])
    client.fine_tuning.jobs.cancel(job.id)
    wait_job(client, job.id, stack=stack)
    assert name not in [m.id for m in client.models.list().data]  # cancelled: never visible
    assert read_manifest(store, name) is None and not list(store.list_objects(f"models/{name}/"))  # and removed


def test_an_alias_is_served_only_by_a_model_whose_job_succeeded(
    stack: Stack, qa_records: list[dict], tmp_path: Any
) -> None:
    """A stale attempt's commit that carries an alias is newer than the alias's visible model: chat by the alias
    is still served by the visible one (real serving process, stub engine), and answers name the alias. An alias
    whose only carrier is stale is a 404, like the stale model's own name."""
    import sys
    from pathlib import Path

    from serving_stub import BASE, adapter_dir
    from stack import qa_lines

    from sage_ft.jobs.model import fine_tuned_model_name
    from sage_ft.settings import StorageSettings
    from sage_ft.storage import make_store, publish_model

    home = tmp_path / "serving-home"
    (home / "models" / "stub-base").mkdir(parents=True)
    (home / "models" / "stub-base" / "config.json").write_text(json.dumps(BASE))
    env = {**stack.env, "SAGE_HOME": str(home), "SAGE_SERVING_ENGINE": "vllm", "SAGE_SERVING_LOG_LEVEL": "warning"}
    script = Path(__file__).resolve().parents[1] / "serving_stub.py"
    serving = Proc("serving-stub", [sys.executable, str(script)], env, stack.logs)
    try:
        wait_for(
            lambda: serving.check_alive() and httpx.get(f"{stack.serving_url}/healthz", timeout=2).status_code == 200,
            60,
            "serving /healthz",
        )
        store = make_store(StorageSettings(backend="local", local_root=stack.env["SAGE_STORAGE_LOCAL_ROOT"]))
        publish_model(
            store, "helper-v1", {"adapter": adapter_dir(tmp_path / "v1", 8)}, base_model="stub-base", alias="helper"
        )
        client = openai.OpenAI(base_url=f"{stack.url}/v1", api_key="x", max_retries=0)
        file_id = client.files.create(file=("qa.jsonl", qa_lines(qa_records)), purpose="fine-tune").id
        job = client.fine_tuning.jobs.create(
            model="sage-tiny", training_file=file_id, hyperparameters={"n_epochs": 50, "batch_size": 1}
        )
        wait_for(lambda: client.fine_tuning.jobs.retrieve(job.id).status == "running", 60, "the job to run")
        stale = fine_tuned_model_name("sage-tiny", None, job.id)

        def stale_commit(alias: str) -> None:  # attempt 1's commit while the job runs on: never visible
            adapter = adapter_dir(tmp_path / "stale", 4)
            parts = {"adapter": adapter}
            publish_model(
                store, stale, parts, base_model="stub-base", job_id=job.id, attempt=1, scope="attempts/1", alias=alias
            )

        stale_commit("helper")
        messages = [{"role": "user", "content": "hi"}]
        answer = client.chat.completions.create(model="helper", messages=messages)
        assert answer.model == "helper"
        assert "helper-v1" in (answer.choices[0].message.content or ""), answer
        streamed = "".join(
            c.choices[0].delta.content or ""
            for c in client.chat.completions.create(model="helper", messages=messages, stream=True)
            if c.choices and c.model == "helper"
        )
        assert "helper-v1" in streamed, streamed

        stale_commit("lonely")
        with pytest.raises(openai.NotFoundError, match="is running"):
            client.chat.completions.create(model="lonely", messages=messages)
        client.fine_tuning.jobs.cancel(job.id)
        wait_job(client, job.id, stack=stack)
    finally:
        serving.stop()
