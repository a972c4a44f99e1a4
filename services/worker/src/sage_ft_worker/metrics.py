"""Worker metrics. The solo pool runs tasks in the worker process, so a per-worker HTTP port serves them."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

STEPS = Counter("sage_ft_train_steps_total", "Optimizer steps completed by this worker's trainers.")
LOSS = Gauge("sage_ft_train_loss", "Latest training loss reported by this worker's running job.")
TOKENS_PER_SECOND = Gauge("sage_ft_train_tokens_per_second", "Latest training throughput in tokens per second.")
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


def serve(host: str, port: int) -> None:
    if port:
        start_http_server(port, addr=host)
