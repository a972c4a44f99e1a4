"""The job record and its states, as the job store keeps them.

The record kept in Redis (``Job``) carries more than the API shows (tenant, lease, attempt, flags). What a caller
sees of a job or a file is the gateway's (``protocol.jobs.FineTuningJob.from_job``, ``protocol.files.FileObject``).
"""

from __future__ import annotations

import re
import secrets
import time
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class JobStatus(StrEnum):
    VALIDATING_FILES = "validating_files"
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})
ACTIVE = frozenset({JobStatus.VALIDATING_FILES, JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.PAUSED})


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def now() -> float:
    return time.time()


class JobError(BaseModel):
    code: str
    message: str
    param: str | None = None


class Job(BaseModel):
    """One fine-tuning job as the job store keeps it (the source of truth, not Celery's result backend)."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=())

    id: str
    tenant: str
    status: JobStatus = JobStatus.QUEUED
    created_at: float = Field(default_factory=now)
    started_at: float | None = None
    finished_at: float | None = None
    model: str
    training_file: str | None = None
    validation_file: str | None = None
    suffix: str | None = None
    seed: int = 42
    metadata: dict[str, str] | None = None
    integrations: list[dict[str, Any]] = Field(default_factory=list)
    spec: dict[str, Any] = Field(default_factory=dict, description="The validated request (sage_ft.jobs.spec).")
    hyperparameters: dict[str, Any] = Field(
        default_factory=dict,
        description="n_epochs etc. as shown: the request's until a worker resolves the config, then the config's.",
    )
    config: dict[str, Any] | None = Field(
        default=None,
        description="The resolved TrainingConfig (TrainingConfig.portable()): set once, by the worker that first "
        "takes the job (where the preset's hardware is known); every attempt trains with exactly this.",
    )
    name: str | None = Field(default=None, description="Alias of the fine-tuned model (e.g. 'code').")
    base_model: str | None = Field(
        default=None,
        description="The base model trained on, when ``model`` names a fine-tune (None: ``model`` is the base).",
    )
    parent_model: str | None = Field(
        default=None, description="The fine-tuned model or checkpoint whose adapter training starts from."
    )
    fine_tuned_model: str | None = None
    evaluation: dict[str, Any] | None = Field(
        default=None,
        description="The fine-tune vs its base (DPO, RFT: its parent) on held-out records (a summary, with eval run "
        "ids).",
    )
    error: JobError | None = None
    trained_tokens: int | None = None
    train_seconds: float | None = Field(default=None, description="The trainer's own runtime (estimates use it).")
    training: dict[str, Any] | None = Field(
        default=None,
        description="How the trainer laid out the batches, from its start: packing (and why), the packed-attention "
        "backend, records and rows per epoch (sage_ft.training.LoRATrainer.setup).",
    )
    step: int = 0
    total_steps: int = 0
    estimated_finish: float | None = None
    # delivery bookkeeping
    attempt: int = 0
    max_attempts: int = 3
    lease_owner: str | None = None
    lease_expires_at: float = 0.0
    enqueued_at: float | None = None
    cancel_requested: bool = False
    pause_requested: bool = False
    stop_requested_at: float | None = None  # when a cancel or pause of the running attempt was asked for
    version: int = 0

    @property
    def root_model(self) -> str:
        """The base model under every adapter of this job's lineage."""
        return self.base_model or self.model

    @property
    def method_type(self) -> str:
        return str((self.spec.get("method") or {}).get("type") or "supervised")

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def lease_live(self, at: float | None = None) -> bool:
        return self.lease_owner is not None and self.lease_expires_at > (at or now())


class FileRecord(BaseModel):
    """An uploaded dataset: metadata in Redis, bytes in the object store at ``files/<id>``."""

    id: str
    tenant: str
    filename: str
    bytes: int
    purpose: str = "fine-tune"
    created_at: float = Field(default_factory=now)
    status: Literal["processed", "error"] = "processed"
    status_details: str | None = None
    report: dict[str, Any] = Field(default_factory=dict)


class JobEventRecord(BaseModel):
    """One entry of a job's event log. ``seq`` is its 1-based position in the log: the stable cursor that lists
    and streams resume from. What a caller sees of it is the gateway's (``protocol.jobs.JobEvent.from_record``)."""

    seq: int
    created_at: float = 0.0
    level: str = "info"
    message: str = ""
    type: str = "message"
    data: dict[str, Any] = Field(default_factory=dict)


class CheckpointRecord(BaseModel):
    """A checkpoint a worker uploaded: the step, the model name it can be served as, its metrics and size."""

    job_id: str
    step: int
    model: str
    created_at: float = Field(default_factory=now)
    metrics: dict[str, Any] = Field(default_factory=dict)
    bytes: int = 0

    @model_validator(mode="before")
    @classmethod
    def _stored_as_wire_form(cls, raw: Any) -> Any:
        """Checkpoints recorded before this record existed were stored in OpenAI's shape; they read the same."""
        if isinstance(raw, dict) and "fine_tuned_model_checkpoint" in raw:
            return {
                "job_id": raw["fine_tuning_job_id"],
                "step": raw["step_number"],
                "model": raw["fine_tuned_model_checkpoint"],
                "created_at": raw.get("created_at", 0),
                "metrics": raw.get("metrics") or {},
                "bytes": raw.get("bytes", 0),
            }
        return raw


def fine_tuned_model_name(base_model: str, suffix: str | None, job_id: str) -> str:
    """``ft:<base>:<suffix>:<job hex>``, valid as an object-store model name (no slashes)."""
    base = re.sub(r"[^A-Za-z0-9._-]", "-", base_model.rsplit("/", 1)[-1])[:40] or "model"
    return f"ft:{base}:{suffix or 'sage'}:{job_id.split('-', 1)[-1]}"
