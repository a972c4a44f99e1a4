"""Jobs: the record and its states, the Redis job store, the state machine, and what the queue's two ends share."""

from __future__ import annotations

from sage_ft.jobs.model import ACTIVE, TERMINAL, FileRecord, Job, JobError, JobStatus
from sage_ft.jobs.store import JobConflictError, JobStore

__all__ = ["ACTIVE", "TERMINAL", "FileRecord", "Job", "JobConflictError", "JobError", "JobStatus", "JobStore"]
