"""A job's held-out evaluation, kept where users look for it.

The trainer answered the held-out records with the fine-tune and with its base (``sage_ft.training.holdout``). Here
the answers become an eval with two completed runs, one per model, so ``client.evals.runs.output_items.list`` shows
every item side by side with its grades; the summary (means per metric, the difference, the held-out loss and those
ids) goes on the job, in the model's manifest and in an event.
"""

from __future__ import annotations

from typing import Any

from sage_ft.evals.compare import summary
from sage_ft.evals.graders import parse_criteria
from sage_ft.evals.model import EvalRecord
from sage_ft.evals.runs import grade_item
from sage_ft.evals.runstore import EvalRun, RunStore
from sage_ft.evals.store import EvalStore
from sage_ft.graders import Grading
from sage_ft.jobs import JobStore
from sage_ft.jobs.model import Job, new_id, now

ITEM_SCHEMA = {
    "type": "object",
    "properties": {"prompt": {"type": "string"}, "reference": {"type": "string"}},
    "required": ["prompt", "reference"],
}
CRITERIA = [
    {
        "type": "string_check",
        "name": "exact",
        "input": "{{sample.output_text}}",
        "reference": "{{item.reference}}",
        "operation": "eq",
    },
    {
        "type": "text_similarity",
        "name": "rouge_l",
        "input": "{{sample.output_text}}",
        "reference": "{{item.reference}}",
        "evaluation_metric": "rouge_l",
        "pass_threshold": 0.5,
    },
]


def record(jobs: JobStore, job: Job, model: str, report: dict[str, Any]) -> dict[str, Any]:
    """Store ``report``'s items as an eval and its two runs; returns the summary for the job and the manifest."""
    criteria = parse_criteria(CRITERIA, set(ITEM_SCHEMA["properties"]))
    grading = Grading()  # text similarity only: no model, no sandbox
    ev = EvalRecord(
        id=new_id("eval"),
        tenant=job.tenant,
        name=f"{job.id} held-out",
        item_schema=ITEM_SCHEMA,
        testing_criteria=[c.model_dump() for c in criteria],
        metadata={"job_id": job.id},
    )
    EvalStore(jobs).put(ev)
    runs = RunStore(jobs)
    ids = {}
    for label, served in (("tuned", model), ("base", job.root_model)):
        source = {
            "type": "completions",
            "model": served,
            "source": {"type": "holdout", "job_id": job.id},
            "sampling_params": {"temperature": 0.0},
        }
        run = EvalRun(
            id=new_id("evalrun"),
            eval_id=ev.id,
            tenant=job.tenant,
            name=f"{label}: {served}",
            model=served,
            data_source=source,
            criteria=[c.name for c in criteria],
            status="completed",
            started_at=now(),
            finished_at=now(),
            total=report["n"],
        )
        runs.create(run)
        for it in report["items"]:
            item = {"prompt": str(it["prompt"][-1]["content"]) if it["prompt"] else "", "reference": it["reference"]}
            runs.add_item(
                run.id, grade_item(grading, criteria, it["index"], item, it["prompt"], it["answers"][label], served)
            )
        ids[label] = run.id
    return {**summary(report), "eval_id": ev.id, "run_ids": ids}


def discard(jobs: JobStore, evaluation: dict[str, Any] | None, tenant: str) -> None:
    """The job did not succeed after all: its evaluation goes too."""
    if evaluation is None:
        return
    store = EvalStore(jobs)
    ev = store.get(tenant, evaluation["eval_id"])
    runs = RunStore(jobs)
    for run_id in evaluation["run_ids"].values():
        run = runs.get(run_id)
        if run is not None:
            runs.delete(run)
    if ev is not None:
        store.delete(ev)


def describe(evaluation: dict[str, Any]) -> str:
    """One line for the job's events: each metric base -> fine-tune, and the held-out loss."""
    tuned, base = evaluation["models"]["tuned"], evaluation["models"]["base"]
    scores = ", ".join(f"{k} {base[k]:.2f} -> {tuned[k]:.2f}" for k in evaluation["metrics"])
    loss = evaluation.get("loss") or {}
    held = f"; held-out loss {loss['base']:.3f} -> {loss['tuned']:.3f}" if loss.get("tuned") is not None else ""
    return f"Evaluation on {evaluation['n']} held-out records (base -> fine-tune): {scores}{held}"
