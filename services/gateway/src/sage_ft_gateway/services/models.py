"""The model registry as callers see it: fine-tuned models from manifests (with aliases) and base models in use."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sage_ft.storage import Manifest, delete_model, list_models
from sage_ft.storage.manifest import CorruptManifestError, not_found_message, resolve_model_name
from sage_ft_gateway.errors import ApiError
from sage_ft_gateway.state import GatewayState


def _created(manifest: Manifest) -> int:
    try:
        return int(datetime.fromisoformat(manifest.created_at).timestamp())
    except ValueError:
        return 0


def model_object(manifest: Manifest) -> dict[str, Any]:
    return {
        "id": manifest.name, "object": "model", "created": _created(manifest), "owned_by": "sage-ft",
        "root": manifest.base_model, "parent": manifest.base_model,
        "aliases": [manifest.alias] if manifest.alias else [],
        "parts": manifest.parts, "job_id": manifest.job_id, "metrics": manifest.metrics,
    }  # fmt: skip


class ModelService:
    def __init__(self, state: GatewayState) -> None:
        self.state = state

    def list(self, tenant: str) -> dict[str, Any]:
        tuned = sorted(list_models(self.state.tenant_store(tenant)), key=lambda m: m.created_at, reverse=True)
        data = [{"id": base, "object": "model", "created": 0, "owned_by": "base", "aliases": [], "parts": []}
                for base in self.state.jobs.base_models(tenant)]  # fmt: skip
        data += [model_object(m) for m in tuned]
        return {"object": "list", "data": data}

    def resolve(self, tenant: str, model: str) -> Manifest:
        store = self.state.tenant_store(tenant)
        manifest = resolve_model_name(store, model)
        if manifest is None:
            raise ApiError(404, not_found_message(store, model), param="model", code="model_not_found")
        return manifest

    def get(self, tenant: str, model: str) -> dict[str, Any]:
        return model_object(self.resolve(tenant, model))

    def delete(self, tenant: str, model: str) -> dict[str, Any]:
        try:
            name = self.resolve(tenant, model).name
        except CorruptManifestError as err:
            name = err.name  # a damaged model can still be deleted by its name
        delete_model(self.state.tenant_store(tenant), name)
        self.state.serving.undeploy(tenant, name)
        return {"id": name, "object": "model", "deleted": True}

    def merge(self, tenant: str, model: str) -> dict[str, Any]:
        manifest = self.resolve(tenant, model)
        if "adapter" not in manifest.parts:
            raise ApiError(400, f"Model '{manifest.name}' has no adapter to merge.", param="model")
        self.state.enqueue_merge(tenant, manifest.name)
        return {"id": manifest.name, "object": "model.merge", "status": "queued",
                "merged": "merged" in manifest.parts}  # fmt: skip
