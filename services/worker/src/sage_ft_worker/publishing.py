"""Publishing a finished training through a storage outage: the same attempt retries (tenacity, exponential backoff)
for as long as its lease holds, up to a budget. A fenced or lost commit is final and never retried, and so are
refused credentials."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_delay, stop_any, wait_exponential
from tenacity.stop import stop_base

from sage_ft.storage import StorageError
from sage_ft.storage.base import AccessDeniedError, PreconditionFailedError
from sage_ft.storage.manifest import PublishFencedError
from sage_ft_worker.lease import LeaseKeeper

log = logging.getLogger(__name__)
T = TypeVar("T")


def _transient(err: BaseException) -> bool:
    final = PublishFencedError | PreconditionFailedError | AccessDeniedError  # no retry changes these
    return isinstance(err, StorageError) and not isinstance(err, final)


def publish_with_retries(publish: Callable[[], T], keeper: LeaseKeeper, budget_s: float, job_id: str) -> T:
    class lost(stop_base):  # noqa: N801 - reads as the condition it is
        def __call__(self, state: RetryCallState) -> bool:
            return keeper.lost.is_set()

    def note(state: RetryCallState) -> None:
        err: Any = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0
        log.warning("job %s: publish failed (%s); retrying in %.0fs", job_id, err, wait)

    retrying = Retrying(
        retry=retry_if_exception(_transient),
        stop=stop_any(stop_after_delay(budget_s), lost()),
        wait=wait_exponential(multiplier=1, max=30),
        before_sleep=note,
        reraise=True,
    )
    return retrying(publish)
