"""Fine-tuning jobs: validate the request, record the job, then enqueue its id; and the user's controls.

Order matters for "never lose a job": the job is written to the job store before its id is enqueued. If the
process dies between the two, the reconciler finds a queued job the broker does not hold and enqueues it.
"""

from __future__ import annotations

from typing import Any

from sage_ft.jobs import Job, JobStatus, lifecycle
from sage_ft.jobs.model import event_seq, new_id, now
from sage_ft.jobs.secrets import masked_integrations, request_secrets
from sage_ft.jobs.spec import JobRequest, build_training_config, local_model_dir
from sage_ft_gateway.errors import ApiError, not_found
from sage_ft_gateway.services.files import FileService
from sage_ft_gateway.state import GatewayState

_SECRET_FIELDS: Any = {"integrations": {"__all__": {"wandb": {"api_key"}}}}  # never in the stored request


class JobService:
    def __init__(self, state: GatewayState, files: FileService) -> None:
        self.state = state
        self.files = files

    # -- create -----------------------------------------------------------------------------------------------

    def _check_request(self, tenant: str, request: JobRequest) -> dict[str, Any]:
        if request.is_local_model():
            root = self.state.settings.paths.resolved_models_root()
            if local_model_dir(root, request.model) is None:
                raise ApiError(404, f"Model '{request.model}' is neither a hub id (owner/name) nor a model under the "
                               "models root.", param="model", code="model_not_found")  # fmt: skip
        if not request.training_file and not request.task:
            raise ApiError(400, "training_file is required (or a built-in 'task').", param="training_file")
        for param in ("training_file", "validation_file"):
            file_id = getattr(request, param)
            if file_id:
                record = self.files.get(tenant, file_id, param)
                if record.status != "processed":
                    raise ApiError(400, f"File {file_id} failed validation: {record.status_details}", param=param,
                                   code="invalid_file")  # fmt: skip
                if record.report.get("kind") == "preference":  # supervised is the one method trained so far
                    raise ApiError(400, f"File {file_id} holds preference pairs (chosen/rejected), which fit method "
                                   "'dpo', not 'supervised'.", param=param, code="invalid_file")  # fmt: skip
        _, hyper = build_training_config(
            request, preset=_display_preset(request.preset), data_path=None, output_dir="/nonexistent"
        )  # fmt: skip  (validation only)
        return hyper

    def create(self, tenant: str, request: JobRequest, idempotency_key: str | None) -> tuple[Job, bool]:
        hyper = self._check_request(tenant, request)
        job = Job(
            id=new_id("ftjob"), tenant=tenant, status=JobStatus.QUEUED, model=request.model,
            training_file=request.training_file, validation_file=request.validation_file, suffix=request.suffix,
            seed=request.seed if request.seed is not None else 42, metadata=request.metadata,
            integrations=masked_integrations(request.integrations),
            spec=request.model_dump(mode="json", exclude_none=True, exclude=_SECRET_FIELDS),
            hyperparameters=hyper, name=request.name,
            max_attempts=self.state.settings.jobs.max_attempts, enqueued_at=now(),
        )  # fmt: skip
        sealed = self.state.secrets.seal(request_secrets(request.integrations), "integrations.wandb.api_key")
        job, created = self.state.jobs.create_job(job, idempotency_key, sealed)
        if created:
            self.state.jobs.add_event(job.id, f"Created fine-tuning job: {job.id}")
            self.state.enqueue_train(job)
            self.state.jobs.add_event(job.id, "Job queued")
        return job, created

    # -- read -------------------------------------------------------------------------------------------------

    def get(self, tenant: str, job_id: str) -> Job:
        job = self.state.jobs.get_for(tenant, job_id)
        if job is None:
            raise not_found("fine-tuning job", job_id)
        return job

    def list(self, tenant: str, after: str | None, limit: int, metadata: dict[str, str]) -> dict[str, Any]:
        jobs, more = self.state.jobs.list_jobs(tenant, after=after, limit=limit, metadata=metadata or None)
        return {"object": "list", "data": [j.to_openai() for j in jobs], "has_more": more}

    def events(self, tenant: str, job_id: str, after: str | None, limit: int) -> dict[str, Any]:
        self.get(tenant, job_id)
        before = None
        if after:
            before = event_seq(after)
            if before is None:
                raise ApiError(404, f"'{after}' is not an event id of this job.", param="after",
                               code="event_not_found")  # fmt: skip
        events, more = self.state.jobs.events_page(job_id, before=before, limit=limit)
        return {"object": "list", "data": events, "has_more": more}

    def checkpoints(self, tenant: str, job_id: str, after: str | None, limit: int) -> dict[str, Any]:
        self.get(tenant, job_id)
        items = list(reversed(self.state.jobs.checkpoints(job_id)))  # newest first
        if after:
            ids = [c["id"] for c in items]
            if after not in ids:
                raise ApiError(404, f"'{after}' is not a checkpoint id of this job.", param="after",
                               code="checkpoint_not_found")  # fmt: skip
            items = items[ids.index(after) + 1 :]
        return {"object": "list", "data": items[:limit], "has_more": len(items) > limit,
                "first_id": items[0]["id"] if items else None,
                "last_id": items[:limit][-1]["id"] if items else None}  # fmt: skip

    # -- control ----------------------------------------------------------------------------------------------

    def cancel(self, tenant: str, job_id: str) -> Job:
        self.get(tenant, job_id)
        return lifecycle.request_cancel(self.state.jobs, job_id)

    def pause(self, tenant: str, job_id: str) -> Job:
        self.get(tenant, job_id)
        return lifecycle.request_pause(self.state.jobs, job_id)

    def resume(self, tenant: str, job_id: str) -> Job:
        self.get(tenant, job_id)
        return lifecycle.request_resume(self.state.jobs, job_id, self.state.enqueue_train)


def _display_preset(preset: str | None) -> str:
    """For validation only: the worker resolves 'auto' from its own device; here the CPU preset stands in."""
    return "cpu" if preset in (None, "auto") else preset
