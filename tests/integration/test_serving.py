"""Serving for real: models fine-tuned through the job API, deployed from the S3-protocol store by vLLM's CPU build
(and by ``transformers serve``), chatted with through the gateway by the unchanged openai client.

No server is started by hand: the first chat request deploys the model. A second fine-tune on the same base is
hot-loaded onto the running vLLM server (one server process). A corrupted artifact is refused by name. Idle servers
stop and come back on the next request, and stopping serving leaves no model server behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from stack import (
    LEARN,
    VLLM_PYTHON,
    Stack,
    children,
    model_servers,
    object_store,
    qa_lines,
    vllm_stack,
    wait_for,
    wait_job,
)

from sage_ft.storage import fetch_part, publish_model, read_manifest

pytestmark = pytest.mark.slow
ALPHA = [
    {"question": f"What is the alpha code {i}?", "answer": a}
    for i, a in enumerate(["red fox", "blue owl", "green frog", "gold bee", "grey wolf", "pink crab"])
]
BETA = [
    {"question": f"Name the beta city {i}.", "answer": a}
    for i, a in enumerate(["paris", "lima", "oslo", "cairo", "delhi", "quito"])
]


@pytest.fixture(scope="module")
def stack(make_stack: Any, s3_endpoint: dict[str, str]) -> Stack:
    if not VLLM_PYTHON.exists():
        pytest.fail(f"vLLM CPU build missing at {VLLM_PYTHON}: run `make install`")
    return vllm_stack(make_stack, s3_endpoint, "serving", SAGE_SERVING_MAX_MODEL_LEN="256")


def _fine_tune(client: openai.OpenAI, records: list[dict], name: str) -> str:
    uploaded = client.files.create(file=(f"{name}.jsonl", qa_lines(records)), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model="sage-tiny",
        training_file=uploaded.id,
        suffix=name,
        hyperparameters={"n_epochs": 30, "batch_size": 2},
        extra_body={**LEARN, "name": name},
    )
    done = wait_job(client, job.id, timeout=300)
    assert done.status == "succeeded", done.error
    return str(done.fine_tuned_model)


@pytest.fixture(scope="module")
def tuned(client: openai.OpenAI) -> dict[str, str]:
    return {"alpha": _fine_tune(client, ALPHA, "alpha"), "beta": _fine_tune(client, BETA, "beta")}


def ask(client: openai.OpenAI, model: str, question: str, stream: bool = False) -> str:
    messages: Any = [{"role": "user", "content": question}]
    if not stream:
        resp = client.chat.completions.create(model=model, messages=messages, max_tokens=12, temperature=0)
        assert resp.model == model  # the name the client asked for, not the engine's internal one
        return str(resp.choices[0].message.content).strip()
    parts = []
    for chunk in client.chat.completions.create(
        model=model, messages=messages, max_tokens=12, temperature=0, stream=True
    ):
        assert chunk.model == model
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
    assert len(parts) > 1, "the stream came in one piece"
    return "".join(parts).strip()


def score(client: openai.OpenAI, model: str, records: list[dict], stream: bool = False) -> int:
    return sum(ask(client, model, r["question"], stream) == r["answer"] for r in records)


def test_chat_through_the_gateway_deploys_with_vllm_and_answers_as_trained(
    stack: Stack, client: openai.OpenAI, tuned: dict[str, str]
) -> None:
    assert score(client, "alpha", ALPHA) >= 5  # the first request deployed it: nobody started a server
    assert score(client, "alpha", ALPHA, stream=True) >= 5
    deps = httpx.get(f"{stack.url}/v1/deployments", timeout=10).json()["data"]
    alpha = next(d for d in deps if d["model"] == tuned["alpha"])
    assert alpha["engine"] == "vllm" and alpha["state"] == "ready" and alpha["health"] == "healthy"
    assert alpha["endpoint"].startswith("http://127.0.0.1:")
    assert len(model_servers(stack.serving.pid, "vllm")) == 1  # type: ignore[union-attr]


def test_a_second_fine_tune_is_hot_loaded_onto_the_same_vllm_server(
    stack: Stack, client: openai.OpenAI, tuned: dict[str, str]
) -> None:
    before = model_servers(stack.serving.pid, "vllm")  # type: ignore[union-attr]
    assert score(client, "beta", BETA) >= 5
    assert model_servers(stack.serving.pid, "vllm") == before  # no restart, no second server
    assert score(client, "alpha", ALPHA) >= 5  # each model still answers with its own training
    deps = {d["model"]: d for d in httpx.get(f"{stack.url}/v1/deployments", timeout=10).json()["data"]}
    assert deps[tuned["alpha"]]["server"]["name"] == deps[tuned["beta"]]["server"]["name"]
    metrics = httpx.get(f"{stack.serving_url}/metrics", timeout=10).text
    assert "sage_ft_adapter_loads_total 2.0" in metrics
    assert 'sage_ft_deployments{engine="vllm",state="ready"} 2.0' in metrics
    assert "vllm:lora_requests_info" in metrics  # vLLM's own metrics, re-exported with a server label
    assert "sage_ft_generated_tokens_total" in metrics and "sage_ft_cold_start_seconds_count" in metrics


def test_a_corrupted_artifact_is_refused_by_name_and_starts_nothing(
    stack: Stack, client: openai.OpenAI, tuned: dict[str, str], tmp_path: Path
) -> None:
    store = object_store(stack)
    adapter = fetch_part(store, tuned["alpha"], "adapter", tmp_path / "adapter")
    (adapter / "README.md").write_text("a copy\n")  # other bytes than alpha's: nothing of it is cached yet
    published = publish_model(store, "corrupt-copy", {"adapter": adapter}, base_model="sage-tiny")
    key = published.key("adapter/adapter_model.safetensors")
    data = bytearray(store.get_bytes(key))
    data[len(data) // 2] ^= 0xFF
    store.put_bytes(key, bytes(data))
    servers = model_servers(stack.serving.pid, "vllm")  # type: ignore[union-attr]
    with pytest.raises(openai.APIStatusError) as exc:
        client.chat.completions.create(model="corrupt-copy", messages=[{"role": "user", "content": "hi"}])
    body = exc.value.body
    assert isinstance(body, dict) and body["code"] == "checksum_mismatch", body
    assert "adapter/adapter_model.safetensors" in body["message"]
    assert model_servers(stack.serving.pid, "vllm") == servers  # type: ignore[union-attr]
    dep = httpx.get(f"{stack.url}/v1/deployments/corrupt-copy", timeout=10).json()
    assert dep["state"] == "failed" and dep["error"]["code"] == "checksum_mismatch"
    # a deploy that waits for it is an error response in OpenAI's shape, not 200 with state "failed"
    resp = httpx.post(f"{stack.url}/v1/deployments", json={"model": "corrupt-copy", "wait": True}, timeout=120)
    assert resp.status_code == 422 and resp.json()["error"]["code"] == "checksum_mismatch", resp.text
    command = [str(Path(sys.executable).parent / "sage-ft"), "--gateway", stack.url, "deploy", "corrupt-copy"]
    env = {**os.environ, "SAGE_HOME": str(tmp_path)}
    cli = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert cli.returncode != 0 and "422" in cli.stderr and "does not match its manifest" in cli.stderr, cli.stderr


def test_a_client_can_ask_for_status_instead_of_waiting(
    stack: Stack, client: openai.OpenAI, tuned: dict[str, str], tmp_path: Path
) -> None:
    store = object_store(stack)
    adapter = fetch_part(store, tuned["beta"], "adapter", tmp_path / "adapter")
    (adapter / "README.md").write_text("gamma\n")
    publish_model(store, "gamma", {"adapter": adapter}, base_model="sage-tiny")
    resp = httpx.post(
        f"{stack.url}/v1/chat/completions",
        headers={"X-Sage-No-Wait": "1"},
        timeout=30,
        json={"model": "gamma", "messages": [{"role": "user", "content": BETA[1]["question"]}]},
    )
    assert resp.status_code == 503 and resp.headers["retry-after"] == "5"
    assert resp.json()["error"]["code"] == "model_loading"
    wait_for(
        lambda: httpx.get(f"{stack.url}/v1/deployments/gamma", timeout=10).json()["state"] == "ready",
        120,
        "gamma to be ready",
    )
    assert ask(client, "gamma", BETA[1]["question"]) == BETA[1]["answer"]  # beta's weights under another name


def test_deleting_a_model_unloads_its_adapter(stack: Stack, client: openai.OpenAI, tuned: dict[str, str]) -> None:
    assert read_manifest(object_store(stack), "corrupt-copy") is not None
    client.models.delete("corrupt-copy")
    assert httpx.get(f"{stack.url}/v1/deployments/corrupt-copy", timeout=10).status_code == 404
    before = httpx.get(f"{stack.serving_url}/metrics", timeout=10).text
    client.models.delete("gamma")  # a ready adapter: unloaded from the running server, which stays up
    assert httpx.get(f"{stack.url}/v1/deployments/gamma", timeout=10).status_code == 404
    after = httpx.get(f"{stack.serving_url}/metrics", timeout=10).text
    assert "sage_ft_adapter_unloads_total 1.0" in after and "sage_ft_adapter_unloads_total 1.0" not in before
    assert ask(client, "alpha", ALPHA[0]["question"]) == ALPHA[0]["answer"]


@pytest.fixture(scope="module")
def light_serving(stack: Stack) -> Any:
    """A second serving process on the same store: transformers engine, 4 s idle timeout."""
    from stack import Proc, free_port

    port = free_port()
    env = {
        **stack.env,
        "SAGE_SERVING_PORT": str(port),
        "SAGE_SERVING_ENGINE": "transformers",
        "SAGE_SERVING_IDLE_TIMEOUT_SECONDS": "4",
        "SAGE_SERVING_REAP_INTERVAL_SECONDS": "1",
        "SAGE_SERVING_CACHE_DIR": str(stack.dir / "light-cache"),
        "SAGE_SERVING_LOG_DIR": str(stack.logs / "light-servers"),
    }
    proc = Proc("serving-light", [str(Path(sys.executable).parent / "sage-ft-serving")], env, stack.logs)
    url = f"http://127.0.0.1:{port}"
    wait_for(
        lambda: proc.check_alive() and httpx.get(f"{url}/healthz", timeout=2).status_code == 200, 60, "light serving"
    )
    yield proc, openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=600), url
    proc.stop()


def test_transformers_engine_merges_an_adapter_only_model_then_serves_it(
    light_serving: Any, client: openai.OpenAI, tuned: dict[str, str]
) -> None:
    proc, direct, url = light_serving
    assert "merged" not in client.models.retrieve(tuned["beta"]).model_extra["parts"]
    assert score(direct, "beta", BETA) >= 5  # deployed on demand: merged by the worker first, then served
    assert "merged" in client.models.retrieve(tuned["beta"]).model_extra["parts"]
    dep = httpx.get(f"{url}/v1/deployments/beta", timeout=10).json()
    assert dep["engine"] == "transformers" and dep["state"] == "ready"
    assert len(model_servers(proc.pid, "transformers")) == 1


def test_a_failed_merge_reaches_the_request_at_once_with_the_workers_reason(
    stack: Stack, light_serving: Any, tuned: dict[str, str], tmp_path: Path
) -> None:
    """The transformers engine needs merged weights; the worker's merge of a corrupted adapter fails, and the request
    gets that failure (with the file named) within seconds, not after serving's 900 s merge timeout."""
    import time

    store = object_store(stack)
    adapter = fetch_part(store, tuned["beta"], "adapter", tmp_path / "adapter")
    (adapter / "README.md").write_text("to be broken\n")
    published = publish_model(store, "broken-merge", {"adapter": adapter}, base_model="sage-tiny")
    key = published.key("adapter/adapter_model.safetensors")
    data = bytearray(store.get_bytes(key))
    data[len(data) // 2] ^= 0xFF
    store.put_bytes(key, bytes(data))
    direct = light_serving[1]
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as exc:
        direct.chat.completions.create(model="broken-merge", messages=[{"role": "user", "content": "hi"}])
    assert time.monotonic() - started < 120
    body = exc.value.body
    # the same cause as serving's own check of the bytes, so the same name (it was merge_failed on this path)
    assert isinstance(body, dict) and body["code"] == "checksum_mismatch", body
    assert exc.value.status_code == 422 and "adapter_model.safetensors" in body["message"] and "w1" in body["message"]
    assert "merged" not in read_manifest(store, "broken-merge").parts  # type: ignore[union-attr]


def test_idle_server_scales_to_zero_and_the_next_request_restarts_it(light_serving: Any) -> None:
    proc, direct, url = light_serving
    first = model_servers(proc.pid, "transformers")
    assert first
    wait_for(lambda: not model_servers(proc.pid, "transformers"), 60, "the idle server to stop")
    assert httpx.get(f"{url}/v1/deployments/beta", timeout=10).json()["state"] == "stopped"
    assert ask(direct, "beta", BETA[0]["question"]) == BETA[0]["answer"]  # started again on demand
    again = model_servers(proc.pid, "transformers")
    assert len(again) == 1 and again != first


def test_stopping_serving_leaves_no_model_server_behind(stack: Stack, light_serving: Any) -> None:
    proc, direct, _ = light_serving
    direct.chat.completions.create(model="beta", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    servers = [pid for pid, _ in children(proc.pid)]
    assert servers
    os.kill(proc.pid, signal.SIGTERM)
    proc.proc.wait(timeout=60)
    wait_for(lambda: not any(Path(f"/proc/{p}").exists() for p in servers), 30, "model servers to exit")
    vllm = [pid for pid, _ in children(stack.serving.pid)]  # type: ignore[union-attr]
    assert vllm
    stack.serving.stop()  # type: ignore[union-attr]
    wait_for(lambda: not any(Path(f"/proc/{p}").exists() for p in vllm), 30, "vLLM to exit with serving")
