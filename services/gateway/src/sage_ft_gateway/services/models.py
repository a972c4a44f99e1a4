"""The model registry as callers see it: fine-tuned models from manifests (with aliases), and base models: those
installed under the models root and those the tenant's jobs used.

A manifest made by a job is visible only once that job is ``succeeded`` with this model and this attempt: a stale
attempt's commit (its worker froze past its lease, then came back) stays hidden until the live attempt replaces it.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime
from typing import Any

from sage_ft.jobs.model import Job, JobStatus
from sage_ft.models import installed_models, local_model_dir
from sage_ft.storage import Manifest, StorageError, delete_model, list_models
from sage_ft.storage.checkpoints import CHECKPOINT_NAME
from sage_ft.storage.manifest import CorruptManifestError
from sage_ft.storage.names import not_found_message, read_model, resolve_model_name
from sage_ft_gateway.errors import ApiError
from sage_ft_gateway.state import GatewayState


def _created(manifest: Manifest) -> int:
    try:
        return int(datetime.fromisoformat(manifest.created_at).timestamp())
    except ValueError:
        return 0


log = logging.getLogger(__name__)


def _unavailable(model: str, why: str) -> ApiError:
    return ApiError(404, f"The model '{model}' is not available: {why}.", param="model", code="model_not_found")


def model_object(manifest: Manifest) -> dict[str, Any]:
    return {
        "id": manifest.name,
        "object": "model",
        "created": _created(manifest),
        "owned_by": "sage-ft",
        "root": manifest.base_model,
        "parent": manifest.parent or manifest.base_model,
        "aliases": [manifest.alias] if manifest.alias else [],
        "parts": manifest.parts,
        "job_id": manifest.job_id,
        "metrics": manifest.metrics,
    }


class ModelService:
    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self._aliases: dict[tuple[str, str], tuple[float, str]] = {}  # (tenant, alias) -> (expires, model name)
        self._aliases_lock = threading.Lock()

    def job_blocks(self, manifest: Manifest, jobs: dict[str, Job] | None = None) -> str | None:
        """Why a job's model is not visible yet (None: it is). A manifest without a job, or whose job record is
        gone, stands on its own. ``jobs``: already fetched, by id."""
        if not manifest.job_id:
            return None
        job = jobs.get(manifest.job_id) if jobs is not None else self.state.jobs.get_job(manifest.job_id)
        if job is None:
            return None
        if job.status != JobStatus.SUCCEEDED or job.fine_tuned_model != manifest.published_as:
            return f"its job {job.id} is {job.status.value}"
        if manifest.attempt is not None and manifest.attempt != job.attempt:
            return f"its job {job.id} has not committed this attempt"
        return None

    def servable_name(self, tenant: str, model: str) -> str:
        """The name to hand serving for ``model``, checked like a listing: a fine-tuned name (``ft:...:<job hex>``,
        or its checkpoint) whose job has not succeeded is a 404, as if it did not exist yet; an alias becomes the
        newest model carrying it that is visible (a stale attempt's commit never is). Other names pass as they are:
        serving knows base models."""
        match = CHECKPOINT_NAME.match(model)
        published = match.group(1) if match else model  # a checkpoint is servable once its model is
        parts = published.split(":")
        if len(parts) >= 4 and parts[0] == "ft":
            job = self.state.jobs.get_for(tenant, f"ftjob-{parts[-1]}")
            if job is not None and (job.status != JobStatus.SUCCEEDED or job.fine_tuned_model != published):
                raise _unavailable(model, f"its job {job.id} is {job.status.value}")
            return model
        if "/" in model:  # a hub id: never an alias
            return model
        return self._resolve_alias(tenant, model)

    def _resolve_alias(self, tenant: str, name: str) -> str:
        key = (tenant, name)
        with self._aliases_lock:
            cached = self._aliases.get(key)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        try:
            resolved = self._newest_visible(tenant, name)
        except StorageError as err:  # the store is away or refuses us: deployments keep serving what they hold
            log.warning("resolving %r without the object store (%s)", name, err)
            return cached[1] if cached is not None else name
        ttl = self.state.settings.gateway.alias_cache_seconds
        if ttl > 0:
            with self._aliases_lock:
                if len(self._aliases) > 10_000:
                    self._aliases.clear()
                self._aliases[key] = (time.monotonic() + ttl, resolved)
        return resolved

    def _newest_visible(self, tenant: str, name: str) -> str:
        store = self.state.tenant_store(tenant)
        try:
            direct = read_model(store, name)
        except CorruptManifestError as err:
            raise ApiError(404, str(err), param="model", code="model_not_found") from None
        if direct is not None:
            why = self.job_blocks(direct)
            if why is not None:
                raise _unavailable(name, why)
            return name
        carrying = [m for m in list_models(store) if m.alias == name]
        jobs = self.state.jobs.get_jobs(sorted({m.job_id for m in carrying if m.job_id}))
        visible = [m for m in carrying if self.job_blocks(m, jobs) is None]
        if carrying and not visible:
            newest = max(carrying, key=lambda m: m.created_at)
            raise _unavailable(name, str(self.job_blocks(newest, jobs)))
        return max(visible, key=lambda m: m.created_at).name if visible else name  # none: a base model's name

    def list(self, tenant: str) -> dict[str, Any]:
        manifests = list_models(self.state.tenant_store(tenant))
        jobs = self.state.jobs.get_jobs(sorted({m.job_id for m in manifests if m.job_id}))
        tuned = sorted(
            (m for m in manifests if self.job_blocks(m, jobs) is None), key=lambda m: m.created_at, reverse=True
        )
        root = self.state.settings.paths.resolved_models_root()
        installed = {p.name for p in root.iterdir() if local_model_dir(root, p.name)} if root.is_dir() else set()
        data = [
            {"id": base, "object": "model", "created": 0, "owned_by": "base", "aliases": [], "parts": []}
            for base in sorted(installed | set(self.state.jobs.base_models(tenant)))
        ]
        data += [model_object(m) for m in tuned]
        return {"object": "list", "data": data}

    def resolve(self, tenant: str, model: str) -> Manifest:
        store = self.state.tenant_store(tenant)
        manifest = resolve_model_name(store, model)
        if manifest is None:
            raise ApiError(404, not_found_message(store, model), param="model", code="model_not_found")
        why = self.job_blocks(manifest)
        if why is not None:
            raise ApiError(
                404, f"The model '{manifest.name}' is not available: {why}.", param="model", code="model_not_found"
            )
        return manifest

    def check_evaluable(self, tenant: str, model: str, param: str) -> str:
        """The name serving is to be asked for ``model``: a visible fine-tune or checkpoint, the newest visible
        model carrying the alias, or an installed base (or a hub id); anything else is a 404 naming ``param``."""
        store = self.state.tenant_store(tenant)
        try:
            name = self.servable_name(tenant, model)
            manifest = resolve_model_name(store, name)
        except CorruptManifestError as err:
            raise ApiError(404, str(err), param=param, code="model_not_found") from None
        except ApiError as err:
            raise ApiError(err.status, err.message, param=param, code=err.code) from None
        if manifest is not None:
            why = self.job_blocks(manifest)
            if why is not None:
                raise ApiError(
                    404, f"The model '{manifest.name}' is not available: {why}.", param=param, code="model_not_found"
                )
            return name
        root = self.state.settings.paths.resolved_models_root()
        if "/" in model or local_model_dir(root, model) is not None:
            return model
        raise ApiError(
            404,
            not_found_message(store, model, also=installed_models(root)).replace(
                "is not published.", "is not published, and no base model of that name is installed."
            ),
            param=param,
            code="model_not_found",
        )

    def get(self, tenant: str, model: str) -> dict[str, Any]:
        return model_object(self.resolve(tenant, model))

    def delete(self, tenant: str, model: str) -> dict[str, Any]:
        try:
            manifest = self.resolve(tenant, model)
            if manifest.checkpoint_of:
                raise ApiError(
                    400,
                    f"'{manifest.name}' is a checkpoint of {manifest.checkpoint_of}; it goes when "
                    "that model is deleted.",
                    param="model",
                )
            name = manifest.name
        except CorruptManifestError as err:
            name = err.name  # a damaged model can still be deleted by its name
        delete_model(self.state.tenant_store(tenant), name)
        self.state.serving.undeploy(tenant, name)
        return {"id": name, "object": "model", "deleted": True}

    def merge(self, tenant: str, model: str) -> dict[str, Any]:
        manifest = self.resolve(tenant, model)
        if "adapter" not in manifest.parts:
            raise ApiError(400, f"Model '{manifest.name}' has no adapter to merge.", param="model")
        if manifest.checkpoint_of:
            raise ApiError(
                400,
                f"'{manifest.name}' is a checkpoint: serve it as an adapter, or start a job from it "
                "and merge that model.",
                param="model",
            )
        self.state.enqueue_merge(tenant, manifest.name)
        return {"id": manifest.name, "object": "model.merge", "status": "queued", "merged": "merged" in manifest.parts}
