"""The `sage-ft` CLI as a test drives it: an isolated SAGE_HOME, its own gateway port, no inherited settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

SAGE = Path(sys.executable).parent / "sage-ft"


class CLI:
    def __init__(self, home: Path, port: int) -> None:
        self.home = home
        self.port = port
        drop = (
            "REDIS_URL",
            "SAGE_REDIS_URL",
            "SAGE_CHAT_",
            "SAGE_FT_",
            "SAGE_STORAGE_",
            "SAGE_GATEWAY_",
            "SAGE_SERVING_",
            "SAGE_WORKER_",
            "OPENAI_",
        )
        base = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
        self.env = {
            **base,
            "SAGE_HOME": str(home),
            "SAGE_FT_GATEWAY_URL": f"http://127.0.0.1:{port}",
            "SAGE_TRAIN_OFFLINE": "1",
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "SAGE_SERVING_MAX_MODEL_LEN": "512",
            "COLUMNS": "200",
        }

    def run(
        self, *args: str, timeout: float = 600, stdin: str | None = None, **env: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(SAGE), *args],
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=timeout,
            input=stdin if stdin is not None else "",
        )

    def ok(self, *args: str, **env: str) -> str:
        out = self.run(*args, **env)
        assert out.returncode == 0, f"sage-ft {' '.join(args)} exited {out.returncode}:\n{out.stdout}\n{out.stderr}"
        return out.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.ok("--json", *args))
