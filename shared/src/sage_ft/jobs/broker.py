"""What gateway and workers must agree on about the queue: task names, Celery settings, and broker inspection.

Neither service imports the other; both build their Celery app from ``celery_conf`` and address tasks by name.
The inspection helpers read the Redis transport's own keys (a queue is a list, reserved messages sit in the
``unacked`` hash), which is how the reconciler tells a queued job the broker still holds from one it lost.
"""

from __future__ import annotations

from typing import Any

import redis

from sage_ft.settings import JobSettings

TRAIN_TASK = "sage_ft.train"
MERGE_TASK = "sage_ft.merge"
EVAL_TASK = "sage_ft.evaluate"
_PRIORITY_SEP = "\x06\x16"
_PRIORITY_STEPS = (3, 6, 9)  # kombu's redis transport: priority 0 uses the plain queue name


def celery_conf(settings: JobSettings) -> dict[str, Any]:
    """Celery settings shared by the gateway's producer and the workers (JSON only, late acks, prefetch 1)."""
    return {
        "broker_url": settings.broker(),
        "broker_transport_options": {"visibility_timeout": settings.visibility_timeout},
        "broker_connection_retry_on_startup": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "result_backend": None,
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_track_started": True,
        "worker_prefetch_multiplier": 1,
        "task_default_queue": settings.train_queue,
        "task_routes": {
            TRAIN_TASK: {"queue": settings.train_queue},
            MERGE_TASK: {"queue": settings.merge_queue},
            EVAL_TASK: {"queue": settings.eval_queue},
        },
        "worker_send_task_events": False,
    }


class TaskSender:
    """Sends the workers' tasks by name (no service imports the worker). Gateway and serving both use this one."""

    def __init__(self, settings: JobSettings, app_name: str) -> None:
        from celery import Celery

        self.settings = settings
        self.celery = Celery(app_name)
        self.celery.conf.update(celery_conf(settings))

    def train(self, job_id: str, task_id: str) -> None:
        self.celery.send_task(TRAIN_TASK, args=[job_id], queue=self.settings.train_queue, task_id=task_id)

    def merge(self, tenant: str, model: str) -> None:
        self.celery.send_task(MERGE_TASK, args=[tenant, model], queue=self.settings.merge_queue)

    def evaluate(self, run_id: str, task_id: str) -> None:
        self.celery.send_task(EVAL_TASK, args=[run_id], queue=self.settings.eval_queue, task_id=task_id)


def _queue_keys(queue: str) -> list[str]:
    return [queue, *(f"{queue}{_PRIORITY_SEP}{p}" for p in _PRIORITY_STEPS)]


def broker_holds(client: redis.Redis, queues: list[str], job_id: str) -> bool:
    """True if a message for ``job_id`` is waiting in one of ``queues`` or reserved by a worker."""
    r: Any = client

    def has(raw: bytes | str) -> bool:
        return job_id in (raw.decode(errors="replace") if isinstance(raw, bytes) else raw)

    for queue in queues:
        for key in _queue_keys(queue):
            if any(has(raw) for raw in r.lrange(key, 0, -1)):
                return True
    return any(has(raw) for raw in r.hvals("unacked"))


def queue_depth(client: redis.Redis, queue: str) -> int:
    r: Any = client
    return sum(int(r.llen(key)) for key in _queue_keys(queue))
