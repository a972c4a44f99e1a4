"""``transformers serve``: the lightest fallback, one server per merged model (it cannot hot-load adapters)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx

from sage_ft_serving.artifacts import Artifact
from sage_ft_serving.engines.base import Engine, server_name
from sage_ft_serving.launchers.base import ServerHandle, ServerSpec
from sage_ft_serving.plan import Plan
from sage_ft_serving.settings import Settings


class TransformersEngine(Engine):
    name = "transformers"
    part = "merged"
    hot_loads = False

    def __init__(self, settings: Settings, gpu: bool) -> None:
        self.settings = settings
        self.gpu = gpu

    def server_key(self, artifact: Artifact, base_ref: str, plan: Plan) -> str:
        return f"transformers:{artifact.manifest.name}:{artifact.digest[:12]}"

    def spec(self, artifact: Artifact, base_ref: str, path_for_server: Callable[[Path], str], plan: Plan) -> ServerSpec:
        cfg = self.settings.serving
        # the served model is pinned: requests must name exactly this path (the proxy rewrites them to it)
        args = [
            "serve",
            path_for_server(artifact.path),
            "--host",
            "{host}",
            "--port",
            "{port}",
            "--device",
            "auto" if self.gpu else "cpu",
            "--log-level",
            "warning",
        ]
        args.append("--trust-remote-code" if cfg.trust_remote_code else "--no-trust-remote-code")
        name = server_name(
            "transformers", self.server_key(artifact, base_ref, plan), artifact.manifest.alias or "model"
        )
        return ServerSpec(
            name=name,
            engine=self.name,
            module="transformers.cli.transformers",
            args=args,
            python=cfg.transformers_python,
            env={"HF_HUB_OFFLINE": "1"},
            gpus=cfg.gpus_per_server if self.gpu else 0,
            labels={"sage-ft.engine": self.name},
        )

    async def attach(
        self, client: httpx.AsyncClient, server: ServerHandle, artifact: Artifact, server_path: str, plan: Plan
    ) -> str:
        return server_path
