"""Following a job live: a rich progress bar fed by the gateway's event stream (step/total, loss, tokens/s, ETA;
for DPO also the reward accuracy).

Ctrl-C detaches: the job goes on training in the stack, and the command says how to pick it up again.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

from sage_ft_cli.client import Gateway

TERMINAL = ("succeeded", "failed", "cancelled")


def follow(gateway: Gateway, job_id: str, console: Console, quiet: bool = False) -> dict[str, Any]:
    """Show progress until the job ends; returns the final job object."""
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("loss {task.fields[loss]}{task.fields[reward]}"),
        TextColumn("{task.fields[rate]} tok/s"),
        TimeRemainingColumn(),
    )
    final: dict[str, Any] = {}
    with Progress(*columns, console=console, transient=False, disable=quiet) as progress:
        bar = progress.add_task("queued", total=None, loss="-", rate="-", reward="")
        for kind, data in gateway.events(job_id):
            if kind == "end":
                final = data
                break
            info = data.get("data") or {}
            if data.get("type") == "metrics" and info.get("train_loss") is not None and info.get("step"):
                reward = f"  reward acc {info['reward_accuracy']:.2f}" if "reward_accuracy" in info else ""
                progress.update(
                    bar,
                    description="training",
                    completed=info["step"],
                    total=info.get("total_steps"),
                    loss=f"{info['train_loss']:.4f}",
                    reward=reward,
                    rate=f"{info.get('tokens_per_second') or 0:,.0f}",
                )
            elif data.get("type") == "metrics":
                continue  # a validation line: the bar shows training progress
            elif not quiet:
                progress.console.print(f"[dim]{data.get('message', '')}[/dim]")
                if "started" in data.get("message", "").lower():
                    progress.update(bar, description="starting")
        if final.get("status") == "succeeded":
            total = final.get("total_steps") or progress.tasks[0].total
            progress.update(bar, description="done", completed=total, total=total)
    return final
