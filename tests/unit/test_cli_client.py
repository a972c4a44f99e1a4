"""The CLI's gateway client against a real HTTP server that rate-limits: a 429 is waited out for its Retry-After,
a few times, then reported; an upload is never sent twice."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sage_ft_cli.client import RATE_LIMIT_WAITS, CLIError, Gateway


class Limited(BaseHTTPRequestHandler):
    refusals = 0  # how many requests get a 429 before one is answered
    seen: list[str] = []

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        Limited.seen.append(self.command)
        if len(Limited.seen) <= Limited.refusals:
            body, status, headers = {"error": {"message": "Rate limit reached"}}, 429, {"Retry-After": "0.05"}
        else:
            body, status, headers = {"ok": len(Limited.seen)}, 200, {}
        data = json.dumps(body).encode()
        self.send_response(status)
        for key, value in {**headers, "Content-Type": "application/json", "Content-Length": str(len(data))}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture()
def gateway() -> Iterator[Gateway]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Limited)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Limited.seen = []
    client = Gateway(f"http://127.0.0.1:{server.server_address[1]}")
    yield client
    client.close()
    server.shutdown()


def test_a_rate_limit_is_waited_out(gateway: Gateway) -> None:
    Limited.refusals = RATE_LIMIT_WAITS - 1
    assert gateway.get("/v1/fine_tuning/jobs") == {"ok": RATE_LIMIT_WAITS}
    assert len(Limited.seen) == RATE_LIMIT_WAITS


def test_a_rate_limit_that_lasts_is_reported_in_one_line(gateway: Gateway) -> None:
    Limited.refusals = 100
    with pytest.raises(CLIError, match=r"^429: Rate limit reached"):
        gateway.get("/v1/fine_tuning/jobs")
    assert len(Limited.seen) == RATE_LIMIT_WAITS


def test_an_upload_is_not_sent_twice(gateway: Gateway) -> None:
    Limited.refusals = 1
    with pytest.raises(CLIError, match=r"^429"):
        gateway.post("/v1/files", files={"file": ("a.jsonl", b"{}\n")}, data={"purpose": "fine-tune"})
    assert Limited.seen == ["POST"]
