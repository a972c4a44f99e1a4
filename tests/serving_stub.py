"""A stand-in for model servers, for serving's in-process tests: the "engine" is a small HTTP server on a thread that
answers like vLLM's OpenAI server (health, adapter loading, chat, streamed chat). The engine is outside what those
tests test (serving's state machine and proxy); the real vLLM and transformers servers are in tests/integration.

Run as a script, it starts the real serving service with this launcher (``serving_stub.py``), for tests that need a
serving *process* (SIGTERM handling) without a model.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from sage_ft_serving.launchers import Launcher, ServerHandle, ServerSpec

SLOW_CHUNKS, SLOW_PAUSE_S = 60, 0.25  # a "slow" stream lasts 15 s

BASE = {
    "model_type": "qwen2",
    "max_position_embeddings": 1024,
    "hidden_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "vocab_size": 2048,
    "torch_dtype": "float32",
}


class EngineStub(BaseHTTPRequestHandler):
    """Answers like vLLM's OpenAI server: health, adapter loading, chat (echoing which model it was asked for)."""

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: dict[str, Any]) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self) -> None:
        self._send(200, {})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        server: Any = self.server
        if self.path == "/v1/load_lora_adapter":
            server.loaded.append(body["lora_name"])
            return self._send(200, {})
        if self.path == "/v1/unload_lora_adapter":
            server.loaded.remove(body["lora_name"])
            return self._send(200, {})
        if body.get("stream"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            pieces = ["tick "] * SLOW_CHUNKS if body.get("slow") else ["served ", "by ", body["model"]]
            for piece in pieces:
                chunk = {
                    "object": "chat.completion.chunk",
                    "model": body["model"],
                    "choices": [{"index": 0, "delta": {"content": piece}}],
                }
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.flush()
                if body.get("slow"):
                    time.sleep(SLOW_PAUSE_S)
            self.wfile.write(b"data: [DONE]\n\n")
            return None
        self._send(
            200,
            {
                "id": "x",
                "object": "chat.completion",
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": f"served by {body['model']}"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 3},
            },
        )


class StubLauncher(Launcher):
    kind = "stub"

    def __init__(self, fail_with: str | None = None) -> None:
        self.specs: list[ServerSpec] = []
        self.servers: dict[str, ThreadingHTTPServer] = {}
        self.fail_with = fail_with

    def start(self, spec: ServerSpec) -> ServerHandle:
        self.specs.append(spec)
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), EngineStub)
        httpd.loaded = []  # type: ignore[attr-defined]
        if self.fail_with is None:
            threading.Thread(target=httpd.serve_forever, daemon=True).start()
        self.servers[spec.name] = httpd
        return ServerHandle(spec.name, f"http://127.0.0.1:{httpd.server_address[1]}", ref=httpd)

    def stop(self, handle: ServerHandle) -> None:
        httpd = self.servers.pop(handle.name, None)
        if httpd is not None and self.fail_with is None:
            httpd.shutdown()
        if httpd is not None:
            httpd.server_close()

    def alive(self, handle: ServerHandle) -> bool:
        return handle.name in self.servers and self.fail_with is None

    def describe_failure(self, handle: ServerHandle) -> str:
        return self.fail_with or ""


def adapter_dir(root: Path, rank: int, **extra: Any) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    config = {
        "peft_type": "LORA",
        "r": rank,
        "lora_alpha": 2 * rank,
        "target_modules": ["q_proj", "v_proj"],
        "bias": "none",
        "base_model_name_or_path": "stub-base",
        **extra,
    }
    (root / "adapter_config.json").write_text(json.dumps(config))
    (root / "adapter_model.safetensors").write_bytes(b"{}" + bytes(rank))
    return root


if __name__ == "__main__":
    from sage_ft_serving.__main__ import serve
    from sage_ft_serving.settings import Settings

    serve(Settings(), launcher=StubLauncher(), enqueue_merge=lambda tenant, model: None)
