"""``sage_ft.evaluate(run_id)``: one delivery of an eval run (see ``sage_ft_worker.evaluator``)."""

from __future__ import annotations

from sage_ft.jobs.broker import EVAL_TASK
from sage_ft_worker.celery_app import app
from sage_ft_worker.evaluator import EvalRunner


@app.task(name=EVAL_TASK)
def evaluate(run_id: str) -> str:
    return EvalRunner(app.context, run_id).run()
