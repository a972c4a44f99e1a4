"""Evals in Redis, next to jobs and files: one key per eval, and a per-tenant index by creation time."""

from __future__ import annotations

from sage_ft.evals.model import EvalRecord
from sage_ft.jobs.store import JobStore


class EvalStore:
    def __init__(self, jobs: JobStore) -> None:
        self.r = jobs.r
        self.p = jobs.p

    def _key(self, eval_id: str) -> str:
        return f"{self.p}:eval:{eval_id}"

    def _index(self, tenant: str) -> str:
        return f"{self.p}:t:{tenant}:evals"

    def put(self, record: EvalRecord) -> None:
        pipe = self.r.pipeline(transaction=True)
        pipe.set(self._key(record.id), record.model_dump_json())
        pipe.zadd(self._index(record.tenant), {record.id: record.created_at})
        pipe.execute()

    def get(self, tenant: str, eval_id: str) -> EvalRecord | None:
        raw = self.r.get(self._key(eval_id))
        record = EvalRecord.model_validate_json(raw) if raw else None
        return record if record is not None and record.tenant == tenant else None

    def list(self, tenant: str, *, after: str | None, limit: int, newest_first: bool) -> tuple[list[EvalRecord], bool]:
        """One page, ordered by creation time; ``after`` is the id the previous page ended with."""
        ids: list[str] = (self.r.zrevrange if newest_first else self.r.zrange)(self._index(tenant), 0, -1)
        if after is not None:
            ids = ids[ids.index(after) + 1 :] if after in ids else []
        page = ids[: limit + 1]
        raws = self.r.mget([self._key(i) for i in page[:limit]]) if page else []
        return [EvalRecord.model_validate_json(r) for r in raws if r], len(page) > limit

    def delete(self, record: EvalRecord) -> None:
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(self._key(record.id))
        pipe.zrem(self._index(record.tenant), record.id)
        pipe.execute()
