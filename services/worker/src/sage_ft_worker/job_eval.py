"""A job's held-out evaluation, kept where users look for it.

The trainer answered the held-out records with the fine-tune and with the model it is compared against, its base or
(DPO and RFT from a fine-tune) its parent (``sage_ft.training.holdout``). Here the answers become an eval with two
completed runs, one per model, so ``client.evals.runs.output_items.list`` shows every item side by side with its
grades; the summary (means per metric, the difference, the held-out loss and those ids) goes on the job, in the
model's manifest and in an event. The criteria: exact match and ROUGE-L against the record's answer (a pair's chosen
one); for RFT, the job's own grader, whose verdicts the trainer already has (they are not asked for twice).
"""

from __future__ import annotations

from typing import Any

from sage_ft.evals.compare import summary
from sage_ft.evals.graders import parse_criteria
from sage_ft.evals.model import EvalRecord
from sage_ft.evals.runs import CriterionResult, GradedItem, grade_item, graded_item
from sage_ft.evals.runstore import EvalRun, RunStore
from sage_ft.evals.store import EvalStore
from sage_ft.graders import AnyGrader, Grading, parse_grader
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
    rft = report.get("method") == "rft"
    if rft:
        fields = sorted({k for it in report["items"] for k in (it.get("item") or {})})
        schema = {"type": "object", "properties": {k: {} for k in fields}}
        criteria: list[AnyGrader] = [parse_grader(report["grader"], "grader")]
    else:
        schema = ITEM_SCHEMA
        criteria = parse_criteria(CRITERIA, set(ITEM_SCHEMA["properties"]))
    grading = Grading()  # text similarity only: no model, no sandbox (RFT's verdicts come with the report)
    ev = EvalRecord(
        id=new_id("eval"),
        tenant=job.tenant,
        name=f"{job.id} held-out",
        item_schema=schema,
        testing_criteria=[c.model_dump() for c in criteria],
        metadata={"job_id": job.id},
    )
    EvalStore(jobs).put(ev)
    runs = RunStore(jobs)
    ids = {}
    for label, served in (("tuned", model), ("base", compared_model(job, report))):
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
            answer = it["answers"][label]
            if rft:
                graded = _graded(it, label, criteria[0], served)
            else:
                item = {
                    "prompt": str(it["prompt"][-1]["content"]) if it["prompt"] else "",
                    "reference": it["reference"],
                }
                graded = grade_item(grading, criteria, it["index"], item, it["prompt"], answer, served)
            runs.add_item(run.id, graded)
        ids[label] = run.id
    kept = {k: v for k, v in summary(report).items() if k != "grader"}  # the job already shows its grader
    return {**kept, "eval_id": ev.id, "run_ids": ids, "compared_model": compared_model(job, report)}


def compared_model(job: Job, report: dict[str, Any]) -> str:
    """What the fine-tune was compared with: its parent fine-tune or its base."""
    return (job.parent_model or job.model) if report.get("against") == "parent" else job.root_model


def _graded(it: dict[str, Any], label: str, grader: AnyGrader, model: str) -> GradedItem:
    """An RFT item as the trainer graded it with the job's grader."""
    verdict = it["graded"][label]
    result = CriterionResult(
        name=grader.name,
        type=grader.type,
        score=it["scores"][label]["reward"],
        passed=verdict["passed"],
        error=verdict["error"],
    )
    return graded_item(it["index"], it.get("item") or {}, [result], it["prompt"], it["answers"][label], model)


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
    """One line for the job's events: each metric for the model compared against -> the fine-tune, the held-out loss
    (SFT), and how often each gives the rejected answer (DPO)."""
    tuned, base = evaluation["models"]["tuned"], evaluation["models"]["base"]
    scores = ", ".join(f"{k} {base[k]:.2f} -> {tuned[k]:.2f}" for k in evaluation["metrics"])
    loss = evaluation.get("loss") or {}
    held = f"; held-out loss {loss['base']:.3f} -> {loss['tuned']:.3f}" if loss.get("tuned") is not None else ""
    rejected = evaluation.get("rejected")
    if rejected:
        held += f"; rejected answer given {rejected['base']:.2f} -> {rejected['tuned']:.2f}"
    against = evaluation.get("against", "base")
    return f"Evaluation on {evaluation['n']} held-out records ({against} -> fine-tune): {scores}{held}"
