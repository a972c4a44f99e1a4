"""How an eval run moves: queued -> in_progress -> completed | failed | canceled, every step a compare-and-set.

The gateway queues and cancels; a worker starts and finishes; the gateway's reaper hands a run whose worker died
back to the queue (its graded items stay: the next worker grades only the rest), or fails it after
``max_attempts`` deliveries.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sage_ft.evals.runstore import ACTIVE_RUN, EvalRun, RunStatus, RunStore
from sage_ft.jobs.model import now
from sage_ft.jobs.store import JobConflictError

log = logging.getLogger(__name__)
Enqueue = Callable[[EvalRun], None]


def start(runs: RunStore, run_id: str) -> EvalRun | None:
    """The worker holding the lease begins an attempt; None if the run is no longer active."""
    started = False

    def rule(run: EvalRun) -> EvalRun | None:
        nonlocal started
        started = run.status in ACTIVE_RUN
        if not started:
            return None
        run.status, run.attempts = "in_progress", run.attempts + 1
        run.started_at = run.started_at or now()
        return run

    run = runs.update(run_id, rule)
    return run if started else None


def finish(runs: RunStore, run_id: str, status: RunStatus, error: dict[str, str] | None = None) -> EvalRun:
    """End an attempt; a run cancelled meanwhile stays cancelled."""

    def rule(run: EvalRun) -> EvalRun | None:
        if run.status not in ACTIVE_RUN:
            return None
        run.status, run.error, run.finished_at = status, error, now()
        return run

    return runs.update(run_id, rule)


def cancel(runs: RunStore, run_id: str) -> EvalRun:
    """A user's cancel: the worker sees it before its next item and stops."""

    def rule(run: EvalRun) -> EvalRun | None:
        if run.status == "canceled":
            return None
        if run.status not in ACTIVE_RUN:
            raise JobConflictError(
                f"Run {run_id} is already {run.status}; only a queued or running run can be canceled."
            )
        run.status, run.finished_at = "canceled", now()
        return run

    run = runs.update(run_id, rule)
    runs.add_event(run_id, "run canceled", type="canceled")
    return run


def reap(
    runs: RunStore, enqueue: Enqueue, max_attempts: int, in_broker: Callable[[str], bool], reconcile_after_s: float
) -> list[str]:
    """Runs whose worker died (in progress, lease gone) and queued runs the broker lost go back to the queue."""
    moved = []
    for run_id in runs.active_ids():
        run = runs.get(run_id)
        if run is None:
            continue
        if run.status == "in_progress" and not runs.leased(run_id):
            outcome = _requeue_lost(runs, run_id, max_attempts)
        elif run.status == "queued" and run.enqueued_at < now() - reconcile_after_s and not in_broker(run_id):
            outcome = _touch_queued(runs, run_id)
        else:
            continue
        if outcome is None:
            continue
        if outcome.status == "queued":
            enqueue(outcome)
            moved.append(run_id)
    return moved


def _requeue_lost(runs: RunStore, run_id: str, max_attempts: int) -> EvalRun | None:
    changed = False

    def rule(run: EvalRun) -> EvalRun | None:
        nonlocal changed
        changed = run.status == "in_progress" and not runs.leased(run_id)
        if not changed:
            return None
        if run.attempts >= max_attempts:
            run.status, run.finished_at = "failed", now()
            run.error = {
                "code": "worker_lost",
                "message": f"The worker running this eval was lost {run.attempts} "
                "times; the items graded so far are kept.",
            }
        else:
            run.status, run.enqueued_at = "queued", now()
        return run

    run = runs.update(run_id, rule)
    if not changed:
        return None
    if run.status == "queued":
        runs.add_event(
            run_id,
            f"worker lost during attempt {run.attempts}; run re-queued (graded items are kept)",
            level="warn",
            type="requeued",
        )
        log.warning("eval run %s re-queued: its worker's lease ran out", run_id)
    else:
        runs.add_event(run_id, run.error["message"] if run.error else "run failed", level="error", type="failed")
    return run


def _touch_queued(runs: RunStore, run_id: str) -> EvalRun | None:
    changed = False

    def rule(run: EvalRun) -> EvalRun | None:
        nonlocal changed
        changed = run.status == "queued"
        if not changed:
            return None
        run.enqueued_at = now()
        return run

    run = runs.update(run_id, rule)
    if changed:
        log.warning("re-enqueueing eval run %s: the broker does not hold it", run_id)
    return run if changed else None
