"""What every command gets: settings, the console, ``--json``, and a gateway that starts the local stack on demand."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlparse

import click
from rich.console import Console
from rich.table import Table

from sage_ft_cli.client import Gateway
from sage_ft_cli.localstack import LocalStack
from sage_ft_cli.settings import Settings


class App:
    def __init__(self, gateway_url: str | None, api_key: str | None, as_json: bool, debug: bool) -> None:
        self.settings = Settings()
        if gateway_url:
            self.settings.cli.gateway_url = gateway_url
        self.api_key = api_key or (self.settings.cli.api_key.get_secret_value() if self.settings.cli.api_key else None)
        self.json = as_json
        self.debug = debug
        self.console = Console()
        self.err = Console(stderr=True)
        self._gateway: Gateway | None = None

    def gateway(self, start: bool = True) -> Gateway:
        """The gateway client; when nothing answers at a local URL, start the stack first (with a notice)."""
        if self._gateway is None:
            self._gateway = Gateway(self.settings.cli.gateway_url, self.api_key)
            if start and self.settings.cli.auto_start and not self._gateway.alive() and self.local_gateway():
                self.err.print(
                    f"No gateway at {self.settings.cli.gateway_url}; starting the local stack "
                    "(`sage-ft down` stops it)..."
                )
                LocalStack(self.settings).up()
        return self._gateway

    def console_url(self) -> str:
        return self.settings.cli.gateway_url.rstrip("/") + "/console/"

    def local_gateway(self) -> bool:
        return urlparse(self.settings.cli.gateway_url).hostname in ("127.0.0.1", "localhost")

    def emit(self, data: Any, columns: list[str] | None = None, title: str | None = None) -> None:
        """``--json``: the data as JSON on stdout; otherwise a table of ``columns`` (or the object's fields)."""
        if self.json:
            click.echo(json.dumps(data, indent=2, default=str))
            return
        rows = data if isinstance(data, list) else [data]
        if not rows:
            self.console.print("(none)")
            return
        if not isinstance(data, list) and columns is None:
            table = Table(show_header=False, title=title)
            for key, value in data.items():
                table.add_row(str(key), _cell(value))
            self.console.print(table)
            return
        cols = columns or list(rows[0])
        table = Table(*cols, title=title)
        for row in rows:
            table.add_row(*(_cell(row.get(c)) for c in cols))
        self.console.print(table)

    def close(self) -> None:
        if self._gateway is not None:
            self._gateway.close()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)
    return str(value)


pass_app = click.make_pass_decorator(App)
