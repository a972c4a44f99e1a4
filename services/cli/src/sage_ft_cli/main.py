"""``sage-ft``: the click entry point, global flags, and the one place errors become one-line messages."""

from __future__ import annotations

import sys
import traceback
import webbrowser

import click

from sage_ft_cli.app import App, pass_app
from sage_ft_cli.client import CLIError
from sage_ft_cli.commands import chat, evals, jobs, models, training, webhooks
from sage_ft_cli.localstack import LocalStack


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--gateway", "gateway_url", metavar="URL", help="Gateway URL (env SAGE_FT_GATEWAY_URL).")
@click.option("--api-key", metavar="KEY", help="API key (env SAGE_FT_API_KEY).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.pass_context
def cli(ctx: click.Context, gateway_url: str | None, api_key: str | None, as_json: bool, debug: bool) -> None:
    """Fine-tune open LLMs with LoRA/QLoRA and chat with the results."""
    ctx.obj = App(gateway_url, api_key, as_json, debug)
    ctx.call_on_close(ctx.obj.close)


@cli.command()
@pass_app
def up(app: App) -> None:
    """Start the local stack: gateway, worker, serving (and a private Redis when none is configured)."""
    comps = LocalStack(app.settings).up()
    if app.json:
        app.emit([{"component": c.name, "pid": c.pid, "log": str(c.log)} for c in comps])
        return
    for comp in comps:
        app.console.print(f"[green]up[/green] {comp.name:<8} pid {comp.pid:<7} log {comp.log}")
    app.console.print(f"Gateway: {app.settings.cli.gateway_url}")
    app.console.print(f"Console: {app.console_url()}  (`sage-ft ui` opens it)")


@cli.command()
@click.option("--no-open", is_flag=True, help="Print the console's URL; do not open a browser.")
@pass_app
def ui(app: App, no_open: bool) -> None:
    """Open the web console (jobs, loss curves, new job with estimate, models, evaluation, chat) in a browser."""
    gateway = app.gateway()  # a local gateway that is not running is started first
    if not gateway.alive():
        raise CLIError(f"no gateway answers at {app.settings.cli.gateway_url}")
    url = app.console_url()
    opened = False if no_open else webbrowser.open(url)
    if app.json:
        app.emit({"url": url, "opened": opened})
        return
    app.console.print(f"Console: {url}" + ("" if opened or no_open else "  (no browser here: open it yourself)"))


@cli.command()
@pass_app
def down(app: App) -> None:
    """Stop exactly the processes `sage-ft up` started (model servers go with serving)."""
    stopped = LocalStack(app.settings).down()
    if app.json:
        app.emit({"stopped": stopped})
    else:
        app.console.print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


@cli.command()
@pass_app
def status(app: App) -> None:
    """Each local component's process and health, and whether the gateway answers."""
    rows = LocalStack(app.settings).status()
    gateway = app.gateway(start=False)
    ready = None
    if gateway.alive():
        try:
            ready = gateway.get("/readyz")
        except CLIError as err:
            ready = {"status": str(err)}
    if app.json:
        app.emit(
            {
                "gateway": app.settings.cli.gateway_url,
                "reachable": ready is not None,
                "ready": ready,
                "components": rows,
            }
        )
        return
    app.emit(rows, ["component", "pid", "state", "log"], title="local stack")
    checks = (ready or {}).get("checks") if isinstance(ready, dict) else None
    state = "unreachable" if ready is None else (ready.get("status") if isinstance(ready, dict) else "ok")
    app.console.print(f"gateway {app.settings.cli.gateway_url}: {state}" + (f" {checks}" if checks else ""))


@cli.group()
def config() -> None:
    """Effective settings."""


@config.command("show")
@pass_app
def config_show(app: App) -> None:
    """Every setting, its value (secrets masked) and where it came from."""
    app.emit(app.settings.sources(), ["name", "value", "source", "description"])


for module in (training, jobs, models, chat, evals, webhooks):
    module.register(cli)


def _json_after(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    app = ctx.find_object(App)
    if value and app is not None:
        app.json = True


def accept_json_everywhere(group: click.Group) -> None:
    """``--json`` after the subcommand too (``sage-ft jobs list --json``, as with ``gh`` or ``kubectl -o json``), not
    only before it: every command takes it, and it means the same as the global flag."""
    for command in group.commands.values():
        if isinstance(command, click.Group):
            accept_json_everywhere(command)
        elif not any("--json" in getattr(p, "opts", ()) for p in command.params):
            flag = click.Option(
                ["--json"], is_flag=True, expose_value=False, callback=_json_after, help="Machine-readable output."
            )
            command.params.append(flag)


accept_json_everywhere(cli)


def main() -> None:
    debug = "--debug" in sys.argv
    try:
        cli.main(standalone_mode=False, prog_name="sage-ft")
    except CLIError as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(err.code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as err:
        if debug:
            traceback.print_exc()
        click.echo(f"error: {type(err).__name__}: {err} (run with --debug for the traceback)", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
