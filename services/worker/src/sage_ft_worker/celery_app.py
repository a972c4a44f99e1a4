"""The Celery app. ``celery -A sage_ft_worker.celery_app worker`` (or ``sage-ft-worker``) runs it.

Settings shared with the gateway's producer come from ``sage_ft.jobs.broker.celery_conf``; tasks are addressed by
name, so neither side imports the other.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, signals

from sage_ft.jobs.broker import celery_conf
from sage_ft_worker.context import WorkerContext

log = logging.getLogger(__name__)


class SageCelery(Celery):
    """A Celery app carrying the worker context (created lazily, once per process)."""

    _context: WorkerContext | None = None

    @property
    def context(self) -> WorkerContext:
        if self._context is None:
            self._context = WorkerContext()
        return self._context


def create_app() -> SageCelery:
    app = SageCelery("sage_ft_worker")
    app.conf.update(celery_conf(WorkerContext().settings.jobs))
    app.conf.update(include=[f"sage_ft_worker.tasks.{name}" for name in ("train", "merge", "evaluate")])
    return app


app = create_app()


@signals.worker_init.connect
def _on_init(**_: Any) -> None:
    from sage_ft_worker import metrics

    settings = app.context.settings.worker
    metrics.serve(settings.metrics_host, settings.metrics_port)  # /readyz answers 503 until the consumer is up


@signals.worker_ready.connect
def _on_ready(**_: Any) -> None:
    from sage_ft_worker import metrics

    metrics.set_ready(True)
    app.context.spare.start()
    settings = app.context.settings.worker
    log.info("worker %s ready on queues %s", settings.name, settings.queues)


@signals.worker_shutting_down.connect
def _on_shutdown(**_: Any) -> None:
    from sage_ft_worker import metrics

    metrics.set_ready(False)
    app.context.spare.close()
