"""Worker settings (``SAGE_WORKER_*``): the one place the worker reads environment variables.

A GPU worker and a CPU worker are the same code; they differ only here (queues, device count, preset).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from sage_ft.settings import GraderSettings, JobSettings, PathSettings, StorageSettings, child_environment


class WorkerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SAGE_WORKER_", extra="ignore")

    name: str = Field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}",
        description="Lease owner id; must be unique per worker process.",
    )
    queues: str = Field(default="gpu,cpu", description="Comma-separated Celery queues to consume.")
    work_dir: Path | None = Field(default=None, description="Scratch space for jobs; defaults to <home>/worker.")
    nproc: int = Field(default=1, ge=1, le=64, description="Devices per job; above 1 the trainer runs under torchrun.")
    preset: str = Field(default="auto", description="Preset when a job asks for 'auto' (auto: detect the device).")
    poll_seconds: float = Field(default=0.5, gt=0, description="How often the task reads trainer progress and flags.")
    monitor_nice: int = Field(
        default=10,
        ge=0,
        le=19,
        description="CPU niceness of the work done while a trainer runs (progress, heartbeats, checkpoint uploads), "
        "so it yields to training on a busy host; 0: the trainer's priority.",
    )
    publish_retry_seconds: float = Field(
        default=900.0,
        gt=0,
        description="How long a finished training keeps retrying its publish through a storage outage (the lease "
        "is renewed meanwhile) before the attempt is handed back.",
    )
    serving_url: str = Field(
        default="http://127.0.0.1:8090", description="The serving service eval runs ask for answers (internal)."
    )
    eval_concurrency: int = Field(default=8, ge=1, le=256, description="Requests one eval run keeps in flight.")
    eval_request_seconds: float = Field(
        default=600.0, gt=0, description="How long one eval request may take, a model server's cold start included."
    )
    spare_trainer: bool = Field(
        default=True,
        description="Keep one trainer process started and its training libraries imported, ready for the next job "
        "(each job still gets a fresh process; the spare is replaced after use). Single-device workers only.",
    )
    metrics_port: int = Field(default=0, ge=0, le=65535, description="Prometheus port of this worker (0: off).")
    metrics_host: str = Field(default="127.0.0.1", description="Address the metrics endpoint binds to.")
    log_level: str = Field(default="INFO", description="Worker log level.")

    def queue_list(self) -> list[str]:
        return [q.strip() for q in self.queues.split(",") if q.strip()]


class TrainerProcessSettings(BaseSettings):
    """What the trainer child reads from its launcher (torchrun sets RANK for each process)."""

    model_config = SettingsConfigDict(extra="ignore")

    rank: int = Field(default=0, alias="RANK", description="Global rank under torchrun; 0 writes progress.")


def trainer_environment(secrets: dict[str, str] | None = None) -> dict[str, str]:
    """The environment the trainer child starts with: the worker's, minus every secret (it needs no store or queue
    credential), keeping ``HF_TOKEN`` to download a gated base model, plus the job's own ``secrets``."""
    return child_environment(secrets, keep=("HF_TOKEN",))


def join_job_environment(env: dict[str, str]) -> None:
    """A spare trainer taking a job: the job's own secrets join its environment, as ``trainer_environment`` would
    have put them there at start."""
    os.environ.update(env)


class Settings:
    """Every group the worker needs, read once at start-up."""

    def __init__(self) -> None:
        self.worker = WorkerSettings()
        self.jobs = JobSettings()
        self.storage = StorageSettings()
        self.paths = PathSettings()
        self.graders = GraderSettings()

    @property
    def work_dir(self) -> Path:
        return (self.worker.work_dir or self.paths.resolved_home() / "worker").expanduser()
