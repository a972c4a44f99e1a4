"""EleutherAI's lm-evaluation-harness pointed at a served model through the gateway.

The harness runs as a child process (``python -m lm_eval run``) with its OpenAI-compatible chat model type
(``local-chat-completions``) aimed at the gateway's ``/v1/chat/completions``, so what gets evaluated is exactly what
serving serves: a fine-tune's hot-loaded adapter, or a base model. The API key reaches it in its environment
(``OPENAI_API_KEY``), never on its command line. It is an optional extra: ``pip install 'sage-ft-cli[harness]'``.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from sage_ft.settings import child_environment
from sage_ft_cli.client import CLIError

MODEL_TYPE = "local-chat-completions"


def harness_command(
    model: str,
    gateway_url: str,
    tasks: str,
    output: Path,
    *,
    include_path: Path | None = None,
    limit: int | None = None,
    concurrency: int = 4,
) -> list[str]:
    args = [
        f"model={model}",
        f"base_url={gateway_url.rstrip('/')}/v1/chat/completions",
        f"num_concurrent={concurrency}",
        "max_retries=3",
        "tokenized_requests=False",
    ]
    cmd = [
        sys.executable,
        "-m",
        "lm_eval",
        "run",
        "--model",
        MODEL_TYPE,
        "--model_args",
        ",".join(args),
        "--tasks",
        tasks,
        "--apply_chat_template",
        "--output_path",
        str(output),
    ]
    if include_path is not None:
        cmd += ["--include_path", str(include_path)]
    if limit is not None:
        cmd += ["--limit", str(limit)]
    return cmd


def scores(output: Path) -> dict[str, dict[str, float]]:
    """Task -> metric -> value from the newest results file the harness wrote (standard errors left out)."""
    files = sorted(output.rglob("results_*.json"), key=lambda p: p.stat().st_mtime)
    if not files:
        raise CLIError(f"the harness wrote no results under {output}")
    results = json.loads(files[-1].read_text())["results"]
    out: dict[str, dict[str, float]] = {}
    for task, values in results.items():
        for key, value in values.items():
            metric = key.split(",", 1)[0]
            if "_stderr" in metric or not isinstance(value, int | float) or metric == "alias":
                continue
            out.setdefault(task, {})[metric] = float(value)
    return out


def run_harness(
    model: str,
    gateway_url: str,
    api_key: str | None,
    tasks: str,
    *,
    include_path: Path | None = None,
    limit: int | None = None,
    concurrency: int = 4,
    timeout: float = 3600,
) -> dict[str, dict[str, float]]:
    """Run the harness on ``tasks`` against ``model`` as served; its scores by task and metric."""
    if importlib.util.find_spec("lm_eval") is None:
        raise CLIError(
            "--harness runs EleutherAI's lm-evaluation-harness, which is not installed: "
            "pip install 'sage-ft-cli[harness]'"
        )
    with tempfile.TemporaryDirectory(prefix="sage-harness-") as tmp:
        output = Path(tmp)
        cmd = harness_command(
            model, gateway_url, tasks, output, include_path=include_path, limit=limit, concurrency=concurrency
        )
        # no secret of ours reaches the harness; the key it needs is passed, and HF_TOKEN kept for hub datasets
        env = child_environment({"OPENAI_API_KEY": api_key or "sage-ft"}, keep=("HF_TOKEN",))
        try:
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise CLIError(f"the harness did not finish within {timeout:.0f} s") from None
        if done.returncode != 0:
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
            raise CLIError(f"the harness failed on {model} (exit {done.returncode}):\n{tail}")
        return scores(output)
