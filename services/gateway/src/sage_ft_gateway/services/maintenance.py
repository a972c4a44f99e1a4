"""The reaper and reconciler, run periodically by the gateway (one replica at a time, under a Redis lock)."""

from __future__ import annotations

import asyncio
import logging

from sage_ft.evals import run_states
from sage_ft.jobs import job_states
from sage_ft.jobs.model import now
from sage_ft_gateway.state import GatewayState

log = logging.getLogger(__name__)


def run_once(state: GatewayState) -> dict[str, list[str]]:
    period = state.settings.gateway.maintenance_seconds
    if not state.jobs.try_lock("maintenance", state.instance, ttl_s=max(period * 0.9, 0.5)):
        return {"reaped": [], "reconciled": [], "eval_runs": [], "purged": []}
    reaped = job_states.reap(state.jobs, state.enqueue_train)
    reconciled = job_states.reconcile(
        state.jobs, state.enqueue_train, state.in_broker, state.settings.jobs.reconcile_after_seconds
    )
    jobs = state.settings.jobs
    runs = run_states.reap(
        state.eval_runs, state.enqueue_eval, jobs.max_attempts, state.eval_in_broker, jobs.reconcile_after_seconds
    )
    if reaped or reconciled or runs:
        log.warning("maintenance: re-queued %s, re-enqueued %s, eval runs re-queued %s", reaped, reconciled, runs)
    purged = (
        state.jobs.purge_finished(now() - jobs.finished_retention_seconds) if jobs.finished_retention_seconds else []
    )
    if purged:
        log.info("maintenance: %d finished jobs past their retention removed from Redis", len(purged))
    return {"reaped": reaped, "reconciled": reconciled, "eval_runs": runs, "purged": purged}


async def loop(state: GatewayState) -> None:
    while True:
        try:
            await asyncio.to_thread(run_once, state)
        except Exception:  # Redis down for a moment: try again next period
            log.exception("maintenance pass failed")
        await asyncio.sleep(state.settings.gateway.maintenance_seconds)
