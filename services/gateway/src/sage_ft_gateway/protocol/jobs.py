"""``/v1/fine_tuning/jobs``: OpenAI's job, event and checkpoint objects (the request is ``sage_ft.jobs.JobRequest``).

``FineTuningJob.from_job`` is the one place that decides what a caller sees of a job; its status and error are the
domain's own types (``sage_ft.jobs.model``), not copies.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from sage_ft.jobs.model import CheckpointRecord, Job, JobError, JobEventRecord, JobStatus
from sage_ft_gateway.protocol.params import ApiModel


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


RFT_HYPERPARAMETERS = ("eval_interval", "eval_samples", "compute_multiplier")


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
    status: JobStatus
    trained_tokens: int | None = None
    training_file: str | None = None
    validation_file: str | None = None
    integrations: list[dict[str, Any]] | None = None
    metadata: dict[str, str] | None = None
    user_provided_suffix: str | None = None
    estimated_finish: int | None = None
    # extensions
    name: str | None = None
    step: int | None = None
    total_steps: int | None = None
    attempt: int | None = None
    base_model: str | None = None
    parent_model: str | None = None
    evaluation: dict[str, Any] | None = None
    training: dict[str, Any] | None = None
    training_config: dict[str, Any] | None = None

    @classmethod
    def from_job(cls, job: Job) -> FineTuningJob:
        """The job as OpenAI's API shows one, plus our extensions (progress, alias, lineage, evaluation, batch
        layout, and the resolved training config once a worker has resolved it)."""
        hyper = {k: job.hyperparameters.get(k, "auto") for k in ("n_epochs", "batch_size", "learning_rate_multiplier")}
        method = job.method_type
        settings: dict[str, Any] = {"hyperparameters": hyper}
        if method == "dpo":
            settings["hyperparameters"] = {**hyper, "beta": job.hyperparameters.get("beta", "auto")}
        elif method == "reinforcement":
            asked = job.spec["method"]["reinforcement"]
            extra = {k: job.hyperparameters.get(k, "auto") for k in RFT_HYPERPARAMETERS}
            settings = {**asked, "hyperparameters": {**hyper, **extra}}
        return cls(
            object="fine_tuning.job",
            id=job.id,
            created_at=int(job.created_at),
            finished_at=int(job.finished_at) if job.finished_at else None,
            error=job.error,
            fine_tuned_model=job.fine_tuned_model if job.status == JobStatus.SUCCEEDED else None,
            hyperparameters=hyper,
            method={"type": method, method: settings},
            model=job.model,
            organization_id=job.tenant,
            result_files=[],
            seed=job.seed,
            status=job.status,
            trained_tokens=job.trained_tokens,
            training_file=job.training_file,
            validation_file=job.validation_file,
            integrations=job.integrations,
            metadata=job.metadata,
            user_provided_suffix=job.suffix,
            estimated_finish=int(job.estimated_finish) if job.estimated_finish else None,
            name=job.name,
            step=job.step,
            total_steps=job.total_steps,
            attempt=job.attempt,
            base_model=job.root_model,
            parent_model=job.parent_model,
            evaluation=job.evaluation,
            training=job.training,
            training_config=job.config,
        )


class JobList(ApiModel):
    object: Literal["list"]
    data: list[FineTuningJob]
    has_more: bool


def _job_hex(job_id: str) -> str:
    return job_id.split("-", 1)[-1]


def event_id(job_id: str, seq: int) -> str:
    """``ftevent-<job hex>-<seq>``: an event's id names its job and its place in the job's log."""
    return f"ftevent-{_job_hex(job_id)}-{seq}"


_EVENT_ID = re.compile(r"^ftevent-([0-9a-f]+)-(\d+)$")


def event_seq(event_id: str, job_id: str | None = None) -> int | None:
    """The sequence number in an event id; None if it is not one (or, given ``job_id``, not one of that job's)."""
    match = _EVENT_ID.match(event_id)
    if match is None or (job_id is not None and match.group(1) != _job_hex(job_id)):
        return None
    return int(match.group(2))


def checkpoint_id(job_id: str, step: int) -> str:
    """``ftckpt-<job hex>-<step>``, the id ``from_checkpoint`` accepts (``sage_ft.jobs.spec.CHECKPOINT_ID``)."""
    return f"ftckpt-{_job_hex(job_id)}-{step}"


class JobEvent(ApiModel):
    object: Literal["fine_tuning.job.event"]
    id: str
    created_at: int
    level: str
    message: str
    type: str
    data: dict[str, Any] | None = None

    @classmethod
    def from_record(cls, job_id: str, event: JobEventRecord) -> JobEvent:
        return cls(
            object="fine_tuning.job.event",
            id=event_id(job_id, event.seq),
            created_at=int(event.created_at),
            level=event.level,
            message=event.message,
            type=event.type,
            data=event.data,
        )


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

    @classmethod
    def from_record(cls, checkpoint: CheckpointRecord) -> Checkpoint:
        return cls(
            object="fine_tuning.job.checkpoint",
            id=checkpoint_id(checkpoint.job_id, checkpoint.step),
            created_at=int(checkpoint.created_at),
            fine_tuned_model_checkpoint=checkpoint.model,
            fine_tuning_job_id=checkpoint.job_id,
            step_number=checkpoint.step,
            metrics=checkpoint.metrics,
        )


class CheckpointList(ApiModel):
    object: Literal["list"]
    data: list[Checkpoint]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None
