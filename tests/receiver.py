"""A webhook receiver for tests: a real HTTP server on loopback that keeps every request it gets."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import openai
from stack import free_port


class Receiver:
    """A real HTTP server on loopback that keeps every request; ``answers`` are the statuses of the next requests
    (then 200). ``start`` may come later than the port is handed out: until then, connections are refused."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.got: list[dict[str, Any]] = []
        self.answers: list[int] = []
        self.redirect: str | None = None
        self.server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                receiver.got.append({"headers": dict(self.headers.items()), "body": body})
                status = receiver.answers.pop(0) if receiver.answers else 200
                if receiver.redirect:
                    self.send_response(302)
                    self.send_header("location", receiver.redirect)
                else:
                    self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def events(self, client: openai.OpenAI, secret: str) -> list[Any]:
        """Every request, verified and parsed by the SDK (a bad signature raises)."""
        return [client.webhooks.unwrap(g["body"], g["headers"], secret=secret) for g in self.got]
