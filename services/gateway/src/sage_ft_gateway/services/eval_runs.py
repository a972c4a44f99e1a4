"""Eval runs (OpenAI's ``/v1/evals/{id}/runs``): checked here, queued to a worker's ``evaluate`` task, read back
from the run store with their graded items. Tenant-scoped: another tenant's run looks like a missing one."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from sage_ft.errors import DataError
from sage_ft.evals import run_states
from sage_ft.evals.items import load_rows
from sage_ft.evals.runs import FileIdSource, parse_run
from sage_ft.evals.runstore import EvalRun
from sage_ft.jobs.model import new_id
from sage_ft_gateway.errors import ApiError, not_found
from sage_ft_gateway.protocol.evals import EvalRunObject, OutputItemObject, item_index
from sage_ft_gateway.protocol.params import cursor_page
from sage_ft_gateway.services.evals import EvalService
from sage_ft_gateway.services.files import FileService
from sage_ft_gateway.services.models import ModelService
from sage_ft_gateway.state import GatewayState

log = logging.getLogger(__name__)


class EvalRunService:
    def __init__(self, state: GatewayState, evals: EvalService, files: FileService, models: ModelService) -> None:
        self.state, self.evals, self.files, self.models = state, evals, files, models
        self.runs = state.eval_runs

    def _rows(self, tenant: str, source: FileIdSource, schema: dict[str, Any]) -> int:
        """Check every row of an evals file against the eval's item schema now, not in the worker."""
        param = "data_source.source.id"
        record = self.files.get(tenant, source.id, param)
        if record.purpose != "evals":
            raise ApiError(
                400,
                f"{param}: file {source.id} has purpose '{record.purpose}'; eval data is uploaded with purpose 'evals'",
                param=param,
            )
        with tempfile.TemporaryDirectory() as tmp:
            path = self.state.tenant_store(tenant).get_file(f"files/{source.id}", Path(tmp) / "rows.jsonl")
            try:
                return len(load_rows(path, schema))
            except DataError as err:
                raise ApiError(
                    400,
                    f"{param}: {record.filename} does not match the eval's item_schema: {err.reason}",
                    param=param,
                    code="invalid_file",
                ) from None

    def create(self, tenant: str, eval_id: str, body: dict[str, Any]) -> EvalRunObject:
        record = self.evals.get(tenant, eval_id)
        request = parse_run(body, record.item_schema)
        source = request.data_source
        serve_as = self.models.check_evaluable(tenant, source.model, "data_source.model")
        total = (
            self._rows(tenant, source.source, record.item_schema)
            if isinstance(source.source, FileIdSource)
            else len(source.source.content)
        )
        run = EvalRun(
            id=new_id("evalrun"),
            eval_id=eval_id,
            tenant=tenant,
            name=request.name or source.model,
            model=source.model,
            serve_as=serve_as,
            data_source=source.model_dump(),
            metadata=request.metadata,
            criteria=[c["name"] for c in record.testing_criteria],
            total=total,
        )
        self.runs.create(run)
        try:
            self.state.enqueue_eval(run)
        except Exception:  # the broker is away: the run is stored as queued, and the reconciler sends it again
            log.exception("could not enqueue eval run %s; the reconciler will", run.id)
        return EvalRunObject.from_run(run, {})

    def _get(self, tenant: str, eval_id: str, run_id: str) -> EvalRun:
        self.evals.get(tenant, eval_id)
        run = self.runs.get_for(tenant, eval_id, run_id)
        if run is None:
            raise not_found("eval run", run_id, "run_id")
        return run

    def get(self, tenant: str, eval_id: str, run_id: str) -> EvalRunObject:
        return EvalRunObject.from_run(self._get(tenant, eval_id, run_id), self.runs.counts(run_id))

    def list(
        self, tenant: str, eval_id: str, after: str | None, limit: int, order: str, status: str | None
    ) -> dict[str, Any]:
        self.evals.get(tenant, eval_id)
        if after is not None and self.runs.get_for(tenant, eval_id, after) is None:
            raise ApiError(404, f"'{after}' is not a run of {eval_id}.", param="after", code="eval_run_not_found")
        runs, more = self.runs.page(eval_id, after=after, limit=limit, newest_first=order == "desc", status=status)
        counts = self.runs.counts_many([r.id for r in runs])
        return cursor_page([EvalRunObject.from_run(r, c) for r, c in zip(runs, counts, strict=True)], more)

    def cancel(self, tenant: str, eval_id: str, run_id: str) -> EvalRunObject:
        self._get(tenant, eval_id, run_id)
        return EvalRunObject.from_run(run_states.cancel(self.runs, run_id), self.runs.counts(run_id))

    def delete(self, tenant: str, eval_id: str, run_id: str) -> dict[str, Any]:
        self.runs.delete(self._get(tenant, eval_id, run_id))  # a worker on it finds the record gone and stops
        return {"object": "eval.run.deleted", "deleted": True, "run_id": run_id}

    def output_items(
        self, tenant: str, eval_id: str, run_id: str, after: str | None, limit: int, order: str, status: str | None
    ) -> dict[str, Any]:
        run = self._get(tenant, eval_id, run_id)
        items = sorted(self.runs.items(run_id).items(), reverse=order == "desc")
        if after is not None:
            start = item_index(run_id, after)
            if start is None:
                raise ApiError(
                    404, f"'{after}' is not an output item of {run_id}.", param="after", code="output_item_not_found"
                )
            items = [(i, it) for i, it in items if (i < start if order == "desc" else i > start)]
        items = [(i, it) for i, it in items if status is None or it.status == status]
        return cursor_page([OutputItemObject.from_record(run, it) for _, it in items[:limit]], len(items) > limit)

    def output_item(self, tenant: str, eval_id: str, run_id: str, output_item_id: str) -> OutputItemObject:
        run = self._get(tenant, eval_id, run_id)
        index = item_index(run_id, output_item_id)
        item = self.runs.item(run_id, index) if index is not None else None
        if index is None or item is None:
            raise not_found("output item", output_item_id, "output_item_id")
        return OutputItemObject.from_record(run, item)

    def events(self, tenant: str, eval_id: str, run_id: str) -> dict[str, Any]:
        self._get(tenant, eval_id, run_id)
        data = [
            {"object": "eval.run.event", "id": f"{run_id}-event-{n}", **e}
            for n, e in enumerate(self.runs.events(run_id), start=1)
        ]
        return {"object": "list", "data": data, "has_more": False}
