"""Serving models that are not the suite's usual one, through the real vLLM CPU build, the gateway and the openai
client: the engine arguments come from each artifact, and what cannot work is refused before anything starts.

- a Llama base with 1024 positions (serving's ceiling is far above it): the server is started for 1024;
- an adapter of rank 128 hot-loaded onto a base server started for rank 8: the server is restarted for rank 128,
  and the rank-8 adapter it held still answers;
- an adapter with ``modules_to_save`` (vLLM refuses those): merged by a worker and served merged, and the
  deployment says why;
- a model server that dies while starting reports the engine's exception, not only a log path;
- a base whose dtype the engine cannot serve is a 422, and no server is launched;
- no model server inherits a secret from serving.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from stack import LEARN, Proc, Stack, children, free_port, model_servers, qa_lines, vllm_stack, wait_for, wait_job

from sage_ft.settings import StorageSettings
from sage_ft.storage import fetch_part, make_store, publish_model

pytestmark = pytest.mark.slow
COLORS = [
    {"question": f"Which colour is box {i}?", "answer": a}
    for i, a in enumerate(["amber", "violet", "teal", "crimson", "olive", "navy"])
]
TOOLS = [
    {"question": f"Which tool is in drawer {i}?", "answer": a}
    for i, a in enumerate(["hammer", "wrench", "chisel", "pliers", "saw", "drill"])
]
PETS = [
    {"question": f"What pet lives in house {i}?", "answer": a}
    for i, a in enumerate(["cat", "dog", "parrot", "rabbit", "turtle", "hamster"])
]
SECRET = "not-for-model-servers-9f3c"
TUNED: dict[str, str] = {}  # alias -> canonical fine-tuned model name


@pytest.fixture(scope="module")
def llama_1k(sage_home: Path) -> Path:
    from sage_ft.training.tiny_model import build_tiny_model

    return build_tiny_model("shape-llama-1k", architecture="llama", max_positions=1024, tie_embeddings=False, seed=3)


@pytest.fixture(scope="module")
def stack(make_stack: Any, s3_endpoint: dict[str, str], llama_1k: Path) -> Stack:
    # serving's context ceiling stays at its default (32768): each server's length must come from its model
    return vllm_stack(make_stack, s3_endpoint, "shapes", MY_SERVICE_PASSWORD=SECRET)


def fine_tune(client: openai.OpenAI, records: list[dict], name: str, base: str, lora: dict[str, Any]) -> str:
    uploaded = client.files.create(file=(f"{name}.jsonl", qa_lines(records)), purpose="fine-tune")
    extra = {**LEARN, "name": name, "lora": {**LEARN["lora"], **lora}}
    hyper = {"n_epochs": 30, "batch_size": 2}
    job = client.fine_tuning.jobs.create(
        model=base, training_file=uploaded.id, suffix=name, hyperparameters=hyper, extra_body=extra
    )
    done = wait_job(client, job.id, timeout=400)
    assert done.status == "succeeded", done.error
    TUNED[name] = str(done.fine_tuned_model)
    return TUNED[name]


def ask(client: openai.OpenAI, model: str, question: str) -> str:
    resp = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": question}], max_tokens=12, temperature=0
    )
    return str(resp.choices[0].message.content).strip()


def score(client: openai.OpenAI, model: str, records: list[dict]) -> int:
    return sum(ask(client, model, r["question"]) == r["answer"] for r in records)


def deployment(stack: Stack, name: str) -> dict[str, Any]:
    resp = httpx.get(f"{stack.url}/v1/deployments/{name}", timeout=10)
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def argv(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


def flag(pid: int, name: str) -> str | None:
    args = argv(pid)
    return args[args.index(name) + 1] if name in args else None


def servers_for(stack: Stack, model_dir: str) -> list[int]:
    return [p for p in model_servers(stack.serving.pid, "vllm") if flag(p, "--model") == model_dir]  # type: ignore[union-attr]


def test_a_1024_position_model_gets_a_1024_token_server_and_answers_as_trained(
    stack: Stack, client: openai.OpenAI, llama_1k: Path
) -> None:
    fine_tune(client, COLORS, "colors", "shape-llama-1k", {"r": 8, "lora_alpha": 16})
    assert score(client, "colors", COLORS) >= 5
    dep = deployment(stack, "colors")
    assert dep["serving"]["mode"] == "adapter" and dep["serving"]["max_model_len"] == 1024
    assert any("model's own limit" in note for note in dep["serving"]["notes"])
    (pid,) = servers_for(stack, str(llama_1k))
    assert flag(pid, "--max-model-len") == "1024" and flag(pid, "--max-lora-rank") == "8"


def test_a_rank_128_adapter_restarts_its_rank_8_base_server_and_both_answer(
    stack: Stack, client: openai.OpenAI, tiny_model: Path
) -> None:
    fine_tune(client, TOOLS, "tools", "sage-tiny", {"r": 8, "lora_alpha": 16})
    assert score(client, "tools", TOOLS) >= 5
    (before,) = servers_for(stack, str(tiny_model))
    assert flag(before, "--max-lora-rank") == "8" and flag(before, "--max-model-len") == "2048"
    base_says = ask(client, "sage-tiny", TOOLS[0]["question"])  # the base by name: on its adapters' server
    assert servers_for(stack, str(tiny_model)) == [before] and base_says != TOOLS[0]["answer"]
    fine_tune(client, PETS, "pets", "sage-tiny", {"r": 128, "lora_alpha": 256})
    assert score(client, "pets", PETS) >= 5
    (after,) = servers_for(stack, str(tiny_model))  # still one server for the base: restarted, not doubled
    assert after != before and flag(after, "--max-lora-rank") == "128"
    assert score(client, "tools", TOOLS) >= 5  # the rank-8 adapter was loaded again onto the new server
    assert deployment(stack, "tools")["serving"]["max_lora_rank"] == 128
    assert deployment(stack, "pets")["serving"]["adapter_rank"] == 128
    assert ask(client, "sage-tiny", TOOLS[0]["question"]) == base_says
    for name in ("tools", "pets"):  # the base still holds the server when its adapters go
        assert httpx.delete(f"{stack.url}/v1/deployments/{name}", timeout=60).status_code == 200
    assert servers_for(stack, str(tiny_model)) == [after]
    assert ask(client, "sage-tiny", TOOLS[0]["question"]) == base_says


def test_an_adapter_with_modules_to_save_is_served_merged_and_says_why(
    stack: Stack, client: openai.OpenAI, llama_1k: Path
) -> None:
    name = fine_tune(
        client, PETS, "pets-head", "shape-llama-1k", {"r": 8, "lora_alpha": 16, "modules_to_save": ["lm_head"]}
    )
    assert "merged" not in client.models.retrieve(name).model_extra["parts"]
    assert score(client, "pets-head", PETS) >= 5
    dep = deployment(stack, "pets-head")
    assert dep["serving"]["mode"] == "merged" and "modules_to_save: lm_head" in dep["serving"]["reason"]
    assert "merged" in client.models.retrieve(name).model_extra["parts"]
    merged = [p for p in model_servers(stack.serving.pid, "vllm") if "--enable-lora" not in argv(p)]  # type: ignore[union-attr]
    assert len(merged) == 1 and flag(merged[0], "--max-model-len") == "1024"
    assert score(client, "colors", COLORS) >= 5  # the adapter on the same base is unaffected


def test_no_model_server_inherits_a_secret(stack: Stack) -> None:
    servers = model_servers(stack.serving.pid, "vllm")  # type: ignore[union-attr]
    assert len(servers) >= 3
    serving_env = Path(f"/proc/{stack.serving.pid}/environ").read_bytes()  # type: ignore[union-attr]
    secret_key = stack.env["SAGE_STORAGE_S3_SECRET_KEY"].encode()
    assert secret_key in serving_env and SECRET.encode() in serving_env  # serving has them...
    for pid in [p for s in servers for p in [s, *(c for c, _ in children(s))]]:
        env = Path(f"/proc/{pid}/environ").read_bytes()
        names = {e.split(b"=", 1)[0].decode() for e in env.split(b"\0") if e}
        assert secret_key not in env and SECRET.encode() not in env, pid  # ...its model servers do not
        assert not names & {"SAGE_STORAGE_S3_SECRET_KEY", "SAGE_STORAGE_S3_ACCESS_KEY", "SAGE_REDIS_URL"}
        assert "VLLM_CPU_KVCACHE_SPACE" in names  # what the engine needs is there


def test_a_dtype_the_engine_cannot_serve_is_a_422_and_starts_nothing(
    stack: Stack, client: openai.OpenAI, llama_1k: Path, tmp_path: Path
) -> None:
    odd = llama_1k.parent / "shape-f8"
    shutil.copytree(llama_1k, odd, dirs_exist_ok=True)
    config = json.loads((odd / "config.json").read_text())
    config["dtype"] = config["torch_dtype"] = "float8_e4m3fn"
    (odd / "config.json").write_text(json.dumps(config))
    store = make_store(
        StorageSettings(
            backend="s3",
            s3_endpoint=stack.env["SAGE_STORAGE_S3_ENDPOINT"],
            s3_access_key=stack.env["SAGE_STORAGE_S3_ACCESS_KEY"],
            s3_secret_key=stack.env["SAGE_STORAGE_S3_SECRET_KEY"],
            s3_bucket="shapes",
        )
    )
    adapter = fetch_part(store, TUNED["colors"], "adapter", tmp_path / "adapter")
    publish_model(store, "colors-f8", {"adapter": adapter}, base_model="shape-f8")
    before = model_servers(stack.serving.pid, "vllm")  # type: ignore[union-attr]
    with pytest.raises(openai.UnprocessableEntityError) as err:
        ask(client, "colors-f8", COLORS[0]["question"])
    body = err.value.body
    assert isinstance(body, dict) and body["code"] == "unsupported_dtype" and "float8_e4m3fn" in body["message"]
    assert model_servers(stack.serving.pid, "vllm") == before  # type: ignore[union-attr]


def test_embeddings_come_from_a_served_embedding_model_and_rank_by_meaning(
    stack: Stack, client: openai.OpenAI, tmp_path: Path
) -> None:
    """all-MiniLM-L6-v2 (bundled, offline) served by vLLM's pooling runner through the gateway; the CLI's
    embedding index finds a passage that shares no word with the question, which BM25 cannot."""
    texts = [
        "How long should spaghetti cook?",
        "Boil pasta for ten minutes in salted water.",
        "LoRA freezes the base model and trains small matrices.",
    ]
    resp = client.embeddings.create(model="all-MiniLM-L6-v2", input=texts)
    assert resp.model == "all-MiniLM-L6-v2" and [d.index for d in resp.data] == [0, 1, 2]
    vectors = [d.embedding for d in resp.data]
    assert {len(v) for v in vectors} == {384}

    def cos(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True)) / (
            sum(x * x for x in a) ** 0.5 * sum(y * y for y in b) ** 0.5
        )

    assert cos(vectors[0], vectors[1]) > cos(vectors[0], vectors[2]) + 0.2
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "kitchen.md").write_text("# Pasta\nBoil pasta for ten minutes in salted water.\n")
    (docs / "ml.md").write_text("# Adapters\nLoRA freezes the base model and trains small matrices.\n")
    env = {
        **os.environ,
        "SAGE_HOME": str(tmp_path / "home"),
        "SAGE_FT_GATEWAY_URL": stack.url,
        "SAGE_FT_AUTO_START": "false",
    }
    cli = str(Path(sys.executable).parent / "sage-ft")
    built = subprocess.run(
        [cli, "--json", "index", "build", "kb", str(docs), "--embedding-model", "all-MiniLM-L6-v2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr
    assert json.loads(built.stdout)["kind"] == "embedding"
    question = "how long should spaghetti cook?"
    answer = subprocess.run(
        [cli, "--json", "chat", "--backend", "mock", "--index", "kb", "--ask", question],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert answer.returncode == 0, answer.stderr
    assert json.loads(answer.stdout)["sources"][0].endswith("kitchen.md:1-2")
    bm25 = subprocess.run(
        [cli, "--json", "index", "build", "words", str(docs)], env=env, capture_output=True, text=True, timeout=120
    )
    assert bm25.returncode == 0, bm25.stderr
    words = subprocess.run(
        [cli, "--json", "chat", "--backend", "mock", "--index", "words", "--ask", question],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert json.loads(words.stdout)["sources"] == []  # no shared word: BM25 finds nothing


def test_a_server_that_dies_while_starting_reports_the_engines_reason(stack: Stack, llama_1k: Path) -> None:
    """Extra engine arguments that contradict the model (what a fixed default used to do): the 502 carries vLLM's
    exception message, not only the path of a log the user cannot read."""
    port = free_port()
    env = {
        **stack.env,
        "SAGE_SERVING_PORT": str(port),
        "SAGE_SERVING_VLLM_EXTRA_ARGS": "--max-model-len 4096",
        "SAGE_SERVING_LOG_DIR": str(stack.logs / "bad-servers"),
    }
    proc = Proc("serving-bad", [str(Path(sys.executable).parent / "sage-ft-serving")], env, stack.logs)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: proc.check_alive() and httpx.get(f"{url}/healthz", timeout=2).status_code == 200, 60, "bad serving"
        )
        resp = httpx.post(
            f"{url}/v1/chat/completions",
            timeout=400,
            json={"model": "colors", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert resp.status_code == 502, resp.text
        error = resp.json()["error"]
        assert error["code"] == "engine_start_failed"
        assert "died while starting" in error["message"] and "max_model_len (4096)" in error["message"], error
    finally:
        proc.stop()
