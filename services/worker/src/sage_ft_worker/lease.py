"""The attempt's lease and its user flags, kept on threads of their own that never touch storage.

``LeaseKeeper`` renews the lease every ``heartbeat_seconds``. A Redis blip does not end the attempt: a failed
renewal is retried with backoff, and the lease counts as lost only when Redis says it is someone else's, or when no
renewal succeeded for a whole lease (then the reaper may already have handed the job on, so we must stop).

``FlagWatcher`` listens on the job's notify channel (the one event streams use), so a cancel or pause reaches the
trainer's ``STOP`` file within milliseconds instead of at the next poll. The heartbeat reads the flags too, which
covers a notification missed while Redis was away.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from sage_ft.jobs import JobStore, job_states
from sage_ft.jobs.model import Job

log = logging.getLogger(__name__)
# Redis away, or refusing writes at its memory limit (maxmemory with noeviction): both pass once an operator acts,
# and both are ridden out the same way (progress buffered, the lease kept while a whole lease has not passed)
REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError, redis.exceptions.OutOfMemoryError)
OnFlags = Callable[[Job], None]


class LeaseKeeper:
    def __init__(
        self, jobs: JobStore, job_id: str, owner: str, lease_s: float, every_s: float, on_flags: OnFlags
    ) -> None:
        self.jobs, self.job_id, self.owner = jobs, job_id, owner
        self.lease_s, self.every_s = lease_s, every_s
        self.on_flags = on_flags
        self.progress: dict[str, Any] = {}  # the newest step/total/tokens, written by the monitor, sent on renewal
        self.lost = threading.Event()
        self.renewed_at = time.monotonic()
        self.redis_errors = 0
        self._stop = threading.Event()
        self._pubsub: Any = None
        self._threads = [
            threading.Thread(target=self._beat, name=f"lease-{job_id}", daemon=True),
            threading.Thread(target=self._watch, name=f"flags-{job_id}", daemon=True),
        ]

    def __enter__(self) -> LeaseKeeper:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        pubsub = self._pubsub
        if pubsub is not None:  # wake the watcher out of its blocking read now, not at its next timeout
            with contextlib.suppress(Exception):
                pubsub.close()
        for thread in self._threads:
            thread.join(timeout=5)

    def renew(self) -> bool:
        """One renewal now; False if the lease is ours no longer. Redis errors propagate to the caller."""
        job = job_states.heartbeat(self.jobs, self.job_id, self.owner, self.lease_s, **self.progress)
        if job is None:
            self.lost.set()
            return False
        self.renewed_at = time.monotonic()
        self.on_flags(job)
        return True

    def holds(self) -> bool:
        """The fence before a commit: renew once, retrying a Redis blip while the lease can still be ours."""
        while not self.lost.is_set():
            try:
                return self.renew()
            except REDIS_DOWN as err:
                if not self._wait_out_blip(err):
                    return False
        return False

    def _wait_out_blip(self, err: Exception) -> bool:
        """After a failed renewal: False (lease lost) once a whole lease passed unrenewed, else back off briefly."""
        self.redis_errors += 1
        unrenewed = time.monotonic() - self.renewed_at
        if unrenewed >= self.lease_s:
            log.warning("job %s: no renewal for %.0fs (%s); the lease is lost", self.job_id, unrenewed, err)
            self.lost.set()
            return False
        log.info("job %s: Redis unavailable (%s); retrying the renewal", self.job_id, type(err).__name__)
        self._stop.wait(min(1.0, self.every_s))
        return True

    def _beat(self) -> None:
        while not self._stop.wait(self.every_s) and not self.lost.is_set():
            try:
                if not self.renew():
                    log.warning("job %s: lease lost; stopping the trainer without side effects", self.job_id)
            except REDIS_DOWN as err:
                while not self._stop.is_set() and self._wait_out_blip(err):
                    try:
                        self.renew()
                        break
                    except REDIS_DOWN as again:
                        err = again
            except Exception:  # a bug here must not silently stop renewals
                log.exception("job %s: lease renewal failed", self.job_id)

    def _watch(self) -> None:
        """Wake on every notification of the job; reconnect after a Redis blip (then re-read: news may be lost)."""
        while not self._stop.is_set() and not self.lost.is_set():
            pubsub = self._pubsub = self.jobs.r.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(self.jobs.notify_channel(self.job_id))
                self._check_flags()
                while not self._stop.is_set():
                    if pubsub.get_message(timeout=0.5) is not None:
                        self._check_flags()
            except REDIS_DOWN:
                self._stop.wait(0.5)
            except Exception:
                if not self._stop.is_set():  # closed on exit: expected
                    log.exception("job %s: flag watcher failed", self.job_id)
                    self._stop.wait(1.0)
            finally:
                with contextlib.suppress(Exception):  # closing a dead connection
                    pubsub.close()

    def _check_flags(self) -> None:
        job = self.jobs.get_job(self.job_id)
        if job is not None:
            self.on_flags(job)
