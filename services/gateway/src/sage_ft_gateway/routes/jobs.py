"""``/v1/fine_tuning/jobs``: OpenAI's fine-tuning API, plus pause/resume and an SSE event stream."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Header, Query, Request
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.concurrency import run_in_threadpool

from sage_ft.api_errors import error_responses
from sage_ft.jobs.model import TERMINAL
from sage_ft.jobs.spec import JobRequest
from sage_ft_gateway.deps import Svc, Tenant
from sage_ft_gateway.errors import ApiError
from sage_ft_gateway.protocol.jobs import (
    CheckpointList,
    EventList,
    FineTuningJob,
    JobEstimate,
    JobEvent,
    JobList,
    event_seq,
)
from sage_ft_gateway.protocol.params import IdPath, sse_response

_SHUTDOWN_CHECK_S = 0.5  # how often an idle stream looks for a shutdown
_SETTLE_S = 2.0  # a job's last events (model created, completed) are written just after its status: wait for them
router = APIRouter(prefix="/v1/fine_tuning/jobs", tags=["fine-tuning"], responses=error_responses(400, 401, 404, 503))
Limit = Annotated[int, Query(ge=1, le=100)]
JobCursor = Annotated[str | None, Query(pattern=r"^ftjob-[0-9a-f]{1,64}$", description="A job id: list after it.")]
EventCursor = Annotated[str | None, Query(pattern=r"^ftevent-[0-9a-f]{1,64}-[0-9]{1,12}$")]
# declared as a plain string (not nullable) with its pattern, so the contract says exactly what is accepted
LastEventId = Annotated[str, Header(pattern=r"^([0-9]{1,11}|ftevent-[0-9a-f]{1,64}-[0-9]{1,12})$")]
CheckpointCursor = Annotated[str | None, Query(pattern=r"^ftckpt-[0-9a-f]{1,64}-[0-9]{1,12}$")]


@router.post("", response_model=FineTuningJob | JobEstimate)
def create_job(
    body: JobRequest, tenant: Tenant, svc: Svc, idempotency_key: Annotated[str | None, Header(max_length=256)] = None
) -> FineTuningJob | dict[str, Any]:
    """Create a job; with ``dry_run: true``, return its estimate (tokens, steps, seconds, peak memory) instead."""
    if body.dry_run:
        return svc.estimates.estimate(tenant, body)
    job, _ = svc.jobs.create(tenant, body, idempotency_key)
    return FineTuningJob.from_job(job)


@router.get("", response_model=JobList)
def list_jobs(request: Request, tenant: Tenant, svc: Svc, after: JobCursor = None, limit: Limit = 20) -> dict[str, Any]:
    metadata = {
        k[len("metadata[") : -1]: v
        for k, v in request.query_params.items()
        if k.startswith("metadata[") and k.endswith("]")
    }
    return svc.jobs.list(tenant, after, limit, metadata)


@router.get("/{job_id}", response_model=FineTuningJob)
def get_job(job_id: IdPath, tenant: Tenant, svc: Svc) -> FineTuningJob:
    return FineTuningJob.from_job(svc.jobs.get(tenant, job_id))


@router.post("/{job_id}/cancel", response_model=FineTuningJob, responses=error_responses(409))
def cancel_job(job_id: IdPath, tenant: Tenant, svc: Svc) -> FineTuningJob:
    return FineTuningJob.from_job(svc.jobs.cancel(tenant, job_id))


@router.post("/{job_id}/pause", response_model=FineTuningJob, responses=error_responses(409))
def pause_job(job_id: IdPath, tenant: Tenant, svc: Svc) -> FineTuningJob:
    return FineTuningJob.from_job(svc.jobs.pause(tenant, job_id))


@router.post("/{job_id}/resume", response_model=FineTuningJob, responses=error_responses(409))
def resume_job(job_id: IdPath, tenant: Tenant, svc: Svc) -> FineTuningJob:
    return FineTuningJob.from_job(svc.jobs.resume(tenant, job_id))


@router.get("/{job_id}/events", response_model=EventList)
def list_events(
    job_id: IdPath, tenant: Tenant, svc: Svc, after: EventCursor = None, limit: Limit = 20
) -> dict[str, Any]:
    return svc.jobs.events(tenant, job_id, after, limit)


@router.get("/{job_id}/checkpoints", response_model=CheckpointList)
def list_checkpoints(
    job_id: IdPath, tenant: Tenant, svc: Svc, after: CheckpointCursor = None, limit: Limit = 10
) -> dict[str, Any]:
    return svc.jobs.checkpoints(tenant, job_id, after, limit)


def resume_point(job_id: str, last_event_id: str | None) -> int:
    if not last_event_id:
        return 0
    if last_event_id.isdigit() and len(last_event_id) < 12:
        return int(last_event_id)
    if event_seq(last_event_id) is None:
        raise ApiError(
            400,
            "Last-Event-ID: expected an event id of this job (ftevent-...-<n>) or the stream's sequence number",
            param="Last-Event-ID",
            code="invalid_request",
        )
    seq = event_seq(last_event_id, job_id)
    if seq is None:  # well formed, another job's: as `after`
        raise ApiError(
            404,
            f"Last-Event-ID: '{last_event_id}' is not an event id of this job.",
            param="Last-Event-ID",
            code="event_not_found",
        )
    return seq


@router.get(
    "/{job_id}/events/stream",
    response_class=EventSourceResponse,
    responses=sse_response("fine_tuning.job.event frames, then an end frame (or a shutdown frame to resume)"),
)
async def stream_events(
    job_id: IdPath,
    tenant: Tenant,
    svc: Svc,
    last_event_id: LastEventId = None,  # type: ignore[assignment]
) -> EventSourceResponse:
    """Server-sent events, oldest first, until the job finishes. ``Last-Event-ID`` resumes after that event: the
    frame's SSE id (a sequence number) or the event's own id (``ftevent-<job hex>-<n>``); anything else is a 400.

    On shutdown (SIGTERM in a rollout) the stream ends at once with a ``shutdown`` event carrying the last id sent,
    so an SSE client reconnects to another replica and resumes where it stopped; nothing is sent twice or lost."""
    await run_in_threadpool(svc.jobs.get, tenant, job_id)
    start = resume_point(job_id, last_event_id)
    wait = svc.state.settings.gateway.sse_poll_seconds
    store = svc.state.jobs
    shutdown = anyio.Event()

    async def body() -> AsyncIterator[ServerSentEvent]:
        seq, idle = start, 0.0
        # subscribe before the first read, so nothing published in between is missed
        async with svc.state.subscribe(store.notify_channel(job_id)) as wake:
            while not shutdown.is_set():
                events = await run_in_threadpool(store.events_after, job_id, seq)
                for event in events:
                    seq = event.seq
                    data = JobEvent.from_record(job_id, event).model_dump_json()
                    yield ServerSentEvent(data=data, event="fine_tuning.job.event", id=str(seq))
                if events:
                    continue
                job = await run_in_threadpool(store.get_job, job_id)
                if job is not None and job.status in TERMINAL and (job.finished_at or 0) + _SETTLE_S > time.time():
                    await anyio.sleep(min(_SETTLE_S, job.finished_at + _SETTLE_S - time.time()))  # type: ignore[operator]
                    continue
                if job is None or job.status in TERMINAL:
                    yield ServerSentEvent(
                        data=FineTuningJob.from_job(job).model_dump_json() if job else "{}", event="end"
                    )
                    return
                idle = 0.0 if await wake(min(wait, _SHUTDOWN_CHECK_S)) else idle + min(wait, _SHUTDOWN_CHECK_S)
                if idle >= wait:
                    idle = 0.0
                    yield ServerSentEvent(comment="keep-alive")
        yield ServerSentEvent(
            data=json.dumps({"reason": "server shutting down", "last_event_id": seq}),
            event="shutdown",
            id=str(seq),
            retry=1000,
        )

    return EventSourceResponse(
        body(),
        ping=0,
        sep="\n",
        shutdown_event=shutdown,
        shutdown_grace_period=2.0,
        headers={"Cache-Control": "no-cache"},
    )
