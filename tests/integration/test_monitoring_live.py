"""A real Prometheus scrapes the real local stack (gateway, worker, serving with vLLM's CPU build) while two tiny
fine-tunes and chats run. Then every PromQL expression of the Grafana dashboards must return data over that window,
and every alert expression must parse and evaluate (and the rule groups load healthy).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from stack import LEARN, Proc, Stack, free_port, qa_lines, wait_for, wait_job

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"


@pytest.fixture(scope="module")
def stack(make_stack: Any) -> Stack:
    st: Stack = make_stack(
        SAGE_WORKER_METRICS_PORT=str(free_port()),
        SAGE_SERVING_VLLM_PYTHON=str(VLLM_PYTHON),
        SAGE_SERVING_MAX_MODEL_LEN="256",
    )
    st.start_gateway()
    st.start_worker("w1")
    st.start_serving()
    return st


@pytest.fixture(scope="module")
def prometheus(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Any:
    base = tmp_path_factory.mktemp("prometheus")
    targets = {
        "sage-ft-gateway": stack.port,
        "sage-ft-serving": stack.serving_port,
        "sage-ft-worker": int(stack.env["SAGE_WORKER_METRICS_PORT"]),
    }
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ROOT / "deploy/prometheus/alerts.yml")],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]} for job, port in targets.items()
        ],
    }
    (base / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    proc = Proc(
        "prometheus",
        [
            "prometheus",
            f"--config.file={base / 'prometheus.yml'}",
            f"--storage.tsdb.path={base / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        {"PATH": "/usr/bin:/bin"},
        base,
    )
    url = f"http://127.0.0.1:{port}"
    wait_for(
        lambda: proc.check_alive() and httpx.get(f"{url}/-/ready", timeout=2).status_code == 200, 60, "prometheus ready"
    )
    yield url
    proc.stop()


def query(prom: str, expr: str, start: float) -> list[Any]:
    resp = httpx.get(
        f"{prom}/api/v1/query_range", params={"query": expr, "start": start, "end": time.time(), "step": 1}, timeout=30
    ).json()
    assert resp["status"] == "success", (expr, resp)
    return list(resp["data"]["result"])


def test_every_dashboard_query_returns_data_and_every_alert_evaluates(
    stack: Stack, prometheus: str, qa_records: list[dict]
) -> None:
    start = time.time()
    wait_for(
        lambda: all(
            t["health"] == "up" for t in httpx.get(f"{prometheus}/api/v1/targets").json()["data"]["activeTargets"]
        ),
        60,
        "all targets up",
    )
    client = openai.OpenAI(base_url=f"{stack.url}/v1", api_key="x", max_retries=0, timeout=600)
    uploaded = client.files.create(file=("qa.jsonl", qa_lines(qa_records[:4])), purpose="fine-tune")
    for name in ("mon-a", "mon-b"):  # two of everything, so rates and histograms have an increase
        job = client.fine_tuning.jobs.create(
            model="sage-tiny",
            training_file=uploaded.id,
            suffix=name,
            hyperparameters={"n_epochs": 12, "batch_size": 2},
            extra_body={**LEARN, "name": name, "save_steps": 8},
        )
        assert wait_job(client, job.id, timeout=300).status == "succeeded"
        reply = client.chat.completions.create(
            model=name, messages=[{"role": "user", "content": "hi"}], max_tokens=4, stream=name == "mon-b"
        )
        if name == "mon-b":
            assert list(reply)  # type: ignore[arg-type]
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.retrieve("ftjob-missing")
    time.sleep(4)  # a few more scrapes after the last request

    checked = 0
    for path in sorted((ROOT / "deploy/grafana/dashboards").glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            if "GPU" in panel["title"]:
                continue  # reported only by trainers on a GPU; this machine has none
            for target in panel["targets"]:
                result = query(prometheus, target["expr"], start)
                assert result, f"{path.name} / {panel['title']}: no data for {target['expr']}"
                checked += 1
    assert checked >= 20

    rules = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())["groups"][0]["rules"]
    for rule in rules:
        resp = httpx.get(f"{prometheus}/api/v1/query", params={"query": rule["expr"]}, timeout=30).json()
        assert resp["status"] == "success", (rule["alert"], resp)
    loaded = httpx.get(f"{prometheus}/api/v1/rules", timeout=30).json()["data"]["groups"]
    assert {r["name"] for g in loaded for r in g["rules"]} == {r["alert"] for r in rules}
    assert all(r["health"] == "ok" for g in loaded for r in g["rules"]), loaded
    assert subprocess.run(["promtool", "--version"], capture_output=True).returncode == 0
