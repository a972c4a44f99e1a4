"""Fine-tuning jobs: validate the request, record the job, then enqueue its id; and the user's controls.

Order matters for "never lose a job": the job is written to the job store before its id is enqueued. If the
process dies between the two, the reconciler finds a queued job the broker does not hold and enqueues it.
"""

from __future__ import annotations

import difflib
import logging
from typing import Any, NamedTuple

import redis

from sage_ft.config import TrainingConfig
from sage_ft.graders import AnyGrader, template_fields
from sage_ft.jobs import Job, JobStatus, job_states
from sage_ft.jobs.model import new_id, now
from sage_ft.jobs.secrets import masked_integrations, request_secrets
from sage_ft.jobs.spec import (
    CHECKPOINT_ID,
    JobRequest,
    ReinforcementMethod,
    build_training_config,
    requested_hyperparameters,
)
from sage_ft.models import local_model_dir
from sage_ft.storage.names import closest_names, resolve_model_name
from sage_ft_gateway.errors import ApiError, not_found
from sage_ft_gateway.protocol.jobs import Checkpoint, FineTuningJob, JobEvent, event_seq
from sage_ft_gateway.services.files import FileService
from sage_ft_gateway.services.graders import GraderService
from sage_ft_gateway.services.models import ModelService
from sage_ft_gateway.state import GatewayState

log = logging.getLogger(__name__)


class Checked(NamedTuple):
    config: TrainingConfig
    hyperparameters: dict[str, Any]
    base: str | None
    parent: str | None


_SECRET_FIELDS: Any = {"integrations": {"__all__": {"wandb": {"api_key"}}}, "dry_run": True}  # not stored


class JobService:
    def __init__(self, state: GatewayState, files: FileService, models: ModelService, graders: GraderService) -> None:
        self.state = state
        self.files = files
        self.models = models
        self.graders = graders

    # -- create -----------------------------------------------------------------------------------------------

    def check_request(self, tenant: str, request: JobRequest) -> Checked:
        """The resolved config and hyperparameters, and the base and parent models when the job continues a
        fine-tune; every 4xx a bad request earns."""
        base, parent = self._lineage(tenant, request)
        if not request.training_file and not request.task:
            raise ApiError(400, "training_file is required (or a built-in 'task').", param="training_file")
        method = request.method_type
        if request.task and not request.training_file and method != "supervised":
            needs = "preference pairs" if method == "dpo" else "prompts (OpenAI's RFT rows)"
            raise ApiError(
                400,
                f"The built-in task '{request.task}' is supervised data; method '{method}' needs a "
                f"training_file of {needs}.",
                param="training_file",
            )
        fits = {"preference": "dpo", "supervised": "supervised", "prompts": "reinforcement"}
        what = {
            "preference": "preference pairs (chosen/rejected)",
            "supervised": "supervised records",
            "prompts": "prompts without answers (RFT rows)",
        }
        for param in ("training_file", "validation_file"):
            file_id = getattr(request, param)
            if file_id:
                record = self.files.get(tenant, file_id, param)
                if record.purpose != "fine-tune":
                    raise ApiError(
                        400,
                        f"File {file_id} was uploaded for '{record.purpose}'; training needs a file "
                        "uploaded with purpose 'fine-tune'.",
                        param=param,
                        code="invalid_file",
                    )
                if record.status != "processed":
                    raise ApiError(
                        400,
                        f"File {file_id} failed validation: {record.status_details}",
                        param=param,
                        code="invalid_file",
                    )
                kind = record.report.get("kind") or "supervised"
                if fits.get(kind, method) != method:
                    raise ApiError(
                        400,
                        f"File {file_id} holds {what[kind]}, which fit method '{fits[kind]}', not '{method}'.",
                        param=param,
                        code="invalid_file",
                    )
                if isinstance(request.method, ReinforcementMethod):
                    _check_grader_fields(request.method.reinforcement.grader, record.report, file_id, param)
        if isinstance(request.method, ReinforcementMethod):
            self.graders.check(tenant, request.method.reinforcement.grader, "method.reinforcement.grader")
        if parent is not None and request.lora is not None:
            raise ApiError(
                400, f"A job that continues {parent} keeps its adapter's shape; leave 'lora' out.", param="lora"
            )
        config, hyper = build_training_config(
            request,
            preset=_stand_in_preset(request.preset),
            data_path=None,
            output_dir="/nonexistent",
            validation_path=request.validation_file,
            base_model=base,
        )  # validation only
        return Checked(config, hyper, base, parent)

    def _lineage(self, tenant: str, request: JobRequest) -> tuple[str | None, str | None]:
        """(base, parent) for a job that starts from a fine-tune or a checkpoint; (None, None) from a base model."""
        if request.from_checkpoint:
            return self._from_checkpoint(tenant, request, request.from_checkpoint)
        root = self.state.settings.paths.resolved_models_root()
        if not request.model.startswith("ft:"):
            if not request.is_local_model() or local_model_dir(root, request.model) is not None:
                return None, None  # a hub id, or a base model under the models root
            if resolve_model_name(self.state.tenant_store(tenant), request.model) is None:  # nor an alias
                close = closest_names(self.state.tenant_store(tenant), request.model)
                close += [p.name for p in sorted(root.iterdir()) if p.is_dir()][:3] if root.is_dir() else []
                hint = f" Did you mean: {', '.join(close)}?" if close else ""
                raise ApiError(
                    404,
                    f"Model '{request.model}' is neither a hub id (owner/name), nor a model under "
                    f"the models root, nor a fine-tuned model or alias.{hint}",
                    param="model",
                    code="model_not_found",
                )
        manifest = self.models.resolve(tenant, request.model)  # 404 with the closest names
        if "adapter" not in manifest.parts:
            raise ApiError(400, f"Model '{manifest.name}' has no adapter to continue from.", param="model")
        self._check_base(manifest.base_model, manifest.name)
        return manifest.base_model, manifest.name

    def _from_checkpoint(self, tenant: str, request: JobRequest, checkpoint: str) -> tuple[str, str]:
        match = CHECKPOINT_ID.match(checkpoint)
        assert match is not None  # the request pattern
        source = self.state.jobs.get_for(tenant, f"ftjob-{match.group(1)}")
        records = [Checkpoint.from_record(c) for c in self.state.jobs.checkpoints(source.id)] if source else []
        record = next((c for c in records if c.id == checkpoint), None)
        if source is None or record is None:
            close = difflib.get_close_matches(checkpoint, [c.id for c in records], n=3)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise ApiError(
                404, f"No checkpoint '{checkpoint}'.{hint}", param="from_checkpoint", code="checkpoint_not_found"
            )
        names = {source.root_model, source.model, source.fine_tuned_model, source.name} - {None}
        if request.model not in names:
            raise ApiError(
                400,
                f"Checkpoint {checkpoint} belongs to job {source.id}, a fine-tune of "
                f"'{source.root_model}'; set model to '{source.root_model}' (or that job's model).",
                param="model",
            )
        self._check_base(source.root_model, checkpoint)
        return source.root_model, record.fine_tuned_model_checkpoint

    def _check_base(self, base: str, what: str) -> None:
        if "/" in base:
            return  # a hub id: the worker's cache or the hub has it
        if local_model_dir(self.state.settings.paths.resolved_models_root(), base) is None:
            raise ApiError(
                400,
                f"{what} was trained on base model '{base}', which is not installed under the models "
                "root; install it there to continue from this fine-tune.",
                param="model",
                code="base_model_not_found",
            )

    def create(self, tenant: str, request: JobRequest, idempotency_key: str | None) -> tuple[Job, bool]:
        _, _, base, parent = self.check_request(tenant, request)  # a config is built to validate, not kept
        job = Job(
            id=new_id("ftjob"),
            tenant=tenant,
            status=JobStatus.QUEUED,
            model=request.model,
            training_file=request.training_file,
            validation_file=request.validation_file,
            suffix=request.suffix,
            seed=request.seed if request.seed is not None else 42,
            metadata=request.metadata,
            integrations=masked_integrations(request.integrations),
            spec=request.model_dump(mode="json", exclude_none=True, exclude=_SECRET_FIELDS),
            hyperparameters=requested_hyperparameters(request),  # the worker that takes it resolves the config
            name=request.name,
            base_model=base,
            parent_model=parent,
            max_attempts=self.state.settings.jobs.max_attempts,
            enqueued_at=now(),
        )
        sealed = self.state.secrets.seal(request_secrets(request.integrations), "integrations.wandb.api_key")
        job, created = self.state.jobs.create_job(job, idempotency_key, sealed)  # accepted from here on
        if created:
            try:
                self.state.jobs.add_event(job.id, f"Created fine-tuning job: {job.id}")
                self.state.enqueue_train(job)
                self.state.jobs.add_event(job.id, "Job queued")
            except redis.RedisError as err:  # the reconciler enqueues a queued job the broker does not hold
                log.warning("job %s accepted; enqueue left to the reconciler (%s)", job.id, err)
        return job, created

    # -- read -------------------------------------------------------------------------------------------------

    def get(self, tenant: str, job_id: str) -> Job:
        job = self.state.jobs.get_for(tenant, job_id)
        if job is None:
            raise not_found("fine-tuning job", job_id)
        return job

    def list(self, tenant: str, after: str | None, limit: int, metadata: dict[str, str]) -> dict[str, Any]:
        jobs, more = self.state.jobs.list_jobs(tenant, after=after, limit=limit, metadata=metadata or None)
        return {"object": "list", "data": [FineTuningJob.from_job(j) for j in jobs], "has_more": more}

    def events(self, tenant: str, job_id: str, after: str | None, limit: int) -> dict[str, Any]:
        self.get(tenant, job_id)
        before = None
        if after:
            before = event_seq(after)
            if before is None:
                raise ApiError(404, f"'{after}' is not an event id of this job.", param="after", code="event_not_found")
        events, more = self.state.jobs.events_page(job_id, before=before, limit=limit)
        return {"object": "list", "data": [JobEvent.from_record(job_id, e) for e in events], "has_more": more}

    def checkpoints(self, tenant: str, job_id: str, after: str | None, limit: int) -> dict[str, Any]:
        self.get(tenant, job_id)
        items = [Checkpoint.from_record(c) for c in reversed(self.state.jobs.checkpoints(job_id))]  # newest first
        if after:
            ids = [c.id for c in items]
            if after not in ids:
                raise ApiError(
                    404, f"'{after}' is not a checkpoint id of this job.", param="after", code="checkpoint_not_found"
                )
            items = items[ids.index(after) + 1 :]
        return {
            "object": "list",
            "data": items[:limit],
            "has_more": len(items) > limit,
            "first_id": items[0].id if items else None,
            "last_id": items[:limit][-1].id if items else None,
        }

    # -- control ----------------------------------------------------------------------------------------------

    def cancel(self, tenant: str, job_id: str) -> Job:
        self.get(tenant, job_id)
        return job_states.request_cancel(self.state.jobs, job_id)

    def pause(self, tenant: str, job_id: str) -> Job:
        self.get(tenant, job_id)
        return job_states.request_pause(self.state.jobs, job_id)

    def resume(self, tenant: str, job_id: str) -> Job:
        self.get(tenant, job_id)
        return job_states.request_resume(self.state.jobs, job_id, self.state.enqueue_train)


def _stand_in_preset(preset: str | None) -> str:
    """For validation only: the worker resolves 'auto' from its own device; here the CPU preset stands in."""
    return "cpu" if preset in (None, "auto") else preset


def _check_grader_fields(grader: AnyGrader, report: dict[str, Any], file_id: str, param: str) -> None:
    """Every item field the grader's templates read is in every row of the file (the upload's report says which
    fields every row has, and the first line without each of the others)."""
    every, missing = set(report.get("item_fields") or []), report.get("item_fields_missing") or {}
    for field in sorted(template_fields(grader) - every):
        where = f"line {missing[field]} of {file_id} has" if field in missing else f"no row of {file_id} has"
        raise ApiError(
            400,
            f"The grader reads {{{{item.{field}}}}}, but {where} a field '{field}'.",
            param=param,
            code="invalid_file",
        )
