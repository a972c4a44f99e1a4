"""The container path end to end, on a real Docker engine: the stack users start with `docker compose --profile cpu
up -d`, driven through the published gateway port by the unchanged openai client.

In order (one stack for the module, as a user's day would go):
1. every service healthy, the bucket made by minio-init, /readyz answering; a python grader runs in a container of
   serving's with no network and none of the stack's environment;
2. a tiny offline model fine-tuned inside the worker container; adapter and manifest in the S3 store;
3. a chat request makes serving start a vLLM container through the Docker API; the answer is the trained one;
   a second fine-tune of the same base is hot-loaded onto that one container;
4. the worker's main process SIGKILLed mid-training: Docker's restart policy brings it back, the job resumes from
   its newest checkpoint and publishes one model; `restart redis` with a job queued loses nothing;
5. Prometheus scrapes every sage-ft target, the vLLM container included, and all are up;
6. `down` removes the model-server containers serving started; `up` again: jobs, files and models are there and the
   old model still chats; `down -v` leaves no container, network or volume of the project.
"""

from __future__ import annotations

import json
import os
import signal
from typing import Any

import httpx
import openai
import pytest
from compose_stack import API_KEY, Compose, docker, model_server_containers, project_leftovers
from stack import LEARN, all_events, qa_lines, wait_for

# The first test also waits for every image to build (about 10 minutes on a fresh 2-core machine).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

ALPHA = [
    {"question": f"What is the alpha code {i}?", "answer": a}
    for i, a in enumerate(["red fox", "blue owl", "green frog", "gold bee", "grey wolf", "pink crab"])
]
BETA = [
    {"question": f"Name the beta city {i}.", "answer": a}
    for i, a in enumerate(["paris", "lima", "oslo", "cairo", "delhi", "quito"])
]
TINY = "from sage_ft.training.tiny_model import build_tiny_model as b; import json; print(json.dumps(str(b({args}))))"
STORE = """
import json
from sage_ft.storage import make_store
print(json.dumps([o.key for o in make_store().list_objects("")]))
"""
TENANT = "tenants/acme/"  # auth is on under compose: every object of the caller's tenant lives under its prefix


@pytest.fixture(scope="module")
def client(compose: Compose) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{compose.gateway_url}/v1", api_key=API_KEY, max_retries=0, timeout=900)


@pytest.fixture(scope="module")
def models(compose: Compose) -> dict[str, str]:
    """The offline base models, built inside the worker container into the shared models volume."""
    tiny = compose.python("worker-cpu", TINY.format(args="'sage-tiny'"))
    wide = compose.python("worker-cpu", TINY.format(args="'sage-wide', hidden_size=384, num_layers=4, num_heads=6"))
    assert tiny == "/data/sage/models/sage-tiny" and wide.endswith("sage-wide")
    return {"tiny": "sage-tiny", "wide": "sage-wide"}


def wait_job(client: openai.OpenAI, job_id: str, timeout: float = 600) -> Any:
    return wait_for(
        lambda: (j := client.fine_tuning.jobs.retrieve(job_id)).status in ("succeeded", "failed", "cancelled") and j,
        timeout,
        f"job {job_id} to finish",
        1.0,
    )


def fine_tune(
    client: openai.OpenAI, records: list[dict], name: str, model: str = "sage-tiny", epochs: int = 30, **extra: Any
) -> Any:
    uploaded = client.files.create(file=(f"{name}.jsonl", qa_lines(records)), purpose="fine-tune")
    return client.fine_tuning.jobs.create(
        model=model,
        training_file=uploaded.id,
        suffix=name,
        hyperparameters={"n_epochs": epochs, "batch_size": 2},
        extra_body={**LEARN, "name": name, **extra},
    )


def ask(client: openai.OpenAI, model: str, question: str) -> str:
    resp = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": question}], max_tokens=12, temperature=0
    )
    assert resp.model == model
    return str(resp.choices[0].message.content).strip()


def score(client: openai.OpenAI, model: str, records: list[dict]) -> int:
    return sum(ask(client, model, r["question"]) == r["answer"] for r in records)


STATE: dict[str, Any] = {}


def test_up_starts_every_service_healthy_with_the_bucket_made(compose: Compose) -> None:
    ps = [json.loads(line) for line in compose("ps", "-a", "--format", "json").stdout.splitlines() if line.strip()]
    by_service = {p["Service"]: p for p in ps}
    for service in ("redis", "minio", "gateway", "worker-cpu", "serving", "prometheus", "grafana"):
        assert by_service[service]["State"] == "running", by_service[service]
        assert by_service[service]["Health"] == "healthy", (service, by_service[service]["Health"])
    assert "worker-gpu" not in by_service  # the gpu profile is not started on a machine without one
    assert by_service["minio-init"]["State"] == "exited" and by_service["minio-init"]["ExitCode"] == 0
    ready = httpx.get(f"{compose.gateway_url}/readyz", timeout=10)
    assert ready.status_code == 200, ready.text
    for asset in ("console/", "console/assets/js/main.js", "console/assets/vendor/uPlot.iife.min.js"):  # packaged
        assert httpx.get(f"{compose.gateway_url}/{asset}", timeout=10).status_code == 200, asset
    for service in ("gateway", "worker-cpu", "serving"):  # non-root, as built
        assert compose.exec(service, "id", "-u").strip() == "10001"
    published = docker("port", compose.container_id("gateway"))
    assert published.strip().startswith("8080/tcp -> 127.0.0.1:"), published  # loopback only


ESCAPE = """
import os, socket
def grade(sample, item):
    tried = {"env": sorted(os.environ)}
    for host, port in (("gateway", 8080), ("serving", 8090), ("minio", 9000), ("1.1.1.1", 53)):
        try:
            socket.create_connection((host, port), timeout=3)
            tried[host] = "connected"
        except OSError as err:
            tried[host] = type(err).__name__
    raise RuntimeError(repr(tried))
"""


def test_python_graders_run_in_serving_s_locked_down_container(compose: Compose, client: openai.OpenAI) -> None:
    """Compose gives no service but serving the engine's socket: the gateway sends python graders there, and each runs
    in a container with no network (not even the services' own) and no environment of the stack."""
    graders = client.fine_tuning.alpha.graders
    good = {
        "type": "python",
        "name": "py",
        "source": "def grade(sample, item):\n    return len(sample['output_text'])\n",
    }
    assert graders.run(grader=good, model_sample="four").reward == 4.0
    escaped = graders.run(grader={**good, "source": ESCAPE}, model_sample="x")
    details = str(escaped.metadata.errors.python_grader_runtime_error_details)
    assert escaped.reward == 0 and "connected" not in details, details
    assert "SAGE_" not in details and compose.env["MINIO_ROOT_PASSWORD"] not in details, details
    assert not docker("ps", "-aq", "--filter", "label=sage-ft.managed-by=sage-ft-grader").strip()  # each one removed


def test_the_openai_client_fine_tunes_inside_the_worker_container(
    compose: Compose, client: openai.OpenAI, models: dict[str, str]
) -> None:
    job = fine_tune(client, ALPHA, "alpha")
    done = wait_job(client, job.id)
    assert done.status == "succeeded", done.error
    losses = [e.data["train_loss"] for e in all_events(client, job.id) if e.type == "metrics"]
    assert losses and losses[-1] < losses[0] / 3, losses  # it learned
    keys = compose.python("gateway", STORE)
    name = str(done.fine_tuned_model)
    assert f"{TENANT}models/{name}/manifest.json" in keys
    assert f"{TENANT}models/{name}/attempts/1/adapter/adapter_model.safetensors" in keys  # the attempt's own keys
    assert name in {m.id for m in client.models.list()}
    STATE["alpha"] = name


def test_chat_starts_a_vllm_container_that_answers_as_trained(compose: Compose, client: openai.OpenAI) -> None:
    assert not model_server_containers()
    assert score(client, STATE["alpha"], ALPHA) >= 5  # the first request deployed it
    servers = model_server_containers()
    assert len(servers) == 1, servers
    info = json.loads(docker("inspect", servers[0]))[0]
    assert info["Config"]["Image"] == "sage-ft-standin/vllm:test"
    assert "sage-ft" in info["NetworkSettings"]["Networks"]
    assert not any(info["NetworkSettings"]["Ports"].values())  # reached on the compose network, never published
    STATE["server"] = servers[0]


def test_a_second_fine_tune_is_hot_loaded_onto_the_same_container(compose: Compose, client: openai.OpenAI) -> None:
    done = wait_job(client, fine_tune(client, BETA, "beta").id)
    assert done.status == "succeeded", done.error
    STATE["beta"] = str(done.fine_tuned_model)
    assert score(client, STATE["beta"], BETA) >= 5
    assert score(client, STATE["alpha"], ALPHA) >= 5  # still served, by the same server
    assert model_server_containers() == [STATE["server"]]


def test_a_killed_worker_is_restarted_and_its_job_resumes_from_the_newest_checkpoint(
    compose: Compose, client: openai.OpenAI, models: dict[str, str]
) -> None:
    job = fine_tune(client, ALPHA * 2, "survivor", model=models["wide"], epochs=10, save_steps=4)
    first = wait_for(lambda: client.fine_tuning.jobs.checkpoints.list(job.id).data, 300, "the first checkpoint", 0.5)
    assert client.fine_tuning.jobs.retrieve(job.id).status == "running"
    worker = compose.container_id("worker-cpu")
    restarts = int(docker("inspect", "-f", "{{.RestartCount}}", worker))
    # A crash, as an OOM kill would be: the container's main process dies. (`docker kill` would count as a manual
    # stop, which Docker's restart policy leaves stopped.)
    os.kill(int(docker("inspect", "-f", "{{.State.Pid}}", worker)), signal.SIGKILL)
    uploaded = max(c.step_number for c in client.fine_tuning.jobs.checkpoints.list(job.id).data)
    assert uploaded >= first[0].step_number
    wait_for(
        lambda: int(docker("inspect", "-f", "{{.RestartCount}}", worker)) > restarts,
        120,
        "Docker to restart the worker container",
    )
    done = wait_job(client, job.id, timeout=900)
    assert done.status == "succeeded", done.error
    assert done.model_extra["attempt"] == 2
    messages = [e.message for e in all_events(client, job.id)]
    resumed = [int(m.rsplit(" ", 1)[1]) for m in messages if m.startswith("Resuming from checkpoint at step ")]
    assert resumed and resumed[0] >= uploaded > 0, messages  # the step count did not go back to 0
    manifests = [k for k in compose.python("gateway", STORE) if k.endswith("/manifest.json") and "survivor" in k]
    assert manifests == [f"{TENANT}models/{done.fine_tuned_model}/manifest.json"]  # one published model


def test_restarting_redis_with_a_job_queued_loses_nothing(compose: Compose, client: openai.OpenAI) -> None:
    compose("stop", "worker-cpu")
    job = fine_tune(client, BETA, "queued")
    assert client.fine_tuning.jobs.retrieve(job.id).status == "queued"
    compose("restart", "redis")
    compose("start", "worker-cpu")
    done = wait_job(client, job.id, timeout=900)
    assert done.status == "succeeded", done.error
    STATE["queued"] = str(done.fine_tuned_model)


def test_prometheus_scrapes_every_target_including_the_vllm_container(compose: Compose) -> None:
    def targets() -> Any:
        raw = compose.exec("prometheus", "wget", "-qO-", "http://127.0.0.1:9090/api/v1/targets?state=active")
        active = json.loads(raw)["data"]["activeTargets"]
        ours = [t for t in active if t["labels"]["job"] != "minio"]  # the S3 stand-in has no metrics endpoint
        jobs = {t["labels"]["job"] for t in ours}
        return (
            ours
            if jobs >= {"sage-ft-gateway", "sage-ft-serving", "sage-ft-worker", "vllm"}
            and all(t["health"] == "up" for t in ours)
            else None
        )

    ours = wait_for(targets, 90, "every sage-ft target up", 3.0)
    vllm = [t for t in ours if t["labels"]["job"] == "vllm"]
    assert len(vllm) == 1 and vllm[0]["labels"]["server"].startswith("sage-vllm-")


def test_down_then_up_keeps_jobs_files_and_models_and_the_old_model_still_chats(
    compose: Compose, client: openai.OpenAI
) -> None:
    jobs = {j.id for j in client.fine_tuning.jobs.list(limit=50)}
    files = {f.id for f in client.files.list()}
    compose("down", "--timeout", "30")
    assert not model_server_containers(all_=True)  # serving's shutdown removed the containers it started
    compose.up()
    assert {j.id for j in client.fine_tuning.jobs.list(limit=50)} == jobs
    assert {f.id for f in client.files.list()} == files
    listed = {m.id for m in client.models.list()}
    assert {STATE["alpha"], STATE["beta"], STATE["queued"]} <= listed
    assert score(client, STATE["alpha"], ALPHA) >= 5


def test_down_with_volumes_leaves_nothing_of_the_project(compose: Compose) -> None:
    compose("down", "-v", "--timeout", "30")
    leftovers = project_leftovers(compose.project)
    assert not any(leftovers.values()), leftovers
    assert "sage-ft-models" not in docker("volume", "ls", "-q").split()
