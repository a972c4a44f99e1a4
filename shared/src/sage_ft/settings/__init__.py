"""Typed settings for the core library: the one place in ``sage_ft`` where environment variables are read.

Every field has a description and a default. Services keep their own settings module and may compose these
groups; nothing else in the package calls ``os.getenv``.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class PathSettings(BaseSettings):
    """Where sage-ft keeps local state on a single machine (the embedded default stack)."""

    model_config = SettingsConfigDict(env_prefix="SAGE_", extra="ignore")

    home: Path = Field(
        default=Path("~/.sage"),
        description="Root of local sage-ft state (models, fine-tune outputs, run files).",
    )
    models_root: Path | None = Field(
        default=None,
        description="Directory of local base models addressed by name; defaults to <home>/models.",
    )
    output_root: Path | None = Field(
        default=None,
        description="Directory where quickstart/CLI fine-tunes write their results; defaults to "
        "<home>/finetune_output.",
    )

    def resolved_home(self) -> Path:
        return self.home.expanduser()

    def resolved_models_root(self) -> Path:
        return (self.models_root or self.resolved_home() / "models").expanduser()

    def resolved_output_root(self) -> Path:
        return (self.output_root or self.resolved_home() / "finetune_output").expanduser()


class TrainingEnvSettings(BaseSettings):
    """Process-wide knobs for training that operators set, not users."""

    model_config = SettingsConfigDict(env_prefix="SAGE_TRAIN_", extra="ignore")

    grader_serving_url: str | None = Field(
        default=None,
        description="Serving's URL, for the model graders of reinforcement fine-tuning (the worker sets it for its "
        "trainer); unset: model graders answer a server error.",
    )
    grader_tenant: str = Field(default="default", description="The tenant model graders ask serving as.")

    allow_remote_code: bool = Field(
        default=False,
        description="Allow configs to set trust_remote_code=True. Off by default: hub code runs arbitrary Python.",
    )
    offline: bool = Field(
        default=False,
        description="Never contact a model hub; resolve models from local paths and caches only.",
    )
    liger_kernels: bool = Field(
        default=True,
        description="On CUDA, train SFT with Liger's fused kernels (RMSNorm, SwiGLU, RoPE, fused linear "
        "cross-entropy) when the liger-kernel package is installed. Never used off CUDA.",
    )
    fused_ops: bool = Field(
        default=True,
        description="Train through sage-ft's fused LoRA linear, RMSNorm and rotary-embedding ops (same arithmetic, "
        "fewer memory passes); RMSNorm and rotary are left to Liger where Liger is on. False: PEFT's and the "
        "model's own.",
    )
    packed_attention: Literal["auto", "varlen", "flex", "flash_attn", "sdpa"] = Field(
        default="auto",
        description="Attention for packed batches. auto: torch's varlen_attn on CUDA in fp16/bf16, else "
        "FlexAttention with a document mask, else flash_attn where installed; per-sequence SDPA off CUDA. A named "
        "one is used, or the job fails with the reason it cannot run here.",
    )


class StorageSettings(BaseSettings):
    """Where artifacts live: a local directory (the embedded default) or any S3 endpoint (MinIO in compose/Helm)."""

    model_config = SettingsConfigDict(env_prefix="SAGE_STORAGE_", extra="ignore")

    backend: Literal["local", "s3"] = Field(default="local", description="Object store implementation.")
    local_root: Path | None = Field(
        default=None, description="Root directory of the local store; defaults to <home>/finetune_output."
    )
    s3_endpoint: str = Field(default="127.0.0.1:9000", description="S3 endpoint host:port (no scheme).")
    s3_secure: bool = Field(default=False, description="Use HTTPS for the S3 endpoint.")
    s3_region: str | None = Field(default=None, description="S3 region, if the endpoint needs one.")
    s3_bucket: str = Field(default="sage-ft", description="Bucket holding files/, jobs/ and models/.")
    s3_access_key: SecretStr | None = Field(default=None, description="S3 access key (secret).")
    s3_secret_key: SecretStr | None = Field(default=None, description="S3 secret key (secret).")
    part_size_mb: int = Field(default=16, ge=5, le=5120, description="Multipart upload part size in MiB.")
    retries: int = Field(default=5, ge=1, le=20, description="Attempts per storage call on transient errors.")
    timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        le=600,
        description="Longest wait for the store's answer (connect, and each read of a response); a frozen store "
        "costs one call at most retries x this.",
    )


class JobSettings(BaseSettings):
    """The job store (Redis) and the queue (Celery on the same Redis by default), shared by gateway and workers."""

    model_config = SettingsConfigDict(env_prefix="SAGE_", extra="ignore")

    redis_url: SecretStr = Field(
        default=SecretStr("redis://127.0.0.1:6379/0"),
        description="Job store Redis URL (secret: it may carry a password).",
    )
    broker_url: SecretStr | None = Field(default=None, description="Celery broker URL; defaults to redis_url.")
    key_prefix: str = Field(default="sage", description="Prefix of every job-store key in Redis.")
    lease_seconds: float = Field(default=60.0, gt=0, description="How long a worker's claim on a job lasts unrenewed.")
    heartbeat_seconds: float = Field(default=10.0, gt=0, description="How often a worker renews its lease.")
    max_attempts: int = Field(default=3, ge=1, le=20, description="Deliveries before a job whose worker died fails.")
    visibility_timeout: float = Field(
        default=300.0, gt=0, description="Broker redelivery of unacknowledged tasks; longer than a lease renewal."
    )
    reconcile_after_seconds: float = Field(
        default=30.0, gt=0, description="A queued job missing from the broker this long after enqueue is re-enqueued."
    )
    finished_retention_seconds: float = Field(
        default=0.0,
        ge=0,
        description="A finished job's record, events and checkpoint list leave Redis this long after it ends "
        "(0: kept for ever). Its model stays in the object store.",
    )
    secrets_key: SecretStr | None = Field(
        default=None,
        description="Fernet key sealing secrets users put in job requests (a W&B api_key); unset: "
        "such requests are refused.",
    )
    train_queue: str = Field(default="gpu", description="Queue the train task goes to.")
    merge_queue: str = Field(default="cpu", description="Queue the merge task goes to.")
    eval_queue: str = Field(default="cpu", description="Queue eval runs go to (they call serving; no GPU needed).")

    def broker(self) -> str:
        return (self.broker_url or self.redis_url).get_secret_value()


class GraderSettings(BaseSettings):
    """Graders (Evals, ``/graders/run``, reinforcement fine-tuning): the python sandbox's limits and model calls."""

    model_config = SettingsConfigDict(env_prefix="SAGE_GRADER_", extra="ignore")

    # the defaults are OpenAI's documented limits for its python grader (2 minutes, 2 GB of memory, 1 GB of disk),
    # so a grader written for OpenAI runs here unchanged
    python_cpu_seconds: float = Field(default=120.0, gt=0, le=600, description="CPU time of one python grader call.")
    python_wall_seconds: float = Field(
        default=120.0, gt=0, le=600, description="Wall-clock time of one python grader call (sleeping counts)."
    )
    python_memory_bytes: int = Field(
        default=2 * 2**30, ge=64 * 2**20, description="Address space of one python grader call."
    )
    python_processes: int = Field(
        default=16, ge=2, le=4096, description="Processes one python grader call may have (a fork bomb stops here)."
    )
    python_output_bytes: int = Field(
        default=2**20, ge=4096, description="Largest output (and largest file) one python grader call may write."
    )
    python_disk_bytes: int = Field(
        default=2**30,
        ge=2**20,
        description="Size of each of the sandbox's /work and /tmp (memory-backed, used as written).",
    )
    python_uid_base: int = Field(
        default=61000, ge=1000, description="Python graders run as uids from here (when started as root)."
    )
    python_uid_count: int = Field(default=1000, ge=1, description="How many uids from python_uid_base are used.")
    python_image_tags: list[str] = Field(
        default=["default", "2025-05-08"],
        description="image_tag values a python grader may name (each runs in the same sandbox runtime here); "
        "any other is a 400.",
    )
    python_sandbox: Literal["local", "serving"] = Field(
        default="local",
        description="Where python graders run: local (this process's sandbox, see python_isolation) or serving (it "
        "runs each call in a locked-down container of its own under its docker launcher; what compose sets).",
    )
    python_isolation: Literal["auto", "namespaces", "confined"] = Field(
        default="auto",
        description="How the local sandbox isolates a call: namespaces (bubblewrap, plus Landlock and seccomp where "
        "the kernel has them), confined (Landlock and seccomp alone: inside a container or pod, where namespaces "
        "cannot be made), or auto (namespaces where bubblewrap runs, else confined).",
    )
    python_sandbox_url: str = Field(
        default="",
        description="With python_sandbox=serving: the service that runs the calls (empty: serving's own URL; Helm "
        "points it at the locked-down graders deployment).",
    )
    python_image: str = Field(
        default="python:3.11.11-slim-bookworm",
        description="Serving's docker sandbox: the image python graders run in (it needs only python3).",
    )
    model_timeout_seconds: float = Field(
        default=120.0, gt=0, description="Longest wait for a model grader's answer from serving."
    )
    model_concurrency: int = Field(
        default=4, ge=1, le=256, description="Model-grader calls in flight at once, per grading process."
    )


# The one deny-list of secret settings. No child process inherits these: not the trainer, not a model server (which
# runs third-party model code), not a process of the CLI's local stack. A child that needs a credential gets it
# passed explicitly (``extra``), never inherited. Names are matched exactly, then by pattern, so a credential added
# later under a usual name (``*_SECRET_KEY``, ``*_TOKEN``, ``*_PASSWORD``) is denied without editing this list.
SECRET_ENV = frozenset(
    {
        "SAGE_STORAGE_S3_ACCESS_KEY",
        "SAGE_STORAGE_S3_SECRET_KEY",
        "SAGE_REDIS_URL",
        "SAGE_BROKER_URL",
        "SAGE_GATEWAY_API_KEYS",
        "SAGE_API_KEY",
        "REDIS_URL",
        "OPENAI_API_KEY",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "MINIO_ROOT_USER",
        "MINIO_ROOT_PASSWORD",
        "MINIO_ACCESS_KEY",
        "MINIO_SECRET_KEY",
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "WANDB_API_KEY",
        "POSTGRES_PASSWORD",
    }
)
_SECRET_NAME = re.compile(r"(SECRET|PASSWORD|PASSWD|TOKEN|API_KEY|ACCESS_KEY|CREDENTIAL|PRIVATE_KEY)", re.I)
_NOT_SECRET = frozenset({"TOKENIZERS_PARALLELISM"})


def is_secret_env(name: str) -> bool:
    return name in SECRET_ENV or (name not in _NOT_SECRET and _SECRET_NAME.search(name) is not None)


def child_environment(extra: dict[str, str] | None = None, *, keep: tuple[str, ...] = ()) -> dict[str, str]:
    """The environment for a child process: this one without any secret setting, plus ``extra``.

    ``keep`` names secrets a child genuinely needs from this environment (the trainer and model servers keep
    ``HF_TOKEN``, to download a gated base model from the hub); everything else it needs comes in ``extra``."""
    env = {k: v for k, v in os.environ.items() if k in keep or not is_secret_env(k)}
    env.update(extra or {})
    return env


@lru_cache(maxsize=1)
def path_settings() -> PathSettings:
    return PathSettings()


def training_env_settings() -> TrainingEnvSettings:
    return TrainingEnvSettings()


def storage_settings() -> StorageSettings:
    return StorageSettings()


def job_settings() -> JobSettings:
    return JobSettings()


__all__ = [
    "SECRET_ENV",
    "JobSettings",
    "PathSettings",
    "StorageSettings",
    "TrainingEnvSettings",
    "child_environment",
    "is_secret_env",
    "job_settings",
    "path_settings",
    "storage_settings",
    "training_env_settings",
]
