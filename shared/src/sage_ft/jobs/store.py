"""The Redis job store: jobs, their events and checkpoints, uploaded-file records, idempotency keys.

Every change to a job goes through ``update``, a compare-and-set (WATCH/MULTI on the job key), so two workers,
or a worker and the gateway, can never both move one job: the loser re-reads and its rule decides again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any, TypeVar

import redis
from pydantic import BaseModel

from sage_ft.jobs.model import ACTIVE, CheckpointRecord, FileRecord, Job, JobEventRecord, now
from sage_ft.webhooks import JOB_EVENTS, record_event

IDEMPOTENCY_TTL = 24 * 3600


def event_record(
    message: str, *, level: str = "info", type: str = "message", data: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One stored event (the job id and sequence number are added when it is read)."""
    return {"created_at": now(), "level": level, "message": message, "type": type, "data": data or {}}


M = TypeVar("M", bound=BaseModel)

# Append values to a list once: KEYS[1] the job's hash of what each writer has sent (field ARGV[1]: the writer's
# newest sequence number), KEYS[2] the list; ARGV[2] the sequence number of ARGV[4], ARGV[3] a channel to tell
# ('' none). A value at or below the writer's newest number was written before (a reply lost to a dropped
# connection, then the same call again), so it is skipped. Returns the list's length.
_APPEND_ONCE = """
local last = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local first = tonumber(ARGV[2])
local added = 0
for i = 4, #ARGV do
  local seq = first + i - 4
  if seq > last then
    redis.call('RPUSH', KEYS[2], ARGV[i])
    last = seq
    added = added + 1
  end
end
if added > 0 then
  redis.call('HSET', KEYS[1], ARGV[1], last)
  if ARGV[3] ~= '' then redis.call('PUBLISH', ARGV[3], 'event') end
end
return redis.call('LLEN', KEYS[2])
"""


def compare_and_set(
    r: Any, key: str, ident: str, model: type[M], rule: Callable[[M], M | None], write: Callable[[Any, M, M], None]
) -> M:
    """The one compare-and-set of the store (jobs, eval runs), on redis-py's ``transaction``: WATCH ``key``, let
    ``rule`` decide from a copy of the current record (None: no change), then ``write`` (commands queued on the MULTI
    pipeline, the record's own SET included) runs atomically; another writer in between makes the whole thing start
    again. A missing record raises ``KeyError(ident)``.

    A connection lost during EXEC starts it again too (redis-py raises ``WatchError`` when a watching connection
    drops), though Redis may have run the EXEC and only its reply was lost. Then the record is found exactly as this
    call wrote it, and that write is the result: the rule is not asked again (it would see its own change as someone
    else's and call the job not ours)."""
    written: list[str] = []

    def attempt(pipe: Any) -> M:
        raw = pipe.get(key)
        if raw is None:
            raise KeyError(ident)
        if written and raw == written[-1]:
            return model.model_validate_json(raw)
        current = model.model_validate_json(raw)
        new = rule(current.model_copy(deep=True))
        if new is None:
            return current
        pipe.multi()
        write(pipe, current, new)
        written.append(new.model_dump_json())  # what ``write`` queued: the same model, serialized the same way
        return new

    result: M = r.transaction(attempt, key, value_from_callable=True)
    return result


class JobConflictError(Exception):
    """A transition's rule refused the job's current state (e.g. cancelling a finished job)."""

    def __init__(self, message: str, job: Job | None = None) -> None:
        super().__init__(message)
        self.job = job


class JobStore:
    def __init__(self, client: redis.Redis, prefix: str = "sage") -> None:
        self.r: Any = client  # decode_responses=True: strings in, strings out
        self.p = prefix
        self._append_once = self.r.register_script(_APPEND_ONCE)

    @classmethod
    def from_url(cls, url: str, prefix: str = "sage", ride_out_s: float = 0.0) -> JobStore:
        """``ride_out_s`` > 0: each command retries a lost connection with backoff for about that long, so a worker
        rides out a Redis restart; a request path (the gateway) keeps the default and fails fast instead."""
        options: dict[str, Any] = {}
        if ride_out_s > 0:
            from redis.backoff import ExponentialBackoff
            from redis.retry import Retry

            options["retry"] = Retry(ExponentialBackoff(cap=1.0, base=0.1), retries=int(ride_out_s) + 4)
            options["retry_on_error"] = [redis.ConnectionError, redis.TimeoutError]
        client = redis.Redis.from_url(
            url, decode_responses=True, socket_timeout=10, socket_connect_timeout=5, health_check_interval=30, **options
        )
        return cls(client, prefix)

    def ping(self) -> bool:
        return bool(self.r.ping())

    # -- keys ----------------------------------------------------------------------------------------------------

    def _job(self, job_id: str) -> str:
        return f"{self.p}:job:{job_id}"

    def notify_channel(self, job_id: str) -> str:
        """Pub/sub channel told of every event and state change of a job, so event streams are pushed, not polled."""
        return f"{self._job(job_id)}:notify"

    def _tenant(self, tenant: str, what: str) -> str:
        return f"{self.p}:t:{tenant}:{what}"

    # -- jobs ----------------------------------------------------------------------------------------------------

    def _secrets(self, job_id: str) -> str:
        return f"{self._job(job_id)}:secrets"

    def secrets(self, job_id: str) -> dict[str, str]:
        """The job's sealed secrets (``sage_ft.jobs.secrets``), by environment variable; gone once it ends."""
        return dict(self.r.hgetall(self._secrets(job_id)))

    def create_job(
        self, job: Job, idempotency_key: str | None = None, sealed: dict[str, str] | None = None
    ) -> tuple[Job, bool]:
        """Record a new job (with its sealed secrets, in the same transaction); with an idempotency key seen
        before, return that job instead (``created`` False)."""
        if idempotency_key:
            digest = hashlib.sha256(idempotency_key.encode()).hexdigest()
            idem = self._tenant(job.tenant, f"idem:{digest}")
            if not self.r.set(idem, job.id, nx=True, ex=IDEMPOTENCY_TTL):
                existing_id = self.r.get(idem)
                existing = self.get_job(existing_id) if existing_id else None
                if existing is not None:
                    return existing, False
                self.r.set(idem, job.id, ex=IDEMPOTENCY_TTL)
        pipe = self.r.pipeline(transaction=True)
        pipe.set(self._job(job.id), job.model_dump_json())
        if sealed:
            pipe.hset(self._secrets(job.id), mapping=sealed)
        pipe.zadd(self._tenant(job.tenant, "jobs"), {job.id: job.created_at})
        pipe.sadd(f"{self.p}:active", job.id)
        pipe.sadd(self._tenant(job.tenant, "bases"), job.root_model)
        pipe.execute()
        return job, True

    def get_job(self, job_id: str) -> Job | None:
        raw = self.r.get(self._job(job_id))
        return Job.model_validate_json(raw) if raw else None

    def get_jobs(self, job_ids: list[str]) -> dict[str, Job]:
        """Several jobs in one round trip, by id (missing ones left out)."""
        raws = self.r.mget([self._job(i) for i in job_ids]) if job_ids else []
        return {i: Job.model_validate_json(raw) for i, raw in zip(job_ids, raws, strict=True) if raw}

    def get_for(self, tenant: str, job_id: str) -> Job | None:
        """The job if it belongs to ``tenant``; another tenant's job looks exactly like a missing one."""
        job = self.get_job(job_id)
        return job if job is not None and job.tenant == tenant else None

    def update(self, job_id: str, rule: Callable[[Job], Job | None], events: list[dict[str, Any]] | None = None) -> Job:
        """Compare-and-set: ``rule`` gets the current job and returns the new one (None: leave it as is).

        ``rule`` may raise ``JobConflictError``. It can run more than once if another writer got there first.
        ``events`` (from ``event_record``) are appended in the same transaction, only if the job changed: a reader
        that sees the new state sees them too.
        """

        def write(pipe: Any, current: Job, new: Job) -> None:
            new.version = current.version + 1
            pipe.set(self._job(job_id), new.model_dump_json())
            if events:
                pipe.rpush(f"{self._job(job_id)}:events", *(json.dumps(e) for e in events))
            pipe.publish(self.notify_channel(job_id), "job")
            if new.status in ACTIVE:
                pipe.sadd(f"{self.p}:active", job_id)
            else:
                pipe.srem(f"{self.p}:active", job_id)
                pipe.delete(self._secrets(job_id))  # a finished job needs no secret: none is kept
                if current.status in ACTIVE:
                    pipe.hincrby(f"{self.p}:stats:finished", new.status.value, 1)
                    pipe.zadd(self._finished, {job_id: new.finished_at or now()})
                    # the webhook event, in the same MULTI as the transition it reports (the outbox)
                    kind = JOB_EVENTS[new.status.value]
                    record_event(pipe, self.p, new.tenant, kind, job_id, new.finished_at or now())

        return compare_and_set(self.r, self._job(job_id), job_id, Job, rule, write)

    def list_jobs(
        self, tenant: str, *, after: str | None = None, limit: int = 20, metadata: dict[str, str] | None = None
    ) -> tuple[list[Job], bool]:
        """Newest first; ``after`` is the last id of the previous page."""
        key = self._tenant(tenant, "jobs")
        start = 0
        if after:
            rank = self.r.zrevrank(key, after)
            if rank is None:
                return [], False
            start = rank + 1
        out: list[Job] = []
        batch = max(limit * 2, 50)
        while len(out) <= limit:
            ids = self.r.zrevrange(key, start, start + batch - 1)
            if not ids:
                break
            start += len(ids)
            for raw in self.r.mget([self._job(i) for i in ids]):
                if raw is None:
                    continue
                job = Job.model_validate_json(raw)
                if metadata and any((job.metadata or {}).get(k) != v for k, v in metadata.items()):
                    continue
                out.append(job)
        return out[:limit], len(out) > limit

    @property
    def _finished(self) -> str:
        return f"{self.p}:finished"

    def purge_finished(self, ended_before: float, limit: int = 500) -> list[str]:
        """Delete jobs that ended before ``ended_before`` (record, events, checkpoint list, tenant index): the
        retention of finished work, so Redis does not grow with every job ever run."""
        ids = self.r.zrangebyscore(self._finished, "-inf", ended_before, start=0, num=limit)
        for job_id in ids:
            job = self.get_job(job_id)
            pipe = self.r.pipeline(transaction=True)
            if job is not None and job.status not in ACTIVE:
                keys = [
                    self._job(job_id),
                    *(f"{self._job(job_id)}:{part}" for part in ("events", "ckpts", "secrets", "sent")),
                ]
                pipe.delete(*keys)
                pipe.zrem(self._tenant(job.tenant, "jobs"), job_id)
            pipe.zrem(self._finished, job_id)
            pipe.execute()
        return list(ids)

    def active_ids(self) -> list[str]:
        return sorted(m for m in self.r.smembers(f"{self.p}:active"))

    def base_models(self, tenant: str) -> list[str]:
        return sorted(m for m in self.r.smembers(self._tenant(tenant, "bases")))

    # -- throughput history (for estimates) -------------------------------------------------------------------------

    RUNS_KEPT = 20

    def _runs(self, base_model: str, preset: str) -> str:
        return f"{self.p}:runs:{base_model}|{preset}"

    def record_run(self, job: Job) -> None:
        """A succeeded job's trained tokens and wall seconds, newest first, kept per base model and preset for every
        tenant (speeds only: no names, files or data)."""
        if not job.trained_tokens or not job.started_at or not job.finished_at or job.attempt > 1:
            return  # a retried or resumed job's wall time and runtime cover different spans
        key = self._runs(job.root_model, str(job.spec.get("preset") or "auto"))
        entry = json.dumps(
            {
                "tokens": job.trained_tokens,
                "seconds": round(job.finished_at - job.started_at, 3),
                "train_seconds": job.train_seconds,
            }
        )
        self.r.pipeline().lpush(key, entry).ltrim(key, 0, self.RUNS_KEPT - 1).execute()

    def recent_runs(self, base_model: str, preset: str) -> list[dict[str, Any]]:
        return [json.loads(raw) for raw in self.r.lrange(self._runs(base_model, preset), 0, -1)]

    # -- events and checkpoints -----------------------------------------------------------------------------------

    def add_event(
        self,
        job_id: str,
        message: str,
        *,
        level: str = "info",
        type: str = "message",
        data: dict[str, Any] | None = None,
    ) -> int:
        """Append an event; its sequence number (1-based position) is its stable id."""
        return self.add_events(job_id, [event_record(message, level=level, type=type, data=data)])

    def add_events(self, job_id: str, records: list[dict[str, Any]], *, once: tuple[str, int] | None = None) -> int:
        """Append events (from ``event_record``) in one round trip with one notification; returns the last seq.

        ``once`` (writer, the sequence number that writer gave ``records[0]``): a record that writer sent before is
        not appended again, so a writer resending after a lost reply (a Redis restart mid-call) adds no duplicate.
        """
        if not records:
            return int(self.r.llen(f"{self._job(job_id)}:events"))
        values = [json.dumps(r) for r in records]
        if once is not None:
            return self._append_list(job_id, "events", once, values, self.notify_channel(job_id))
        pipe = self.r.pipeline(transaction=False)
        pipe.rpush(f"{self._job(job_id)}:events", *values)
        pipe.publish(self.notify_channel(job_id), "event")
        return int(pipe.execute()[0])

    def _append_list(self, job_id: str, part: str, once: tuple[str, int], values: list[str], channel: str) -> int:
        writer, first = once
        keys = [f"{self._job(job_id)}:sent", f"{self._job(job_id)}:{part}"]
        return int(self._append_once(keys=keys, args=[f"{part}:{writer}", first, channel, *values]))

    def events_after(self, job_id: str, seq: int = 0, limit: int = 1000) -> list[JobEventRecord]:
        """Oldest first, those with sequence number > ``seq`` (for streaming)."""
        raws = self.r.lrange(f"{self._job(job_id)}:events", seq, seq + limit - 1)
        return [JobEventRecord(seq=seq + i + 1, **json.loads(r)) for i, r in enumerate(raws)]

    def events_page(
        self, job_id: str, *, before: int | None = None, limit: int = 20
    ) -> tuple[list[JobEventRecord], bool]:
        """Newest first, as OpenAI lists them; ``before`` is the sequence number of the previous page's last event."""
        total = int(self.r.llen(f"{self._job(job_id)}:events"))
        end = min(total, before - 1) if before is not None else total  # exclusive upper seq bound + 1
        if end <= 0:
            return [], False
        start = max(0, end - limit)
        raws = self.r.lrange(f"{self._job(job_id)}:events", start, end - 1)
        events = [JobEventRecord(seq=start + i + 1, **json.loads(r)) for i, r in enumerate(raws)]
        return list(reversed(events)), start > 0

    def add_checkpoint(self, checkpoint: CheckpointRecord, *, once: tuple[str, int]) -> None:
        """``once``: as for ``add_events`` (the writer, the number it gave this checkpoint), so a resend after a lost
        reply lists the checkpoint once."""
        self._append_list(checkpoint.job_id, "ckpts", once, [checkpoint.model_dump_json()], "")

    def clear_checkpoints(self, job_id: str) -> None:
        self.r.delete(f"{self._job(job_id)}:ckpts")

    def checkpoints(self, job_id: str) -> list[CheckpointRecord]:
        """Oldest first."""
        return [CheckpointRecord.model_validate_json(r) for r in self.r.lrange(f"{self._job(job_id)}:ckpts", 0, -1)]

    # -- files ---------------------------------------------------------------------------------------------------

    def put_file(self, record: FileRecord) -> None:
        pipe = self.r.pipeline(transaction=True)
        pipe.set(f"{self.p}:file:{record.id}", record.model_dump_json())
        pipe.zadd(self._tenant(record.tenant, "files"), {record.id: record.created_at})
        pipe.execute()

    def get_file(self, tenant: str, file_id: str) -> FileRecord | None:
        raw = self.r.get(f"{self.p}:file:{file_id}")
        record = FileRecord.model_validate_json(raw) if raw else None
        return record if record is not None and record.tenant == tenant else None

    def list_files(self, tenant: str, limit: int = 10000) -> list[FileRecord]:
        ids = self.r.zrevrange(self._tenant(tenant, "files"), 0, limit - 1)
        raws = self.r.mget([f"{self.p}:file:{i}" for i in ids]) if ids else []
        return [FileRecord.model_validate_json(r) for r in raws if r]

    def delete_file(self, record: FileRecord) -> None:
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(f"{self.p}:file:{record.id}")
        pipe.zrem(self._tenant(record.tenant, "files"), record.id)
        pipe.execute()

    # -- coordination --------------------------------------------------------------------------------------------

    def try_lock(self, name: str, owner: str, ttl_s: float) -> bool:
        """A short-lived mutex (e.g. one maintenance pass across gateway replicas)."""
        return bool(self.r.set(f"{self.p}:lock:{name}", owner, nx=True, px=int(ttl_s * 1000)))

    def active_jobs(self) -> list[Job]:
        """Every job not yet finished (queued, running, paused, validating)."""
        ids = self.active_ids()
        return [
            Job.model_validate_json(raw) for raw in (self.r.mget([self._job(i) for i in ids]) if ids else []) if raw
        ]

    def count_by_status(self, active: list[Job] | None = None) -> dict[str, int]:
        """Active jobs counted live, finished ones from running totals."""
        counts: dict[str, int] = {k: int(v) for k, v in self.r.hgetall(f"{self.p}:stats:finished").items()}
        for job in self.active_jobs() if active is None else active:
            counts[job.status.value] = counts.get(job.status.value, 0) + 1
        return counts
