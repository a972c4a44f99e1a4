"""``sage_ft.train(job_id)``: one delivery of a training job (see ``sage_ft_worker.runner``)."""

from __future__ import annotations

from sage_ft.jobs.broker import TRAIN_TASK
from sage_ft_worker.celery_app import app
from sage_ft_worker.runner import TrainRunner


@app.task(name=TRAIN_TASK)
def train(job_id: str) -> str:
    return TrainRunner(app.context, job_id).run()
