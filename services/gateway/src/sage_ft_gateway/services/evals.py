"""Evals (OpenAI's Evals API): create, read, list, rename and delete eval definitions, scoped to the tenant."""

from __future__ import annotations

from typing import Any

from sage_ft.evals.model import EvalCreate, EvalRecord, EvalUpdate, parse_eval, parse_update
from sage_ft.evals.store import EvalStore
from sage_ft.jobs.model import new_id
from sage_ft_gateway.errors import ApiError, not_found
from sage_ft_gateway.protocol.evals import EvalObject
from sage_ft_gateway.protocol.params import cursor_page
from sage_ft_gateway.state import GatewayState


class EvalService:
    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self.evals = EvalStore(state.jobs)

    def create(self, tenant: str, body: EvalCreate) -> EvalRecord:
        request = parse_eval(body.model_dump(exclude_unset=True))
        source = request.data_source_config
        record = EvalRecord(
            id=new_id("eval"),
            tenant=tenant,
            name=request.name or "eval",
            item_schema=source.item_schema,
            include_sample_schema=source.include_sample_schema,
            testing_criteria=[c.model_dump(mode="json") for c in request.testing_criteria],
            metadata=request.metadata,
        )
        self.evals.put(record)
        return record

    def get(self, tenant: str, eval_id: str) -> EvalRecord:
        record = self.evals.get(tenant, eval_id)
        if record is None:
            raise not_found("eval", eval_id, "eval_id")
        return record

    def list(self, tenant: str, after: str | None, limit: int, order: str) -> dict[str, Any]:
        if after is not None and self.evals.get(tenant, after) is None:
            raise ApiError(404, f"'{after}' is not an eval id.", param="after", code="eval_not_found")
        records, more = self.evals.list(tenant, after=after, limit=limit, newest_first=order == "desc")
        return cursor_page([EvalObject.from_record(r) for r in records], more)

    def update(self, tenant: str, eval_id: str, body: EvalUpdate) -> EvalRecord:
        record = self.get(tenant, eval_id)
        changes = parse_update(body.model_dump(exclude_unset=True))
        if changes.name is not None:
            record.name = changes.name
        if changes.metadata is not None:
            record.metadata = changes.metadata
        self.evals.put(record)
        return record

    def delete(self, tenant: str, eval_id: str) -> dict[str, Any]:
        """The eval and its runs (a worker on one of them finds its record gone and stops)."""
        record = self.get(tenant, eval_id)
        runs = self.state.eval_runs
        for run_id in runs.run_ids(eval_id):
            run = runs.get_for(tenant, eval_id, run_id)
            if run is not None:
                runs.delete(run)
        self.evals.delete(record)
        return {"object": "eval.deleted", "deleted": True, "eval_id": eval_id}
