"""The job state machine: every transition a worker, the gateway or the maintenance loop makes, as a CAS rule.

``validating_files -> queued -> running -> succeeded | failed | cancelled``, plus ``paused``. A worker holds a lease
(owner + expiry, renewed by heartbeat) while it trains; only the lease holder can move a running job forward. The
reaper returns a running job whose lease expired to the queue (the next claim counts an attempt) or fails it after
``max_attempts``; the reconciler re-enqueues queued jobs that the broker no longer holds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sage_ft.jobs.model import TERMINAL, Job, JobError, JobStatus, now
from sage_ft.jobs.store import JobConflictError, JobStore

log = logging.getLogger(__name__)
Enqueue = Callable[[Job], None]


class Claim:
    """Why a delivery did not get the job (``job`` None) or the claimed job."""

    def __init__(self, job: Job | None, reason: str) -> None:
        self.job = job
        self.reason = reason


def claim(store: JobStore, job_id: str, owner: str, lease_s: float) -> Claim:
    """Take the job for ``owner``: attempt + 1, status running, lease until now + ``lease_s``.

    A delivery that finds the job finished, paused, cancelled, or running under someone else's live lease gets no
    job and must exit with no side effects.
    """
    reason = "claimed"

    def rule(job: Job) -> Job | None:
        nonlocal reason
        t = now()
        if job.terminal or job.status in (JobStatus.PAUSED, JobStatus.VALIDATING_FILES):
            reason = f"job is {job.status.value}"
            return None
        if job.status == JobStatus.RUNNING and job.lease_live(t) and job.lease_owner != owner:
            reason = "another worker holds a live lease"
            return None
        ended = _end_if_cancelled_or_spent(job)
        if ended is not None:
            reason = "cancelled before it started" if ended.status == JobStatus.CANCELLED else "out of attempts"
            return ended
        job.status = JobStatus.RUNNING
        job.attempt += 1
        job.lease_owner = owner
        job.lease_expires_at = t + lease_s
        job.started_at = job.started_at or t
        job.pause_requested = False
        job.stop_requested_at = None
        reason = "claimed"
        return job

    job = store.update(job_id, rule)
    if reason != "claimed":
        if job.terminal and reason in ("cancelled before it started", "out of attempts"):
            store.add_event(job_id, f"Job {job.status.value}: {reason}", level="warn" if job.error else "info")
        return Claim(None, reason)
    return Claim(job, reason)


def heartbeat(store: JobStore, job_id: str, owner: str, lease_s: float, **progress: Any) -> Job | None:
    """Renew the lease (and record progress fields). None when the lease is no longer ours: stop at once."""
    lost = False

    def rule(job: Job) -> Job | None:
        nonlocal lost
        if job.status != JobStatus.RUNNING or job.lease_owner != owner:
            lost = True
            return None
        job.lease_expires_at = now() + lease_s
        for key, value in progress.items():
            setattr(job, key, value)
        return job

    job = store.update(job_id, rule)
    return None if lost else job


def finish(
    store: JobStore,
    job_id: str,
    owner: str,
    status: JobStatus,
    error: JobError | None = None,
    events: list[dict[str, Any]] | None = None,
    **fields: Any,
) -> Job | None:
    """Move our running job to ``status`` (succeeded/failed/cancelled/paused/queued). None if it is not ours.
    ``events`` are recorded with the change, in one transaction."""
    ours = True

    def rule(job: Job) -> Job | None:
        nonlocal ours
        if job.status != JobStatus.RUNNING or job.lease_owner != owner:
            ours = False
            return None
        for key, value in fields.items():
            setattr(job, key, value)
        if status in TERMINAL:
            return _finish(job, status, error)
        job.status = status
        job.lease_owner = None
        job.lease_expires_at = 0.0
        job.pause_requested = False
        return job

    job = store.update(job_id, rule, events)
    if ours and status == JobStatus.SUCCEEDED:
        try:
            store.record_run(job)  # the estimate's history; losing one entry costs nothing
        except Exception:
            log.warning("job %s: throughput not recorded", job_id, exc_info=True)
    return job if ours else None


def finish_pause(store: JobStore, job_id: str, owner: str, step: int) -> JobStatus | None:
    """Our trainer stopped for a pause: the job becomes ``paused``, unless a resume arrived while it was stopping
    (the resume cleared ``pause_requested``). An accepted resume wins: the job goes back to the queue, to continue
    from the checkpoint just written. Returns the status set, None if the job is not ours."""
    result: JobStatus | None = None

    def rule(job: Job) -> Job | None:
        nonlocal result
        if job.status != JobStatus.RUNNING or job.lease_owner != owner:
            return None
        result = JobStatus.PAUSED if job.pause_requested else JobStatus.QUEUED
        job.status, job.step = result, step
        job.lease_owner, job.lease_expires_at, job.pause_requested = None, 0.0, False
        if result == JobStatus.QUEUED:
            job.enqueued_at = 0.0  # the reconciler re-enqueues it at once: not in the broker
        return job

    store.update(job_id, rule)
    return result


def _end_if_cancelled_or_spent(job: Job) -> Job | None:
    """Before (re)starting a job: honour a pending cancel, or fail it once every attempt has been used."""
    if job.cancel_requested:
        return _finish(job, JobStatus.CANCELLED)
    if job.attempt >= job.max_attempts:
        return _finish(
            job,
            JobStatus.FAILED,
            JobError(
                code="worker_lost",
                message=(
                    f"the worker training this job stopped {job.attempt} times without finishing; giving up after "
                    f"{job.max_attempts} attempts"
                ),
            ),
        )
    return None


def _finish(job: Job, status: JobStatus, error: JobError | None = None) -> Job:
    job.status = status
    job.error = error
    job.finished_at = now()
    job.lease_owner = None
    job.lease_expires_at = 0.0
    job.estimated_finish = None
    return job


# -- requests from users (through the gateway) ----------------------------------------------------------------


def _request(store: JobStore, job_id: str, flag: str, now_or_never: Callable[[Job], Job | None], what: str) -> Job:
    """A user's cancel or pause: a running job gets ``flag`` (its trainer checks it every step); any other
    unfinished job is moved at once by ``now_or_never``; a finished one is a conflict."""

    def rule(job: Job) -> Job | None:
        if job.terminal:
            raise JobConflictError(f"job {job_id} is already {job.status.value}", job)
        if job.status == JobStatus.RUNNING:
            setattr(job, flag, True)
            job.stop_requested_at = job.stop_requested_at or now()  # the trainer measures its stop from here
            return job
        return now_or_never(job)

    job = store.update(job_id, rule)
    store.add_event(job_id, f"{what} requested" if job.status == JobStatus.RUNNING else f"Job {job.status.value}")
    return job


def request_cancel(store: JobStore, job_id: str) -> Job:
    """Queued or paused jobs are cancelled at once; a running one stops within a step or two, publishing nothing."""

    def cancel_now(job: Job) -> Job:
        job.cancel_requested = True
        return _finish(job, JobStatus.CANCELLED)

    return _request(store, job_id, "cancel_requested", cancel_now, "Cancellation")


def request_pause(store: JobStore, job_id: str) -> Job:
    """A running job checkpoints and stops; a queued one is parked. ``resume`` re-queues either."""

    def pause_now(job: Job) -> Job | None:
        if job.status == JobStatus.PAUSED:
            return None
        job.status = JobStatus.PAUSED
        return job

    return _request(store, job_id, "pause_requested", pause_now, "Pause")


def request_resume(store: JobStore, job_id: str, enqueue: Enqueue) -> Job:
    changed = False

    def rule(job: Job) -> Job | None:
        nonlocal changed
        if job.terminal:
            raise JobConflictError(f"job {job_id} is already {job.status.value}", job)
        if job.status != JobStatus.PAUSED:
            job.pause_requested = False
            changed = False
            return job
        job.status = JobStatus.QUEUED
        job.enqueued_at = now()
        changed = True
        return job

    job = store.update(job_id, rule)
    if changed:
        store.add_event(job_id, "Job resumed")
        enqueue(job)
    return job


# -- maintenance ------------------------------------------------------------------------------------------------


def reap(store: JobStore, enqueue: Enqueue) -> list[str]:
    """Running jobs whose lease expired go back to the queue, or fail after ``max_attempts``."""
    moved = []
    for job_id in store.active_ids():
        outcome = ""

        def rule(job: Job) -> Job | None:
            nonlocal outcome
            outcome = ""
            if job.status != JobStatus.RUNNING or job.lease_live():
                return None
            ended = _end_if_cancelled_or_spent(job)
            if ended is not None:
                outcome = ended.status.value
                return ended
            job.status = JobStatus.QUEUED
            job.lease_owner = None
            job.enqueued_at = now()
            outcome = "requeued"
            return job

        try:
            job = store.update(job_id, rule)
        except KeyError:
            continue
        if outcome == "requeued":
            store.add_event(job_id, f"Worker lost during attempt {job.attempt}; job re-queued", level="warn")
            enqueue(job)
            moved.append(job_id)
        elif outcome:
            store.add_event(job_id, job.error.message if job.error else f"Job {outcome}", level="error")
    return moved


def reconcile(store: JobStore, enqueue: Enqueue, in_broker: Callable[[str], bool], after_s: float) -> list[str]:
    """Re-enqueue queued jobs enqueued more than ``after_s`` ago that the broker no longer holds."""
    fixed = []
    for job_id in store.active_ids():
        job = store.get_job(job_id)
        if job is None or job.status != JobStatus.QUEUED:
            continue
        if job.enqueued_at and job.enqueued_at > now() - after_s:
            continue
        if in_broker(job_id):
            continue

        def rule(current: Job) -> Job | None:
            if current.status != JobStatus.QUEUED:
                return None
            current.enqueued_at = now()
            return current

        job = store.update(job_id, rule)
        if job.status == JobStatus.QUEUED:
            log.warning("re-enqueueing %s: the broker does not hold it", job_id)
            enqueue(job)
            fixed.append(job_id)
    return fixed
