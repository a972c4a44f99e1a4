"""Answers GET /api/health like Grafana does, and nothing else (see the Dockerfile for why)."""

from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        ok = self.path.startswith("/api/health")
        body = b'{"database": "ok", "version": "stand-in"}' if ok else b"{}"
        self.send_response(200 if ok else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


ThreadingHTTPServer(("0.0.0.0", 3000), Health).serve_forever()
