"""Serving settings (``SAGE_SERVING_*``): the one place the serving service reads environment variables."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from sage_ft.settings import GraderSettings, JobSettings, PathSettings, StorageSettings, child_environment


def _default_vllm_python() -> Path:
    """``.venv-vllm/bin/python`` beside the virtualenv this service runs from (what ``make install`` builds)."""
    return Path(sys.prefix).parent / ".venv-vllm" / "bin" / "python"


class ServingSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SAGE_SERVING_", extra="ignore")

    host: str = Field(default="127.0.0.1", description="Bind address (internal: only the gateway is public).")
    port: int = Field(default=8090, ge=1, le=65535, description="Bind port.")
    engine: Literal["auto", "vllm", "transformers"] = Field(
        default="auto", description="Default engine: auto picks vllm when vLLM is installed (GPU or CPU build)."
    )
    launcher: Literal["process", "docker", "kubernetes"] = Field(
        default="process", description="How model servers are started."
    )
    vllm_python: Path = Field(
        default_factory=_default_vllm_python, description="Interpreter of the virtualenv holding vLLM (process)."
    )
    transformers_python: Path = Field(
        default_factory=lambda: Path(sys.executable),
        description="Interpreter with transformers[serving] for the fallback engine.",
    )
    cache_dir: Path | None = Field(default=None, description="Verified artifact cache; default <home>/serving/cache.")
    log_dir: Path | None = Field(default=None, description="Model-server log files; defaults to <home>/serving/logs.")
    bind_host: str = Field(default="127.0.0.1", description="Address process-launched model servers listen on.")
    idle_timeout_seconds: float = Field(default=900.0, gt=0, description="Stop a model server idle this long.")
    reap_interval_seconds: float = Field(default=5.0, gt=0, description="How often idle servers are looked for.")
    start_timeout_seconds: float = Field(default=600.0, gt=0, description="Longest wait for a server to be healthy.")
    auto_deploy: bool = Field(default=True, description="A request for an undeployed model deploys it.")
    request_wait_seconds: float = Field(
        default=600.0, ge=0, description="How long a request waits for its model to become ready (0: answer 503)."
    )
    merge_timeout_seconds: float = Field(default=900.0, gt=0, description="Longest wait for an automatic merge.")
    max_loras: int = Field(default=4, ge=1, le=256, description="vLLM --max-loras: adapters active per batch.")
    max_lora_rank: int = Field(
        default=512,
        ge=1,
        le=512,
        description="Largest adapter rank hot-loaded; a server's --max-lora-rank is the smallest vLLM size that holds "
        "its adapters, and an adapter above this is served merged.",
    )
    max_model_len: int = Field(
        default=32768,
        ge=64,
        description="Ceiling on a server's context length; each server gets min(this, what the model allows, what "
        "fits the KV cache).",
    )
    gpu_memory_gb: float = Field(
        default=0.0,
        ge=0,
        description="GPU memory per model server in GiB, for the pre-deploy fit check (0: not checked).",
    )
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1, description="vLLM --gpu-memory-utilization.")
    vllm_cpu_kv_cache_gb: int = Field(default=1, ge=1, description="KV cache size for vLLM's CPU build, in GiB.")
    vllm_extra_args: str = Field(default="", description="Extra command-line arguments for vLLM (space-separated).")
    gpus_per_server: int = Field(default=1, ge=0, description="GPUs requested per model server (docker, kubernetes).")
    trust_remote_code: bool = Field(default=False, description="Let engines run model code from the hub. Off.")
    grader_sandbox: Literal["auto", "process", "docker"] = Field(
        default="auto",
        description="Where python graders sent to serving run: docker (a locked-down container each call), process "
        "(bubblewrap here); auto: docker under the docker launcher, else process.",
    )
    # docker launcher
    docker_url: str = Field(default="unix:///var/run/docker.sock", description="Docker Engine API endpoint.")
    docker_image: str = Field(default="vllm/vllm-openai:v0.11.0", description="Pinned vLLM image (docker, k8s).")
    docker_network: str | None = Field(default=None, description="Network the model containers join.")
    docker_models_volume: str = Field(default="sage-models", description="Volume with base models and the cache.")
    docker_models_mount: str = Field(default="/models", description="Where that volume is mounted in containers.")
    # kubernetes launcher
    k8s_namespace: str = Field(default="default", description="Namespace of model-server Deployments.")
    k8s_owner_name: str | None = Field(default=None, description="Owner (the serving Deployment) for cleanup.")
    k8s_owner_uid: str | None = Field(default=None, description="UID of that owner.")
    k8s_models_pvc: str = Field(default="sage-models", description="PVC with base models and the cache.")
    k8s_cpu: str = Field(default="4", description="CPU request of a model server pod.")
    k8s_memory: str = Field(default="16Gi", description="Memory request of a model server pod.")
    shutdown_grace_seconds: float = Field(
        default=10.0,
        gt=0,
        description="On SIGTERM, how long proxied chat streams may run on before they are cut.",
    )
    log_level: str = Field(default="info", description="Log level.")


def server_environment(extra: dict[str, str]) -> dict[str, str]:
    """The environment a process-launched model server starts with: serving's own without any secret (model servers
    run third-party model code), plus the engine's ``extra``; ``HF_TOKEN`` stays, to fetch a gated base model."""
    return child_environment(extra, keep=("HF_TOKEN",))


class Settings:
    """Every settings group serving uses, read once when the app is built."""

    def __init__(
        self,
        serving: ServingSettings | None = None,
        storage: StorageSettings | None = None,
        paths: PathSettings | None = None,
        jobs: JobSettings | None = None,
        graders: GraderSettings | None = None,
    ) -> None:
        self.serving = serving or ServingSettings()
        self.storage = storage or StorageSettings()
        self.paths = paths or PathSettings()
        self.jobs = jobs or JobSettings()
        self.graders = graders or GraderSettings()

    @property
    def cache_dir(self) -> Path:
        return (self.serving.cache_dir or self.paths.resolved_home() / "serving" / "cache").expanduser()

    @property
    def log_dir(self) -> Path:
        return (self.serving.log_dir or self.paths.resolved_home() / "serving" / "logs").expanduser()
