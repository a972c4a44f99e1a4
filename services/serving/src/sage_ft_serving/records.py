"""The two records serving keeps: a model ``Server`` (one engine process/container/pod) and a ``Deployment`` (one
published model made servable for one tenant, on a server). Both render themselves for the API."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Literal

from sage_ft.api_errors import ApiError
from sage_ft.protocol.serving import DeploymentError, DeploymentObject, ModelServer
from sage_ft_serving.artifacts import Artifact
from sage_ft_serving.launchers import ServerHandle
from sage_ft_serving.plan import Plan

DeploymentState = Literal["deploying", "ready", "failed", "stopped"]
STATES: tuple[DeploymentState, ...] = ("deploying", "ready", "failed", "stopped")
Key = tuple[str, str]  # (tenant, model)
# The HTTP status of a failed deployment, by its one code per cause: an artifact that cannot be served (its bytes,
# its format, its merge) is a 422 whichever path found it; an engine that did not start, or anything else, a 502.
FAILURE_STATUS = {"checksum_mismatch": 422, "unsafe_artifact": 422, "merge_failed": 422}


class EngineStartError(RuntimeError):
    """A model server died, or was not healthy in time, while starting."""


@dataclass
class Server:
    key: str
    engine: str
    handle: ServerHandle
    plan: Plan  # the arguments it was started with (its context length and LoRA rank slot)
    hot_loads: bool = False  # adapters are loaded onto it at runtime (vLLM with --enable-lora)
    state: Literal["starting", "ready", "stopped"] = "starting"
    started_at: float = field(default_factory=time.time)
    ready_at: float | None = None
    last_used: float = field(default_factory=time.monotonic)
    models: dict[Key, str] = field(default_factory=dict)  # (tenant, model) -> engine model id
    attached: dict[Key, Artifact] = field(default_factory=dict)  # what to load again after a restart
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    metrics_text: str = ""

    def to_api(self) -> ModelServer:
        return ModelServer(
            name=self.handle.name,
            engine=self.engine,
            state=self.state,
            endpoint=self.handle.url,
            pid=self.handle.pid,
            models=len(self.models),
            started_at=int(self.started_at),
            max_model_len=self.plan.max_model_len,
            max_lora_rank=self.plan.lora_rank,
            log=str(self.handle.log_path) if self.handle.log_path else None,
        )


@dataclass
class Endpoint:
    """Where requests for one model go: its server's URL and the model id there. Using it keeps the server from
    being stopped as idle."""

    url: str
    model: str  # the engine's id for it: an adapter name (vLLM), a path (transformers serve)
    engine: str
    server: Server

    def touch(self) -> None:
        self.server.last_used = time.monotonic()


@dataclass
class Deployment:
    tenant: str
    model: str  # the fine-tuned model's canonical name
    engine: str
    plan: Plan
    alias: str | None = None
    state: DeploymentState = "deploying"
    digest: str | None = None
    server_key: str | None = None
    engine_model: str | None = None
    error: str | None = None
    error_code: str | None = None
    created_at: float = field(default_factory=time.time)
    ready_at: float | None = None
    cold_start_seconds: float | None = None
    task: asyncio.Task[None] | None = None

    def fail(self, code: str, message: str) -> None:
        self.state, self.error_code, self.error = "failed", code, message

    def failure(self) -> ApiError:
        """A failed deployment as the error a request (a deploy that waited, a chat) answers with."""
        status = FAILURE_STATUS.get(self.error_code or "", 502)
        return ApiError(status, self.error or "deployment failed", param="model", code=self.error_code)

    def to_api(self, server: Server | None, restarting: bool = False) -> DeploymentObject:
        """As the API shows it; while its server restarts (a larger LoRA slot) it reads as deploying."""
        state: DeploymentState = "deploying" if restarting and self.state == "ready" else self.state
        healthy = server is not None and server.state == "ready" and state == "ready"
        serving = self.plan.to_api()
        if server is not None:  # the server's own figures: a later, larger adapter may have raised its rank
            serving.max_model_len, serving.max_lora_rank = server.plan.max_model_len, server.plan.lora_rank
        return DeploymentObject(
            object="deployment",
            id=self.model,
            model=self.model,
            alias=self.alias,
            state=state,
            engine=self.engine,
            endpoint=server.handle.url if server else None,
            health="healthy" if healthy else ("unhealthy" if self.state == "failed" else "unknown"),
            serving=serving,
            server=server.to_api() if server else None,
            created_at=int(self.created_at),
            ready_at=int(self.ready_at) if self.ready_at else None,
            cold_start_seconds=self.cold_start_seconds,
            error=DeploymentError(code=self.error_code, message=self.error) if self.error else None,
        )
