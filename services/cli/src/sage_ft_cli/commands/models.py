"""``models``, ``merge``, ``deploy``, ``undeploy`` and ``deployments``."""

from __future__ import annotations

import contextlib
import time

import click

from sage_ft_cli.app import App, pass_app
from sage_ft_cli.client import CLIError


@click.group()
def models() -> None:
    """Base models in use and fine-tuned models."""


@models.command("list")
@pass_app
def models_list(app: App) -> None:
    page = app.gateway().get("/v1/models")
    if app.json:
        app.emit(page)
    else:
        app.emit(page["data"], ["id", "owned_by", "aliases", "parts"])


@models.command("rm")
@click.argument("name")
@pass_app
def models_rm(app: App, name: str) -> None:
    """Delete a fine-tuned model (by name or alias); it is unloaded from serving too."""
    result = app.gateway().delete(f"/v1/models/{name}")
    if app.json:
        app.emit(result)
    else:
        app.console.print(f"deleted {result['id']}")


@click.command()
@click.argument("name")
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait until the merged weights exist.")
@click.option("--timeout", type=float, default=900, show_default=True)
@pass_app
def merge(app: App, name: str, wait: bool, timeout: float) -> None:
    """Merge a model's LoRA weights into its base (a worker writes models/<name>/merged/)."""
    gateway = app.gateway()
    queued = gateway.post(f"/v1/models/{name}/merge")
    deadline = time.monotonic() + timeout
    while wait and "merged" not in gateway.get(f"/v1/models/{name}").get("parts", []):
        if time.monotonic() > deadline:
            raise CLIError(f"merging {queued['id']} did not finish within {timeout:.0f} s; is a worker running?")
        time.sleep(1)
    if app.json:
        app.emit(gateway.get(f"/v1/models/{name}") if wait else queued)
    else:
        app.console.print(f"{queued['id']}: " + ("merged" if wait else "merge queued"))


@click.command()
@click.argument("name")
@click.option("--engine", type=click.Choice(["auto", "vllm", "transformers"]), help="Override the engine.")
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait until it is ready.")
@pass_app
def deploy(app: App, name: str, engine: str | None, wait: bool) -> None:
    """Start serving a fine-tuned model (chat requests also do this on their own)."""
    body = {"model": name, "wait": wait, **({"engine": engine} if engine else {})}
    with app.err.status(f"deploying {name}...", spinner="dots") if wait and not app.json else contextlib.nullcontext():
        dep = app.gateway().post("/v1/deployments", body, timeout=None)
    if dep.get("state") == "failed":
        raise CLIError(f"deploying {name} failed: {(dep.get('error') or {}).get('message')}")
    app.emit(dep, ["model", "state", "engine", "endpoint", "cold_start_seconds"])


@click.command()
@click.argument("name")
@pass_app
def undeploy(app: App, name: str) -> None:
    """Stop serving a model (its server stops once it serves nothing else)."""
    result = app.gateway().delete(f"/v1/deployments/{name}")
    if app.json:
        app.emit(result)
    else:
        app.console.print(f"undeployed {result['id']}")


@click.command()
@pass_app
def deployments(app: App) -> None:
    """Deployments with state, engine, endpoint and health."""
    page = app.gateway().get("/v1/deployments")
    if app.json:
        app.emit(page)
    else:
        app.emit(page["data"], ["model", "alias", "state", "engine", "health", "endpoint"])


def register(cli: click.Group) -> None:
    cli.add_command(models)
    cli.add_command(merge)
    cli.add_command(deploy)
    cli.add_command(undeploy)
    cli.add_command(deployments)
