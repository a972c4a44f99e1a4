"""Serving's deployment state machine in process: FastAPI's TestClient, a real local object store, and a launcher
whose "model servers" are small HTTP servers on threads (the engine is outside what is tested here; the real vLLM
and transformers servers are in tests/integration/test_serving*.py).

Also the one-owner rule for model-server processes: a server started on behalf of a thread that then exits keeps
running (``PR_SET_PDEATHSIG`` fires when the forking *thread* exits).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from serving_stub import BASE, StubLauncher, adapter_dir

from sage_ft.storage import LocalStore, publish_model
from sage_ft.storage.merges import record_merge_failure
from sage_ft_serving.app import create_app
from sage_ft_serving.launchers import ServerHandle, ServerSpec
from sage_ft_serving.settings import ServingSettings, Settings


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Any]:
    models = tmp_path / "home" / "models" / "stub-base"
    models.mkdir(parents=True)
    (models / "config.json").write_text(json.dumps(BASE))
    store = LocalStore(tmp_path / "store")
    return {"tmp": tmp_path, "store": store, "merges": []}


def make_client(world: dict[str, Any], launcher: StubLauncher, **serving: Any) -> Iterator[TestClient]:
    tmp: Path = world["tmp"]
    options = {
        "engine": "vllm",
        "cache_dir": tmp / "cache",
        "log_dir": tmp / "logs",
        "reap_interval_seconds": 0.2,
        "merge_timeout_seconds": 20,
        **serving,
    }
    settings = Settings(serving=ServingSettings(**options))
    settings.storage.backend, settings.storage.local_root = "local", tmp / "store"
    settings.paths.home = tmp / "home"
    app = create_app(settings, launcher=launcher, enqueue_merge=lambda t, m: world["merges"].append((t, m)))
    with TestClient(app) as client:
        yield client


@pytest.fixture
def stub() -> StubLauncher:
    return StubLauncher()


@pytest.fixture
def client(world: dict[str, Any], stub: StubLauncher) -> Iterator[TestClient]:
    yield from make_client(world, stub)


def deploy(client: TestClient, model: str) -> dict[str, Any]:
    resp = client.post("/v1/deployments", json={"model": model, "wait": True})
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def test_a_deployment_goes_ready_with_engine_arguments_from_its_model(
    world: dict, stub: StubLauncher, client: TestClient
) -> None:
    publish_model(world["store"], "small", {"adapter": adapter_dir(world["tmp"] / "a", 8)}, base_model="stub-base")
    dep = deploy(client, "small")
    assert dep["state"] == "ready" and dep["health"] == "healthy"
    assert dep["serving"] == {
        "mode": "adapter",
        "max_model_len": 1024,
        "max_lora_rank": 8,
        "adapter_rank": 8,
        "reason": None,
        "notes": dep["serving"]["notes"],
    }
    (spec,) = stub.specs
    args = spec.args
    assert args[args.index("--max-model-len") + 1] == "1024" and args[args.index("--max-lora-rank") + 1] == "8"
    chat = client.post("/v1/chat/completions", json={"model": "small", "messages": [{"role": "user", "content": "x"}]})
    assert chat.status_code == 200 and chat.json()["model"] == "small"  # the client's name, not the engine's
    assert chat.json()["choices"][0]["message"]["content"].startswith("served by small-")
    body = {"model": "small", "messages": [{"role": "user", "content": "x"}], "stream": True}
    with client.stream("POST", "/v1/chat/completions", json=body) as resp:
        frames = [line for line in resp.iter_lines() if line.startswith("data: ")]
    assert frames[-1] == "data: [DONE]" and len(frames) == 4
    chunks = [json.loads(f[6:]) for f in frames[:-1]]
    assert {c["model"] for c in chunks} == {"small"}  # every chunk names what the client asked for
    assert "".join(c["choices"][0]["delta"]["content"] for c in chunks).startswith("served by small-")
    assert client.delete("/v1/deployments/small").json()["deleted"] is True
    assert client.get("/v1/deployments/small").status_code == 404
    assert not stub.servers  # its last model gone, the server stopped


def test_a_larger_rank_restarts_the_base_server_and_reloads_what_it_held(
    world: dict, stub: StubLauncher, client: TestClient
) -> None:
    publish_model(world["store"], "r8", {"adapter": adapter_dir(world["tmp"] / "a", 8)}, base_model="stub-base")
    publish_model(world["store"], "r100", {"adapter": adapter_dir(world["tmp"] / "b", 100)}, base_model="stub-base")
    deploy(client, "r8")
    big = deploy(client, "r100")
    assert big["serving"]["max_lora_rank"] == 128 and big["serving"]["adapter_rank"] == 100
    first, second = stub.specs
    assert first.name == second.name  # the same server (one per base model), started again with a larger slot
    assert second.args[second.args.index("--max-lora-rank") + 1] == "128"
    (httpd,) = stub.servers.values()
    assert sorted(n.split("-")[0] for n in httpd.loaded) == ["r100", "r8"]  # type: ignore[attr-defined]
    small = client.get("/v1/deployments/r8").json()
    assert small["state"] == "ready" and small["serving"]["max_lora_rank"] == 128
    chat = client.post("/v1/chat/completions", json={"model": "r8", "messages": [{"role": "user", "content": "x"}]})
    assert chat.status_code == 200
    deploy(client, "r8")
    assert len(stub.specs) == 2  # a smaller adapter never restarts it


def test_an_adapter_vllm_cannot_load_waits_for_a_merge_and_a_failed_merge_is_reported_at_once(
    world: dict, stub: StubLauncher, client: TestClient
) -> None:
    adapter = adapter_dir(world["tmp"] / "a", 8, modules_to_save=["lm_head"])
    publish_model(world["store"], "head", {"adapter": adapter}, base_model="stub-base")
    started = time.monotonic()
    resp = client.post("/v1/deployments", json={"model": "head"})
    assert resp.status_code == 200 and resp.json()["serving"]["mode"] == "merged"
    assert "modules_to_save: lm_head" in resp.json()["serving"]["reason"]
    deadline = time.monotonic() + 10
    while not world["merges"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert world["merges"] == [("local", "head")]
    record_merge_failure(world["store"], "head", "IntegrityError: adapter/adapter_model.safetensors", "w1")
    while client.get("/v1/deployments/head").json()["state"] == "deploying" and time.monotonic() < deadline:
        time.sleep(0.1)
    dep = client.get("/v1/deployments/head").json()
    assert dep["state"] == "failed" and dep["error"]["code"] == "merge_failed"
    assert "IntegrityError" in dep["error"]["message"] and "w1" in dep["error"]["message"]
    assert time.monotonic() - started < 10  # not the 20 s merge timeout
    assert not stub.specs  # nothing was started


def test_a_merged_model_gets_a_server_of_its_own_without_lora(
    world: dict, stub: StubLauncher, client: TestClient
) -> None:
    adapter = adapter_dir(world["tmp"] / "a", 8, modules_to_save=["lm_head"])
    merged = world["tmp"] / "m"
    merged.mkdir()
    (merged / "config.json").write_text(json.dumps(BASE))
    (merged / "model.safetensors").write_bytes(b"{}")
    publish_model(world["store"], "head", {"adapter": adapter, "merged": merged}, base_model="stub-base")
    dep = deploy(client, "head")
    assert dep["state"] == "ready" and dep["serving"]["mode"] == "merged"
    (spec,) = stub.specs
    assert "--enable-lora" not in spec.args and spec.args[spec.args.index("--max-model-len") + 1] == "1024"
    assert spec.args[spec.args.index("--model") + 1].endswith("/merged")


def test_what_cannot_be_served_is_a_422_before_any_server_starts(
    world: dict, stub: StubLauncher, client: TestClient
) -> None:
    odd = world["tmp"] / "home" / "models" / "odd-base"
    odd.mkdir()
    (odd / "config.json").write_text(json.dumps({**BASE, "torch_dtype": "int4"}))
    publish_model(world["store"], "odd", {"adapter": adapter_dir(world["tmp"] / "a", 8)}, base_model="odd-base")
    resp = client.post("/v1/deployments", json={"model": "odd"})
    assert resp.status_code == 422 and resp.json()["error"]["code"] == "unsupported_dtype"
    chat = client.post("/v1/chat/completions", json={"model": "odd", "messages": [{"role": "user", "content": "x"}]})
    assert chat.status_code == 422 and "int4" in chat.json()["error"]["message"]
    assert not stub.specs


def test_a_server_that_dies_while_starting_fails_the_deployment_with_its_reason(world: dict) -> None:
    publish_model(world["store"], "small", {"adapter": adapter_dir(world["tmp"] / "a", 8)}, base_model="stub-base")
    dying = StubLauncher(fail_with="exited with 1: ValueError: no such kernel")
    for client in make_client(world, dying):
        resp = client.post("/v1/deployments", json={"model": "small", "wait": True})
        assert resp.status_code == 502, resp.text  # an engine that did not start: never a 200 to a waiting script
        assert resp.json()["error"]["code"] == "engine_start_failed"
        assert "ValueError: no such kernel" in resp.json()["error"]["message"]
        dep = client.get("/v1/deployments/small").json()
        assert dep["state"] == "failed" and dep["error"]["code"] == "engine_start_failed"
        chat = client.post(
            "/v1/chat/completions", json={"model": "small", "messages": [{"role": "user", "content": "x"}]}
        )
        assert chat.status_code == 502 and "no such kernel" in chat.json()["error"]["message"]


def test_an_idle_server_stops_and_the_next_request_brings_it_back(world: dict) -> None:
    publish_model(world["store"], "small", {"adapter": adapter_dir(world["tmp"] / "a", 8)}, base_model="stub-base")
    stub = StubLauncher()
    for client in make_client(world, stub, idle_timeout_seconds=0.5):
        deploy(client, "small")
        deadline = time.monotonic() + 10
        while client.get("/v1/deployments/small").json()["state"] != "stopped" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert client.get("/v1/deployments/small").json()["state"] == "stopped" and not stub.servers
        chat = client.post(
            "/v1/chat/completions", json={"model": "small", "messages": [{"role": "user", "content": "x"}]}
        )
        assert chat.status_code == 200 and len(stub.specs) == 2


def test_bad_requests_name_the_field(client: TestClient) -> None:
    assert client.post("/v1/deployments", json={"model": "nope"}).json()["error"]["code"] == "model_not_found"
    resp = client.post("/v1/deployments", json={"model": "x", "engine": "tgi"})
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "engine"
    resp = client.get("/v1/deployments", headers={"X-Sage-Tenant": "../etc"})
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "X-Sage-Tenant"


# -- one owner for model-server processes ----------------------------------------------------------------------


def test_a_model_server_outlives_the_thread_that_asked_for_it(tmp_path: Path) -> None:
    """Ask for a server from a thread with its own event loop, as a pool thread does, and let that thread exit.
    Started from that thread (or from AnyIO's worker threads, which retire), the server would get SIGKILL."""
    from sage_ft_serving.launchers.process import ProcessLauncher
    from sage_ft_serving.metrics import ServingMetrics
    from sage_ft_serving.pool import ServerPool

    settings = Settings(serving=ServingSettings(log_dir=tmp_path / "logs"))
    launcher = ProcessLauncher(settings)
    pool = ServerPool(settings, launcher, ServingMetrics())
    spec = ServerSpec(
        name="probe",
        engine="stub",
        module="http.server",
        python=Path(sys.executable),
        args=["--bind", "{host}", "{port}", "--directory", str(tmp_path)],
    )
    box: dict[str, ServerHandle] = {}
    asker = threading.Thread(target=lambda: box.update(handle=asyncio.run(pool.launch(spec))))
    asker.start()
    asker.join()
    handle = box["handle"]
    try:
        deadline = time.monotonic() + 15
        answered = False
        while time.monotonic() < deadline and not answered:
            try:
                answered = httpx.get(handle.url + "/", timeout=1).status_code == 200
            except httpx.HTTPError:
                time.sleep(0.2)
        time.sleep(1.0)  # PR_SET_PDEATHSIG would have fired by now
        assert launcher.alive(handle), "the model server died with the thread that asked for it"
        assert httpx.get(handle.url + "/", timeout=5).status_code == 200
    finally:
        asyncio.run(pool.close())


def test_sigterm_cuts_an_open_chat_stream_after_the_grace_period(world: dict, tmp_path: Path) -> None:
    """A rollout sends SIGTERM, then SIGKILL: serving exits within its grace period even while a proxied chat stream
    is still running (here one that would take 15 s), instead of waiting for it."""
    import os
    import signal
    import socket
    import subprocess

    publish_model(world["store"], "small", {"adapter": adapter_dir(world["tmp"] / "a", 8)}, base_model="stub-base")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        **os.environ,
        "SAGE_SERVING_PORT": str(port),
        "SAGE_SERVING_ENGINE": "vllm",
        "SAGE_HOME": str(tmp_path / "home"),
        "SAGE_STORAGE_BACKEND": "local",
        "SAGE_STORAGE_LOCAL_ROOT": str(tmp_path / "store"),
        "SAGE_SERVING_SHUTDOWN_GRACE_SECONDS": "2",
        "SAGE_SERVING_LOG_LEVEL": "warning",
    }
    script = Path(__file__).resolve().parents[1] / "serving_stub.py"
    with (tmp_path / "serving.log").open("wb") as log:
        proc = subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.DEVNULL, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "serving.log").read_text()
            time.sleep(0.2)
        chunks: list[str] = []
        body = {"model": "small", "messages": [{"role": "user", "content": "x"}], "stream": True, "slow": True}

        def follow() -> None:
            # the cut stream ends without its last chunk
            with (
                contextlib.suppress(httpx.HTTPError),
                httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=60) as resp,
            ):
                chunks.extend(line for line in resp.iter_lines() if line.startswith("data: "))

        reader = threading.Thread(target=follow, daemon=True)
        reader.start()
        while len(chunks) < 2 and reader.is_alive():
            time.sleep(0.1)
        assert chunks, "the stream never started"
        stopped_at = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        assert time.monotonic() - stopped_at < 8, "serving waited for the stream instead of its grace period"
        reader.join(timeout=5)
        assert not reader.is_alive() and len(chunks) < 60  # the stream was cut, not run to its end
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_waiting_deploy_of_an_artifact_that_cannot_be_served_is_a_422_named_as_serving_names_it(
    world: dict, stub: StubLauncher, client: TestClient
) -> None:
    """The worker's merge found the adapter's bytes were not the published ones: the same cause as serving's own
    check, so the same code (``checksum_mismatch``), and an error status for a deploy that waited (not 200 with
    ``state: failed``)."""
    adapter = adapter_dir(world["tmp"] / "a", 8, modules_to_save=["lm_head"])  # vLLM needs it merged
    publish_model(world["store"], "head", {"adapter": adapter}, base_model="stub-base")

    def worker_fails_the_merge() -> None:
        deadline = time.monotonic() + 10
        while not world["merges"] and time.monotonic() < deadline:
            time.sleep(0.05)
        reason = "IntegrityError: adapter/adapter_model.safetensors: sha256 differs from the manifest"
        record_merge_failure(world["store"], "head", reason, "w1", code="checksum_mismatch")

    failing = threading.Thread(target=worker_fails_the_merge)
    failing.start()
    resp = client.post("/v1/deployments", json={"model": "head", "wait": True})
    failing.join()
    assert resp.status_code == 422, resp.text
    error = resp.json()["error"]
    assert error["code"] == "checksum_mismatch" and "adapter_model.safetensors" in error["message"]
    assert error["param"] == "model" and not stub.specs
    dep = client.get("/v1/deployments/head").json()
    assert dep["state"] == "failed" and dep["error"]["code"] == "checksum_mismatch"
