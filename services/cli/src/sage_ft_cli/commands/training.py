"""``quickstart``, ``start`` and ``data validate``: from a dataset to a running (and followed) fine-tuning job."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import yaml

from sage_ft.config import DEFAULT_MODEL, TrainingConfig
from sage_ft.data.builtin import BUILTIN_TASKS, builtin_dataset_path
from sage_ft.errors import DataError
from sage_ft_cli.app import App, pass_app
from sage_ft_cli.client import CLIError
from sage_ft_cli.follow import follow

TASKS = (*BUILTIN_TASKS, "custom")


def load_config_file(path: Path) -> dict[str, Any]:
    """TrainingConfig fields from YAML or JSON, checked here so a typo names the file and the field."""
    try:
        data = (
            yaml.safe_load(path.read_text(encoding="utf-8"))
            if path.suffix != ".json"
            else json.loads(path.read_text(encoding="utf-8"))
        )
    except (OSError, ValueError, yaml.YAMLError) as err:
        raise CLIError(f"{path}: cannot read it as YAML or JSON: {err}") from None
    if not isinstance(data, dict):
        raise CLIError(f"{path}: expected a mapping of TrainingConfig fields")
    unknown = sorted(set(data) - set(TrainingConfig.model_fields))
    if unknown:
        raise CLIError(f"{path}: unknown TrainingConfig field(s): {', '.join(unknown)}")
    return data


def submit(
    app: App,
    *,
    data: Path,
    model: str,
    name: str,
    preset: str | None,
    epochs: float | None,
    config: dict[str, Any] | None,
    task: str | None,
    method: str = "supervised",
    beta: float | None = None,
    grader: dict[str, Any] | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    gateway = app.gateway()
    uploaded = gateway.upload(data)
    if uploaded.get("status") == "error":
        raise CLIError(f"{data}: {uploaded.get('status_details')}")
    body: dict[str, Any] = {"model": model, "training_file": uploaded["id"], "suffix": name, "name": name}
    if model.startswith("ftckpt-"):  # a checkpoint object id: start from it, on its job's model
        body.update(
            model=gateway.get(f"/v1/fine_tuning/jobs/ftjob-{model.split('-')[1]}")["model"], from_checkpoint=model
        )
    hyper: dict[str, Any] = {}
    if epochs is not None:
        hyper["n_epochs"] = epochs
    if beta is not None:
        hyper["beta"] = beta
    if hyper or method != "supervised":
        body["method"] = {"type": method, method: {"hyperparameters": hyper}}
    if grader is not None:
        body["method"][method]["grader"] = grader
    if preset:
        body["preset"] = preset
    if config:
        body["config"] = config
    if task and task != "custom" and method == "supervised":
        body["task"] = task
    if dry_run:
        body["dry_run"] = True
    job: dict[str, Any] = gateway.post("/v1/fine_tuning/jobs", body)
    return job


def show_estimate(app: App, answer: dict[str, Any]) -> None:
    est = answer["estimate"]
    if app.json:
        app.emit(answer)
        return
    basis = est["seconds_basis"]
    if basis["source"] == "history":
        how = f"from {basis['jobs']} recent job(s) of this model and preset, {basis['tokens_per_second']:.0f} tok/s"
    else:
        how = f"no job of this model and preset yet: a default {basis['tokens_per_second']:.0f} tok/s"
    memory = est.get("peak_memory_bytes")
    rows = [
        ("tokens", f"{est['tokens']:,}" + ("" if est["tokens_exact"] else " (estimated: no tokenizer here)")),
        ("optimizer steps", f"{est['steps']:,} ({est['epochs']:g} epochs, batch {est['batch_size']})"),
        ("wall time", f"{_duration(est['seconds'])} ({how})"),
        ("peak GPU memory", f"{memory / 2**30:.2f} GiB" if memory else est["memory_basis"].get("reason", "unknown")),
    ]
    for label, value in rows:
        app.console.print(f"{label:>16}  {value}")
    app.console.print("Nothing was started (--dry-run).")


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def finish(app: App, job: dict[str, Any], name: str) -> None:
    """Follow ``job`` with a progress bar; Ctrl-C detaches (the job goes on); a failed job exits non-zero."""
    app.err.print(f"Job {job['id']}: fine-tuning {job['model']} as '{name}' (Ctrl-C detaches; the job goes on)")
    try:
        final = follow(app.gateway(), job["id"], app.err, quiet=app.json)
    except KeyboardInterrupt:
        app.err.print(f"\nDetached. The job keeps training: `sage-ft jobs logs {job['id']} -f` follows it again.")
        raise SystemExit(0) from None
    if app.json:
        app.emit(final)
    if final.get("status") != "succeeded":
        error = (final.get("error") or {}).get("message") or final.get("status")
        raise CLIError(f"job {job['id']} {final.get('status')}: {error}")
    linked = link_results(app, final["fine_tuned_model"], name)
    if not app.json:
        app.console.print(f"[green]Fine-tuned model[/green] {final['fine_tuned_model']} (alias '{name}')")
        if linked is not None:
            app.console.print(f"Results: {linked}  (tensorboard --logdir {linked / 'logs'})")
        app.console.print(f"Chat with it:  sage-ft chat {name}")


def link_results(app: App, model: str, name: str) -> Path | None:
    """On the embedded stack, ``~/.sage/finetune_output/<name>`` points at the published model (adapter, logs)."""
    if not app.local_gateway():
        return None
    from sage_ft.storage import LocalStore, StorageError, read_model

    root = app.settings.paths.resolved_output_root()
    try:
        manifest = read_model(LocalStore(root), model)
    except StorageError:
        return None
    if manifest is None or "adapter" not in manifest.parts:
        return None  # another store
    # the directory the publish wrote (models/<model>/attempts/<n>/, holding adapter/ and logs/)
    scope = (Path("models") / model / manifest.location("adapter")).parent
    link = root / name
    if not (root / scope).is_dir() or (link.exists() and not link.is_symlink()):
        return None  # a directory of the user's own by that name: leave it alone
    tmp = root / f".{name}.link"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(scope)
    tmp.replace(link)
    return link


@click.command()
@click.argument("task", type=click.Choice(TASKS))
@click.option("--model", default=DEFAULT_MODEL, show_default=True, help="Hub id or local model name.")
@click.option("--preset", help="rtx_3060 | rtx_4090 | a100 | minimal | cpu | tiny | auto (default: the worker's).")
@click.option("--epochs", type=float, help="Training epochs.")
@click.option("--data", type=click.Path(path_type=Path), help="Dataset (required for custom).")
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="YAML/JSON of TrainingConfig fields.",
)
@pass_app
def quickstart(
    app: App,
    task: str,
    model: str,
    preset: str | None,
    epochs: float | None,
    data: Path | None,
    config_file: Path | None,
) -> None:
    """Fine-tune on the built-in dataset for TASK and follow it; the model answers to TASK's name."""
    if task == "custom" and data is None:
        raise click.UsageError("custom needs --data FILE")
    dataset = data or builtin_dataset_path(task)
    config = load_config_file(config_file) if config_file else None
    job = submit(app, data=dataset, model=model, name=task, preset=preset, epochs=epochs, config=config, task=task)
    finish(app, job, task)


@click.command()
@click.option("--task", type=click.Choice(TASKS), default="custom", show_default=True)
@click.option("--data", type=click.Path(path_type=Path), help="Dataset (default: the task's built-in one).")
@click.option("--model", default=DEFAULT_MODEL, show_default=True)
@click.option("--preset", help="A preset name.")
@click.option("--auto", "auto_preset", is_flag=True, help="Pick the preset from the worker's accelerator.")
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="YAML/JSON of TrainingConfig fields (epochs, learning_rate, lora, max_length, ...).",
)
@click.option("--name", help="Alias the fine-tuned model answers to (default: the task).")
@click.option(
    "--method",
    type=click.Choice(["supervised", "dpo", "reinforcement"]),
    default="supervised",
    show_default=True,
    help="supervised: learn the answers; dpo: prefer chosen over rejected (a preference file); reinforcement: "
    "rewards from --grader on sampled answers (a file of prompts).",
)
@click.option(
    "--grader",
    "grader_file",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="JSON of an OpenAI grader (string_check, python, score_model, multi, ...), for --method reinforcement.",
)
@click.option(
    "--from",
    "from_model",
    help="Continue from a fine-tuned model, alias or checkpoint id (ft:..., ftckpt-...) instead of --model.",
)
@click.option("--beta", type=click.FloatRange(0, 2, min_open=True), help="DPO beta (default: auto, 0.1).")
@click.option("--follow", "follow_job", is_flag=True, help="Show progress; exit non-zero if the job fails.")
@click.option(
    "--dry-run", is_flag=True, help="Show the estimate (tokens, steps, time, peak GPU memory); start nothing."
)
@pass_app
def start(
    app: App,
    task: str,
    data: Path | None,
    model: str,
    preset: str | None,
    auto_preset: bool,
    config_file: Path | None,
    name: str | None,
    method: str,
    from_model: str | None,
    beta: float | None,
    grader_file: Path | None,
    follow_job: bool,
    dry_run: bool,
) -> None:
    """Upload data and start a fine-tuning job (supervised, DPO or reinforcement, from a base model or a
    fine-tune)."""
    if preset and auto_preset:
        raise click.UsageError("--preset and --auto exclude each other")
    if data is None and (task == "custom" or method != "supervised"):
        raise click.UsageError(
            "--data FILE is required unless --task names a built-in dataset (DPO needs a preference file, "
            "reinforcement a file of prompts)"
        )
    if beta is not None and method != "dpo":
        raise click.UsageError("--beta is a DPO setting: add --method dpo")
    if (grader_file is None) != (method != "reinforcement"):
        raise click.UsageError("--method reinforcement takes a --grader FILE, and --grader only goes with it")
    grader = load_grader(grader_file) if grader_file is not None else None
    config = load_config_file(config_file) if config_file else None
    alias = name or task
    job = submit(
        app,
        data=data or builtin_dataset_path(task),
        model=from_model or model,
        name=alias,
        preset="auto" if auto_preset else preset,
        epochs=None,
        config=config,
        task=task,
        method=method,
        beta=beta,
        grader=grader,
        dry_run=dry_run,
    )
    if dry_run:
        show_estimate(app, job)
    elif follow_job:
        finish(app, job, alias)
    elif app.json:
        app.emit(job)
    else:
        app.console.print(
            f"Started job {job['id']} ({job['status']}); follow it with `sage-ft jobs logs {job['id']} -f`"
        )


def load_grader(path: Path) -> dict[str, Any]:
    """A grader from a JSON file; the gateway checks its fields and names any that is wrong."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CLIError(f"{path}: not a JSON grader ({err})") from None
    if not isinstance(value, dict):
        raise CLIError(f"{path}: a grader is a JSON object with a type (string_check, python, ...)")
    return value


@click.group()
def data() -> None:
    """Datasets."""


@data.command("validate")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--max-length", type=int, default=1024, show_default=True, help="Tokens before truncation.")
@pass_app
def validate(app: App, file: Path, max_length: int) -> None:
    """Formats per record, counts, token lengths and the truncated share. Nothing is uploaded."""
    from sage_ft.data.validate import validate_file

    try:
        report = validate_file(file, max_length=max_length)
    except DataError as err:
        raise CLIError(str(err)) from None
    summary = report.to_dict()
    if app.json:
        app.emit(summary)
    else:
        tokens = summary["tokens"]
        fits = {
            "preference": "preference pairs, for DPO",
            "prompts": "prompts, for reinforcement",
        }.get(summary["kind"], "supervised records")
        app.console.print(
            f"{file}: {summary['valid_records']}/{summary['records']} records valid ({fits}); "
            f"formats {summary['formats']}"
        )
        if tokens.get("total"):
            app.console.print(
                f"tokens (estimated): min {tokens['min']} p50 {tokens['p50']} p95 {tokens['p95']} "
                f"max {tokens['max']}; {summary['truncated']} over {max_length} "
                f"({summary['truncated_share']:.1%})"
            )
        for side, stats in summary.get("sides", {}).items():
            if stats:
                app.console.print(
                    f"  {side:<8} min {stats['min']} p50 {stats['p50']} p95 {stats['p95']} max {stats['max']}"
                )
        for error in summary["errors"]:
            app.err.print(f"[red]line {error['line']}[/red] {error['field'] or ''}: {error['message']}")
    if not report.ok:
        raise CLIError(f"{file}: {len(report.errors)} invalid record(s)" if report.errors else f"{file}: no records")


def register(cli: click.Group) -> None:
    cli.add_command(quickstart)
    cli.add_command(start)
    cli.add_command(data)
