"""Eval runs in Redis, with the durability of jobs: the run record, its graded items, counts, lease and events.

- ``{p}:evalrun:<id>``: the record (JSON); every change is a compare-and-set like a job's.
- ``{p}:evalrun:<id>:items``: graded items by index. An item is written once (HSETNX) and its counts go up in the
  same Lua call, so a worker that resumes a run, or a stale one still finishing, can never grade an item twice.
- ``{p}:evalrun:<id>:lease``: the worker running it; the gateway's reaper re-queues a run whose lease ran out.
- ``{p}:eval:<eval_id>:runs``: the eval's runs by creation time; ``{p}:evalruns:active``: the unfinished ones.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from sage_ft.evals.runs import OUTCOME, GradedItem
from sage_ft.jobs.lease import KeyLeases
from sage_ft.jobs.model import now
from sage_ft.jobs.store import JobStore, compare_and_set, event_record
from sage_ft.webhooks import RUN_EVENTS, record_event

RunStatus = Literal["queued", "in_progress", "completed", "failed", "canceled"]
ACTIVE_RUN = ("queued", "in_progress")
_STATUS = re.compile(r'"status":"([a-z_]+)"')  # pydantic's compact JSON; the first "status" key is the record's
_SEP = "\x1f"
_ADD_ITEM = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
for i = 3, #ARGV do redis.call('HINCRBY', KEYS[2], ARGV[i], 1) end
return 1
"""


class EvalRun(BaseModel):
    """One run of an eval as the store keeps it (what a caller sees is the gateway's ``EvalRunObject.from_run``)."""

    model_config = ConfigDict(extra="ignore")
    id: str
    status: RunStatus = "queued"  # first after the id: ``RunStore.status`` reads it without parsing the rest
    eval_id: str
    tenant: str
    name: str
    model: str
    serve_as: str | None = None  # what serving is asked for: ``model``, or the model its alias meant at creation
    data_source: dict[str, Any]
    metadata: dict[str, str] | None = None
    criteria: list[str] = Field(default_factory=list)  # grader names, in order, for per-criteria counts
    created_at: float = Field(default_factory=now)
    enqueued_at: float = Field(default_factory=now)
    started_at: float | None = None
    finished_at: float | None = None
    total: int | None = None
    attempts: int = 0
    error: dict[str, str] | None = None

    def tally(self, counts: dict[str, int]) -> tuple[dict[str, int], list[dict[str, Any]]]:
        """The run's result counts (total, errored, failed, passed) and each grader's passed and failed, from the
        counters ``RunStore.counts`` keeps."""
        per = [
            {
                "testing_criteria": n,
                "passed": counts.get(f"{n}{_SEP}passed", 0),
                "failed": counts.get(f"{n}{_SEP}failed", 0),
            }
            for n in self.criteria
        ]
        done = {k: counts.get(k, 0) for k in ("errored", "failed", "passed")}
        return {"total": self.total if self.total is not None else sum(done.values()), **done}, per


class RunStore:
    def __init__(self, jobs: JobStore) -> None:
        self.r: Any = jobs.r
        self.p = jobs.p
        self._add_item = self.r.register_script(_ADD_ITEM)
        self.leases = KeyLeases(self.r)

    # -- keys ------------------------------------------------------------------------------------------------------

    def _key(self, run_id: str, part: str = "") -> str:
        return f"{self.p}:evalrun:{run_id}{':' + part if part else ''}"

    def _index(self, eval_id: str) -> str:
        return f"{self.p}:eval:{eval_id}:runs"

    @property
    def _active(self) -> str:
        return f"{self.p}:evalruns:active"

    # -- records ---------------------------------------------------------------------------------------------------

    def create(self, record: EvalRun) -> None:
        """A new run: queued for a worker, or already finished (a job's held-out evaluation, graded in training)."""
        pipe = self.r.pipeline(transaction=True)
        pipe.set(self._key(record.id), record.model_dump_json())
        pipe.zadd(self._index(record.eval_id), {record.id: record.created_at})
        if record.status in ACTIVE_RUN:
            pipe.sadd(self._active, record.id)
        event = event_record(f"run {record.status}", type=record.status)
        pipe.rpush(self._key(record.id, "events"), json.dumps(event))
        pipe.execute()

    def get(self, run_id: str) -> EvalRun | None:
        raw = self.r.get(self._key(run_id))
        return EvalRun.model_validate_json(raw) if raw else None

    def status(self, run_id: str) -> str | None:
        """The run's status alone (None: no such run), without parsing its data source."""
        raw = self.r.get(self._key(run_id))
        if raw is None:
            return None
        found = _STATUS.search(raw)
        return found.group(1) if found else EvalRun.model_validate_json(raw).status

    def get_for(self, tenant: str, eval_id: str, run_id: str) -> EvalRun | None:
        """The run if it is ``eval_id``'s and ``tenant``'s; anything else looks exactly like a missing one."""
        run = self.get(run_id)
        return run if run is not None and run.tenant == tenant and run.eval_id == eval_id else None

    def update(self, run_id: str, rule: Callable[[EvalRun], EvalRun | None]) -> EvalRun:
        """Compare-and-set: ``rule`` gets the current record and returns the new one (None: leave it)."""

        def write(pipe: Any, current: EvalRun, new: EvalRun) -> None:
            pipe.set(self._key(run_id), new.model_dump_json())
            (pipe.sadd if new.status in ACTIVE_RUN else pipe.srem)(self._active, run_id)
            if current.status in ACTIVE_RUN and new.status not in ACTIVE_RUN:  # the webhook event (the outbox)
                record_event(pipe, self.p, new.tenant, RUN_EVENTS[new.status], run_id, now())

        return compare_and_set(self.r, self._key(run_id), run_id, EvalRun, rule, write)

    def page(
        self, eval_id: str, *, after: str | None, limit: int, newest_first: bool, status: str | None = None
    ) -> tuple[list[EvalRun], bool]:
        ids: list[str] = (self.r.zrevrange if newest_first else self.r.zrange)(self._index(eval_id), 0, -1)
        if after is not None:
            ids = ids[ids.index(after) + 1 :] if after in ids else []
        raws = self.r.mget([self._key(i) for i in ids]) if ids else []
        runs = [EvalRun.model_validate_json(r) for r in raws if r]
        runs = [r for r in runs if status is None or r.status == status]
        return runs[:limit], len(runs) > limit

    def run_ids(self, eval_id: str) -> list[str]:
        return list(self.r.zrange(self._index(eval_id), 0, -1))

    def delete(self, run: EvalRun) -> None:
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(*(self._key(run.id, part) for part in ("", "items", "counts", "lease", "events")))
        pipe.zrem(self._index(run.eval_id), run.id)
        pipe.srem(self._active, run.id)
        pipe.execute()

    def active_ids(self) -> list[str]:
        return sorted(self.r.smembers(self._active))

    # -- items -----------------------------------------------------------------------------------------------------

    def add_item(self, run_id: str, item: GradedItem) -> bool:
        """Store one graded item and count it, unless that index is already graded (then nothing changes)."""
        bumps = [OUTCOME[item.status], *(f"{r.name}{_SEP}{'passed' if r.passed else 'failed'}" for r in item.results)]
        keys = [self._key(run_id, "items"), self._key(run_id, "counts")]
        return bool(self._add_item(keys=keys, args=[item.index, item.model_dump_json(), *bumps]))

    def done_indices(self, run_id: str) -> set[int]:
        return {int(i) for i in self.r.hkeys(self._key(run_id, "items"))}

    def counts(self, run_id: str) -> dict[str, int]:
        return {k: int(v) for k, v in self.r.hgetall(self._key(run_id, "counts")).items()}

    def counts_many(self, run_ids: list[str]) -> list[dict[str, int]]:
        pipe = self.r.pipeline(transaction=False)
        for run_id in run_ids:
            pipe.hgetall(self._key(run_id, "counts"))
        return [{k: int(v) for k, v in got.items()} for got in pipe.execute()]

    def items(self, run_id: str) -> dict[int, GradedItem]:
        raws = self.r.hgetall(self._key(run_id, "items")).items()
        return {int(i): GradedItem.model_validate_json(raw) for i, raw in raws}

    def item(self, run_id: str, index: int) -> GradedItem | None:
        raw = self.r.hget(self._key(run_id, "items"), index)
        return GradedItem.model_validate_json(raw) if raw else None

    # -- lease and events ------------------------------------------------------------------------------------------

    def claim(self, run_id: str, owner: str, lease_s: float) -> bool:
        """Take the run's lease (or keep it, if ``owner`` holds it already)."""
        return self.leases.claim(self._key(run_id, "lease"), owner, lease_s, keep=True)

    def renew(self, run_id: str, owner: str, lease_s: float) -> bool:
        return self.leases.renew(self._key(run_id, "lease"), owner, lease_s)

    def release(self, run_id: str, owner: str) -> None:
        self.leases.release(self._key(run_id, "lease"), owner)

    def leased(self, run_id: str) -> bool:
        return bool(self.r.exists(self._key(run_id, "lease")))

    def add_event(
        self,
        run_id: str,
        message: str,
        *,
        level: str = "info",
        type: str = "message",
        data: dict[str, Any] | None = None,
    ) -> None:
        self.r.rpush(self._key(run_id, "events"), json.dumps(event_record(message, level=level, type=type, data=data)))

    def events(self, run_id: str) -> list[dict[str, Any]]:
        return [json.loads(raw) for raw in self.r.lrange(self._key(run_id, "events"), 0, -1)]
