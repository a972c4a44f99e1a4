"""``jobs`` and ``files``: list, show and steer fine-tuning jobs; list and upload datasets."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from sage_ft_cli.app import App, pass_app

JOB_COLUMNS = ["id", "status", "model", "name", "step", "total_steps", "fine_tuned_model", "created"]


def _job_row(job: dict[str, Any]) -> dict[str, Any]:
    created = time.strftime("%Y-%m-%d %H:%M", time.localtime(job.get("created_at") or 0))
    return {**job, "created": created}


@click.group()
def jobs() -> None:
    """Fine-tuning jobs."""


@jobs.command("list")
@click.option("--limit", type=int, default=20, show_default=True)
@click.option("--after", help="Cursor: the last job id of the previous page.")
@pass_app
def jobs_list(app: App, limit: int, after: str | None) -> None:
    page = app.gateway().get("/v1/fine_tuning/jobs", limit=limit, after=after)
    if app.json:
        app.emit(page)
    else:
        app.emit([_job_row(j) for j in page["data"]], JOB_COLUMNS)


@jobs.command("show")
@click.argument("job_id")
@pass_app
def jobs_show(app: App, job_id: str) -> None:
    """A job's fields, then its evaluation (the fine-tune vs its base, or its parent for DPO and RFT, on held-out
    records) when it has one."""
    from sage_ft_cli.commands.evals import comparison_table

    job = app.gateway().get(f"/v1/fine_tuning/jobs/{job_id}")
    ev = job.get("evaluation") if not app.json else None
    app.emit({k: v for k, v in job.items() if k != "evaluation"} if ev else job)
    if ev:
        other = "parent" if ev.get("against") == "parent" else "base"
        title = f"evaluation on {ev['n']} held-out records"
        if ev.get("compared_model"):
            title += f" ({other}: {ev['compared_model']})"
        app.console.print(
            comparison_table(title, ev["metrics"], {"fine-tune": ev["models"]["tuned"], other: ev["models"]["base"]})
        )
        loss = ev.get("loss") or {}
        if loss.get("tuned") is not None:
            app.console.print(f"held-out loss: {other} {loss['base']:.4f}, fine-tune {loss['tuned']:.4f}")
        rejected = ev.get("rejected") or {}
        if rejected:
            app.console.print(
                f"rejected answer given: {other} {rejected['base']:.2f}, fine-tune {rejected['tuned']:.2f}"
            )
        app.console.print(
            f"items: eval {ev['eval_id']}, runs {ev['run_ids']['tuned']} (fine-tune), {ev['run_ids']['base']} ({other})"
        )


def _action(app: App, job_id: str, action: str) -> None:
    job = app.gateway().post(f"/v1/fine_tuning/jobs/{job_id}/{action}")
    if app.json:
        app.emit(job)
    else:
        app.console.print(f"{job['id']}: {job['status']}")


@jobs.command("cancel")
@click.argument("job_id")
@pass_app
def jobs_cancel(app: App, job_id: str) -> None:
    """Cancel: a queued job never starts, a running one stops within a few steps and publishes nothing."""
    _action(app, job_id, "cancel")


@jobs.command("pause")
@click.argument("job_id")
@pass_app
def jobs_pause(app: App, job_id: str) -> None:
    """Pause after the next checkpoint; `resume` continues from it."""
    _action(app, job_id, "pause")


@jobs.command("resume")
@click.argument("job_id")
@pass_app
def jobs_resume(app: App, job_id: str) -> None:
    _action(app, job_id, "resume")


@jobs.command("logs")
@click.argument("job_id")
@click.option("-f", "--follow", "follow_", is_flag=True, help="Keep printing new events until the job ends.")
@pass_app
def jobs_logs(app: App, job_id: str, follow_: bool) -> None:
    """The job's events, oldest first."""
    gateway = app.gateway()
    if follow_:
        for kind, event in gateway.events(job_id):
            if kind == "end":
                if not app.json:
                    app.console.print(f"[bold]{event.get('status')}[/bold]")
                break
            _print_event(app, event)
        return
    events: list[dict[str, Any]] = []
    after = None
    while True:
        page = gateway.get(f"/v1/fine_tuning/jobs/{job_id}/events", limit=100, after=after)
        events += page["data"]
        if not page.get("has_more"):
            break
        after = page["data"][-1]["id"]
    for event in reversed(events):
        _print_event(app, event)


def _print_event(app: App, event: dict[str, Any]) -> None:
    if app.json:
        app.emit(event)
        return
    stamp = time.strftime("%H:%M:%S", time.localtime(event.get("created_at") or 0))
    style = {"warn": "yellow", "error": "red"}.get(event.get("level", ""), "")
    app.console.print(f"{stamp} " + (f"[{style}]{event['message']}[/{style}]" if style else event["message"]))


@click.group()
def files() -> None:
    """Uploaded datasets."""


@files.command("list")
@pass_app
def files_list(app: App) -> None:
    page = app.gateway().get("/v1/files")
    if app.json:
        app.emit(page)
    else:
        app.emit(page["data"], ["id", "filename", "bytes", "status", "status_details"])


@files.command("upload")
@click.argument("file", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@pass_app
def files_upload(app: App, file: Path) -> None:
    """Upload a dataset (validated by the gateway: status processed or error, naming line and field)."""
    app.emit(app.gateway().upload(file))


def register(cli: click.Group) -> None:
    cli.add_command(jobs)
    cli.add_command(files)
