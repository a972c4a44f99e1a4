"""Worker metrics and health. The solo pool runs tasks in the worker process, so a per-worker HTTP port serves
them, with ``/readyz`` turning 200 when the consumer is connected (the real readiness signal: no log grepping)."""

from __future__ import annotations

import contextlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest

STEPS = Counter("sage_ft_train_steps_total", "Optimizer steps completed by this worker's trainers.")
# Per job: a worker trains one job at a time and drops the series when it ends, so this stays one series a worker.
LOSS = Gauge("sage_ft_train_loss", "Latest training loss of the job this worker is running.", ["job"])
TOKENS_PER_SECOND = Gauge("sage_ft_train_tokens_per_second", "Latest training throughput of the running job.", ["job"])
GPU_MEMORY = Gauge(
    "sage_ft_train_gpu_memory_bytes", "Peak GPU memory of the running job's trainer (GPU only).", ["job"]
)
JOB_METRICS = (LOSS, TOKENS_PER_SECOND, GPU_MEMORY)
JOB_DURATION = Histogram(
    "sage_ft_job_duration_seconds",
    "Wall time of a train task attempt, by outcome.",
    ["outcome"],
    buckets=(5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400),
)
CHECKPOINT_UPLOAD = Histogram(
    "sage_ft_checkpoint_upload_seconds",
    "Time to upload and verify one checkpoint.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
DUPLICATE_DELIVERIES = Counter(
    "sage_ft_duplicate_deliveries_total", "Task deliveries that found the job already taken or finished."
)


def forget_job(job_id: str) -> None:
    """Drop a finished job's series."""
    for gauge in JOB_METRICS:
        with contextlib.suppress(KeyError):
            gauge.remove(job_id)


class _Status:
    ready = False  # the consumer is connected to the broker and takes tasks


def set_ready(ready: bool) -> None:
    _Status.ready = ready


class _Handler(BaseHTTPRequestHandler):
    """``/metrics`` (Prometheus), ``/healthz`` (the process answers), ``/readyz`` (200 once it consumes tasks)."""

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            status, body, kind = 200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST
        elif path == "/healthz":
            status, body, kind = 200, b"ok", "text/plain"
        elif path == "/readyz":
            status, body, kind = (200, b"ready", "text/plain") if _Status.ready else (503, b"starting", "text/plain")
        else:
            status, body, kind = 404, b"not found", "text/plain"
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def serve(host: str, port: int) -> ThreadingHTTPServer | None:
    """Serve metrics and health on ``host:port`` from a daemon thread (port 0: not at all)."""
    if not port:
        return None
    server = ThreadingHTTPServer((host, port), _Handler)
    threading.Thread(target=server.serve_forever, name="sage-worker-http", daemon=True).start()
    return server


EVAL_ITEMS = Counter("sage_ft_eval_items_total", "Eval items this worker graded, by outcome.", ["status"])
EVAL_ITEM_SECONDS = Histogram(
    "sage_ft_eval_item_seconds",
    "Time to answer and grade one eval item (the model server's answer included).",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
EVAL_RUNS = Counter("sage_ft_eval_runs_total", "Eval run attempts this worker ended, by outcome.", ["outcome"])
