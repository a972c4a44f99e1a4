"""``eval``: a model (and what it is compared with) graded on held-out records, through the gateway's Evals API.

The records are any training format; each becomes an eval row (the last user turn, a system prompt if there is one,
and the last assistant turn as the reference). Both models answer through serving, as deployed, and one grader
scores them: ``exact`` (string_check eq), ``f1`` (token F1, i.e. ROUGE-1 F), ``rouge_l`` or ``bleu``.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from sage_ft_cli.app import App, pass_app
from sage_ft_cli.client import CLIError, Gateway

GRADERS: dict[str, dict[str, Any]] = {
    "exact": {"type": "string_check", "operation": "eq"},
    "f1": {"type": "text_similarity", "evaluation_metric": "rouge_1"},
    "rouge_l": {"type": "text_similarity", "evaluation_metric": "rouge_l"},
    "bleu": {"type": "text_similarity", "evaluation_metric": "bleu"},
}
TEXT = {"type": "string"}
SCHEMA = {
    "type": "object",
    "properties": {"system": TEXT, "question": TEXT, "reference": TEXT},
    "required": ["question", "reference"],
}
FINISHED = ("completed", "failed", "canceled")


def eval_rows(path: Path, limit: int) -> list[dict[str, Any]]:
    """``{"item": ...}`` rows from a training-format file; a record without an answer is skipped."""
    from sage_ft.data.validate import load_conversations
    from sage_ft.errors import DataError

    try:
        conversations = load_conversations(path)
    except DataError as err:
        raise CLIError(f"--data: {err}") from None
    rows = []
    for conv in conversations:
        turns = conv.messages
        answer = max((i for i, m in enumerate(turns) if m.get("role") == "assistant"), default=None)
        question = max((i for i, m in enumerate(turns[: answer or 0]) if m.get("role") == "user"), default=None)
        if answer is None or question is None:
            continue
        item = {"question": str(turns[question]["content"]), "reference": str(turns[answer]["content"])}
        system = next((m["content"] for m in turns[:question] if m.get("role") == "system"), None)
        rows.append({"item": {**item, **({"system": str(system)} if system else {})}})
        if len(rows) >= limit:
            break
    if not rows:
        raise CLIError(f"--data: {path} has no record with a user turn and an assistant answer")
    return rows


def _template(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    with_system = any("system" in r["item"] for r in rows)
    return ([{"role": "system", "content": "{{item.system}}"}] if with_system else []) + [
        {"role": "user", "content": "{{item.question}}"}
    ]


def _upload_rows(gateway: Gateway, rows: list[dict[str, Any]]) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "eval-rows.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        return str(gateway.upload(path, purpose="evals")["id"])


def _wait(app: App, gateway: Gateway, eval_id: str, runs: dict[str, str], total: int) -> dict[str, Any]:
    done: dict[str, Any] = {}
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=app.err, disable=app.json
    ) as bar:
        tasks = {m: bar.add_task(m, total=total) for m in runs}
        while len(done) < len(runs):
            for model, run_id in runs.items():
                if model in done:
                    continue
                run = gateway.get(f"/v1/evals/{eval_id}/runs/{run_id}")
                counts = run["result_counts"]
                bar.update(tasks[model], completed=counts["passed"] + counts["failed"] + counts["errored"])
                if run["status"] in FINISHED:
                    done[model] = run
            time.sleep(0.5 if len(done) < len(runs) else 0)
    return done


def _items(gateway: Gateway, eval_id: str, run_id: str) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    after = None
    while True:
        page = gateway.get(f"/v1/evals/{eval_id}/runs/{run_id}/output_items", limit=100, after=after)
        out.update({it["datasource_item_id"]: it for it in page["data"]})
        if not page["has_more"]:
            return out
        after = page["last_id"]


def comparison_table(title: str, metrics: list[str], models: dict[str, dict[str, float]]) -> Table:
    """Metric rows, a column per model, and the difference (first minus second) when there are two."""
    labels = list(models)
    table = Table("metric", *labels, *(["difference"] if len(labels) == 2 else []), title=title)
    for metric in metrics:
        cells = [f"{models[m][metric]:.3f}" for m in labels]
        if len(labels) == 2:
            cells.append(f"{models[labels[0]][metric] - models[labels[1]][metric]:+.3f}")
        table.add_row(metric, *cells)
    return table


@click.command("eval")
@click.argument("model")
@click.option(
    "--data",
    "data",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="Held-out records, in any training format (the last assistant turn is the reference).",
)
@click.option("--harness", metavar="TASKS", help="Run lm-evaluation-harness tasks (comma-separated) instead.")
@click.option(
    "--include-path",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    help="A directory of harness task definitions of your own (YAML), for --harness.",
)
@click.option("--limit", type=click.IntRange(1), help="Harness documents per task (--harness).")
@click.option("--against", metavar="BASE_OR_MODEL", help="Compare with this model [default: MODEL's base model].")
@click.option("--grader", type=click.Choice(list(GRADERS)), default="exact", show_default=True)
@click.option("--max-items", type=click.IntRange(1, 10_000), default=200, show_default=True)
@click.option("--max-tokens", type=click.IntRange(1, 4096), default=64, show_default=True, help="Answer length.")
@pass_app
def eval_command(
    app: App,
    model: str,
    data: Path | None,
    harness: str | None,
    include_path: Path | None,
    limit: int | None,
    against: str | None,
    grader: str,
    max_items: int,
    max_tokens: int,
) -> None:
    """Grade MODEL's answers to held-out records (--data) or harness tasks (--harness), side by side with its base
    (or --against)."""
    if (data is None) == (harness is None):
        raise CLIError("give --data FILE (graded through the Evals API) or --harness TASKS, one of them")
    gateway = app.gateway()
    if against is None:  # a fine-tune is compared with its base; a base model alone
        try:
            root = gateway.get(f"/v1/models/{model}").get("root")
        except CLIError:
            root = None
        against = root if root and root != model else None
    if harness is not None:
        _harness(app, model, against, harness, include_path, limit)
        return
    assert data is not None
    rows = eval_rows(data, max_items)
    criterion = {
        "name": grader,
        "input": "{{sample.output_text}}",
        "reference": "{{item.reference}}",
        **GRADERS[grader],
    }
    ev = gateway.post(
        "/v1/evals",
        {
            "name": f"sage-ft eval {model}",
            "testing_criteria": [criterion],
            "data_source_config": {"type": "custom", "item_schema": SCHEMA},
        },
    )
    source = {"type": "file_id", "id": _upload_rows(gateway, rows)}
    runs = {}
    for name in [model, *([against] if against else [])]:
        body = {
            "name": name,
            "data_source": {
                "type": "completions",
                "model": name,
                "source": source,
                "input_messages": {"type": "template", "template": _template(rows)},
                "sampling_params": {"temperature": 0, "max_completion_tokens": max_tokens},
            },
        }
        runs[name] = gateway.post(f"/v1/evals/{ev['id']}/runs", body)["id"]
    finished = _wait(app, gateway, ev["id"], runs, len(rows))
    failed = {m: r["error"] for m, r in finished.items() if r["status"] != "completed"}
    if failed:
        raise CLIError("; ".join(f"{m}: {(e or {}).get('message', 'run did not complete')}" for m, e in failed.items()))
    items = {m: _items(gateway, ev["id"], runs[m]) for m in runs}
    scores = {
        m: {grader: sum(it["results"][0]["score"] for it in items[m].values() if it["results"]) / len(rows)}
        for m in runs
    }
    differ = [
        i
        for i in range(len(rows))
        if len({round(items[m][i]["results"][0]["score"], 6) if items[m][i]["results"] else None for m in runs}) > 1
    ]
    report = {
        "eval_id": ev["id"],
        "run_ids": runs,
        "metric": grader,
        "n": len(rows),
        "models": scores,
        "disagreements": [
            {"index": i, **rows[i]["item"], "answers": {m: items[m][i]["sample"]["output"][0]["content"] for m in runs}}
            for i in differ
        ],
    }
    if against:
        report["delta"] = scores[model][grader] - scores[against][grader]
    if app.json:
        app.emit(report)
        return
    app.console.print(comparison_table(f"{grader} on {len(rows)} records of {data.name}", [grader], scores))
    if not report["disagreements"]:
        app.console.print("The models agree on every item." if against else "")
        return
    side = Table("#", "question", "reference", *runs, title="where they differ")
    for d in report["disagreements"][:50]:
        side.add_row(str(d["index"]), d["question"], d["reference"], *(d["answers"][m] for m in runs))
    app.console.print(side)
    app.console.print(f"items: eval {ev['id']}, runs {', '.join(runs.values())}")


def _harness(
    app: App, model: str, against: str | None, tasks: str, include_path: Path | None, limit: int | None
) -> None:
    from sage_ft_cli.harness import run_harness

    results = {}
    for name in [model, *([against] if against else [])]:
        if not app.json:
            app.err.print(f"lm-evaluation-harness: {tasks} on {name}...")
        results[name] = run_harness(
            name, app.settings.cli.gateway_url, app.api_key, tasks, include_path=include_path, limit=limit
        )
    report: dict[str, Any] = {"harness": results}
    if against:
        report["delta"] = {
            t: {k: v - results[against].get(t, {}).get(k, 0.0) for k, v in metrics.items()}
            for t, metrics in results[model].items()
        }
    if app.json:
        app.emit(report)
        return
    for task, metrics in results[model].items():
        per_model = {m: {k: results[m].get(task, {}).get(k, 0.0) for k in metrics} for m in results}
        app.console.print(comparison_table(f"lm-evaluation-harness: {task}", list(metrics), per_model))


def register(cli: click.Group) -> None:
    cli.add_command(eval_command)
