"""The pre-deploy plan's cost: what serving now does before every deploy (read the base config, the adapter's
config and tokenizer from the store, derive context length and rank slot), timed against nothing else.

    .venv/bin/python benchmarks/serving_plan_bench.py [--repeats 50]

Compare it with a cold vLLM start (``serving_bench.py``): the plan must be noise next to it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from sage_ft.storage import LocalStore, publish_model
from sage_ft.training.tiny_model import build_tiny_model
from sage_ft_serving import artifacts
from sage_ft_serving.plan import Limits, make_plan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="plan-bench-"))
    base = build_tiny_model("sage-tiny", models_root=tmp / "models")
    adapter = tmp / "adapter"
    adapter.mkdir()
    config = {"peft_type": "LORA", "r": 16, "lora_alpha": 32, "target_modules": ["q_proj", "v_proj"], "bias": "none"}
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    (adapter / "adapter_model.safetensors").write_bytes(b"0" * 1000)
    shutil.copy(base / "tokenizer.json", adapter / "tokenizer.json")
    store = LocalStore(tmp / "store")
    manifest = publish_model(store, "bench", {"adapter": adapter}, base_model="sage-tiny")
    limits = Limits(
        max_model_len=32768, max_lora_rank=512, gpu=False, kv_cache_gb=1, gpu_memory_gb=0, gpu_memory_utilization=0.9
    )
    times = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        make_plan(True, artifacts.plan_inputs(store, manifest, base), limits)
        times.append(time.perf_counter() - started)
    print(
        f"plan: median {statistics.median(times) * 1000:.2f} ms, max {max(times) * 1000:.2f} ms "
        f"over {args.repeats} (tokenizer.json {(adapter / 'tokenizer.json').stat().st_size / 1e3:.0f} kB)"
    )
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
