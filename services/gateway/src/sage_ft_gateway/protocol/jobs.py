"""``/v1/fine_tuning/jobs``: OpenAI's job, event and checkpoint objects (the request is ``sage_ft.jobs.JobRequest``)."""

from __future__ import annotations

from typing import Any, Literal

from sage_ft_gateway.protocol.params import ApiModel

Status = Literal["validating_files", "queued", "running", "succeeded", "failed", "cancelled", "paused"]


class JobError(ApiModel):
    code: str
    message: str
    param: str | None = None


class Estimate(ApiModel):
    tokens: int
    steps: int
    seconds: float
    peak_memory_bytes: int | None = None
    tokens_exact: bool
    seconds_basis: dict[str, Any]
    memory_basis: dict[str, Any]


class JobEstimate(ApiModel):
    """``dry_run: true``: what the job would cost; no job is created."""

    object: Literal["fine_tuning.job.estimate"]
    estimate: Estimate


class FineTuningJob(ApiModel):
    object: Literal["fine_tuning.job"]
    id: str
    created_at: int
    finished_at: int | None = None
    error: JobError | None = None
    fine_tuned_model: str | None = None
    hyperparameters: dict[str, Any]
    method: dict[str, Any]
    model: str
    organization_id: str
    result_files: list[str]
    seed: int
    status: Status
    trained_tokens: int | None = None
    training_file: str | None = None
    validation_file: str | None = None
    integrations: list[dict[str, Any]] | None = None
    metadata: dict[str, str] | None = None
    estimated_finish: int | None = None
    # extensions
    name: str | None = None
    step: int | None = None
    total_steps: int | None = None
    attempt: int | None = None
    evaluation: dict[str, Any] | None = None
    training: dict[str, Any] | None = None


class JobList(ApiModel):
    object: Literal["list"]
    data: list[FineTuningJob]
    has_more: bool


class JobEvent(ApiModel):
    object: Literal["fine_tuning.job.event"]
    id: str
    created_at: int
    level: str
    message: str
    type: str
    data: dict[str, Any] | None = None


class EventList(ApiModel):
    object: Literal["list"]
    data: list[JobEvent]
    has_more: bool


class Checkpoint(ApiModel):
    object: Literal["fine_tuning.job.checkpoint"]
    id: str
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    step_number: int
    metrics: dict[str, Any]


class CheckpointList(ApiModel):
    object: Literal["list"]
    data: list[Checkpoint]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None
