"""``webhooks``: endpoints that get signed events when jobs and eval runs end, and what was delivered to them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import click

from sage_ft_cli.app import App, pass_app

EVENTS_HELP = "An event to deliver (repeat it); default: every job and eval-run event. See `sage-ft webhooks events`."


@click.group()
def webhooks() -> None:
    """Webhook endpoints: signed deliveries of job and eval-run events (OpenAI's webhooks)."""


@webhooks.command("list")
@pass_app
def webhooks_list(app: App) -> None:
    page = app.gateway().get("/v1/webhook_endpoints", limit=100)
    app.emit(page if app.json else page["data"], ["id", "name", "url", "event_types", "status", "signing_secret_hint"])


@webhooks.command("events")
@pass_app
def webhooks_events(app: App) -> None:
    """The event types an endpoint can subscribe to."""
    types = app.gateway().get("/v1/webhook_event_types")
    app.emit(types if app.json else [{"event_type": t} for t in types["data"]], ["event_type"])


@webhooks.command("create")
@click.argument("url")
@click.option("--name", default="", help="A name to know it by (default: the URL's host).")
@click.option("--event", "events", multiple=True, help=EVENTS_HELP)
@pass_app
def webhooks_create(app: App, url: str, name: str, events: tuple[str, ...]) -> None:
    """Add an endpoint; its signing secret is shown now and never again."""
    gateway = app.gateway()
    chosen = list(events) or gateway.get("/v1/webhook_event_types")["data"]
    made = gateway.post(
        "/v1/webhook_endpoints",
        {"name": name or url.split("//", 1)[-1].split("/", 1)[0], "url": url, "event_types": chosen},
    )
    if app.json:
        app.emit(made)
        return
    app.console.print(f"created {made['id']} for {', '.join(made['event_types'])}")
    app.console.print(f"signing secret (shown once; verify deliveries with it): {made['signing_secret']}")


@webhooks.command("delete")
@click.argument("endpoint_id")
@pass_app
def webhooks_delete(app: App, endpoint_id: str) -> None:
    result = app.gateway().delete(f"/v1/webhook_endpoints/{endpoint_id}")
    _say(app, result, f"deleted {result['id']}")


@webhooks.command("enable")
@click.argument("endpoint_id")
@pass_app
def webhooks_enable(app: App, endpoint_id: str) -> None:
    """Re-enable an endpoint that was disabled after repeated failures; its waiting deliveries go on."""
    result = app.gateway().post(f"/v1/webhook_endpoints/{endpoint_id}", {"enabled": True})
    _say(app, result, f"{result['id']}: {result['status']}")


@webhooks.command("test")
@click.argument("endpoint_id")
@click.option("--event", "event", default="fine_tuning.job.succeeded", show_default=True)
@pass_app
def webhooks_test(app: App, endpoint_id: str, event: str) -> None:
    """Send one example event now and show what the receiver answered."""
    result = app.gateway().post(f"/v1/webhook_endpoints/{endpoint_id}/test", {"event_type": event})
    _say(app, result, f"{event} delivered: the receiver answered {result['status_code']}")


@webhooks.command("deliveries")
@click.argument("endpoint_id")
@click.option("--limit", type=click.IntRange(1, 100), default=20, show_default=True)
@pass_app
def webhooks_deliveries(app: App, endpoint_id: str, limit: int) -> None:
    """The newest deliveries to an endpoint: each one's status, attempts and next retry."""
    page = app.gateway().get(f"/v1/webhook_endpoints/{endpoint_id}/deliveries", limit=limit)
    if app.json:
        app.emit(page)
        return
    app.emit([_row(d) for d in page["data"]], ["event", "type", "status", "attempts", "last", "next attempt"])


def _say(app: App, result: dict[str, Any], line: str) -> None:
    if app.json:
        app.emit(result)
    else:
        app.console.print(line)


def _row(d: dict[str, Any]) -> dict[str, Any]:
    last = d["attempts"][-1] if d["attempts"] else {}
    said = last.get("error") or (f"{last['status_code']} in {last['latency_ms']} ms" if last else "")
    when = d.get("next_attempt_at")
    return {
        "event": d["event_id"],
        "type": d["event_type"],
        "status": d["status"],
        "attempts": len(d["attempts"]),
        "last": said,
        "next attempt": datetime.fromtimestamp(when, UTC).strftime("%H:%M:%S UTC") if when else "",
    }


def register(cli: click.Group) -> None:
    cli.add_command(webhooks)
