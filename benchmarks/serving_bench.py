"""Serving measured side by side: cold chat per engine, and hot-loading an adapter against starting a server.

    .venv/bin/python benchmarks/serving_bench.py [--repeats 2]

It trains two small adapters on the offline tiny model, publishes them (and a merged copy of one) to a local object
store, and starts the real serving service (``sage-ft-serving``) with vLLM's CPU build and with ``transformers
serve``. Each measure is taken ``--repeats`` times from scratch (cache emptied, no server running):

1. Cold chat: a streamed chat request for an undeployed model until its first content token arrives
   (fetch + verify, engine start, adapter load, first token), per engine.
2. Adapter load at runtime: deploying a second fine-tune onto the running vLLM server, against starting a fresh
   vLLM server for it (the same deploy on an idle machine). Reported as a ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from stack import Proc, free_port, qa_lines, wait_for

RECORDS = [{"question": f"What is the code word number {i}?", "answer": f"word {i}"} for i in range(8)]


def train_and_publish(home: Path, store_root: Path) -> None:
    from sage_ft.config import LoRAConfig, TrainingConfig
    from sage_ft.storage.local import LocalStore
    from sage_ft.storage.manifest import publish_model
    from sage_ft.training.merge import merge_adapter
    from sage_ft.training.trainer import LoRATrainer

    data = home / "qa.jsonl"
    data.write_bytes(qa_lines(RECORDS))
    store = LocalStore(store_root)
    for name in ("alpha", "beta"):
        cfg = TrainingConfig(
            model_name="sage-tiny",
            data_path=str(data),
            output_dir=str(home / f"out-{name}"),
            num_train_epochs=2,
            max_length=64,
            report_to=[],
            lora=LoRAConfig(r=16, lora_alpha=32),
            seed=1 if name == "alpha" else 2,
        )
        adapter = LoRATrainer(cfg).train().adapter_dir
        assert adapter is not None
        parts = {"adapter": adapter}
        if name == "alpha":
            parts["merged"] = Path(merge_adapter(adapter, home / "merged-alpha"))
        publish_model(store, name, parts, base_model="sage-tiny")


class Serving:
    def __init__(self, base: Path, env: dict[str, str], engine: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cache = base / f"cache-{engine}"
        self.env = {
            **env,
            "SAGE_SERVING_PORT": str(self.port),
            "SAGE_SERVING_ENGINE": engine,
            "SAGE_SERVING_CACHE_DIR": str(self.cache),
            "SAGE_SERVING_LOG_DIR": str(base / "servers"),
        }
        self.proc = Proc(f"serving-{engine}", [str(Path(sys.executable).parent / "sage-ft-serving")], self.env, base)
        wait_for(lambda: self.proc.check_alive() and httpx.get(f"{self.url}/healthz").status_code == 200, 60, "serving")

    def reset(self) -> None:
        """No deployment, no server, empty cache: the next request is cold."""
        for dep in httpx.get(f"{self.url}/v1/deployments", timeout=30).json()["data"]:
            httpx.delete(f"{self.url}/v1/deployments/{dep['id']}", timeout=120)
        shutil.rmtree(self.cache, ignore_errors=True)

    def first_token(self, model: str) -> float:
        body = {
            "model": model,
            "messages": [{"role": "user", "content": RECORDS[0]["question"]}],
            "max_tokens": 8,
            "temperature": 0,
            "stream": True,
        }
        t0 = time.perf_counter()
        with httpx.stream("POST", f"{self.url}/v1/chat/completions", json=body, timeout=900) as resp:
            assert resp.status_code == 200, resp.read()
            for line in resp.iter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    chunk = json.loads(line[6:])
                    if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                        elapsed = time.perf_counter() - t0
                        break
        return elapsed

    def deploy(self, model: str) -> float:
        t0 = time.perf_counter()
        resp = httpx.post(f"{self.url}/v1/deployments", json={"model": model, "wait": True}, timeout=900).json()
        assert resp["state"] == "ready", resp
        return time.perf_counter() - t0

    def stop(self) -> None:
        self.proc.stop(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    from sage_ft.training.tiny_model import build_tiny_model

    base = Path(tempfile.mkdtemp(prefix="sage-serving-bench-"))
    home = base / "home"
    os.environ["SAGE_HOME"] = str(home)
    build_tiny_model("sage-tiny")
    store_root = base / "store"
    train_and_publish(home, store_root)
    env = {
        **os.environ,
        "SAGE_HOME": str(home),
        "SAGE_STORAGE_BACKEND": "local",
        "SAGE_STORAGE_LOCAL_ROOT": str(store_root),
        "HF_HUB_OFFLINE": "1",
        "SAGE_SERVING_MAX_MODEL_LEN": "256",
    }

    results: dict[str, list[float]] = {
        "vllm cold chat": [],
        "transformers cold chat": [],
        "vllm fresh start": [],
        "vllm adapter hot-load": [],
    }
    for engine in ("vllm", "transformers"):
        serving = Serving(base, env, engine)
        try:
            for i in range(args.repeats):
                serving.reset()
                cold = serving.first_token("alpha")
                results[f"{engine} cold chat"].append(cold)
                line = f"{engine} repeat {i}: cold chat to first token {cold:.2f}s"
                if engine == "vllm":
                    hot = serving.deploy("beta")  # onto the running server: fetch + load_lora_adapter
                    serving.reset()
                    fresh = serving.deploy("beta")  # the same model with no server running
                    results["vllm adapter hot-load"].append(hot)
                    results["vllm fresh start"].append(fresh)
                    line += f"; beta hot-load {hot:.2f}s vs fresh server {fresh:.2f}s (x{fresh / hot:.1f})"
                print(line, flush=True)
        finally:
            serving.stop()

    print("\n## results (medians)")
    for name, values in results.items():
        print(f"{name}: {statistics.median(values):.2f}s  (runs: {', '.join(f'{v:.2f}' for v in values)})")
    ratios = [f / h for f, h in zip(results["vllm fresh start"], results["vllm adapter hot-load"], strict=True)]
    print(f"fresh vLLM start / runtime adapter load: x{statistics.median(ratios):.1f}")


if __name__ == "__main__":
    main()
